"""scheduler (P4): the trading-session calendar and end-of-day jobs (sink compaction, the daily
report). A job due today that has not run (the scheduler was down at its time) runs once when the
scheduler comes back, never twice: each run is claimed with SET NX on `scheduler:run:<job>:<day>`.
Jobs run by publishing a JobRun on ops.jobs; operators can ask for a run on scheduler.requests."""

from __future__ import annotations

import time

import msgspec

from backend.bus import codec, streams
from backend.bus.worker import Entry
from backend.messages import JobRun
from backend.services.base import Service

_req = msgspec.msgpack.Decoder(JobRun)


class Job(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    at: str  # "HH:MM" UTC


class SchedulerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    session_open: str = "00:00"
    session_close: str = "23:59"
    jobs: list[Job] = msgspec.field(default_factory=lambda: [Job("sink-compaction", "23:30"),
                                                             Job("daily-report", "23:45")])


def _minutes(hhmm: str) -> int:
    h, _, m = hhmm.partition(":")
    return int(h) * 60 + int(m)


class SchedulerService(Service):
    name = "scheduler"
    Config = SchedulerConfig

    async def setup(self) -> None:
        for j in self.cfg.jobs:
            _minutes(j.at)  # a bad time is a config error at start, not at run time
        self.runs = 0
        self.worker = self.consume(streams.SCHEDULER_REQUESTS, self.on_requests, count=20, block_ms=200)
        await self.tick()  # catch up what was missed while down
        self.every(20.0, self.tick)

    def processed(self) -> int:
        return self.runs

    def metrics(self) -> dict[str, object]:
        now = time.gmtime()
        m = now.tm_hour * 60 + now.tm_min
        return {"session_open": _minutes(self.cfg.session_open) <= m <= _minutes(self.cfg.session_close),
                "runs": self.runs}

    async def run_job(self, job: str, day: str, reason: str) -> bool:
        """Run `job` for `day` unless it already ran; True when it ran now."""
        if not await self.r.set(f"scheduler:run:{job}:{day}", str(time.time_ns()), nx=True, ex=8 * 86400):
            return False
        await self.r.xadd(streams.OPS_JOBS, codec.fields(JobRun(job=job, day=day, ts_ns=time.time_ns(), reason=reason)),
                          maxlen=streams.maxlen(streams.OPS_JOBS), approximate=True)
        self.runs += 1
        self.log.info("ran %s for %s (%s)", job, day, reason)
        return True

    async def tick(self, now: float | None = None) -> list[str]:
        t = time.gmtime(now if now is not None else time.time())
        day = time.strftime("%Y-%m-%d", t)
        minute = t.tm_hour * 60 + t.tm_min
        ran = []
        for j in self.cfg.jobs:
            if minute >= _minutes(j.at) and await self.run_job(j.name, day, "scheduled (or caught up)"):
                ran.append(j.name)
        return ran

    async def on_requests(self, entries: list[Entry]) -> None:
        names = {j.name for j in self.cfg.jobs}
        for eid, f in entries:
            try:
                req = _req.decode(codec.payload(f))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self.worker.dead_letter(eid, f, f"undecodable job request: {exc}")
                continue
            if req.job not in names:
                await self.worker.dead_letter(eid, f, f"unknown job {req.job!r}; jobs: {', '.join(sorted(names))}")
                continue
            await self.run_job(req.job, req.day, req.reason or "requested")
