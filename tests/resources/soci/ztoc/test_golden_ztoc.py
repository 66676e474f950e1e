"""The zTOC builder's bytes, layer shape by layer shape, equal those of the original sequential
builder (commit f6dc8bc): the digests below were recorded by running that code on the seeded
layers of `golden_layers` (and on the seeded mutation corpus of the Go reference test), so any
change in the bytes the builder writes fails here, whatever path (fast or not) produced them.

To re-record after a deliberate format change: ZTOC_GOLDEN_RECORD=1 pytest -s this file.
"""

from __future__ import annotations

import hashlib
import io
import os
import random

import pytest

from resources.soci.ztoc.builder import ZtocBuilder, ZtocBuildError
from resources.soci.ztoc.flatbuf import parse_ztoc, serialize_ztoc

from .golden_layers import LAYERS, OCI_TAR, gzip_blob
from .tar_fixtures import gnu_tar_with_long_names, mixed_pax_tar
from .test_toc_go_reference import edge_cases, mutate

RECORD = os.environ.get("ZTOC_GOLDEN_RECORD") == "1"

# name -> (sha256 of the layer blob, sha256 of the zTOC bytes or of the error message)
GOLDEN: dict[str, tuple[str, str]] = {
    'gzip-empty-members': (
        '3c85f71f95b4f250c025dfabf3694aad5b6e7224839a4004ae026600cb3c46cf',
        '7ae12672b64fccf3cd881dd12a66a3933799b6c57a036a526dc2b14d72a18d62',
    ),
    'gzip-empty-tar': (
        '7989bb311baa38ef545250282aa065d23281c46dfb8faabe4c653487bdbded5c',
        '96283a2c977c321a88c65f6872c041bf8278b33645ca6e8814bc8ebe68c4b2b8',
    ),
    'gzip-gnu-long-names': (
        'e9008e3353b1a2dbb843ff295b8805b8b9537f18ad791bec6495c74c29474a2d',
        'f7734de786fe132bda63bd49ab13879cf35fa2f38377b23ecdc3dde33c9aa889',
    ),
    'gzip-large-files': (
        'd3360f28fc0aae769eab8e23db936009ed7e9728e231502bbca387026c79e50b',
        '7dc313104869af1e408e081deb5dfa8950de502f145b9c3a49d43b2553c1a259',
    ),
    'gzip-large-files-level1-4member': (
        '6bec339f8df0b26c8a51e04a890d4f5b534d0bfaae0f98f5a5010f6883d5118b',
        '5f10ce23be004e31feabd9bed73fe488ec3d7b1b5c03133699266710cb0ee8b5',
    ),
    'gzip-level9-small-span': (
        '94bd0b922ff02a2b125be9b00fe97b664927fbc67d854163158eb7b23b06bea6',
        '336107c2f8bda4dd3b0866ca92735d6abfbcc1dfaa34e784475540eb0ec32622',
    ),
    'gzip-many-small-files': (
        '0e5a0548480a9e3c0b4a69bfd58d19e20204b66b2572da99ff63ec3dc9764a06',
        '865b41c0de07793317711f3eed91a159dbdd202635387c10783e20385cddb825',
    ),
    'gzip-many-small-files-multi': (
        '3b998751ca18780cb588bab0e68ee51a9aa26c793c88721f1bd50f662e4aa4e1',
        '6b8dea212fe162e3de4903804ade481e3d990cb45ecdeae5ef5384a0a3d14d4c',
    ),
    'gzip-odd-entries': (
        '21d42113270b1af3430f10c0930efdc5b6c288f84d676d0d255897832d8d6346',
        '34cb08f587c8f0408b11d209b7b5f9e1ea9dff01dfec8f5dda521ff6b068880c',
    ),
    'gzip-pax-mixed': (
        '8f8dbd960bd64fd70025347bd0c77306bd1c38d449359ab2d667d211de1c8309',
        'e2b84f440f4fb8e113e38f1f33734fa0fed834de9cb8a13584b98efffe0befa0',
    ),
    'gzip-stored-blocks': (
        'd10951d9d88412ca922d08bff3327813e0d71cb5dad3d63d19e24643be1db25e',
        '941638f004c4e6a76e1651cd7482be662f862cfaef4334e30b4ec617837b501f',
    ),
    'gzip-xattrs': (
        'e363f2fb426323caee2876b1046b0e2293ec2fdd89b916cea434775fa47641d4',
        'ea933fa4505474d3fa8a6eadf1e023b48f724561eb375ddb0c5024a805586399',
    ),
    'tar-empty': (
        'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
        '4848e33fd4aad59a90042d33f2fdd109a1e9c5e3f5efff917f709db46480b602',
    ),
    'tar-gnu-long-names': (
        '53617dbc0475911f11e40fc29eb5291011b1cf78c4821ec4c0b1ad5c0eb66efc',
        '1335424be9f6d4bd5cfbef534f52a7ccbcff6b61c129634798f213cfbe0dbcf0',
    ),
    'tar-many-small-files': (
        '47c9fa64f7e9cd67c5870fb190a4a3321345c0be25658124d682ab034523735c',
        'd6f235071cc04c66ba2cc16e52e859759ed3b2bc760b2f2444be1e1cd603380a',
    ),
    'tar-no-end-blocks': (
        'b593623eefa6b1cfb8b6f287e751d73612678ec2e377e4fd761cc32df7c8c8e8',
        '06293213cb341545611b69ac85934686e9c142854ab795fef14b487f4c2e8f40',
    ),
    'tar-odd-entries': (
        '1d032d93e7333c7c7c3492a19771e2beb93bfa80d6de670fad686a1098e2eae9',
        '79129a2659a0f80a18f9b9abe81c1220770c86beeb408790527891cad12149a4',
    ),
    'tar-pax-mixed': (
        'f51cf9e68ac8319bc348d4263806a3fdd27fc9425d7b963427303bcbadd6e449',
        '3164a85659dca2dec440860f51e5b7a4a827833d506a225ec87ac99b726bfe2e',
    ),
    'tar-sample': (
        '7e48a14e03a3c7d8949da2229bfbb5b401459fc9ff17928560a2feaaba440541',
        '7ee8bfb26407391b0714bee0cc4e391a2d44ed56f96907f595aba80a87d23b2c',
    ),
    'tar-xattrs': (
        '3766a4c48bf3cdb2b26173e39cc76f16c19039210ee063f5db967c5533439d43',
        '5f356ff16828518d09866ee8af26fa7f5ad9aa656ae7bf3481a2135fb8cc4539',
    ),
}

