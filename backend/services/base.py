"""The one Service base that all 18 services use.

A service declares its `name`, a typed `Config` (checked against `[services.<name>]`), what it
does on the bus (`reads`, `writes`, `keys`, `scripts`, `commands`: backend/bus/access.py; its Redis
user's ACL rules are generated from them, backend/bus/acl.py), and in `setup()` registers what
it consumes (`self.consume(stream, handler, decode=T)`: the handler gets `[(entry id, T)]`, and
what does not decode is dead-lettered for it), the broadcasts it follows
(`self.listen({stream: cursor}, handler, decode=T)`: every instance reads every entry), and its
periodic tasks (`self.every(seconds, fn)`). It publishes through `backend.bus.publish`. The base
owns the rest: the Redis connection, the consumer-group workers (group = service name, consumer =
instance id), the broadcast readers, a heartbeat every second into `ops.health`
and the hash `health:<service>:<instance>` (with a TTL), structured logs, and a clean stop on
SIGTERM/SIGINT: stop reading, finish the batch in hand, ack, final heartbeat, exit.

Redis going away (a crash, a restart reading its AOF) is ridden through: the workers and the
heartbeat retry with backoff, and a periodic task that finds Redis away skips that round. A task
of the service's own (`run_extra`) that fails on it fails the service, which exits non-zero and is
restarted by its supervisor.

A service that is alive but cannot make progress (its store's disk is full, say) calls
`self.degrade(reason)`: its heartbeat says `degraded` with the reason at once (ps, the console's
health tiles, `tradeops health`, alerting and the gates' health checks all show it), and
`self.recover()` when it can again, which makes it `running`. It keeps retrying by itself.

What setup registers must be declared: consuming a stream not in `reads` (group=True), or
following one not in `reads`, is refused at setup (UndeclaredAccess), so the declarations, and
the ACL rules made from them, cannot drift from what the service does. A command Redis refuses
(NOPERM: the service's user may not do it) is a deployment bug, not a transient error: the
service fails at once, its reason saying so (never retried, never a dead letter).

Run as a process (`run(serve_metrics=True)`, what `python -m backend.services NAME` does), an
instance serves Prometheus metrics on its port (backend/metrics.py): what the base counts, read at
scrape time, and the domain metrics the class declares in `exported`; the heartbeat says where
(`metrics_addr`), and the supervisor's scrape config follows it (backend/runtime/scrape.py).

Every consumer takes over at once the pending entries of another instance of the same service
whose heartbeat says it is gone (`backend.health.gone`); entries of a consumer that is alive but
stuck are reclaimed after `claim_idle_ms` (15 s by default, `claim_idle_ms = N` in any
`[services.<name>]` section sets it for that service).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, RedisError

from backend.bus import codec, outage, partitions, replies, streams
from backend.bus.access import Access, Keys, Reads, Scripts, Trims, Writes, base, denied, leased
from backend.bus.broadcast import Broadcast, Item
from backend.bus.connection import Login, connect_async, looked_for
from backend.bus.entries import Skips
from backend.bus.fastconn import Arg, FastRedis, refresh_slots
from backend.bus.outage import redis_away
from backend.bus.partitioned import Partitioned
from backend.bus.publish import queue
from backend.bus.worker import Handler, StreamWorker
from backend.errors import ConfigError, TradeopsError
from backend.health import gone, pid_namespace
from backend.latency import LatencyRecorder
from backend.messages import Heartbeat
from backend.metrics import Exported, MetricsServer, configured_port, default_port, registry_for
from backend.secrets import Secret
from backend.settings import Settings, convert_section

_PIDNS = pid_namespace()
RATE_WINDOW_S = 5.0  # the heartbeat's rate: items per second averaged over this many seconds


class NoConfig(msgspec.Struct, forbid_unknown_fields=True):
    """A service without settings of its own."""


class UndeclaredAccess(TradeopsError):
    """A service registered a read its class does not declare (see Service.reads)."""


BASE_KEYS = ("claim_idle_ms", "metrics_port")
"""Keys of a `[services.<name>]` section the Service base reads itself (not its Config)."""


class AccessDenied(TradeopsError):
    """Redis refused a command to the service's user (NOPERM): a deployment bug."""


