"""End-of-day compaction of the tick store: a closed day's small files (one per sink flush and
symbol) become one file per date and symbol, with no row lost or doubled and no reader ever
seeing a half state.

Parquet, per partition `date=D/symbol=S`:
1. (one compaction at a time: the compactor lock) read the partition's live files, check the row
   count, write them sorted by time into `.compact-....part` beside them (a name no reader lists
   and the sink's recovery leaves alone), whose Parquet metadata names the files it replaces; fsync.
2. under the store's exclusive lock (readers hold it shared while they list and read): rename the
   part into place as `compact-<first id>_<last id>.parquet` (the commit), fsync the directory,
   unlink the files it replaces.
A crash before the rename leaves a `.part` the next run deletes; a crash after it leaves replaced
files that readers already skip (`store.live_files`) and the next run deletes. A partition that
gets late files after compaction is compacted again (the compacted file is one of the inputs).

Delta Lake: `optimize.compact` per closed date partition, atomic by the table's own log.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backend.errors import TradeopsError
from backend.marketdata import store

COMPACTOR_LOCK = "_compactor.lock"


class CompactionBusy(TradeopsError):
    """Another process is compacting this store."""


@dataclass
class CompactionResult:
    through: str
    """Partitions dated up to this day (inclusive) were considered."""
    format: str = "parquet"
    partitions: int = 0
    """Partitions compacted now."""
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    cleaned: int = 0
    """Left-overs of an interrupted run removed (parts, files already replaced)."""
    skipped_open: int = 0
    """Partitions of days still open (after `through`), left alone."""
    details: list[dict[str, object]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "details"}


_NAME = re.compile(r"^(?:compact-)?(\d+-\d+)_(\d+-\d+)(?:-r\d+)?\.parquet$")


def _id_range(files: list[Path]) -> str:
    """`<first id>_<last id>` over the stream-id ranges the file names carry."""
    ids = [m.groups() for f in files if (m := _NAME.match(f.name))]
    if not ids:
        return "0-0_0-0"
    return f"{min((a for a, _ in ids), key=store.id_key)}_{max((b for _, b in ids), key=store.id_key)}"


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _compact_partition(root: Path, sdir: Path, res: CompactionResult) -> None:
    files = sorted(sdir.glob("*.parquet"))
    gone = {name for f in files for name in store.replaced_by(f)}
    leftovers = [f for f in files if f.name in gone]
    live = [f for f in files if f.name not in gone]
    if len(live) < 2:
        if leftovers:
            with store.store_lock(root, exclusive=True):
                for f in leftovers:
                    f.unlink(missing_ok=True)
            res.cleaned += len(leftovers)
        return
    tables = [pq.read_table(f) for f in live]
    expected = sum(t.num_rows for t in tables)
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    table = table.take(pc.sort_indices(table, [("ts", "ascending"), ("trade_id", "ascending")]))
    if table.num_rows != expected:  # pragma: no cover - concat never drops rows; be sure anyway
        raise RuntimeError(f"{sdir}: {table.num_rows} rows after concatenation, expected {expected}")
    span = _id_range(live)
    name = f"{store.COMPACT_PREFIX}{span}.parquet"
    taken = {f.name for f in files}
    n = 1
    while name in taken:  # never overwrite an input (or anything else)
        n += 1
        name = f"{store.COMPACT_PREFIX}{span}-r{n}.parquet"
    replaces = sorted(f.name for f in live)
    table = table.replace_schema_metadata({store.REPLACES_META: json.dumps(replaces).encode(),
                                           b"tradeops.rows": str(expected).encode()})
    part = sdir / f".{name}.part"
    pq.write_table(table, part)
    _fsync(part)
    written = pq.read_metadata(part).num_rows
    if written != expected:  # pragma: no cover - a short write would be caught here, not lost
        part.unlink()
        raise RuntimeError(f"{sdir}: wrote {written} rows, expected {expected}")
    with store.store_lock(root, exclusive=True):
        os.replace(part, sdir / name)  # the commit: readers now skip the files it replaces
        _fsync(sdir, directory=True)
        for f in live + leftovers:
            f.unlink(missing_ok=True)
    res.partitions += 1
    res.rows += expected
    res.files_before += len(live)
    res.files_after += 1
    res.cleaned += len(leftovers)
    res.details.append({"date": sdir.parent.name[len("date="):], "symbol": sdir.name[len("symbol="):],
                        "files": len(live), "rows": expected, "file": name})


def compact_parquet(root: Path, through: str) -> CompactionResult:
    """Compact every partition dated up to `through` ("YYYY-MM-DD", inclusive)."""
    root = Path(root)
    res = CompactionResult(through=through)
    if not root.exists():
        return res
    fd = os.open(root / COMPACTOR_LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CompactionBusy(f"another compaction of {root} is running") from None
        for part in root.glob("date=*/symbol=*/.*.part"):  # an interrupted run's unfinished file
            part.unlink(missing_ok=True)
            res.cleaned += 1
        for ddir in sorted(root.glob("date=*")):
            if ddir.name[len("date="):] > through:
                res.skipped_open += sum(1 for _ in ddir.glob("symbol=*"))
                continue
            for sdir in sorted(ddir.glob("symbol=*")):
                _compact_partition(root, sdir, res)
    finally:
        os.close(fd)
    return res


def compact_delta(path: Path, through: str) -> CompactionResult:
    """`optimize.compact` each date partition up to `through` of the Delta table."""
    from deltalake import DeltaTable

    res = CompactionResult(through=through, format="delta")
    dt = DeltaTable(str(path))
    dates = sorted({p["date"] for p in dt.partitions() if "date" in p})
    for day in dates:
        if day > through:
            res.skipped_open += 1
            continue
        m = dt.optimize.compact(partition_filters=[("date", "=", day)])
        added, removed = int(m.get("numFilesAdded", 0)), int(m.get("numFilesRemoved", 0))
        if removed:
            res.partitions += int(m.get("partitionsOptimized", 1))
            res.files_before += removed
            res.files_after += added
            res.details.append({"date": day, "files": removed, "files_after": added})
    return res


def compact_ticks(data_dir: Path, through: str) -> list[CompactionResult]:
    """Compact whichever tick stores the data dir holds (Parquet and/or Delta Lake)."""
    out = []
    if store.ticks_dir(data_dir).exists():
        out.append(compact_parquet(store.ticks_dir(data_dir), through))
    if (store.delta_dir(data_dir) / "_delta_log").exists():
        out.append(compact_delta(store.delta_dir(data_dir), through))
    return out
