"""Go encoding/json compatibility: golden vectors made by real Go, plus the SOCI manifest shapes."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from resources.oci import media_types as mt
from resources.oci.manifest import Descriptor, ImageIndex, Manifest, Platform
from resources.soci import gojson
from resources.soci.gojson import GoJSONError, encode_go_string, marshal, unmarshal
from resources.soci.index import SociVersion, build_soci_index, subject_descriptor, ztoc_descriptor

GOLDEN = json.loads((Path(__file__).parent / "golden" / "gojson_golden.json").read_text())
CASES = GOLDEN["cases"]


def _cases(kind: str) -> list[dict[str, str]]:
    return [c for c in CASES if c["kind"] == kind]


def _b(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def test_golden_file_comes_from_go_1_22_or_newer() -> None:
    # \b and \f short escapes appeared in Go 1.22; the snapshotter is built with a newer Go.
    major, minor = (int(x) for x in GOLDEN["go_version"].removeprefix("go").split(".")[:2])
    assert (major, minor) >= (1, 22)
    assert len(_cases("string")) > 128 and _cases("manifest") and _cases("index")


@pytest.mark.parametrize("case", _cases("string"), ids=lambda c: repr(_b(c["input"]))[:40])
def test_strings_match_go(case: dict[str, str]) -> None:
    raw, want = _b(case["input"]), _b(case["output"])
    assert encode_go_string(raw) == want
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Invalid UTF-8 reaches us as surrogateescape'd str (how gojson decodes bytes).
        text = raw.decode("utf-8", "surrogateescape")
    assert encode_go_string(text) == want
    assert marshal(text) == want


@pytest.mark.parametrize("case", _cases("map"), ids=lambda c: _b(c["input"]).decode()[:30])
def test_maps_sorted_like_go(case: dict[str, str]) -> None:
    items = list(json.loads(_b(case["input"])).items())
    for seed in range(3):
        random.Random(seed).shuffle(items)
        assert marshal(dict(items)) == _b(case["output"])


@pytest.mark.parametrize("case", _cases("float"), ids=lambda c: _b(c["input"]).decode())
def test_floats_match_go(case: dict[str, str]) -> None:
    assert marshal(float(_b(case["input"]))) == _b(case["output"])


@pytest.mark.parametrize(
    "case",
    _cases("manifest") + _cases("index"),
    ids=lambda c: f"{c['kind']}:{_b(c['input'])[:50]!r}",
)
def test_decode_reencode_matches_go(case: dict[str, str]) -> None:
    cls = Manifest if case["kind"] == "manifest" else ImageIndex
    data = _b(case["input"])
    if case.get("error"):
        with pytest.raises(GoJSONError):
            unmarshal(data, cls)
        return
    assert marshal(unmarshal(data, cls)) == _b(case["output"])


def test_unknown_fields_drop_out_so_digest_changes() -> None:
    docker = (
        b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":3,"digest":"sha256:a"},'
        b'"layers":[],"x-extra":1}'
    )
    out = marshal(unmarshal(docker, Manifest))
    assert b"x-extra" not in out
    # Go order: mediaType, digest, size (the input had size before digest).
    assert b'"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:a","size":3' in out
    assert not gojson.is_canonical(docker, Manifest)
    assert gojson.is_canonical(out, Manifest)


def test_descriptor_field_order_and_omitempty() -> None:
    d = Descriptor(
        media_type="m",
        digest="sha256:d",
        size=1,
        urls=["u"],
        annotations={"b": "2", "a": "1"},
        data=b"{}",
        platform=Platform(architecture="arm64", os="linux", os_version="1", os_features=["f"], variant="v8"),
        artifact_type="t",
    )
    assert marshal(d) == (
        b'{"mediaType":"m","digest":"sha256:d","size":1,"urls":["u"],"annotations":{"a":"1","b":"2"},'
        b'"data":"e30=","platform":{"architecture":"arm64","os":"linux","os.version":"1","os.features":["f"],'
        b'"variant":"v8"},"artifactType":"t"}'
    )
    # mediaType, digest and size are never omitted; the rest are when empty.
    assert marshal(Descriptor()) == b'{"mediaType":"","digest":"","size":0}'
    assert marshal(Descriptor(annotations={}, urls=[], data=b"")) == b'{"mediaType":"","digest":"","size":0}'
    # An empty-string annotation value is kept (only the empty map is omitted).
    assert marshal(Descriptor(annotations={"k": ""})) == b'{"mediaType":"","digest":"","size":0,"annotations":{"k":""}}'


def test_manifest_nil_and_empty_layers_differ_like_go() -> None:
    assert marshal(Manifest(schema_version=2)) == (
        b'{"schemaVersion":2,"config":{"mediaType":"","digest":"","size":0},"layers":null}'
    )
    assert marshal(Manifest(schema_version=2, layers=[])).endswith(b'"layers":[]}')


def test_soci_v2_index_bytes_exact() -> None:
    ztoc = ztoc_descriptor(
        ztoc_digest="sha256:" + "1" * 64,
        ztoc_size=1234,
        layer_digest="sha256:" + "2" * 64,
        layer_media_type=mt.DOCKER_LAYER_GZIP,
        span_size=4194304,
        disable_xattrs=True,
    )
    index = build_soci_index([ztoc], version=SociVersion.V2, build_tool_identifier="streamable <&>")
    expected = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        '"config":{"mediaType":"application/vnd.amazon.soci.index.v2+json",'
        '"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},'
        '"layers":[{"mediaType":"application/octet-stream","digest":"sha256:' + "1" * 64 + '","size":1234,'
        '"annotations":{"com.amazon.soci.disable-xattrs":"true",'
        '"com.amazon.soci.image-layer-digest":"sha256:' + "2" * 64 + '",'
        '"com.amazon.soci.image-layer-mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip",'
        '"com.amazon.soci.span-size":"4194304"}}],'
        '"annotations":{"com.amazon.soci.build-tool-identifier":"streamable \\u003c\\u0026\\u003e"}}'
    ).encode()
    data = marshal(index)
    assert data == expected
    assert gojson.is_canonical(data, Manifest)
    assert not data.endswith(b"\n") and b" " not in data.replace(b"streamable \\u003c", b"")


def test_soci_v1_index_has_subject_between_layers_and_annotations() -> None:
    ztoc = ztoc_descriptor(
        ztoc_digest="sha256:z", ztoc_size=1, layer_digest="sha256:l", layer_media_type=mt.OCI_LAYER_GZIP,
        span_size=65536, disable_xattrs=False,
    )
    index = build_soci_index(
        [ztoc],
        version=SociVersion.V1,
        build_tool_identifier="t",
        subject=subject_descriptor(mt.OCI_MANIFEST, "sha256:m", 99),
    )
    data = marshal(index).decode()
    assert data.index('"layers"') < data.index('"subject"') < data.index('"annotations":{"com.amazon.soci.build')
    assert '"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:m","size":99}' in data
    assert '"config":{"mediaType":"application/vnd.amazon.soci.index.v1+json"' in data
    assert "disable-xattrs" not in data
    assert '"artifactType"' not in data


def test_decode_errors_name_the_field() -> None:
    with pytest.raises(GoJSONError, match=r"Manifest\.layers\[0\]\.size"):
        unmarshal(b'{"layers":[{"size":"1"}]}', Manifest)
    with pytest.raises(GoJSONError, match="invalid JSON"):
        unmarshal(b'{"layers":', Manifest)
    with pytest.raises(GoJSONError, match="NaN"):
        unmarshal(b'{"schemaVersion":NaN}', Manifest)


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(GoJSONError):
        marshal(float("nan"))
    with pytest.raises(GoJSONError):
        marshal({1: "x"})
    with pytest.raises(GoJSONError):
        marshal(object())
