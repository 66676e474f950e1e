"""zTOC: per-layer table of contents plus gzip checkpoints, built in one streaming pass."""
