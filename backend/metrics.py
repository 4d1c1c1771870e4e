"""Prometheus metrics of a service instance, served on its port (one HTTP endpoint per process).

Every instance has its own `CollectorRegistry`, filled at scrape time by one collector that reads
what the Service base already counts (nothing more is done on the hot path): items processed,
what its workers dead-lettered and reclaimed, each consumed stream's lag, pending entries and
dead-letter length as the last heartbeat measured them, the age of that heartbeat, its state, the
undecodable entries it skipped, and every latency recorder (`Service.recorder(name)`: the OMS's
risk round trip and stages, risk's check, the normalizer's batch ...) as a histogram in seconds.
A service adds domain metrics by declaring them (`Service.exported`: keys of its heartbeat's
`metrics()` dict, with their help text), so they are the figures its heartbeat already carries.

Every sample is labelled with the instance's `service`, `environment` and `instance_id`.

The port: `[services.<name>] metrics_port = N` (0: any free port); by default the inventory port
for a legacy instance and that port + 10000 for a target one, so legacy and target instances on
one machine (blue/green during a cutover) do not collide. A port already taken (a second instance
of the same environment, a test beside a running stack) falls back to a free one. Whatever port
is bound is published in the heartbeat (`Heartbeat.metrics`, "host:port"), and the scrape
targets are made from the heartbeats (backend/runtime/scrape.py), so Prometheus follows.
The address bound is the settings' `metrics_host` (127.0.0.1 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from backend.errors import ConfigError

if TYPE_CHECKING:
    from backend.services.base import Service

log = logging.getLogger("tradeops.metrics")

PREFIX = "tradeops"
TARGET_PORT_OFFSET = 10_000
"""A target instance's default port is its inventory port + this (8101 -> 18101)."""
LABELS = ("service", "environment", "instance_id")
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
STATES = ("starting", "running", "degraded", "draining", "stopped", "failed")

# The base's families: name -> (kind, help). Counter names here are without `_total`.
BASE: dict[str, tuple[str, str]] = {
    f"{PREFIX}_processed": ("counter", "Items processed by the instance (the heartbeat's `processed`)."),
    f"{PREFIX}_dead_lettered": ("counter", "Entries the instance sent to a dead-letter stream, per consumed stream."),
    f"{PREFIX}_reclaimed": ("counter", "Pending entries taken over from other consumers, per consumed stream."),
    f"{PREFIX}_lag": ("gauge", "Entries of a consumed stream not yet delivered to the service's group."),
    f"{PREFIX}_pending": ("gauge", "Entries delivered to the service's group and not yet acknowledged."),
    f"{PREFIX}_dlq_entries": ("gauge", "Entries in a consumed stream's dead-letter stream."),
    f"{PREFIX}_heartbeat_age_seconds": ("gauge", "Seconds since the instance last wrote its heartbeat."),
    f"{PREFIX}_state": ("gauge", "1 for the instance's current state (running, degraded ...), 0 otherwise."),
    f"{PREFIX}_skipped_undecodable": ("counter", "Undecodable entries skipped outside the consumer groups."),
    f"{PREFIX}_latency_seconds": ("histogram", "Latency recorded by the service, by recorder `name`."),
}


@dataclass(frozen=True)
class Exported:
    """A domain metric of a service: the value of `key` in its heartbeat's `metrics()` dict,
    exported as `tradeops_<service>_<key>` (a counter gets `_total`). A dict value becomes one
    sample per key, labelled `label`."""

    key: str
    help: str
    counter: bool = False
    label: str = "key"


def family_name(service: str, key: str) -> str:
    return f"{PREFIX}_{service.replace('-', '_')}_{key}"


