"""The complete proof: every kind of zTOC tampering on a 60-file layer fails, naming layer, entry and field.

Each tampered zTOC is re-pushed under its new digest with the index rewritten (tamper.republish), so only
the zTOC's content is wrong. Untampered controls pass.
"""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from resources.oci import media_types as mt
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci.convert import ConvertResult, EmptySociIndexError, SociConverter
from resources.soci.verify import verify_image
from resources.soci.ztoc.model import FileMetadata, Xattr, Ztoc

from .conftest import ImageFactory, Layer, gzip_layer, random_bytes, sha256, text_bytes
from .tamper import republish

SPAN = 65536
FILES = {f"srv/data/file-{i:02d}.txt": text_bytes(4_000 + 97 * i, i) for i in range(59)}
FILES["srv/data/weights.bin"] = random_bytes(400_000, 99)  # 60 files, several spans


@pytest.fixture
def converted(images: ImageFactory, client: RegistryClient) -> tuple[ImageRef, ConvertResult]:
    src = images.push_image("proof/app", "1", [gzip_layer(FILES)]).ref
    dst = src.with_tag("1-soci")
    return dst, SociConverter(client, min_layer_size=1024, span_size=SPAN).convert(src, dst)


def _change_file(ztoc: Ztoc, target: str, **changes: object) -> Ztoc:
    entries = [dataclasses.replace(e, **changes) if e.name == target else e for e in ztoc.entries]
    return dataclasses.replace(ztoc, entries=entries)


LAST = "srv/data/weights.bin"
MID = "srv/data/file-30.txt"
FIELD_TAMPERS: dict[str, dict[str, object]] = {
    "name": {"name": "srv/data/renamed.txt"},
    "type": {"type": "symlink", "linkname": "file-00.txt"},
    "uncompressed_offset": {"uncompressed_offset": "+1"},  # stays inside the block padding: node order holds
    "uncompressed_size": {"uncompressed_size": "+1"},
    "linkname": {"linkname": "elsewhere"},
    "mode": {"mode": 0o4755},
    "uid": {"uid": 1000},
    "gid": {"gid": 1000},
    "uname": {"uname": "root"},
    "gname": {"gname": "wheel"},
    "mod_time": {"mod_time": "2023-11-14T22:13:21Z"},
    "devmajor": {"devmajor": 8},
    "devminor": {"devminor": 1},
    "xattrs": {"xattrs": [Xattr("SCHILY.xattr.user.k", "v")]},
}


def _unsampled(client: RegistryClient, ref: ImageRef) -> str:
    """A file that the default sampled check (today's mode, `quick=True`) does not read."""
    sampled = {f.name for p in verify_image(client, ref, quick=True).platforms for f in p.files}
    return next(name for name in sorted(FILES) if name not in sampled and name != LAST)


@pytest.mark.parametrize("field", sorted(FIELD_TAMPERS))
def test_each_toc_field_tampered_on_one_of_60_files_fails(converted, client, field: str) -> None:
    ref, _ = converted
    target = _unsampled(client, ref)  # the sampled check never looks at it
    assert len(FILES[target]) % 512 not in (0, 511)  # +1 on offset or size keeps the node's offset order

    def tamper(z: Ztoc) -> Ztoc:
        entry = next(e for e in z.entries if e.name == target)
        changes = {}
        for key, value in FIELD_TAMPERS[field].items():
            changes[key] = getattr(entry, key) + int(value[1:]) if isinstance(value, str) and value[0] == "+" else value
        return _change_file(z, target, **changes)

    report = verify_image(client, republish(client, ref, field, ztoc=tamper))
    assert not report.passed
    failure = report.failure or ""
    assert f"field {field}" in failure or (field == "type" and "field type" in failure), failure
    assert "proof/app" in failure and "layer sha256:" in failure and "entry " in failure


def test_zero_entry_ztoc_fails(converted, client) -> None:
    ref, _ = converted
    report = verify_image(client, republish(client, ref, "empty", ztoc=lambda z: dataclasses.replace(z, entries=[])))
    assert not report.passed and "the zTOC ends after 0 entries" in (report.failure or "")


