"""sink-ticks: Parquet by date/symbol readable by pandas; a SIGKILL mid-stream and a restart leave
no tick stored twice and none missing, SIGKILLs under a steady flow too; a crash between a commit
and its ack is settled on start; the two-phase commit recovers; a full disk degrades the sink
(reason, alert, bounded memory) until space returns; Delta Lake when configured."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pyarrow as pa
import pytest
import redis

from backend.bus import codec, streams
from backend.marketdata import store, ticks
from backend.messages import Alert, Heartbeat, Tick
from backend.runtime.spawn import spawn_service, stop_process, wait_healthy
from backend.services.sink_ticks import SinkTicksService
from backend.settings import Settings
from tests.conftest import TRADEOPS, await_for, wait_for

SYMS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def publish(r: redis.Redis, start_batch: int, n_batches: int, per_batch: int = 50) -> int:
    now = time.time_ns()
    for b in range(start_batch, start_batch + n_batches):
        tks = [Tick(SYMS[i % 3], b * per_batch + i, 100.0 + i, 1.0, now + b * 1000 + i) for i in range(per_batch)]
        r.xadd(streams.MD_TICKS, codec.fields(ticks.from_ticks(tks)))
    return n_batches * per_batch


@pytest.mark.timeout(90)
def test_crash_and_restart_store_every_tick_exactly_once(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    # First run: flushes by time only, so entries it has read stay pending (unstored) for 1.5 s,
    # a window the kill below is sure to land in; the restart flushes quickly.
    cfg.write_text("[services.sink-ticks]\nflush_rows = 1000000\nflush_s = 1.5\n")
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
    wait_for(
        lambda: r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] > 0, 30, what="entries read but not yet stored"
    )
    stop_process(proc, kill=True)
    assert r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] > 0
    total += publish(r, 200, 50)
    cfg.write_text("[services.sink-ticks]\nflush_rows = 500\nflush_s = 0.2\n")
    proc = start()
    try:

        def stored() -> bool:
            return (
                r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] == 0
                and r.xinfo_groups(streams.MD_TICKS)[0]["lag"] == 0
            )

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
        sender.dataframe(
            t.to_pandas().drop(columns=["stream_id"]), table_name="ticks_test", symbols=["symbol"], at="ts"
        )
    assert pa is not None


class Flow:
    """A steady flow of TickBatches on md.ticks (`per` ticks each, trade ids 0, 1, 2 ...) from a
    thread, as the normalizer writes them, until `stop()`."""

    def __init__(self, redis_url: str, per: int = 10, every_s: float = 0.002) -> None:
        self.r = redis.Redis.from_url(redis_url)
        self.per, self.every_s = per, every_s
        self.batches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.batches += publish(self.r, self.batches, 1, self.per) // self.per

    def stop(self) -> int:
        """Stop the flow; the number of ticks written."""
        self._stop.set()
        self._thread.join(10)
        self.r.close()
        return self.batches * self.per


def stored_once(data: Path, total: int) -> None:
    """The store, read back with pyarrow, holds trade ids 0 .. total-1, each exactly once."""
    df = store.read_ticks(data)
    dups = int(df.trade_id.duplicated().sum())
    assert dups == 0, f"{dups} duplicate rows in the store"
    assert sorted(df.trade_id) == list(range(total))


def all_acked(r: redis.Redis) -> bool:
    groups = r.xinfo_groups(streams.MD_TICKS)
    return bool(groups) and r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] == 0 and groups[0]["lag"] == 0


@pytest.mark.timeout(180)
def test_sigkills_under_a_steady_flow_store_every_trade_exactly_once(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """Four SIGKILLs, each while hundreds of entries (many reads' worth) are read and unstored:
    each restart finds them pending and stores each trade once."""
    cfg = tmp_path / "config.toml"
    cfg.write_text("[services.sink-ticks]\nflush_rows = 1000000\nflush_s = 1.0\n")
    data = tmp_path / "data"
    commits = store.ticks_dir(data) / "_commits"

    def start() -> subprocess.Popen:
        p = spawn_service("sink-ticks", redis_url=redis_url, data_dir=data, instance="sink-1", config=cfg)
        wait_healthy(r, "sink-ticks", "sink-1", proc=p, log_path=data / "logs" / "sink-1.log")
        return p

    def n_commits() -> int:
        return len(list(commits.rglob("*.json"))) if commits.exists() else 0

    with Flow(redis_url) as flow:
        for _ in range(4):
            proc = start()
            before = n_commits()
            wait_for(lambda before=before: n_commits() > before, 30, what="a flush since the start")
            wait_for(
                lambda: r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] > 300,
                30,
                what="more than two reads' worth of entries read and not yet stored",
            )
            stop_process(proc, kill=True)
        total = flow.stop()
    cfg.write_text("[services.sink-ticks]\nflush_rows = 2000\nflush_s = 0.2\n")
    proc = start()
    try:
        wait_for(lambda: all_acked(r), 60, what="every entry stored and acked")
    finally:
        assert stop_process(proc) == 0
    stored_once(data, total)
    assert not list((commits / "unacked").glob("*.json"))


@pytest.mark.timeout(60)
async def test_a_crash_between_a_commit_and_its_ack_is_settled_on_start(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    total = publish(r, 0, 20)
    r.xgroup_create(streams.MD_TICKS, "sink-ticks", id="0")
    read = r.xreadgroup("sink-ticks", "sink-1", {streams.MD_TICKS: ">"}, count=100)[0][1]
    # a version that did not list entry ids in its commits stored five entries, the previous life
    # committed the next ten: both were killed before their XACK
    batches = [(eid.decode(), ticks.decode(codec.payload(f))) for eid, f in read]
    st = store.ParquetStore(store.ticks_dir(tmp_path))
    st.write(store.to_table(batches[:5]), batches[0][0], batches[4][0])
    sids = [sid for sid, _ in batches[5:15]]
    st.write(store.to_table(batches[5:15]), sids[0], sids[-1], ids=sids)
    assert [c.ids for c in st.unacked()] == [sids] and r.xpending(streams.MD_TICKS, "sink-ticks")["pending"] == 20
    settings = Settings(data_dir=str(tmp_path), services={"sink-ticks": {"flush_s": 0.1}})
    svc = SinkTicksService(redis_url=redis_url, settings=settings, instance="sink-1")
    task = asyncio.create_task(svc.run())
    try:
        await await_for(lambda: all_acked(r), 30, what="every entry acked")
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)
    assert svc.settled == 10 and svc.skipped == 5 and svc.rows_written == total - 15 * 50
    assert not st.unacked()
    stored_once(tmp_path, total)
    # and a flush that repeats entries an unacked commit holds writes none of their rows again
    t = store.to_table([("99-0", ticks.from_ticks([Tick("BTCUSDT", 10**6, 1.0, 1.0, time.time_ns())]))])
    st.write(t, "99-0", "99-0", ids=["99-0"])
    assert st.write(t, "99-0", "99-0", ids=["99-0"]) == []


def heartbeat(r: redis.Redis, instance: str = "sink-1") -> Heartbeat | None:
    raw = r.hget(f"health:sink-ticks:{instance}", "d")
    return codec.decode(raw, Heartbeat) if raw else None


@pytest.fixture
def small_tick_store(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose tick store is a 12 MB tmpfs (root only: the test is skipped without it)."""
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small filesystem: mounting a 12 MB tmpfs needs root")
    data = tmp_path / "data"
    root = store.ticks_dir(data)
    root.mkdir(parents=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(root)], capture_output=True, text=True, check=False
    )
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs for the tick store: {res.stderr.strip()}")
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def fill_up(path: Path) -> None:
    """Write zeros to `path` until its filesystem has no room left for a page."""
    import errno

    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    size = 1 << 20
    try:
        while size >= 4096:
            try:
                os.write(fd, b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                size //= 2
    finally:
        os.close(fd)


@pytest.mark.timeout(240)
def test_a_full_disk_degrades_the_sink_with_bounded_memory_until_space_returns(
    r: redis.Redis, redis_url: str, small_tick_store: Path, tradeops_env: dict[str, str]
) -> None:
    from backend.services.alerting import RESOLVED, active
    from backend.settings import Settings as S
    from console.data.live import LiveSource

    data = small_tick_store
    bound = 2000
    cfg = data.parent / "config.toml"
    cfg.write_text(
        f"[services.sink-ticks]\nflush_rows = 500\nflush_s = 0.2\nmax_buffer_rows = {bound}\nretry_max_s = 0.5\n"
    )
    procs: list[subprocess.Popen] = []

    def start(name: str, instance: str) -> subprocess.Popen:
        p = spawn_service(name, redis_url=redis_url, data_dir=data, instance=instance, config=cfg)
        procs.append(p)
        wait_healthy(r, name, instance, proc=p, log_path=data / "logs" / f"{instance}.log")
        return p

    def degraded() -> Heartbeat | None:
        hb = heartbeat(r)
        return hb if hb and hb.state == "degraded" and hb.pid == procs[-1].pid else None

    def at_bound() -> Heartbeat | None:
        hb = degraded()
        return hb if hb and not hb.extra["reading"] else None

    try:
        start("alerting", "alerting-1")
        sink = start("sink-ticks", "sink-1")
        total = publish(r, 0, 40)
        wait_for(lambda: all_acked(r), 30, what="the first 2,000 ticks stored")
        fill_up(store.ticks_dir(data) / "filler")

        total += publish(r, 40, 200)
        hb = wait_for(at_bound, 30, what="the sink degraded and no longer reading")
        assert "ENOSPC" in hb.reason and str(store.ticks_dir(data)) in hb.reason
        assert hb.extra["buffered"] <= bound
        alert = wait_for(lambda: dict(active(r)).get("degraded:sink-1"), 30, what="the degraded alert")
        assert alert.severity == "warning" and "no space left on device (ENOSPC)" in alert.message
        out = subprocess.run(
            [*TRADEOPS, "health"], env=tradeops_env, capture_output=True, text=True, timeout=60, check=False
        )
        assert "degraded: cannot write the tick store" in out.stdout, out.stdout + out.stderr
        src = LiveSource(redis_url, S(), "ops")
        try:
            snap = src.poll()
        finally:
            src.close()
        assert {h.service: h.state for h in snap.health}["sink-ticks"] == "degraded"
        assert any(a.startswith("sink-ticks (sink-1) degraded: ") and "ENOSPC" in a for a in snap.alerts)

        # memory stays bounded: what comes now waits in the stream (its lag grows)
        lag = hb.lag
        total += publish(r, 240, 40)
        hb = wait_for(lambda: (b := at_bound()) and b.lag >= lag + 40 and b, 30, what="the lag growing")
        assert hb.extra["buffered"] <= bound

        # a restart while the disk is full: degraded again, nothing stored twice
        stop_process(sink, kill=True)
        sink = spawn_service("sink-ticks", redis_url=redis_url, data_dir=data, instance="sink-1", config=cfg)
        procs.append(sink)
        hb = wait_for(at_bound, 60, what="the restarted sink degraded at its bound")
        assert hb.extra["buffered"] <= bound and "ENOSPC" in hb.reason
        seen = [codec.decode(f[b"d"], Heartbeat) for _, f in r.xrange(streams.OPS_HEALTH)]
        assert max(b.extra.get("buffered", 0) for b in seen if b.service == "sink-ticks") <= bound

        # space returns: it resumes by itself, stores everything once, the alert is resolved
        (store.ticks_dir(data) / "filler").unlink()
        wait_for(
            lambda: all_acked(r) and (b := heartbeat(r)) and b.state == "running",
            60,
            what="everything stored and the sink running",
        )
        wait_for(lambda: "degraded:sink-1" not in dict(active(r)), 30, what="the alert resolved")
        resolved = [codec.decode(codec.payload(f), Alert) for _, f in r.xrange(RESOLVED)]
        assert ("degraded:sink-1", "sink-ticks (sink-1) is running again") in [(a.key, a.resolved) for a in resolved]
        assert stop_process(sink) == 0
        stored_once(data, total)
        assert not list((store.ticks_dir(data) / "_commits" / "unacked").glob("*.json"))
    finally:
        for p in procs:
            stop_process(p, kill=True)


SPLIT = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"]


def publish_split(r: redis.Redis, n: int, start: int, batches: int, per_batch: int = 60) -> int:
    """What a normalizer with split outputs writes: each symbol's ticks to its partition of md.ticks."""
    from backend.bus import partitions

    now = time.time_ns()
    for b in range(start, start + batches):
        tks = [Tick(SPLIT[i % len(SPLIT)], b * per_batch + i, 100.0, 1.0, now + b * 1000 + i) for i in range(per_batch)]
        by: dict[str, list[Tick]] = {}
        for t in tks:
            by.setdefault(partitions.route(streams.MD_TICKS, t.symbol, n), []).append(t)
        for stream, part in by.items():
            r.xadd(stream, codec.fields(ticks.from_ticks(part)))
    return batches * per_batch


@pytest.mark.timeout(120)
async def test_a_split_md_ticks_is_stored_once_by_the_instances_sharing_its_partitions(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    # md.ticks split in 2: two sink-ticks instances each own a partition (a lane with its own
    # commit log); one stops mid-flow and the other takes its partition over; every trade is in
    # the one store once, and each partition's commits are its own
    from backend.bus import partitions

    n = 2
    settings = Settings(
        data_dir=str(tmp_path),
        partitions={streams.MD_TICKS_RAW: n, streams.MD_TICKS: n},
        services={"sink-ticks": {"flush_s": 0.2}},
    )

    def start(name: str) -> tuple[SinkTicksService, asyncio.Task]:
        svc = SinkTicksService(redis_url=redis_url, settings=settings, instance=name)
        return svc, asyncio.create_task(svc.run())

    one, t1 = start("sink-1")
    two, t2 = start("sink-2")
    try:
        await await_for(
            lambda: getattr(one, "parts", None) and getattr(two, "parts", None)
            and one.parts.partitions() and two.parts.partitions(),
            30,
            what="a partition each",
        )  # fmt: skip
        total = publish_split(r, n, 0, 40)
        await await_for(lambda: one.rows_written + two.rows_written == total, 30, what="the first ticks stored")
        one.request_stop()  # its partition goes to the other, its buffer stored first
        await asyncio.wait_for(t1, 20)
        total += publish_split(r, n, 40, 40)
        await await_for(lambda: two.parts.partitions() == [0, 1], 30, what="the other owning both")
        await await_for(lambda: one.rows_written + two.rows_written == total, 30, what="every tick stored")
    finally:
        for svc, t in ((one, t1), (two, t2)):
            if not t.done():
                svc.request_stop()
                await asyncio.wait_for(t, 20)
    df = store.read_ticks(tmp_path)
    assert len(df) == total and not df.duplicated(["symbol", "trade_id"]).any()
    assert set(df.symbol) == set(SPLIT)
    commits = store.ticks_dir(tmp_path) / "_commits"
    assert sorted(p.name for p in commits.iterdir() if p.is_dir()) == ["p0of2", "p1of2"]
    for p in range(n):  # nothing left pending in either partition
        assert r.xpending(partitions.name(streams.MD_TICKS, p, n), "sink-ticks")["pending"] == 0
    assert not r.exists(streams.MD_TICKS)
