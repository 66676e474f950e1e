"""JSON encoding and decoding that reproduce Go's `encoding/json` byte for byte.

soci-snapshotter decodes a fetched SOCI index into Go structs, re-encodes it with
`json.Marshal` and checks the digest of the result, so every manifest we write must be
exactly what Go would write for the same value (docs/soci-format.md section 4). The rules below follow
Go 1.22+ `encoding/json` (encode.go `appendString`, `isEmptyValue`, map key sorting; decode.go
field matching and UTF-8 coercion):

- compact output, no trailing newline;
- struct fields in declaration order, `omitempty` drops false/0/""/nil/empty slices and maps
  (never structs);
- map keys sorted by their UTF-8 bytes;
- strings: `"` and `\\` backslash-escaped, `\\b \\f \\n \\r \\t`, other bytes < 0x20 as `\\u00XX`,
  `<` `>` `&` as `\\u003c` `\\u003e` `\\u0026`, U+2028/U+2029 as `\\u2028`/`\\u2029`, invalid UTF-8
  as `\\ufffd` (one per bad byte), all other text raw UTF-8;
- `[]byte` as standard padded base64; nil slices and maps as `null`.

Typed structs are plain dataclasses whose fields are declared with `go_field(...)` in Go's
declaration order; decoding ignores unknown keys (so re-encoding drops them, as Go does),
matches keys exactly first and then case-insensitively, lets the last duplicate key win and
merges a repeated object into the struct or map already decoded, like Go.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from resources.errors import StreamableError

T = TypeVar("T")

_JSON_NAME = "go_json_name"
_OMITEMPTY = "go_json_omitempty"

_MISSING: Any = dataclasses.MISSING


class GoJSONError(StreamableError, ValueError):
    """A value that Go's encoding/json would refuse to encode or decode."""


def go_field(
    name: str,
    *,
    omitempty: bool = False,
    default: Any = _MISSING,
    default_factory: Any = _MISSING,
) -> Any:
    """Declare a dataclass field with its Go JSON name and `omitempty` option."""
    metadata = {_JSON_NAME: name, _OMITEMPTY: omitempty}
    if default is not _MISSING:
        return dataclasses.field(default=default, metadata=metadata)
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(metadata=metadata)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------

# Bytes in 0x00-0x7f that Go writes unescaped with escapeHTML=true (htmlSafeSet).
_ASCII_ESCAPES: dict[int, bytes] = {c: b"\\u%04x" % c for c in range(0x20)}
_ASCII_ESCAPES.update(
    {
        0x08: b"\\b",
        0x0C: b"\\f",
        0x0A: b"\\n",
        0x0D: b"\\r",
        0x09: b"\\t",
        0x22: b'\\"',
        0x5C: b"\\\\",
        0x3C: b"\\u003c",
        0x3E: b"\\u003e",
        0x26: b"\\u0026",
    }
)
_NEEDS_ESCAPE_STR = re.compile("[\x00-\x1f\"\\\\<>&\u2028\u2029\ud800-\udfff]")


