"""A minimal ctypes binding to raw inflate that stops at deflate block boundaries, on zlib-ng or zlib.

Python's ``zlib`` module cannot stop at block boundaries (``Z_BLOCK``), report the unused bit
count of the last input byte (``data_type``), or prime the bit buffer (``inflatePrime``); all
three are needed to place and resume SOCI checkpoints exactly like soci-snapshotter's zlib code.

Two implementations of that same API: zlib-ng (its native ``zng_`` API, as exported by the
``zlib-ng`` wheel's extension module; SIMD inflate and CRC32, about 1.8x zlib's inflate speed
here) and the system libz. Deflate decoding is fully determined by the stream, and both stop at
the same block boundaries with the same ``data_type`` bits, so checkpoints are byte-identical
(tests compare both with indexed_gzip). ``STREAMABLE_INFLATE_LIBRARY`` picks one: ``auto``
(default: zlib-ng when its wheel exports the entry points, else zlib), ``zlib-ng`` or ``zlib``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import zlib
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

from resources.errors import StreamableError

Z_OK = 0
Z_STREAM_END = 1
Z_NEED_DICT = 2
Z_ERRNO = -1
Z_STREAM_ERROR = -2
Z_DATA_ERROR = -3
Z_MEM_ERROR = -4
Z_BUF_ERROR = -5
Z_VERSION_ERROR = -6

Z_NO_FLUSH = 0
Z_BLOCK = 5

# data_type bits reported by inflate() (zlib.h, "Z_BLOCK" paragraph).
DATA_TYPE_UNUSED_BITS_MASK = 7
DATA_TYPE_LAST_BLOCK = 64
DATA_TYPE_BLOCK_BOUNDARY = 128

RAW_DEFLATE_WINDOW_BITS = -15

MAX_CALL_BYTES = 1 << 30
"""Most bytes handed to one C call: avail_in, avail_out and crc32's length are 32-bit."""
BINDING_ZLIB_NG_VERSION = b"2.3.3"
"""The zlib-ng release this binding's zng_stream layout was written against (its major version is checked)."""

INFLATE_LIBRARY_ENV = "STREAMABLE_INFLATE_LIBRARY"
LIBRARY_CHOICES = ("auto", "zlib-ng", "zlib")

_RETURN_NAMES = {
    Z_OK: "Z_OK",
    Z_STREAM_END: "Z_STREAM_END",
    Z_NEED_DICT: "Z_NEED_DICT",
    Z_ERRNO: "Z_ERRNO",
    Z_STREAM_ERROR: "Z_STREAM_ERROR",
    Z_DATA_ERROR: "Z_DATA_ERROR",
    Z_MEM_ERROR: "Z_MEM_ERROR",
    Z_BUF_ERROR: "Z_BUF_ERROR",
    Z_VERSION_ERROR: "Z_VERSION_ERROR",
}


