"""A real S3 (SeaweedFS on loopback, credentials required: tests/s3.py): sink-ticks writes its Delta
Lake table and sink-alt its items there, with the credentials from the secrets provider; pandas /
deltalake read them back from S3 with every trade and every item exactly once after a SIGKILL and a
restart, and after the consumer group is set back (everything delivered again); while S3 refuses
connections both say `degraded` with the reason and lose nothing. The phase 1 gate's
minio probe writes, reads back and deletes an object on that endpoint, and fails with the reason
against a closed port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from deltalake import DeltaTable

from backend.alt import s3table
from backend.bus import codec, streams
from backend.bus.embedded import free_port
from backend.marketdata import store
from backend.messages import AltItem
from backend.runtime.spawn import spawn_service, stop_process, wait_healthy
from backend.s3 import S3, S3Error
from backend.services.sink_alt import SinkAltService, alt_dir
from backend.services.sink_ticks import SinkTicksService
from backend.settings import Settings
from gates.checks import CheckContext, run_check
from gates.model import Check
from tests.conftest import await_for, wait_for
from tests.integration.test_md_sink_ticks import SYMS, publish
from tests.s3 import Outage, SessionS3


def config(path: Path, infra: dict[str, str], service: str, section: str) -> Path:
    lines = ["[infra]", *(f'{k} = "{v}"' for k, v in infra.items()), f"[services.{service}]", section]
    path.write_text("\n".join(lines) + "\n")
    return path


def drained(r: redis.Redis, stream: str, group: str) -> bool:
    return r.xpending(stream, group)["pending"] == 0 and r.xinfo_groups(stream)[0]["lag"] == 0


def start(name: str, r: redis.Redis, redis_url: str, data: Path, cfg: Path) -> subprocess.Popen:
    p = spawn_service(name, redis_url=redis_url, data_dir=data, instance=f"{name}-1", config=cfg)
    wait_healthy(r, name, f"{name}-1", proc=p, log_path=data / "logs" / f"{name}-1.log")
    return p


@pytest.mark.timeout(120)
def test_sink_ticks_writes_delta_lake_on_s3_exactly_once_across_a_sigkill(
    r: redis.Redis, redis_url: str, tmp_path: Path, s3_server: SessionS3, s3_infra: dict[str, str]
) -> None:
    data = tmp_path / "data"
    loc = s3_server.location(s3_infra["s3_prefix"])
    cfg = tmp_path / "config.toml"
    # first run: flushes by time only, so what it read stays unstored for 1.5 s: the kill lands there
    config(cfg, s3_infra, "sink-ticks", "flush_rows = 1000000\nflush_s = 1.5")
    total = publish(r, 0, 100)  # 5000 ticks
    proc = start("sink-ticks", r, redis_url, data, cfg)
    wait_for(lambda: store.delta_rows(data, loc) > 0, 30, interval=0.1, what="a first commit on S3")
    total += publish(r, 100, 100)
    wait_for(lambda: r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] > 0, 30, what="ticks read, unstored")
    stop_process(proc, kill=True)
    total += publish(r, 200, 50)
    config(cfg, s3_infra, "sink-ticks", "flush_rows = 500\nflush_s = 0.2")
    proc = start("sink-ticks", r, redis_url, data, cfg)
    try:
        wait_for(lambda: drained(r, streams.MD_TICKS, "sink-ticks"), 30, what="every entry acked")
    finally:
        assert stop_process(proc) == 0
    written = store.delta_rows(data, loc)
    # the group set back to the start: everything is delivered again, and nothing is stored twice
    r.xgroup_setid(streams.MD_TICKS, "sink-ticks", "0")
    proc = start("sink-ticks", r, redis_url, data, cfg)
    try:
        wait_for(lambda: drained(r, streams.MD_TICKS, "sink-ticks"), 30, what="every entry acked again")
    finally:
        assert stop_process(proc) == 0
    df = DeltaTable(loc.uri(store.DELTA_NAME), storage_options=loc.storage_options()).to_pandas()
    dups = int(df.trade_id.duplicated().sum())
    print(f"\nS3 round trip (ticks): published {total}, rows on S3 {written}, read back {len(df)}, duplicates {dups}")
    assert written == total and len(df) == total and dups == 0
    assert sorted(df.trade_id) == list(range(total)) and set(df.symbol) == set(SYMS)
    assert len(store.read_ticks(data, s3=loc)) == total  # the store's own reader, from S3 too
    some = store.read_ticks(data, ["ETHUSDT"], df.ts.min(), df.ts.max(), s3=loc)  # a partition pruned read
    assert set(some.symbol) == {"ETHUSDT"} and len(some) == ((df.symbol == "ETHUSDT") & (df.ts < df.ts.max())).sum()
    assert not store.delta_dir(data).exists() and not store.ticks_dir(data).exists()  # nothing local
    # the Task 02 gate's "store receiving ticks" counts them on S3
    check = Check(id="store-ticks", title="t", kind="data", params={"sink": "ticks", "min_rows": 1})
    res = run_check(CheckContext(r, redis_url, Settings(data_dir=str(data), infra=s3_infra)), check)
    assert res.outcome == "passed" and res.evidence["rows"] == total
    assert res.evidence["where"] == f"{loc.uri(store.DELTA_NAME)} at {s3_server.endpoint}"


@pytest.mark.timeout(90)
def test_two_sink_ticks_instances_on_one_s3_table_lose_nothing_when_one_is_killed(
    r: redis.Redis, redis_url: str, tmp_path: Path, s3_server: SessionS3, s3_infra: dict[str, str]
) -> None:
    """Blue/green: sink-1 holds entries unflushed, sink-2 commits later entries (its offset passes
    them), sink-1 is SIGKILLed and sink-2 takes its entries over: the table, not the offset, says
    they are not stored yet, so they are written, once."""
    data = tmp_path / "data"
    loc = s3_server.location(s3_infra["s3_prefix"])
    slow = config(tmp_path / "slow.toml", s3_infra, "sink-ticks", "flush_rows = 1000000\nflush_s = 60")
    fast = config(tmp_path / "fast.toml", s3_infra, "sink-ticks", "flush_rows = 500\nflush_s = 0.2")
    total = publish(r, 0, 20)

    def held_by(consumer: str) -> int:
        return len(r.xpending_range(streams.MD_TICKS, "sink-ticks", "-", "+", 1000, consumername=consumer))

    one = spawn_service("sink-ticks", redis_url=redis_url, data_dir=data, instance="sink-1", config=slow)
    two = None
    try:
        wait_healthy(r, "sink-ticks", "sink-1", proc=one, log_path=data / "logs" / "sink-1.log")
        wait_for(lambda: held_by("sink-1") == 20, 30, what="sink-1 holding the first entries")
        two = spawn_service("sink-ticks", redis_url=redis_url, data_dir=data, instance="sink-2", config=fast)
        wait_healthy(r, "sink-ticks", "sink-2", proc=two, log_path=data / "logs" / "sink-2.log")
        # sink-1 frozen, alive (its heartbeat lives 5 s more): it keeps its entries (and what its
        # blocked read still gets), while sink-2 stores the later ones, its offset passing sink-1's
        os.kill(one.pid, signal.SIGSTOP)
        total += publish(r, 20, 20)

        def sink2_done() -> bool:
            return r.xinfo_groups(streams.MD_TICKS)[0]["lag"] == 0 and held_by("sink-2") == 0

        wait_for(sink2_done, 30, what="sink-2 storing the later entries")
        assert store.delta_rows(data, loc) > 0
        stop_process(one, kill=True)  # now sink-2 takes sink-1's entries over
        wait_for(lambda: drained(r, streams.MD_TICKS, "sink-ticks"), 30, what="sink-1's entries taken over, stored")
    finally:
        if one.poll() is None:  # the test failed before sink-1 was killed: leave no process behind
            stop_process(one, kill=True)
        assert two is None or stop_process(two) == 0
    df = store.read_ticks(data, s3=loc)
    assert len(df) == total and df.trade_id.is_unique and sorted(df.trade_id) == list(range(total))


def item(i: int) -> AltItem:
    return AltItem(f"n{i}", time.time_ns(), ["BTCUSDT"], f"headline {i}", f"body {i}", 0.1, "test")


@pytest.mark.timeout(90)
def test_sink_alt_stores_items_on_s3_exactly_once_across_a_sigkill(
    r: redis.Redis, redis_url: str, tmp_path: Path, s3_server: SessionS3, s3_infra: dict[str, str]
) -> None:
    data = tmp_path / "data"
    loc = s3_server.location(s3_infra["s3_prefix"])
    cfg = config(tmp_path / "config.toml", s3_infra, "sink-alt", "")
    for i in range(30):
        r.xadd(streams.ALT_RAW, codec.fields(item(i)))
    proc = start("sink-alt", r, redis_url, data, cfg)
    wait_for(lambda: r.xlen(streams.ALT_ITEMS) >= 5, 30, what="a first batch stored")
    stop_process(proc, kill=True)
    for i in [*range(30, 50), 3, 7]:  # 20 new items, and 2 published again
        r.xadd(streams.ALT_RAW, codec.fields(item(i)))
    proc = start("sink-alt", r, redis_url, data, cfg)
    try:
        wait_for(lambda: drained(r, streams.ALT_RAW, "sink-alt"), 30, what="every item acked")
    finally:
        assert stop_process(proc) == 0
    r.xgroup_setid(streams.ALT_RAW, "sink-alt", "0")  # everything delivered again
    proc = start("sink-alt", r, redis_url, data, cfg)
    try:
        wait_for(lambda: drained(r, streams.ALT_RAW, "sink-alt"), 30, what="every item acked again")
    finally:
        assert stop_process(proc) == 0
    df = s3table.read(loc)
    dups, stored = int(df.id.duplicated().sum()), s3table.count(loc)
    print(f"\nS3 round trip (alt): 52 entries of 50 items, stored {stored}, read back {len(df)}, duplicates {dups}")
    assert len(df) == 50 and dups == 0 and stored == 50
    assert sorted(df.id) == sorted(f"n{i}" for i in range(50))
    assert not list(alt_dir(data).rglob("*.parquet"))  # on S3, not in the data dir (only the search index)
    # the Task 02 gate's "search receiving alt data": indexed, and stored on S3
    check = Check(id="search-alt", title="a", kind="data", params={"sink": "alt", "min_rows": 50})
    res = run_check(CheckContext(r, redis_url, Settings(data_dir=str(data), infra=s3_infra)), check)
    assert res.outcome == "passed" and res.evidence["indexed"] == 50 and res.evidence["stored"] == 50


def test_phase1_minio_probe_against_a_real_s3_and_a_closed_port(
    r: redis.Redis, redis_url: str, tmp_path: Path, s3_server: SessionS3, s3_infra: dict[str, str]
) -> None:
    probe = Check(id="infra-minio", title="minio", kind="probe", params={"target": "infra:minio"})
    settings = Settings(data_dir=str(tmp_path / "data"), infra=s3_infra)
    res = run_check(CheckContext(r, redis_url, settings), probe)
    assert res.outcome == "passed", res.evidence
    assert res.evidence["probed"] == s3_server.endpoint and res.evidence["bucket"] == s3_server.bucket
    assert res.evidence["round_trip"] == "written, read back, deleted"
    closed = dict(s3_infra, minio=f"http://127.0.0.1:{free_port()}")
    res = run_check(CheckContext(r, redis_url, Settings(data_dir=str(tmp_path / "data"), infra=closed)), probe)
    assert res.outcome == "failed"
    where = f"S3 s3://{s3_server.bucket} at {closed['minio']}"
    assert res.evidence["error"] == f"{where}: cannot look up the bucket: cannot connect (connection refused)"
    wrong = S3(s3_server.endpoint, s3_server.bucket, s3_server.access_key_id, "not-the-secret")
    (tmp_path / "data" / "secrets" / "s3" / "secret-access-key").write_text(wrong.secret_access_key)
    res = run_check(CheckContext(r, redis_url, settings), probe)
    assert res.outcome == "failed" and "access denied" in res.evidence["error"]
    assert wrong.secret_access_key not in str(res.evidence)


def stored(svc: SinkTicksService | SinkAltService) -> int:
    return svc.processed() if hasattr(svc, "worker") or hasattr(svc, "lanes") else 0  # 0 until set up


@pytest.mark.timeout(90)
async def test_sinks_say_degraded_while_s3_is_down_and_store_everything_once_after(
    redis_url: str, tmp_path: Path, s3_server: SessionS3, s3_infra: dict[str, str]
) -> None:
    """S3 refusing connections: both sinks keep what they hold (nothing dead-lettered), say
    `degraded` naming the endpoint and why, and store everything exactly once when it is back."""
    r = redis.Redis.from_url(redis_url)
    outage = Outage(s3_server.endpoint)
    infra = dict(s3_infra, minio=outage.endpoint)
    services = {"sink-ticks": {"flush_s": 0.1, "retry_max_s": 0.5}, "sink-alt": {"retry_max_s": 0.5}}
    settings = Settings(data_dir=str(tmp_path / "data"), infra=infra, services=services)
    ticks_svc = SinkTicksService(redis_url=redis_url, settings=settings, instance="ticks-1")
    alt_svc = SinkAltService(redis_url=redis_url, settings=settings, instance="alt-1")
    tasks = [asyncio.create_task(ticks_svc.run()), asyncio.create_task(alt_svc.run())]
    try:
        total = publish(r, 0, 10)
        for i in range(10):
            r.xadd(streams.ALT_RAW, codec.fields(item(i)))
        await await_for(lambda: stored(ticks_svc) == total and stored(alt_svc) == 10, 30, what="stored")
        outage.cut()
        total += publish(r, 10, 10)
        for i in range(10, 20):
            r.xadd(streams.ALT_RAW, codec.fields(item(i)))
        await await_for(lambda: ticks_svc.degraded and alt_svc.degraded, 30, what="both degraded")
        assert ticks_svc.reason.startswith(f"cannot write the tick store s3://{s3_server.bucket}/")
        assert f"at {outage.endpoint}: cannot connect (connection refused)" in ticks_svc.reason
        assert f"at {outage.endpoint}: cannot connect (connection refused)" in alt_svc.reason
        outage.restore()
        await await_for(lambda: stored(ticks_svc) == total and stored(alt_svc) == 20, 30, what="stored after")
        await await_for(lambda: not ticks_svc.degraded and not alt_svc.degraded, 10, what="running again")
    finally:
        outage.cut()
        for svc in (ticks_svc, alt_svc):
            svc.request_stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert r.xlen(streams.dlq(streams.MD_TICKS)) == 0 and r.xlen(streams.dlq(streams.ALT_RAW)) == 0
    loc = s3_server.location(s3_infra["s3_prefix"])
    df = store.read_ticks(tmp_path / "data", s3=loc)
    assert len(df) == total and df.trade_id.is_unique
    items = s3table.read(loc)
    assert len(items) == 20 and items.id.is_unique
    # a sink that starts while S3 is down fails at once, saying where and why (exit 1 as a process)
    late = SinkTicksService(redis_url=redis_url, settings=settings, instance="ticks-2")
    with pytest.raises(S3Error) as info:
        await asyncio.wait_for(late.run(), 20)
    assert str(info.value) == (
        f"cannot open the tick store {loc.uri(store.DELTA_NAME)} at "
        f"{outage.endpoint}: cannot connect (connection refused)"
    )
