"""Backtest jobs and results in Redis (shared by bt-orchestrator and `tradeops backtest`).

`backtest:jobs` sorted set job id -> submit time; `backtest:job:<id>` hash: state
(queued, running, done, failed), reason, the job, and the result as JSON when done.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from backend.backtest.result import BacktestResult
from backend.bus import streams
from backend.bus.publish import queue
from backend.messages import BacktestJob

INDEX = "backtest:jobs"


def k_job(job_id: str) -> str:
    return f"backtest:job:{job_id}"


def submit(
    r: Any,
    strategy: str,
    symbols: list[str],
    params: dict[str, Any],
    *,
    start_ns: int = 0,
    end_ns: int = 0,
    operator: str = "",
) -> BacktestJob:
    job = BacktestJob(
        job_id=uuid.uuid4().hex[:10],
        strategy=strategy,
        symbols=symbols,
        start_ns=start_ns,
        end_ns=end_ns,
        params=params,
        submitted_by=operator,
        ts_ns=time.time_ns(),
    )
    pipe = r.pipeline(transaction=True)
    pipe.zadd(INDEX, {job.job_id: job.ts_ns})
    pipe.hset(k_job(job.job_id), mapping={"state": "queued", "reason": "", "job": msgspec.json.encode(job)})
    queue(pipe, streams.BACKTEST_JOBS, job)
    pipe.execute()
    return job


def status(r: Any, job_id: str) -> dict[str, Any] | None:
    h = r.hgetall(k_job(job_id))
    if not h:
        return None
    out: dict[str, Any] = {"job_id": job_id, "state": h[b"state"].decode(), "reason": h.get(b"reason", b"").decode()}
    if b"job" in h:
        out["job"] = msgspec.json.decode(h[b"job"])
    if b"result" in h:
        out["result"] = msgspec.json.decode(h[b"result"], type=BacktestResult)
    return out


def recent(r: Any, count: int = 50) -> list[dict[str, Any]]:
    ids = [i.decode() for i in r.zrevrange(INDEX, 0, count - 1)]
    return [s for s in (status(r, i) for i in ids) if s]