class ZlibError(StreamableError):
    """A zlib call returned an error code; ``code`` is the zlib return value."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ZStream(ctypes.Structure):
    """``z_stream`` from zlib.h (natural alignment gives the LP64 layout: 112 bytes)."""

    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


class ZngStream(ctypes.Structure):
    """``zng_stream`` from zlib-ng.h (native API: 32-bit counts and adler; 104 bytes on LP64)."""

    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint32),
        ("total_in", ctypes.c_size_t),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint32),
        ("total_out", ctypes.c_size_t),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int32),
        ("adler", ctypes.c_uint32),
        ("reserved", ctypes.c_ulong),
    ]


@dataclass(frozen=True)
class InflateLibrary:
    """One loaded inflate implementation: its name, version, stream layout and entry points."""

    name: str
    version: str
    stream_type: type[ctypes.Structure]
    init_raw: Any  # (stream pointer) -> code: inflateInit2 with raw-deflate window bits
    inflate: Any  # (stream pointer, flush) -> code
    end: Any
    reset: Any
    set_dictionary: Any  # (stream pointer, address, length) -> code
    prime: Any  # (stream pointer, bits, value) -> code
    crc32_at: Any  # (crc, address, length) -> crc

    def crc32(self, data: bytes | bytearray | memoryview, crc: int = 0) -> int:
        """CRC32 of ``data`` continuing ``crc`` (a copy only for read-only memoryviews that are not bytes)."""
        view = memoryview(data).cast("B")
        keep: object = data  # what the address points into stays referenced until the last call returned
        if isinstance(data, bytes):
            address = bytes_address(data)
        elif view.readonly:
            keep = bytes(view)
            address = bytes_address(keep)
        elif view.nbytes:
            keep = ctypes.c_char.from_buffer(view)
            address = ctypes.addressof(keep)
        else:
            return crc
        for start in range(0, view.nbytes, MAX_CALL_BYTES):  # lengths are 32-bit in both C APIs
            crc = int(self.crc32_at(crc, address + start, min(MAX_CALL_BYTES, view.nbytes - start)))
        del keep
        return crc

    def describe(self) -> str:
        """``name version``, for benchmark output and diagnostics."""
        return f"{self.name} {self.version}"


def _declare(fn: Any, restype: Any, *argtypes: Any) -> Any:
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


@functools.cache
def system_zlib() -> InflateLibrary:
    """The system libz, prototypes declared, major version checked."""
    name = ctypes.util.find_library("z") or "libz.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:  # pragma: no cover - depends on the host
        raise ZlibError(f"cannot load the system zlib ({name}): {exc}", Z_ERRNO) from exc
    p = ctypes.POINTER(ZStream)
    version = _declare(lib.zlibVersion, ctypes.c_char_p)()
    if not version or not version.startswith(b"1."):
        raise ZlibError(f"unsupported zlib version {version!r} (need 1.x)", Z_VERSION_ERROR)
    init2 = _declare(lib.inflateInit2_, ctypes.c_int, p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
    size = ctypes.sizeof(ZStream)
    return InflateLibrary(
        name="zlib",
        version=version.decode(),
        stream_type=ZStream,
        init_raw=lambda ref: init2(ref, RAW_DEFLATE_WINDOW_BITS, version, size),
        inflate=_declare(lib.inflate, ctypes.c_int, p, ctypes.c_int),
        end=_declare(lib.inflateEnd, ctypes.c_int, p),
        reset=_declare(lib.inflateReset, ctypes.c_int, p),
        set_dictionary=_declare(lib.inflateSetDictionary, ctypes.c_int, p, ctypes.c_void_p, ctypes.c_uint),
        prime=_declare(lib.inflatePrime, ctypes.c_int, p, ctypes.c_int, ctypes.c_int),
        crc32_at=_declare(lib.crc32, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_uint),
    )


@functools.cache
def zlib_ng() -> InflateLibrary | None:
    """zlib-ng's native API from the ``zlib-ng`` wheel, or None when it is missing or exports none of it."""
    try:
        import zlib_ng.zlib_ng as module  # noqa: PLC0415 - optional at import time
    except ImportError:
        return None
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path)
        p = ctypes.POINTER(ZngStream)
        version = _declare(lib.zlibng_version, ctypes.c_char_p)()
        # The `_` variant checks our major version and sizeof(zng_stream) against its own: a layout change fails.
        init2 = _declare(lib.zng_inflateInit2_, ctypes.c_int32, p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_int32)
        size = ctypes.sizeof(ZngStream)
        library = InflateLibrary(
            name="zlib-ng",
            version=version.decode() if version else "?",
            stream_type=ZngStream,
            init_raw=lambda ref: init2(ref, RAW_DEFLATE_WINDOW_BITS, BINDING_ZLIB_NG_VERSION, size),
            inflate=_declare(lib.zng_inflate, ctypes.c_int32, p, ctypes.c_int32),
            end=_declare(lib.zng_inflateEnd, ctypes.c_int32, p),
            reset=_declare(lib.zng_inflateReset, ctypes.c_int32, p),
            set_dictionary=_declare(lib.zng_inflateSetDictionary, ctypes.c_int32, p, ctypes.c_void_p, ctypes.c_uint32),
            prime=_declare(lib.zng_inflatePrime, ctypes.c_int32, p, ctypes.c_int32, ctypes.c_int32),
            crc32_at=_declare(lib.zng_crc32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32),
        )
    except (OSError, AttributeError):  # a build that hides its C symbols
        return None
    # zlib-ng picks its SIMD functions on first use: do that once here, before build threads race to it.
    try:
        RawInflater(library).close()
    except ZlibError:  # another zng_stream layout than ours (Z_VERSION_ERROR): use the system zlib
        return None
    library.crc32(b"streamable")
    return library


