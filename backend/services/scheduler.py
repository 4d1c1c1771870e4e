"""scheduler (P4): the trading-session calendar and its jobs, performed, with their outcomes.

Jobs (config `[[services.scheduler.jobs]]`: a name, a kind, `at = "HH:MM"` UTC daily or
`every = "15m"`, and the kind's params). The kinds (sink-compaction, daily-report, retrain,
stream-archive) and what each does are in backend/scheduling/jobs.py; the calendar in
backend/scheduling/calendar.py.

A run is claimed once per slot (slot: the occurrence's date, or its start time for `every` jobs)
among any number of scheduler instances (backend/scheduling/claims.py). At start and every
`tick_s` the latest occurrence due is claimed: a run missed while the scheduler was down runs once
when it comes back (only the latest one, never one per missed slot), never twice. Occurrences
before the scheduler was first deployed (`scheduler:since`) were not missed. A run whose instance
died mid-run (its heartbeat is gone) is resumed once by the next instance.

Every run records its outcome (ok / failed with the reason, and what it did) in its claim, in
`scheduler:last` (job -> latest run) and on ops.jobs; a failure also raises an alert. An operator
can ask for a run on scheduler.requests (`tradeops jobs run NAME [--day D]`): it runs once per
request, for day D (the day to compact through or report on) or the last closed day.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import msgspec

from backend.bus import archive, streams
from backend.bus.access import Keys, Reads, Trims, Writes
from backend.bus.publish import publish
from backend.messages import Alert, JobRun
from backend.reports import daily
from backend.scheduling import claims, records
from backend.scheduling.calendar import Schedule, Session, is_late
from backend.scheduling.jobs import KINDS, JobFailed, JobInterrupted, Run, parse_params
from backend.scheduling.records import last_runs, run_key, schedule  # re-exported
from backend.services.base import Service


class Job(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    kind: str | None = None
    """What it does (backend/scheduling/jobs.py); unset: the name, when the name is a kind."""
    at: str | None = None
    """Daily at HH:MM UTC ..."""
    every: str | None = None
    """... or every 30s / 15m / 1h / 1d (aligned to the epoch)."""
    params: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise ValueError(f"job name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if self.kind is None:
            if self.name not in KINDS:
                raise ValueError(f"job {self.name!r} needs a kind: one of {', '.join(KINDS)}")
            self.kind = self.name
        self.when()
        self.typed_params()

    @property
    def kind_name(self) -> str:
        """The kind (the name when none was given: __post_init__ sets it)."""
        assert self.kind is not None
        return self.kind

    def when(self) -> Schedule:
        return Schedule.parse(self.name, self.at, self.every)

    def typed_params(self) -> Any:
        return parse_params(self.name, self.kind_name, self.params)


class SchedulerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    session_open: str = "00:00"
    """The trading session, UTC (24x7 markets: the whole day)."""
    session_close: str = "23:59"
    """A day is closed from its session close on; end-of-day jobs work on closed days."""
    tick_s: float = 20.0
    """How often due jobs are looked for."""
    jobs: list[Job] = msgspec.field(
        default_factory=lambda: [
            Job(name="stream-archive", at="00:15"),
            Job(name="sink-compaction", at="00:30"),
            Job(name="daily-report", at="00:45"),
        ]
    )

    def __post_init__(self) -> None:
        Session.parse(self.session_open, self.session_close)
        names = [j.name for j in self.jobs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"job names must be unique: {', '.join(dup)}")
        if self.tick_s <= 0:
            raise ValueError("tick_s must be positive")
        for j in self.jobs:
            j.when().check_tick(j.name, self.tick_s)


class SchedulerService(Service):
    name = "scheduler"
    Config = SchedulerConfig
    reads = (
        Reads(streams.SCHEDULER_REQUESTS, group=True),
        # the daily report's sections, the retrain's answer, the logs the archive keeps
        *(
            Reads(s)
            for s in (
                streams.ORDERS_EVENTS,
                streams.EXEC_REPORTS,
                streams.POSITIONS,
                streams.SIGNALS,
                streams.OPS_ALERTS,
                streams.OPS_JOBS,
                streams.dlq("*"),
                *dict.fromkeys([streams.MODELS_EVENTS, *streams.archived()]),
            )
        ),
    )
    writes = (Writes(streams.OPS_JOBS), Writes(streams.OPS_ALERTS), Writes(streams.TRAINING_JOBS))
    trims = tuple(Trims(s) for s in streams.archived())  # archived before they are trimmed
    keys = (
        Keys("scheduler:*", write=True),
        Keys("training:job:*", write=True),
        Keys(archive.KEY.format("*"), write=True),
    )
    commands = ("scan",)  # the report counts every dead-letter stream

    async def setup(self) -> None:
        self.jobs: dict[str, Job] = {j.name: j for j in self.cfg.jobs}
        self.when = {j.name: j.when() for j in self.cfg.jobs}
        self.session = Session.parse(self.cfg.session_open, self.cfg.session_close)
        self.runs = 0
        self.failures = 0
        self.running: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self.data_dir = Path(self.settings.resolved_data_dir())
        self.claims = claims.Claims(self.r, self.name, self.instance, self.log)
        self.since = await claims.deployed_since(self.r)
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(records.SCHEDULE_KEY)
        for j in self.jobs.values():
            pipe.hset(
                records.SCHEDULE_KEY,
                j.name,
                msgspec.json.encode({"kind": j.kind, "schedule": self.when[j.name].describe(), "params": j.params}),
            )
        await pipe.execute()
        self.worker = self.consume(
            streams.SCHEDULER_REQUESTS, self.on_requests, decode=JobRun, what="job request", count=20, block_ms=200
        )
        await self.tick()  # catch up what was missed while down
        self.every(self.cfg.tick_s, self._tick)

    def processed(self) -> int:
        return self.runs

    def metrics(self) -> dict[str, object]:
        return {
            "session_open": self.session.is_open(time.time()),
            "runs": self.runs,
            "failed": self.failures,
            "running": sorted(self.running),
        }

    async def _tick(self) -> None:
        await self.tick()

    async def tick(self, now: float | None = None) -> list[str]:
        """Claim and start every job whose latest occurrence has not run; the names started."""
        now = time.time() if now is None else now
        started = []
        for j in self.jobs.values():
            slot, t = self.when[j.name].latest(now)
            if t < self.since:
                continue  # before the scheduler existed: not a missed run
            if any(k.startswith(f"{j.name}:") for k in self.running):
                continue  # the previous run of this job is still going: this slot is skipped
            trigger = "caught up after downtime" if is_late(now, t, self.cfg.tick_s) else "scheduled"
            if not await self.claims.claim(j.name, slot, trigger):
                taken = await self.claims.take_over(j.name, slot)
                if taken is None:
                    continue
                trigger = taken
            self.start(j, slot, self.session.closed_day(t), trigger)
            started.append(j.name)
        return started

    def start(self, job: Job, slot: str, day: str, trigger: str) -> None:
        task = asyncio.create_task(self.execute(job, slot, day, trigger), name=f"job:{job.name}:{slot}")
        key = f"{job.name}:{slot}"
        self.running[key] = task
        task.add_done_callback(lambda _t: self.running.pop(key, None))

    # -- running a job ---------------------------------------------------------------------------
    async def execute(self, job: Job, slot: str, day: str, trigger: str) -> dict[str, Any]:
        t0 = time.monotonic()
        await self._publish(job, slot, trigger, {"outcome": "running", "target_day": day})
        try:
            run = Run(
                job=job.name,
                slot=slot,
                day=day,
                params=job.typed_params(),
                r=self.r,
                data_dir=self.data_dir,
                requested_by=f"{self.name}:{job.name}",
                stopping=lambda: self.stopping,
            )
            detail = await KINDS[job.kind_name].run(run)
            outcome, reason = "ok", ""
        except JobFailed as exc:
            outcome, reason, detail = "failed", str(exc), {}
        except JobInterrupted as exc:
            self.log.info("job %s %s left running for the next instance: %s", job.name, slot, exc)
            return {"state": "running", "reason": str(exc)}
        except Exception as exc:  # any failure is the run's outcome, not the service's
            self.log.exception("job %s %s failed", job.name, slot)
            outcome, reason, detail = "failed", f"{type(exc).__name__}: {exc}", {}
        rec = {
            "state": outcome,
            "reason": reason,
            "instance": self.instance,
            "trigger": trigger,
            "slot": slot,
            "target_day": day,
            "kind": job.kind,
            "ts_ns": time.time_ns(),
            "took_s": round(time.monotonic() - t0, 3),
            "detail": detail,
        }
        await self.claims.finish(job.name, slot, rec)
        await self._publish(
            job,
            slot,
            trigger,
            {"outcome": outcome, "reason": reason, "target_day": day, "took_s": rec["took_s"], **detail},
        )
        self.runs += 1
        if outcome == "failed":
            self.failures += 1
            now = time.time_ns()
            await publish(
                self.r,
                streams.OPS_ALERTS,
                Alert(
                    id=f"job-{job.name}-{slot}-{now}",
                    ts_ns=now,
                    severity="warning",
                    source=self.name,
                    kind="job",
                    key=f"job:{job.name}:{slot}",
                    message=f"job {job.name} ({slot}) failed: {reason}",
                ),
            )
            self.log.warning("job %s %s failed: %s", job.name, slot, reason)
        else:
            self.log.info("job %s %s ok (%s): %s", job.name, slot, trigger, detail)
        return rec

    async def _publish(self, job: Job, slot: str, trigger: str, detail: dict[str, Any]) -> None:
        await publish(
            self.r,
            streams.OPS_JOBS,
            JobRun(job=job.name, day=slot, ts_ns=time.time_ns(), reason=trigger, detail=detail),
        )

    # -- operator requests -----------------------------------------------------------------------
    async def on_requests(self, requests: list[tuple[bytes, JobRun]]) -> None:
        for eid, req in requests:
            job = self.jobs.get(req.job)
            if job is None:
                self.worker.reject(eid, f"unknown job {req.job!r}; jobs: {', '.join(sorted(self.jobs))}")
                continue
            day = req.day or self.session.closed_day(time.time())
            try:
                daily.day_bounds(day)
            except ValueError as exc:
                self.worker.reject(eid, f"job {req.job}: {exc}")
                continue
            trigger = f"requested by {req.detail.get('operator') or 'an operator'}" + (
                f": {req.reason}" if req.reason else ""
            )
            slot = records.request_slot(eid.decode())
            if await self.claims.claim(job.name, slot, trigger):  # a redelivered request does not run twice
                self.start(job, slot, day, trigger)

    async def teardown(self) -> None:
        # a stop lets the runs in hand finish (a retrain's wait ends at once, left for the next instance)
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)


__all__ = ["Job", "SchedulerConfig", "SchedulerService", "last_runs", "run_key", "schedule"]