def _go_decode_rune(data: bytes, i: int) -> tuple[int, int]:
    """Go's utf8.DecodeRune on data[i:]: (rune, size); (-1, 1) for an invalid byte."""
    b0 = data[i]
    n = len(data)
    if b0 < 0x80:
        return b0, 1
    if 0xC2 <= b0 <= 0xDF:
        if i + 1 < n and 0x80 <= data[i + 1] <= 0xBF:
            return ((b0 & 0x1F) << 6) | (data[i + 1] & 0x3F), 2
        return -1, 1
    if 0xE0 <= b0 <= 0xEF:
        lo, hi = (0xA0, 0xBF) if b0 == 0xE0 else (0x80, 0x9F) if b0 == 0xED else (0x80, 0xBF)
        if i + 2 < n and lo <= data[i + 1] <= hi and 0x80 <= data[i + 2] <= 0xBF:
            return ((b0 & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F), 3
        return -1, 1
    if 0xF0 <= b0 <= 0xF4:
        lo, hi = (0x90, 0xBF) if b0 == 0xF0 else (0x80, 0x8F) if b0 == 0xF4 else (0x80, 0xBF)
        if (
            i + 3 < n
            and lo <= data[i + 1] <= hi
            and 0x80 <= data[i + 2] <= 0xBF
            and 0x80 <= data[i + 3] <= 0xBF
        ):
            return (
                ((b0 & 0x07) << 18)
                | ((data[i + 1] & 0x3F) << 12)
                | ((data[i + 2] & 0x3F) << 6)
                | (data[i + 3] & 0x3F)
            ), 4
        return -1, 1
    return -1, 1


def encode_go_string(value: str | bytes) -> bytes:
    """Encode a Go string (Python str, or raw bytes that may hold invalid UTF-8) as Go does."""
    if isinstance(value, str):
        if not _NEEDS_ESCAPE_STR.search(value):
            return b'"' + value.encode("utf-8") + b'"'
        # Lone surrogates stand for bytes that are not UTF-8 (surrogateescape) or are invalid
        # code points; either way Go sees invalid UTF-8 and writes one \ufffd per bad byte.
        raw = value.encode("utf-8", "surrogateescape") if _has_escaped_bytes(value) else None
        data = raw if raw is not None else value.encode("utf-8", "surrogatepass")
    else:
        data = bytes(value)
    out = bytearray(b'"')
    start = 0
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b < 0x80:
            esc = _ASCII_ESCAPES.get(b)
            if esc is not None:
                out += data[start:i]
                out += esc
                i += 1
                start = i
            else:
                i += 1
            continue
        rune, size = _go_decode_rune(data, i)
        if rune == -1:
            out += data[start:i]
            out += b"\\ufffd"
            i += 1
            start = i
            continue
        if rune in (0x2028, 0x2029):
            out += data[start:i]
            out += b"\\u%04x" % rune
            i += size
            start = i
            continue
        i += size
    out += data[start:]
    out += b'"'
    return bytes(out)


def _has_escaped_bytes(value: str) -> bool:
    """True when the str carries surrogateescape'd bytes (U+DC80..U+DCFF)."""
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _format_float(value: float) -> bytes:
    """Go's float64 encoding: shortest round-trip digits, ES6-style exponent cutoffs."""
    if math.isnan(value) or math.isinf(value):
        raise GoJSONError(f"json: unsupported value: {value!r}")
    if value == 0:
        return b"-0" if math.copysign(1.0, value) < 0 else b"0"
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        return _shortest_exponent(value).encode()
    return _shortest_fixed(value).encode()


def _shortest_exponent(value: float) -> str:
    """strconv.FormatFloat(v, 'e', -1, 64) with Go's e-09 -> e-9 cleanup."""
    digits, exponent = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    exp = exponent + len(digits) - 1
    exp_sign = "-" if exp < 0 else "+"
    exp_digits = f"{abs(exp):02d}"
    if exp_digits.startswith("0") and exp_sign == "-":
        exp_digits = exp_digits[1:]
    return f"{sign}{mantissa}e{exp_sign}{exp_digits}"


def _shortest_fixed(value: float) -> str:
    """strconv.FormatFloat(v, 'f', -1, 64)."""
    digits, exponent = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    if exponent >= 0:
        return sign + digits + "0" * exponent
    point = len(digits) + exponent
    if point > 0:
        return sign + digits[:point] + "." + digits[point:]
    return sign + "0." + "0" * (-point) + digits


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of |value| and the power of ten of the last digit."""
    text = repr(abs(value))
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    if frac_part == "0":
        frac_part = ""
    digits = (int_part + frac_part).lstrip("0")
    exponent -= len(frac_part)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    return stripped or "0", exponent


def _is_empty(value: Any) -> bool:
    """Go's isEmptyValue: false, 0, "", nil, and empty slices/maps/strings (never structs)."""
    if value is None or value is False:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, (str, bytes, bytearray, list, tuple, dict)):
        return len(value) == 0
    return False


