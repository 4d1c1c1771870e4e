"""sink-ticks: Parquet by date/symbol readable by pandas; a SIGKILL mid-stream and a restart leave
no tick stored twice and none missing; the two-phase commit recovers; Delta Lake when configured."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from backend.bus import codec, streams
from backend.marketdata import store, ticks
from backend.messages import Tick
from backend.runtime.spawn import spawn_service, stop_process, wait_healthy
from backend.services.sink_ticks import SinkTicksService
from backend.settings import Settings
from tests.conftest import await_for, wait_for

SYMS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def publish(r: redis.Redis, start_batch: int, n_batches: int, per_batch: int = 50) -> int:
    now = time.time_ns()
    for b in range(start_batch, start_batch + n_batches):
        tks = [Tick(SYMS[i % 3], b * per_batch + i, 100.0 + i, 1.0, now + b * 1000 + i)
               for i in range(per_batch)]
        r.xadd(streams.MD_TICKS, codec.fields(ticks.from_ticks(tks)))
    return n_batches * per_batch


@pytest.mark.timeout(90)
def test_crash_and_restart_store_every_tick_exactly_once(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    # First run: flushes by time only, so entries it has read stay pending (unstored) for 1.5 s,
    # a window the kill below is sure to land in; the restart flushes quickly.
    cfg.write_text('[services.sink-ticks]\nflush_rows = 1000000\nflush_s = 1.5\n')
    data = tmp_path / "data"
    total = publish(r, 0, 100)  # 5000 ticks

    def start() -> subprocess.Popen:
        p = spawn_service("sink-ticks", redis_url=redis_url, data_dir=data, instance="sink-1", config=cfg)
        wait_healthy(r, "sink-ticks", "sink-1", proc=p, log_path=data / "logs" / "sink-1.log")
        return p

    proc = start()
    # let it commit some flushes, then kill it hard in the middle of the stream
    wait_for(lambda: len(list((store.ticks_dir(data) / "_commits").glob("*.json"))) >= 1, 30)
    total += publish(r, 100, 100)
    wait_for(lambda: r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] > 0, 30,
             what="entries read but not yet stored")
    stop_process(proc, kill=True)
    assert r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] > 0
    total += publish(r, 200, 50)
    cfg.write_text('[services.sink-ticks]\nflush_rows = 500\nflush_s = 0.2\n')
    proc = start()
    try:
        def stored() -> bool:
            return (r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] == 0
                    and r.xinfo_groups(streams.MD_TICKS)[0]["lag"] == 0)
        wait_for(stored, 30, what="every entry acked")
    finally:
        assert stop_process(proc) == 0
    df = store.read_ticks(data)
    assert len(df) == total
    assert df.trade_id.is_unique
    assert sorted(df.trade_id) == list(range(total))
    assert set(df.symbol) == set(SYMS)
    parts = {p.parent.name for p in store.ticks_dir(data).rglob("*.parquet")}
    assert parts == {f"symbol={s}" for s in SYMS}
    assert all(p.parent.parent.name.startswith("date=") for p in store.ticks_dir(data).rglob("*.parquet"))
    # filtered reads
    assert set(store.read_ticks(data, symbols=["ETHUSDT"]).symbol) == {"ETHUSDT"}


def test_two_phase_commit_recovery(tmp_path: Path) -> None:
    s = store.ParquetStore(tmp_path)
    t = store.to_table([("1-0", ticks.from_ticks([Tick("BTCUSDT", 1, 10.0, 1.0, time.time_ns())]))])
    s.write(t, "1-0", "1-0")
    # a flush that crashed after its manifest but before its renames ...
    t2 = store.to_table([("2-0", ticks.from_ticks([Tick("ETHUSDT", 2, 20.0, 1.0, time.time_ns())]))])
    files = s.write(t2, "2-0", "2-0")
    os.replace(files[0], files[0].with_name(files[0].name + ".tmp"))
    # ... and one that crashed before its manifest (temp files only)
    stray = tmp_path / "date=2026-01-01" / "symbol=SOLUSDT" / "3-0_3-0.parquet.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"partial")
    assert s.recover() == "2-0"
    assert not stray.exists()
    paths = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    assert paths == ["1-0_1-0.parquet", "2-0_2-0.parquet"]


@pytest.mark.timeout(60)
async def test_delta_lake_when_configured(redis_url: str, tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url)
    total = publish(r, 0, 20)
    settings = Settings(data_dir=str(tmp_path), services={"sink-ticks": {"format": "delta", "flush_s": 0.1}})
    svc = SinkTicksService(redis_url=redis_url, settings=settings, instance="delta-1")
    task = asyncio.create_task(svc.run())
    await await_for(lambda: getattr(svc, "rows_written", 0) >= total, 30)
    svc.request_stop()
    await asyncio.wait_for(task, 10)
    assert store.DeltaStore(store.delta_dir(tmp_path)).recover() == svc.committed
    df = store.read_ticks(tmp_path, delta=True)
    assert len(df) == total and df.trade_id.is_unique


def test_questdb_writer() -> None:
    url = os.environ.get("TRADEOPS_TEST_QUESTDB")
    if not url:
        pytest.skip("no QuestDB configured (set TRADEOPS_TEST_QUESTDB=http://host:9000 to run the ILP writer test)")
    from questdb.ingress import Sender

    with Sender.from_conf(f"http::addr={url.split('://', 1)[-1]};") as sender:
        t = store.to_table([("1-0", ticks.from_ticks([Tick("BTCUSDT", 1, 10.0, 1.0, time.time_ns())]))])
        sender.dataframe(t.to_pandas().drop(columns=["stream_id"]), table_name="ticks_test",
                         symbols=["symbol"], at="ts")
    assert pa is not None
