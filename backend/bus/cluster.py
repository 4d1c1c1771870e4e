"""A local Redis Cluster from the same binaries as the embedded server: for development, the tests
and `tradeops bench scale` (`tradeops redis cluster up [--primaries 3 --replicas 1]`).

Each node is a redis-server (or valkey-server) in cluster mode on a loopback port, with its own
directory under `<data dir>/redis-cluster/<port>` (AOF on, the same `maxmemory` and `noeviction`
policy as the embedded server). The cluster is formed with the server's own commands: the 16384
slots split evenly over the primaries (CLUSTER ADDSLOTSRANGE), every node introduced to the first
(CLUSTER MEET), each replica attached to its primary (CLUSTER REPLICATE), then it waits until every
node says `cluster_state:ok`. Nothing here re-implements what the cluster does itself: failover
(a replica promoted when its primary is gone for `cluster-node-timeout`), redirection (MOVED),
gossip. The nodes are recorded in `cluster.json` so `down` and `status` find them.

A local cluster has no ACL users: it is a development tool on loopback (protected mode on);
`tradeops redis acl apply --url` sets the users on every primary of a real one.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from backend.bus import embedded, streams
from backend.errors import TradeopsError

SLOTS = 16384
STATE_FILE = "cluster.json"
NODE_TIMEOUT_MS = 2000
"""How long a primary may be silent before its replica takes over (the failover time's floor)."""


@dataclass
class Node:
    port: int
    pid: int
    role: str  # "primary" or "replica"
    id: str = ""
    primary_port: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class ClusterInfo:
    nodes: list[Node] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def primaries(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "primary"]


def cluster_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "redis-cluster"


def read_info(data_dir: Path) -> ClusterInfo | None:
    """The cluster recorded in `data_dir`, if any (alive or not)."""
    try:
        raw = json.loads((cluster_dir(data_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return ClusterInfo([Node(**n) for n in raw.get("nodes", [])])


def _write_info(data_dir: Path, info: ClusterInfo) -> None:
    path = cluster_dir(data_dir) / STATE_FILE
    path.write_text(json.dumps({"nodes": [asdict(n) for n in info.nodes]}, indent=1) + "\n")


def cluster_ports(n: int) -> list[int]:
    """`n` free loopback ports for cluster nodes: each at most 55535 with its cluster bus port
    (port + 10000) free too."""
    rng = random.Random()
    out: list[int] = []
    for _ in range(2000):
        port = rng.randrange(20000, 55535)
        if port in out or port + 10000 in out or port - 10000 in out:
            continue
        if embedded.port_is_free(port) and embedded.port_is_free(port + 10000):
            out.append(port)
            if len(out) == n:
                return out
    raise TradeopsError(f"found no {n} free ports (with their cluster bus ports) between 20000 and 55535")


def slot_ranges(primaries: int) -> list[tuple[int, int]]:
    """The 16384 slots split evenly (inclusive ranges), one range per primary."""
    if primaries < 1:
        raise TradeopsError("a cluster needs at least one primary (--primaries 1 or more)")
    step, extra = divmod(SLOTS, primaries)
    out, lo = [], 0
    for i in range(primaries):
        hi = lo + step + (i < extra) - 1
        out.append((lo, hi))
        lo = hi + 1
    return out


class LocalCluster:
    """Start, form and stop a local cluster for one data dir."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        primaries: int = 3,
        replicas: int = 1,
        maxmemory: str | int = streams.DEFAULT_MAXMEMORY,
        detach: bool = False,
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise TradeopsError(f"--primaries must be 1 or more and --replicas 0 or more (got {primaries}, {replicas})")
        self.data_dir = Path(data_dir)
        self.primaries, self.replicas = primaries, replicas
        self.maxmemory = streams.memory_bytes(maxmemory)
        self.detach = detach
        self.procs: list[subprocess.Popen[bytes]] = []
        self.info = ClusterInfo()

    # -- processes ---------------------------------------------------------------------------
    def _start_node(self, port: int) -> subprocess.Popen[bytes]:
        d = cluster_dir(self.data_dir) / str(port)
        d.mkdir(parents=True, exist_ok=True)
        for stale in ("nodes.conf",):  # a fresh cluster: no memory of an old one
            (d / stale).unlink(missing_ok=True)
        binary = embedded.server_binary()
        cmd = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(d),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--appendonly",
            "yes",
            "--appendfsync",
            embedded.appendfsync_policy(binary),
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
            "--logfile",
            str(d / "redis.log"),
            "--maxmemory",
            str(self.maxmemory),
            "--maxmemory-policy",
            streams.MAXMEMORY_POLICY,
        ]
        return subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=self.detach,
        )

    def start(self, timeout: float = 30.0) -> ClusterInfo:
        """Start every node, form the cluster and wait until it serves every slot."""
        held = read_info(self.data_dir)
        if held is not None and any(embedded._alive(n.pid) for n in held.nodes):
            raise embedded.DataDirHeld(
                f"data dir {self.data_dir} already has a running cluster "
                f"({', '.join(str(n.port) for n in held.nodes)}); `tradeops redis cluster down` stops it"
            )
        cluster_dir(self.data_dir).mkdir(parents=True, exist_ok=True)
        total = self.primaries * (1 + self.replicas)
        ports = cluster_ports(total)
        try:
            for i, port in enumerate(ports):
                proc = self._start_node(port)
                self.procs.append(proc)
                role = "primary" if i < self.primaries else "replica"
                self.info.nodes.append(Node(port=port, pid=proc.pid, role=role))
            _write_info(self.data_dir, self.info)
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        _write_info(self.data_dir, self.info)
        return self.info

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=1)

    def _wait_ping(self, node: Node, deadline: float) -> redis.Redis:
        proc = next((p for p in self.procs if p.pid == node.pid), None)
        while True:
            c = self._client(node.port)
            try:
                c.ping()
                return c
            except (redis.RedisError, OSError):
                c.close()
                if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                    log = cluster_dir(self.data_dir) / str(node.port) / "redis.log"
                    raise TradeopsError(
                        f"cluster node on port {node.port} did not answer PING: {embedded._tail(log)}"
                    ) from None
                time.sleep(0.02)

    def _form(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        clients = {n.port: self._wait_ping(n, deadline) for n in self.info.nodes}
        try:
            for n in self.info.nodes:
                n.id = clients[n.port].execute_command("CLUSTER", "MYID").decode()
            for n, (lo, hi) in zip(self.info.primaries, slot_ranges(self.primaries), strict=True):
                clients[n.port].execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            first = self.info.nodes[0]
            for n in self.info.nodes[1:]:
                clients[n.port].execute_command("CLUSTER", "MEET", "127.0.0.1", first.port)
            self._wait_known(clients, deadline)
            replicas = [n for n in self.info.nodes if n.role == "replica"]
            for i, n in enumerate(replicas):
                primary = self.info.primaries[i % self.primaries]
                n.primary_port = primary.port
                self._replicate(clients[n.port], primary.id, deadline)
            self._wait_ok(clients, deadline)
        finally:
            for c in clients.values():
                c.close()

    def _wait_known(self, clients: dict[int, redis.Redis], deadline: float) -> None:
        want = len(self.info.nodes)
        while True:
            known = [_info(c).get("cluster_known_nodes", 0) for c in clients.values()]
            if all(int(k) >= want for k in known):
                return
            if time.monotonic() > deadline:
                raise TradeopsError(f"cluster nodes did not meet: each knows {known} of {want}")
            time.sleep(0.05)

    def _replicate(self, c: redis.Redis, primary_id: str, deadline: float) -> None:
        while True:  # the primary must be known to the replica by id first (gossip)
            try:
                c.execute_command("CLUSTER", "REPLICATE", primary_id)
                return
            except redis.ResponseError as exc:
                if time.monotonic() > deadline:
                    raise TradeopsError(f"a replica could not follow its primary {primary_id}: {exc}") from None
                time.sleep(0.05)

    def _wait_ok(self, clients: dict[int, redis.Redis], deadline: float) -> None:
        while True:
            states = {p: _info(c).get("cluster_state") for p, c in clients.items()}
            if all(s == "ok" for s in states.values()):
                return
            if time.monotonic() > deadline:
                raise TradeopsError(f"the cluster did not come up: cluster_state per port {states}")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            embedded.stop_pid(p.pid, proc=p)
        self.procs.clear()
        stop_data_dir(self.data_dir)


def _info(c: redis.Redis) -> dict[str, str]:
    try:
        raw = c.execute_command("CLUSTER", "INFO")
    except (redis.RedisError, OSError):
        return {}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def stop_data_dir(data_dir: Path) -> ClusterInfo | None:
    """Stop every node recorded in `data_dir` (if any) and forget them."""
    info = read_info(data_dir)
    if info is None:
        return None
    for n in info.nodes:
        if embedded._alive(n.pid):
            embedded.stop_pid(n.pid)
    (cluster_dir(data_dir) / STATE_FILE).unlink(missing_ok=True)
    return info


def status(data_dir: Path) -> list[dict[str, object]]:
    """Each recorded node: port, role as the cluster sees it now, its slots' count, alive."""
    info = read_info(data_dir)
    if info is None:
        return []
    out: list[dict[str, object]] = []
    for n in info.nodes:
        row: dict[str, object] = {"port": n.port, "pid": n.pid, "alive": embedded._alive(n.pid), "role": "down"}
        try:
            c = redis.Redis(host="127.0.0.1", port=n.port, socket_timeout=1, socket_connect_timeout=0.5)
            try:
                role = c.execute_command("ROLE")[0]
                row["role"] = "primary" if role in (b"master", "master") else "replica"
                row["state"] = _info(c).get("cluster_state", "?")
            finally:
                c.close()
        except (redis.RedisError, OSError):
            pass
        out.append(row)
    return out
