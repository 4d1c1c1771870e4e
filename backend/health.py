"""Reading the heartbeats every instance writes (`health:<service>:<instance>` hashes), and
Redis's memory against its limit (what `tradeops health`, the console and alerting show)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from backend.bus import codec, streams
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


@dataclass(frozen=True)
class RedisMemory:
    """Redis's memory as INFO reports it: `used` bytes of `maxmemory` (0: no limit set)."""

    used: int
    maxmemory: int
    policy: str = ""

    @property
    def pct(self) -> float | None:
        """Used as a percentage of maxmemory; None without a limit."""
        return 100.0 * self.used / self.maxmemory if self.maxmemory else None

    @property
    def high(self) -> bool:
        """At or over the alert threshold (streams.ALERT_MEMORY_PCT)."""
        pct = self.pct
        return pct is not None and pct >= streams.ALERT_MEMORY_PCT

    def line(self) -> str:
        """`redis memory: used X of maxmemory Y (Z%)`, as `tradeops health` prints it."""
        if not self.maxmemory:
            return f"redis memory: used {human_bytes(self.used)}, no maxmemory set (unbounded)"
        policy = f", policy {self.policy}" if self.policy else ""
        return (
            f"redis memory: used {human_bytes(self.used)} of maxmemory {human_bytes(self.maxmemory)} "
            f"({self.pct:.1f}%{policy})"
        )


def memory_from_info(info: dict[str, Any]) -> RedisMemory:
    """The memory part of an `INFO memory` reply (redis-py's dict, sync or async alike)."""
    policy = info.get("maxmemory_policy", "")
    return RedisMemory(
        int(info.get("used_memory", 0)),
        int(info.get("maxmemory", 0) or 0),
        policy.decode() if isinstance(policy, bytes) else str(policy),
    )


def redis_memory(r: Any) -> RedisMemory:
    """Redis's memory used against its maxmemory (a sync client)."""
    return memory_from_info(r.info("memory"))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def pid_namespace() -> str:
    """This process's pid namespace (a container has its own), or "" where there is none to read."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def gone(
    state: str | bytes | None,
    pid: int | bytes | None = None,
    host: str | bytes | None = None,
    pidns: str | bytes | None = None,
) -> bool:
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