def test_removed_entry_fails(converted, client) -> None:
    ref, _ = converted
    gone = republish(
        client, ref, "removed", ztoc=lambda z: dataclasses.replace(z, entries=[e for e in z.entries if e.name != MID])
    )
    report = verify_image(client, gone)
    assert (
        not report.passed
        and "srv/data/file-31.txt" in (report.failure or "")
        and "field name" in (report.failure or "")
    )


def test_extra_entry_fails(converted, client) -> None:
    ref, _ = converted
    extra = FileMetadata("srv/ghost", "dir", 0, 0, "", 0o755, 0, 0, "", "", "2023-11-14T22:13:20Z", 0, 0, [])
    report = verify_image(
        client, republish(client, ref, "extra", ztoc=lambda z: dataclasses.replace(z, entries=[*z.entries, extra]))
    )
    assert (
        not report.passed and "'srv/ghost'" in (report.failure or "") and "layer value <none>" in (report.failure or "")
    )


def test_untampered_republish_passes_and_proves_every_entry(converted, client) -> None:
    ref, result = converted
    same = republish(client, ref, "same", ztoc=lambda z: z)
    report = verify_image(client, same)
    assert report.passed, report.failure
    layer = report.platforms[0].layers[0]
    assert layer.proven and layer.entries_proven == result.platforms[0].ztocs[0].files > 60
    assert layer.checkpoints_checked == layer.spans == result.platforms[0].ztocs[0].spans > 1


def test_wrong_uncompressed_archive_size_fails(converted, client) -> None:
    ref, _ = converted
    bad = republish(
        client,
        ref,
        "usize",
        ztoc=lambda z: dataclasses.replace(z, uncompressed_archive_size=z.uncompressed_archive_size + 512),
    )
    report = verify_image(client, bad)
    assert not report.passed and "field uncompressed_archive_size" in (report.failure or "")


def test_bad_checkpoint_window_fails(converted, client) -> None:
    ref, _ = converted
    from resources.soci.ztoc.checkpoints import BLOB_HEADER, RECORD_HEADER, RECORD_SIZE

    def tamper(z: Ztoc) -> Ztoc:
        blob = bytearray(z.compression.checkpoints)
        at = BLOB_HEADER.size + RECORD_SIZE + RECORD_HEADER.size  # the window of checkpoint 1
        blob[at:at + 32768] = bytes(32768)
        return dataclasses.replace(z, compression=dataclasses.replace(z.compression, checkpoints=bytes(blob)))

    report = verify_image(client, republish(client, ref, "window", ztoc=tamper))
    assert not report.passed and "checkpoint 1" in (report.failure or ""), report.failure


@pytest.mark.parametrize("bad_last", [True, False])
def test_layer_listed_twice_the_last_ztoc_is_the_one_a_node_uses(converted, client, bad_last: bool) -> None:
    ref, _ = converted

    def twice(blobs, push):
        from resources.soci.ztoc.flatbuf import parse_ztoc

        good = blobs[0]
        bad = push(_change_file(parse_ztoc(client.get_blob(ref.repository, good.digest)), MID, mode=0o777))
        return [good, bad] if bad_last else [bad, good]

    report = verify_image(client, republish(client, ref, f"twice-{bad_last}", layers=twice))
    if bad_last:
        assert not report.passed and "field mode" in (report.failure or "")
    else:
        assert report.passed, report.failure


def test_deleted_blob_of_a_layer_without_ztoc_fails(images: ImageFactory, client, registry) -> None:
    small = gzip_layer({"etc/motd": b"hello\n"})
    src = images.push_image("proof/two", "1", [gzip_layer(FILES), small]).ref
    dst = src.with_tag("1-soci")
    result = SociConverter(client, min_layer_size=4096, span_size=SPAN).convert(src, dst)
    assert [s.layer_digest for s in result.platforms[0].skipped_layers] == [small.digest]
    assert verify_image(client, dst).passed
    httpx.delete(f"{registry.url}/v2/proof/two/blobs/{small.digest}", timeout=10).raise_for_status()
    report = verify_image(client, dst)
    assert not report.passed and small.digest in (report.failure or "") and "not pullable" in (report.failure or "")


def _empty_tar_layer() -> Layer:
    return Layer(b"", mt.OCI_LAYER_TAR, sha256(b""), {})


