"""A minimal ctypes binding to the system zlib for raw inflate stopping at deflate block boundaries.

Python's ``zlib`` module cannot stop at block boundaries (``Z_BLOCK``), report the unused bit
count of the last input byte (``data_type``), or prime the bit buffer (``inflatePrime``); all
three are needed to place and resume SOCI checkpoints exactly like soci-snapshotter's zlib code.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from types import TracebackType

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


@functools.cache
def libz() -> ctypes.CDLL:
    """Load the system libz once, declare the prototypes used here, and check its major version."""
    name = ctypes.util.find_library("z") or "libz.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:  # pragma: no cover - depends on the host
        raise ZlibError(f"cannot load the system zlib ({name}): {exc}", Z_ERRNO) from exc
    stream_p = ctypes.POINTER(ZStream)
    lib.zlibVersion.restype = ctypes.c_char_p
    lib.zlibVersion.argtypes = []
    lib.inflateInit2_.restype = ctypes.c_int
    lib.inflateInit2_.argtypes = [stream_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.inflate.restype = ctypes.c_int
    lib.inflate.argtypes = [stream_p, ctypes.c_int]
    lib.inflateEnd.restype = ctypes.c_int
    lib.inflateEnd.argtypes = [stream_p]
    lib.inflateReset.restype = ctypes.c_int
    lib.inflateReset.argtypes = [stream_p]
    lib.inflateReset2.restype = ctypes.c_int
    lib.inflateReset2.argtypes = [stream_p, ctypes.c_int]
    lib.inflateSetDictionary.restype = ctypes.c_int
    lib.inflateSetDictionary.argtypes = [stream_p, ctypes.c_void_p, ctypes.c_uint]
    lib.inflatePrime.restype = ctypes.c_int
    lib.inflatePrime.argtypes = [stream_p, ctypes.c_int, ctypes.c_int]
    version = lib.zlibVersion()
    if not version or not version.startswith(b"1."):
        raise ZlibError(f"unsupported zlib version {version!r} (need 1.x)", Z_VERSION_ERROR)
    return lib


def zlib_version() -> str:
    """The runtime version string of the loaded libz."""
    return libz().zlibVersion().decode()


def return_name(code: int) -> str:
    """The symbolic name of a zlib return code."""
    return _RETURN_NAMES.get(code, str(code))


class RawInflater:
    """A raw-deflate (windowBits -15) inflate stream; use as a context manager or call ``close``."""

    def __init__(self) -> None:
        self._lib = libz()
        self.stream = ZStream()
        self._stream_ref = ctypes.byref(self.stream)
        # Keeps the object that next_in points into alive while zlib may read it.
        self._input_owner: object = None
        version = self._lib.zlibVersion()
        code = self._lib.inflateInit2_(
            self._stream_ref, RAW_DEFLATE_WINDOW_BITS, version, ctypes.sizeof(ZStream)
        )
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
        """Free zlib's internal state (idempotent)."""
        if self._open:
            self._open = False
            self._lib.inflateEnd(self._stream_ref)
            self._input_owner = None

    def reset(self) -> None:
        """Start a new raw deflate stream (keeps allocations)."""
        self._check(self._lib.inflateReset(self._stream_ref), "inflateReset")

    def set_dictionary(self, window: bytes) -> None:
        """Preload the sliding window a resumed stream refers back into."""
        buf = ctypes.c_char_p(bytes(window))
        code = self._lib.inflateSetDictionary(
            self._stream_ref, ctypes.cast(buf, ctypes.c_void_p), len(window)
        )
        self._check(code, "inflateSetDictionary")

    def prime(self, bits: int, value: int) -> None:
        """Insert ``bits`` bits of ``value`` into the bit buffer (resuming mid-byte)."""
        self._check(self._lib.inflatePrime(self._stream_ref, bits, value), "inflatePrime")

    def set_input(self, data: bytes, offset: int = 0) -> None:
        """Point next_in at ``data[offset:]`` (a bytes object, kept alive until replaced; no copy)."""
        self._input_owner = data
        self.stream.next_in = bytes_address(data) + offset
        self.stream.avail_in = len(data) - offset

    def set_output(self, address: int, size: int) -> None:
        """Point next_out at ``size`` writable bytes at ``address``."""
        self.stream.next_out = address
        self.stream.avail_out = size

    def inflate(self, flush: int) -> int:
        """Call inflate(); returns the zlib code (errors other than Z_BUF_ERROR raise)."""
        code = self._lib.inflate(self._stream_ref, flush)
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
