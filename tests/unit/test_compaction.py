"""End-of-day compaction of the tick store: one file per closed date and symbol, the same rows
before and after (none lost, none doubled), readers never see a half state, an interrupted run
is finished by the next, the sink's commit log and offset are untouched, Delta Lake too."""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from backend.marketdata import compaction, store, ticks
from backend.messages import Tick

S = 1_000_000_000
SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
# the days are fixed once, from the start of today (UTC), so that no tick a test writes crosses
# midnight whatever the time of day the test runs at
DAY0 = (time.time_ns() // (86400 * S)) * 86400 * S
TODAY = time.strftime("%Y-%m-%d", time.gmtime(DAY0 // S))
YESTERDAY = time.strftime("%Y-%m-%d", time.gmtime(DAY0 // S - 86400))
NOW = DAY0 + S  # one second into today: today's ticks (a few seconds' worth) stay inside today
YESTERDAY_NOON = DAY0 - 12 * 3600 * S  # inside yesterday


def flushes(st: store.ParquetStore | store.DeltaStore, n: int, t0: int, *, start: int = 0, per: int = 30) -> int:
    """`n` sink flushes of `per` ticks each (3 symbols), ids start+1 .. start+n, from t0 on."""
    for k in range(start, start + n):
        tks = [Tick(SYMS[i % 3], k * per + i, 100.0 + i, 0.5, t0 + (k * per + i) * 1_000_000) for i in range(per)]
        sid = f"{k + 1}-0"
        st.write(store.to_table([(sid, ticks.from_ticks(tks))]), sid, sid)
    return n * per


def files(root: Path, day: str) -> dict[str, list[str]]:
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted((root / f"date={day}").iterdir())}


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, int]:
    st = store.ParquetStore(store.ticks_dir(tmp_path))
    n = flushes(st, 12, NOW - 86400 * S)  # yesterday (a closed day)
    n += flushes(st, 4, NOW, start=12)  # today (still open)
    return tmp_path, n


def test_closed_days_become_one_file_per_symbol_with_the_same_rows(filled: tuple[Path, int]) -> None:
    data, n = filled
    root = store.ticks_dir(data)
    before = store.read_ticks(data)
    today_files = files(root, TODAY)
    offset = store.ParquetStore(root).recover()
    res = compaction.compact_parquet(root, YESTERDAY)
    assert (res.partitions, res.files_before, res.files_after, res.rows, res.skipped_open) == (3, 36, 3, 12 * 30, 3)
    assert {k: len(v) for k, v in files(root, YESTERDAY).items()} == {f"symbol={s}": 1 for s in SYMS}
    assert files(root, YESTERDAY)["symbol=BTCUSDT"] == ["compact-1-0_12-0.parquet"]
    assert files(root, TODAY) == today_files  # an open day is left alone
    after = store.read_ticks(data)
    assert len(after) == n and after.trade_id.is_unique
    pd.testing.assert_frame_equal(before, after)
    # the sink's recovery neither resurrects nor loses anything, and its offset is the same
    assert store.ParquetStore(root).recover() == offset == "16-0"
    pd.testing.assert_frame_equal(store.read_ticks(data), before)
    # a second run has nothing to do
    again = compaction.compact_parquet(root, YESTERDAY)
    assert (again.partitions, again.cleaned) == (0, 0)


def test_an_interrupted_run_is_finished_by_the_next(filled: tuple[Path, int]) -> None:
    data, _ = filled
    root = store.ticks_dir(data)
    part = root / f"date={YESTERDAY}" / "symbol=BTCUSDT"
    originals = {f.name: f.read_bytes() for f in part.iterdir()}
    before = store.read_ticks(data)
    compaction.compact_parquet(root, YESTERDAY)
    # a crash after the commit (rename) but before the unlinks: the replaced files are back
    for name, data_ in originals.items():
        (part / name).write_bytes(data_)
    # and one before the commit: a half-written part
    (part / ".compact-1-0_9-0.parquet.part").write_bytes(b"PAR1 half")
    assert len(list(part.glob("*.parquet"))) == 13
    pd.testing.assert_frame_equal(store.read_ticks(data), before)  # nothing doubled
    res = compaction.compact_parquet(root, YESTERDAY)
    assert res.cleaned == 13 and res.partitions == 0
    assert [f.name for f in part.iterdir()] == ["compact-1-0_12-0.parquet"]
    pd.testing.assert_frame_equal(store.read_ticks(data), before)


def test_late_files_are_compacted_again_with_the_compacted_one(filled: tuple[Path, int]) -> None:
    data, n = filled
    root = store.ticks_dir(data)
    compaction.compact_parquet(root, YESTERDAY)
    st = store.ParquetStore(root)
    n += flushes(st, 2, YESTERDAY_NOON, start=16)  # late ticks for yesterday
    assert len(store.read_ticks(data)) == n
    res = compaction.compact_parquet(root, YESTERDAY)
    assert res.partitions == 3 and res.files_before == 9
    assert files(root, YESTERDAY)["symbol=ETHUSDT"] == ["compact-1-0_18-0.parquet"]
    df = store.read_ticks(data)
    assert len(df) == n and df.trade_id.is_unique


def test_readers_never_see_a_half_state(tmp_path: Path) -> None:
    st = store.ParquetStore(store.ticks_dir(tmp_path))
    n = 0
    for day in range(2, 8):  # six closed days, many small files each
        n += flushes(st, 10, NOW - day * 86400 * S, start=day * 10, per=12)
    counts: list[int | str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set() or len(counts) < 5:
            try:
                df = store.read_ticks(tmp_path)
            except Exception as exc:  # noqa: BLE001 - a file gone between listing and reading
                counts.append(repr(exc))
                continue
            counts.append(len(df) if df.trade_id.is_unique else -1)

    t = threading.Thread(target=reader)
    t.start()
    try:
        res = compaction.compact_parquet(store.ticks_dir(tmp_path), YESTERDAY)
    finally:
        done.set()
        t.join(60)
    assert res.partitions == 18 and res.rows == n
    assert counts and set(counts) == {n}, f"a reader saw {sorted(set(map(str, counts)))}, expected {n}"


def test_one_compaction_at_a_time(filled: tuple[Path, int]) -> None:
    root = store.ticks_dir(filled[0])
    fd = os.open(root / compaction.COMPACTOR_LOCK, os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(compaction.CompactionBusy, match=r"another compaction of .* is running"):
            compaction.compact_parquet(root, YESTERDAY)
    finally:
        os.close(fd)
    assert compaction.compact_parquet(root, YESTERDAY).partitions == 3


def test_reads_prune_date_partitions(filled: tuple[Path, int]) -> None:
    data, _ = filled
    shutil.rmtree(store.ticks_dir(data) / f"date={TODAY}")  # would fail a read that touched it ...
    (store.ticks_dir(data) / f"date={TODAY}").mkdir()
    (store.ticks_dir(data) / f"date={TODAY}" / "symbol=X").mkdir()
    (store.ticks_dir(data) / f"date={TODAY}" / "symbol=X" / "junk.parquet").write_bytes(b"junk")
    day_end = pd.Timestamp(YESTERDAY, tz="UTC") + pd.Timedelta(days=1)
    assert len(store.read_ticks(data, end=day_end)) == 12 * 30  # ... a read of yesterday does not


def test_delta_lake_partitions_are_compacted_and_keep_the_offset(tmp_path: Path) -> None:
    st = store.DeltaStore(store.delta_dir(tmp_path))
    n = flushes(st, 6, NOW - 86400 * S) + flushes(st, 2, NOW, start=6)
    offset = st.recover()
    before = store.read_ticks(tmp_path, delta=True)
    (res,) = compaction.compact_ticks(tmp_path, YESTERDAY)
    assert res.format == "delta" and res.files_before == 18 and res.files_after == 3 and res.skipped_open == 1
    after = store.read_ticks(tmp_path, delta=True)
    assert len(after) == n
    pd.testing.assert_frame_equal(before, after)
    assert store.DeltaStore(store.delta_dir(tmp_path)).recover() == offset == "8-0"


def test_the_offline_feature_store_is_compacted_per_closed_day(tmp_path: Path) -> None:
    from backend.features.store import compact_offline, offline_dir, read_offline, write_offline

    y0 = NOW - 86400 * S
    for k in range(8):  # eight flushes yesterday, two today; a later one adds a feature column
        rows = [
            {"symbol": s, "ts_ns": y0 + (k * 10 + i) * S, "ret_1": 0.001 * i, **({"vol_5": 1.0} if k == 7 else {})}
            for i, s in enumerate(SYMS * 3)
        ]
        write_offline(tmp_path, rows, f"{1000 + k}-a{k}")
    for k in range(2):
        write_offline(tmp_path, [{"symbol": "BTCUSDT", "ts_ns": NOW + k * S, "ret_1": 0.0}], f"{2000 + k}-b{k}")
    before = read_offline(tmp_path)
    res = compact_offline(tmp_path, YESTERDAY)
    assert (res.store, res.partitions, res.files_before, res.rows, res.skipped_open) == ("features", 1, 8, 72, 1)
    day = offline_dir(tmp_path) / f"date={YESTERDAY}"
    assert [f.name for f in day.glob("*.parquet")] == ["compact-1000_1007.parquet"]
    after = read_offline(tmp_path)
    assert len(after) == len(before) == 74
    pd.testing.assert_frame_equal(before[sorted(before.columns)], after[sorted(after.columns)])
    assert after.vol_5.notna().sum() == 9  # the column only the last flush had, kept for its rows
