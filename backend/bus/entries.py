"""Decoding stream entries for every reader that is not a consumer group: the CLI, the console,
the gates, the migration board, the supervisor, the benchmarks, a service's own look at a
stream (its broadcasts, the newest ticks at start). The worker dead-letters what does not decode
for its group (backend/bus/worker.py); everyone else reads through here, so one bad entry is
skipped and counted, never raised.

An entry is undecodable when it has no payload field (`codec.FIELD`), its payload is not msgpack,
is msgpack of another type, lacks a required field or has one of the wrong type, or fails its
type's own check (a TickBatch whose columns do not hold `n` ticks). A message that decodes is
shown as it is, however odd its values.

`decode_entries(entries, T)` -> `([(id, T)], skipped)`; `Skips` tallies what was skipped per
stream for whoever shows it: the CLI prints `notes()` to stderr, the console hands `by_stream`
to its alert area, a service reports the total in its heartbeat (`skipped_undecodable`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from backend.bus import codec

log = logging.getLogger("tradeops.entries")

T = TypeVar("T")

UNDECODABLE = (msgspec.DecodeError, KeyError)
"""What decoding one entry raises when it is not a message (msgspec's ValidationError, a type's
own check included, is a DecodeError; KeyError: no payload field)."""


def reason(exc: BaseException) -> str:
    """Why an entry did not decode, in words."""
    return "no 'd' field" if isinstance(exc, KeyError) else str(exc)


def payload(fields: Mapping[Any, Any]) -> bytes:
    """The payload of an entry's fields (bytes or str keys); KeyError when there is none."""
    data = fields.get(codec.FIELD)
    if data is None:
        data = fields.get(codec.FIELD_STR)
    if data is None:
        raise KeyError(codec.FIELD_STR)
    return data


class Skips:
    """Undecodable entries skipped, per stream (or per key, for hashes read the same way)."""

    def __init__(self) -> None:
        self.by_stream: dict[str, int] = {}

    def add(self, stream: str, n: int = 1) -> None:
        if n:
            self.by_stream[stream] = self.by_stream.get(stream, 0) + n

    def set(self, stream: str, n: int) -> None:
        """The count of a reader that looks at the same entries again each time (a scan of the
        newest few): what it skipped in its latest look."""
        if n:
            self.by_stream[stream] = n
        else:
            self.by_stream.pop(stream, None)

    def merge(self, other: Skips) -> None:
        for stream, n in other.by_stream.items():
            self.add(stream, n)

    @property
    def total(self) -> int:
        return sum(self.by_stream.values())

    def __bool__(self) -> bool:
        return bool(self.by_stream)

    def notes(self) -> list[str]:
        """One line per stream: "skipped 2 undecodable entries on orders.events"."""
        return [note(stream, n) for stream, n in sorted(self.by_stream.items())]


def note(stream: str, n: int) -> str:
    return f"skipped {n} undecodable {'entry' if n == 1 else 'entries'} on {stream}"


def decode_entries(
    entries: Iterable[tuple[bytes, Mapping[Any, Any]]], type_: type[T], *, stream: str = "", skips: Skips | None = None
) -> tuple[list[tuple[bytes, T]], int]:
    """The entries (as XRANGE/XREVRANGE return them, in their order) that decode as `type_`, and
    how many did not (skipped, logged at debug, and added to `skips` under `stream` if given)."""
    return decode_with(entries, codec.decoder(type_).decode, stream=stream, skips=skips)


def decode_with(
    entries: Iterable[tuple[bytes, Mapping[Any, Any]]],
    decode: Callable[[bytes], T],
    *,
    stream: str = "",
    skips: Skips | None = None,
) -> tuple[list[tuple[bytes, T]], int]:
    """`decode_entries` with a decoder of the caller's (a msgspec Decoder's `decode`)."""
    out: list[tuple[bytes, T]] = []
    skipped = 0
    for eid, fields in entries:
        if fields is None:  # an entry deleted while it was pending
            continue
        try:
            out.append((eid, decode(payload(fields))))
        except UNDECODABLE as exc:
            skipped += 1
            log.debug("skipping undecodable %s entry %r: %s", stream or "stream", eid, reason(exc))
    if skips is not None:
        skips.add(stream, skipped)
    return out, skipped


def decode_value(raw: bytes, type_: type[T]) -> T | None:
    """One payload (a hash field's, say) as `type_`, or None when it does not decode."""
    try:
        return codec.decoder(type_).decode(raw)
    except msgspec.DecodeError as exc:
        log.debug("skipping undecodable %s: %s", getattr(type_, "__name__", type_), exc)
        return None
