"""Startup profiles: record what a container reads to start (recorder) and store it next to the image (profile)."""
