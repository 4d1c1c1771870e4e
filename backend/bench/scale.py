"""`tradeops bench scale`: the normalizer with 1, 2 and 4 partitions of md.ticks.raw and as many
instances (processes), each size on a fresh Redis: throughput (a backlog published at once and
drained: from its first XADD until every partition's group has nothing left), the
P99 of a paced flow (a tick's receive time to its clean batch's entry in md.ticks), CPU seconds
per million ticks (the instances and Redis together: on a 2-core machine throughput cannot grow
with instances, so this is the cost of partitioning), and per symbol `lost`, `duplicated` and
`out_of_order` (all must be 0). `--kill` also SIGKILLs one instance during the paced flow: its
partitions go to the others when its leases lapse; the recovery time and the per-key counts say
what that cost. Then the same for the order path (backend/bench/scale_oms.py): orders.new and
the streams after it split by account, k instances each of oms, risk and live-gateway."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import redis

from backend.bench.harness import BenchStack, wait_until
from backend.bus import codec, partitions, replies, streams
from backend.bus.publish import queue_fields
from backend.errors import TradeopsError
from backend.marketdata.raw import RawBatchBuilder
from backend.marketdata.symbols import DEFAULT_SYMBOLS, START_PRICES
from backend.marketdata.ticks import columns
from backend.messages import TickBatch

NAME = "scale"
HELP = "the normalizer and the OMS on 1, 2, 4 partitions and instances: throughput, P99, CPU per million, per-key order"
DEFAULT_SECONDS = 3.0
CLK = os.sysconf("SC_CLK_TCK")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="1,2,4", help="partitions = instances at each size (default 1,2,4)")
    p.add_argument("--ticks", type=int, default=400_000, help="the backlog drained at each size (default 400000)")
    p.add_argument("--rate", type=int, default=20_000, help="the paced flow's ticks/s (default 20000)")
    p.add_argument("--batch", type=int, default=1000, help="ticks per raw batch (default 1000)")
    p.add_argument("--orders", type=int, default=20_000, help="the order backlog drained at each size (default 20000)")
    p.add_argument("--order-rate", type=int, default=1_000, help="the paced orders/s (default 1000)")
    p.add_argument("--only", choices=("normalizer", "oms"), default=None, help="one of the two (default: both)")
    p.add_argument("--kill", action="store_true", help="SIGKILL one instance during the paced flow (sizes > 1)")
    p.add_argument(
        "--cluster",
        action="store_true",
        help="also on a local Redis Cluster (3 primaries, 1 replica each): the same sizes, then a primary "
        "SIGKILLed under the paced flow (its replica takes over)",
    )


class Feed:
    """Raw batches per partition over the default symbols, trade ids rising per symbol from 1."""

    def __init__(self, n: int, batch: int, tagged: bool = False) -> None:
        self.n, self.batch, self.tagged = n, batch, tagged
        self.rng = np.random.default_rng(11)
        self.next_id = dict.fromkeys(DEFAULT_SYMBOLS, 1)
        self.price = {s: START_PRICES[s] for s in DEFAULT_SYMBOLS}
        self.by_part: dict[int, list[str]] = {}
        for s in DEFAULT_SYMBOLS:
            self.by_part.setdefault(partitions.partition_of(s, n), []).append(s)

    def batches(self, ticks: int, ts_ns: int) -> list[tuple[str, bytes]]:
        """About `ticks` ticks as (partition stream, encoded raw batch), stamped `ts_ns`."""
        out = []
        per_part = max(1, ticks // len(self.by_part))
        for p, syms in sorted(self.by_part.items()):
            stream = partitions.name(streams.MD_TICKS_RAW, p, self.n, tagged=self.tagged)
            for start in range(0, per_part, self.batch):
                b = RawBatchBuilder("bench", stream)
                for i in range(min(self.batch, per_part - start)):
                    s = syms[i % len(syms)]
                    tid = self.next_id[s]
                    self.next_id[s] = tid + 1
                    self.price[s] *= 1 + self.rng.normal(0, 1e-5)
                    b.add(s, tid, f"{self.price[s]:.4f}", "0.50000", ts_ns, ts_ns, bool(i & 1), ts_ns)
                out.append((stream, codec.encode(b.build())))
        return out

    @property
    def sent(self) -> int:
        return sum(v - 1 for v in self.next_id.values())


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / CLK


def _publish(stack: BenchStack, items: list[tuple[str, bytes]]) -> None:
    """XADD the batches; while a cluster fails over, each one is tried again until it is taken
    (as a gateway would; a batch taken twice is a repeat the normalizer drops, not a duplicate)."""
    r = stack.r
    assert r is not None
    for stream, payload in items:
        for attempt in range(200):
            try:
                queue_fields(r, stream, {codec.FIELD: payload})
                break
            except (redis.RedisError, OSError):
                stack.retries += 1
                time.sleep(min(0.5, 0.02 * 2**attempt))
        else:
            raise TradeopsError(f"could not publish to {stream} for a minute")


def kill_primary_of(stack: BenchStack, cluster: Any, key: str) -> dict[str, Any]:
    """SIGKILL the primary serving `key`'s slot; its replica is promoted by the cluster."""
    r = stack.r
    assert r is not None
    node = r.get_node_from_key(key)  # type: ignore[attr-defined]
    victim = next(n for n in cluster.nodes if n.port == node.port)
    os.kill(victim.pid, signal.SIGKILL)
    return {"primary": f"127.0.0.1:{victim.port}", "pid": victim.pid, "slot_of": key}


