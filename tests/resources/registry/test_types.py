"""One Descriptor and one raw-manifest type, shared by the registry client and the SOCI engine (issue 9)."""

from __future__ import annotations

import pytest

import resources.oci.manifest as oci
import resources.oci.media_types as mt
from resources import registry
from resources.oci.refs import compute_digest

DIGEST = compute_digest(b"x")


def test_the_registry_package_re_exports_the_oci_types() -> None:
    assert registry.Descriptor is oci.Descriptor
    assert registry.Manifest is oci.RawManifest is registry.RawManifest is oci.Encoded
    assert registry.MANIFEST_MEDIA_TYPES is mt.MANIFEST_MEDIA_TYPES and registry.OCI_INDEX == mt.OCI_INDEX


def test_descriptor_json_round_trip_keeps_go_field_order_and_optional_fields() -> None:
    d = oci.Descriptor(mt.OCI_MANIFEST, DIGEST, 7, annotations={"k": "v"},
                       platform=oci.Platform(architecture="arm64", os="linux"), artifact_type=mt.SOCI_INDEX_V2)
    data = d.to_dict()
    assert list(data) == ["mediaType", "digest", "size", "annotations", "platform", "artifactType"]
    assert oci.Descriptor.from_dict(data) == d
    assert oci.Descriptor(mt.OCI_MANIFEST, DIGEST, 7).to_dict() == {
        "mediaType": mt.OCI_MANIFEST,
        "digest": DIGEST,
        "size": 7,
    }


@pytest.mark.parametrize("bad", [{"mediaType": "x", "digest": "sha256:nope", "size": 1},
                                 {"mediaType": "x", "digest": DIGEST}, {"digest": DIGEST, "size": 1},
                                 {"mediaType": "x", "digest": DIGEST, "size": -1},
                                 {"mediaType": "x", "digest": DIGEST, "size": "ten"}])
def test_descriptor_from_dict_rejects_incomplete_or_invalid(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid descriptor"):
        oci.Descriptor.from_dict(bad)


def test_encode_gives_a_raw_manifest_with_its_media_type() -> None:
    index = oci.ImageIndex(schema_version=2, media_type=mt.OCI_INDEX, manifests=[])
    raw = oci.encode(index)
    assert raw.media_type == mt.OCI_INDEX and raw.is_index and raw.digest == compute_digest(raw.data)
    assert raw.descriptor() == oci.Descriptor(mt.OCI_INDEX, raw.digest, raw.size)
