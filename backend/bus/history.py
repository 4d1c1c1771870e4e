"""Reading a stream's history: every entry in a time range, fetched in chunks."""

from __future__ import annotations

from typing import Any

from backend.bus.replies import Entry


async def xrange_between(
    r: Any, stream: str, start_ns: int = 0, end_ns: int = 0, *, chunk: int = 10_000
) -> list[Entry]:
    """The entries of `stream` added in [start_ns, end_ns) by their ids (millisecond resolution;
    0 leaves that end open), oldest first; of every partition when the process's layout splits
    it (backend/bus/partitions.py), merged by entry id."""
    from backend.bus import partitions

    n = partitions.count(stream)
    tagged = partitions.on_cluster(r) and partitions.partitionable(stream)
    if n > 1 or tagged:
        got: list[Entry] = []
        for name in partitions.names(stream, n, tagged=tagged):
            got += await _between(r, name, start_ns, end_ns, chunk)
        return sorted(got, key=lambda e: tuple(int(x) for x in e[0].split(b"-")))
    return await _between(r, stream, start_ns, end_ns, chunk)


async def _between(r: Any, stream: str, start_ns: int, end_ns: int, chunk: int) -> list[Entry]:
    lo = f"{start_ns // 1_000_000}" if start_ns else "-"
    hi = f"{(end_ns - 1) // 1_000_000}" if end_ns else "+"
    out: list[Entry] = []
    while True:
        part = await r.xrange(stream, lo, hi, count=chunk)
        out += part
        if len(part) < chunk:
            return out
        lo = "(" + part[-1][0].decode()
