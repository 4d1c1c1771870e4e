"""alerting (P4): breaches (ptrc and others on ops.alerts), unhealthy or missing heartbeats,
dead-letter growth and failed gate checks become alerts with a severity, de-duplicated by key,
kept in `alerts:active` until acknowledged (`tradeops alerts ack`) or resolved, and optionally
delivered to a webhook over httpx with retries.

An alert is resolved (removed from `alerts:active`, kept on ops.alerts.resolved with the reason)
when its cause is gone: an alert on ops.alerts saying so (`resolved`, e.g. ptrc's breach that is
over), a dead-letter stream that has not grown for `dlq_quiet_s`, an instance that beats as
running again, a gate check that passes on its next run. Redis's memory at or over
streams.ALERT_MEMORY_PCT of its maxmemory is a warning (`redis:memory`), resolved once it is
below again. An instance that stopped cleanly (its final heartbeat says stopped: drained in a
cutover, or shut down) is not alerted on. An instance that beats `degraded` (alive, but it cannot
make progress) raises a warning naming its reason, resolved when it beats running again.

Redis's ACL LOG is collected too: every command or key the server refused to a user (NOPERM: a
deployment bug, or a process trying what its user may not, such as a forged kill switch toggle
or fill) and every failed login becomes a critical alert naming the user, the command and the
key (`acl:<user>:<command>:<key>`), once per log entry (an entry counted again raises nothing
new while its alert is active); it stays until acknowledged."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec
import redis

from backend.bus import acl, codec, replies, streams
from backend.bus.access import Keys, Reads, Writes
from backend.bus.broadcast import Item
from backend.bus.entries import Skips, decode_value
from backend.bus.publish import queue
from backend.health import HEARTBEATS, memory_from_info
from backend.messages import Alert, GateEvent, Severity
from backend.services.base import Service

ACTIVE = "alerts:active"
MEMORY_KEY = "redis:memory"
GATE_CURSOR = "alerting:gate_cursor"
RESOLVED = streams.OPS_ALERTS_RESOLVED
DLQ_SEEN = "alerting:dlq_seen"  # dead letters per stream at the last look (survives restarts)
ACL_SEEN = "alerting:acl_seen"  # ACL LOG entry -> its count at the last look (survives restarts)
_alert = msgspec.msgpack.Decoder(Alert)


class AlertingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    webhook: str | None = None
    """POST each new alert as JSON here (retried 3 times with backoff)."""
    heartbeat_max_age_s: float = 5.0
    dlq_growth: int = 1
    """New dead letters on one stream since the last look that raise an alert."""
    dlq_quiet_s: float = 60.0
    """A dead-letter growth alert is resolved once its stream has not grown for this long."""

    def __post_init__(self) -> None:
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ValueError(f"webhook {self.webhook!r} is not an http:// or https:// URL")
        if not self.heartbeat_max_age_s > 0 or self.dlq_growth < 1:
            raise ValueError("heartbeat_max_age_s must be positive and dlq_growth at least 1")
        if not self.dlq_quiet_s > 0:
            raise ValueError(f"dlq_quiet_s must be positive, not {self.dlq_quiet_s}")


class AlertingService(Service):
    name = "alerting"
    Config = AlertingConfig
    reads = (Reads(streams.OPS_ALERTS, group=True), Reads(streams.OPS_GATES), Reads(streams.dlq("*")))
    writes = (Writes(RESOLVED),)
    keys = (Keys(ACTIVE, write=True), Keys("alerting:*", write=True), Keys(HEARTBEATS))
    commands = ("info", "scan", "acl|log")  # redis's memory; heartbeats and dead letters; the ACL's denials

    async def setup(self) -> None:
        self.raised = 0
        self.delivered = 0
        self.failed_deliveries = 0
        self.resolved = 0
        self.acl_looks = 0  # reads of Redis's ACL LOG so far
        self.denials = 0  # ACL LOG entries seen (new or counted again)
        self.dlq_seen: dict[str, int] = {replies.text(k): int(v) for k, v in (await self.r.hgetall(DLQ_SEEN)).items()}
        self.dlq_grew: dict[str, float] = {}  # stream -> when it last grew (monotonic; quiet since start)
        self.started = time.monotonic()
        # where gate events were read up to survives restarts: a failed check alerts once;
        # ops.gates is read, not consumed: the gates log owns its entries (bad ones are skipped)
        self.gates = self.listen(
            {streams.OPS_GATES: replies.text(await self.r.get(GATE_CURSOR) or b"0")},
            self.on_gate_events,
            decode=GateEvent,
            count=500,
            block_ms=200,
        )
        self.http = httpx.AsyncClient(timeout=3)
        self.worker = self.consume(streams.OPS_ALERTS, self.on_alerts, decode=Alert, count=200, block_ms=200)
        self.every(2.0, self.watch)

    @property
    def skipped(self) -> int:
        """Undecodable heartbeats and gate events skipped."""
        return self.skips.total

    def processed(self) -> int:
        return self.raised

    def metrics(self) -> dict[str, object]:
        return {
            "raised": self.raised,
            "resolved": self.resolved,
            "delivered": self.delivered,
            "failed_deliveries": self.failed_deliveries,
            "acl_denials": self.denials,
        }

    async def raise_alert(self, alert: Alert) -> bool:
        """Record an alert unless one with its key is already active; deliver it if new."""
        key = alert.key or alert.id
        if not await self.r.hsetnx(ACTIVE, key, codec.encode(alert)):
            return False
        self.raised += 1
        if self.cfg.webhook:
            await self.deliver(alert)
        return True

    async def clear(self, key: str, why: str) -> bool:
        """Resolve the active alert of `key` (its cause is gone): it leaves `alerts:active` and is
        kept on ops.alerts.resolved with `why`. False if no alert of that key is active."""
        raw = await self.r.hget(ACTIVE, key)
        if raw is None:
            return False
        alert = msgspec.structs.replace(_alert.decode(replies.blob(raw)), resolved=why)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hdel(ACTIVE, key)
            queue(pipe, RESOLVED, alert)
            await pipe.execute()
        self.resolved += 1
        self.log.info("alert %s resolved: %s", key, why)
        return True

    async def deliver(self, alert: Alert) -> None:
        body = msgspec.to_builtins(alert)
        for attempt in range(3):
            try:
                resp = await self.http.post(self.cfg.webhook, json=body)
                if resp.status_code < 500:
                    self.delivered += resp.status_code < 400
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1 * 2**attempt)
        self.failed_deliveries += 1
        self.log.warning("webhook delivery of %s failed after 3 tries", alert.key or alert.id)

    async def on_alerts(self, alerts: list[tuple[bytes, Alert]]) -> None:
        for _, alert in alerts:
            if alert.resolved:
                await self.clear(alert.key or alert.id, alert.resolved)
            else:
                await self.raise_alert(alert)

    async def hold(self, active: set[str], a: Alert, *, firing: bool, cleared: str | None) -> None:
        """One condition's alert: raised while `firing`, otherwise resolved with `cleared` (when
        given) if it is active."""
        if firing:
            await self.raise_alert(a)
        elif cleared is not None and a.key in active:
            await self.clear(a.key, cleared)

    async def watch(self) -> None:
        now = time.time_ns()
        active = {replies.text(k) for k in await self.r.hkeys(ACTIVE)}
        for hb in await self._beats():
            age = (now - hb.ts_ns) / 1e9
            who = f"{hb.service} ({hb.instance})"
            failed = hb.state == "failed" or (hb.state != "stopped" and age > self.cfg.heartbeat_max_age_s)
            degraded = hb.state == "degraded" and age <= self.cfg.heartbeat_max_age_s
            again = f"{who} is running again" if hb.state == "running" else None
            last = f"{who} is {hb.state}, last beat {age:.1f}s ago"
            down = alert(now, "heartbeat", f"heartbeat:{hb.instance}", "critical", last)
            await self.hold(active, down, firing=failed, cleared=again)
            why = hb.reason or "no reason given"
            slow = alert(now, "degraded", f"degraded:{hb.instance}", "warning", f"{who} is degraded: {why}")
            await self.hold(active, slow, firing=degraded, cleared=again)
        await self.watch_memory(active, now)
        await self.watch_acl(now)
        mono = time.monotonic()
        async for k in self.r.scan_iter(match="dlq.*", count=500):
            stream = k.decode()
            n = await self.r.xlen(stream)
            before = self.dlq_seen.get(stream, 0)
            if n != before:
                self.dlq_seen[stream] = n
                await self.r.hset(DLQ_SEEN, stream, n)
            if n - before >= self.cfg.dlq_growth:
                self.dlq_grew[stream] = mono
                message = f"{stream} grew by {n - before} to {n} dead letter(s)"
                await self.raise_alert(alert(now, "dlq", f"dlq:{stream}:{n // 100}", "warning", message))
            elif mono - self.dlq_grew.get(stream, self.started) >= self.cfg.dlq_quiet_s:
                quiet = f"{stream} has not grown for {self.cfg.dlq_quiet_s:g}s ({n} dead letter(s))"
                for key in sorted(a for a in active if a.startswith(f"dlq:{stream}:")):
                    await self.clear(key, quiet)

    async def watch_memory(self, active: set[str], now: int) -> None:
        """Redis's memory against its maxmemory: a warning at streams.ALERT_MEMORY_PCT, resolved below."""
        mem = memory_from_info(await self.r.info("memory"))
        message = f"{mem.line()}: at 100% every write fails (noeviction)"
        memory = alert(now, "memory", MEMORY_KEY, "warning", message)
        await self.hold(active, memory, firing=mem.high, cleared=mem.line())

    async def watch_acl(self, now: int) -> None:
        """Each new entry of Redis's ACL LOG (or one counted again) raises its denial alert."""
        seen = {replies.text(k): int(v) for k, v in (await self.r.hgetall(ACL_SEEN)).items()}
        got = acl.denials(await self.r.acl_log(count=128))
        self.acl_looks += 1
        for d in got:
            if seen.get(d.entry, 0) >= d.count:
                continue
            if await self.raise_alert(alert(now, acl.DENIAL, d.alert_key, "critical", d.message())):
                self.log.error("ACL denial: %s", d.message())
            self.denials += 1
        live = {d.entry: d.count for d in got}
        if live != seen:
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.delete(ACL_SEEN)
                if live:
                    pipe.hset(ACL_SEEN, mapping=live)  # type: ignore[arg-type]
                await pipe.execute()

    async def on_gate_events(self, items: list[Item]) -> None:
        now = time.time_ns()
        for _, eid, ev in items:
            if ev.kind == "check_run" and ev.outcome == "failed":
                message = f"gate {ev.gate}: check {ev.check} failed (run by {ev.operator})"
                await self.raise_alert(alert(now, "gate", f"gate:{ev.gate}:{ev.check}", "warning", message))
            elif ev.kind in ("check_run", "attest") and ev.outcome == "passed":
                how = "passed" if ev.kind == "check_run" else "attested as passed"
                await self.clear(f"gate:{ev.gate}:{ev.check}", f"check {ev.check} {how} (by {ev.operator})")
            await self.r.set(GATE_CURSOR, eid)
        await self.r.set(GATE_CURSOR, self.gates.cursors[streams.OPS_GATES])  # past skipped entries too

    async def _beats(self) -> list:
        from backend.messages import Heartbeat

        out = []
        bad = 0
        async for k in self.r.scan_iter(match=HEARTBEATS, count=1000):
            raw = await self.r.hget(k, codec.FIELD_STR)
            if not raw:
                continue
            try:
                out.append(codec.decode(replies.blob(raw), Heartbeat))
            except msgspec.DecodeError:  # a ValidationError too
                bad += 1
                self.log.warning("skipping undecodable heartbeat in %s", k)
        self.skips.set(HEARTBEATS, bad)  # the heartbeats that do not decode now (each look reads them all)
        return out

    async def teardown(self) -> None:
        await self.http.aclose()


def active(r: redis.Redis, skips: Skips | None = None) -> list[tuple[str, Alert]]:
    """The active alerts, by key (one that does not decode is skipped, counted in `skips`)."""
    got = [(replies.text(k), decode_value(replies.blob(v), Alert)) for k, v in r.hgetall(ACTIVE).items()]
    if skips is not None:
        skips.add(ACTIVE, sum(a is None for _, a in got))
    return [(k, a) for k, a in got if a is not None]


def ack(r: redis.Redis, key: str, operator: str) -> Alert | None:
    raw = r.hget(ACTIVE, key)
    if raw is None:
        return None
    alert = msgspec.structs.replace(_alert.decode(replies.blob(raw)), acked_by=operator)
    pipe = r.pipeline(transaction=True)
    pipe.hdel(ACTIVE, key)
    queue(pipe, streams.OPS_ALERTS_ACKED, alert)
    pipe.execute()
    return alert


def alert(now: int, kind: str, key: str, severity: Severity, message: str) -> Alert:
    """An alert of this service: one per `key` is active at a time (its id is unique)."""
    return Alert(
        id=f"{kind}-{key}-{now}", ts_ns=now, severity=severity, source="alerting", kind=kind, key=key, message=message
    )