def _encode(value: Any, out: bytearray) -> None:
    if value is None:
        out += b"null"
    elif value is True:
        out += b"true"
    elif value is False:
        out += b"false"
    elif isinstance(value, int):
        out += str(int(value)).encode()
    elif isinstance(value, float):
        out += _format_float(value)
    elif isinstance(value, str):
        out += encode_go_string(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out += b'"' + base64.b64encode(bytes(value)) + b'"'
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _encode_struct(value, out)
    elif isinstance(value, Mapping):
        _encode_map(value, out)
    elif isinstance(value, (list, tuple)):
        out += b"["
        for i, item in enumerate(value):
            if i:
                out += b","
            _encode(item, out)
        out += b"]"
    else:
        raise GoJSONError(f"json: unsupported type: {type(value).__name__}")


def _encode_map(value: Mapping[Any, Any], out: bytearray) -> None:
    keyed: list[tuple[bytes, bytes, Any]] = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise GoJSONError(f"json: unsupported map key type {type(key).__name__}")
        # Go sorts by the key's bytes; surrogateescape keeps raw bytes for odd keys.
        errors = "surrogateescape" if _has_escaped_bytes(key) else "surrogatepass"
        raw = key.encode("utf-8", errors)
        keyed.append((raw, encode_go_string(key), item))
    keyed.sort(key=lambda kv: kv[0])
    out += b"{"
    for i, (_, encoded_key, item) in enumerate(keyed):
        if i:
            out += b","
        out += encoded_key
        out += b":"
        _encode(item, out)
    out += b"}"


def _struct_fields(cls: type) -> list[tuple[dataclasses.Field[Any], str, bool]]:
    fields = _FIELD_CACHE.get(cls)
    if fields is None:
        fields = []
        for f in dataclasses.fields(cls):
            name = f.metadata.get(_JSON_NAME)
            if name is None:
                continue  # not part of the Go struct (Python-only helper field)
            fields.append((f, name, bool(f.metadata.get(_OMITEMPTY))))
        _FIELD_CACHE[cls] = fields
    return fields


_FIELD_CACHE: dict[type, list[tuple[dataclasses.Field[Any], str, bool]]] = {}


def _encode_struct(value: Any, out: bytearray) -> None:
    out += b"{"
    first = True
    for f, name, omitempty in _struct_fields(type(value)):
        item = getattr(value, f.name)
        if omitempty and _is_empty(item):
            continue
        if not first:
            out += b","
        first = False
        out += encode_go_string(name)
        out += b":"
        _encode(item, out)
    out += b"}"


def marshal(value: Any) -> bytes:
    """Encode `value` exactly like Go's `json.Marshal` (compact, HTML-escaped, no newline)."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class _Pairs(list):
    """A decoded JSON object as its (key, value) pairs, duplicates and order kept."""


_SURROGATES = re.compile("[\ud800-\udfff]")


def _coerce_string(value: str) -> str:
    """Go replaces invalid UTF-8 (and lone \\uD800-style escapes) with U+FFFD when decoding."""
    if _SURROGATES.search(value):
        return _SURROGATES.sub("\ufffd", value)
    return value


def _parse(data: bytes | str) -> Any:
    """Parse JSON text keeping duplicate keys, with Go's UTF-8 coercion of invalid bytes."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, (bytes, bytearray)) else data
    try:
        return json.loads(
            text,
            object_pairs_hook=_Pairs,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise GoJSONError(f"invalid JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise GoJSONError(f"invalid JSON: {name} is not a JSON value")


def _fold(name: str) -> str:
    """Go's case-insensitive key match for ASCII field names (incl. U+017F and U+212A)."""
    return name.replace("\u017f", "s").replace("\u212a", "k").lower()


def _type_hints(cls: type) -> dict[str, Any]:
    hints = _HINT_CACHE.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINT_CACHE[cls] = hints
    return hints


_HINT_CACHE: dict[type, dict[str, Any]] = {}


def _optional_inner(hint: Any) -> Any | None:
    """X for `X | None`, else None."""
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _decode(hint: Any, value: Any, existing: Any, path: str) -> Any:
    inner = _optional_inner(hint)
    if inner is not None:
        if value is None:
            return None
        return _decode(inner, value, existing, path)
    if hint is Any:
        return _plain(value)
    origin = typing.get_origin(hint)
    if value is None:
        # null leaves strings/numbers/bools/structs alone and sets slices/maps/bytes to nil.
        if origin in (list, dict) or hint is bytes:
            return None
        return existing
    if hint is str:
        if not isinstance(value, str):
            raise GoJSONError(f"json: cannot unmarshal {_json_kind(value)} into {path} of type string")
        return _coerce_string(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise GoJSONError(f"json: cannot unmarshal {_json_kind(value)} into {path} of type bool")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GoJSONError(f"json: cannot unmarshal {_json_kind(value)} into {path} of type int64")
        if not -(2**63) <= value < 2**63:
            raise GoJSONError(f"json: cannot unmarshal number {value} into {path} of type int64")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GoJSONError(f"json: cannot unmarshal {_json_kind(value)} into {path} of type float64")
        return float(value)
    if hint is bytes:
        if not isinstance(value, str):
            raise GoJSONError(f"json: cannot unmarshal {_json_kind(value)} into {path} of type []byte")
        try:
            return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
        except ValueError as exc:
            raise GoJSONError(f"json: {path}: illegal base64 data") from exc
    if origin is list:
        if not isinstance(value, list) or isinstance(value, _Pairs):
            raise GoJSONError(f"json: cannot unmarshal {_json_kind(value)} into {path} of type array")
        (item_hint,) = typing.get_args(hint)
        return [_decode(item_hint, item, _zero(item_hint), f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, _Pairs):
            raise GoJSONError(f"json: cannot unmarshal {_json_kind(value)} into {path} of type map")
        _, item_hint = typing.get_args(hint)
        result: dict[str, Any] = dict(existing) if isinstance(existing, dict) else {}
        for key, item in value:
            key = _coerce_string(key)
            result[key] = _decode(item_hint, item, _zero(item_hint), f"{path}[{key!r}]")
        return result
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, _Pairs):
            raise GoJSONError(f"json: cannot unmarshal {_json_kind(value)} into {path} of type {hint.__name__}")
        return _decode_struct(hint, value, existing, path)
    raise GoJSONError(f"unsupported type hint {hint!r} at {path}")


def _decode_struct(cls: type[T], pairs: _Pairs, existing: Any, path: str) -> T:
    hints = _type_hints(cls)
    fields = _struct_fields(cls)
    exact = {name: f for f, name, _ in fields}
    folded: dict[str, Any] = {}
    for f, name, _ in fields:
        folded.setdefault(_fold(name), f)
    if isinstance(existing, cls):
        values = {f.name: getattr(existing, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    else:
        values = {f.name: _zero(hints[f.name], f) for f, _, _ in fields}
    for key, item in pairs:
        target = exact.get(key) or folded.get(_fold(key))
        if target is None:
            continue
        values[target.name] = _decode(hints[target.name], item, values.get(target.name),
                                      f"{path}.{target.metadata[_JSON_NAME]}")
    return cls(**values)


def _zero(hint: Any, f: dataclasses.Field[Any] | None = None) -> Any:
    """Go's zero value for a field type."""
    if _optional_inner(hint) is not None:
        return None
    origin = typing.get_origin(hint)
    if origin in (list, dict) or hint is bytes:
        return None
    if hint is str:
        return ""
    if hint is int:
        return 0
    if hint is float:
        return 0.0
    if hint is bool:
        return False
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _zero_struct(hint)
    return None


def _zero_struct(cls: type[T]) -> T:
    hints = _type_hints(cls)
    return cls(**{f.name: _zero(hints[f.name], f) for f, _, _ in _struct_fields(cls)})


def _plain(value: Any) -> Any:
    """A parsed JSON value as plain Python (dicts for objects; last duplicate wins)."""
    if isinstance(value, _Pairs):
        return {_coerce_string(k): _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return _coerce_string(value)
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, _Pairs):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


def unmarshal(data: bytes | str, cls: type[T]) -> T:
    """Decode JSON into the dataclass `cls` the way Go's `json.Unmarshal` fills a struct."""
    parsed = _parse(data)
    if not isinstance(parsed, _Pairs):
        raise GoJSONError(f"json: cannot unmarshal {_json_kind(parsed)} into Go value of type {cls.__name__}")
    return _decode_struct(cls, parsed, None, cls.__name__)


def loads(data: bytes | str) -> Any:
    """Parse JSON into plain Python values with Go's string coercion (objects become dicts)."""
    return _plain(_parse(data))


def is_canonical(data: bytes, cls: type[Any]) -> bool:
    """True when `data` decodes into `cls` and re-encodes to exactly the same bytes."""
    try:
        return marshal(unmarshal(data, cls)) == data
    except GoJSONError:
        return False


__all__ = [
    "GoJSONError",
    "encode_go_string",
    "go_field",
    "is_canonical",
    "loads",
    "marshal",
    "unmarshal",
]
