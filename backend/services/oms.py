"""oms (P3): the order state machine. orders.new -> risk.requests; risk.decisions -> exec.orders;
exec.reports -> order states; every transition on orders.events.

Each order's record lives in Redis (`oms:order:<client order id>`: a hash of the record `d` and
its version `v`), so a restart loses nothing and resumes in-flight orders. The records of working
orders are also kept in memory, so a batch costs one round trip: apply the transitions to the
records, then one script checks that every record the batch read is still at the version it was
read at and, only then, writes the records, the events, the outgoing messages and the XACK
(a compare-and-set commit). If one changed (the other instance of the group during a blue/green
cutover, or a paused instance whose entries were taken over), nothing is written: the batch's
records are read again from Redis and the batch starts over, so no transition is lost and none is
made twice. The three consumers of one instance take turns (one lock), so they never race each
other. Idempotent: a resubmitted client order id never makes a second order (a new order is
committed only if no record of that id exists), a decision or report for an order that has moved
on is ignored, and a fill is counted once per venue trade id. Past its capacity the OMS refuses a
new order at once (REJECTED, reason `overloaded`) instead of queueing it: backend/trading/admission.py.

A batch of orders.new is on disk before anything more happens to its orders: after its commit the
OMS waits, still holding the lock, for the AOF fsync (one WAITAOF acknowledges every order of the
batch, `backend.bus.durable`), so no order is routed to the venue, and none reaches the final state
that `order submit --wait` answers with, before a crash of Redis can no longer take its intake back
(the batch's NEW and PENDING_RISK events are visible that one fsync earlier).

With the order path split by account (`[partitions] "orders.new" = N`, backend/bus/partitions.py),
each instance owns some partitions (one lease for partition p of orders.new, risk.decisions and
exec.reports together) and an order's record, the set of open orders and every stream its commit
writes carry p's hash tag (`oms:order:{p1of4}:<id>`, `oms:open:{p1of4}`, `risk.requests:{p1of4}`
...): one slot, so the compare-and-set runs on one Redis Cluster node, per partition.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import msgspec
from redis.exceptions import RedisError

from backend.bus import partitions, replies, streams
from backend.bus.access import Keys, Reads, Scripts, Writes
from backend.bus.broadcast import Item
from backend.bus.durable import wait_durable_async
from backend.bus.publish import xadd
from backend.bus.scripts import Script
from backend.latency import LatencyRecorder
from backend.messages import (
    CancelRequest,
    ControlCommand,
    ExecOrder,
    ExecReport,
    Order,
    OrderEvent,
    OrderState,
    RiskDecision,
    RiskRequest,
)
from backend.metrics import Exported
from backend.services.base import Service
from backend.trading.admission import (
    IN_FLIGHT_STATES,
    OVERLOADED,
    Admission,
    AdmissionLimits,
    Gate,
    clock_offset_ms,
)
from backend.trading.killswitch import COMMAND, KILL_KEY
from backend.trading.orders import RECORD_KEY, IllegalTransition, OrderRecord, find_record, invalid, record_key

KEY = RECORD_KEY
OPEN = "oms:open"
MAX_TRIES = 100  # a batch whose records keep changing under it, after this many tries, is retried by the worker
# KEYS: the batch's record keys, then OPEN. ARGV: n, (expected version, new record or "")*n,
# then counted lists: coids to add to OPEN, coids to remove, XADD commands (backend.bus.publish.xadd,
# each as argc, args...), and last the XACK (stream, group, ids...) if any. Returns {1} or
# {0, stale key indexes...}.
COMMIT_LUA = """
local n = tonumber(ARGV[1])
local stale = {0}
for i = 1, n do
  local v = tonumber(redis.call('HGET', KEYS[i], 'v') or '0')
  if v ~= tonumber(ARGV[2 * i]) then stale[#stale + 1] = i end
end
if #stale > 1 then return stale end
for i = 1, n do
  local rec = ARGV[2 * i + 1]
  if rec ~= '' then redis.call('HSET', KEYS[i], 'v', tonumber(ARGV[2 * i]) + 1, 'd', rec) end
end
local p = 2 * n + 2
local c = tonumber(ARGV[p])
if c > 0 then redis.call('SADD', KEYS[n + 1], unpack(ARGV, p + 1, p + c)) end
p = p + c + 1
c = tonumber(ARGV[p])
if c > 0 then redis.call('SREM', KEYS[n + 1], unpack(ARGV, p + 1, p + c)) end
p = p + c + 1
c = tonumber(ARGV[p])
p = p + 1
for i = 1, c do
  local argc = tonumber(ARGV[p])
  redis.call(unpack(ARGV, p + 1, p + argc))
  p = p + argc + 1
end
if p + 2 <= #ARGV then redis.call('XACK', ARGV[p], ARGV[p + 1], unpack(ARGV, p + 2, #ARGV)) end
return {1}
"""
_COMMIT = Script(COMMIT_LUA)
_rec = msgspec.msgpack.Decoder(OrderRecord)
_rec_enc = msgspec.msgpack.Encoder()


REPORT_STATE: dict[str, OrderState] = {"canceled": "CANCELED", "expired": "EXPIRED", "rejected": "REJECTED"}
"""The order's final state after the venue's report of that kind."""


class OmsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    risk_timeout_s: float = 5.0
    """An order waiting longer than this for its risk decision gets its request sent again."""
    read_count: int = 512
    intake_chunk: int = 64
    """New orders are committed this many at a time, so answers for orders in flight go between."""
    admission: AdmissionLimits = msgspec.field(default_factory=AdmissionLimits)
    """Past these, new orders are refused at once (REJECTED, reason `overloaded`)."""

    def __post_init__(self) -> None:
        if self.intake_chunk < 1:
            raise ValueError(f"intake_chunk must be at least 1, not {self.intake_chunk!r}")


key = record_key


def open_key(tag: str = "") -> str:
    """The set of a partition's open orders (all of them when the order path is not split)."""
    return f"{OPEN}:{tag}" if tag else OPEN


class _Batch:
    """The records one batch touches and what it will write."""

    def __init__(self, records: dict[str, OrderRecord | None]) -> None:
        self.records = records
        self.versions: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.out: list[tuple[str, Any]] = []
        self.opened: set[str] = set()
        self.closed: set[str] = set()
        # counted once the batch is committed (a batch that starts over counts nothing twice)
        self.intake = self.duplicates = self.illegal = 0
        self.latency: list[tuple[LatencyRecorder, int]] = []
        self.gate: Gate | None = None  # new orders: admission control's verdicts for this batch


class OmsService(Service):
    name = "oms"
    Config = OmsConfig
    reads = (
        Reads(streams.ORDERS_NEW, group=True),
        Reads(streams.RISK_DECISIONS, group=True),
        Reads(streams.EXEC_REPORTS, group=True),
        Reads(streams.OPS_CONTROL),
    )
    writes = (Writes(streams.RISK_REQUESTS), Writes(streams.EXEC_ORDERS), Writes(streams.ORDERS_EVENTS))
    keys = (Keys(KEY.format("*"), write=True), Keys(OPEN + "*", write=True), Keys(KILL_KEY))
    scripts = (Scripts((KEY.format("*"), OPEN + "*")),)  # the compare-and-set commit
    commands = ("time",)  # admission control: the age of an order against Redis's clock
    exported = (
        Exported("illegal_transitions", "Order state changes refused as illegal.", counter=True),
        Exported("duplicates", "Orders received again and ignored.", counter=True),
        Exported("conflicts", "Batches started over because a record changed under them.", counter=True),
        Exported("in_flight", "Orders waiting for risk or the venue."),
        Exported("in_flight_limit", "Admission control's limit on orders in flight."),
        Exported("overloaded", "Orders refused as overloaded, by signal.", counter=True, label="signal"),
    )

    async def setup(self) -> None:
        self.intake = 0
        self.illegal = 0
        self.duplicates = 0
        self.conflicts = 0  # batches started over because a record changed under them
        self.rt_risk = self.recorder("risk_rt")
        self.to_routed = self.recorder("intake_to_routed")
        self.to_accepted = self.recorder("intake_to_accepted")
        n = self.cfg.read_count
        self.n = self.settings.partition_count(streams.ORDERS_NEW)
        self.tagged = partitions.on_cluster(self.r)  # a cluster: even one partition's keys share a slot
        self.parts = self.consume_partitions(
            streams.ORDERS_NEW,
            lambda p: partial(self.on_new, p),
            decode=Order | CancelRequest,
            what="order",
            also={
                streams.RISK_DECISIONS: (lambda p: partial(self.on_decisions, p), RiskDecision),
                streams.EXEC_REPORTS: (lambda p: partial(self.on_reports, p), ExecReport),
            },
            on_release=self._released,
            count=n,
            block_ms=100,
            auto_ack=False,
        )
        self.listen({streams.OPS_CONTROL: "$"}, self.on_control, decode=ControlCommand, count=100, block_ms=200)
        self.every(1.0, self.resend_stale_risk)
        self.admission = Admission(self.cfg.admission)
        self.in_flight: set[str] = set()  # orders waiting for risk or the venue (IN_FLIGHT_STATES)
        self.overloaded: Counter[str] = Counter()  # orders refused, by signal
        self._overload_logged = 0.0
        self._reconnects = 0  # of the intake worker, when admission last (re)started
        await self.sync_clock()
        self.admission.start(time.time_ns())
        self.every(10.0, self.sync_clock)
        # working orders' records as last committed: coid -> (version, record)
        self.cache: dict[str, tuple[int, OrderRecord]] = {}
        self.lock = asyncio.Lock()

    def processed(self) -> int:
        return self.intake

    # -- partitions ------------------------------------------------------------------------------
    def tag(self, p: int) -> str:
        """Partition p's hash tag ("" when the order path is one stream on one Redis)."""
        return partitions.key_tag(p, self.n, tagged=self.tagged)

    def stream(self, base: str, p: int) -> str:
        """Partition p of `base` (the stream itself when not split)."""
        return partitions.name(base, p, self.n, tagged=self.tagged)

    def part_of(self, rec: OrderRecord) -> int:
        return partitions.partition_of(rec.order.account, self.n)

    def _released(self, p: int) -> None:
        """Partition p went to another instance: its orders' records are its now."""
        for c in [c for c, (_, rec) in self.cache.items() if self.part_of(rec) == p]:
            del self.cache[c]
            self.in_flight.discard(c)

    def metrics(self) -> dict[str, object]:
        return {
            "orders": self.intake,
            "illegal_transitions": self.illegal,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "in_flight": len(self.in_flight),
            "in_flight_limit": int(self.admission.in_flight_limit),
            **({"partitions": self.parts.partitions(), "of": self.n} if self.n > 1 else {}),
            "overloaded": dict(self.overloaded),
            "risk_rt_hist": self.rt_risk.buckets_ms([0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0]),
        }

    # -- batches ---------------------------------------------------------------------------------
    async def _transact(
        self,
        p: int,
        coids: Iterable[str],
        apply: Callable[[_Batch], None],
        stream: str,
        entries: list[tuple[bytes, Any]],
        *,
        new_ids: Iterable[str] = (),
    ) -> _Batch:
        """Apply a batch's transitions to its records and commit them with the XACK of `entries`
        (compare-and-set on the records' versions); start over from Redis if one changed.
        `new_ids`: ids of new orders, not looked up when unknown (committed only if still absent)."""
        ids = list(dict.fromkeys(coids))
        absent = set(new_ids)
        stream = self.stream(stream, p)
        async with self.lock:
            fresh = False
            try:
                for _ in range(MAX_TRIES):
                    b = await self._load(p, ids, absent, fresh)
                    apply(b)
                    if await self._commit(p, b, stream, entries):
                        break
                    self.conflicts += 1
                    fresh = True  # read every record of the batch again: some changed under us
                else:
                    raise RuntimeError(f"the records of a batch of {stream} kept changing ({MAX_TRIES} tries)")
            except BaseException:
                # the batch changed the records it holds, which are the ones in memory, and Redis
                # may not have them (the commit failed, Redis went away): forget them, so the
                # batch delivered again starts from Redis, not from transitions never committed
                for c in ids:
                    self.cache.pop(c, None)
                raise
            if entries and partitions.split(stream)[0] == streams.ORDERS_NEW:
                # the intake on disk: one fsync for the batch (on the connection the commit took)
                await wait_durable_async(await self.fast_at(stream))
        self.intake += b.intake
        self.duplicates += b.duplicates
        self.illegal += b.illegal
        for rec, ns in b.latency:
            rec.record_ns(ns)
        return b

    async def _load(self, p: int, ids: list[str], absent: set[str], fresh: bool) -> _Batch:
        """The batch's records: from memory for working orders, else from Redis (one round trip)."""
        b = _Batch({})
        missing: list[str] = []
        for c in ids:
            hit = None if fresh else self.cache.get(c)
            if hit is not None:
                b.versions[c], b.records[c] = hit
            elif c in absent and not fresh:
                b.versions[c], b.records[c] = 0, None  # a new order: committed only if still absent
            else:
                missing.append(c)
        if missing:
            tag = self.tag(p)
            rows: list[Any] = await self.send_at(key("", tag), [("HMGET", key(c, tag), "v", "d") for c in missing])
            for c, (v, d) in zip(missing, rows, strict=True):
                b.versions[c] = int(v) if v else 0
                b.records[c] = _rec.decode(d) if d else None
        return b

    async def _commit(self, p: int, b: _Batch, stream: str, entries: list[tuple[bytes, Any]]) -> bool:
        ids = list(b.versions)
        args: list[Any] = [len(ids)]
        for c in ids:
            args += [b.versions[c], _rec_enc.encode(b.records[c]) if c in b.dirty else b""]
        opened = b.opened - b.closed
        args += [len(opened), *opened, len(b.closed), *b.closed, len(b.out)]
        for s, msg in b.out:
            cmd = xadd(self.stream(s, p), msg)
            args.append(len(cmd))
            args += cmd
        if entries:
            args += [stream, self.name, *[eid for eid, _ in entries]]
        tag = self.tag(p)
        keys = [key(c, tag) for c in ids] + [open_key(tag)]
        res = await _COMMIT.run(partial(self.call_at, keys[-1]), keys, args)
        if res[0] != 1:
            for c in ids:
                self.cache.pop(c, None)
            return False
        for c in ids:
            rec = b.records[c]
            v = b.versions[c] + (c in b.dirty)
            if rec is None or rec.final:
                self.cache.pop(c, None)
            else:
                self.cache[c] = (v, rec)
            if rec is not None and rec.state in IN_FLIGHT_STATES:
                self.in_flight.add(c)
            else:
                self.in_flight.discard(c)
        return True

    def _move(self, b: _Batch, rec: OrderRecord, to: OrderState, now: int, reason: str = "") -> bool:
        try:
            ev = rec.move(to, now, reason)
        except IllegalTransition as exc:
            b.illegal += 1
            self.log.warning("refused transition: %s", exc)
            return False
        c = rec.order.client_order_id
        b.dirty.add(c)
        b.out.append((streams.ORDERS_EVENTS, ev))
        if rec.final:
            b.closed.add(c)
        return True

    # -- orders.new ------------------------------------------------------------------------------
    async def on_new(self, p: int, msgs: list[tuple[bytes, Order | CancelRequest]]) -> None:
        i = 0
        while i < len(msgs):  # in chunks while orders are in flight (nothing waits for a turn else)
            n = self.cfg.intake_chunk if self.in_flight else len(msgs)
            await self._take_in(p, msgs[i : i + n])
            i += n

    async def _take_in(self, p: int, msgs: list[tuple[bytes, Order | CancelRequest]]) -> None:
        """New orders and cancels, one commit. While orders are in flight a batch read is taken in
        a chunk at a time: their decisions and reports, waiting for their turn, get it between
        chunks (a flood's 512 orders in one go held them up for its whole commit)."""

        intake = self.parts.owned[p].workers[0]  # partition p of orders.new's
        reconnects = sum(w.stats.reconnects for w in self.parts.workers)
        if reconnects != self._reconnects:
            # Redis was away: what was added meanwhile waited for Redis, not for us; a backlog, as
            # at a start (taken in up to max_in_flight), not an overload
            self._reconnects = reconnects
            self.admission.resume(time.time_ns())

        def apply(b: _Batch) -> None:
            now = time.time_ns()
            b.gate = self.admission.gate(now, len(self.in_flight), intake.redelivered)
            for eid, m in msgs:
                if isinstance(m, CancelRequest):
                    self._cancel(b, m, now)
                else:
                    self._intake(b, m, now, eid)

        b = await self._transact(
            p,
            (m.client_order_id for _, m in msgs),
            apply,
            streams.ORDERS_NEW,
            msgs,
            new_ids=(m.client_order_id for _, m in msgs if isinstance(m, Order)),
        )
        if b.gate is not None and b.gate.refused:
            self._overload(b.gate)

    def _intake(self, b: _Batch, o: Order, now: int, eid: bytes = b"") -> None:
        c = o.client_order_id
        if b.records.get(c) is not None:
            b.duplicates += 1  # a resubmission: never a second order
            return
        rec = OrderRecord(order=o, intake_ns=now, updated_ns=now)
        b.records[c] = rec
        b.dirty.add(c)
        b.intake += 1
        why = invalid(o)
        if not why and b.gate is not None and b.gate.refuse(eid):
            # refused at the door, at once and cheaply: its record (so a resubmission stays one
            # order) and one event, NEW -> REJECTED; never queued, never routed, never open
            refused = msgspec.structs.replace(rec.move("REJECTED", now, OVERLOADED), instance=self.instance)
            b.out.append((streams.ORDERS_EVENTS, refused))
            return
        b.out.append(
            (
                streams.ORDERS_EVENTS,
                OrderEvent(
                    client_order_id=c,
                    account=o.account,
                    symbol=o.symbol,
                    side=o.side,
                    quantity=o.quantity,
                    limit_price=o.limit_price,
                    state="NEW",
                    ts_ns=now,
                    seq=0,
                    instance=self.instance,
                ),
            )
        )
        if why:
            self._move(b, rec, "REJECTED", now, f"invalid order: {why}")
            return
        self._move(b, rec, "PENDING_RISK", now)
        rec.risk_sent_ns = time.time_ns()
        b.out.append((streams.RISK_REQUESTS, RiskRequest(request_id=f"{c}#1", order=o, sent_ns=rec.risk_sent_ns)))
        b.opened.add(c)

    def _overload(self, gate: Gate) -> None:
        self.overloaded.update(gate.refused)
        if time.monotonic() - self._overload_logged > 5.0:
            self._overload_logged = time.monotonic()
            self.log.warning(
                "overloaded: refusing new orders (%s this batch; %d in flight, limit %d of %d; max intake age %g ms)",
                dict(gate.refused),
                len(self.in_flight),
                gate.limit,
                self.cfg.admission.max_in_flight,
                self.cfg.admission.max_intake_age_ms,
            )

    def _answered(self, b: _Batch) -> None:
        """How long after intake this batch's orders were routed or accepted: admission lets fewer
        orders in flight while that is too long (Admission.answered)."""
        slowest = max((ns for rec, ns in b.latency if rec is not self.rt_risk), default=None)
        if slowest is not None:
            self.admission.answered(slowest / 1e6, len(self.in_flight), time.time_ns())

    def _cancel(self, b: _Batch, m: CancelRequest, now: int) -> None:
        rec = b.records.get(m.client_order_id)
        if rec is None or rec.final:
            self.log.info("cancel for unknown or finished order %s ignored", m.client_order_id)
            return
        if rec.state == "PENDING_RISK":
            self._move(b, rec, "CANCELED", now, m.reason or "canceled before routing")
            return
        if not rec.cancel_requested:
            rec.cancel_requested = True
            b.dirty.add(m.client_order_id)
            b.out.append(
                (
                    streams.EXEC_ORDERS,
                    ExecOrder(action="cancel", client_order_id=m.client_order_id, sent_ns=now, reason=m.reason),
                )
            )

    # -- risk.decisions --------------------------------------------------------------------------
    async def on_decisions(self, p: int, decs: list[tuple[bytes, RiskDecision]]) -> None:
        now = time.time_ns()

        def apply(b: _Batch) -> None:
            for _, d in decs:
                rec = b.records.get(d.client_order_id)
                if rec is None or rec.state != "PENDING_RISK":
                    continue  # a late or repeated decision: the order has moved on
                if d.request_sent_ns:
                    b.latency.append((self.rt_risk, now - d.request_sent_ns))
                if not d.approved:
                    self._move(b, rec, "DENIED", now, f"{d.rule}: {d.reason}")
                    continue
                if self._move(b, rec, "ROUTED", now):
                    rec.routed_ns = now
                    b.latency.append((self.to_routed, now - rec.intake_ns))
                    b.out.append(
                        (
                            streams.EXEC_ORDERS,
                            ExecOrder(action="new", client_order_id=d.client_order_id, order=rec.order, sent_ns=now),
                        )
                    )

        self._answered(
            await self._transact(p, (d.client_order_id for _, d in decs), apply, streams.RISK_DECISIONS, decs)
        )

    # -- exec.reports ----------------------------------------------------------------------------
    async def on_reports(self, p: int, reps: list[tuple[bytes, ExecReport]]) -> None:
        now = time.time_ns()

        def apply(b: _Batch) -> None:
            for _, rep in reps:
                rec = b.records.get(rep.client_order_id)
                if rec is not None and not rec.final:
                    self._apply_report(b, rec, rep, now)

        self._answered(await self._transact(p, (r.client_order_id for _, r in reps), apply, streams.EXEC_REPORTS, reps))

    def _apply_report(self, b: _Batch, rec: OrderRecord, rep: ExecReport, now: int) -> None:
        c = rec.order.client_order_id
        if rep.venue_order_id and rec.venue_order_id != rep.venue_order_id:
            rec.venue_order_id = rep.venue_order_id
            b.dirty.add(c)
        if rep.kind == "accepted":
            if rec.state == "ROUTED" and self._move(b, rec, "ACCEPTED", now):
                rec.accepted_ns = now
                b.latency.append((self.to_accepted, now - rec.intake_ns))
        elif rep.kind == "fill":
            if not rep.trade_id or rep.trade_id in rec.trade_ids:
                return  # a fill we already counted
            if rec.state == "ROUTED":  # the fill overtook the acceptance
                rec.accepted_ns = now
                b.latency.append((self.to_accepted, now - rec.intake_ns))
            rec.trade_ids.append(rep.trade_id)
            rec.filled += rep.fill_qty
            rec.notional += rep.fill_qty * rep.fill_price
            done = rec.filled >= rec.order.quantity - 1e-9
            self._move(b, rec, "FILLED" if done else "PARTIALLY_FILLED", now)
        elif rep.kind in ("canceled", "expired", "rejected"):
            self._move(b, rec, REPORT_STATE[rep.kind], now, rep.reason)

    # -- housekeeping ----------------------------------------------------------------------------
    async def resend_stale_risk(self) -> None:
        """Orders left PENDING_RISK (e.g. risk was down) get their request sent again, partition
        by partition (the ones this instance owns)."""
        for p in self.parts.partitions():
            await self._resend_stale_risk(p)

    async def _resend_stale_risk(self, p: int) -> None:
        open_ids = {replies.text(c) for c in await self.r.smembers(open_key(self.tag(p)))}
        for c in [c for c, (_, rec) in self.cache.items() if c not in open_ids and self.part_of(rec) == p]:
            del self.cache[c]  # finished by another instance
            self.in_flight.discard(c)
        limit = int(self.cfg.risk_timeout_s * 1e9)
        due = time.time_ns() - limit
        coids = [
            c
            for c in open_ids
            if c not in self.cache or (self.cache[c][1].state == "PENDING_RISK" and self.cache[c][1].risk_sent_ns < due)
        ]
        if not coids:
            return

        def apply(b: _Batch) -> None:
            now = time.time_ns()
            for c, rec in b.records.items():
                if rec is not None and rec.state == "PENDING_RISK" and now - rec.risk_sent_ns > limit:
                    rec.risk_sent_ns = now
                    b.dirty.add(c)
                    b.out.append(
                        (
                            streams.RISK_REQUESTS,
                            RiskRequest(request_id=f"{c}#{uuid.uuid4().hex[:8]}", order=rec.order, sent_ns=now),
                        )
                    )

        await self._transact(p, coids, apply, streams.ORDERS_NEW, [])

    async def sync_clock(self) -> None:
        """Redis's clock against ours: admission reads an order's wait off its entry id."""
        samples = []
        try:
            for _ in range(3):
                before = time.time_ns()
                sec, usec = await self.r.time()
                samples.append((before, int(sec), int(usec), time.time_ns()))
        except (RedisError, OSError) as exc:  # the offset in hand serves until the next try
            self.log.warning("clock offset not measured: %r", exc)
        offset = clock_offset_ms(samples)
        if offset is not None:
            self.admission.offset_ms = offset

    async def on_control(self, items: list[Item]) -> None:
        """The kill switch: when it goes on, cancel every working order. The toggle on ops.control
        is the cue; the key is the truth (a toggle whose key says off cancels nothing)."""
        for _, _, cmd in items:
            if cmd.command == COMMAND and cmd.args.get("on") and await self.r.get(KILL_KEY) == b"1":
                await self.cancel_all(f"kill switch on ({cmd.operator}: {cmd.reason})")

    async def cancel_all(self, reason: str) -> int:
        """Cancel every working order of the partitions this instance owns (every instance gets
        the kill switch: together they cancel them all)."""
        total = 0
        for p in self.parts.partitions():
            total += await self._cancel_all(p, reason)
        return total

    async def _cancel_all(self, p: int, reason: str) -> int:
        coids = [replies.text(c) for c in await self.r.smembers(open_key(self.tag(p)))]
        n = 0

        def apply(b: _Batch) -> None:
            nonlocal n
            now, n = time.time_ns(), 0
            for c, rec in b.records.items():
                if rec is not None and not rec.final:
                    self._cancel(b, CancelRequest(client_order_id=c, reason=reason), now)
                    n += 1

        await self._transact(p, coids, apply, streams.ORDERS_NEW, [])
        return n


read_order = find_record  # backend/trading/orders.py: where the layout puts it
