"""The consumer-group worker every service uses.

- creates its group (MKSTREAM) if missing;
- reads with XREADGROUP (BLOCK, COUNT) and calls the handler once per batch;
- XACKs after the handler succeeds (at-least-once: handlers are idempotent);
- given `decode=T` (a wire type, or a union of them), decodes each entry with one msgspec decoder
  built once: the handler gets `[(entry id, T)]`, and an entry that does not decode goes to
  `dlq.<stream>` at once, its reason naming T and the error;
- on a failed batch, retries its entries one by one so one poison entry does not hold the rest;
- an entry whose handler raised `Poison`, or that was delivered `max_deliveries` times and still
  fails, goes to `dlq.<stream>` with the reason, the original fields and where it came from;
- a handler that finds an entry it can never handle (a domain rejection) calls `reject(id, reason)`:
  that entry goes to `dlq.<stream>` when the handler returns, the rest is acked as usual;
- every `claim_interval_s` it reclaims entries left pending longer than `claim_idle_ms` by any
  other consumer (XAUTOCLAIM): the backstop for a consumer whose liveness is unknown;
- given `alive(consumer)`, every `dead_check_s` it takes over at once the pending entries of a
  consumer that is known to be gone (its heartbeat expired, or its pid is dead): a SIGKILLed
  instance on a hot path holds its entries for about a second, not `claim_idle_ms`;
- `redelivered` is True while the batch in hand was delivered before (own pending after a
  restart, or taken over from another consumer), so a handler can tell it may be older than
  what it has already seen;
- with `auto_ack=False` the handler keeps what it was handed and acks later (`ack(ids)`, e.g.
  after the flush that stored them): those entries are *in flight* and are never handed again
  in this life. Its own pending entries are re-read (page by page) only after a (re)start, a
  reconnect, a failed batch or `release`, skipping what is in flight; reclaims skip them too, and
  every `claim_interval_s` the in-flight entries are touched (XCLAIM JUSTID: idle 0, no delivery
  counted) so no other consumer reclaims them while this one lives. `release(ids)` gives back
  entries the handler did not take (they are re-read later); `pause()` stops all reading (a
  handler whose buffer is at its bound) until `resume()`;
- `stop()` (SIGTERM in a Service) ends reading; the batch in hand is finished and acked;
- a handler that Redis refused a command (NOPERM: the ACL) fails the worker at once: that is a
  deployment bug, not a bad entry (never retried, never dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Union, get_args, get_origin

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.typing import StreamIdT

from backend.bus import codec, deadletter, outage, replies, streams
from backend.bus.access import denied
from backend.bus.fastconn import FastRedis, refresh_slots
from backend.bus.fastconn import entries as fast_entries
from backend.bus.outage import redis_away
from backend.bus.replies import Entry

log = logging.getLogger("tradeops.worker")

Item = tuple[bytes, Any]  # (entry id, decoded message): what a handler gets with decode=T
Handler = Callable[[list[Any]], Awaitable[None]]  # list[Entry], or list[Item] with decode=T


class Poison(Exception):
    """Raised by a handler for an entry that can never succeed (bad bytes, bad fields).

    The worker moves it to the dead-letter stream at once, with this message as the reason.
    """


@dataclass
class WorkerStats:
    processed: int = 0
    acked: int = 0
    failed_batches: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    reconnects: int = 0  # times Redis went away and the worker came back
    last_batch_ns: int = 0
    started: float = field(default_factory=time.monotonic)


async def ensure_group(r: aioredis.Redis, stream: str, group: str, start_id: str = "0") -> None:
    try:
        await r.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class StreamWorker:
    def __init__(
        self,
        r: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        count: int = 256,
        block_ms: int = 200,
        max_deliveries: int = 5,
        claim_idle_ms: int = 15_000,
        claim_interval_s: float = 5.0,
        alive: Callable[[str], Awaitable[bool]] | None = None,
        dead_check_s: float = 1.0,
        dead_claim_idle_ms: int = 500,
        retry_backoff_s: float = 0.05,
        start_id: str = "0",
        auto_ack: bool = True,
        decode: Any = None,
        what: str | None = None,
    ) -> None:
        self.r = r
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.count = count
        self.block_ms = block_ms
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.claim_interval_s = claim_interval_s
        self.alive = alive  # alive(consumer name) -> False once that consumer is known gone
        self.dead_check_s = dead_check_s
        self.dead_claim_idle_ms = dead_claim_idle_ms  # so two survivors do not steal from each other
        self.retry_backoff_s = retry_backoff_s
        self.start_id = start_id
        self.auto_ack = auto_ack  # False: the handler acks itself (e.g. after a later flush)
        self.decode = decode  # the wire type the handler gets, or None: raw entries
        self._decoder = codec.decoder(decode).decode if decode is not None else None
        self.what = what or (words(decode) if decode is not None else "entry")  # as reasons say it
        self._rejected: list[tuple[bytes, str]] = []
        self.dlq_stream = streams.dlq(stream)
        self.stats = WorkerStats()
        self._stop = asyncio.Event()
        self._retry_own = True  # first read: our own pending entries (left by a previous life)
        self._own_cursor = "0"  # where the re-read of our own pending entries is (paged)
        self.in_flight: set[bytes] = set()  # auto_ack=False: handed, not yet acked or released
        self._open = asyncio.Event()  # cleared while paused
        self._open.set()
        self._next_claim = 0.0
        self._next_dead_check = 0.0
        self.redelivered = False
        self._reasons: dict[bytes, str] = {}
        self._conn: FastRedis | None = None  # reads and acks: the hot path, off redis-py

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._open.set()  # a paused worker ends too

    def pause(self) -> None:
        """Read nothing more (no new entries, no reclaims) until `resume()`; the batch in hand is
        finished."""
        self._open.clear()

    def resume(self) -> None:
        """Read again after `pause()`; what was released meanwhile is re-read first."""
        self._open.set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def release(self, ids: list[bytes]) -> None:
        """Give back entries the handler was handed but did not take (auto_ack=False): they stay
        pending and are handed again, by a later re-read of our own pending entries."""
        if ids:
            self.in_flight.difference_update(ids)
            self._retry_from_start()

    async def ack(self, ids: list[bytes]) -> None:
        """Acknowledge entries handed earlier (auto_ack=False: once they are stored); they are no
        longer in flight."""
        for i in range(0, len(ids), 1000):
            await self._ack(ids[i : i + 1000])
        self.in_flight.difference_update(ids)

    def _retry_from_start(self) -> None:
        self._retry_own = True
        self._own_cursor = "0"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def setup(self) -> None:
        await ensure_group(self.r, self.stream, self.group, self.start_id)

    async def run(self) -> None:
        await self.setup()
        backoff = 0.1
        try:
            while not self._stop.is_set():
                if not self._open.is_set():
                    await self._open.wait()
                    continue
                try:
                    entries = await self._next_batch()
                    if entries:
                        await self.process(entries)
                    backoff = 0.1
                except outage.CAUGHT as exc:
                    if not redis_away(exc):
                        raise
                    # Redis went away (or cannot take writes for now: NOREPLICAS, a failover):
                    # keep the entries in hand pending (they are redelivered), retry with backoff.
                    log.warning("redis unavailable on %s: %s; retrying in %.1fs", self.stream, exc, backoff)
                    await self._close_conn()
                    with contextlib.suppress(*outage.CAUGHT):  # a cluster's failover: its new primary
                        await refresh_slots(self.r)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), backoff)
                    backoff = min(backoff * 2, 5.0)
                    self.stats.reconnects += 1
                    self._retry_from_start()  # what we hold in flight is not handed again
        finally:
            await self._close_conn()

    async def conn(self) -> FastRedis:
        """This worker's own connection (a blocking read holds it), opened on first use."""
        if self._conn is None or self._conn.closed:
            self._conn = await FastRedis.like(self.r, self.stream)
        return self._conn

    async def _close_conn(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()
            self._conn = None

    async def _read(self, start: str, block: int | None) -> list[Entry]:
        args: list[str | int] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count]
        if block is not None:
            args += ["BLOCK", block]
        conn = await self.conn()
        return fast_entries(await conn.call(*args, "STREAMS", self.stream, start))

    # -- reading -------------------------------------------------------------------------------
    async def _next_batch(self) -> list[Entry]:
        self.redelivered = True
        now = time.monotonic()
        if self.alive is not None and now >= self._next_dead_check:
            claimed = self._not_in_flight(await self.claim_from_gone())
            if claimed:
                return claimed  # check again at once: a gone consumer may hold more than a batch
            self._next_dead_check = now + self.dead_check_s
        if now >= self._next_claim:
            self._next_claim = now + self.claim_interval_s
            await self._touch_in_flight()
            claimed = await self.reclaim()
            if claimed:
                return claimed
        if self._retry_own:
            own = await self._own_pending()
            if own:
                return own
            self._retry_own = False
            self._own_cursor = "0"
        self.redelivered = False
        return await self._read(">", self.block_ms)

    def _not_in_flight(self, entries: list[Entry]) -> list[Entry]:
        if not self.in_flight:
            return entries
        return [(eid, f) for eid, f in entries if eid not in self.in_flight]

    async def _own_pending(self) -> list[Entry]:
        """The next page of our own pending entries after `_own_cursor`, without those in flight
        (an empty list: none left). Without entries in flight, XREADGROUP from the cursor;
        with some, XPENDING lists the page and only the others are claimed back (XCLAIM), so an
        entry in flight is not even counted as delivered again."""
        while True:
            if not self.in_flight:
                own = await self._read(self._own_cursor, None)
                if own:
                    self._own_cursor = own[-1][0].decode()
                return own
            start = "-" if self._own_cursor == "0" else f"({self._own_cursor}"
            rows = await self.r.xpending_range(
                self.stream, self.group, min=start, max="+", count=self.count, consumername=self.consumer
            )
            if not rows:
                return []
            last = rows[-1]["message_id"]
            self._own_cursor = last.decode() if isinstance(last, bytes) else str(last)
            ids: list[StreamIdT] = [row["message_id"] for row in rows if row["message_id"] not in self.in_flight]
            if not ids:
                continue
            resp = await self.r.xclaim(self.stream, self.group, self.consumer, 0, ids)
            got = [(eid, f) for eid, f in replies.pending(resp) if f is not None]
            if got:
                return got

    async def _touch_in_flight(self) -> None:
        """Reset the idle time of entries in flight that are getting old (XCLAIM JUSTID counts no
        delivery), so no other consumer's reclaim takes what this one still holds."""
        if not self.in_flight:
            return
        ordered = sorted(self.in_flight, key=id_key)
        ids: list[StreamIdT] = list(ordered)
        for i in range(0, len(ids), 1000):
            await self.r.xclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms // 2, ids[i : i + 1000], justid=True
            )

    async def claim_from_gone(self) -> list[Entry]:
        """Take over, without waiting for claim_idle_ms, the pending entries of a consumer that
        `alive` says is gone. XCLAIM's min idle keeps two survivors from taking the same entries
        from each other; an instance that was only paused, not gone, is fenced when it commits."""
        assert self.alive is not None
        try:
            consumers = await self.r.xinfo_consumers(self.stream, self.group)
        except ResponseError:  # no group yet
            return []
        me = self.consumer.encode()
        for c in consumers:
            name = c["name"] if isinstance(c["name"], bytes) else str(c["name"]).encode()
            if name == me or not int(c.get("pending") or 0) or await self.alive(name.decode()):
                continue
            rows = await self.r.xpending_range(
                self.stream, self.group, min="-", max="+", count=self.count, consumername=name
            )
            ids: list[StreamIdT] = [row["message_id"] for row in rows]
            if not ids:
                continue
            resp = await self.r.xclaim(self.stream, self.group, self.consumer, self.dead_claim_idle_ms, ids)
            claimed = [(eid, f) for eid, f in replies.pending(resp) if f is not None]
            if claimed:
                self.stats.reclaimed += len(claimed)
                log.warning(
                    "took over %d entries of %s from %s, which is gone", len(claimed), self.stream, name.decode()
                )
                return claimed
        return []

    async def reclaim(self) -> list[Entry]:
        """Take over entries another consumer left pending for longer than claim_idle_ms (never
        what this one holds in flight)."""
        cursor: bytes | str = "0-0"
        while True:
            resp = await self.r.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, cursor, count=self.count
            )
            claimed = self._not_in_flight([(eid, f) for eid, f in resp[1] if f is not None] if resp else [])
            deleted = resp[2] if resp and len(resp) > 2 else []
            if deleted:  # trimmed away while pending: nothing left to process
                await self.r.xack(self.stream, self.group, *deleted)
            self.stats.reclaimed += len(claimed)
            cursor = resp[0] if resp else b"0-0"
            if claimed or _text(cursor) == "0-0":
                return claimed

    # -- processing ----------------------------------------------------------------------------
    def reject(self, eid: bytes, reason: str) -> None:
        """Dead-letter entry `eid` of the batch in hand with `reason` once the handler returns (it
        decoded, but can never be handled); the rest of the batch is acked as usual."""
        self._rejected.append((eid, reason))

    async def process(self, entries: list[Entry]) -> None:
        items: list[Any] = entries
        if self._decoder is not None:
            items, bad = self._decode(entries)
            if bad:
                await self._bury(bad)
            if not items:
                return
        self._rejected = []
        if not self.auto_ack:
            self.in_flight.update(item[0] for item in items)  # the handler holds them until it acks
        try:
            await self.handler(items)
        except Exception as exc:  # any handler failure is retried or dead-lettered
            if denied(exc) is not None:
                raise  # the ACL refused the service a command: a deployment bug, not a bad entry
            self.stats.failed_batches += 1
            fields = dict(entries)
            if len(items) == 1:
                await self._failed([((items[0][0], fields[items[0][0]]), exc)])
                return
            failures: list[tuple[Entry, Exception]] = []
            good: list[bytes] = []
            for item in items:
                self._rejected = []
                try:
                    await self.handler([item])
                except Exception as one_exc:  # as above, one entry at a time
                    if denied(one_exc) is not None:
                        raise
                    failures.append(((item[0], fields[item[0]]), one_exc))
                    continue
                if self._rejected:
                    await self._bury_rejected(entries)
                else:
                    good.append(item[0])
            if good and self.auto_ack:
                await self._ack(good)
            await self._failed(failures)
            return
        ids = [item[0] for item in items]
        if self._rejected:
            rejected = await self._bury_rejected(entries)
            ids = [eid for eid in ids if eid not in rejected]
        if self.auto_ack:
            await self._ack(ids)

    def _decode(self, entries: list[Entry]) -> tuple[list[Item], list[tuple[bytes, dict[bytes, bytes], str, int]]]:
        dec, field_ = self._decoder, codec.FIELD
        assert dec is not None
        out: list[Item] = []
        bad: list[tuple[bytes, dict[bytes, bytes], str, int]] = []
        for eid, f in entries:
            try:
                out.append((eid, dec(f[field_])))
            except (msgspec.DecodeError, KeyError) as exc:
                why = "entry has no 'd' field" if isinstance(exc, KeyError) else str(exc)
                bad.append((eid, f, f"undecodable {self.what}: {why} (expected {type_name(self.decode)})", 1))
        return out, bad

    async def _bury_rejected(self, entries: list[Entry]) -> set[bytes]:
        """Dead-letter what the handler rejected; the ids it rejected."""
        rejected, self._rejected = self._rejected, []
        fields = dict(entries)
        await self._bury([(eid, fields[eid], reason, 1) for eid, reason in rejected if eid in fields])
        return {eid for eid, _ in rejected}

    async def _ack(self, ids: list[bytes]) -> None:
        if ids:
            await (await self.conn()).call("XACK", self.stream, self.group, *ids)
            self.stats.acked += len(ids)
            self.stats.processed += len(ids)
            self.stats.last_batch_ns = time.time_ns()

    async def _failed(self, failures: list[tuple[Entry, Exception]]) -> None:
        if not failures:
            return
        self.in_flight.difference_update(e[0] for e, _ in failures)  # handed again when retried
        counts = await self._delivery_counts([e[0] for e, _ in failures])
        retry = False
        for (eid, fields), exc in failures:
            reason = _reason(exc)
            deliveries = counts.get(eid, 1)
            if isinstance(exc, Poison) or deliveries >= self.max_deliveries:
                await self.dead_letter(eid, fields, reason, deliveries)
            else:
                log.warning(
                    "handler failed on %s %s (delivery %d of %d): %s",
                    self.stream,
                    eid,
                    deliveries,
                    self.max_deliveries,
                    reason,
                )
                retry = True
        if retry:
            self._retry_from_start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.retry_backoff_s)

    async def _delivery_counts(self, ids: list[bytes]) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        lo, hi = min(ids, key=id_key), max(ids, key=id_key)
        rows = await self.r.xpending_range(
            self.stream, self.group, min=lo, max=hi, count=len(ids) + 1000, consumername=self.consumer
        )
        wanted = set(ids)
        for row in rows:
            mid = row["message_id"]
            if mid in wanted:
                out[mid] = int(row["times_delivered"])
        return out

    async def dead_letter(self, eid: bytes, fields: dict[bytes, bytes], reason: str, deliveries: int = 1) -> None:
        """Move one entry to dlq.<stream> with its reason and origin, then ack it."""
        await self._bury([(eid, fields, reason, deliveries)])

    async def _bury(self, dead: list[tuple[bytes, dict[bytes, bytes], str, int]]) -> None:
        """Move entries to dlq.<stream> (records from backend.bus.deadletter) and ack them, in one
        MULTI."""
        if not dead:
            return
        async with self.r.pipeline(transaction=True) as pipe:
            for eid, fields, reason, deliveries in dead:
                deadletter.queue(
                    pipe,
                    self.stream,
                    fields,
                    reason,
                    eid=eid,
                    group=self.group,
                    consumer=self.consumer,
                    deliveries=deliveries,
                )
            pipe.xack(self.stream, self.group, *[d[0] for d in dead])
            await pipe.execute()
        self.stats.dead_lettered += len(dead)
        self.in_flight.difference_update(d[0] for d in dead)
        for eid, _, reason, _ in dead:
            log.warning("dead-lettered %s %s: %s", self.stream, eid, reason)


def id_key(eid: bytes) -> tuple[int, int]:
    ms, _, seq = eid.partition(b"-")
    return int(ms), int(seq or 0)


def _text(eid: bytes | str) -> str:
    return eid.decode() if isinstance(eid, bytes) else eid


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if isinstance(exc, Poison):
        return text or "poison message"
    return f"{name}: {text}" if text else name


def type_name(type_: Any) -> str:
    """A wire type as reasons name it: `Order`, `Order | CancelRequest`."""
    if get_origin(type_) in (Union, UnionType) or isinstance(type_, UnionType):
        return " | ".join(type_name(t) for t in get_args(type_))
    return getattr(type_, "__name__", str(type_))


def words(type_: Any) -> str:
    """A wire type in words: RawTickBatch -> "raw tick batch" (a union: its first member's)."""
    if get_origin(type_) in (Union, UnionType) or isinstance(type_, UnionType):
        return words(get_args(type_)[0])
    name = getattr(type_, "__name__", str(type_))
    return "".join(" " + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))
