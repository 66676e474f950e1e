"""Dagster definitions: what runs when (assets, checks, jobs, sensors, schedules)."""