def _drained(stack: BenchStack, n: int, tagged: bool) -> bool:
    r = stack.r
    assert r is not None
    for stream in partitions.names(streams.MD_TICKS_RAW, n, tagged=tagged):
        groups = [g for g in r.xinfo_groups(stream) if g["name"] in (b"normalizer", "normalizer")]
        if not groups or groups[0]["lag"] or groups[0]["pending"]:
            return False
    return True


def _owned(stack: BenchStack, n: int, instances: list[str]) -> bool:
    """Every partition owned, each instance holding its share (the leases settled)."""
    r = stack.r
    assert r is not None
    from backend.bus.leases import lease_key

    owners = [r.get(lease_key("normalizer", p, n)) for p in range(n)]
    if any(o is None for o in owners):
        return False
    return {replies.text(o).split("/")[0] for o in owners if o is not None} == set(instances)


def _check(stack: BenchStack, feed: Feed, paced_from_ms: int) -> dict[str, Any]:
    """Per symbol: what md.ticks holds against what was sent (every id 1..n once, in order); and
    the latency of the paced flow's ticks (published from `paced_from_ms` on)."""
    r = stack.r
    assert r is not None
    got: dict[str, list[np.ndarray]] = {}
    lat: list[np.ndarray] = []
    out = partitions.names(streams.MD_TICKS, feed.n, tagged=True) if feed.tagged else [streams.MD_TICKS]
    entries = [e for stream in out for e in replies.entries(r.xrange(stream))]
    for eid, f in sorted(entries, key=lambda e: tuple(int(x) for x in e[0].split(b"-"))):
        batch = codec.decode(codec.payload(f), TickBatch)
        c = columns(batch)
        ms = int(eid.split(b"-")[0])
        if ms >= paced_from_ms:
            lat.append(ms - c["recv_ns"] / 1e6)
        for k, s in enumerate(batch.symbols):
            got.setdefault(s, []).append(c["trade_id"][c["sym"] == k])
    lost = dup = ooo = 0
    for s, nxt in feed.next_id.items():
        ids = np.concatenate(got.get(s, [np.array([], np.int64)]))
        uniq = np.unique(ids)
        lost += (nxt - 1) - len(uniq[(uniq >= 1) & (uniq < nxt)])
        dup += len(ids) - len(uniq)
        ooo += int(np.sum(np.diff(ids) < 0))
    return {"lost": int(lost), "duplicated": int(dup), "out_of_order": int(ooo), "latency_ms": lat}


