"""P5 services in-process on the real Redis: training -> registry -> promotion -> serving (hot
swap) -> signals -> marketplace paper orders; rollback; backtests; and every one's bad input."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from backend.backtest import jobs as btjobs
from backend.bus import codec, streams
from backend.catalog import store
from backend.features import store as fstore
from backend.messages import Bar, FeatureRow, ModelStage, Order, Signal, TrainJob
from backend.models import registry as reg
from backend.services.base import Service
from backend.services.bt_orchestrator import BtOrchestratorService
from backend.services.marketplace import MarketplaceService
from backend.services.ml_training import MlTrainingService
from backend.services.modelops import ModelopsService
from backend.services.serving import ServingService
from tests.conftest import TRADEOPS, await_for

S = 1_000_000_000
T0 = 1_700_000_000 * S


def seed_history(r: redis.Redis, n: int = 240, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")) -> None:
    """1 s bars (a random walk) and feature rows where `lead` tells the next 5 s return (plus
    noise) and `noise` tells nothing: a model that learns must weight `lead`."""
    rng = np.random.default_rng(1)
    pipe = r.pipeline(transaction=False)
    for k, sym in enumerate(symbols):
        px = (100.0 * (k + 1) * np.exp(np.cumsum(rng.normal(scale=0.002, size=n + 6)))).tolist()
        for i in range(n):
            pipe.xadd(
                streams.MD_BARS_1S, codec.fields(Bar(sym, "1s", T0 + i * S, px[i], px[i], px[i], px[i], 1.0, px[i], 1))
            )
        for i in range(n):
            lead = float(np.log(px[i + 4] / px[i - 1])) if i >= 1 else 0.0  # bar i-1 closes at T0 + i s
            pipe.xadd(
                streams.FEATURES,
                codec.fields(
                    FeatureRow(
                        symbol=sym,
                        ts_ns=T0 + i * S,
                        values={"lead": float(lead + rng.normal(scale=0.001)), "noise": float(rng.normal())},
                    )
                ),
            )
    pipe.execute()


async def start(svc: Service) -> asyncio.Task:
    task = asyncio.create_task(svc.run())
    await await_for(lambda: svc.state == "running" or task.done(), 10)
    assert not task.done(), task.exception()
    return task


async def stop(*pairs: tuple[Service, asyncio.Task]) -> None:
    for svc, _ in pairs:
        svc.request_stop()
    await asyncio.gather(*(t for _, t in pairs))


@pytest.fixture
async def ar(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def feature_update(ar: aioredis.Redis, row: FeatureRow) -> None:
    """What feast-pipeline does per row: the online store, then the update on `features`."""
    async with ar.pipeline(transaction=False) as pipe:
        fstore.queue_online(pipe, row.symbol, row.ts_ns, row.values)
        pipe.xadd(streams.FEATURES, codec.fields(row))
        await pipe.execute()


def dlq(r: redis.Redis, stream: str) -> list[str]:
    return [f[b"dlq_reason"].decode() for _, f in r.xrange(streams.dlq(stream))]


@pytest.mark.timeout(60)
async def test_train_promote_serve_swap_rollback_subscribe(redis_url: str, r: redis.Redis, ar, tradeops_env) -> None:
    seed_history(r)
    mo = ModelopsService(redis_url=redis_url, instance="mo-1")
    ml = MlTrainingService(redis_url=redis_url, instance="ml-1", config={"features": ["lead", "noise"]})
    sv = ServingService(redis_url=redis_url, instance="sv-1", config={"model": "alpha", "threshold": 0.5})
    mk = MarketplaceService(redis_url=redis_url, instance="mk-1")
    bt = BtOrchestratorService(redis_url=redis_url, instance="bt-0")
    tasks = [(s, await start(s)) for s in (mo, ml, sv, mk, bt)]
    try:
        # train twice: v1 and v2 land in staging with lineage; production is empty until promoted
        for job_id in ("j1", "j2"):
            await ar.xadd(streams.TRAINING_JOBS, codec.fields(TrainJob(job_id=job_id, name="alpha", horizon_s=5.0)))
        await await_for(lambda: len(reg.versions(r, "alpha")) == 2, 30)
        v1 = reg.get_version(r, "alpha", 1)
        assert v1.features == ["lead", "noise"] and v1.metrics["ic"] > 0.5 and v1.rows > 300
        assert v1.data_start_ns >= T0 and v1.parent == 0 and v1.params["horizon_s"] == 5.0
        assert v1.model().coef[0] > 5 * abs(v1.model().coef[1])  # it learned which feature matters
        assert reg.stages(r, "alpha") == {"staging": 2} and sv.model is None and sv.unscored == 480

        # promotion through the CLI, with a reason; serving swaps it in without a restart
        env = dict(tradeops_env, TRADEOPS_OPERATOR="carol")
        out = await asyncio.to_thread(
            subprocess.run, [*TRADEOPS, "models", "promote", "alpha", "1"], capture_output=True, text=True, env=env
        )
        assert out.returncode == 1 and "promote needs --reason" in out.stderr
        out = await asyncio.to_thread(
            subprocess.run,
            [*TRADEOPS, "models", "promote", "alpha", "1", "--reason", "ic 0.9 on holdout"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert out.returncode == 0 and "promoted to v1 in production" in out.stdout and "carol" in out.stdout
        await await_for(lambda: sv.version == 1, 10)

        # a subscription turns signals into paper orders for the account
        store.subscribe(r, "acct-ml", "strategy:alpha-momentum", 0.5, "carol")
        rows = [
            FeatureRow(symbol="BTCUSDT", ts_ns=T0 + 10_000 * S + i, values={"lead": v, "noise": 0.0})
            for i, v in enumerate([0.05, 0.05, -0.05, 0.0])
        ]
        for n, row in enumerate(rows, 1):  # one update at a time: each is scored (not coalesced)
            await feature_update(ar, row)
            await await_for(lambda n=n: sv.signals >= n, 10)
        # a redelivered (or repeated) update of features already scored publishes nothing
        await ar.xadd(streams.FEATURES, codec.fields(rows[-1]))
        await await_for(lambda: sv.coalesced >= 1, 10)
        sigs = await await_for(
            lambda: (
                [
                    s
                    for s in (codec.decode(codec.payload(f), Signal) for _, f in r.xrange(streams.SIGNALS))
                    if s.ts_ns >= T0 + 10_000 * S
                ]
                if sv.signals >= 4
                else None
            ),
            15,
        )
        assert [s.side for s in sigs] == ["buy", "buy", "sell", None] and {s.version for s in sigs} == {1}
        orders = await await_for(
            lambda: (
                [codec.decode(codec.payload(f), Order) for _, f in r.xrange(streams.ORDERS_NEW)]
                if r.xlen(streams.ORDERS_NEW) >= 2
                else None
            ),
            10,
        )
        assert [(o.side, o.quantity) for o in orders] == [("buy", 0.5), ("sell", 1.0)]  # flat->long, long->short
        assert all(o.account == "acct-ml" and o.source == "marketplace:strategy:alpha-momentum" for o in orders)
        # the registered model joined the catalog with its owner
        assert "model:alpha" in {i.id for i in store.items(r)}

        # promote v2, then roll back to v1 with a reason; refusals name why
        await ar.xadd(
            streams.MODELS_REQUESTS,
            codec.fields(ModelStage(name="alpha", action="promote", version=2, reason="fresher data", operator="dave")),
        )
        await await_for(lambda: sv.version == 2, 10)
        for bad in (
            ModelStage(name="alpha", action="promote", version=9, reason="typo", operator="dave"),
            ModelStage(name="alpha", action="rollback", reason="", operator="dave"),
        ):
            await ar.xadd(streams.MODELS_REQUESTS, codec.fields(bad))
        await ar.xadd(
            streams.MODELS_REQUESTS,
            codec.fields(ModelStage(name="alpha", action="rollback", reason="v2 drifts", operator="dave")),
        )
        await await_for(lambda: sv.version == 1 and sv.swaps == 2, 10)
        evs = reg.events(r, "alpha")
        assert [e.kind for e in evs] == [
            "registered",
            "registered",
            "promoted",
            "promoted",
            "refused",
            "refused",
            "rolled_back",
        ]
        assert evs[4].reason == "no version 9 of model 'alpha'" and evs[5].reason == "rollback needs a reason"
        assert evs[6].from_version == 2 and evs[6].version == 1 and evs[6].reason == "v2 drifts"
        out = await asyncio.to_thread(
            subprocess.run,
            [*TRADEOPS, "models", "rollback", "alpha", "--reason", "again"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert out.returncode == 1 and "nothing to roll back to: production history [1]" in out.stderr
        show = await asyncio.to_thread(
            subprocess.run, [*TRADEOPS, "models", "show", "alpha"], capture_output=True, text=True, env=env
        )
        assert "production v1" in show.stdout and "v2 drifts" in show.stdout and "lead,noise" in show.stdout

        # a backtest of the production model over the stored features and bars
        job = btjobs.submit(r, "model:alpha", ["BTCUSDT", "ETHUSDT"], {"quantity": 1, "threshold": 0.5})
        nope = btjobs.submit(r, "model:nope", [], {})
        await await_for(
            lambda: (
                btjobs.status(r, job.job_id)["state"] == "done" and btjobs.status(r, nope.job_id)["state"] == "failed"
            ),
            20,
        )
        res = btjobs.status(r, job.job_id)["result"]
        assert res.trades > 0 and res.symbols == ["BTCUSDT", "ETHUSDT"] and res.pnl > 0  # `lead` does lead
        assert btjobs.status(r, nope.job_id)["reason"] == "model 'nope' has no production version"

        # bad input: each goes to its DLQ with a reason, the services keep running
        await ar.xadd(streams.MODELS_REQUESTS, {b"d": b"\x01garbage"})
        await ar.xadd(streams.TRAINING_JOBS, codec.fields(TrainJob(job_id="neg", name="alpha", horizon_s=-1)))
        await feature_update(ar, FeatureRow(symbol="BAD1", ts_ns=1, values={"noise": 1.0}))
        await feature_update(ar, FeatureRow(symbol="BAD2", ts_ns=2, values={"lead": float("nan"), "noise": 1.0}))
        await ar.hset(fstore.online_key("BAD3"), mapping={"ts_ns": 3, "lead": "0.1", "noise": "lots"})
        await ar.xadd(streams.FEATURES, codec.fields(FeatureRow(symbol="BAD3", ts_ns=3, values={})))
        await ar.xadd(streams.FEATURES, codec.fields(FeatureRow(symbol="NOSYM", ts_ns=4, values={})))
        await ar.xadd(streams.FEATURES, {b"d": b"\x93junk"})
        await ar.xadd(streams.SIGNALS, {b"d": b"junk"})
        await await_for(
            lambda: (
                len(dlq(r, streams.FEATURES)) == 5
                and dlq(r, streams.SIGNALS)
                and dlq(r, streams.MODELS_REQUESTS)
                and dlq(r, streams.TRAINING_JOBS)
            ),
            20,
        )
        reasons = sorted(dlq(r, streams.FEATURES))  # a batch dead-letters undecodable entries first
        assert reasons[:4] == [
            "no online features for NOSYM (features:online:NOSYM is empty)",
            "online features for BAD1 lack 'lead' needed by alpha v1",
            "online features for BAD2 score nan (non-finite feature values)",
            "online features for BAD3: noise = 'lots' is not a number",
        ]
        assert reasons[4].startswith("undecodable feature update:")
        assert dlq(r, streams.MODELS_REQUESTS)[0].startswith("undecodable model request:")
        assert "bad training job neg: horizon_s=-1.0" in dlq(r, streams.TRAINING_JOBS)[0]
        assert dlq(r, streams.SIGNALS)[0].startswith("undecodable signal:")
        # a job over a range with no data fails with a reason (not a noise model)
        await ar.xadd(
            streams.TRAINING_JOBS, codec.fields(TrainJob(job_id="empty", name="alpha", start_ns=10, end_ns=20))
        )
        await await_for(lambda: r.hget("training:job:empty", "state") == b"failed", 10)
        assert r.hget("training:job:empty", "reason").decode() == "no feature rows in the range"
        assert all(not t.done() for _, t in tasks)
        assert sv.score_lat.summary_ms()["p50"] > 0 and sv.signal_lat.summary_ms()["p50"] > 0
    finally:
        await stop(*tasks)


@pytest.mark.timeout(60)
async def test_backtests_run_over_stored_data_and_bad_jobs_are_refused(
    redis_url: str, r: redis.Redis, tradeops_env
) -> None:
    seed_history(r, n=120)
    bt = BtOrchestratorService(redis_url=redis_url, instance="bt-1")
    task = await start(bt)
    try:
        env = dict(tradeops_env)

        def run(*a: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*TRADEOPS, "backtest", *a], capture_output=True, text=True, env=env)

        out = await asyncio.to_thread(
            run,
            "run",
            "momentum",
            "--symbols",
            "BTCUSDT",
            "--param",
            "window=3",
            "--param",
            "quantity=1",
            "--wait",
            "20",
        )
        assert out.returncode == 0, out.stderr
        assert "momentum on BTCUSDT (source: bars)" in out.stdout and "SHARPE" in out.stdout
        done = btjobs.recent(r)[0]
        res = done["result"]
        assert done["state"] == "done" and res.bars == 120 and res.trades > 0 and 0 <= res.max_drawdown < 1
        assert res.pnl == pytest.approx(res.per_symbol["BTCUSDT"])
        # bad input is refused by the CLI, and a bad queued job is dead-lettered with its reason
        out = await asyncio.to_thread(run, "run", "momentum", "--param", "window=x")
        assert out.returncode == 1 and "--param window: 'x' is not a number" in out.stderr
        bad = btjobs.submit(r, "momentum", [], {"windw": 2})
        await await_for(lambda: dlq(r, streams.BACKTEST_JOBS), 10)
        assert btjobs.status(r, bad.job_id)["state"] == "failed"
        assert "unknown parameters windw" in dlq(r, streams.BACKTEST_JOBS)[0]
        empty = btjobs.submit(r, "momentum", ["NOSUCH"], {})
        await await_for(lambda: btjobs.status(r, empty.job_id)["state"] == "failed", 10)
        assert btjobs.status(r, empty.job_id)["reason"] == "no prices in the range: nothing to backtest"
        listing = await asyncio.to_thread(run, "list")
        assert done["job_id"] in listing.stdout and "unknown parameters windw" in listing.stdout
        out = await asyncio.to_thread(run, "show", done["job_id"])
        assert f"backtest {done['job_id']}: momentum on BTCUSDT" in out.stdout
        assert not task.done()
    finally:
        await stop((bt, task))


async def test_market_catalog_and_subscription_errors(redis_url: str, r: redis.Redis, tradeops_env) -> None:
    mk = MarketplaceService(redis_url=redis_url, instance="mk-2")
    task = await start(mk)
    try:

        def run(*a: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*TRADEOPS, "market", *a], capture_output=True, text=True, env=tradeops_env)

        out = await asyncio.to_thread(run, "list")
        assert "strategy:alpha-momentum" in out.stdout and "quant-desk" in out.stdout
        out = await asyncio.to_thread(run, "subscribe", "strategy:nope", "--account", "a1")
        assert out.returncode == 1 and "no catalog item 'strategy:nope'; known: dataset:features" in out.stderr
        from backend.errors import TradeopsError

        with pytest.raises(TradeopsError, match="dataset without signals"):
            store.subscribe(r, "a1", "dataset:ticks", 1, "op")
        with pytest.raises(TradeopsError, match="account 'bad acct!'"):
            store.subscribe(r, "bad acct!", "strategy:alpha-momentum", 1, "op")
        with pytest.raises(TradeopsError, match="quantity must be positive, not -1"):
            store.subscribe(r, "a1", "strategy:alpha-momentum", -1, "op")
        out = await asyncio.to_thread(run, "subscribe", "strategy:alpha-momentum", "--account", "a1", "--quantity", "2")
        assert out.returncode == 0 and "a1 subscribed" in out.stdout
        assert [(x.account, x.quantity) for x in store.subscriptions(r, "strategy:alpha-momentum")] == [("a1", 2.0)]
        assert not store.unsubscribe(r, "zz", "strategy:alpha-momentum")
    finally:
        await stop((mk, task))


@pytest.mark.parametrize(
    "cls,bad",
    [
        (ServingService, {"modle": "alpha"}),
        (MlTrainingService, {"min_rows": "x"}),
        (ModelopsService, {"auto_promote_min_ic": "high"}),
    ],
)
def test_bad_config_names_the_section_and_key(redis_url: str, cls: type[Service], bad: dict) -> None:
    from backend.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"\[services\.{cls.name}\].*{next(iter(bad))}"):
        cls(redis_url=redis_url, config=bad)


async def test_training_reads_the_offline_feature_store(redis_url: str, r: redis.Redis, tmp_path) -> None:
    from backend.features.store import write_offline
    from backend.messages import ModelRegister
    from backend.settings import Settings

    seed_history(r, n=120)
    rows = [
        {"symbol": x.symbol, "ts_ns": x.ts_ns, **x.values}
        for x in (codec.decode(codec.payload(f), FeatureRow) for _, f in r.xrange(streams.FEATURES))
    ]
    r.delete(streams.FEATURES)  # only the offline store holds them now
    write_offline(tmp_path, rows, "part-0")
    ml = MlTrainingService(
        redis_url=redis_url,
        instance="ml-off",
        settings=Settings(data_dir=str(tmp_path)),
        config={"feature_source": "offline"},
    )
    task = await start(ml)
    try:
        r.xadd(streams.TRAINING_JOBS, codec.fields(TrainJob(job_id="off", name="beta", symbols=["BTCUSDT"])))
        await await_for(lambda: r.xlen(streams.MODELS_REQUESTS) == 1, 15)
        req = codec.decode(codec.payload(r.xrange(streams.MODELS_REQUESTS)[0][1]), ModelRegister)
        assert req.params["feature_source"] == "offline" and req.symbols == ["BTCUSDT"]
        assert req.rows > 100 and req.features == ["lead", "noise"] and req.metrics["ic"] > 0.5
        assert r.hget("training:job:off", "source") == b"offline"
    finally:
        await stop((ml, task))