MUTATIONS_GOLDEN = 'f6a82a32b08c4f996b39c69f33d85b5f9ad626746c08f6500ec0a0476894d705'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _outcome(blob: bytes, media_type: str, span: int, chunk: int = 1 << 20) -> tuple[bytes, str]:
    """(zTOC bytes or b'', error text or '') of one build."""
    try:
        built = ZtocBuilder(span_size=span, build_tool_identifier="golden", chunk_size=chunk).build(
            io.BytesIO(blob), media_type, layer="golden-layer"
        )
    except ZtocBuildError as exc:
        return b"", f"{type(exc).__name__}: {exc}"
    return built.data, ""


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_ztoc_bytes_match_the_recorded_sequential_builder(name: str) -> None:
    factory, media_type, span = LAYERS[name]
    blob = factory()
    data, error = _outcome(blob, media_type, span)
    got = (_sha(blob), _sha(data) if data else "error:" + _sha(error.encode()))
    if RECORD:
        print(f"    {name!r}: {got!r},")
        return
    expected_blob, expected_ztoc = GOLDEN[name]
    assert got[0] == expected_blob, f"{name}: the generated layer changed (generator or zlib), not the builder"
    assert got[1] == expected_ztoc, f"{name}: zTOC differs from the sequential builder's ({error or 'bytes'})"
    if data:  # the generic encoder (Ztoc objects) writes the same bytes as the builder's path
        assert serialize_ztoc(parse_ztoc(data)) == data
        small, _ = _outcome(blob, media_type, span, chunk=4093)
        assert small == data


def _mutation_corpus() -> list[bytes]:
    rnd = random.Random(20260827)
    bases = [mixed_pax_tar(), gnu_tar_with_long_names(), *[d for _, d in edge_cases()[:12]]]
    cases = []
    for _ in range(600):
        data = rnd.choice(bases)
        for _ in range(rnd.randint(1, 3)):
            data = mutate(rnd, data)
        cases.append(data)
    return cases + [d for _, d in edge_cases()]


def test_mutated_and_edge_case_tars_match_the_recorded_builder() -> None:
    """Hundreds of odd (often invalid) tars: the same zTOC bytes, or the same error, as before."""
    digest = hashlib.sha256()
    for i, tar in enumerate(_mutation_corpus()):
        for media_type, blob in ((OCI_TAR, tar), ("application/vnd.oci.image.layer.v1.tar+gzip", gzip_blob(tar))):
            data, error = _outcome(blob, media_type, 1024 + i)
            digest.update(data or error.encode())
            digest.update(b"\x00")
    if RECORD:
        print(f"MUTATIONS_GOLDEN = {digest.hexdigest()!r}")
        return
    assert digest.hexdigest() == MUTATIONS_GOLDEN
