"""scheduler on real Redis: end-of-day jobs performed (the tick store compacted, the daily report
written) with their outcomes recorded and shown by `tradeops jobs`; a missed run caught up once
after downtime and never twice (across a SIGKILL and a restart of the real process); a run
interrupted by a dead instance resumed once; failures recorded and alerted; bad config and bad
requests named."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from backend.bus import codec, streams
from backend.errors import ConfigError
from backend.features.store import read_offline, write_offline
from backend.marketdata import compaction, store, ticks
from backend.messages import Alert, ExecReport, JobRun, OrderEvent, Position, Signal, Tick
from backend.runtime.spawn import spawn_service, stop_process, wait_healthy
from backend.services.scheduler import SchedulerService, last_runs, run_key
from backend.settings import Settings
from tests.conftest import TRADEOPS, await_for, wait_for

S = 1_000_000_000
DAY = 86400
NOW = time.time()
YESTERDAY = time.strftime("%Y-%m-%d", time.gmtime(NOW - DAY))
Y0 = int((NOW - DAY) // DAY * DAY * 1000)  # yesterday 00:00 UTC in ms
EOD = [{"name": "sink-compaction", "at": "00:00"}, {"name": "daily-report", "at": "00:00"}]


def settings(data: Path, jobs: list[dict] = EOD, **kw: object) -> Settings:
    return Settings(data_dir=str(data), services={"scheduler": {"jobs": jobs, **kw}})


def deployed_days_ago(r: redis.Redis, days: float = 2) -> None:
    """The scheduler was first deployed `days` ago (so today's occurrences are missed runs)."""
    r.set("scheduler:since", str(NOW - days * DAY))


def seed_day(r: redis.Redis, data: Path) -> int:
    """Yesterday: 12 sink flushes of 30 ticks (3 symbols), two orders (one filled, one denied), a
    fill, a position, signals, an alert and a dead letter; and 4 flushes today."""
    st = store.ParquetStore(store.ticks_dir(data))
    syms = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    for k in range(16):
        t0 = (Y0 + 3_600_000) * 1_000_000 if k < 12 else time.time_ns()
        tks = [Tick(syms[i % 3], k * 30 + i, 100.0 + k, 0.5, t0 + (k * 30 + i) * 1_000_000) for i in range(30)]
        st.write(store.to_table([(f"{k + 1}-0", ticks.from_ticks(tks))]), f"{k + 1}-0", f"{k + 1}-0")
    ms = iter(range(Y0 + 7_200_000, Y0 + 8_000_000, 1000))
    ev = dict(account="acct-1", symbol="BTCUSDT", side="buy", quantity=1.0, limit_price=None)
    for c, state, reason in (
        ("o1", "NEW", ""),
        ("o2", "NEW", ""),
        ("o1", "FILLED", ""),
        ("o2", "DENIED", "max_order_notional: 1e6 > 250000"),
    ):
        r.xadd(
            streams.ORDERS_EVENTS,
            codec.fields(OrderEvent(client_order_id=c, state=state, reason=reason, **ev)),
            id=f"{next(ms)}-0",
        )
    r.xadd(
        streams.EXEC_REPORTS,
        codec.fields(
            ExecReport(
                client_order_id="o1",
                venue_order_id="v1",
                kind="fill",
                account="acct-1",
                symbol="BTCUSDT",
                side="buy",
                trade_id="t1",
                fill_qty=1.0,
                fill_price=100.0,
            )
        ),
        id=f"{next(ms)}-0",
    )
    r.xadd(
        streams.POSITIONS,
        codec.fields(
            Position(
                account="acct-1",
                symbol="BTCUSDT",
                quantity=1.0,
                avg_price=100.0,
                realized_pnl=0.0,
                unrealized_pnl=11.0,
                mark=111.0,
                exposure=111.0,
                ts_ns=0,
            )
        ),
        id=f"{next(ms)}-0",
    )
    for side in ("buy", None, "sell"):
        r.xadd(
            streams.SIGNALS,
            codec.fields(Signal(symbol="BTCUSDT", ts_ns=1, model="alpha", version=3, score=0.0, side=side)),
            id=f"{next(ms)}-0",
        )
    r.xadd(
        streams.OPS_ALERTS,
        codec.fields(Alert(id="a", ts_ns=1, severity="critical", source="ptrc", kind="drawdown", message="m")),
        id=f"{next(ms)}-0",
    )
    r.xadd(streams.dlq(streams.FEATURES), {b"dlq_reason": b"x"}, id=f"{next(ms)}-0")
    for k in range(3):  # three offline feature flushes
        write_offline(
            data,
            [{"symbol": "BTCUSDT", "ts_ns": (Y0 + 3_600_000 + k * 1000) * 1_000_000, "ret_1": 0.1}],
            f"{1000 + k}-f",
        )
    return 12 * 30


async def run_until(svc: SchedulerService, pred: Callable[[], Any], timeout: float = 20) -> None:
    task = asyncio.create_task(svc.run())
    try:
        await await_for(lambda: pred() or task.done(), timeout)
        assert not task.done(), task.exception()
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)


