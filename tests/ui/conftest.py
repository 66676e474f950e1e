"""The supply-chain fixtures of tests/pipelines (a git repository with one target, a registry), shared with UI tests."""

from tests.pipelines.conftest import project  # noqa: F401 - re-exported as a fixture
