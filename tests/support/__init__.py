"""Helpers shared by the tests and the benchmarks: loopback ports, registries, git repositories, images, fakes.

Fixture modules (git, cloud) are registered in tests/conftest.py through `pytest_plugins`, so their fixtures
reach every test folder.
"""
