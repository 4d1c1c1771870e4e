"""Reading the heartbeats every instance writes (`health:<service>:<instance>` hashes)."""

from __future__ import annotations

import os
import socket
from typing import Any

from backend.bus import codec
from backend.bus.entries import Skips, decode_value
from backend.messages import Heartbeat

HEARTBEATS = "health:*"
"""The heartbeat hashes (one per live instance); also the name their undecodable ones are
counted under."""


def read_heartbeats(r: Any, skips: Skips | None = None) -> list[Heartbeat]:
    """The latest heartbeat of every live instance (the hashes expire when an instance dies); one
    that does not decode is skipped (counted in `skips` under HEARTBEATS: those of this read)."""
    keys = sorted(r.scan_iter(match=HEARTBEATS, count=1000))
    if not keys:
        return []
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.hget(k, codec.FIELD_STR)
    beats = [decode_value(raw, Heartbeat) for raw in pipe.execute() if raw]
    if skips is not None:
        skips.set(HEARTBEATS, sum(b is None for b in beats))
    return [b for b in beats if b is not None]


def pid_namespace() -> str:
    """This process's pid namespace (a container has its own), or "" where there is none to read."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def gone(state: str | bytes | None, pid: int | bytes | None = None, host: str | bytes | None = None,
         pidns: str | bytes | None = None) -> bool:
    """Whether an instance, by its heartbeat hash, no longer works on anything: the hash expired
    (state None), its last beat said stopped or failed, or it ran on this host, in this pid
    namespace, under a pid that no longer exists (known at once, without waiting for the hash to
    expire). A false 'gone' is safe: whoever takes over its entries is fenced
    (backend/bus/fence.py, the OMS's watched records)."""
    if isinstance(state, bytes):
        state = state.decode()
    if state is None or state in ("stopped", "failed"):
        return True
    host = host.decode() if isinstance(host, bytes) else host
    pidns = pidns.decode() if isinstance(pidns, bytes) else pidns
    if pid is None or not host or host != socket.gethostname() or not pidns or pidns != pid_namespace():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False
