"""ml-training (P5): trains a ridge regression on offline feature rows with point-in-time labels
(forward log returns realised strictly after each row) and registers the artifact, its held-out
metrics and its lineage with modelops (ModelRegister on `models.requests`).

Jobs arrive as TrainJob on `training.jobs`, on demand (`tradeops models train`) or on a schedule
(the scheduler's `retrain` jobs, which retrain over a recent window); each job's state is kept in
the hash `training:job:<id>` (queued -> running -> registered | failed, with the reason). A job
that names an impossible range or horizon is bad input: it goes to the DLQ. A job that is fine but
finds too little data fails with a reason saying how much it found.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Literal

import msgspec
import pandas as pd

from backend.bus import streams
from backend.bus.access import Keys, Reads, Writes
from backend.bus.publish import publish
from backend.bus.worker import Poison
from backend.messages import ModelRegister, TrainJob
from backend.models import linear, sources
from backend.models.dataset import LABEL, label_rows
from backend.services.base import Service


def job_key(job_id: str) -> str:
    return f"training:job:{job_id}"


class MlTrainingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    features: list[str] = []
    """Features to train on (empty: every feature present in all rows)."""
    min_rows: int = 40
    """Fewer labelled rows than this fails the job instead of registering a noise model."""
    price_source: Literal["bars", "ticks"] = "bars"
    """'bars' (md.bars.1s closes) or 'ticks' (the stored ticks from sink-ticks)."""
    feature_source: Literal["auto", "offline", "stream"] = "auto"
    """'offline' (the feature store's Parquet), 'stream' (the `features` stream's history), or
    'auto': whichever holds more rows for the job (the offline store lags by its flush interval)."""


def build_training_set(
    feats: pd.DataFrame, prices: pd.DataFrame, job: TrainJob, wanted: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Labelled rows and the feature columns used."""
    if feats.empty:
        raise ValueError("no feature rows in the range" + (f" for {', '.join(job.symbols)}" if job.symbols else ""))
    cols = [c for c in feats.columns if c not in ("symbol", "ts_ns")]
    if wanted:
        missing = [c for c in wanted if c not in cols]
        if missing:
            raise ValueError(f"features not in the store: {', '.join(missing)}")
        cols = list(wanted)
    feats = feats.dropna(subset=cols)
    horizon_ns = int(job.horizon_s * 1e9)
    rows = label_rows(feats[["symbol", "ts_ns", *cols]], prices, horizon_ns, job.end_ns or None)
    return rows, sorted(cols)


class MlTrainingService(Service):
    name = "ml-training"
    Config = MlTrainingConfig
    reads = (
        Reads(streams.TRAINING_JOBS, group=True),
        Reads(streams.FEATURES),
        Reads(streams.MD_BARS_1S),
        Reads(streams.MD_BARS_1M),
    )
    writes = (Writes(streams.MODELS_REQUESTS),)
    keys = (Keys(job_key("*"), write=True),)

    async def setup(self) -> None:
        self.trained = 0
        self.failed = 0
        self.fit_ms = self.recorder("train")
        self.consume(
            streams.TRAINING_JOBS,
            self.on_jobs,
            decode=TrainJob,
            what="training job",
            count=1,
            block_ms=200,
            claim_idle_ms=120_000,
        )

    def processed(self) -> int:
        return self.trained + self.failed

    def metrics(self) -> dict[str, object]:
        return {"trained": self.trained, "failed": self.failed}

    async def on_jobs(self, jobs: list[tuple[bytes, TrainJob]]) -> None:
        for _, job in jobs:
            if job.horizon_s <= 0 or (job.end_ns and job.end_ns <= job.start_ns) or job.ridge < 0:
                await self._state(job, "failed", "bad job: horizon_s and ridge must be positive and end after start")
                raise Poison(
                    f"bad training job {job.job_id}: horizon_s={job.horizon_s}, "
                    f"ridge={job.ridge}, range {job.start_ns}..{job.end_ns}"
                )
            done = await self.r.hget(job_key(job.job_id), "state")
            if done in (b"registered", b"failed"):
                continue  # redelivered after it finished
            await self.train(job)

    async def _state(self, job: TrainJob, state: str, reason: str = "", **extra: object) -> None:
        await self.r.hset(
            job_key(job.job_id),
            mapping={
                "state": state,
                "reason": reason,
                "name": job.name,
                "ts_ns": time.time_ns(),
                **{k: str(v) for k, v in extra.items()},
            },
        )

    async def train(self, job: TrainJob) -> None:
        await self._state(job, "running")
        feats, feature_source = await sources.best_feature_rows(
            self.r,
            self.settings.resolved_data_dir(),
            job.symbols,
            job.start_ns,
            job.end_ns,
            self.cfg.feature_source,
            self.skips,
        )
        if self.cfg.price_source == "ticks":
            prices = sources.tick_prices(
                self.settings.resolved_data_dir(), job.symbols, job.start_ns or None, job.end_ns or None
            )
        else:
            prices = await sources.bar_prices(self.r, job.symbols, skips=self.skips)
        t0 = time.perf_counter_ns()
        try:
            rows, cols = build_training_set(feats, prices, job, self.cfg.features)
            if len(rows) < self.cfg.min_rows:
                raise ValueError(
                    f"only {len(rows)} labelled rows (from {len(feats)} feature rows and "
                    f"{len(prices)} prices); need {self.cfg.min_rows}"
                )
            x = rows[cols].to_numpy(dtype=float)
            y = rows[LABEL].to_numpy(dtype=float)
            model, metrics = await asyncio.to_thread(linear.fit, x, y, cols, ridge=job.ridge)
        except ValueError as exc:
            self.failed += 1
            await self._state(job, "failed", str(exc))
            self.log.warning("training job %s failed: %s", job.job_id, exc)
            return
        self.fit_ms.record_ns(time.perf_counter_ns() - t0)
        reg = ModelRegister(
            name=job.name,
            kind=linear.KIND,
            artifact=model.to_bytes(),
            features=cols,
            label=LABEL,
            metrics={k: round(v, 6) for k, v in metrics.items()},
            data_start_ns=int(rows.ts_ns.iloc[0]),
            data_end_ns=int(rows.ts_ns.iloc[-1]) + int(job.horizon_s * 1e9),
            rows=len(rows),
            symbols=sorted(rows.symbol.unique().tolist()),
            params={
                "horizon_s": job.horizon_s,
                "ridge": job.ridge,
                "job_id": job.job_id,
                "feature_source": feature_source,
                "price_source": self.cfg.price_source,
                "trigger": "scheduled" if job.requested_by.startswith("scheduler:") else "on demand",
                "window_start_ns": job.start_ns,
                "window_end_ns": job.end_ns,
            },
            trained_by=job.requested_by or self.instance,
            request_id=f"train-{job.job_id}",
            ts_ns=time.time_ns(),
        )
        await publish(self.r, streams.MODELS_REQUESTS, reg)
        self.trained += 1
        await self._state(
            job,
            "registered",
            "",
            rows=len(rows),
            ic=round(metrics["ic"], 4),
            features=",".join(cols),
            source=feature_source,
        )
        self.log.info("job %s: %s trained on %d rows, held-out ic %.3f", job.job_id, job.name, len(rows), metrics["ic"])


def new_job(name: str, **kw: Any) -> TrainJob:
    return TrainJob(job_id=uuid.uuid4().hex[:12], name=name, **kw)


__all__ = ["MlTrainingService", "build_training_set", "job_key", "new_job"]
