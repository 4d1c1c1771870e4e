"""Dead letters: the one record of an entry (or a frame) we give up on, always sent to the
dead-letter stream of the stream it came from (or was bound for), `dlq.<stream>`.

The record is the original fields, byte for byte, plus where it came from and why:
`dlq_reason`, `dlq_stream` (the source stream's name), `dlq_ts_ns`, `dlq_deliveries`, and when
known `dlq_id` (its entry id), `dlq_group` (the consumer group, or the service that wrote it) and
`dlq_consumer` (the instance). The worker, the normalizer's fenced commit and the gateway build it
here; only the way it is sent differs (`xadd`: a raw command; `queue`: redis-py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from backend.bus import streams
from backend.bus.publish import queue_fields, xadd_fields


def record(stream: str, fields: Mapping[Any, Any], reason: str, *, eid: bytes | str | None = None,
           group: str | None = None, consumer: str | None = None, deliveries: int = 1) -> dict[Any, Any]:
    """The dead-letter record of one entry of `stream`."""
    out: dict[Any, Any] = dict(fields)
    out[b"dlq_reason"] = reason.encode()
    out[b"dlq_stream"] = stream.encode()
    if eid is not None:
        out[b"dlq_id"] = eid if isinstance(eid, bytes) else eid.encode()
    if group is not None:
        out[b"dlq_group"] = group.encode()
    if consumer is not None:
        out[b"dlq_consumer"] = consumer.encode()
    out[b"dlq_deliveries"] = str(deliveries).encode()
    out[b"dlq_ts_ns"] = str(time.time_ns()).encode()
    return out


def xadd(stream: str, fields: Mapping[Any, Any], reason: str, **origin: Any) -> tuple[Any, ...]:
    """The XADD of the dead letter to `dlq.<stream>`, as a raw command (e.g. for a fenced commit)."""
    return xadd_fields(streams.dlq(stream), record(stream, fields, reason, **origin))


def queue(pipe: Any, stream: str, fields: Mapping[Any, Any], reason: str, **origin: Any) -> Any:
    """XADD the dead letter to `dlq.<stream>` on a redis-py pipeline or client."""
    return queue_fields(pipe, streams.dlq(stream), record(stream, fields, reason, **origin))
