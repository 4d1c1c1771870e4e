"""Alt items on S3: a Delta Lake table (`s3://<bucket>/<prefix>/alt-items`, partitioned by date)
that sink-alt merges each batch into, keyed by the item's date and id. A merge is one conditional
commit: a batch delivered again after a crash (stored but not acked), an item published twice, or
two instances racing on the same items leave each item once; the last delivered version wins, as
in the search index."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from backend.messages import AltItem
from backend.s3 import S3

NAME = "alt-items"
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("ts_ns", pa.int64()),
        ("symbols", pa.list_(pa.string())),
        ("headline", pa.string()),
        ("body", pa.string()),
        ("sentiment", pa.float64()),
        ("source", pa.string()),
        ("stream_id", pa.string()),
        ("date", pa.string()),
    ]
)


def to_table(items: Sequence[tuple[str, AltItem]]) -> pa.Table:
    """Rows of `(stream id, item)`, one per item id (the last one of a batch wins)."""
    last: dict[str, dict[str, object]] = {}
    for sid, it in items:
        row: dict[str, object] = {f: getattr(it, f) for f in it.__struct_fields__}
        row["stream_id"] = sid
        row["date"] = time.strftime("%Y-%m-%d", time.gmtime(it.ts_ns / 1e9))
        last[it.id] = row
    return pa.Table.from_pylist(list(last.values()), schema=SCHEMA)


def write(loc: S3, items: Sequence[tuple[str, AltItem]]) -> int:
    """Merge `items` into the table (created by the first batch); the rows in the batch."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import TableNotFoundError

    table = to_table(items)
    if table.num_rows == 0:
        return 0
    uri, opts = loc.uri(NAME), loc.storage_options()
    try:
        dt = DeltaTable(uri, storage_options=opts)
    except TableNotFoundError:
        # the first batch creates the table; a racing creator makes this commit fail (conditional
        # put) and the batch is retried as a merge
        write_deltalake(uri, table, partition_by=["date"], mode="error", storage_options=opts)
        return table.num_rows
    (
        dt.merge(table, predicate="t.date = s.date AND t.id = s.id", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    return table.num_rows


def read(loc: S3) -> pd.DataFrame:
    """Every stored item (empty before the first batch)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(loc.uri(NAME), storage_options=loc.storage_options()).to_pandas()
    except TableNotFoundError:
        return SCHEMA.empty_table().to_pandas()


def count(loc: S3) -> int:
    """How many items the table holds (from its log's file statistics)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        dt = DeltaTable(loc.uri(NAME), storage_options=loc.storage_options())
    except TableNotFoundError:
        return 0
    return sum(n or 0 for n in pa.table(dt.get_add_actions(flatten=True)).column("num_records").to_pylist())
