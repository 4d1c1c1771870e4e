"""The live source: reads Redis (heartbeats, md.ticks, bars, order events, migration, gates, audit)
into a Snapshot. Runs in a worker thread; keeps just enough state to compute rates.

Streams are read incrementally through the broadcast reader (backend/bus/broadcast.py), each seeded
with its newest entries; the newest tick batches are looked at again each poll. Every read skips
what does not decode and counts it per stream (`skips`); the counts are in the snapshot's alerts
(an undecodable ops.gates entry also breaks the chain: the audit verdict says so)."""

from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from typing import Any

import redis

from backend.bus import archive, connection, replies, streams
from backend.bus.acl import active_denials
from backend.bus.broadcast import BroadcastSync, newest_sync
from backend.bus.entries import Skips, decode_entries, note
from backend.health import read_heartbeats, redis_memory
from backend.marketdata import ticks as tickcols
from backend.messages import Bar, ControlCommand, Heartbeat, MigrationEvent, OrderEvent, Position, TickBatch
from backend.migration import inventory, tracker
from backend.migration.checklist import DECISIONS, checklists
from backend.migration.sheet import all_sections as sheets
from backend.migration.state import ATTEST_STEP, LOG_HOURS, events, fold
from backend.runtime.supervisor import read_table
from backend.trading.killswitch import kill_switch_on
from console.data.series import SeriesBook
from console.data.services import read_services
from console.data.snapshot import (
    BarRow,
    GateRow,
    HealthRow,
    MarketRow,
    OrderRow,
    PositionRow,
    Snapshot,
)

RISK_SLA_MS = 1.5
LAST_BATCHES = 8  # newest md.ticks entries read per poll for last prices
SEED_BARS = 200  # 1 s bars read at the first poll (the last few seconds seed the rates)
AUDIT_TAIL = 200  # newest migration moves and kill switch toggles kept for the audit screen
QUIET_NS = 3_000_000_000  # a symbol with no 1 s bar this recent shows 0 ticks/s
SEED_POSITIONS = 5000  # newest entries of the positions stream read at the first poll


