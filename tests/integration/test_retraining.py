"""Scheduled retraining on real Redis: the scheduler's `retrain` job has ml-training train a new
version over the recent window, modelops registers it in staging with its lineage (parent =
the production version, trigger, window), production stays where an operator put it, and the
job's outcome names the new version; a retrain that cannot train fails with ml-training's reason."""

from __future__ import annotations

import time

import pytest
import redis

from backend.bus import codec, streams
from backend.messages import ModelStage, TrainJob
from backend.models import registry as reg
from backend.services.ml_training import MlTrainingService
from backend.services.modelops import ModelopsService
from backend.services.scheduler import SchedulerService, last_runs
from backend.settings import Settings
from tests.conftest import await_for
from tests.integration.test_model_services import seed_history, start, stop


@pytest.mark.timeout(60)
async def test_scheduled_retraining_registers_a_new_version_with_lineage(redis_url: str, r: redis.Redis) -> None:
    seed_history(r)
    mo = ModelopsService(redis_url=redis_url, instance="mo-r")
    ml = MlTrainingService(
        redis_url=redis_url, instance="ml-r", config={"features": ["lead", "noise"], "feature_source": "stream"}
    )
    tasks = [(s, await start(s)) for s in (mo, ml)]
    try:
        # v1 on demand, promoted by an operator
        r.xadd(streams.TRAINING_JOBS, codec.fields(TrainJob(job_id="manual", name="alpha", requested_by="erin")))
        await await_for(lambda: reg.get_version(r, "alpha", 1), 20)
        r.xadd(
            streams.MODELS_REQUESTS,
            codec.fields(ModelStage(name="alpha", action="promote", version=1, reason="first", operator="erin")),
        )
        await await_for(lambda: reg.stages(r, "alpha").get("production") == 1, 10)

        r.set("scheduler:since", str(time.time() - 2 * 86400))  # deployed earlier: this hour's run is due
        jobs = [
            {
                "name": "retrain-alpha",
                "kind": "retrain",
                "every": "1h",
                "params": {"model": "alpha", "lookback": "5000d", "wait": "30s"},
            },
            {
                "name": "retrain-nodata",
                "kind": "retrain",
                "every": "1h",
                "params": {"model": "alpha", "symbols": ["NOSUCH"], "wait": "30s"},
            },
        ]
        sch = SchedulerService(
            redis_url=redis_url, instance="sch-r", settings=Settings(services={"scheduler": {"jobs": jobs}})
        )
        tasks.append((sch, await start(sch)))
        await await_for(
            lambda: len(last_runs(r)) == 2 and all(v["state"] in ("ok", "failed") for v in last_runs(r).values()), 30
        )
        runs = last_runs(r)
        ok, bad = runs["retrain-alpha"], runs["retrain-nodata"]
        assert ok["state"] == "ok" and ok["detail"]["version"] == 2 and ok["detail"]["stage"] == "staging", ok
        assert bad["state"] == "failed" and bad["reason"].endswith("failed: no feature rows in the range for NOSUCH")

        v2 = reg.get_version(r, "alpha", 2)
        assert v2.parent == 1 and v2.trained_by == "scheduler:retrain-alpha"
        assert v2.params["trigger"] == "scheduled" and v2.params["window_start_ns"] > 0
        assert reg.get_version(r, "alpha", 1).params["trigger"] == "on demand"
        assert reg.stages(r, "alpha") == {"staging": 2, "production": 1}  # promotion stays the operator's
        # the failure is counted after the run's record is written (and published): wait for it
        await await_for(lambda: sch.failures >= 1 or any(t.done() for _, t in tasks), 10, what="the failure counted")
        assert sch.failures == 1 and all(not t.done() for _, t in tasks)
    finally:
        await stop(*tasks)


@pytest.mark.timeout(60)
async def test_a_retrain_waiting_when_the_scheduler_stops_is_resumed_by_the_next(
    redis_url: str, r: redis.Redis
) -> None:
    seed_history(r)
    r.set("scheduler:since", str(time.time() - 2 * 86400))
    params = {"model": "alpha", "lookback": "5000d", "wait": "1h"}
    cfg = Settings(
        services={
            "scheduler": {"jobs": [{"name": "retrain-alpha", "kind": "retrain", "every": "1d", "params": params}]}
        }
    )
    s1 = SchedulerService(redis_url=redis_url, instance="sch-1", settings=cfg)
    t1 = await start(s1)
    await await_for(lambda: r.xlen(streams.TRAINING_JOBS) == 1, 10)  # queued; nobody trains yet
    await stop((s1, t1))
    (key,) = r.keys("scheduler:run:retrain-alpha:*")
    assert b'"state":"running"' in r.get(key) and not last_runs(r)  # not failed: left for the next one
    mo = ModelopsService(redis_url=redis_url, instance="mo-2")
    ml = MlTrainingService(redis_url=redis_url, instance="ml-2", config={"feature_source": "stream"})
    s2 = SchedulerService(redis_url=redis_url, instance="sch-2", settings=cfg)
    tasks = [(x, await start(x)) for x in (mo, ml, s2)]
    try:
        await await_for(lambda: last_runs(r).get("retrain-alpha", {}).get("state") == "ok", 30)
        run = last_runs(r)["retrain-alpha"]
        assert run["trigger"] == "resumed: sch-1 stopped while running it" and run["detail"]["version"] == 1
        assert r.xlen(streams.TRAINING_JOBS) == 1 and len(reg.versions(r, "alpha")) == 1  # trained once
    finally:
        await stop(*tasks)
