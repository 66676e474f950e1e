"""The `startup:` section of a target: whether and how to record its startup profile, and estimate settings.

Defaults for the estimates (the cost model reads them): `bandwidth_mbps` 1000 (megabits per second,
about one in-region registry connection) and `latency_ms` 20 (one request's round trip to the registry,
redirect to blob storage included). They are estimates, not measurements.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from resources.startup.cost import NetworkModel
from resources.startup.sandbox import Readiness

MAX_TIMEOUT_S = 1800
DEFAULT_TIMEOUT_S = 120
DEFAULT_BANDWIDTH_MBPS = 1000.0
DEFAULT_LATENCY_MS = 20.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadySettings(_Strict):
    """When the program counts as started: exactly one of `log` (a regex), `tcp_port`, `exit: true`."""

    log: str | None = Field(
        default=None, description="a regular expression; ready at the first output line that matches"
    )
    tcp_port: int | None = Field(
        default=None, gt=0, lt=65536, description="ready when this TCP port listens (sandbox loopback)"
    )
    exit: bool | None = Field(default=None, description="ready when the program exits with status 0")

    @field_validator("log")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @field_validator("exit")
    @classmethod
    def _exit_true(cls, v: bool | None) -> bool | None:
        if v is False:
            raise ValueError("only `exit: true` is meaningful (leave `ready` out to stop at exit or timeout)")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> ReadySettings:
        if sum(x is not None for x in (self.log, self.tcp_port, self.exit)) != 1:
            raise ValueError("set exactly one of 'log', 'tcp_port' or 'exit'")
        return self

    def readiness(self) -> Readiness:
        """The recorder's readiness condition."""
        return Readiness(log=self.log, tcp_port=self.tcp_port, exit=bool(self.exit))


class StartupSettings(_Strict):
    """Startup profile recording (asset `startup_profile`), what to prefetch, and the network for the estimates."""

    enabled: bool = False
    command: tuple[str, ...] | None = Field(default=None, description="replaces the image's Entrypoint + Cmd")
    ready: ReadySettings | None = Field(
        default=None, description="readiness; without it the run stops at exit or timeout"
    )
    timeout_s: int = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S)
    prefetch: Literal["files", "ranges"] = Field(
        default="files", description="prefetch whole profiled files or only the ranges read"
    )
    bandwidth_mbps: float = Field(
        default=DEFAULT_BANDWIDTH_MBPS, gt=0, le=1_000_000, description="estimate: megabits/s"
    )
    latency_ms: float = Field(default=DEFAULT_LATENCY_MS, ge=0, le=10_000, description="estimate: ms per request")

    @field_validator("command")
    @classmethod
    def _command(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and (not v or not v[0]):
            raise ValueError("must be a non-empty list whose first item is the program")
        return v

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "node_compat" in data:
            raise ValueError(
                "'node_compat' is set under 'soci:' (it gates the whole SOCI index, with or without a profile)"
            )
        return data

    def network(self) -> NetworkModel:
        """The cost model's network for these estimates."""
        return NetworkModel(bandwidth_bytes_per_s=self.bandwidth_mbps * 1e6 / 8, rtt_s=self.latency_ms / 1000)

    def describe_network(self) -> str:
        """'estimates at 1000 Mbit/s, 20 ms per round trip'."""
        return (f"estimates at {self.bandwidth_mbps:g} Mbit/s and {self.latency_ms:g} ms per round trip "
                "(set startup.bandwidth_mbps / latency_ms)")

    def readiness(self) -> Readiness:
        """The recorder's readiness condition (none: exit or timeout ends the run)."""
        return self.ready.readiness() if self.ready is not None else Readiness()
