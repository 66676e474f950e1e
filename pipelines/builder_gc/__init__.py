"""Builder cache GC: prune every builder's BuildKit cache nightly, and check the deployed GC policy."""
