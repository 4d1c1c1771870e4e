"""End-of-day compaction of the tick store: a closed day's small files (one per sink flush and
symbol) become one file per date and symbol, `compact-<first id>_<last id>.parquet`, with no row
lost or doubled and no reader ever seeing a half state (the protocol is backend.compaction's;
readers are `store.read_ticks`). The sink's commit log and offset are not touched: a compacted
file only replaces committed files.

Delta Lake: `optimize.compact` per closed date partition, atomic by the table's own log.
"""

from __future__ import annotations

import re
from pathlib import Path

from backend.compaction import COMPACTOR_LOCK, CompactionBusy, CompactionResult, compact_dir, compactor_lock
from backend.marketdata import store

_NAME = re.compile(r"^(?:compact-)?(\d+-\d+)_(\d+-\d+)(?:-r\d+)?\.parquet$")


def _id_range(files: list[Path]) -> str:
    """`<first id>_<last id>` over the stream-id ranges the file names carry."""
    ids = [m.groups() for f in files if (m := _NAME.match(f.name))]
    if not ids:
        return "0-0_0-0"
    return f"{min((a for a, _ in ids), key=store.id_key)}_{max((b for _, b in ids), key=store.id_key)}"


def compact_parquet(root: Path, through: str) -> CompactionResult:
    """Compact every partition dated up to `through` ("YYYY-MM-DD", inclusive)."""
    root = Path(root)
    res = CompactionResult(through=through)
    if not root.exists():
        return res
    with compactor_lock(root) as res.cleaned:
        for ddir in sorted(root.glob("date=*")):
            if ddir.name[len("date=") :] > through:
                res.skipped_open += sum(1 for _ in ddir.glob("symbol=*"))
                continue
            for sdir in sorted(ddir.glob("symbol=*")):
                compact_dir(root, sdir, ["ts", "trade_id"], _id_range, res)
    return res


def compact_delta(path: Path, through: str) -> CompactionResult:
    """`optimize.compact` each date partition up to `through` of the Delta table."""
    from deltalake import DeltaTable

    res = CompactionResult(through=through, format="delta")
    dt = DeltaTable(str(path))
    for day in sorted({p["date"] for p in dt.partitions() if "date" in p}):
        if day > through:
            res.skipped_open += 1
            continue
        m = dt.optimize.compact(partition_filters=[("date", "=", day)])
        added, removed = int(m.get("numFilesAdded", 0)), int(m.get("numFilesRemoved", 0))
        if removed:
            res.partitions += int(m.get("partitionsOptimized", 1))
            res.files_before += removed
            res.files_after += added
            res.details.append({"partition": f"date={day}", "files": removed, "files_after": added})
    return res


def compact_ticks(data_dir: Path, through: str) -> list[CompactionResult]:
    """Compact whichever tick stores the data dir holds (Parquet and/or Delta Lake)."""
    out = []
    if store.ticks_dir(data_dir).exists():
        out.append(compact_parquet(store.ticks_dir(data_dir), through))
    if (store.delta_dir(data_dir) / "_delta_log").exists():
        out.append(compact_delta(store.delta_dir(data_dir), through))
    return out


__all__ = ["COMPACTOR_LOCK", "CompactionBusy", "CompactionResult", "compact_delta", "compact_parquet", "compact_ticks"]