def finished(r: redis.Redis) -> list[JobRun]:
    runs = [codec.decode(codec.payload(f), JobRun) for _, f in r.xrange(streams.OPS_JOBS)]
    return [x for x in runs if x.detail.get("outcome") in ("ok", "failed")]


async def test_end_of_day_jobs_compact_the_store_and_write_the_report(
    redis_url: str, r: redis.Redis, tmp_path: Path, tradeops_env
) -> None:
    data = tmp_path / "data"
    rows = seed_day(r, data)
    before = store.read_ticks(data)
    deployed_days_ago(r)
    svc = SchedulerService(redis_url=redis_url, settings=settings(data), instance="s1")
    await run_until(svc, lambda: len(finished(r)) == 2)
    runs = last_runs(r)
    assert {k: v["state"] for k, v in runs.items()} == {"sink-compaction": "ok", "daily-report": "ok"}, runs
    # the compaction: one file per symbol for the closed day, today untouched, same rows
    comp = runs["sink-compaction"]
    assert comp["target_day"] == YESTERDAY and comp["trigger"] == "caught up after downtime"
    assert comp["detail"]["stores"] == ["ticks/parquet", "features/parquet"]
    assert comp["detail"]["partitions"] == 4 and comp["detail"]["files_before"] == 39
    assert comp["detail"]["rows"] == rows + 3
    assert len(read_offline(data)) == 3
    day_dir = store.ticks_dir(data) / f"date={YESTERDAY}"
    assert sorted(len(list(d.glob("*.parquet"))) for d in day_dir.iterdir()) == [1, 1, 1]
    assert store.read_ticks(data).equals(before)
    # the report: what the day held
    rep = json.loads((data / "reports" / f"daily-{YESTERDAY}.json").read_text())
    assert rep["day"] == YESTERDAY and {s: m["ticks"] for s, m in rep["market"].items()} == dict.fromkeys(
        ("BTCUSDT", "ETHUSDT", "SOLUSDT"), 120
    )
    assert rep["orders"] == {
        "orders": 2,
        "states": {"DENIED": 1, "FILLED": 1},
        "denied_or_rejected_by": {"max_order_notional": 1},
    }
    assert rep["fills"]["fills"] == 1 and rep["fills"]["by_symbol"]["BTCUSDT"]["notional"] == 100.0
    assert rep["accounts"]["acct-1"]["pnl"] == 11.0
    assert rep["models"]["alpha"] == {"signals": 3, "buy": 1, "sell": 1, "versions": [3]}
    assert rep["alerts"]["by_severity"] == {"critical": 1} and rep["dead_letters"] == {"dlq.features": 1}
    md = (data / "reports" / f"daily-{YESTERDAY}.md").read_text()
    assert f"# Daily report {YESTERDAY}" in md and "| acct-1 | 11.00 |" in md
    # the outcomes, as `tradeops jobs` shows them
    out = await asyncio.to_thread(subprocess.run, [*TRADEOPS, "jobs"], capture_output=True, text=True, env=tradeops_env)
    assert out.returncode == 0, out.stderr
    lines = {ln.split()[0]: ln for ln in out.stdout.splitlines()[2:]}
    assert "ok" in lines["sink-compaction"] and "partitions=4" in lines["sink-compaction"]
    assert "ok" in lines["daily-report"] and f"daily-{YESTERDAY}.md" in lines["daily-report"]
    out = await asyncio.to_thread(
        subprocess.run, [*TRADEOPS, "jobs", "history", "daily-report"], capture_output=True, text=True, env=tradeops_env
    )
    assert out.returncode == 0 and out.stdout.count("daily-report") == 1


