"""SOCI index backfill on a real registry: images made by the test, one converter, per-image outcomes."""

from __future__ import annotations

import httpx
import pytest

from resources.aws.push_events import ImageFilter
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.release.backfill import BackfillSettings, ImageStatus, StatusRecord, check_soci_wiring
from resources.release.batch import run_backfill
from resources.release.catalog import OciCatalog, image_key, parse_image_key
from resources.release.scan import scan_registry
from resources.soci.verify import verify_image
from tests.support.images import corrupt_gzip_layer, gzip_layer, push_image, push_index, random_files, zstd_layer
from tests.support.registry import RunningRegistry

KIB = 1024
SETTINGS = dict(span_size=64 * KIB, min_layer_size=64 * KIB)


@pytest.mark.parametrize(("repo", "tag"), [
    ("team/app", "v1.2.3"), ("a", "latest"), ("deep/er/path-x", "sha-abc_def"), ("x", "v1...2"), ("r", "A.B"),
])
def test_image_keys_are_safe_stable_and_reversible(repo: str, tag: str) -> None:
    digest = "sha256:" + "3f2a9c1b7d4e" + "0" * 52
    key = image_key(repo, tag, digest)
    assert not any(c in key for c in ",/|:@") and "..." not in key
    assert key == image_key(repo, tag, digest)
    back = parse_image_key(key)
    assert (back.repository, back.tag) == (repo, tag) and back.matches(digest)
    assert not back.matches("sha256:" + "f" * 64)


def test_image_keys_do_not_collide() -> None:
    d = "sha256:" + "a" * 64
    keys = {image_key("a/b", "c", d), image_key("a", "b-c", d), image_key("a-b", "c", d), image_key("a/b-c", "x", d),
            image_key("a/b", "c", "sha256:" + "b" * 64)}
    assert len(keys) == 5
    with pytest.raises(ValueError, match="not an image key"):
        parse_image_key("team/app:v1")


def test_status_records_round_trip_through_metadata() -> None:
    rec = StatusRecord(key="k", image="r/x:1@sha256:0", status=ImageStatus.NOT_INDEXABLE, reason="zstd", platforms=2)
    assert StatusRecord.from_metadata("k", rec.to_metadata()) == rec
    assert not rec.status.retryable and ImageStatus.FAILED.retryable