class LiveSource:
    def __init__(self, url: str, settings: Any, operator: str, *, slow_every: int = 4) -> None:
        self.url = url
        self.settings = settings
        self.operator = operator
        self.r = connection.client(
            url, connection.operator_login(settings, url), socket_connect_timeout=2, socket_timeout=5
        )  # as the operator
        self.skips = Skips()  # undecodable entries skipped since the console started, per stream
        self.bar_reader = BroadcastSync(self.r, {streams.MD_BARS_1S: "$"}, count=5000, decode=Bar, skips=self.skips)
        self.order_reader = BroadcastSync(
            self.r, {streams.ORDERS_EVENTS: "0"}, count=5000, decode=OrderEvent, skips=self.skips
        )
        # its own tally: the board reads the whole of ops.migration, and counts what it skips there
        self.audit_reader = BroadcastSync(
            self.r,
            {streams.OPS_MIGRATION: "$", streams.OPS_CONTROL: "$"},
            count=5000,
            decode={streams.OPS_MIGRATION: MigrationEvent, streams.OPS_CONTROL: ControlCommand},
        )
        self.audit_log: dict[str, deque[Any]] = {s: deque(maxlen=AUDIT_TAIL) for s in self.audit_reader.cursors}
        self._seeded: set[str] = set()  # streams whose newest entries were read as a start
        self.last: dict[str, float] = {}
        self.bar_start: dict[str, int] = {}
        self.recent_bars: deque[Bar] = deque(maxlen=12)
        self.prices: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=120))
        self.first: dict[str, float] = {}
        self.volume: dict[str, float] = defaultdict(float)
        self.rates: dict[str, float] = {}
        self.risk_series: deque[float] = deque(maxlen=240)
        self.book = SeriesBook()  # what the plots show, over the last minutes
        self.position_reader = BroadcastSync(
            self.r, {streams.POSITIONS: "$"}, count=5000, decode=Position, skips=self.skips
        )
        self.positions: dict[tuple[str, str], Position] = {}
        self.orders: dict[str, OrderEvent] = {}
        self.history: dict[str, list[str]] = defaultdict(list)
        self.inv = inventory.load()
        self.levels = self.inv.levels()
        self.sheets: dict[str, list[tuple[str, list[str]]]] | None = None
        """Built on the second slow poll, not the first: it imports every service's module (pandas and
        all), which the first frame must not wait for (the board says "loading" until then)."""
        self._migration_events: list[MigrationEvent] = []
        self.polls = 0
        self.slow_every = slow_every  # the board, gates and audit are read every this many polls
        self._slow: dict[str, object] = {}
        self._slow_alerts: list[str] = []
        self._beats: list[Heartbeat] = []  # this poll's heartbeats, read once
        self.gate_feed: Any = None  # gates.feed.GateFeed, made on the first read of the gates
        self._gate_defs: Any = None  # the gates in use, and the file stamp they were loaded at
        self._gate_stamp: tuple[str, int, int] | None = None
        self._gate_error = ""
        self._who: tuple[str, str] | None = None  # (operator shown, key) once the signing key is found
        self._anchor_seen: tuple[int, ...] | None = None  # log lengths at the last anchor check
        self._anchor_alert = ""
        self._anchor_polls = 0

    def close(self) -> None:
        self.r.close()

    def poll(self) -> Snapshot:
        now = time.time()
        snap = Snapshot(
            clock=time.strftime("%H:%M:%S", time.gmtime(now)) + " UTC",
            environment=self.settings.environment,
            redis=self.url,
            operator=self.operator,
        )
        try:
            snap.operator, snap.key = self._whoami()
            self._health(snap)
            self._market(snap)
            self._orders(snap)
            self._risk(snap)
            self._positions(snap)
            # the board, gates and audit change on an operator's time scale: every 2 s is enough
            if self.polls % self.slow_every == 0 or not self._slow:
                self._migration(snap)
                self._gates(snap)
                self._tracker(snap)
                read_services(self.r, snap, self._beats, self.skips)
                self._slow = {
                    k: getattr(snap, k)
                    for k in (
                        "board",
                        "progress",
                        "gates",
                        "open_gates",
                        "audit",
                        "audit_verdict",
                        "tracker",
                        "sheets",
                        "levels",
                        "checklists",
                        "hours",
                        *("alert_rows", "jobs", "models", "backtests", "catalog", "instruments"),
                    )
                }
                self._slow_alerts = [a for a in snap.alerts if a.startswith(("gate ", "audit ", "console: "))]
            else:
                for k, v in self._slow.items():
                    setattr(snap, k, v)
                snap.alerts.extend(self._slow_alerts)
            self._skipped(snap)
            self._plot(snap, now)
            self.polls += 1
        except redis.RedisError as exc:
            snap.connected = False
            snap.error = f"lost connection to {self.url}: {exc}; reconnecting"
        return snap

    def _whoami(self) -> tuple[str, str]:
        """The operator as the registry names the signing key, and the key's fingerprint (found
        once; a key not yet registered is looked up again on the slow polls)."""
        if self._who is not None:
            return self._who
        from backend.errors import TradeopsError
        from gates import operators, signing

        try:
            reg = operators.load(self.r)
            signer = signing.signer_for(self.settings.signing_key, reg.fingerprints())
        except TradeopsError as exc:
            return self.operator, f"[red]none: {str(exc)[:60]}[/]"
        name = reg.name_of(signer.fingerprint)
        if not name:
            return self.operator, f"{signer.fingerprint} [red](not registered)[/]"
        self._who = (name, signer.fingerprint)
        return self._who

    # -- pieces ------------------------------------------------------------------------------------
    def _seed(self, reader: BroadcastSync, stream: str, count: int) -> list[tuple[str, bytes, Any]]:
        """The newest `count` entries of `stream`, oldest first, decoded as the reader decodes; the
        reader reads on after the newest (or from the start of an empty stream)."""
        self._seeded.add(stream)
        out: list[tuple[str, bytes, Any]] = []
        for name in [n for n, b in reader.base.items() if b == stream] or [stream]:  # each partition's
            newest = list(reversed(replies.entries(self.r.xrevrange(name, count=count))))
            out += reader.seed(name, newest)
        return out

    def _skipped(self, snap: Snapshot) -> None:
        """What could not be decoded, per stream: a plain count and one alert line each."""
        self.skips.set(streams.OPS_CONTROL, self.audit_reader.skips.by_stream.get(streams.OPS_CONTROL, 0))
        snap.skipped = dict(self.skips.by_stream)
        if self.gate_feed is not None and self.gate_feed.skipped:
            snap.skipped[streams.OPS_GATES] = self.gate_feed.skipped
        if self.gate_feed is not None and self.gate_feed.registry_skips:
            snap.skipped[streams.OPS_OPERATORS] = self.gate_feed.registry_skips.total
        snap.alerts.extend(note(s, n) for s, n in sorted(snap.skipped.items()))

    def _health(self, snap: Snapshot) -> None:
        beats = self._beats = read_heartbeats(self.r, self.skips)
        nowns = time.time_ns()
        by: dict[str, list] = defaultdict(list)
        for b in beats:
            by[b.service].append(b)
        for s in self.inv.services:
            bs = [b for b in by.get(s.name, []) if nowns - b.ts_ns < 5e9]
            running = [b for b in bs if b.state == "running"]
            state = "absent" if not bs else ("ok" if running else "degraded")
            if bs and any(b.dlq or b.state == "degraded" for b in bs):
                state = "degraded" if state == "ok" else state
            for b in bs:
                if b.state == "degraded":
                    snap.alerts.append(f"{s.name} ({b.instance}) degraded: {b.reason or 'no reason given'}")
            snap.health.append(
                HealthRow(
                    s.name,
                    s.priority,
                    state,
                    legacy=sum(b.environment == "legacy" for b in bs),
                    target=sum(b.environment == "target" for b in bs),
                    rate=sum(b.rate for b in bs),
                    lag=max((b.lag for b in bs), default=0),
                    pending=max((b.pending for b in bs), default=0),
                    dlq=max((b.dlq for b in bs), default=0),
                    partitions=owned_partitions(bs),
                )
            )
            if any(b.dlq for b in bs):
                snap.alerts.append(f"{s.name}: {max(b.dlq for b in bs)} message(s) in its dead-letter stream")
        snap.infra = [(i.name, "ok" if i.name == "redis" else "stand-in") for i in self.inv.infra]
        snap.alerts.extend(f"ACL: {m}" for m in reversed(active_denials(self.r)[:8]))  # alerting's, from ACL LOG
        mem = redis_memory(self.r)
        snap.redis_used, snap.redis_max = mem.used, mem.maxmemory
        if mem.high:
            snap.alerts.append(f"{mem.line()}: at 100% every write fails")

    def _market(self, snap: Snapshot) -> None:
        """Per-symbol last price, ticks/s and volume at a cost that does not grow with the tick
        rate: prices from the newest few tick batches, rates and volume from the 1 s bars (each
        carries its trade count and volume), read incrementally."""
        newest = newest_sync(self.r, streams.MD_TICKS, LAST_BATCHES)  # each partition's, when split
        batches, bad = decode_entries(newest, TickBatch, stream=streams.MD_TICKS)
        self.skips.set(streams.MD_TICKS, bad)  # the same few batches are looked at each poll
        for _, batch in batches:
            self.last.update(tickcols.last_prices(batch))
        if streams.MD_BARS_1S not in self._seeded:  # first poll: the last few seconds seed the rates
            items = self._seed(self.bar_reader, streams.MD_BARS_1S, SEED_BARS)
        else:
            items = self.bar_reader.read()
        for _, _, bar in items:
            seen = self.bar_start.get(bar.symbol, 0)
            if bar.start_ns > seen:
                self.bar_start[bar.symbol] = bar.start_ns
                self.rates[bar.symbol] = float(bar.trades)  # trades in the newest closed second
            self.volume[bar.symbol] += bar.volume
            self.recent_bars.appendleft(bar)
        quiet_before = time.time_ns() - QUIET_NS
        for sym, px in self.last.items():
            self.prices[sym].append(px)
            self.first.setdefault(sym, px)
        for sym in sorted(self.prices):
            last = self.prices[sym][-1]
            first = self.first[sym]
            rate = self.rates.get(sym, 0.0) if self.bar_start.get(sym, 0) >= quiet_before else 0.0
            snap.market.append(
                MarketRow(
                    sym,
                    last,
                    (last / first - 1) * 100 if first else 0.0,
                    rate,
                    self.volume[sym],
                    list(self.prices[sym]),
                )
            )
        snap.total_tps = sum(m.ticks_per_s for m in snap.market)
        for bar in self.recent_bars:  # newest first, from the read above (no second read)
            start = time.strftime("%H:%M:%S", time.gmtime(bar.start_ns / 1e9))
            snap.bars.append(
                BarRow(bar.symbol, bar.interval, start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades)
            )

    def _orders(self, snap: Snapshot) -> None:
        for _, _, ev in self.order_reader.read():
            self.orders[ev.client_order_id] = ev
            self.history[ev.client_order_id].append(
                f"{time.strftime('%H:%M:%S', time.gmtime(ev.ts_ns / 1e9))}  {ev.prev_state or '-'} -> {ev.state}"
                + (f"  {ev.reason}" if ev.reason else "")
            )
        if len(self.orders) > 2000:
            for k in sorted(self.orders, key=lambda k: self.orders[k].ts_ns)[:-2000]:
                self.orders.pop(k)
                self.history.pop(k, None)
        for ev in sorted(self.orders.values(), key=lambda e: e.ts_ns, reverse=True)[:300]:
            snap.orders.append(
                OrderRow(
                    time.strftime("%H:%M:%S", time.gmtime(ev.ts_ns / 1e9)),
                    ev.client_order_id,
                    ev.account,
                    ev.symbol,
                    ev.side,
                    ev.quantity,
                    f"{ev.limit_price:g}" if ev.limit_price else "mkt",
                    ev.state,
                    ev.filled_qty,
                    ev.reason,
                )
            )
        snap.order_history = dict(self.history)

    def _risk(self, snap: Snapshot) -> None:
        beats = {b.service: b for b in self._beats if b.service in ("oms", "risk")}  # read by _health
        oms = beats.get("oms")
        if oms:
            lat = oms.latency_ms
            snap.risk_pcts = {k: lat[f"risk_rt_{k}"] for k in ("p50", "p90", "p99") if f"risk_rt_{k}" in lat}
            if "p99" in snap.risk_pcts:
                self.risk_series.append(snap.risk_pcts["p99"])
            snap.risk_hist = [(float(b), int(c)) for b, c in oms.extra.get("risk_rt_hist", [])]
        risk = beats.get("risk")
        if risk:
            snap.denials = dict(risk.extra.get("denials", {}))
        snap.risk_series = list(self.risk_series)
        snap.kill_switch = kill_switch_on(self.r)

    def _positions(self, snap: Snapshot) -> None:
        """ptrc's newest position per account and symbol, read on from the last poll."""
        if streams.POSITIONS not in self._seeded:
            items = self._seed(self.position_reader, streams.POSITIONS, SEED_POSITIONS)
        else:
            items = self.position_reader.read()
        for _, _, p in items:
            self.positions[(p.account, p.symbol)] = p
        for (_, _), p in sorted(self.positions.items()):
            snap.positions.append(
                PositionRow(
                    p.account,
                    p.symbol,
                    p.quantity,
                    p.avg_price,
                    p.mark,
                    p.realized_pnl,
                    p.unrealized_pnl,
                    p.exposure,
                )
            )

    def _plot(self, snap: Snapshot, now: float) -> None:
        """This poll's figures into the plots' history, and the history into the snapshot."""
        add = self.book.add
        for k in ("p50", "p99"):
            if k in snap.risk_pcts:
                add(f"risk_rt_{k}", now, snap.risk_pcts[k])
        oms = next((b for b in self._beats if b.service == "oms"), None)
        if oms:
            for k in ("p50", "p99"):
                v = oms.latency_ms.get(f"intake_to_accepted_{k}")
                if v is not None:
                    add(f"oms_{k}", now, v)
        for m in snap.market:
            add(f"ticks:{m.symbol}", now, m.ticks_per_s)
        pnl: dict[str, float] = defaultdict(float)
        exposure: dict[str, float] = defaultdict(float)
        for p in snap.positions:
            pnl[p.account] += p.realized + p.unrealized
            exposure[p.account] += abs(p.exposure)
        for acct, v in pnl.items():
            add(f"pnl:{acct}", now, v)
            add(f"exposure:{acct}", now, exposure[acct])
        if snap.redis_used:
            add("redis_mb", now, snap.redis_used / 2**20)
        for h in snap.health:
            if h.state != "absent":
                add(f"lag:{h.service}", now, float(h.lag))
        self.book.drop_older(now)
        snap.now = now
        snap.series = self.book.snapshot()

    def _migration(self, snap: Snapshot) -> None:
        skipped = Skips()
        self._migration_events = events(self.r, skipped)
        states = fold(self._migration_events)
        if self.sheets is None and self.polls > 0:
            self.sheets = sheets()
        snap.sheets, snap.levels = self.sheets or {}, self.levels
        self.skips.set(streams.OPS_MIGRATION, skipped.total)  # the whole log is read each time
        health = {h.service: h.state for h in snap.health}
        for p, svcs in self.inv.by_priority().items():
            snap.board[p] = [(s.name, states[s.name].state, health.get(s.name, "absent")) for s in svcs]
            snap.progress[p] = (sum(states[s.name].state == "migrated" for s in svcs), len(svcs))

    def _tracker(self, snap: Snapshot) -> None:
        """The completion tracker from this poll's migration events, verified gate decisions and
        heartbeats."""
        decided = {g: (st.decision, st.decided_ts_ns) for g, st in self.gate_feed.states().items() if st.decision}
        snap.tracker = tracker.figures(self._migration_events, decided, tracker.instances(self._beats), inv=self.inv)
        gates = {g.id: (g.status, g.status if g.status in DECISIONS else "") for g in snap.gates}
        runtime = (read_table(self.settings.resolved_data_dir()) or {}).get("runtime", "process")
        checklists(snap, self._migration_events, gates, self._beats, runtime, self.inv)

    def _gates(self, snap: Snapshot) -> None:
        """The gates from the folded state of ops.gates: each poll reads only the entries after the
        last it saw, folds them into the gate state and verifies them on the chain (gates/feed.py)."""
        from gates import sealed
        from gates.feed import GateFeed

        gates = self._gates_defined(snap)
        if self.gate_feed is None:
            self.gate_feed = GateFeed(self.r, gates)
        self.gate_feed.poll(gates)
        from gates.operators import when

        for st in self.gate_feed.states().values():
            g = st.gate
            notes = [f"reopened: {st.reopened}"] if st.reopened else []
            notes += [f"cancelled: approval by {a.operator}: {why}" for a, why in st.cancelled[-3:]]
            notes += [
                f"not counted: {ev.kind} labelled {ev.operator} ({when(ev.ts_ns)[11:19]}): {why}"
                for ev, why in st.rejected[-3:]
            ]
            snap.gates.append(
                GateRow(
                    g.id,
                    g.title,
                    st.status,
                    f"{len(st.counted)}/{g.approvals}",
                    [] if st.decision else st.approvals_needed(),
                    g.critical,
                    [
                        (c.check.id, c.check.kind, c.check.required, c.outcome, _brief(c.evidence))
                        for c in st.checks.values()
                    ],
                    evidence=st.evidence_digest,
                    details={c.check.id: evidence_fields(c.evidence) for c in st.checks.values()},
                    approved_by=[f"{a.operator} ({a.fingerprint})" for a in st.counted],
                    notes=notes,
                )
            )
            if st.status not in ("proceed",):
                snap.open_gates.append(f"{g.id}: {st.status}")
            for c in st.checks.values():
                if c.outcome == "failed":
                    snap.alerts.append(f"gate {g.id}: check {c.check.id} failed")
        trust = self.gate_feed.ledger.trust
        rows = [
            (
                ev.ts_ns,
                ev.gate,
                ev.kind,
                ev.check or ev.decision or "",
                ev.operator,
                ev.reason or str(ev.evidence.get("note", "")),
                _mark(trust.get(ev.hash), bool(ev.sig)),
                f"#{n}",  # an entry of the hash chain (ops.gates), by its number
            )
            for (_, ev), n in zip(self.gate_feed.recent, self.gate_feed.recent_no, strict=True)
        ]
        reg = self.gate_feed.registry
        # the migration log beside the gate log, in time order, and the kill switch's toggles
        # (audited on ops.control): the newest of each, read on from where the last poll stopped
        for stream, tail in self.audit_log.items():
            if stream not in self._seeded:
                tail.extend(m for _, _, m in self._seed(self.audit_reader, stream, AUDIT_TAIL))
        for stream, _, msg in self.audit_reader.read():
            self.audit_log[stream].append(msg)
        for m in self.audit_log[streams.OPS_MIGRATION]:
            rows.append(
                (
                    m.ts_ns,
                    m.service,
                    "migration",
                    f"logged {m.detail.get('hours', 0):g} h"
                    if m.action == LOG_HOURS
                    else f"attested {m.detail.get('step', '?')}"
                    if m.action == ATTEST_STEP
                    else f"{m.from_state or '-'} -> {m.to_state}",
                    m.operator,
                    m.reason,
                    _mark(sealed.judge_move(reg, m), bool(m.sig)),
                    NOT_CHAINED,
                )
            )
        for c in self.audit_log[streams.OPS_CONTROL]:
            if c.command == "kill_switch":
                rows.append(
                    (
                        c.ts_ns,
                        c.target,
                        "kill switch",
                        "ON" if c.args.get("on") else "off",
                        c.operator,
                        c.reason,
                        _mark(sealed.judge_control(reg, c), bool(c.sig)),
                        NOT_CHAINED,
                    )
                )
        for ts, *rest in sorted(rows)[-300:]:
            snap.audit.append((time.strftime("%H:%M:%S", time.gmtime(ts / 1e9)), *rest))
        v = self.gate_feed.verdict
        snap.audit_verdict = f"chain OK ({v.checked} entries)" if v.ok else f"chain BROKEN: {v.problem}"
        alert = self._anchor_check()
        if alert:
            snap.audit_verdict += f" · ANCHOR FAILED: {alert}"
            snap.alerts.append(f"audit anchor: {alert}")

    def _anchor_check(self) -> str:
        """Whether the live logs still extend the signed checkpoints (gates/anchor.py): read whole
        when a log's length changed since the last check, else the last answer."""
        from gates import anchor, proof

        with self.r.pipeline(transaction=False) as pipe:  # the moves and toggles are anchored too
            pipe.xlen(streams.OPS_MIGRATION)
            pipe.xlen(streams.OPS_CONTROL)
            moves, toggles = pipe.execute()
        lengths = (self.gate_feed.count, self.gate_feed.registry.read, int(moves), int(toggles))
        self._anchor_polls += 1
        if lengths != self._anchor_seen or self._anchor_polls % 30 == 0:  # a rewrite keeps the lengths
            try:
                logs = proof.from_redis(self.r)
            except archive.ArchiveUnreadable as exc:
                self._anchor_alert = str(exc)
            else:
                where = anchor.places(self.settings.resolved_data_dir(), self.settings.anchor_to)
                bad = [f.text for f in anchor.check(logs.chains(), self.gate_feed.registry, where) if not f.ok]
                self._anchor_alert = bad[0] if bad else ""
            self._anchor_seen = lengths
        return self._anchor_alert

    def _gates_defined(self, snap: Snapshot) -> Any:
        """The gates of the settings (gates.model.configured, as the CLI loads them), loaded again
        when the gates file changes; a file that no longer loads keeps the gates in use, with an alert."""
        from backend.errors import TradeopsError
        from gates import model

        f = self.settings.gates_file
        try:
            st = os.stat(f) if f else None
            stamp = (f, st.st_mtime_ns, st.st_size) if f and st else None
        except OSError:
            stamp = (f, -1, -1)
        if self._gate_defs is None or stamp != self._gate_stamp:
            try:
                self._gate_defs = model.configured(self.settings)
            except TradeopsError as exc:
                if self._gate_defs is None:
                    self._gate_defs = model.load()
                self._gate_error = f"gate definitions not loaded: {exc}"
            else:
                self._gate_error = ""
            self._gate_stamp = stamp
        if self._gate_error:
            snap.alerts.append(self._gate_error)
        return self._gate_defs


