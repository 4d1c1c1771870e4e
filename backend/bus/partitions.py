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

MARKET_DATA = ("md.ticks.raw", "md.ticks", "md.bars.1s", "md.bars.1m")
ORDER_PATH = (
    "orders.new",
    "risk.requests",
    "risk.decisions",
    "exec.orders",
    "exec.reports",
    "exec.reports.ptrc",
    "orders.events",
)
"""The order path, split by account: `[partitions] "orders.new" = N` splits every stream of it in
N (the OMS owns partition p of orders.new, risk.decisions and exec.reports together, and writes
partition p of risk.requests, exec.orders and orders.events in the same commit; risk answers p's
requests on p's decisions, the live gateway p's orders on p's reports): an account's orders, their
decisions, venue orders, reports and events all stay in one partition, in order, on one slot."""
PARTITIONABLE = MARKET_DATA + ORDER_PATH
OUTPUTS = {"md.ticks.raw": ("md.ticks", "md.bars.1s", "md.bars.1m")}
"""A partitioned stream's outputs: split as it is, or not at all (market data, by symbol: the
normalizer's outputs may be split alike, so that each partition's commit stays in one slot)."""
FOLLOWS = {s: ORDER_PATH[0] for s in ORDER_PATH[1:]}
"""Streams split exactly as another is (never configured on their own)."""
MAX_PARTITIONS = 256

_layout: dict[str, int] = {}


def use(counts: dict[str, int]) -> None:
    """This process's layout (the settings' `[partitions]`, set when they are loaded): what
    `count` answers, so every producer routes and every broadcast reader reads alike."""
    _layout.clear()
    _layout.update({s: n for s, n in counts.items() if n > 1})


def count(stream: str, counts: dict[str, int] | None = None) -> int:
    """How many partitions `stream` (a stream's base name) has in `counts` (default: this
    process's layout); a stream of the order path has orders.new's."""
    c = _layout if counts is None else counts
    return c.get(FOLLOWS.get(stream, stream), 1)


ROUTE_KEY = {s: "account" for s in ORDER_PATH}
"""What a message is routed by, per partitioned stream: market data by symbol (its producers
route batches themselves), the order path by account."""


def key_of(stream: str, msg: object) -> str | None:
    """The routing key of `msg` on `stream` (its account, its order's account), None if it has none."""
    if ROUTE_KEY.get(stream) != "account":
        return None
    acct = getattr(msg, "account", None)
    if acct is None:
        order = getattr(msg, "order", None)
        acct = getattr(order, "account", None)
    return acct or None


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


def key_tag(p: int, partitions: int, *, tagged: bool = False) -> str:
    """The hash tag a key of partition `p` carries ("" for the one partition on one Redis: the
    keys of an unsplit stream keep their plain names)."""
    return tag(p, partitions) if partitions > 1 or tagged else ""


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
