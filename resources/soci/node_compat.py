"""`node_compat`: the oldest soci-snapshotter release the SOCI index must still load on.

Two features of an index break older nodes, so they are written only when the setting allows:

- prefetch artifacts (`application/vnd.amazon.soci.prefetch.v1+json` entries in the index):
  introduced in v0.13 (upstream soci/prefetch.go, fs/fs.go `findPrefetchArtifact`); older nodes
  take every entry of the index for a zTOC;
- zTOCs with a span that crosses a gzip member boundary: v0.14 taught the zinfo code to inflate
  across members (upstream commit "Support concatenated gzip (mgzip/pigz) in ztoc generation and
  extraction", ztoc/compression/gzip_zinfo.c); an older node stops at the member's end and fails
  the read.

The default, v0.12, writes neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resources.errors import StreamableError

OLDEST = (0, 12)
NEWEST = (0, 15)
PREFETCH_SINCE = (0, 13)
MEMBER_SPANNING_SINCE = (0, 14)
_VERSION = re.compile(r"^v?(\d+)\.(\d+)$")


class NodeCompatError(StreamableError, ValueError):
    """A node_compat value that is not a soci-snapshotter release we know (v0.12 .. v0.15)."""


@dataclass(frozen=True, order=True)
class NodeCompat:
    """A soci-snapshotter minor release, e.g. NodeCompat(0, 13) for v0.13."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> NodeCompat:
        """Parse "v0.12" .. "v0.15" (the leading "v" is optional); NodeCompatError otherwise."""
        match = _VERSION.match(text.strip())
        if match is None:
            raise NodeCompatError(f"node_compat {text!r}: expected a release like v0.13")
        value = (int(match.group(1)), int(match.group(2)))
        if not OLDEST <= value <= NEWEST:
            raise NodeCompatError(
                f"node_compat {text!r}: supported releases are v{OLDEST[0]}.{OLDEST[1]} .. v{NEWEST[0]}.{NEWEST[1]}"
            )
        return cls(*value)

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}"

    @property
    def prefetch_artifacts(self) -> bool:
        """True when the index may hold prefetch artifacts (v0.13+)."""
        return (self.major, self.minor) >= PREFETCH_SINCE

    @property
    def member_spanning_ztocs(self) -> bool:
        """True when a zTOC's spans may cross gzip member boundaries (v0.14+)."""
        return (self.major, self.minor) >= MEMBER_SPANNING_SINCE

    def prefetch_gate_reason(self) -> str:
        """Why prefetch artifacts are left out under this setting."""
        return (
            f"node_compat {self} < v0.13: prefetch artifacts are left out, since soci-snapshotter nodes older "
            "than v0.13 misread an index that holds them (set node_compat to v0.13 or newer to write them)"
        )

    def member_gate_reason(self, crossing: int) -> str:
        """Why a layer's zTOC is left out under this setting."""
        return (
            f"node_compat {self} < v0.14: {crossing} span(s) of its zTOC cross a gzip member boundary, which "
            "soci-snapshotter nodes older than v0.14 cannot inflate (set node_compat to v0.14 or newer)"
        )


DEFAULT_NODE_COMPAT = NodeCompat(*OLDEST)
