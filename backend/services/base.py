"""The one Service base that all 18 services use.

A service declares its `name`, a typed `Config` (checked against `[services.<name>]`), and in
`setup()` registers what it consumes (`self.consume(stream, handler)`) and its periodic tasks
(`self.every(seconds, fn)`). The base owns the rest: the Redis connection, the consumer-group
workers (group = service name, consumer = instance id), a heartbeat every second into `ops.health`
and the hash `health:<service>:<instance>` (with a TTL), structured logs, and a clean stop on
SIGTERM/SIGINT: stop reading, finish the batch in hand, ack, final heartbeat, exit.

Every consumer takes over at once the pending entries of another instance of the same service
whose heartbeat says it is gone (`backend.health.gone`); entries of a consumer that is alive but
stuck are reclaimed after `claim_idle_ms` (15 s by default, `claim_idle_ms = N` in any
`[services.<name>]` section sets it for that service).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from backend.bus import codec, streams
from backend.bus.connection import connect_async
from backend.bus.fastconn import Arg, FastRedis
from backend.bus.worker import Handler, StreamWorker
from backend.errors import ConfigError
from backend.health import gone, pid_namespace
from backend.latency import LatencyRecorder
from backend.messages import Heartbeat
from backend.settings import Settings, convert_section

_PIDNS = pid_namespace()


class NoConfig(msgspec.Struct, forbid_unknown_fields=True):
    """A service without settings of its own."""


class Service:
    name: ClassVar[str] = "service"
    Config: ClassVar[type[msgspec.Struct]] = NoConfig
    heartbeat_s: ClassVar[float] = 1.0
    claim_idle_ms: ClassVar[int] = 15_000
    """Default for entries left pending by a live consumer; a gone consumer's are taken at once."""

    def __init__(
        self,
        *,
        redis_url: str,
        settings: Settings | None = None,
        instance: str | None = None,
        environment: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.redis_url = redis_url
        self.environment = environment or self.settings.environment
        self.instance = instance or f"{self.name}-{self.environment}-{os.getpid()}"
        raw = self.settings.service_section(self.name)
        raw.update(config or {})
        self.claim_idle_ms = _positive_int(self.name, "claim_idle_ms", raw.pop("claim_idle_ms", self.claim_idle_ms))
        self.cfg: Any = convert_section(self.name, raw, self.Config)
        self.log = logging.getLogger(f"tradeops.{self.name}")
        self.r: aioredis.Redis = None  # type: ignore[assignment]  # set in run()
        self.fast: FastRedis = None  # type: ignore[assignment]  # set in run(): the hot-path writes
        self.workers: list[StreamWorker] = []
        self.latency: dict[str, LatencyRecorder] = {}
        self.state = "starting"
        self.started_ns = time.time_ns()
        self._periodic: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self._stop = asyncio.Event()
        self._last_processed = 0
        self._last_beat = time.monotonic()
        self._rate = 0.0

    # -- what subclasses use ---------------------------------------------------------------------
    async def setup(self) -> None:
        """Register consumers and periodic tasks; open stores. Called after connecting."""

    async def teardown(self) -> None:
        """Flush and close what setup opened. Called after the workers finished."""

    def consume(self, stream: str, handler: Handler, **opts: Any) -> StreamWorker:
        """Consume `stream` in this service's consumer group, one handler call per batch."""
        group = opts.pop("group", self.name)
        opts.setdefault("claim_idle_ms", self.claim_idle_ms)
        opts.setdefault("alive", self.consumer_alive)
        worker = StreamWorker(self.r, stream, group, self.instance, handler, **opts)
        self.workers.append(worker)
        return worker

    async def consumer_alive(self, consumer: str) -> bool:
        """Whether another consumer in this service's groups (an instance id) still works."""
        key = streams.HEALTH_KEY.format(service=self.name, instance=consumer)
        return not gone(*await self.r.hmget(key, "state", "pid", "host", "pidns"))

    async def call(self, *args: Arg) -> object:
        """One raw command on the fast connection (e.g. an EVALSHA), its raw reply."""
        if self.fast.closed:
            self.fast = await FastRedis.like(self.r)
        return await self.fast.call(*args)

    async def send(self, commands: list[tuple[Arg, ...]]) -> list[object]:
        """Send raw commands (e.g. `streams.xadd(...)`, an XACK) in one write on the fast connection."""
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
        """Service-specific heartbeat fields (`extra`)."""
        return {}

    def processed(self) -> int:
        """Items processed so far (default: entries acked by the workers)."""
        return sum(w.stats.processed for w in self.workers)

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
            for w in self.workers:
                w.stop()

    async def wait_stopped(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def run(self, *, install_signals: bool = False) -> None:
        """Connect, set up, run until stopped, drain, tear down."""
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        self.r = await connect_async(self.redis_url)
        self.fast = await FastRedis.like(self.r)
        try:
            await self.setup()
            for w in self.workers:
                w.r = self.r
                await w.setup()
            self.state = "running"
            self.log.info(
                "started",
                extra={"instance": self.instance, "environment": self.environment,
                       "consumes": [w.stream for w in self.workers]},
            )
            await self.heartbeat()
            # What is alive now (modules, config, what setup built) lives as long as the process:
            # out of the collector's way, so a full collection walks only what came since (it
            # walked ~50,000 objects, 10-50 ms with the event loop and every message stopped).
            gc.collect()
            gc.freeze()
            tasks = [asyncio.create_task(w.run(), name=f"worker:{w.stream}") for w in self.workers]
            tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
            tasks += [
                asyncio.create_task(self._every_loop(s, fn), name=f"every:{fn.__name__}")
                for s, fn in self._periodic
            ]
            extra = asyncio.create_task(self.run_extra(), name="extra")
            stopper = asyncio.create_task(self._stop.wait(), name="stop")
            done, _ = await asyncio.wait(
                [*tasks, extra, stopper], return_when=asyncio.FIRST_COMPLETED
            )
            failed = [t for t in done if t is not stopper and t.exception() is not None]
            if failed:
                self.state = "failed"
                exc = failed[0].exception()
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
                raise failed[0].exception()  # type: ignore[misc]
        finally:
            await self.fast.aclose()
            await self.r.aclose()

    async def _every_loop(self, seconds: float, fn: Callable[[], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), seconds)
                return
            except TimeoutError:
                pass
            await fn()

    async def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.heartbeat_s)
                return
            except TimeoutError:
                pass
            try:
                await self.heartbeat()
            except Exception as exc:  # noqa: BLE001 - a missed beat is logged, not fatal
                self.log.warning("heartbeat failed: %r", exc)

    # -- heartbeat -------------------------------------------------------------------------------
    async def _group_stats(self) -> tuple[int, int, int]:
        lag = pending = dlq = 0
        if not self.workers:
            return lag, pending, dlq
        async with self.r.pipeline(transaction=False) as pipe:
            for w in self.workers:
                pipe.xinfo_groups(w.stream)
                pipe.xlen(w.dlq_stream)
            res = await pipe.execute(raise_on_error=False)
        for w, groups, dlen in zip(self.workers, res[0::2], res[1::2], strict=True):
            if isinstance(groups, list):
                for g in groups:
                    gname = g.get("name")
                    if gname in (w.group, w.group.encode()):
                        pending += int(g.get("pending") or 0)
                        lag += int(g.get("lag") or 0)
            if isinstance(dlen, int):
                dlq += dlen
        return lag, pending, dlq

    def heartbeat_message(self, lag: int = 0, pending: int = 0, dlq: int = 0) -> Heartbeat:
        now = time.monotonic()
        processed = self.processed()
        dt = now - self._last_beat
        if dt > 0.2:
            self._rate = (processed - self._last_processed) / dt
            self._last_processed, self._last_beat = processed, now
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
            rate=round(self._rate, 1),
            lag=lag,
            pending=pending,
            dlq=dlq,
            latency_ms=latency,
            extra=self.metrics(),
        )

    async def heartbeat(self) -> Heartbeat:
        lag, pending, dlq = await self._group_stats()
        hb = self.heartbeat_message(lag, pending, dlq)
        key = streams.HEALTH_KEY.format(service=self.name, instance=self.instance)
        readable = {
            "service": hb.service, "instance": hb.instance, "environment": hb.environment,
            "state": hb.state, "processed": hb.processed, "rate": hb.rate, "lag": hb.lag,
            "pending": hb.pending, "dlq": hb.dlq, "ts_ns": hb.ts_ns, "pid": hb.pid, "host": hb.host,
            "pidns": _PIDNS,
        }
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={**readable, codec.FIELD_STR: codec.encode(hb)})
            pipe.expire(key, streams.HEALTH_TTL_S)
            pipe.xadd(
                streams.OPS_HEALTH, codec.fields(hb),
                maxlen=streams.maxlen(streams.OPS_HEALTH), approximate=True,
            )
            await pipe.execute()
        return hb


def _positive_int(service: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"[services.{service}]: {key} must be a positive integer (milliseconds), not {value!r}")
    return value
