"""Compacting a Parquet store's many small files into one per partition, with no row lost or
doubled and no reader ever seeing a half state. The tick store (backend.marketdata.compaction)
and the offline feature store (backend.features.store) use it.

Readers list and read a store under its shared lock (`store_lock`), and leave out the files a
compacted file replaces (`drop_replaced`: the compacted file's Parquet metadata names them).
Compaction, one at a time per store (`compactor_lock`), per partition directory:
1. reads the partition's live files, checks the row count, writes them sorted into
   `.compact-....part` beside them (a name no reader lists and no sink's recovery touches) with
   the names of the files it replaces in its metadata; fsync;
2. under the store's exclusive lock: renames the part into place as `compact-<span>.parquet` (the
   commit), fsyncs the directory, unlinks the files it replaces.
A crash before the rename leaves a `.part` the next run deletes; a crash after it leaves replaced
files that readers already skip and the next run deletes. A partition that gets late files after
compaction is compacted again (the compacted file is one of the inputs).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backend.errors import TradeopsError

LOCK_FILE = "_readers.lock"
COMPACTOR_LOCK = "_compactor.lock"
COMPACT_PREFIX = "compact-"
REPLACES_META = b"tradeops.replaces"
"""Parquet schema metadata of a compacted file: JSON list of the file names it replaces."""


class CompactionBusy(TradeopsError):
    """Another process is compacting this store."""


@dataclass
class CompactionResult:
    through: str
    """Partitions dated up to this day (inclusive) were considered."""
    format: str = "parquet"
    store: str = "ticks"
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


@contextmanager
def store_lock(root: Path, *, exclusive: bool = False) -> Iterator[None]:
    """Readers hold it shared while they list and read; compaction exclusive while it swaps."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:  # a read-only store: nobody can compact it either
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def compactor_lock(root: Path) -> Iterator[int]:
    """One compaction of a store at a time (CompactionBusy when another holds it); yields how many
    unfinished files of an interrupted run it removed."""
    fd = os.open(Path(root) / COMPACTOR_LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CompactionBusy(f"another compaction of {root} is running") from None
        parts = list(Path(root).rglob(".*.part"))
        for part in parts:
            part.unlink(missing_ok=True)
        yield len(parts)
    finally:
        os.close(fd)


def replaced_by(path: Path) -> list[str]:
    """The file names a compacted file replaces (empty for any other file)."""
    if not path.name.startswith(COMPACT_PREFIX):
        return []
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(REPLACES_META, b"[]"))


def drop_replaced(files: list[Path]) -> list[Path]:
    """`files` without those a compacted file among them replaces. Call it under `store_lock`."""
    gone = {f.parent / name for f in files for name in replaced_by(f)}
    return [f for f in files if f not in gone]


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact_dir(
    root: Path, part: Path, sort_by: list[str], span: Callable[[list[Path]], str], res: CompactionResult
) -> None:
    """Compact the Parquet files of one partition directory (see the module's protocol)."""
    files = sorted(part.glob("*.parquet"))
    gone = {name for f in files for name in replaced_by(f)}
    leftovers = [f for f in files if f.name in gone]
    live = [f for f in files if f.name not in gone]
    if len(live) < 2:
        if leftovers:
            with store_lock(root, exclusive=True):
                for f in leftovers:
                    f.unlink(missing_ok=True)
            res.cleaned += len(leftovers)
        return
    tables = [pq.read_table(f) for f in live]
    expected = sum(t.num_rows for t in tables)
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="default")
    table = table.take(pc.sort_indices(table, [(c, "ascending") for c in sort_by]))
    if table.num_rows != expected:  # pragma: no cover - concat never drops rows; be sure anyway
        raise RuntimeError(f"{part}: {table.num_rows} rows after concatenation, expected {expected}")
    base = f"{COMPACT_PREFIX}{span(live)}"
    name, n, taken = f"{base}.parquet", 1, {f.name for f in files}
    while name in taken:  # never overwrite an input (or anything else)
        n += 1
        name = f"{base}-r{n}.parquet"
    table = table.replace_schema_metadata(
        {REPLACES_META: json.dumps(sorted(f.name for f in live)).encode(), b"tradeops.rows": str(expected).encode()}
    )
    tmp = part / f".{name}.part"
    pq.write_table(table, tmp)
    _fsync(tmp)
    written = pq.read_metadata(tmp).num_rows
    if written != expected:  # pragma: no cover - a short write is caught here, not lost
        tmp.unlink()
        raise RuntimeError(f"{part}: wrote {written} rows, expected {expected}")
    with store_lock(root, exclusive=True):
        os.replace(tmp, part / name)  # the commit: readers now skip the files it replaces
        _fsync(part, directory=True)
        for f in live + leftovers:
            f.unlink(missing_ok=True)
    res.partitions += 1
    res.rows += expected
    res.files_before += len(live)
    res.files_after += 1
    res.cleaned += len(leftovers)
    res.details.append({"partition": str(part.relative_to(root)), "files": len(live), "rows": expected, "file": name})