def test_backfill_indexes_every_indexable_image_once(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    settings = BackfillSettings(registry=registry.addr, **SETTINGS)

    base = gzip_layer(random_files("base", 256 * KIB))
    old_top = gzip_layer(random_files("old", 96 * KIB))
    a1, a2 = gzip_layer(random_files("a1", 96 * KIB)), gzip_layer(random_files("a2", 96 * KIB))
    b1 = gzip_layer(random_files("b1", 96 * KIB))
    m_amd, base_arm, m_arm = (gzip_layer(random_files(n, 96 * KIB)) for n in ("m-amd", "base-arm", "m-arm"))
    small = gzip_layer(random_files("small", 8 * KIB))

    # Already indexed before the backfill (a separate converter, like an earlier pipeline run).
    # It sits in its own repository, which the backfill reaches after team/app1: base's zTOC must be found there.
    push_image(client, "team/old", "1", [base, old_top])
    settings.converter(client).convert(ImageRef.parse(f"{registry.addr}/team/old:1"),
                                       ImageRef.parse(f"{registry.addr}/team/old:1-soci"))
    before = {t: client.head_manifest("team/old", t).digest for t in ("1", "1-soci")}

    push_image(client, "team/app1", "v1", [base, a1])
    push_image(client, "team/app1", "v2", [base, a1, a2])
    push_image(client, "team/app2", "v1", [base, b1])  # another repository: base is shared across repositories
    amd = push_image(client, "team/multi", None, [base, m_amd], arch="amd64")
    arm = push_image(client, "team/multi", None, [base_arm, m_arm], arch="arm64")
    push_index(client, "team/multi", "1.0", [(amd[0], amd[1], "amd64"), (arm[0], arm[1], "arm64")])
    push_image(client, "team/zstd", "1", [zstd_layer(random_files("z", 256 * KIB))])
    push_image(client, "team/tiny", "1", [small])
    push_image(client, "team/broken", "1", [corrupt_gzip_layer(128 * KIB)])
    push_image(client, "team/other", "1", [gzip_layer(random_files("o", 96 * KIB))])  # excluded by the filter

    settings = BackfillSettings(
        registry=registry.addr,
        filters=ImageFilter.parse("team/app*:*,team/multi:*,team/zstd:*,team/tiny:*,team/broken:*,team/old:*"),
        **SETTINGS,
    )
    full_checks: list[str] = []

    def verify(ref: ImageRef) -> tuple[bool, str]:
        full_checks.append(ref.repository)
        r = verify_image(client, ref, sample=2)
        return r.passed, r.failure or "ok"

    report = run_backfill(client, OciCatalog(client), settings, verify=verify)
    by_image = {parse_image_key(r.key).repository + ":" + parse_image_key(r.key).tag: r for r in report.records}

    assert set(by_image) == {"team/app1:v1", "team/app1:v2", "team/app2:v1", "team/multi:1.0", "team/zstd:1",
                             "team/tiny:1", "team/broken:1"}, "scanned the wrong images (filters, -soci tags, indexed)"
    indexable = ["team/app1:v1", "team/app1:v2", "team/app2:v1", "team/multi:1.0"]
    for name in indexable:
        assert by_image[name].status is ImageStatus.INDEXED, by_image[name]
    assert by_image["team/zstd:1"].status is ImageStatus.NOT_INDEXABLE and "zstd" in by_image["team/zstd:1"].reason
    assert by_image["team/tiny:1"].status is ImageStatus.NOT_INDEXABLE
    assert "below the min layer size" in by_image["team/tiny:1"].reason
    assert by_image["team/broken:1"].status is ImageStatus.FAILED and "team/broken" in by_image["team/broken:1"].reason

    # Every indexable image verifies (lazy reads through its zTOCs match the layer bytes), on every platform.
    for name in indexable:
        repo, tag = name.split(":")
        ref = ImageRef.parse(f"{registry.addr}/{repo}:{tag}-soci")
        result = verify_image(client, ref, sample=4)
        assert result.passed, f"{ref}: {result.failure}"
        assert all(p.soci_index_digest for p in result.platforms)
        assert len(result.platforms) == (2 if repo == "team/multi" else 1)

    # The backfill verified end to end only results with a zTOC not verified before in the run; app1:v2 reuses
    # v1's zTOCs (base, a1) plus its own a2, so it is checked in full; none is skipped without a wiring check.
    assert sorted(full_checks) == sorted(["team/app1", "team/app1", "team/app2", "team/multi"])

    # The already indexed image is untouched.
    assert {t: client.head_manifest("team/old", t).digest for t in ("1", "1-soci")} == before

    # Each distinct layer that had no zTOC anywhere was decompressed exactly once: a1, a2, b1, m_amd, base_arm,
    # m_arm. base was indexed already (in team/old): its zTOC was found there and mounted into team/app1 first,
    # then reused in team/app2 and team/multi, never rebuilt.
    assert report.layers_built == 6
    assert by_image["team/app1:v1"].layers_shared == 1
    assert sum(r.layers_built for r in report.records if r.key.startswith("team~app1=v1+")) == 1

    # A second pass redoes nothing that finished; only the failed image is tried again.
    done = {r.key for r in report.records if not r.status.retryable}
    again = run_backfill(client, OciCatalog(client), settings, skip_keys=done)
    assert [parse_image_key(r.key).repository for r in again.records] == ["team/broken"]
    assert again.layers_built == 0


def test_scan_respects_its_deadline_and_resumes(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    layer = gzip_layer(random_files("x", 80 * KIB))
    for repo in ("r1", "r2", "r3"):
        push_image(client, repo, "1", [layer])
    settings = BackfillSettings(registry=registry.addr, **SETTINGS)
    ticks = iter([0.0, 100.0, 100.0, 100.0])  # the clock passes the deadline after the first repository
    first = scan_registry(client, OciCatalog(client), settings, deadline=50.0, clock=lambda: next(ticks))
    assert [i.repository for i in first.images] == ["r1"] and first.resume_after == "r1" and not first.complete
    rest = scan_registry(client, OciCatalog(client), settings, resume_after=first.resume_after)
    assert [i.repository for i in rest.images] == ["r2", "r3"] and rest.resume_after is None and rest.complete


def test_wiring_check_catches_a_missing_ztoc(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    push_image(client, "team/app", "v1", [gzip_layer(random_files("a", 96 * KIB))])
    settings = BackfillSettings(registry=registry.addr, **SETTINGS)
    result = settings.converter(client).convert(ImageRef.parse(f"{registry.addr}/team/app:v1"),
                                                ImageRef.parse(f"{registry.addr}/team/app:v1-soci"))
    ref = ImageRef(registry.addr, "team/app", digest=result.image_digest)
    ok, why = check_soci_wiring(client, ref, "v2")
    assert ok, why
    ztoc = result.platforms[0].ztocs[0].ztoc_digest
    httpx.delete(f"{registry.url}/v2/team/app/blobs/{ztoc}").raise_for_status()
    ok, why = check_soci_wiring(client, ref, "v2")
    assert not ok and ztoc in why


class _ImmutableCatalog(OciCatalog):
    """The registry's listing, with ECR-style immutable tags (what EcrCatalog reports for IMMUTABLE repositories)."""

    def tag_immutable(self, repository: str, tag: str) -> bool:
        return True


def test_immutable_soci_tag_is_not_overwritten(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    settings = BackfillSettings(registry=registry.addr, **SETTINGS)
    layer = gzip_layer(random_files("a", 96 * KIB))
    push_image(client, "team/app", "v1", [layer])
    settings.converter(client).convert(ImageRef.parse(f"{registry.addr}/team/app:v1"),
                                       ImageRef.parse(f"{registry.addr}/team/app:v1-soci"))
    stale = client.head_manifest("team/app", "v1-soci").digest
    push_image(client, "team/app", "v1", [layer, gzip_layer(random_files("b", 96 * KIB))])  # v1 moves on
    report = run_backfill(client, _ImmutableCatalog(client), settings)
    (rec,) = report.records
    assert rec.status is ImageStatus.NOT_INDEXABLE and "immutable" in rec.reason
    assert client.head_manifest("team/app", "v1-soci").digest == stale
    # With mutable tags the stale -soci tag is replaced by an index of the new image.
    (rec,) = run_backfill(client, OciCatalog(client), settings).records
    assert rec.status is ImageStatus.INDEXED and client.head_manifest("team/app", "v1-soci").digest != stale


def test_a_result_that_fails_verification_is_not_left_tagged(registry: RunningRegistry) -> None:
    client = RegistryClient(registry.addr)
    settings = BackfillSettings(registry=registry.addr, **SETTINGS)
    push_image(client, "team/new", "1", [gzip_layer(random_files("n", 96 * KIB))])
    push_image(client, "team/old", "1", [gzip_layer(random_files("o", 96 * KIB))])
    settings.converter(client).convert(ImageRef.parse(f"{registry.addr}/team/old:1"),
                                       ImageRef.parse(f"{registry.addr}/team/old:1-soci"))
    previous = client.head_manifest("team/old", "1-soci").digest
    push_image(client, "team/old", "1", [gzip_layer(random_files("o2", 96 * KIB))])  # 1 moves: 1-soci is stale

    def reject(ref: ImageRef) -> tuple[bool, str]:
        return False, "rejected by the test's verifier"

    records = {parse_image_key(r.key).repository: r for r in run_backfill(client, OciCatalog(client), settings,
                                                                          verify=reject).records}
    assert records["team/new"].status is ImageStatus.FAILED and "was deleted" in records["team/new"].reason
    assert client.head_manifest("team/new", "1-soci") is None
    assert records["team/old"].status is ImageStatus.FAILED and "put back" in records["team/old"].reason
    assert client.head_manifest("team/old", "1-soci").digest == previous
