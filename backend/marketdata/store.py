"""The tick store: partitioned Parquet (date / symbol) by default, a Delta Lake table when
configured; both exactly-once across crashes, keyed by the md.ticks stream ids they hold.

Parquet commits in two phases: every partition file of a flush is written as `*.parquet.tmp`,
then a manifest `_commits/<first id>_<last id>.json` naming them is written atomically, then the
files are renamed into place. On start, `recover()` finishes the renames of every manifest and
deletes temp files no manifest names; the newest manifest's last id is the committed offset.
A write that fails (a full disk: ENOSPC) removes what it wrote and raises; nothing is committed.

Exactly once with the stream's consumer group: a flush given the entry ids it holds (`ids=`, as
sink-ticks does) leaves its manifest, listing them, under `_commits/unacked/` until the sink has
acknowledged them (`acked(stem)` moves it up to `_commits/`). So a crash between the commit and
the XACK is settled on the next start: `unacked()` names the entries that are stored but may
still be pending, the sink acks them and they are never delivered again; and a flush that repeats
entries an unacked commit already holds (another instance took them over) writes none of their
rows twice. Delta Lake keeps the committed offset as an app transaction version in the table's
own log (no unacked commits: the sink skips new entries at or below that offset, and asks the
table which entries delivered again it holds: `stored_ids`, since another instance's commits, in
blue/green or after a takeover, are not covered by this one's offset); the Delta table is
in the data dir, or on S3 when one is configured (backend.s3: the rows and the offset are one
conditional commit there too).

A closed day's many small files are compacted into one file per date and symbol by the
scheduler's end-of-day job (`backend.marketdata.compaction`). Readers list and read under the
store's shared lock and compaction swaps files under the exclusive one (backend.compaction), so a
reader sees the files before the swap or after it, never between; `live_files` leaves out files a
compacted file replaces, which covers a compaction that crashed mid-swap.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from backend.compaction import drop_replaced, store_lock
from backend.marketdata import ticks as tickcols
from backend.messages import TickBatch

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from backend.s3 import S3

SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("trade_id", pa.int64()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
        ("ts", pa.timestamp("ns", tz="UTC")),
        ("recv_ns", pa.int64()),
        ("buyer_maker", pa.bool_()),
        ("stream_id", pa.string()),
    ]
)
APP_ID = "tradeops-sink-ticks"
DELTA_NAME = "ticks-delta"


def ticks_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "store" / "ticks"


def delta_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "store" / DELTA_NAME


def id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def id_version(stream_id: str) -> int:
    ms, seq = id_key(stream_id)
    return ms * (1 << 20) + seq


def to_table(batches: list[tuple[str, TickBatch]]) -> pa.Table:
    """Rows of many TickBatches (with the stream id of the entry each came from)."""
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("symbol", "trade_id", "price", "qty", "ts", "recv_ns", "buyer_maker", "stream_id")
    }
    for sid, b in batches:
        if b.n == 0:
            continue
        c = tickcols.columns(b)
        cols["symbol"].append(np.asarray(b.symbols, dtype=object)[c["sym"]])
        cols["trade_id"].append(c["trade_id"])
        cols["price"].append(c["price"])
        cols["qty"].append(c["qty"])
        cols["ts"].append(c["trade_ns"])
        cols["recv_ns"].append(c["recv_ns"])
        cols["buyer_maker"].append(c["buyer_maker"].astype(bool))
        cols["stream_id"].append(np.full(b.n, sid, dtype=object))
    if not cols["price"]:
        return SCHEMA.empty_table()
    arrays = [
        pa.array(np.concatenate(cols["symbol"]), pa.string()),
        pa.array(np.concatenate(cols["trade_id"])),
        pa.array(np.concatenate(cols["price"])),
        pa.array(np.concatenate(cols["qty"])),
        pa.array(np.concatenate(cols["ts"]), pa.timestamp("ns", tz="UTC")),
        pa.array(np.concatenate(cols["recv_ns"])),
        pa.array(np.concatenate(cols["buyer_maker"])),
        pa.array(np.concatenate(cols["stream_id"]), pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _with_date(table: pa.Table) -> pa.Table:
    date = pc.strftime(table["ts"], format="%Y-%m-%d")
    return table.append_column("date", date)


def live_files(root: Path, dates: tuple[str | None, str | None] = (None, None)) -> list[Path]:
    """The committed Parquet files a reader reads: every partition file, minus the files a
    compacted file replaces. `dates` (first, last, inclusive, "YYYY-MM-DD") prunes partitions.
    Call it under `store_lock(root)`."""
    lo, hi = dates
    files = []
    for ddir in sorted(Path(root).glob("date=*")):
        day = ddir.name[len("date=") :]
        if (lo and day < lo) or (hi and day > hi):
            continue
        files += sorted(ddir.glob("symbol=*/*.parquet"))
    return drop_replaced(files)


def _ns(t: int | pd.Timestamp) -> int:
    return t if isinstance(t, int) else pd.Timestamp(t).value


def _day(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").strftime("%Y-%m-%d")


@dataclass
class Commit:
    """A committed flush whose entries the sink may not have acknowledged yet."""

    stem: str
    ids: list[str]


@dataclass
class ParquetStore:
    root: Path
    lane: str = ""
    """One partition's commit log in a store several writers share (md.ticks split: `p1of4`),
    `_commits/p1of4/`, its temporary files `*.parquet.p1of4.tmp`: a partition's entry ids are
    its own (they repeat across partitions), and no writer touches another's files in flight.
    The files themselves go where everyone's go (date/symbol: a symbol is in one partition)."""
    tracks_acks: ClassVar[bool] = True
    """Commits keep the entry ids they hold until acked (`unacked()`): no offset skipping needed."""

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.commits = self.root / "_commits" / self.lane if self.lane else self.root / "_commits"
        self.tmp = f".{self.lane}.tmp" if self.lane else ".tmp"
        self.pending_acks = self.commits / "unacked"
        # the last id of commits that never listed their entry ids (written before commits did,
        # or without `ids=`): entries at or below it count as stored; set by recover()
        self.untracked_offset: str | None = None

    def _manifests(self) -> list[Path]:
        return sorted([*self.commits.glob("*.json"), *self.pending_acks.glob("*.json")])

    def recover(self) -> str | None:
        """Finish interrupted commits, drop uncommitted temp files; the committed offset."""
        named: set[Path] = set()
        last: str | None = None
        if self.commits.exists():
            for m in self._manifests():
                info = json.loads(m.read_text())
                for rel in info["files"]:
                    final = self.root / rel
                    tmp = final.with_name(final.name + self.tmp)
                    if tmp.exists():
                        os.replace(tmp, final)
                    named.add(final)
                if last is None or id_key(info["last_id"]) > id_key(last):
                    last = info["last_id"]
                untracked = self.untracked_offset
                if (
                    "ids" not in info
                    and not info.get("acked")
                    and (untracked is None or id_key(info["last_id"]) > id_key(untracked))
                ):
                    self.untracked_offset = info["last_id"]
        for tmp in self.root.rglob(f"*.parquet{self.tmp}"):  # this writer's only
            tmp.unlink()
        for mtmp in [*self.commits.glob("*.json.tmp"), *self.pending_acks.glob("*.json.tmp")]:
            mtmp.unlink()
        return last

    def unacked(self) -> list[Commit]:
        """Committed flushes whose entries may not be acknowledged yet (oldest first)."""
        out = []
        for m in sorted(self.pending_acks.glob("*.json")):
            try:
                info = json.loads(m.read_text())
            except FileNotFoundError:  # another instance acked it meanwhile
                continue
            out.append(Commit(m.stem, info.get("ids", [])))
        return out

    def acked(self, stem: str) -> None:
        """The entries of commit `stem` are acknowledged: its manifest leaves `unacked/` for
        `_commits/`, without its list of ids (kept whole when even that small write fails)."""
        src, dst = self.pending_acks / f"{stem}.json", self.commits / f"{stem}.json"
        try:
            info = json.loads(src.read_text())
        except FileNotFoundError:  # settled already (by another instance, or before)
            return
        info.pop("ids", None)
        info["acked"] = True
        tmp = dst.with_name(dst.name + ".tmp")
        try:
            tmp.write_text(json.dumps(info))
            os.replace(tmp, dst)
        except OSError:
            tmp.unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.replace(src, dst)
            return
        src.unlink(missing_ok=True)

    def write(self, table: pa.Table, first_id: str, last_id: str, *, ids: list[str] | None = None) -> list[Path]:
        """Commit `table` (the rows of entries `first_id` .. `last_id`). With `ids` (every entry
        id the flush holds) the commit waits in `unacked/` for `acked()`, and rows of entries an
        unacked commit already holds are left out. On any failure (ENOSPC ...) what was written
        is removed and the error raised: nothing is committed."""
        if ids is not None:
            table = self._not_yet_stored(table)
        if table.num_rows == 0:
            return []
        table = _with_date(table)
        stem = f"{first_id}_{last_id}"
        files: list[Path] = []
        commits = self.pending_acks if ids is not None else self.commits
        manifest = commits / f"{stem}.json"
        mtmp = manifest.with_name(manifest.name + ".tmp")
        try:
            for date in pc.unique(table["date"]).to_pylist():
                dt = table.filter(pc.equal(table["date"], date))
                for sym in pc.unique(dt["symbol"]).to_pylist():
                    part = dt.filter(pc.equal(dt["symbol"], sym)).drop_columns(["date"])
                    rel = Path(f"date={date}") / f"symbol={sym}" / f"{stem}.parquet"
                    final = self.root / rel
                    final.parent.mkdir(parents=True, exist_ok=True)
                    files.append(rel)
                    pq.write_table(part.drop_columns(["symbol"]), final.with_name(final.name + self.tmp))
            commits.mkdir(parents=True, exist_ok=True)
            info = {"first_id": first_id, "last_id": last_id, "rows": table.num_rows, "files": [str(f) for f in files]}
            if ids is not None:
                info["ids"] = ids
            with open(mtmp, "w") as f:
                f.write(json.dumps(info))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            for rel in files:  # nothing committed: free what this flush took
                (self.root / rel).with_name(rel.name + self.tmp).unlink(missing_ok=True)
            mtmp.unlink(missing_ok=True)
            raise
        os.replace(mtmp, manifest)  # the commit point
        for rel in files:
            final = self.root / rel
            os.replace(final.with_name(final.name + self.tmp), final)
        return [self.root / f for f in files]

    def _not_yet_stored(self, table: pa.Table) -> pa.Table:
        """`table` without the rows of entries an unacked commit holds (stored already)."""
        held = {i for c in self.unacked() for i in c.ids}
        if not held or table.num_rows == 0:
            return table
        keep = pc.invert(pc.is_in(table["stream_id"], pa.array(sorted(held), pa.string())))
        return table.filter(keep)


