"""Fixtures for the startup recorder tests: a registry client and a recorder working on a disk directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.registry import RegistryClient
from resources.startup.recorder import StartupRecorder
from tests.conftest import RunningRegistry
from tests.resources.startup.images import Layer, busybox_layer


@pytest.fixture(scope="session")
def busybox() -> Layer:
    """The busybox base layer (built once)."""
    return busybox_layer()


@pytest.fixture
def client(registry: RunningRegistry) -> Iterator[RegistryClient]:
    with RegistryClient(registry.addr) as c:
        yield c


@pytest.fixture
def recorder(client: RegistryClient, tmp_path: Path) -> StartupRecorder:
    """A recorder whose rootfs lives under the test's tmp dir (a disk filesystem here: checked by the recorder)."""
    work = tmp_path / "work"
    work.mkdir()
    return StartupRecorder(client, work_root=work)
