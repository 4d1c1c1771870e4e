"""scheduler (P4): the trading-session calendar and its jobs, performed, with their outcomes.

Jobs (config `[[services.scheduler.jobs]]`: a name, a kind, `at = "HH:MM"` UTC daily or
`every = "15m"`, and the kind's params):

- `sink-compaction`: the tick store's small files of every closed day become one file per date
  and symbol (backend.marketdata.compaction: atomic, no row lost or doubled), and the offline
  feature store's one file per date;
- `daily-report`: the last closed day's report, `reports/daily-<day>.json|md` in the data dir
  (backend.reports.daily);
- `retrain`: a training job for ml-training over the recent history; the new version lands in
  modelops in staging with its lineage (promotion stays an operator's or modelops' policy).

A run is claimed with SET NX on `scheduler:run:<job>:<slot>` (slot: the occurrence's date, or its
start time for `every` jobs), so among any number of scheduler instances a slot runs once. At
start and every `tick_s` the latest occurrence due is claimed: a run missed while the scheduler
was down runs once when it comes back (only the latest one, never one per missed slot), never
twice. Occurrences before the scheduler was first deployed (`scheduler:since`) were not missed.
A run whose instance died mid-run (its heartbeat is gone) is resumed once by the next instance.

Every run records its outcome (ok / failed with the reason, and what it did) in its claim, in
`scheduler:last` (job -> latest run) and on ops.jobs; a failure also raises an alert. An operator
can ask for a run on scheduler.requests (`tradeops jobs run NAME [--day D]`): it runs once per
request, for day D (the day to compact through or report on) or the last closed day.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import msgspec

from backend.bus import codec, streams
from backend.bus.worker import Entry
from backend.health import gone
from backend.features import store as fstore
from backend.marketdata import compaction
from backend.messages import Alert, JobRun, ModelEvent, TrainJob
from backend.reports import daily
from backend.services.base import Service

_req = msgspec.msgpack.Decoder(JobRun)
SINCE_KEY = "scheduler:since"
LAST_KEY = "scheduler:last"
SCHEDULE_KEY = "scheduler:schedule"
RUN_TTL_S = 35 * 86400
DAY_S = 86400
Kind = Literal["sink-compaction", "daily-report", "retrain"]
_EVERY = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def run_key(job: str, slot: str) -> str:
    return f"scheduler:run:{job}:{slot}"


def hhmm(text: str) -> int:
    """Minutes after midnight of "HH:MM"; ValueError naming what is wrong."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(f"time {text!r} is not HH:MM (00:00 .. 23:59, UTC)")
    return int(m[1]) * 60 + int(m[2])


def seconds(text: str) -> float:
    m = _EVERY.fullmatch(text.strip())
    if not m or float(m[1]) <= 0:
        raise ValueError(f"every {text!r} is not a positive duration like 30s, 15m, 1h, 1d")
    return float(m[1]) * _UNIT[m[2]]


class RetrainParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str
    """Registry name to train (a new version of it)."""
    horizon_s: float = 5.0
    lookback: str = "1d"
    """How much history to train on, ending now."""
    ridge: float = 1.0
    symbols: list[str] = []
    wait: str = "10m"
    """How long the run waits for ml-training's outcome before it counts as failed."""


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    pass


PARAMS: dict[str, type[msgspec.Struct]] = {"sink-compaction": NoParams, "daily-report": NoParams,
                                           "retrain": RetrainParams}


class Job(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    kind: Kind | None = None
    """What it does; unset: the name, when the name is a kind."""
    at: str | None = None
    """Daily at HH:MM UTC ..."""
    every: str | None = None
    """... or every 30s / 15m / 1h / 1d (aligned to the epoch)."""
    params: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise ValueError(f"job name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if self.kind is None:
            if self.name not in PARAMS:
                raise ValueError(f"job {self.name!r} needs a kind: one of {', '.join(PARAMS)}")
            self.kind = self.name  # type: ignore[assignment]
        if (self.at is None) == (self.every is None):
            raise ValueError(f"job {self.name!r} needs exactly one of `at` (HH:MM) or `every` (15m)")
        if self.at is not None:
            hhmm(self.at)
        else:
            seconds(self.every)  # type: ignore[arg-type]
        try:
            p = msgspec.convert(self.params, PARAMS[self.kind])  # type: ignore[index]
        except msgspec.ValidationError as exc:
            raise ValueError(f"job {self.name!r} ({self.kind}) params: {exc}") from None
        if isinstance(p, RetrainParams):
            seconds(p.lookback)
            seconds(p.wait)
            if p.horizon_s <= 0 or p.ridge < 0:
                raise ValueError(f"job {self.name!r}: horizon_s must be positive and ridge not negative")

    def typed_params(self) -> Any:
        return msgspec.convert(self.params, PARAMS[self.kind])  # type: ignore[index]

    def latest(self, now: float) -> tuple[str, float]:
        """The latest occurrence at or before `now`: (slot, its time)."""
        if self.at is not None:
            midnight = now - now % DAY_S
            t = midnight + hhmm(self.at) * 60
            if t > now:
                t -= DAY_S
            return time.strftime("%Y-%m-%d", time.gmtime(t)), t
        step = seconds(self.every)  # type: ignore[arg-type]
        t = now - now % step
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)), t

    def schedule(self) -> str:
        return f"daily at {self.at} UTC" if self.at else f"every {self.every}"


class SchedulerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    session_open: str = "00:00"
    """The trading session, UTC (24x7 markets: the whole day)."""
    session_close: str = "23:59"
    """A day is closed from its session close on; end-of-day jobs work on closed days."""
    tick_s: float = 20.0
    """How often due jobs are looked for."""
    jobs: list[Job] = msgspec.field(default_factory=lambda: [
        Job(name="sink-compaction", at="00:30"), Job(name="daily-report", at="00:45")])

    def __post_init__(self) -> None:
        hhmm(self.session_open)
        hhmm(self.session_close)
        names = [j.name for j in self.jobs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"job names must be unique: {', '.join(dup)}")
        if self.tick_s <= 0:
            raise ValueError("tick_s must be positive")
        for j in self.jobs:
            if j.every is not None and seconds(j.every) < self.tick_s:
                raise ValueError(f"job {j.name!r}: every {j.every} is shorter than tick_s {self.tick_s:g}s "
                                 "(how often the scheduler looks)")


class JobFailed(Exception):
    """A job that ran and failed, with the reason an operator reads."""


class JobInterrupted(Exception):
    """The scheduler is stopping while the job waits on another service: the run stays claimed
    as running, and the next instance resumes it (a resumed retrain waits for the same job)."""


class SchedulerService(Service):
    name = "scheduler"
    Config = SchedulerConfig

    async def setup(self) -> None:
        self.jobs: dict[str, Job] = {j.name: j for j in self.cfg.jobs}
        self.runs = 0
        self.failures = 0
        self.running: dict[str, asyncio.Task[None]] = {}
        self.data_dir = Path(self.settings.resolved_data_dir())
        await self.r.set(SINCE_KEY, str(time.time()), nx=True)
        self.since = float(await self.r.get(SINCE_KEY))
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(SCHEDULE_KEY)
        for j in self.jobs.values():
            pipe.hset(SCHEDULE_KEY, j.name, msgspec.json.encode(
                {"kind": j.kind, "schedule": j.schedule(), "params": j.params}))
        await pipe.execute()
        self.worker = self.consume(streams.SCHEDULER_REQUESTS, self.on_requests, count=20, block_ms=200)
        await self.tick()  # catch up what was missed while down
        self.every(self.cfg.tick_s, self.tick)

    def processed(self) -> int:
        return self.runs

    def metrics(self) -> dict[str, object]:
        now = time.gmtime()
        m = now.tm_hour * 60 + now.tm_min
        return {"session_open": hhmm(self.cfg.session_open) <= m <= hhmm(self.cfg.session_close),
                "runs": self.runs, "failed": self.failures, "running": sorted(self.running)}

    # -- the calendar ----------------------------------------------------------------------------
    def closed_day(self, t: float) -> str:
        """The last trading day whose session had closed at time `t`."""
        minute = int(t % DAY_S) // 60
        day_start = t - t % DAY_S
        closed = day_start if minute >= hhmm(self.cfg.session_close) else day_start - DAY_S
        return time.strftime("%Y-%m-%d", time.gmtime(closed))

    async def tick(self, now: float | None = None) -> list[str]:
        """Claim and start every job whose latest occurrence has not run; the names started."""
        now = time.time() if now is None else now
        started = []
        for j in self.jobs.values():
            slot, t = j.latest(now)
            if t < self.since:
                continue  # before the scheduler existed: not a missed run
            if any(k.startswith(f"{j.name}:") for k in self.running):
                continue  # the previous run of this job is still going: this slot is skipped
            late = now - t > max(60.0, 3 * self.cfg.tick_s)
            trigger = "caught up after downtime" if late else "scheduled"
            if not await self.claim(j, slot, trigger):
                trigger = await self.resume(j, slot)
                if trigger is None:
                    continue
            self.start(j, slot, self.closed_day(t), trigger)
            started.append(j.name)
        return started

    async def claim(self, job: Job, slot: str, trigger: str) -> bool:
        rec = {"state": "running", "instance": self.instance, "ts_ns": time.time_ns(), "trigger": trigger}
        return bool(await self.r.set(run_key(job.name, slot), msgspec.json.encode(rec), nx=True, ex=RUN_TTL_S))

    async def resume(self, job: Job, slot: str) -> str | None:
        """Take over a run left 'running' by an instance that is gone (once: compare and set);
        the run's new trigger, or None."""
        key = run_key(job.name, slot)
        raw = await self.r.get(key)
        if raw is None or job.name in self.running:
            return None
        rec = msgspec.json.decode(raw)
        if rec.get("state") != "running" or rec.get("instance") == self.instance:
            return None
        hkey = streams.HEALTH_KEY.format(service=self.name, instance=rec.get("instance"))
        state, pid, host = await self.r.hmget(hkey, "state", "pid", "host")
        if not gone(state, pid, host):
            return None
        new = {**rec, "instance": self.instance, "ts_ns": time.time_ns(),
               "trigger": f"resumed: {rec.get('instance')} stopped while running it"}
        async with self.r.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                if await pipe.get(key) != raw:
                    return None
                pipe.multi()
                pipe.set(key, msgspec.json.encode(new), ex=RUN_TTL_S)
                await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - WatchError: another instance took it
                self.log.info("resume of %s %s lost to another instance: %r", job.name, slot, exc)
                return None
        return new["trigger"]

    def start(self, job: Job, slot: str, day: str, trigger: str) -> None:
        task = asyncio.create_task(self.execute(job, slot, day, trigger), name=f"job:{job.name}:{slot}")
        self.running[f"{job.name}:{slot}"] = task
        task.add_done_callback(lambda _t, k=f"{job.name}:{slot}": self.running.pop(k, None))

    # -- running a job ---------------------------------------------------------------------------
    async def execute(self, job: Job, slot: str, day: str, trigger: str) -> dict[str, Any]:
        t0 = time.monotonic()
        await self._publish(job, slot, trigger, {"outcome": "running", "target_day": day})
        try:
            if job.kind == "sink-compaction":
                detail = await self.compact(day)
            elif job.kind == "daily-report":
                detail = await self.report(day)
            else:
                detail = await self.retrain(job, slot)
            outcome, reason = "ok", ""
        except JobFailed as exc:
            outcome, reason, detail = "failed", str(exc), {}
        except JobInterrupted as exc:
            self.log.info("job %s %s left running for the next instance: %s", job.name, slot, exc)
            return {"state": "running", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - any failure is the run's outcome, not the service's
            self.log.exception("job %s %s failed", job.name, slot)
            outcome, reason, detail = "failed", f"{type(exc).__name__}: {exc}", {}
        rec = {"state": outcome, "reason": reason, "instance": self.instance, "trigger": trigger,
               "slot": slot, "target_day": day, "kind": job.kind, "ts_ns": time.time_ns(),
               "took_s": round(time.monotonic() - t0, 3), "detail": detail}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(run_key(job.name, slot), msgspec.json.encode(rec), ex=RUN_TTL_S)
        pipe.hset(LAST_KEY, job.name, msgspec.json.encode(rec))
        await pipe.execute()
        await self._publish(job, slot, trigger, {"outcome": outcome, "reason": reason, "target_day": day,
                                                 "took_s": rec["took_s"], **detail})
        self.runs += 1
        if outcome == "failed":
            self.failures += 1
            now = time.time_ns()
            await self.r.xadd(streams.OPS_ALERTS, codec.fields(Alert(
                id=f"job-{job.name}-{slot}-{now}", ts_ns=now, severity="warning", source=self.name, kind="job",
                key=f"job:{job.name}:{slot}", message=f"job {job.name} ({slot}) failed: {reason}")),
                maxlen=streams.maxlen(streams.OPS_ALERTS), approximate=True)
            self.log.warning("job %s %s failed: %s", job.name, slot, reason)
        else:
            self.log.info("job %s %s ok (%s): %s", job.name, slot, trigger, detail)
        return rec

    async def _publish(self, job: Job, slot: str, trigger: str, detail: dict[str, Any]) -> None:
        await self.r.xadd(streams.OPS_JOBS, codec.fields(JobRun(job=job.name, day=slot, ts_ns=time.time_ns(),
                                                                reason=trigger, detail=detail)),
                          maxlen=streams.maxlen(streams.OPS_JOBS), approximate=True)

    async def compact(self, day: str) -> dict[str, Any]:
        def both() -> list[compaction.CompactionResult]:
            return [*compaction.compact_ticks(self.data_dir, day), fstore.compact_offline(self.data_dir, day)]

        try:
            results = await asyncio.to_thread(both)
        except compaction.CompactionBusy as exc:
            raise JobFailed(str(exc)) from None
        out: dict[str, Any] = {"through": day, "stores": [f"{r.store}/{r.format}" for r in results]}
        for k in ("partitions", "files_before", "files_after", "rows", "cleaned"):
            out[k] = sum(getattr(r, k) for r in results)
        return out

    async def report(self, day: str) -> dict[str, Any]:
        try:
            rep = await daily.build(self.r, self.data_dir, day)
        except ValueError as exc:
            raise JobFailed(str(exc)) from None
        js, md = await asyncio.to_thread(daily.write, self.data_dir, rep)
        return {"day": day, "file": str(md), "json": str(js),
                "ticks": sum(m["ticks"] for m in rep["market"].values()), "orders": rep["orders"]["orders"],
                "fills": rep["fills"]["fills"], "accounts": len(rep["accounts"])}

    async def retrain(self, job: Job, slot: str) -> dict[str, Any]:
        p: RetrainParams = job.typed_params()
        now = time.time_ns()
        job_id = re.sub(r"[^A-Za-z0-9]", "", f"{job.name}{slot}")[-40:] + "-" + uuid.uuid5(
            uuid.NAMESPACE_URL, f"{job.name}/{slot}").hex[:6]
        tj = TrainJob(job_id=job_id, name=p.model, symbols=p.symbols, horizon_s=p.horizon_s, ridge=p.ridge,
                      start_ns=now - int(seconds(p.lookback) * 1e9), requested_by=f"{self.name}:{job.name}")
        key = f"training:job:{job_id}"
        if await self.r.hsetnx(key, "state", "queued"):  # a resumed run does not queue it twice
            await self.r.hset(key, "name", p.model)
            await self.r.xadd(streams.TRAINING_JOBS, codec.fields(tj), maxlen=streams.maxlen(streams.TRAINING_JOBS),
                              approximate=True)
        deadline = time.monotonic() + seconds(p.wait)
        h: dict[str, str] = {}
        while time.monotonic() < deadline and not self.stopping:
            h = {k.decode(): v.decode() for k, v in (await self.r.hgetall(key)).items()}
            if h.get("state") == "failed":
                raise JobFailed(f"training job {job_id} for {p.model} failed: {h.get('reason', '')}")
            if h.get("state") == "registered":
                ev = await self._registry_answer(f"train-{job_id}")
                if ev is not None:
                    if ev.kind == "refused":
                        raise JobFailed(f"modelops refused {p.model} from training job {job_id}: {ev.reason}")
                    return {"model": p.model, "version": ev.version, "stage": ev.stage, "training_job": job_id,
                            "rows": int(h.get("rows", 0)), "ic": float(h.get("ic", 0))}
            await asyncio.sleep(0.2)
        waiting_for = "modelops to register" if h.get("state") == "registered" else "ml-training to finish"
        if self.stopping:
            raise JobInterrupted(f"stopped while waiting for {waiting_for} training job {job_id}")
        raise JobFailed(f"gave up waiting for {waiting_for} training job {job_id} after {p.wait}"
                        f" (is {waiting_for.split()[0]} running?)")

    async def _registry_answer(self, request_id: str) -> ModelEvent | None:
        for _, f in await self.r.xrevrange(streams.MODELS_EVENTS, count=500):
            try:
                ev = codec.decode(codec.payload(f), ModelEvent)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if ev.request_id == request_id:
                return ev
        return None

    # -- operator requests -----------------------------------------------------------------------
    async def on_requests(self, entries: list[Entry]) -> None:
        for eid, f in entries:
            try:
                req = _req.decode(codec.payload(f))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self.worker.dead_letter(eid, f, f"undecodable job request: {exc}")
                continue
            job = self.jobs.get(req.job)
            if job is None:
                await self.worker.dead_letter(eid, f, f"unknown job {req.job!r}; jobs: {', '.join(sorted(self.jobs))}")
                continue
            day = req.day or self.closed_day(time.time())
            try:
                daily.day_bounds(day)
            except ValueError as exc:
                await self.worker.dead_letter(eid, f, f"job {req.job}: {exc}")
                continue
            trigger = f"requested by {req.detail.get('operator') or 'an operator'}" + (f": {req.reason}" if req.reason else "")
            slot = f"req-{eid.decode()}"
            if await self.claim(job, slot, trigger):  # a redelivered request does not run twice
                self.start(job, slot, day, trigger)

    async def teardown(self) -> None:
        # a stop lets the runs in hand finish (a retrain's wait ends at once, left for the next instance)
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)


def last_runs(r: Any) -> dict[str, dict[str, Any]]:
    """job -> its latest run record (for the CLI)."""
    return {k.decode(): msgspec.json.decode(v) for k, v in r.hgetall(LAST_KEY).items()}


def schedule(r: Any) -> dict[str, dict[str, Any]]:
    """job -> {kind, schedule, params} as the running scheduler published it."""
    return {k.decode(): msgspec.json.decode(v) for k, v in r.hgetall(SCHEDULE_KEY).items()}


__all__ = ["Job", "SchedulerConfig", "SchedulerService", "last_runs", "run_key", "schedule"]
