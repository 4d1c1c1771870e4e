"""Reading the heartbeats every instance writes (`health:<service>:<instance>` hashes)."""

from __future__ import annotations

from typing import Any

from backend.bus import codec
from backend.messages import Heartbeat


def read_heartbeats(r: Any) -> list[Heartbeat]:
    """The latest heartbeat of every live instance (the hashes expire when an instance dies)."""
    keys = sorted(r.scan_iter(match="health:*", count=1000))
    if not keys:
        return []
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.hget(k, codec.FIELD_STR)
    return [codec.decode(raw, Heartbeat) for raw in pipe.execute() if raw]
