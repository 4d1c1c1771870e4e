"""Dead letters: the one record of an entry (or a frame) we give up on, always sent to the
dead-letter stream of the stream it came from (or was bound for), `dlq.<stream>`.

The record is the original fields, byte for byte, plus where it came from and why:
`dlq_reason`, `dlq_stream` (the source stream's name), `dlq_ts_ns`, `dlq_deliveries`, and when
known `dlq_id` (its entry id), `dlq_group` (the consumer group, or the service that wrote it) and
`dlq_consumer` (the instance). A record that would be over the dead-letter stream's size limit
(an oversized entry that reached the bus around the producers' check, or a very long reason) is
cut to fit: the largest original fields are shortened, and `dlq_truncated` says which and from
what size, so a poison message of megabytes costs its dead-letter stream a few kilobytes. The
worker, the normalizer's fenced commit and the gateway build it here; only the way it is sent
differs (`xadd`: a raw command; `queue`: redis-py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from backend.bus import streams
from backend.bus.publish import limit, queue_fields, size_of, xadd_fields

MAX_REASON = 2048
"""A reason longer than this is cut (with a note of its length)."""


def record(
    stream: str,
    fields: Mapping[Any, Any],
    reason: str,
    *,
    eid: bytes | str | None = None,
    group: str | None = None,
    consumer: str | None = None,
    deliveries: int = 1,
) -> dict[Any, Any]:
    """The dead-letter record of one entry of `stream`."""
    out: dict[Any, Any] = dict(fields)
    why = reason.encode()
    if len(why) > MAX_REASON:
        why = why[:MAX_REASON] + f"... ({len(why):,} bytes)".encode()
    out[b"dlq_reason"] = why
    out[b"dlq_stream"] = stream.encode()
    if eid is not None:
        out[b"dlq_id"] = eid if isinstance(eid, bytes) else eid.encode()
    if group is not None:
        out[b"dlq_group"] = group.encode()
    if consumer is not None:
        out[b"dlq_consumer"] = consumer.encode()
    out[b"dlq_deliveries"] = str(deliveries).encode()
    out[b"dlq_ts_ns"] = str(time.time_ns()).encode()
    return _fit(out, list(fields), limit(streams.dlq(stream)))


def _fit(out: dict[Any, Any], original: list[Any], cap: int) -> dict[Any, Any]:
    """`out` with its largest original fields cut until the record is within `cap` bytes."""
    over = size_of(out) - cap
    if over <= 0:
        return out
    notes = []
    for k in sorted(original, key=lambda k: -len(_raw(out[k]))):
        v = _raw(out[k])
        keep = max(0, len(v) - over - 256)  # 256: room for the note itself
        out[k] = v[:keep]
        notes.append(f"{_name(k)}: {len(v):,} bytes, first {keep:,} kept")
        over = size_of(out) + sum(len(n) for n in notes) + 32 - cap
        if over <= 0:
            break
    out[b"dlq_truncated"] = "; ".join(notes).encode()
    return out


def _raw(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def _name(k: Any) -> str:
    return k.decode(errors="replace") if isinstance(k, bytes) else str(k)


def xadd(stream: str, fields: Mapping[Any, Any], reason: str, **origin: Any) -> tuple[Any, ...]:
    """The XADD of the dead letter to `dlq.<stream>`, as a raw command (e.g. for a fenced commit)."""
    return xadd_fields(streams.dlq(stream), record(stream, fields, reason, **origin))


def queue(pipe: Any, stream: str, fields: Mapping[Any, Any], reason: str, **origin: Any) -> Any:
    """XADD the dead letter to `dlq.<stream>` on a redis-py pipeline or client."""
    return queue_fields(pipe, streams.dlq(stream), record(stream, fields, reason, **origin))
