"""The once-per-slot claim of a job's run, on Redis.

A run is claimed with SET NX on `scheduler:run:<job>:<slot>` (records.run_key), so among any
number of scheduler instances a slot runs once. A run left 'running' by an instance that is gone
(its heartbeat says so) is taken over once, by compare-and-set on the claim. When the run ends its
record (outcome, reason, what it did) replaces the claim and becomes the job's latest run
(`scheduler:last`), in one transaction.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from backend.bus import streams
from backend.health import gone
from backend.scheduling.records import LAST_KEY, SINCE_KEY, run_key

RUN_TTL_S = 35 * 86400


async def deployed_since(r: Any) -> float:
    """When the scheduler was first deployed (set now by the first instance ever)."""
    await r.set(SINCE_KEY, str(time.time()), nx=True)
    return float(await r.get(SINCE_KEY))


class Claims:
    """The claims of one scheduler instance (`service`/`instance`) on the async Redis `r`."""

    def __init__(self, r: Any, service: str, instance: str, log: logging.Logger) -> None:
        self.r, self.service, self.instance, self.log = r, service, instance, log

    async def claim(self, job: str, slot: str, trigger: str) -> bool:
        """Whether this instance now holds the run of `job` in `slot` (no one had claimed it)."""
        rec = {"state": "running", "instance": self.instance, "ts_ns": time.time_ns(), "trigger": trigger}
        return bool(await self.r.set(run_key(job, slot), msgspec.json.encode(rec), nx=True, ex=RUN_TTL_S))

    async def take_over(self, job: str, slot: str) -> str | None:
        """Take over a run left 'running' by an instance that is gone (once: compare and set);
        the run's new trigger, or None."""
        key = run_key(job, slot)
        raw = await self.r.get(key)
        if raw is None:
            return None
        rec = msgspec.json.decode(raw)
        if rec.get("state") != "running" or rec.get("instance") == self.instance:
            return None
        hkey = streams.HEALTH_KEY.format(service=self.service, instance=rec.get("instance"))
        state, pid, host = await self.r.hmget(hkey, "state", "pid", "host")
        if not gone(state, pid, host):
            return None
        new = {
            **rec,
            "instance": self.instance,
            "ts_ns": time.time_ns(),
            "trigger": f"resumed: {rec.get('instance')} stopped while running it",
        }
        async with self.r.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                if await pipe.get(key) != raw:
                    return None
                pipe.multi()
                pipe.set(key, msgspec.json.encode(new), ex=RUN_TTL_S)
                await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - WatchError: another instance took it
                self.log.info("resume of %s %s lost to another instance: %r", job, slot, exc)
                return None
        return new["trigger"]

    async def finish(self, job: str, slot: str, rec: dict[str, Any]) -> None:
        """The run's record replaces its claim and becomes the job's latest run."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(run_key(job, slot), msgspec.json.encode(rec), ex=RUN_TTL_S)
        pipe.hset(LAST_KEY, job, msgspec.json.encode(rec))
        await pipe.execute()