@pytest.mark.timeout(90)
def test_a_missed_run_is_caught_up_once_across_a_kill_and_restart(
    redis_url: str, r: redis.Redis, tmp_path: Path, tradeops_env
) -> None:
    data = tmp_path / "data"
    seed_day(r, data)
    deployed_days_ago(r)
    cfg = tmp_path / "sched.toml"
    cfg.write_text(
        '[services.scheduler]\njobs = [{name = "daily-report", at = "00:00"},\n'
        '  {name = "compact-daily", kind = "sink-compaction", every = "1d"}]\n'
    )

    def start(instance: str) -> subprocess.Popen:
        p = spawn_service("scheduler", redis_url=redis_url, data_dir=data, instance=instance, config=cfg)
        wait_healthy(r, "scheduler", instance, proc=p, log_path=data / "logs" / f"{instance}.log")
        return p

    p1 = start("sched-1")
    wait_for(lambda: len(finished(r)) == 2, 30, what="both missed runs caught up")
    stop_process(p1, kill=True)
    p2 = start("sched-2")  # healthy means its start-up catch-up pass is done
    try:
        assert len(finished(r)) == 2 and [x.detail["outcome"] for x in finished(r)] == ["ok", "ok"]
        assert r.xlen(streams.OPS_JOBS) == 4  # started + finished, once each

        # an operator's request runs once per request, here for a named day
        def run(*a: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*TRADEOPS, "jobs", "run", *a], capture_output=True, text=True, env=tradeops_env, timeout=60
            )

        out = run("daily-report", "--day", YESTERDAY, "--reason", "re-run after late fills", "--wait", "20")
        assert out.returncode == 0 and out.stdout.splitlines()[-1].startswith("ok: day=" + YESTERDAY), (
            out.stdout + out.stderr
        )
        hist = codec.decode(codec.payload(r.xrevrange(streams.OPS_JOBS, count=1)[0][1]), JobRun)
        assert hist.reason.startswith("requested by ") and hist.reason.endswith(": re-run after late fills")
        # bad CLI input: one line naming what is wrong, exit 1
        out = run("nosuch")
        assert out.returncode == 1 and "no job 'nosuch'; jobs: compact-daily, daily-report" in out.stderr
        out = run("daily-report", "--day", "2024-13-01")
        assert out.returncode == 1 and "--day: day '2024-13-01' is not a date (YYYY-MM-DD)" in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        assert stop_process(p2) == 0
    assert len(finished(r)) == 3


