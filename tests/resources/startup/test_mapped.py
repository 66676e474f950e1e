"""A dynamically linked program (with its loader) that maps a large file and touches a few pages."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from resources.oci.refs import ImageRef
from resources.startup.residency import PAGE_SIZE
from tests.resources.startup.images import Entry, layer, push_image

MODEL_SIZE = 64 << 20
TOUCHED = (0, 17 * PAGE_SIZE + 5, MODEL_SIZE // 2, MODEL_SIZE - 1)
PROGRAM = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
int main(void) {
    char buf[64];
    int fd = open("/etc/app.json", O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf) <= 0) return 2;
    close(fd);
    fd = open("/models/model.bin", O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) return 3;
    const volatile unsigned char *p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return 4;
    long offsets[] = {%s};
    unsigned sum = 0;
    for (unsigned i = 0; i < sizeof offsets / sizeof offsets[0]; i++) sum += p[offsets[i]];
    printf("touched %%u\n", sum);
    return 0;
}
"""


def _shared_libs(binary: Path) -> tuple[str, list[str]]:
    """(loader path, other libraries) of a host binary, from ldd."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"=> (/\S+)", out)
    loader = re.search(r"^\s*(/\S*ld-linux\S*)", out, re.MULTILINE)
    assert loader, out
    return loader.group(1), libs


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("gcc"):
        pytest.fail("gcc is needed to build the dynamically linked test program (Debian package gcc)")
    d = tmp_path_factory.mktemp("prog")
    (d / "prog.c").write_text(PROGRAM % ", ".join(str(o) for o in TOUCHED))
    subprocess.run(["gcc", "-O1", "-o", str(d / "prog"), str(d / "prog.c")], check=True)
    return d / "prog"


def test_loader_and_mapped_pages(client, registry, busybox, recorder, program: Path) -> None:
    loader, libs = _shared_libs(program)
    real_loader = Path(loader).resolve()
    entries = [Entry("app", is_dir=True), Entry("app/prog", program.read_bytes(), 0o755)]
    entries += [Entry(str(real_loader).lstrip("/"), real_loader.read_bytes(), 0o755)]
    if Path(loader).is_symlink():  # /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
        entries.append(Entry(loader.lstrip("/"), link=str(real_loader)))
    entries += [Entry(str(Path(lib).resolve()).lstrip("/"), Path(lib).resolve().read_bytes(), 0o755) for lib in libs]
    libs_layer = layer(entries)
    model = layer(
        [
            Entry("models", is_dir=True),
            Entry("models/model.bin", bytes(MODEL_SIZE)),
            Entry("etc/app.json", b'{"threads": 4}\n'),
        ]
    )
    push_image(client, "t/mapped", "v1", [busybox, libs_layer, model], config={"Entrypoint": ["/app/prog"]})

    rec = recorder.record(ImageRef.parse(f"{registry.addr}/t/mapped:v1"))
    by = {f.path: f for f in rec.profile.files}
    lib_paths = {str(Path(lib).resolve()) for lib in libs}
    assert set(by) == {"/app/prog", str(real_loader), "/etc/app.json", "/models/model.bin", *lib_paths}
    assert by["/app/prog"].kind == "command" and by[str(real_loader)].kind == "loader"
    assert {by[p].kind for p in lib_paths | {"/etc/app.json", "/models/model.bin"}} == {"file"}
    assert (
        by[str(real_loader)].layer_digest == libs_layer.digest and by["/models/model.bin"].layer_digest == model.digest
    )
    order = [f.path for f in rec.profile.files]
    assert order.index("/app/prog") < order.index("/etc/app.json") < order.index("/models/model.bin")

    mapped = by["/models/model.bin"]
    assert mapped.size == MODEL_SIZE
    for offset in TOUCHED:  # every touched page is in a range ...
        assert any(start <= offset < end for start, end in mapped.ranges), (offset, mapped.ranges)
    # ... and the ranges are a small part of the file (readahead adds at most a window per touched page)
    assert mapped.bytes_read <= 4 << 20, mapped.ranges
    assert mapped.bytes_read < MODEL_SIZE // 16
    assert all(start % PAGE_SIZE == 0 for start, _end in mapped.ranges)


def test_host_readahead_widens_ranges_exact_mode_does_not(
    client, registry, busybox, program: Path, tmp_path: Path
) -> None:
    """Side by side: the same run on the work disk (its readahead) and on the no-readahead loop device."""
    from resources.startup.recorder import StartupRecorder

    loader, libs = _shared_libs(program)
    entries = [
        Entry("app/prog", program.read_bytes(), 0o755),
        Entry(loader.lstrip("/"), Path(loader).resolve().read_bytes(), 0o755),
    ]
    entries += [Entry(lib.lstrip("/"), Path(lib).resolve().read_bytes(), 0o755) for lib in libs]
    push_image(
        client,
        "t/ra",
        "v1",
        [
            busybox,
            layer(entries),
            layer([Entry("models/model.bin", bytes(MODEL_SIZE)), Entry("etc/app.json", b"{}\n")]),
        ],
        config={"Entrypoint": ["/app/prog"]},
    )
    ref = ImageRef.parse(f"{registry.addr}/t/ra:v1")
    results = {}
    for exact in (True, False):
        work = tmp_path / f"work-{exact}"
        work.mkdir()
        rec = StartupRecorder(client, work_root=work, exact_ranges=exact).record(ref)
        results[exact] = rec
    exact_file = next(f for f in results[True].profile.files if f.path == "/models/model.bin")
    host_file = next(f for f in results[False].profile.files if f.path == "/models/model.bin")
    assert results[True].readahead_kb == 0
    # exact: one page per touched offset (offsets 0 and 17 pages + 5 are two different pages)
    assert exact_file.bytes_read == len({o // PAGE_SIZE for o in TOUCHED}) * PAGE_SIZE, exact_file.ranges
    assert host_file.bytes_read >= exact_file.bytes_read
    if results[False].readahead_kb:
        assert host_file.bytes_read > exact_file.bytes_read