def _size(args: argparse.Namespace, k: int, cluster: Any = None, kill_primary: bool = False) -> dict[str, Any]:
    url = None if cluster is None else f"redis+cluster://127.0.0.1:{cluster.nodes[0].port}/0"
    tagged = cluster is not None
    with BenchStack(redis_url=url) as stack:
        cfg = stack.data_dir / "scale.toml"
        outputs = "".join(f'"{s}" = {k}\n' for s in partitions.OUTPUTS[streams.MD_TICKS_RAW]) if tagged else ""
        cfg.write_text(f'[partitions]\n"{streams.MD_TICKS_RAW}" = {k}\n{outputs}')
        instances = [f"normalizer-{j}" for j in range(k)]
        procs = [stack.start("normalizer", instance=i, config=cfg) for i in instances]
        if k > 1 or tagged:
            wait_until(lambda: _owned(stack, k, instances), 30, "every partition owned", NAME)
        if cluster is not None:
            server_pids = [n.pid for n in cluster.nodes]
        else:
            server_pids = [stack.server.proc.pid] if stack.server and stack.server.proc else []
        pids = [p.pid for p in procs]
        feed = Feed(k, args.batch, tagged)

        # 1. a backlog, drained: throughput and CPU per million ticks
        backlog = feed.batches(args.ticks, time.time_ns())
        cpu0, redis0 = cpu_seconds(pids), cpu_seconds(server_pids)
        t0 = time.monotonic()
        _publish(stack, backlog)
        wait_until(lambda: _drained(stack, k, tagged), 120 + args.ticks / 20_000, "the backlog drained", NAME)
        took = time.monotonic() - t0
        drained = feed.sent
        cpu = cpu_seconds(pids) - cpu0
        redis_cpu = cpu_seconds(server_pids) - redis0
        assert stack.r is not None
        paced_from_ms = int(time.time() * 1000)

        # 2. a paced flow: latency (and, with --kill, an instance killed under it)
        per_tick = 1 / max(1, args.rate)
        chunk = max(args.batch, args.rate // 20)  # 20 publishes a second
        end = time.monotonic() + args.seconds
        killed: dict[str, Any] = {}
        sent_at = began = time.monotonic()
        while time.monotonic() < end:
            _publish(stack, feed.batches(chunk, time.time_ns()))
            half = time.monotonic() > end - args.seconds / 2
            if args.kill and k > 1 and not killed and half and not kill_primary:
                os.kill(pids[-1], signal.SIGKILL)
                killed = {"instance": instances[-1], "at_s": round(time.monotonic() - began, 2)}
                kill_t = time.monotonic()
            elif kill_primary and not killed and half:
                killed = kill_primary_of(stack, cluster, partitions.name(streams.MD_TICKS_RAW, 0, k, tagged=True))
                killed["at_s"] = round(time.monotonic() - began, 2)
                kill_t = time.monotonic()
            sent_at += chunk * per_tick
            time.sleep(max(0.0, sent_at - time.monotonic()))
        wait_until(lambda: _drained(stack, k, tagged), 60, "the paced flow drained", NAME)
        if killed:
            killed["recovered_s"] = round(time.monotonic() - kill_t, 2)
            if not kill_primary:
                stack.procs.pop(instances[-1], None)
            killed["publish_retries"] = stack.retries
        result = _check(stack, feed, paced_from_ms)
        lat = np.concatenate(result.pop("latency_ms") or [np.array([0.0])])
        return figures("ticks", k, drained, feed.sent, took, args.rate, lat, cpu, redis_cpu, result, killed)


def figures(
    unit: str,
    k: int,
    drained: int,
    checked: int,
    took: float,
    rate: float,
    lat: np.ndarray,
    cpu: float,
    redis_cpu: float,
    counts: dict[str, Any],
    killed: dict[str, Any],
) -> dict[str, Any]:
    """One size's figures (`unit`: ticks or orders): the backlog's rate, the paced flow's
    percentiles, CPU per million, the per-key counts, and what a kill cost."""
    return {
        "partitions": k,
        "instances": k,
        f"backlog_{unit}": drained,
        f"{unit}_checked": checked,
        f"{unit}_per_s": round(drained / took),
        "paced_rate": rate,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "cpu_s_per_million": round(cpu / drained * 1e6, 2),
        "redis_cpu_s_per_million": round(redis_cpu / drained * 1e6, 2),
        **counts,
        **({"killed": killed} if killed else {}),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        raise TradeopsError(f"--sizes takes counts like 1,2,4, not {args.sizes!r}") from None
    if not sizes or any(not 1 <= k <= partitions.MAX_PARTITIONS for k in sizes):
        raise TradeopsError(f"--sizes: counts from 1 to {partitions.MAX_PARTITIONS}, not {args.sizes!r}")
    if args.ticks < args.batch or args.rate <= 0:
        raise TradeopsError("--ticks must be at least --batch, and --rate positive")
    from backend.bench import scale_oms

    only = getattr(args, "only", None)
    orders = getattr(args, "orders", 0)
    if only != "normalizer" and (orders < 1 or getattr(args, "order_rate", 0) < 1):
        raise TradeopsError("--orders and --order-rate must be positive")
    norm, oms = only != "oms", only != "normalizer" and orders > 0
    out: dict[str, Any] = {}
    single = getattr(args, "single", True)  # the figures on the single Redis too (a test of the cluster skips them)
    if norm and single:
        out["single"] = [_size(args, k) for k in sizes]
    if oms and single:
        out["oms_single"] = [scale_oms.size(args, k) for k in sizes]
    if args.cluster:
        # each half on a cluster of its own: a failover leaves the promoted replica without one
        if norm:
            with _local_cluster() as info:
                out["cluster"] = []
                for k in sizes:
                    _flush(info)
                    out["cluster"].append(_size(args, k, info))
                _flush(info)
                out["cluster_failover"] = _size(args, max(sizes), info, kill_primary=True)
        if oms:
            with _local_cluster() as info:
                out["oms_cluster"] = []
                for k in sizes:
                    _flush(info)
                    out["oms_cluster"].append(scale_oms.size(args, k, info))
                _flush(info)
                out["oms_cluster_failover"] = scale_oms.size(args, max(sizes), info, kill_primary=True)
    return out


@contextlib.contextmanager
def _local_cluster() -> Iterator[Any]:
    """A local Redis Cluster (3 primaries, 1 replica each) from the embedded server's binary."""
    from backend.bus.cluster import LocalCluster

    with tempfile.TemporaryDirectory(prefix="tradeops-scale-cluster-") as d:
        cluster = LocalCluster(d, primaries=3, replicas=1)
        info = cluster.start()
        try:
            yield info
        finally:
            cluster.stop()


def _flush(info: Any) -> None:
    """Empty every primary (a fresh bus for the next size)."""
    for n in info.nodes:
        c = redis.Redis(host="127.0.0.1", port=n.port, socket_timeout=5)
        try:
            if c.execute_command("ROLE")[0] in (b"master", "master"):
                c.flushall()
        except (redis.RedisError, OSError):
            pass
        finally:
            c.close()
