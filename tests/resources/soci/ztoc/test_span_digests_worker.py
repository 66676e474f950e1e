"""OrderedWorker: calls run in submission order whether each goes to the thread or runs inline."""

from __future__ import annotations

import gzip
import random
import threading
import time

import pytest

from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.span_digests import OrderedWorker

from .conftest import make_tar, sample_tar_members

OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def test_switching_between_thread_and_inline_keeps_the_order() -> None:
    rnd = random.Random(7)
    seen: list[tuple[int, str]] = []
    worker = OrderedWorker(threaded=True, inline_when=lambda: rnd.random() < 0.5)

    def call(i: int) -> None:
        if i % 7 == 0:
            time.sleep(0.002)  # let the queue fill, so some submits find it busy and must queue
        seen.append((i, threading.current_thread().name))

    try:
        for i in range(300):
            worker.submit(call, i)
        worker.drain()
    finally:
        worker.close()
    assert [i for i, _ in seen] == list(range(300))
    threads = {name for _, name in seen}
    assert "ztoc-digest" in threads and threading.current_thread().name in threads  # both paths were taken


def test_an_inline_failure_is_raised_by_submit() -> None:
    worker = OrderedWorker(threaded=True, inline_when=lambda: True)

    def boom() -> None:
        raise ValueError("inline boom")

    try:
        with pytest.raises(ValueError, match="inline boom"):
            worker.submit(boom)
    finally:
        worker.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ztoc_bytes_do_not_depend_on_where_digests_ran(seed: int) -> None:
    tar = make_tar(sample_tar_members(30 + seed))
    blob = gzip.compress(tar, 6, mtime=0)
    chunks = [blob[i : i + 8192] for i in range(0, len(blob), 8192)]
    expected = ZtocBuilder(span_size=16 * 1024, digest_in_thread=False).build(chunks, OCI_GZIP)
    rnd = random.Random(seed)
    toggling = ZtocBuilder(span_size=16 * 1024, inline_digests_when=lambda: rnd.random() < 0.5)
    assert toggling.build(chunks, OCI_GZIP).data == expected.data
    assert toggling.build([tar], "application/vnd.oci.image.layer.v1.tar").data == ZtocBuilder(
        span_size=16 * 1024, digest_in_thread=False
    ).build([tar], "application/vnd.oci.image.layer.v1.tar").data