def inflate_library(choice: str | None = None) -> InflateLibrary:
    """The implementation ``choice`` (else $STREAMABLE_INFLATE_LIBRARY, else ``auto``) names."""
    wanted = (choice or os.environ.get(INFLATE_LIBRARY_ENV) or "auto").strip().lower()
    if wanted not in LIBRARY_CHOICES:
        raise ZlibError(
            f"{INFLATE_LIBRARY_ENV}={wanted!r} is not one of {', '.join(LIBRARY_CHOICES)}", Z_VERSION_ERROR
        )
    if wanted == "zlib":
        return system_zlib()
    fast = zlib_ng()
    if fast is not None:
        return fast
    if wanted == "zlib-ng":
        raise ZlibError(
            f"{INFLATE_LIBRARY_ENV}=zlib-ng but the zlib-ng wheel is not installed or exports no zng_ API",
            Z_VERSION_ERROR,
        )
    return system_zlib()


def zlib_module(library: InflateLibrary | None = None) -> ModuleType:
    """The Python ``zlib``-style module of the same implementation (``zlib_ng.zlib_ng`` or ``zlib``).

    For whole-stream gzip inflate where no checkpoint is placed (the member scan of reused zTOCs):
    same API as ``zlib`` (``decompressobj``, ``error``), same output. Verification keeps Python's zlib.
    """
    if (library or inflate_library()).name == "zlib-ng":
        import zlib_ng.zlib_ng as module  # noqa: PLC0415 - present: zlib_ng() loaded it

        return module
    return zlib


def zlib_version() -> str:
    """The runtime version string of the loaded system libz."""
    return system_zlib().version


def return_name(code: int) -> str:
    """The symbolic name of a zlib return code."""
    return _RETURN_NAMES.get(code, str(code))


class RawInflater:
    """A raw-deflate (windowBits -15) inflate stream; use as a context manager or call ``close``."""

    def __init__(self, library: InflateLibrary | None = None) -> None:
        self.library = library or inflate_library()
        self.stream: Any = self.library.stream_type()
        self._stream_ref = ctypes.byref(self.stream)
        # Keeps the object that next_in points into alive while zlib may read it.
        self._input_owner: object = None
        code = self.library.init_raw(self._stream_ref)
        if code != Z_OK:
            raise ZlibError(f"inflateInit2 failed: {return_name(code)}", code)
        self._open = True

    def __enter__(self) -> RawInflater:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_open", False):
            self.close()

    def close(self) -> None:
        """Free the inflater's internal state (idempotent)."""
        if self._open:
            self._open = False
            self.library.end(self._stream_ref)
            self._input_owner = None

    def reset(self) -> None:
        """Start a new raw deflate stream (keeps allocations)."""
        self._check(self.library.reset(self._stream_ref), "inflateReset")

    def set_dictionary(self, window: bytes) -> None:
        """Preload the sliding window a resumed stream refers back into."""
        data = bytes(window)
        code = self.library.set_dictionary(self._stream_ref, bytes_address(data), len(data))
        self._check(code, "inflateSetDictionary")

    def prime(self, bits: int, value: int) -> None:
        """Insert ``bits`` bits of ``value`` into the bit buffer (resuming mid-byte)."""
        self._check(self.library.prime(self._stream_ref, bits, value), "inflatePrime")

    def set_input(self, data: bytes, offset: int = 0) -> None:
        """Point next_in at ``data[offset:]`` (a bytes object, kept alive until replaced; no copy; < 4 GiB)."""
        if len(data) - offset > 0xFFFFFFFF:
            raise ValueError(f"inflate input of {len(data) - offset} bytes: feed chunks below 4 GiB")
        self._input_owner = data
        self.stream.next_in = bytes_address(data) + offset
        self.stream.avail_in = len(data) - offset

    def set_output(self, address: int, size: int) -> None:
        """Point next_out at ``size`` writable bytes at ``address``."""
        self.stream.next_out = address
        self.stream.avail_out = size

    def inflate(self, flush: int) -> int:
        """Call inflate(); returns the zlib code (errors other than Z_BUF_ERROR raise)."""
        code = int(self.library.inflate(self._stream_ref, flush))
        if code < 0 and code != Z_BUF_ERROR:
            msg = self.stream.msg.decode(errors="replace") if self.stream.msg else ""
            raise ZlibError(f"inflate failed: {return_name(code)} {msg}".strip(), code)
        if code == Z_NEED_DICT:
            raise ZlibError("inflate failed: raw deflate data asked for a dictionary", code)
        return code

    def _check(self, code: int, what: str) -> None:
        if code != Z_OK:
            raise ZlibError(f"{what} failed: {return_name(code)}", code)


def bytes_address(data: bytes) -> int:
    """The address of a bytes object's payload (no copy; valid while ``data`` is alive)."""
    address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert address is not None
    return address


def bytearray_address(buf: bytearray) -> int:
    """The address of a bytearray's buffer (valid until it is resized)."""
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
