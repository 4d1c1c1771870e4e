"""Partitioned streams: a high-rate stream split into P partitions, each its own stream.

A message goes to the partition of its key (market data: the symbol; orders and execution
reports: the account), chosen with a stable hash (CRC-32 of the key's UTF-8 bytes, the same in
every process, version and machine; never Python's `hash()`, which is salted per process), so
every message of one key is in one partition, in order.

Names: with P = 1 a stream keeps its name (`md.ticks.raw`: today's single stream, unchanged);
with P > 1 partition p of `md.ticks.raw` is `md.ticks.raw:{p3of4}` (partition 3 of 4: the name
says how many there are, so a stream's memory budget is shared out between its partitions, and a
consumer configured for another count never reads these by mistake). The `{p3of4}` is a Redis
Cluster hash tag: every key of partition 3 of 4 (its streams in and out, their dead-letter
streams, the consumer's lease and high-water marks) hashes to one slot, so the fenced commit and the OMS's
compare-and-set, which touch several of them in one script, run on one node, and a blocking read
is per partition (no CROSSSLOT).
"""

from __future__ import annotations

import re
import zlib

PARTITIONABLE = ("md.ticks.raw", "md.ticks", "md.bars.1s", "md.bars.1m")
"""The streams that may be split (so far market data, by symbol): md.ticks.raw's consumer (the
normalizer) owns its partitions; its outputs may be split alike (the same count), so that each
partition's commit stays in one Redis Cluster slot."""
OUTPUTS = {"md.ticks.raw": ("md.ticks", "md.bars.1s", "md.bars.1m")}
"""A partitioned stream's outputs: split as it is, or not at all."""
MAX_PARTITIONS = 256

_TAGGED = re.compile(r"^(?P<base>.+):\{p(?P<p>\d+)of(?P<n>\d+)\}$")


def partitionable(stream: str) -> bool:
    return stream in PARTITIONABLE


def partition_of(key: str | bytes, partitions: int) -> int:
    """The partition (0 .. partitions-1) of `key`: CRC-32 of its bytes, modulo the count."""
    if partitions < 1:
        raise ValueError(f"a stream has 1 or more partitions, not {partitions}")
    if partitions == 1:
        return 0
    data = key.encode() if isinstance(key, str) else key
    return zlib.crc32(data) % partitions


def tag(p: int, partitions: int) -> str:
    """The hash tag of partition `p` of `partitions` (one Redis Cluster slot for all its keys)."""
    return f"{{p{p}of{partitions}}}"


def name(stream: str, p: int, partitions: int, *, tagged: bool = False) -> str:
    """The stream (or key) of partition `p` of `stream`: the name itself when not partitioned,
    unless `tagged` (on a Redis Cluster, where even one partition's keys must share a slot)."""
    if partitions == 1 and not tagged:
        return stream
    if not 0 <= p < partitions:
        raise ValueError(f"partition {p} out of range for {partitions} partitions of {stream}")
    return f"{stream}:{tag(p, partitions)}"


def names(stream: str, partitions: int, *, tagged: bool = False) -> list[str]:
    """Every partition's stream of `stream`, in partition order."""
    return [name(stream, p, partitions, tagged=tagged) for p in range(partitions)]


def route(stream: str, key: str | bytes, partitions: int, *, tagged: bool = False) -> str:
    """The partition stream a message of `key` goes to."""
    return name(stream, partition_of(key, partitions), partitions, tagged=tagged)


def on_cluster(r: object) -> bool:
    """`r` (a redis-py client) talks to a Redis Cluster: partition names are always tagged."""
    return hasattr(r, "nodes_manager")


def split(partition_stream: str) -> tuple[str, int, int]:
    """(`md.ticks.raw`, 3, 4) for `md.ticks.raw:{p3of4}`; (the name, 0, 1) for an unpartitioned one."""
    m = _TAGGED.match(partition_stream)
    if m is None:
        return partition_stream, 0, 1
    return m["base"], int(m["p"]), int(m["n"])
