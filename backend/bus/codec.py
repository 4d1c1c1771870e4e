"""The one codec: msgspec msgpack in one stream field (`d`).

Every wire type in backend.messages is a tagged Struct, so one decoder reads any of them;
typed decoders are cached per type for the hot paths.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

FIELD = b"d"
FIELD_STR = "d"

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()


def encode(msg: Any) -> bytes:
    return _encoder.encode(msg)


_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def decoder(type_: Any) -> msgspec.msgpack.Decoder[Any]:
    """The decoder of `type_`, made once (a dict, not functools.cache: as fast, and typed)."""
    dec = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    return dec


def decode(data: bytes, type_: type[T]) -> T:
    """Decode one payload as `type_` (a Struct or a Union of tagged Structs)."""
    return decoder(type_).decode(data)


def decode_any(data: bytes) -> Any:
    """Decode any wire message (the union of all tagged types in backend.messages)."""
    from backend.messages import AnyArrayMessage, AnyMapMessage

    first = data[:1]
    is_array = bool(first) and (0x90 <= first[0] <= 0x9F or first[0] in (0xDC, 0xDD))
    return decoder(AnyArrayMessage if is_array else AnyMapMessage).decode(data)


def fields(msg: Any) -> dict[bytes, bytes]:
    """The XADD field mapping for one message."""
    return {FIELD: _encoder.encode(msg)}


def payload(entry_fields: dict[Any, Any]) -> bytes:
    """The encoded payload of one stream entry (fields as returned by redis-py)."""
    data = entry_fields.get(FIELD)
    if data is None:
        data = entry_fields.get(FIELD_STR)
    if data is None:
        raise msgspec.DecodeError("entry has no 'd' field")
    return data
