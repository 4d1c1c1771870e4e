"""bt-orchestrator (P5): runs backtest jobs queued in Redis (`backtest.jobs`, BacktestJob) over
stored data with pandas: the stored ticks from sink-ticks (or, when none are stored in the range,
the 1 s bars on `md.bars.1s`), a strategy from backend/backtest/engine.py or `model:NAME` (the
registry's production model scoring the stored feature rows: the feature store's offline Parquet or
the `features` stream's history, whichever holds more), and stores the result
(PnL, Sharpe, max drawdown, trades, PnL per symbol) in `backtest:job:<id>`.

A job naming an unknown strategy or a bad parameter is bad input: marked failed with the reason
and dead-lettered. A good job over a range with no data fails with a reason saying so.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import msgspec
import numpy as np
import pandas as pd

from backend.backtest import engine
from backend.backtest.jobs import k_job
from backend.bus import streams
from backend.bus.access import Keys, Reads
from backend.bus.worker import Poison
from backend.messages import BacktestJob
from backend.models import registry as reg
from backend.models import sources
from backend.services.base import Service


class BtOrchestratorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    source: Literal["auto", "ticks", "bars"] = "auto"
    """'ticks' (stored ticks), 'bars' (md.bars.1s) or 'auto' (ticks, else bars)."""


class BtOrchestratorService(Service):
    name = "bt-orchestrator"
    Config = BtOrchestratorConfig
    reads = (
        Reads(streams.BACKTEST_JOBS, group=True),
        Reads(streams.MD_BARS_1S),
        Reads(streams.MD_BARS_1M),
        Reads(streams.FEATURES),
    )
    keys = (Keys(k_job("*"), write=True), Keys(reg.KEYS))

    async def setup(self) -> None:
        self.done = 0
        self.failed = 0
        self.run_lat = self.recorder("backtest")
        self.consume(streams.BACKTEST_JOBS, self.on_jobs, decode=BacktestJob, count=1, claim_idle_ms=120_000)

    def processed(self) -> int:
        return self.done + self.failed

    def metrics(self) -> dict[str, object]:
        return {"done": self.done, "failed": self.failed}

    async def _set(self, job_id: str, **fields: object) -> None:
        await self.r.hset(k_job(job_id), mapping={k: v if isinstance(v, bytes) else str(v) for k, v in fields.items()})

    async def on_jobs(self, jobs: list[tuple[bytes, BacktestJob]]) -> None:
        for _, job in jobs:
            try:
                engine.check(job.strategy, job.params)
                if job.end_ns and job.end_ns <= job.start_ns:
                    raise ValueError(f"end {job.end_ns} is not after start {job.start_ns}")
            except ValueError as exc:
                self.failed += 1
                await self._set(job.job_id, state="failed", reason=str(exc))
                raise Poison(f"bad backtest job {job.job_id}: {exc}") from None
            if await self.r.hget(k_job(job.job_id), "state") in (b"done", b"failed"):
                continue
            await self.run_job(job)

    async def prices(self, job: BacktestJob) -> tuple[pd.DataFrame, str]:
        if self.cfg.source in ("ticks", "auto"):
            df = await asyncio.to_thread(
                sources.tick_prices,
                self.settings.resolved_data_dir(),
                job.symbols,
                job.start_ns or None,
                job.end_ns or None,
            )
            if not df.empty or self.cfg.source == "ticks":
                return df, "ticks"
        df = await sources.bar_prices(self.r, job.symbols, skips=self.skips)
        if job.start_ns:
            df = df[df.ts_ns >= job.start_ns]
        if job.end_ns:
            df = df[df.ts_ns < job.end_ns]
        return df, "bars"

    async def model_signals(self, job: BacktestJob) -> pd.DataFrame:
        """The production model's signals over the stored feature rows (as serving would score them)."""
        name = job.strategy[len(engine.MODEL_PREFIX) :]
        rec = await reg.aproduction(self.r, name)
        if rec is None:
            raise ValueError(f"model {name!r} has no production version")
        model = rec.model()
        feats, _ = await sources.best_feature_rows(
            self.r, self.settings.resolved_data_dir(), job.symbols, job.start_ns, job.end_ns, skips=self.skips
        )
        if feats.empty:
            raise ValueError("no feature rows in the range")
        missing = [f for f in model.features if f not in feats.columns]
        if missing:
            raise ValueError(f"stored features lack {', '.join(missing)} needed by {name} v{rec.version}")
        feats = feats.dropna(subset=model.features)
        score = model.predict(feats[model.features].to_numpy(dtype=float)) / (model.pred_std or 1.0)
        th = float(job.params.get("threshold", 0.5))
        side = np.where(score >= th, 1.0, np.where(score <= -th, -1.0, 0.0))
        return pd.DataFrame({"symbol": feats.symbol, "ts_ns": feats.ts_ns, "side": side})

    async def run_job(self, job: BacktestJob) -> None:
        await self._set(job.job_id, state="running", reason="")
        t0 = time.perf_counter_ns()
        try:
            df, source = await self.prices(job)
            signals = await self.model_signals(job) if job.strategy.startswith(engine.MODEL_PREFIX) else None
            res = await asyncio.to_thread(
                engine.run,
                df,
                job.strategy,
                job.params,
                job_id=job.job_id,
                start_ns=job.start_ns,
                end_ns=job.end_ns,
                signals=signals,
            )
        except ValueError as exc:
            self.failed += 1
            await self._set(job.job_id, state="failed", reason=str(exc))
            return
        res.finished_ns = time.time_ns()
        self.run_lat.record_ns(time.perf_counter_ns() - t0)
        await self._set(job.job_id, state="done", reason=f"source: {source}", result=msgspec.json.encode(res))
        self.done += 1
        self.log.info("backtest %s: %s pnl %.2f sharpe %.2f", job.job_id, job.strategy, res.pnl, res.sharpe)