def test_zero_byte_tar_layer_is_skipped_with_a_reason_and_verify_agrees(images: ImageFactory, client) -> None:
    src = images.push_image("proof/empty", "1", [_empty_tar_layer(), gzip_layer(FILES)]).ref
    dst = src.with_tag("1-soci")
    result = SociConverter(client, min_layer_size=0, span_size=SPAN).convert(src, dst)
    (skipped,) = result.platforms[0].skipped_layers
    assert skipped.layer_digest == sha256(b"") and "no spans (the layer is empty)" in skipped.reason
    report = verify_image(client, dst)
    assert report.passed, report.failure


def test_only_a_zero_byte_layer_is_refused_and_nothing_is_tagged(images: ImageFactory, client) -> None:
    src = images.push_image("proof/only-empty", "1", [_empty_tar_layer()]).ref
    with pytest.raises(EmptySociIndexError) as err:
        SociConverter(client, min_layer_size=0, span_size=SPAN).convert(src, src.with_tag("1-soci"))
    assert "proof/only-empty" in str(err.value) and "no spans (the layer is empty)" in str(err.value)
    assert "1-soci" not in images.tags("proof/only-empty")


def test_deleted_layer_of_a_platform_without_index_fails(images: ImageFactory, client, registry) -> None:
    amd = images.push_image("proof/multi", None, [gzip_layer(FILES)])
    arm_layer = gzip_layer({"etc/arm": random_bytes(20_000, 7)})
    arm = images.push_image("proof/multi", None, [arm_layer], platform=("linux", "arm64", ""))
    src = images.push_index("proof/multi", "1", [amd, arm]).ref
    dst = src.with_tag("1-soci")
    SociConverter(client, min_layer_size=1024, span_size=SPAN, platforms=["linux/amd64"]).convert(src, dst)
    report = verify_image(client, dst)
    assert report.passed, report.failure
    assert any("no SOCI index" in n for p in report.platforms for n in p.notes)
    httpx.delete(f"{registry.url}/v2/proof/multi/blobs/{arm_layer.digest}", timeout=10).raise_for_status()
    report = verify_image(client, dst)
    assert not report.passed and "linux/arm64" in (report.failure or "") and arm_layer.digest in (report.failure or "")


def test_startup_files_are_read_first_and_reported_as_node_fetches(converted, client) -> None:
    ref, _ = converted
    startup = ["/srv/data/file-41.txt", "srv/data/file-07.txt", "/srv/not-there"]
    report = verify_image(client, ref, sample=0, startup_files=startup)
    assert report.passed, report.failure
    p = report.platforms[0]
    by_name = {f.name: f for f in p.files}
    assert by_name["srv/data/file-41.txt"].why == by_name["srv/data/file-07.txt"].why == "startup"
    assert any("startup file /srv/not-there" in n for n in p.notes)
    assert 0 < p.cold_start_spans <= sum(f.spans_fetched for f in p.files)
    assert p.cold_start_bytes <= sum(f.bytes_fetched for f in p.files) and p.cold_start_bytes > 0


def test_zlib_ng_builds_and_the_system_zlib_verifies(
    images: ImageFactory, client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zTOC is built on zlib-ng; verification resumes every span on the system zlib, as a node does."""
    import resources.soci.ztoc.zlib_ctypes as zc

    used: list[str] = []
    original = zc.RawInflater.__init__

    def spy(self: zc.RawInflater, library: zc.InflateLibrary | None = None) -> None:
        original(self, library)
        used.append(self.library.name)

    monkeypatch.setattr(zc.RawInflater, "__init__", spy)
    monkeypatch.setenv(zc.INFLATE_LIBRARY_ENV, "zlib-ng")
    src = images.push_image("proof/libs", "1", [gzip_layer(FILES)]).ref
    dst = src.with_tag("1-soci")
    SociConverter(client, min_layer_size=1024, span_size=SPAN).convert(src, dst)
    assert used and set(used) == {"zlib-ng"}, used
    used.clear()
    report = verify_image(client, dst)
    assert report.passed, report.failure
    assert report.platforms[0].layers[0].checkpoints_checked > 1
    assert used and set(used) == {"zlib"}, used