class Rate:
    """Items per second, averaged over a window: (when, count) samples, the oldest kept being the
    last one at least a window old."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.value = 0.0

    def update(self, now: float, count: int, window: float) -> float:
        samples = self.samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= window:
            samples.popleft()
        t0, c0 = samples[0]
        if now - t0 > 0.2:
            self.value = (count - c0) / (now - t0)
        return self.value


class Service:
    name: ClassVar[str] = "service"
    Config: ClassVar[type[msgspec.Struct]] = NoConfig
    heartbeat_s: ClassVar[float] = 1.0
    claim_idle_ms: int = 15_000
    """Default for entries left pending by a live consumer; a gone consumer's are taken at once."""
    # what the service does on the bus (backend/bus/access.py), its heartbeat aside (base()):
    reads: ClassVar[tuple[Reads, ...]] = ()
    """Streams consumed in its group (`Reads(s, group=True)`) or read whole (`Reads(s)`)."""
    writes: ClassVar[tuple[Writes, ...]] = ()
    """Streams it appends to."""
    keys: ClassVar[tuple[Keys, ...]] = ()
    """Keys it reads (`Keys(k)`) or reads and changes (`Keys(k, write=True)`)."""
    scripts: ClassVar[tuple[Scripts, ...]] = ()
    """The keys its server-side scripts name."""
    commands: ClassVar[tuple[str, ...]] = ()
    """Keyless commands beyond the connection's (info, scan ...)."""
    trims: ClassVar[tuple[Trims, ...]] = ()
    """Streams it trims (XTRIM)."""
    secrets: ClassVar[tuple[Secret, ...]] = ()
    """The secrets it reads beside its Redis password (backend/secrets.py): the runtimes mount each
    as a file (a container's /run/secrets), never an environment variable."""
    exported: ClassVar[tuple[Exported, ...]] = ()
    """Domain metrics on its /metrics endpoint beside the base's (backend/metrics.py): keys of its
    heartbeat's `metrics()` dict, read at scrape time."""

    @classmethod
    def access(cls) -> Access:
        """Everything the service does on the bus: its declarations and its heartbeat."""
        return (
            base(cls.name)
            + leased(cls.name, cls.reads)
            + Access(
                reads=cls.reads,
                writes=cls.writes,
                keys=cls.keys,
                scripts=cls.scripts,
                commands=cls.commands,
                trims=cls.trims,
            )
        )

    def __init__(
        self,
        *,
        redis_url: str,
        settings: Settings | None = None,
        instance: str | None = None,
        environment: str | None = None,
        config: dict[str, Any] | None = None,
        login: Login | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.redis_url = redis_url
        self.login = login
        """Its Redis user and password (None: log in as nobody, a server without ACLs)."""
        self.declared = self.access()
        self.environment = environment or self.settings.environment
        self.instance = instance or f"{self.name}-{self.environment}-{os.getpid()}"
        raw = self.settings.service_section(self.name)
        raw.update(config or {})
        self.claim_idle_ms = _positive_int(self.name, "claim_idle_ms", raw.pop("claim_idle_ms", self.claim_idle_ms))
        port = configured_port(self.name, raw.pop("metrics_port", None))
        self.metrics_port = default_port(self.name, self.environment) if port is None else port
        """Where `run(serve_metrics=True)` serves /metrics (0: any free port; backend/metrics.py)."""
        self.metrics_server: MetricsServer | None = None
        self.cfg: Any = convert_section(self.name, raw, self.Config)
        self.log = logging.getLogger(f"tradeops.{self.name}")
        self.r: aioredis.Redis = None  # type: ignore[assignment]  # set in run()
        self.fast: FastRedis = None  # type: ignore[assignment]  # set in run(): the hot-path writes
        self._fast_at: dict[str, FastRedis] = {}  # on a cluster: a fast connection per primary
        self.workers: list[StreamWorker] = []
        self.partitioned: list[Partitioned] = []
        self.readers: list[Broadcast] = []
        self.skips = Skips()
        """Undecodable entries skipped outside the consumer groups (broadcasts, the service's own
        reads: decode_entries(..., skips=self.skips)), per stream; the heartbeat's
        `skipped_undecodable` is their total."""
        self._listens: list[tuple[Broadcast, Callable[[list[Item]], Awaitable[None]]]] = []
        self.latency: dict[str, LatencyRecorder] = {}
        self.state = "starting"
        self.reason = ""  # why the state is what it is (degraded: what stops progress)
        self.started_ns = time.time_ns()
        self._periodic: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # beat now (the state changed), not at the next second
        self._rate = Rate()  # the heartbeat's rate, averaged over rate_window_s()
        self.stream_stats: dict[str, tuple[int, int, int]] = {}
        """Per consumed stream, as the last heartbeat measured them: (lag, pending, dead letters)."""
        self.beat_at = 0.0
        """When the last heartbeat was written (monotonic; 0: none yet)."""

    # -- what subclasses use ---------------------------------------------------------------------
    async def setup(self) -> None:
        """Register consumers and periodic tasks; open stores. Called after connecting."""

    async def teardown(self) -> None:
        """Flush and close what setup opened. Called after the workers finished."""

    def consume(
        self, stream: str, handler: Handler, *, decode: Any = None, what: str | None = None, **opts: Any
    ) -> StreamWorker:
        """Consume `stream` in this service's consumer group, one handler call per batch.

        With `decode=T` (a wire type or a union of them) the handler gets `[(entry id, T)]`; an
        entry that does not decode goes to `dlq.<stream>` ("undecodable <what>: <error> (expected
        T)", `what` defaulting to T's name in words). A handler rejects an entry it can never
        handle with `worker.reject(entry id, reason)` (or raises `Poison`). `opts`: StreamWorker's
        (count, block_ms, auto_ack, claim_idle_ms, group...)."""
        group = self._consumer_opts(stream, opts)
        worker = StreamWorker(self.r, stream, group, self.instance, handler, decode=decode, what=what, **opts)
        self.workers.append(worker)
        return worker

    def _consumer_opts(self, stream: str, opts: dict[str, Any]) -> str:
        """Check that `stream` is declared as consumed; fill the worker options' defaults; the group."""
        if not self.declared.may_consume(stream):
            raise UndeclaredAccess(
                f"{self.name} consumes {stream} but does not declare it: add "
                f"Reads({stream!r}, group=True) to {type(self).__name__}.reads"
            )
        opts.setdefault("claim_idle_ms", self.claim_idle_ms)
        opts.setdefault("alive", self.consumer_alive)
        return str(opts.pop("group", self.name))

    def consume_partitions(
        self,
        stream: str,
        handler_for: Callable[[int], Handler],
        *,
        decode: Any = None,
        what: str | None = None,
        on_acquire: Callable[[int, int], Any] | None = None,
        on_release: Callable[[int], Any] | None = None,
        also: dict[str, tuple[Callable[[int], Handler], Any]] | None = None,
        **opts: Any,
    ) -> Partitioned:
        """Consume `stream` split into the partitions the settings give it (`[partitions]`; 1: the
        stream itself, as `consume` does), one owner per partition among the live instances of
        this service (backend/bus/partitioned.py). `handler_for(p)` is partition p's handler;
        `on_acquire(p, token)` runs when p becomes this instance's (before its worker reads),
        `on_release(p)` after its worker stopped when p goes to another. `also`: more streams
        owned with it partition by partition, {stream: (handler_for, decode)} (split alike: the
        order path), one lease for all."""
        group = self._consumer_opts(stream, opts)
        kinds = {stream: (handler_for, decode, what)}
        for other, (h, d) in (also or {}).items():
            self._consumer_opts(other, {})
            kinds[other] = (h, d, None)

        def make_worker(p: int, name: str) -> StreamWorker:
            h, d, w = kinds[partitions.split(name)[0]]
            return StreamWorker(self.r, name, group, self.instance, h(p), decode=d, what=w, **opts)

        part = Partitioned(
            self.r,
            stream,
            self.settings.partition_count(stream),
            group,
            self.instance,
            make_worker,
            on_acquire=on_acquire,
            on_release=on_release,
            also=tuple(also or ()),
        )
        self.partitioned.append(part)
        return part

    def names(self, stream: str) -> list[str]:
        """The streams `stream` is, as the settings split it (its partitions; on a Redis Cluster
        a partitionable stream is tagged even whole): what a read of all of it reads."""
        n = self.settings.partition_count(stream)
        tagged = partitions.on_cluster(self.r) and partitions.partitionable(stream)
        return partitions.names(stream, n, tagged=tagged)

    def whole(self, stream: str) -> str:
        """The one stream that holds all of `stream` (itself; on a Redis Cluster its one tagged
        partition), for a consumer that reads it whole in its group; a split one is refused with
        what to change."""
        got = self.names(stream)
        if len(got) > 1:
            raise ConfigError(
                f"{self.name} reads {stream} whole in one consumer group, but [partitions] splits it in {len(got)}: "
                f"leave {stream} unsplit (its source may still be split: each partition then writes the one {stream})"
            )
        return got[0]

    async def newest(self, stream: str, count: int) -> list[tuple[bytes, Any]]:
        """The newest `count` entries of each of `stream`'s partitions, oldest first (by entry id)."""
        got = [e for name in self.names(stream) for e in replies.entries(await self.r.xrevrange(name, count=count))]
        return sorted(got, key=lambda e: tuple(int(x) for x in e[0].split(b"-")))

    def broadcast(self, cursors: dict[str, str], *, decode: Any = None, **opts: Any) -> Broadcast:
        """A broadcast reader of `cursors` ({stream: "$" | "0" | an entry id}) on this service's
        Redis, closed when the service stops; `read()` it yourself (e.g. in a periodic task).
        `decode`: a type, or {stream: type}; `opts`: Broadcast's (count, block_ms, min_interval_s)."""
        for stream in cursors:
            if not self.declared.may_follow(stream):
                raise UndeclaredAccess(
                    f"{self.name} reads {stream} whole but does not declare it: add "
                    f"Reads({stream!r}) to {type(self).__name__}.reads"
                )
        reader = Broadcast(self.r, cursors, decode=decode, skips=self.skips, **opts)
        self.readers.append(reader)
        return reader

    def listen(
        self,
        cursors: dict[str, str],
        handler: Callable[[list[Item]], Awaitable[None]],
        *,
        decode: Any = None,
        **opts: Any,
    ) -> Broadcast:
        """Read `cursors` as broadcasts while the service runs: `handler([(stream, id, message)])`
        for every read that brought something (undecodable entries skipped and counted in the
        reader's `skipped`)."""
        reader = self.broadcast(cursors, decode=decode, **opts)
        self._listens.append((reader, handler))
        return reader

    async def consumer_alive(self, consumer: str) -> bool:
        """Whether another consumer in this service's groups (an instance id) still works."""
        key = streams.HEALTH_KEY.format(service=self.name, instance=consumer)
        state, pid, host, pidns = (
            None if v is None else replies.blob(v) for v in await self.r.hmget(key, "state", "pid", "host", "pidns")
        )
        return not gone(state, pid, host, pidns)

    async def call(self, *args: Arg) -> object:
        """One raw command on the fast connection (e.g. an EVALSHA), its raw reply."""
        if self.fast.closed:
            self.fast = await FastRedis.like(self.r)
        return await self.fast.call(*args)

    async def call_at(self, key: str, *args: Arg) -> object:
        """`call` on the server that holds `key`: on a Redis Cluster the primary of its slot (a
        partition's fenced commit names only keys of that slot), else the one fast connection.
        A lost connection or a MOVED drops it and learns the slots again before raising (the
        worker retries the batch)."""
        if not hasattr(self.r, "nodes_manager"):
            return await self.call(*args)
        return await self._at(key, lambda conn: conn.call(*args))

    async def send_at(self, key: str, commands: list[tuple[Arg, ...]]) -> list[object]:
        """`send` to the server that holds `key` (every command naming keys of its slot)."""
        if not hasattr(self.r, "nodes_manager"):
            return await self.send(commands)
        return await self._at(key, lambda conn: conn.pipeline(commands))

    async def fast_at(self, key: str) -> FastRedis:
        """The fast connection to the server that holds `key` (the one fast connection off a cluster)."""
        if not hasattr(self.r, "nodes_manager"):
            if self.fast.closed:
                self.fast = await FastRedis.like(self.r)
            return self.fast
        node = self.r.get_node_from_key(key).name  # type: ignore[attr-defined]  # a RedisCluster
        conn = self._fast_at.get(node)
        if conn is None or conn.closed:
            conn = self._fast_at[node] = await FastRedis.like(self.r, key)
        return conn

    async def _at(self, key: str, op: Callable[[FastRedis], Awaitable[Any]]) -> Any:
        conn = await self.fast_at(key)
        try:
            return await op(conn)
        except outage.CAUGHT as exc:
            if redis_away(exc):
                await conn.aclose()
                node = self.r.get_node_from_key(key).name  # type: ignore[attr-defined]
                self._fast_at.pop(node, None)
                with contextlib.suppress(*outage.CAUGHT):
                    await refresh_slots(self.r)
            raise

    async def send(self, commands: list[tuple[Arg, ...]]) -> list[object]:
        """Send raw commands (e.g. `publish.xadd(...)`, an XACK) in one write on the fast connection."""
        if self.fast.closed:  # Redis went away and came back: a new connection
            self.fast = await FastRedis.like(self.r)
        return await self.fast.pipeline(commands)

    def every(self, seconds: float, fn: Callable[[], Awaitable[None]]) -> None:
        """Run `fn` every `seconds` while the service runs (and not after stop)."""
        self._periodic.append((seconds, fn))

    def recorder(self, name: str) -> LatencyRecorder:
        """An HDR latency recorder reported in the heartbeat as `<name>_p50` ... (ms)."""
        if name not in self.latency:
            self.latency[name] = LatencyRecorder()
        return self.latency[name]

    def metrics(self) -> dict[str, Any]:
        """Service-specific heartbeat fields (`extra`); the base adds `skipped_undecodable` for a
        service that reads streams outside its groups (or skipped something it read)."""
        return {}

    def rate_window_s(self) -> float:
        """Seconds the heartbeat's rate is averaged over (RATE_WINDOW_S): a service that writes in
        batches widens it beyond its batch interval, so its rate does not swing between 0 and a
        burst."""
        return RATE_WINDOW_S

    def all_workers(self) -> list[StreamWorker]:
        """Its workers: the streams it consumes whole, and the partitions it owns now."""
        return self.workers + [w for p in self.partitioned for w in p.workers]

    def processed(self) -> int:
        """Items processed so far (default: entries acked by the workers)."""
        return sum(w.stats.processed for w in self.workers) + sum(p.processed() for p in self.partitioned)

    def degrade(self, reason: str) -> None:
        """Say this instance is alive but cannot make progress, and why: the heartbeat says
        `degraded` with `reason` from the next beat on (sent at once). Call it again with a new
        reason to update it; `recover()` when progress is possible again."""
        if self.state in ("stopped", "failed"):
            return
        if self.state not in ("running", "degraded"):
            self.reason = reason  # starting or draining: the state stays, the reason shows
            return
        if self.state != "degraded" or reason != self.reason:
            self.log.warning("degraded: %s", reason, extra={"instance": self.instance})
            self._wake.set()
        self.state, self.reason = "degraded", reason

    def recover(self) -> None:
        """Progress is possible again: a degraded instance is `running` again (beat sent at once)."""
        if self.state == "degraded":
            self.log.info("running again (was degraded: %s)", self.reason, extra={"instance": self.instance})
            self.state = "running"
            self._wake.set()
        if self.state not in ("stopped", "failed"):  # a failure's reason stays
            self.reason = ""

    @property
    def degraded(self) -> bool:
        return self.state == "degraded"

    async def run_extra(self) -> None:
        """A long-running coroutine of the service's own (a websocket client, a server...)."""
        await self._stop.wait()

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            self.log.info("stop requested", extra={"instance": self.instance})
            if self.state != "failed":  # a failed service keeps saying so in its last heartbeat
                self.state = "draining"
            self._stop.set()
            self._wake.set()
            for w in self.workers:
                w.stop()
            for part in self.partitioned:
                part.stop()

    async def wait_stopped(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def run(self, *, install_signals: bool = False, serve_metrics: bool = False) -> None:
        """Connect, set up, run until stopped, drain, tear down. `serve_metrics`: serve Prometheus
        metrics on `metrics_port` from setup on (the process's entry point does)."""
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        self.r = await connect_async(
            self.redis_url, auth=self.login, who=None if self.login else looked_for(self.name, self.settings)
        )
        self.fast = await FastRedis.like(self.r)
        try:
            await self.setup()
            for w in self.workers:
                w.r = self.r
                await w.setup()
            for part in self.partitioned:  # one partition on one Redis: set up now, like the workers
                await part.prepare()
            if serve_metrics:
                await self.serve_metrics()
            self.state = "degraded" if self.reason else "running"  # setup may have said degrade()
            self.log.info(
                "started",
                extra={
                    "instance": self.instance,
                    "environment": self.environment,
                    "consumes": [w.stream for w in self.workers]
                    + [s for p in self.partitioned for s in (p.stream, *p.also)],  # partitioned: their base names
                },
            )
            await self.heartbeat()
            # What is alive now (modules, config, what setup built) lives as long as the process:
            # out of the collector's way, so a full collection walks only what came since (it
            # walked ~50,000 objects, 10-50 ms with the event loop and every message stopped).
            gc.collect()
            gc.freeze()
            tasks = [asyncio.create_task(w.run(), name=f"worker:{w.stream}") for w in self.workers]
            tasks += [asyncio.create_task(p.run(), name=f"partitions:{p.stream}") for p in self.partitioned]
            tasks += [
                asyncio.create_task(self._listen_loop(b, fn), name=f"listen:{','.join(b.cursors)}")
                for b, fn in self._listens
            ]
            tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
            tasks += [
                asyncio.create_task(self._every_loop(s, fn), name=f"every:{fn.__name__}") for s, fn in self._periodic
            ]
            extra = asyncio.create_task(self.run_extra(), name="extra")
            stopper = asyncio.create_task(self._stop.wait(), name="stop")
            done, _ = await asyncio.wait([*tasks, extra, stopper], return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if t is not stopper and t.exception() is not None]
            if failed:
                self.state = "failed"
                exc = failed[0].exception()
                nope = denied(exc)
                if nope is not None:
                    self.reason = self.refused(nope)
                    self.log.error("%s (task %s)", self.reason, failed[0].get_name(), exc_info=exc)
                else:
                    self.reason = f"task {failed[0].get_name()} failed: {exc!r}"
                    self.log.error("task %s failed: %r", failed[0].get_name(), exc, exc_info=exc)
            self.request_stop()
            # Workers finish the batch in hand and ack; periodic tasks end at the stop event.
            await asyncio.gather(*tasks, extra, return_exceptions=True)
            await self.teardown()
            if self.state != "failed":
                self.state = "stopped"
            try:
                await self.heartbeat()
            except (RedisError, OSError) as exc:  # Redis gone: the failure that stopped us matters more
                self.log.warning("final heartbeat failed: %r", exc)
            self.log.info("stopped", extra={"instance": self.instance, "processed": self.processed()})
            if failed:
                nope = denied(failed[0].exception())
                if nope is not None:
                    raise AccessDenied(self.reason) from failed[0].exception()
                raise failed[0].exception()  # type: ignore[misc]
        except NoPermissionError as exc:  # in setup: the same deployment bug, before anything ran
            self.state, self.reason = "failed", self.refused(exc)
            self.log.error("%s (setup)", self.reason)
            with contextlib.suppress(Exception):  # setup did not finish: its metrics may not be there
                await self.heartbeat()  # say so, if the heartbeat itself is allowed
            raise AccessDenied(self.reason) from exc
        finally:
            if self.metrics_server is not None:
                await self.metrics_server.close()
            for reader in self.readers:
                await reader.close()
            await self.fast.aclose()
            for conn in self._fast_at.values():
                await conn.aclose()
            await self.r.aclose()

    async def serve_metrics(self) -> str:
        """Serve /metrics (backend/metrics.py) on `metrics_port`, or a free port when it is taken;
        the heartbeat publishes where ("host:port")."""
        self.metrics_server = MetricsServer(registry_for(self))
        await self.metrics_server.start(self.settings.metrics_host, self.metrics_port)
        self.log.info("metrics on http://%s/metrics", self.metrics_server.address, extra={"instance": self.instance})
        return self.metrics_server.address

    def refused(self, exc: BaseException) -> str:
        """The reason a service fails with when Redis refused it a command (NOPERM)."""
        user = self.login.user if self.login else "default"
        why = str(exc).removeprefix("NOPERM").strip()
        return (
            f"Redis refused a command to the user {user!r} (NOPERM: {why}): a deployment bug, not a "
            f"transient error; the service's declared access or the server's ACL rules are wrong "
            f"(`tradeops redis acl check`; the ACL denial alert names the command and the key)"
        )

    async def _listen_loop(self, reader: Broadcast, handler: Callable[[list[Item]], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            items = await reader.read()
            if items:
                await handler(items)

    async def _every_loop(self, seconds: float, fn: Callable[[], Awaitable[None]]) -> None:
        away = False
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), seconds)
                return
            except TimeoutError:
                pass
            try:
                await fn()
            except outage.CAUGHT as exc:
                if not redis_away(exc):
                    raise
                if not away:  # Redis away (restarting, reading its AOF): the next round tries again
                    self.log.warning("%s: redis unavailable, retrying every %gs: %r", fn.__name__, seconds, exc)
                away = True
                continue
            if away:
                away = False
                self.log.info("%s: redis back", fn.__name__)

    async def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):  # every heartbeat_s, or at once when the state changed
                await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                await self.heartbeat()
            except Exception as exc:  # a missed beat is logged, not fatal
                if denied(exc) is not None:
                    raise  # refused, not missed: the service fails with the reason
                self.log.warning("heartbeat failed: %r", exc)

    # -- heartbeat -------------------------------------------------------------------------------
    async def _group_stats(self) -> tuple[int, int, int]:
        lag = pending = dlq = 0
        workers = self.all_workers()
        if not workers:
            return lag, pending, dlq
        per: dict[str, tuple[int, int, int]] = {}
        async with self.r.pipeline(transaction=False) as pipe:
            for w in workers:
                pipe.xinfo_groups(w.stream)
                pipe.xlen(w.dlq_stream)
            res = await pipe.execute(raise_on_error=False)
        for w, groups, dlen in zip(workers, res[0::2], res[1::2], strict=True):
            w_lag = w_pending = 0
            if isinstance(groups, list):
                for g in groups:
                    gname = g.get("name")
                    if gname in (w.group, w.group.encode()):
                        w_pending += int(g.get("pending") or 0)
                        w_lag += int(g.get("lag") or 0)
            w_dlq = dlen if isinstance(dlen, int) else 0
            lag, pending, dlq = lag + w_lag, pending + w_pending, dlq + w_dlq
            per[w.stream] = (w_lag, w_pending, w_dlq)
        self.stream_stats = per
        return lag, pending, dlq

    def heartbeat_message(self, lag: int = 0, pending: int = 0, dlq: int = 0) -> Heartbeat:
        processed = self.processed()
        rate = self._rate.update(time.monotonic(), processed, self.rate_window_s())
        latency: dict[str, float] = {}
        for name, rec in self.latency.items():
            for k, v in rec.summary_ms().items():
                latency[f"{name}_{k}"] = v
        return Heartbeat(
            service=self.name,
            instance=self.instance,
            environment=self.environment,  # type: ignore[arg-type]
            state=self.state,  # type: ignore[arg-type]
            ts_ns=time.time_ns(),
            started_ns=self.started_ns,
            pid=os.getpid(),
            host=socket.gethostname(),
            processed=processed,
            rate=round(rate, 1),
            lag=lag,
            pending=pending,
            dlq=dlq,
            latency_ms=latency,
            extra=self._extra(),
            reason=self.reason,
            metrics_addr=self.metrics_server.address if self.metrics_server else "",
        )

    def _extra(self) -> dict[str, Any]:
        extra = self.metrics()
        if self.readers or self.skips:
            extra.setdefault("skipped_undecodable", self.skips.total)
        return extra

    async def heartbeat(self) -> Heartbeat:
        lag, pending, dlq = await self._group_stats()
        hb = self.heartbeat_message(lag, pending, dlq)
        key = streams.HEALTH_KEY.format(service=self.name, instance=self.instance)
        readable: dict[str, str | int | float] = {
            "service": hb.service,
            "instance": hb.instance,
            "environment": hb.environment,
            "state": hb.state,
            "processed": hb.processed,
            "rate": hb.rate,
            "lag": hb.lag,
            "pending": hb.pending,
            "dlq": hb.dlq,
            "ts_ns": hb.ts_ns,
            "pid": hb.pid,
            "host": hb.host,
            "pidns": _PIDNS,
            "reason": hb.reason,
            "metrics_addr": hb.metrics_addr,
        }
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={**readable, codec.FIELD_STR: codec.encode(hb)})  # type: ignore[dict-item]  # redis-py's mapping type is invariant
            pipe.expire(key, streams.HEALTH_TTL_S)
            queue(pipe, streams.OPS_HEALTH, hb)
            await pipe.execute()
        self.beat_at = time.monotonic()
        return hb


def _positive_int(service: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"[services.{service}]: {key} must be a positive integer (milliseconds), not {value!r}")
    return value