async def test_a_run_left_by_a_dead_instance_is_resumed_once(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    deployed_days_ago(r)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    stuck = {"state": "running", "instance": "scheduler-dead", "ts_ns": 1, "trigger": "scheduled"}
    r.set(run_key("daily-report", today), msgspec.json.encode(stuck))
    # a run another, live instance holds is not taken from it
    r.set(run_key("sink-compaction", today), msgspec.json.encode({**stuck, "instance": "scheduler-alive"}))
    r.hset(
        "health:scheduler:scheduler-alive",
        mapping={"state": "running", "pid": os.getpid(), "host": socket.gethostname()},
    )
    svc = SchedulerService(redis_url=redis_url, settings=settings(tmp_path), instance="s-new")
    await run_until(svc, lambda: len(finished(r)) == 1)
    (run,) = finished(r)
    assert run.job == "daily-report" and run.reason == "resumed: scheduler-dead stopped while running it"
    assert msgspec.json.decode(r.get(run_key("sink-compaction", today)))["instance"] == "scheduler-alive"
    svc2 = SchedulerService(redis_url=redis_url, settings=settings(tmp_path), instance="s-newer")
    await run_until(svc2, lambda: svc2.state == "running")
    assert len(finished(r)) == 1  # resumed once, not again


async def test_failures_are_recorded_and_alerted_and_bad_requests_dead_lettered(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    seed_day(r, tmp_path)
    deployed_days_ago(r)
    import fcntl

    fd = os.open(store.ticks_dir(tmp_path) / compaction.COMPACTOR_LOCK, os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # someone else is compacting
    for f in (
        codec.fields(JobRun(job="nosuch", day="", ts_ns=1)),
        {b"d": b"junk"},
        codec.fields(JobRun(job="sink-compaction", day="yesterday", ts_ns=1)),
    ):
        r.xadd(streams.SCHEDULER_REQUESTS, f)
    svc = SchedulerService(redis_url=redis_url, settings=settings(tmp_path, jobs=EOD[:1]), instance="s-f")
    try:
        await run_until(svc, lambda: finished(r) and r.xlen(streams.dlq(streams.SCHEDULER_REQUESTS)) == 3)
    finally:
        os.close(fd)
    (run,) = finished(r)
    assert run.detail["outcome"] == "failed" and "another compaction of" in run.detail["reason"]
    assert last_runs(r)["sink-compaction"]["state"] == "failed"
    (alert,) = [
        codec.decode(codec.payload(f), Alert)
        for _, f in r.xrange(streams.OPS_ALERTS)
        if codec.decode(codec.payload(f), Alert).source == "scheduler"
    ]
    assert alert.kind == "job" and alert.message.startswith("job sink-compaction (")
    assert "failed: another" in alert.message
    # the worker dead-letters what does not decode before the handler sees the batch
    reasons = [f[b"dlq_reason"].decode() for _, f in r.xrange(streams.dlq(streams.SCHEDULER_REQUESTS))]
    assert reasons[0].startswith("undecodable job request:") and "(expected JobRun)" in reasons[0]
    assert reasons[1:] == [
        "unknown job 'nosuch'; jobs: sink-compaction",
        "job sink-compaction: day 'yesterday' is not a date (YYYY-MM-DD)",
    ]
    assert svc.state == "stopped"


@pytest.mark.parametrize(
    "jobs,message",
    [
        ([{"name": "daily-report", "at": "25:00"}], "job 'daily-report': time '25:00' is not HH:MM"),
        ([{"name": "x", "every": "5x", "kind": "daily-report"}], "job 'x': every '5x' is not a positive duration"),
        (
            [{"name": "x", "kind": "cleanup", "at": "01:00"}],
            "job 'x': kind 'cleanup' is not one of sink-compaction, daily-report, retrain",
        ),
        (
            [{"name": "cleanup", "at": "01:00"}],
            "job 'cleanup' needs a kind: one of sink-compaction, daily-report, retrain",
        ),
        ([{"name": "daily-report", "at": "01:00", "every": "1h"}], "exactly one of `at`"),
        ([{"name": "r", "kind": "retrain", "every": "1h"}], "Object missing required field `model`"),
        (
            [{"name": "r", "kind": "retrain", "every": "1h", "params": {"model": "a", "lookbak": "1d"}}],
            "Object contains unknown field `lookbak`",
        ),
        (
            [{"name": "r", "kind": "retrain", "every": "1h", "params": {"model": "a", "lookback": "1x"}}],
            "job 'r' (retrain) params: lookback '1x' is not a positive duration",
        ),
        (
            [{"name": "r", "kind": "retrain", "every": "1h", "params": {"model": "a", "ridge": -1}}],
            "job 'r' (retrain) params: horizon_s must be positive and ridge not negative",
        ),
        (
            [{"name": "daily-report", "at": "01:00"}, {"name": "daily-report", "at": "02:00"}],
            "job names must be unique: daily-report",
        ),
        ([{"name": "daily-report", "at": "01:00", "extra": 1}], "Object contains unknown field `extra`"),
        ([{"name": "r", "kind": "daily-report", "every": "5s"}], "job 'r': every 5s is shorter than tick_s 20s"),
    ],
)
def test_bad_config_names_what_is_wrong(redis_url: str, jobs: list[dict], message: str) -> None:
    with pytest.raises(ConfigError, match=r"\[services\.scheduler\]") as err:
        SchedulerService(redis_url=redis_url, settings=Settings(services={"scheduler": {"jobs": jobs}}))
    assert message in str(err.value)