def sample_names(name: str, kind: str) -> set[str]:
    """The names of the samples a family of `kind` shows on /metrics."""
    if kind == "counter":
        return {f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return {name}


def catalog(exported: dict[str, Iterable[Exported]] | None = None) -> dict[str, str]:
    """Every sample name the services can show -> its family's help: the base's, and each
    service's declared domain metrics (`exported`: {service: declarations}; default: every
    registered service class's)."""
    if exported is None:
        from backend.services import SERVICES, service_class

        exported = {name: service_class(name).exported for name in SERVICES}
    out: dict[str, str] = {}
    for name, (kind, help_) in BASE.items():
        for s in sample_names(name, kind):
            out[s] = help_
    for service, decls in exported.items():
        for d in decls:
            for s in sample_names(family_name(service, d.key), "counter" if d.counter else "gauge"):
                out[s] = d.help
    return out


def default_port(service: str, environment: str) -> int:
    """The inventory port (legacy) or it + TARGET_PORT_OFFSET (target); 0 for a service the
    inventory does not list."""
    from backend.migration import inventory

    try:
        port = inventory.load().service(service).port
    except Exception:  # noqa: BLE001 - not in the inventory (a test service): any free port
        return 0
    return port + TARGET_PORT_OFFSET if environment == "target" else port


def configured_port(service: str, value: Any) -> int | None:
    """`[services.<name>] metrics_port`, checked (None: not set)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(
            f"[services.{service}]: metrics_port must be a port number 0-65535 (0: any free), not {value!r}"
        )
    return value


class ServiceCollector(Collector):
    """Reads a Service's own counts at scrape time."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        s = self.svc
        ident = [s.name, s.environment, s.instance]

        def fam(cls: Any, name: str, extra: tuple[str, ...] = (), help_: str | None = None, **kw: Any) -> Any:
            return cls(name, help_ or BASE[name][1], labels=[*LABELS, *extra], **kw)

        processed = fam(CounterMetricFamily, f"{PREFIX}_processed")
        processed.add_metric(ident, s.processed())
        yield processed
        dead = fam(CounterMetricFamily, f"{PREFIX}_dead_lettered", ("stream",))
        reclaimed = fam(CounterMetricFamily, f"{PREFIX}_reclaimed", ("stream",))
        for w in s.all_workers():
            dead.add_metric([*ident, w.stream], w.stats.dead_lettered)
            reclaimed.add_metric([*ident, w.stream], w.stats.reclaimed)
        yield dead
        yield reclaimed
        lag = fam(GaugeMetricFamily, f"{PREFIX}_lag", ("stream",))
        pending = fam(GaugeMetricFamily, f"{PREFIX}_pending", ("stream",))
        dlq = fam(GaugeMetricFamily, f"{PREFIX}_dlq_entries", ("stream",))
        for stream, (n_lag, n_pending, n_dlq) in s.stream_stats.items():
            lag.add_metric([*ident, stream], n_lag)
            pending.add_metric([*ident, stream], n_pending)
            dlq.add_metric([*ident, stream], n_dlq)
        yield lag
        yield pending
        yield dlq
        age = fam(GaugeMetricFamily, f"{PREFIX}_heartbeat_age_seconds")
        age.add_metric(ident, max(0.0, time.monotonic() - s.beat_at) if s.beat_at else float("nan"))
        yield age
        state = fam(GaugeMetricFamily, f"{PREFIX}_state", ("state",))
        for st in STATES:
            state.add_metric([*ident, st], 1.0 if s.state == st else 0.0)
        yield state
        skipped = fam(CounterMetricFamily, f"{PREFIX}_skipped_undecodable")
        skipped.add_metric(ident, s.skips.total)
        yield skipped
        hist = fam(HistogramMetricFamily, f"{PREFIX}_latency_seconds", ("name",))
        bounds_ms = [b * 1000.0 for b in LATENCY_BUCKETS_S]
        for name, rec in s.latency.items():
            counts = rec.buckets_ms(bounds_ms, recent=False)
            cum, buckets = 0, []
            for (_bound_ms, n), b in zip(counts, [*LATENCY_BUCKETS_S, float("inf")], strict=True):
                cum += int(n)
                buckets.append((_le(b), cum))
            hist.add_metric([*ident, name], buckets, rec.sum_ns / 1e9)
        yield hist
        if s.exported:
            yield from _domain(s, ident)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _domain(s: Service, ident: list[str]) -> Iterator[Metric]:
    values = s.metrics()
    for d in s.exported:
        v = values.get(d.key)
        name = family_name(s.name, d.key)
        cls = CounterMetricFamily if d.counter else GaugeMetricFamily
        if isinstance(v, dict):
            f = cls(name, d.help, labels=[*LABELS, d.label])
            for k, x in v.items():
                if isinstance(x, int | float):
                    f.add_metric([*ident, str(k)], float(x))
        else:
            f = cls(name, d.help, labels=list(LABELS))
            if isinstance(v, int | float):
                f.add_metric(ident, float(v))
        yield f


def registry_for(svc: Service) -> CollectorRegistry:
    """The instance's own registry: its collector and the process's (CPU, memory, open files)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ServiceCollector(svc))
    ProcessCollector(registry=reg)
    return reg


class MetricsServer:
    """`GET /metrics` on the service's event loop (no thread: the collector reads the service's
    counts where they are changed, never halfway through)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int, *, fallback: bool = True) -> int:
        """Listen on host:port (a taken port falls back to a free one when `fallback`); returns
        the bound port."""
        try:
            self.server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            if not (fallback and port and exc.errno == errno.EADDRINUSE):
                raise
            log.warning("metrics port %s:%d is taken; serving /metrics on a free port instead", host, port)
            self.server = await asyncio.start_server(self._handle, host, 0)
        self.host = host
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    @property
    def address(self) -> str:
        """Where a scraper finds it: host:port (this host's name for a wildcard bind)."""
        if self.server is None:
            return ""
        host = socket.gethostname() if self.host in ("", "0.0.0.0", "::") else self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            parts = head.split(b"\r\n", 1)[0].split()
            method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) >= 2 else (b"", b"")
            if method not in (b"GET", b"HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
            elif path in (b"/metrics", b"/"):
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"the metrics are at /metrics\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:  # a failing collector answers 500, the service goes on
            log.exception("metrics: scrape failed")
            with contextlib.suppress(Exception):
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
