"""SOCI index backfill of images already in the registry: one partition per image, scan sensor, nightly retry."""
