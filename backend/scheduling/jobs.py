"""The scheduler's job kinds: a registry from kind to the coroutine that performs one run, and
the params that kind takes (`params = {...}` of a job in the config).

- `sink-compaction`: the tick store's small files of every closed day become one file per date
  and symbol (backend.marketdata.compaction: atomic, no row lost or doubled), and the offline
  feature store's one file per date;
- `daily-report`: the day's report, `reports/daily-<day>.json|md` in the data dir
  (backend.reports.daily);
- `retrain`: a training job for ml-training over the recent history; the new version lands in
  modelops in staging with its lineage (promotion stays an operator's or modelops' policy).
- `stream-archive`: the control-plane logs' entries older than `keep` (ops.gates, ops.migration,
  models.events) are archived to `archive/<stream>/<day>.jsonl` in the data dir, then trimmed
  from their streams (backend/bus/archive.py), so they stay within their memory budgets.

A kind's coroutine gets the Run and returns what it did (a flat dict, shown by `tradeops jobs`);
it raises JobFailed with the reason an operator reads, or JobInterrupted to leave the run claimed
for the next instance. A new kind is one function decorated with `@kind("name", Params)`.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from backend import locations
from backend.bus import archive, streams
from backend.bus.entries import decode_entries
from backend.bus.publish import publish
from backend.features import store as fstore
from backend.marketdata import compaction
from backend.messages import ModelEvent, TrainJob
from backend.reports import daily
from backend.scheduling.calendar import duration


class JobFailed(Exception):
    """A job that ran and failed, with the reason an operator reads."""


class JobInterrupted(Exception):
    """The scheduler is stopping while the job waits on another service: the run stays claimed
    as running, and the next instance resumes it (a resumed retrain waits for the same job)."""


@dataclass(frozen=True)
class Run:
    """One run of a job, as its kind's coroutine sees it."""

    job: str
    slot: str
    day: str
    """The closed day it works on (to compact through, to report on)."""
    params: Any
    """The kind's params struct."""
    r: Any
    """The service's async Redis."""
    data_dir: Path
    requested_by: str
    """Who asks other services for work: `<service>:<job>`."""
    stopping: Callable[[], bool]


JobFn = Callable[[Run], Awaitable[dict[str, Any]]]
"""A kind's coroutine: performs one run, returns what it did."""


@dataclass(frozen=True)
class Kind:
    name: str
    params: type[msgspec.Struct]
    run: JobFn


KINDS: dict[str, Kind] = {}
"""Every job kind by name, in the order they were registered."""


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    pass


def kind(name: str, params: type[msgspec.Struct] = NoParams) -> Callable[[JobFn], JobFn]:
    """Register the decorated coroutine as the job kind `name`, taking `params`."""

    def register(fn: JobFn) -> JobFn:
        if name in KINDS:
            raise ValueError(f"job kind {name!r} registered twice")
        KINDS[name] = Kind(name, params, fn)
        return fn

    return register


def parse_params(job: str, kind_name: str, raw: dict[str, Any]) -> Any:
    """The params of `job` as its kind's struct; ValueError naming the job, its kind and what is wrong."""
    if kind_name not in KINDS:
        raise ValueError(f"job {job!r}: kind {kind_name!r} is not one of {', '.join(KINDS)}")
    try:
        return msgspec.convert(raw, KINDS[kind_name].params)
    except msgspec.ValidationError as exc:
        raise ValueError(f"job {job!r} ({kind_name}) params: {exc}") from None


# -- sink-compaction ------------------------------------------------------------------------------
@kind("sink-compaction")
async def sink_compaction(run: Run) -> dict[str, Any]:
    def both() -> list[compaction.CompactionResult]:
        return [*compaction.compact_ticks(run.data_dir, run.day), fstore.compact_offline(run.data_dir, run.day)]

    try:
        results = await asyncio.to_thread(both)
    except compaction.CompactionBusy as exc:
        raise JobFailed(str(exc)) from None
    out: dict[str, Any] = {"through": run.day, "stores": [f"{r.store}/{r.format}" for r in results]}
    for k in ("partitions", "files_before", "files_after", "rows", "cleaned"):
        out[k] = sum(getattr(r, k) for r in results)
    return out


