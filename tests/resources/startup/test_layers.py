"""Layer attribution: files overridden, whited out or hidden by an opaque directory in upper layers."""

from __future__ import annotations

from pathlib import Path

from resources.oci.refs import ImageRef
from resources.startup.image import resolve_image
from resources.startup.rootfs import assemble_rootfs
from tests.conftest import DockerEngine
from tests.resources.startup.images import Entry, layer, push_image

LOWER = layer(
    [
        Entry("data", is_dir=True),
        Entry("data/keep", b"keep\n"),
        Entry("data/over", b"lower\n"),
        Entry("data/gone", b"gone\n"),
        Entry("data/dir", is_dir=True),
        Entry("data/dir/old1", b"old1\n"),
        Entry("data/dir/old2", b"old2\n"),
        Entry("data/link", link="keep"),
    ]
)
UPPER = layer(
    [
        Entry("data/over", b"upper\n"),
        Entry("data/.wh.gone"),
        Entry("data/dir", is_dir=True),
        Entry("data/dir/.wh..wh..opq"),
        Entry("data/dir/new", b"new\n"),
    ]
)


def test_overridden_and_whited_out_files_come_from_the_right_layer(
    client, registry, busybox, recorder, tmp_path: Path
) -> None:
    script = "cat /data/keep /data/over /data/dir/new; cat /data/gone /data/dir/old1 2>/dev/null; exit 0"
    push_image(client, "t/layers", "v1", [busybox, LOWER, UPPER], config={"Entrypoint": ["/bin/sh", "-c", script]})
    ref = ImageRef.parse(f"{registry.addr}/t/layers:v1")
    rec = recorder.record(ref)
    by = {f.path: f for f in rec.profile.files}
    assert set(by) == {"/bin/busybox", "/data/keep", "/data/over", "/data/dir/new"}
    assert by["/data/keep"].layer_digest == LOWER.digest
    assert by["/data/over"].layer_digest == UPPER.digest and by["/data/over"].size == len(b"upper\n")
    assert by["/data/dir/new"].layer_digest == UPPER.digest
    assert by["/bin/busybox"].layer_digest == busybox.digest
    assert rec.output_tail == ("keep", "upper", "new")

    rootfs = assemble_rootfs(client, resolve_image(client, ref), tmp_path / "rootfs")
    assert not (rootfs.root / "data/gone").exists() and "/data/gone" not in rootfs.provenance
    assert sorted(p.name for p in (rootfs.root / "data/dir").iterdir()) == ["new"]
    assert "/data/dir/old1" not in rootfs.provenance and "/data/dir/old2" not in rootfs.provenance
    assert (rootfs.root / "data/link").is_symlink() and rootfs.resolve("/data/link") == "/data/keep"


def test_symlink_does_not_lead_out_of_the_root(client, busybox, tmp_path: Path, registry) -> None:
    escape = layer([Entry("evil", link="/" + str(tmp_path / "outside").lstrip("/")), Entry("evil/pwned", b"x")])
    push_image(client, "t/escape", "v1", [busybox, escape], config={"Entrypoint": ["/bin/true"]})
    rootfs = assemble_rootfs(
        client, resolve_image(client, ImageRef.parse(f"{registry.addr}/t/escape:v1")), tmp_path / "rootfs"
    )
    assert not (tmp_path / "outside").exists()
    assert (rootfs.root / str(tmp_path / "outside").lstrip("/") / "pwned").read_bytes() == b"x"


def test_docker_built_image_whiteouts(docker_engine: DockerEngine, registry, client, recorder, tmp_path: Path) -> None:
    """BuildKit's own layers: a RUN that overrides, deletes and recreates a directory."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM streamable/busybox:local\n"
        "RUN mkdir -p /data/dir && echo one > /data/over && echo gone > /data/gone && echo old > /data/dir/old\n"
        "RUN echo two > /data/over && rm /data/gone && rm -rf /data/dir && mkdir /data/dir && echo new > "
        "/data/dir/new\n"
        'ENTRYPOINT ["/bin/sh", "-c", '
        '"cat /data/over /data/dir/new; cat /data/gone /data/dir/old 2>/dev/null; exit 0"]\n'
    )
    tag = f"{registry.addr}/t/built:v1"
    docker_engine.run("build", "--network=none", "-t", tag, str(ctx))
    docker_engine.run("push", tag)
    try:
        ref = ImageRef.parse(tag)
        image = resolve_image(client, ref)
        rec = recorder.record(ref)
    finally:
        docker_engine.run("rmi", tag, check=False)
    by = {f.path: f for f in rec.profile.files}
    assert set(by) == {"/bin/busybox", "/data/over", "/data/dir/new"}
    top = image.layers[-1].digest
    assert by["/data/over"].layer_digest == top and by["/data/dir/new"].layer_digest == top
    assert by["/bin/busybox"].layer_digest == image.layers[0].digest
    assert rec.output_tail == ("two", "new")
