"""What the scheduler records, as others read it (the CLI, synchronously): the schedule it
published, each job's latest run, one run's claim, the finished runs on ops.jobs; and an
operator's request for a run on scheduler.requests, which runs once per request in the slot
`req-<entry id>`.

Light on purpose: `tradeops jobs` imports this, not the service (no pandas).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from backend.bus import publish_sync, streams
from backend.bus.entries import Skips, decode_entries
from backend.messages import JobRun

SINCE_KEY = "scheduler:since"
"""When the scheduler was first deployed: earlier occurrences were not missed."""
LAST_KEY = "scheduler:last"
"""job -> its latest finished run."""
SCHEDULE_KEY = "scheduler:schedule"
"""job -> {kind, schedule, params}, as the running scheduler published it."""


def run_key(job: str, slot: str) -> str:
    """One run's claim, which holds its outcome once it finished."""
    return f"scheduler:run:{job}:{slot}"


def request_slot(entry_id: str) -> str:
    """The slot of the run an operator asked for with the scheduler.requests entry `entry_id`."""
    return f"req-{entry_id}"


def last_runs(r: Any) -> dict[str, dict[str, Any]]:
    """job -> its latest run record."""
    return {k.decode(): msgspec.json.decode(v) for k, v in r.hgetall(LAST_KEY).items()}


def schedule(r: Any) -> dict[str, dict[str, Any]]:
    """job -> {kind, schedule, params} as the running scheduler published it."""
    return {k.decode(): msgspec.json.decode(v) for k, v in r.hgetall(SCHEDULE_KEY).items()}


def run_record(r: Any, job: str, slot: str) -> dict[str, Any] | None:
    """One run's record (state running / ok / failed), or None if it was never claimed."""
    raw = r.get(run_key(job, slot))
    return None if raw is None else msgspec.json.decode(raw)


def finished_runs(
    r: Any, job: str = "", limit: int = 20, scan: int = 10_000, skips: Skips | None = None
) -> list[JobRun]:
    """Finished runs on ops.jobs (of `job`, or of every job), newest first, at most `limit`,
    among the last `scan` entries (those that do not decode skipped, counted in `skips`)."""
    rows: list[JobRun] = []
    got, _ = decode_entries(r.xrevrange(streams.OPS_JOBS, count=scan), JobRun, stream=streams.OPS_JOBS, skips=skips)
    for _, run in got:
        if run.detail.get("outcome") in (None, "running") or (job and run.job != job):
            continue
        rows.append(run)
        if len(rows) >= limit:
            break
    return rows


def request_run(r: Any, job: str, *, day: str = "", reason: str = "", operator: str = "") -> str:
    """Ask the scheduler to run `job` once (for `day`, or the last closed day); the run's slot."""
    eid = publish_sync(
        r,
        streams.SCHEDULER_REQUESTS,
        JobRun(job=job, day=day, ts_ns=time.time_ns(), reason=reason, detail={"operator": operator}),
    )
    return request_slot(eid.decode())


def wait_finished(r: Any, job: str, slot: str, timeout_s: float, poll_s: float = 0.1) -> dict[str, Any] | None:
    """The run's record once it is ok or failed, or None if it was not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rec = run_record(r, job, slot)
        if rec is not None and rec.get("state") in ("ok", "failed"):
            return rec
        time.sleep(poll_s)
    return None