@dataclass
class DeltaStore:
    """The Delta Lake table: a local directory, or an S3 URI (`s3://bucket/prefix/ticks-delta`)
    with deltalake's `storage_options` (backend.s3)."""

    root: Path | str
    storage_options: dict[str, str] | None = field(default=None, repr=False)
    tracks_acks: ClassVar[bool] = False
    """No unacked commits: an offset (entries at or below it are stored), and for entries delivered
    again the table itself (`stored_ids`)."""
    untracked_offset: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        self._offset = 0  # the highest offset this store has seen committed (never written lower)

    def _table(self) -> DeltaTable | None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(str(self.root), storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def recover(self) -> str | None:
        """The committed offset (the last entry id of the newest commit), None for no table yet.
        Any other failure (the endpoint down, refused credentials) is raised: guessing "no table"
        there would store everything again."""
        dt = self._table()
        version = dt.transaction_version(APP_ID) if dt is not None else None
        if version is None:
            return None
        self._offset = max(self._offset, version)
        return f"{version >> 20}-{version & ((1 << 20) - 1)}"

    def stored_ids(self, ids: list[str]) -> set[str]:
        """Which of the entries `ids` the table holds rows of. For entries delivered again: the
        offset speaks only for this instance's commits, not for another's (blue/green, a reclaim
        of a dead instance's entries), which may be above or below it."""
        if not ids:
            return set()
        dt = self._table()
        if dt is None:
            return set()
        sid = ds.field("stream_id")  # the bounds let the files' statistics skip most files
        wanted = (sid >= min(ids)) & (sid <= max(ids)) & sid.isin(ids)
        found = dt.to_pyarrow_dataset().to_table(columns=["stream_id"], filter=wanted)
        return set(pc.unique(found["stream_id"]).to_pylist())

    def unacked(self) -> list[Commit]:
        return []

    def acked(self, stem: str) -> None:
        pass

    def write(self, table: pa.Table, first_id: str, last_id: str, *, ids: list[str] | None = None) -> list[Path]:
        """Append `table` and the offset `last_id` in one Delta commit (all or nothing)."""
        from deltalake import CommitProperties, Transaction, write_deltalake

        if table.num_rows == 0:
            return []
        self._offset = max(self._offset, id_version(last_id))  # a flush of reclaimed entries: not lower
        props = CommitProperties(app_transactions=[Transaction(APP_ID, self._offset)])
        write_deltalake(
            str(self.root),
            _with_date(table),
            partition_by=["date", "symbol"],
            mode="append",
            commit_properties=props,
            storage_options=self.storage_options,
        )
        return [Path(str(self.root))]  # one commit (counted as one file written)


def delta_store(data_dir: Path, s3: S3 | None = None) -> DeltaStore:
    """The Delta Lake tick table: on S3 when given (`<prefix>/ticks-delta`), else in the data dir."""
    if s3 is not None:
        return DeltaStore(s3.uri(DELTA_NAME), s3.storage_options())
    return DeltaStore(delta_dir(data_dir))


def delta_rows(data_dir: Path, s3: S3 | None = None) -> int:
    """How many rows the Delta Lake tick table holds (from its log's file statistics)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    where = delta_store(data_dir, s3)
    try:
        dt = DeltaTable(str(where.root), storage_options=where.storage_options)
    except TableNotFoundError:
        return 0
    return sum(n or 0 for n in pa.table(dt.get_add_actions(flatten=True)).column("num_records").to_pylist())


def read_ticks(
    data_dir: Path,
    symbols: list[str] | None = None,
    start: int | pd.Timestamp | None = None,
    end: int | pd.Timestamp | None = None,
    *,
    delta: bool = False,
    s3: S3 | None = None,
) -> pd.DataFrame:
    """Stored ticks as a DataFrame (symbol, trade_id, price, qty, ts, ...), ordered by time.

    `start` / `end` are ns since the epoch or Timestamps; `end` is exclusive. `delta`: the Delta
    Lake table, in the data dir or, with `s3`, on S3 (only the partitions that can hold the
    range and the symbols are read)."""
    # date partitions that can hold [start, end); end is exclusive, a partition is a whole day
    days = (_day(_ns(start)) if start is not None else None, _day(_ns(end) - 1) if end is not None else None)
    if delta or s3 is not None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        where = delta_store(data_dir, s3)
        try:
            dataset = DeltaTable(str(where.root), storage_options=where.storage_options).to_pyarrow_dataset()
        except TableNotFoundError:
            return SCHEMA.empty_table().to_pandas()
        wanted = [
            *([ds.field("date") >= days[0]] if days[0] else []),
            *([ds.field("date") <= days[1]] if days[1] else []),
            *([ds.field("symbol").isin(symbols)] if symbols else []),
        ]
        table = dataset.to_table(filter=functools.reduce(operator.and_, wanted) if wanted else None)
        table = table.drop_columns([c for c in ("date",) if c in table.column_names])
    else:
        root = ticks_dir(data_dir)
        if not root.exists():
            return SCHEMA.empty_table().to_pandas()
        with store_lock(root):  # compaction cannot swap files between the listing and the read
            files = [str(p) for p in live_files(root, days)]
            if not files:
                return SCHEMA.empty_table().to_pandas()
            dataset = ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(root))
            table = dataset.to_table()
        table = table.drop_columns([c for c in ("date",) if c in table.column_names])
    if symbols:
        table = table.filter(pc.is_in(table["symbol"], pa.array(symbols)))
    df = table.to_pandas()
    if start is not None:
        df = df[df.ts >= pd.Timestamp(start, tz="UTC") if isinstance(start, int) else df.ts >= start]
    if end is not None:
        df = df[df.ts < pd.Timestamp(end, tz="UTC") if isinstance(end, int) else df.ts < end]
    cols = ["symbol", "trade_id", "price", "qty", "ts", "recv_ns", "buyer_maker", "stream_id"]
    return df.sort_values(["ts", "symbol", "trade_id"], kind="stable")[cols].reset_index(drop=True)