UNSIGNED = "unsigned"
NOT_CHAINED = "—"  # a migration move or kill switch toggle: signed one by one, anchored, not chained


def _mark(t: Any, signed: bool) -> str:
    """An audit row's signature: `✓ who` signed it (valid), `✗ why` it counts for nothing
    (invalid), or `unsigned` (counts for nothing either); `signed`: the entry carries a signature
    (one the fold has not judged is shown as such, never blank)."""
    if t is None:
        return "✗ not judged" if signed else UNSIGNED
    if t.ok:
        return f"✓ {t.name}"
    return UNSIGNED if t.status == "unsigned" else f"✗ {t.why}"[:60]


def evidence_fields(ev: dict) -> list[str]:
    """Every field of a check's evidence, one "name=value" each, in the order the check gave them."""
    return [f"{k}={v}" for k, v in ev.items()]


def _brief(ev: dict) -> str:
    for k in ("value", "rows", "entries", "probed", "note", "reason", "error"):
        if k in ev:
            return f"{k}={ev[k]}"[:60]
    return ""


def owned_partitions(beats: list[Heartbeat]) -> str:
    """What each instance's heartbeat says it owns, `0,2|1,3 of 4` ("" when nothing is partitioned)."""
    owned = [b for b in sorted(beats, key=lambda b: b.instance) if "partitions" in b.extra]
    if not owned:
        return ""
    parts = "|".join(",".join(str(p) for p in b.extra["partitions"]) or "-" for b in owned)
    return f"{parts} of {owned[0].extra.get('of', '?')}"
