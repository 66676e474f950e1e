"""Test doubles for external systems: a fake Kubernetes API server and a buildctl stand-in."""
