"""Typed views of redis-py replies.

Our clients never set decode_responses, so keys, ids, fields and values come back as bytes.
redis-py types them `bytes | str` (it cannot know the setting) and some replies as Optional;
these helpers give callers the types they really get, in one place. `entries` and `read` are
casts (no copy: an XRANGE reply can hold 100k entries); `text` and `blob` check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

Entry = tuple[bytes, dict[bytes, bytes]]
"""One stream entry: (id, {field: value})."""


def entries(reply: object) -> list[Entry]:
    """An XRANGE / XREVRANGE reply (or None for a missing stream) as typed entries."""
    return cast("list[Entry]", reply or [])


def pending(reply: object) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """An XCLAIM reply: a pending entry deleted since it was read comes back without fields."""
    return cast("list[tuple[bytes, dict[bytes, bytes] | None]]", reply or [])


def read(reply: object) -> list[tuple[bytes, list[Entry]]]:
    """An XREAD / XREADGROUP reply ([[stream, entries], ...]; None when nothing came) per stream."""
    return cast("list[tuple[bytes, list[Entry]]]", reply or [])


def fields(reply: Mapping[bytes | str, bytes | str]) -> dict[bytes, bytes]:
    """An HGETALL reply as {field: value} bytes."""
    return {blob(k): blob(v) for k, v in reply.items()}


def text(value: bytes | str) -> str:
    """A key, id or value as text."""
    return value.decode() if isinstance(value, bytes) else value


def blob(value: bytes | str) -> bytes:
    """A key, id or value as bytes."""
    return value if isinstance(value, bytes) else value.encode()
