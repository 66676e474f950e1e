"""Index the layers of one image (all selected platforms) in parallel, with the fetch overlapped with inflate.

Two pieces, both plain threads:

- `prefetched(chunks)`: a reader thread pulls a layer blob from the registry into a bounded queue
  (`PREFETCH_DEPTH` chunks of 1 MiB) while the zTOC builder consumes it, so network waits and
  inflate overlap and memory stays bounded whatever the layer size.
- `LayerBuilds`: the converter's per-layer loop stays sequential (reuse lookups, zTOC pushes, the
  SOCI index: same bytes, same order as before); what runs ahead is only the CPU-heavy zTOC build of
  the next layers to build, at most `max_parallel` at a time, each layer digest once across every
  platform. A failed build surfaces exactly where the sequential loop would have built that layer.

Threads pay off because the builder spends its time in zlib (ctypes call) and hashlib, which both
release the GIL (`benchmarks/image_parallel.py` measures it). While builds fill every core, each one runs
its digest work on its own thread instead of handing it to a digest thread: the hand-offs cost CPU and
buy no overlap then (`cores_busy`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from resources.errors import StreamableError

if TYPE_CHECKING:
    from resources.oci.refs import ImageRef
    from resources.soci.convert import SociConverter
    from resources.soci.ztoc.builder import BuiltZtoc

T = TypeVar("T")
PREFETCH_DEPTH = 4
"""Chunks a layer's reader thread may hold ahead of the builder (the client's chunks are 1 MiB)."""
MAX_PARALLEL_LAYERS_CAP = 64


class ParallelSettingError(StreamableError, ValueError):
    """A parallelism setting is out of range."""


def default_max_parallel_layers() -> int:
    """min(4, cores): more threads than cores only adds memory."""
    return max(1, min(4, os.cpu_count() or 1))


def check_max_parallel_layers(value: int, where: str = "max_parallel_layers") -> int:
    """`value` when it is 1..MAX_PARALLEL_LAYERS_CAP, else a clear error naming `where`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARALLEL_LAYERS_CAP:
        raise ParallelSettingError(f"{where} must be an integer from 1 to {MAX_PARALLEL_LAYERS_CAP}, got {value!r}")
    return value


_END = object()


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _Prefetcher:
    """Iterator over chunks read ahead by one thread into a bounded queue."""

    def __init__(self, chunks: Iterator[bytes], depth: int, name: str) -> None:
        self._source = chunks
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for chunk in self._source:
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failed(exc))

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failed):
            self._done = True
            raise item.error
        assert isinstance(item, bytes)
        return item

    def close(self) -> None:
        """Stop the reader and wait for it, so the source can be closed on this thread."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(0.05)


@contextmanager
def prefetched(
    chunks: Iterator[bytes], depth: int = PREFETCH_DEPTH, name: str = "layer-fetch"
) -> Iterator[Iterator[bytes]]:
    """`chunks`, read ahead by a thread (at most `depth` chunks in memory); errors are raised to the consumer."""
    reader = _Prefetcher(chunks, depth, name)
    try:
        yield reader
    finally:
        reader.close()


def serialized(fn: Callable[..., None] | None) -> Callable[..., None] | None:
    """`fn` behind a lock (progress callbacks are called from several build threads)."""
    if fn is None:
        return None
    lock = threading.Lock()

    def call(*args: object) -> None:
        with lock:
            fn(*args)

    return call


Work = tuple[Any, ...]


@dataclass(frozen=True)
class LayerJob:
    """One layer to build: its digest (the dedupe key) and the build function's arguments."""

    digest: str
    work: Work


class LayerBuilds(Generic[T]):
    """zTOC builds run ahead of a sequential loop, at most `max_parallel` at once, in job order, once per digest."""

    def __init__(self, build: Callable[..., T], jobs: Sequence[LayerJob], max_parallel: int) -> None:
        self._build = build
        first: dict[str, LayerJob] = {}
        for job in jobs:
            first.setdefault(job.digest, job)
        self._jobs = list(first.values())
        self._position = {j.digest: i for i, j in enumerate(self._jobs)}
        self._futures: dict[str, Future[T]] = {}
        self._next = 0
        self._window = max(1, max_parallel)
        self._pool = ThreadPoolExecutor(max_workers=self._window, thread_name_prefix="ztoc-build")
        self._lock = threading.Lock()
        self._closed = False
        self._running = 0
        self._fill(0)

    @property
    def running(self) -> int:
        """Builds running on the pool right now."""
        return self._running

    def cores_busy(self) -> bool:
        """True while running builds occupy every core: each build then hashes on its own thread."""
        return self._running >= (os.cpu_count() or 1)

    def _run(self, *work: Any) -> T:
        with self._lock:
            self._running += 1
        try:
            return self._build(*work)
        finally:
            with self._lock:
                self._running -= 1

    @property
    def planned(self) -> list[str]:
        """Layer digests this object builds, in build order."""
        return [j.digest for j in self._jobs]

    def _fill(self, consumed: int) -> None:
        """Keep `window` builds submitted beyond the last one taken."""
        with self._lock:
            while not self._closed and self._next < len(self._jobs) and self._next < consumed + self._window:
                job = self._jobs[self._next]
                self._futures[job.digest] = self._pool.submit(self._run, *job.work)
                self._next += 1

    def result(self, digest: str, work: Work) -> T:
        """The build of `digest` (raising its error here); builds `work` on this thread when it was not planned."""
        position = self._position.get(digest)
        if position is None or self._closed:
            return self._build(*work)
        self._fill(position)
        future = self._futures.pop(digest, None)
        if future is None:  # taken already (asked twice): build again rather than guess
            return self._build(*work)
        try:
            return future.result()
        finally:
            self._fill(position + 1)

    def close(self) -> None:
        """Cancel builds not started and wait for running ones (they push nothing)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._futures.clear()

    def __enter__(self) -> LayerBuilds[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cores_busy(builds: LayerBuilds[Any] | None) -> bool:
    """True while parallel layer builds occupy every core (a build's digests then run inline)."""
    return builds is not None and builds.cores_busy()


def start_layer_builds(converter: SociConverter, src: ImageRef, dst_repository: str, images: Sequence[Any],
                       plans: dict[str, Any]) -> LayerBuilds[BuiltZtoc] | None:
    """Start the zTOC builds the converter's loop will ask for (layers with no reusable zTOC), or None when at
    most one layer needs building or the converter runs one layer at a time."""
    limit = converter.max_parallel_layers
    if limit <= 1:
        return None
    jobs: list[LayerJob] = []
    for img in images:
        for p in plans[img.raw.digest]:
            layer = p.layer
            if p.skip_reason is not None or any(j.digest == layer.digest for j in jobs):
                continue
            if converter.reuse.lookup(dst_repository, layer.digest, layer.size, converter.span_size) is None:
                jobs.append(LayerJob(layer.digest, (src, img, layer)))
    if len(jobs) < 2:
        return None
    return LayerBuilds(converter._build, jobs, limit)
