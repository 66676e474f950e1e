"""The proof's tarfile -> zTOC field mapping agrees with soci's Go view on every tar feature we meet.

For each archive (PAX with every entry type and xattrs and nanosecond mtimes, GNU long names and
base-256 numbers, ustar, GNU tar's own output of a real tree, Docker-like whiteouts), the zTOC built
by resources/soci/ztoc/ (Go semantics, checked against Go elsewhere) must be proven by Python's
tarfile, gzip and uncompressed; one changed field in any entry must then be caught.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from resources.oci import media_types as mt
from resources.soci.node_rules import span_layout
from resources.soci.proof import ProofFailure, go_time_text, prove_layer
from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.model import Ztoc

from .ztoc.tar_fixtures import add, gnu_tar_with_long_names, make_tree, mixed_pax_tar


def _ustar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        add(tf, "p" * 90 + "/" + "q" * 90, b"prefix-split name")  # ustar prefix field
        add(tf, "etc/.wh..wh..opq", b"")
        add(tf, "etc/.wh.gone", b"")
        add(tf, "dir/", type=tarfile.DIRTYPE, mode=0o2775)
    return buf.getvalue()


def _gnu_tar_tree(tmp_path: Path) -> bytes:
    root = tmp_path / "tree"
    root.mkdir()
    make_tree(root)
    return subprocess.run(["tar", "-C", str(root), "--format=posix", "-cf", "-", "dir"], check=True,
                          capture_output=True).stdout


def _archives(tmp_path: Path) -> dict[str, bytes]:
    return {
        "pax": mixed_pax_tar(),
        "gnu": gnu_tar_with_long_names(),
        "ustar": _ustar(),
        "gnu-tar": _gnu_tar_tree(tmp_path),
    }


def _prove(blob: bytes, media_type: str, ztoc: Ztoc, wanted=()):
    chunks = [blob[i:i + 777] for i in range(0, len(blob), 777)]  # odd chunking: boundaries everywhere
    return prove_layer(chunks, ztoc, span_layout(ztoc), layer="L", media_type=media_type, wanted=wanted)


@pytest.mark.parametrize("name", ["pax", "gnu", "ustar", "gnu-tar"])
@pytest.mark.parametrize("media_type", [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_TAR])
def test_every_archive_is_proven_and_any_field_change_is_caught(tmp_path: Path, name: str, media_type: str) -> None:
    tar = _archives(tmp_path)[name]
    blob = gzip.compress(tar, mtime=0) if media_type == mt.OCI_LAYER_GZIP else tar
    ztoc = ZtocBuilder(span_size=1024).build(iter([blob]), media_type).ztoc
    proof = _prove(blob, media_type, ztoc)
    assert proof.entries == len(ztoc.entries) > 3 and proof.uncompressed_size == len(tar)
    for k, entry in enumerate(ztoc.entries):
        changed = dataclasses.replace(entry, uid=entry.uid ^ 1, mod_time=entry.mod_time + "x")
        bad = dataclasses.replace(ztoc, entries=[changed if i == k else e for i, e in enumerate(ztoc.entries)])
        with pytest.raises(ProofFailure, match=rf"entry {k} .*field (uid|mod_time)"):
            _prove(blob, media_type, bad)


def test_hard_links_resolve_to_their_target_bytes() -> None:
    tar = mixed_pax_tar()
    blob = gzip.compress(tar, mtime=0)
    ztoc = ZtocBuilder(span_size=1024).build(iter([blob]), mt.OCI_LAYER_GZIP).ztoc
    hashes = _prove(blob, mt.OCI_LAYER_GZIP, ztoc, wanted=["/app/link-to-hello"]).file_hashes
    import hashlib

    assert hashes == {"app/link-to-hello": hashlib.sha256(b"hello world\n").hexdigest()}


def test_go_time_text_matches_rfc3339nano() -> None:
    assert go_time_text(1_700_000_000) == "2023-11-14T22:13:20Z"
    assert go_time_text(1672628645, 123456789) == "2023-01-02T03:04:05.123456789Z"
    assert go_time_text(1672628645, 120000000) == "2023-01-02T03:04:05.12Z"
    assert go_time_text(-1) == "1969-12-31T23:59:59Z"