# -- daily-report ---------------------------------------------------------------------------------
@kind("daily-report")
async def daily_report(run: Run) -> dict[str, Any]:
    try:
        rep = await daily.build(run.r, run.data_dir, run.day)
    except ValueError as exc:
        raise JobFailed(str(exc)) from None
    js, md = await asyncio.to_thread(daily.write, run.data_dir, rep)
    return {
        "day": run.day,
        "file": str(md),
        "json": str(js),
        "ticks": sum(m["ticks"] for m in rep["market"].values()),
        "orders": rep["orders"]["orders"],
        "fills": rep["fills"]["fills"],
        "accounts": len(rep["accounts"]),
    }


# -- retrain: a training job for ml-training, registered by modelops -----------------------------
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

    def __post_init__(self) -> None:
        duration(self.lookback, key="lookback")
        duration(self.wait, key="wait")
        if self.horizon_s <= 0 or self.ridge < 0:
            raise ValueError("horizon_s must be positive and ridge not negative")


def training_job_id(job: str, slot: str) -> str:
    """The same for every attempt at one run (a resumed run waits for the job it queued)."""
    return (
        re.sub(r"[^A-Za-z0-9]", "", f"{job}{slot}")[-40:]
        + "-"
        + uuid.uuid5(uuid.NAMESPACE_URL, f"{job}/{slot}").hex[:6]
    )


@kind("retrain", RetrainParams)
async def retrain(run: Run) -> dict[str, Any]:
    p: RetrainParams = run.params
    r = run.r
    now = time.time_ns()
    job_id = training_job_id(run.job, run.slot)
    tj = TrainJob(
        job_id=job_id,
        name=p.model,
        symbols=p.symbols,
        horizon_s=p.horizon_s,
        ridge=p.ridge,
        start_ns=now - int(duration(p.lookback) * 1e9),
        requested_by=run.requested_by,
    )
    key = f"training:job:{job_id}"
    if await r.hsetnx(key, "state", "queued"):  # a resumed run does not queue it twice
        await r.hset(key, "name", p.model)
        await publish(r, streams.TRAINING_JOBS, tj)
    deadline = time.monotonic() + duration(p.wait)
    h: dict[str, str] = {}
    while time.monotonic() < deadline and not run.stopping():
        h = {k.decode(): v.decode() for k, v in (await r.hgetall(key)).items()}
        if h.get("state") == "failed":
            raise JobFailed(f"training job {job_id} for {p.model} failed: {h.get('reason', '')}")
        if h.get("state") == "registered":
            ev = await _registry_answer(r, f"train-{job_id}")
            if ev is not None:
                if ev.kind == "refused":
                    raise JobFailed(f"modelops refused {p.model} from training job {job_id}: {ev.reason}")
                return {
                    "model": p.model,
                    "version": ev.version,
                    "stage": ev.stage,
                    "training_job": job_id,
                    "rows": int(h.get("rows", 0)),
                    "ic": float(h.get("ic", 0)),
                }
        await asyncio.sleep(0.2)
    waiting_for = "modelops to register" if h.get("state") == "registered" else "ml-training to finish"
    if run.stopping():
        raise JobInterrupted(f"stopped while waiting for {waiting_for} training job {job_id}")
    raise JobFailed(
        f"gave up waiting for {waiting_for} training job {job_id} after {p.wait} (is {waiting_for.split()[0]} running?)"
    )


async def _registry_answer(r: Any, request_id: str) -> ModelEvent | None:
    """modelops' answer (registered or refused) to the request `request_id`, among its recent events."""
    got, _ = decode_entries(
        await r.xrevrange(streams.MODELS_EVENTS, count=500), ModelEvent, stream=streams.MODELS_EVENTS
    )  # an entry that is not an event answers nothing
    return next((ev for _, ev in got if ev.request_id == request_id), None)


# -- stream-archive -------------------------------------------------------------------------------
class ArchiveParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    keep: str = "7d"
    """How long an entry stays live before it is archived (sooner when a log is over its budget)."""

    def __post_init__(self) -> None:
        duration(self.keep, key="keep")


@kind("stream-archive", ArchiveParams)
async def stream_archive(run: Run) -> dict[str, Any]:
    try:
        done = await archive.archive_all(run.r, run.data_dir, keep_s=duration(run.params.keep))
    except archive.ArchiveUnreadable as exc:
        raise JobFailed(str(exc)) from None
    return {
        "archived": sum(a.archived for a in done),
        "trimmed": sum(a.trimmed for a in done),
        "streams": ", ".join(f"{a.stream} {a.archived}" for a in done),
        "dir": str(locations.archive_dir(run.data_dir)),
    }
