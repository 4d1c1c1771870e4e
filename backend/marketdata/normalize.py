"""Vectorised tick validation and OHLCV aggregation (no Redis here; the normalizer service wires
it to the bus).

Validation rejects, with a reason naming the numbers: unparseable price or quantity, non-finite or
non-positive price or quantity, unknown symbol, a timestamp too far in the future or past, and a
duplicate trade id (per symbol: at or below the highest id already accepted, or repeated in the
batch). Venue trade ids rise per symbol, so a high-water mark per symbol is the whole memory of
what was accepted.

While two gateways publish the same trades (the overlap of a blue/green cutover) a tick at or
below the mark is not always a bad one. The newest published ticks are remembered
(`PublishedTicks`), and above the floor of that memory (the mark at start, raised as old ticks
are forgotten) a tick at or below the mark is:
- a repeat when it was published with the same price, quantity, time and side: counted in
  `repeats` and dropped, not rejected;
- a duplicate when it was published with other values: rejected;
- late when it was never published (one gateway's batch overtaken by the other's newer one):
  accepted, so the overlap loses nothing.
At or below the floor it is rejected as a duplicate, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backend.marketdata import raw as rawcols
from backend.marketdata import ticks as tickcols
from backend.messages import Bar, RawTickBatch, TickBatch

NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
NO_CODE = np.uint16(0xFFFF)
INTERVALS = {"1s": 1_000_000_000, "1m": 60_000_000_000}


SMALL = 32  # a column this short is parsed in Python: Arrow's fixed cost per call is larger
_number = re.compile(NUMBER.encode())


def _parse_small(data: bytes, offsets: np.ndarray) -> np.ndarray | None:
    """A few well-formed numbers parsed straight from the column's bytes; None if any is not a
    plain decimal number (the caller then takes the Arrow path, which says which ones)."""
    out = np.empty(len(offsets) - 1)
    for i in range(len(out)):
        s = data[offsets[i] : offsets[i + 1]]
        if _number.fullmatch(s) is None:
            return None
        out[i] = float(s)
    return out


def _column(b: RawTickBatch, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The `price` or `qty` column parsed as float64, and its unparseable mask (None: all parsed)."""
    if b.n <= SMALL:
        vals = _parse_small(getattr(b, name), np.frombuffer(getattr(b, f"{name}_offsets"), np.int32))
        if vals is not None:
            return vals, None
    return _parse(rawcols.strings(b, name))


def _parse(arr: pa.StringArray) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 values; and a mask of unparseable entries (None when all parsed)."""
    try:
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ok = pc.match_substring_regex(arr, NUMBER)
        ok = pc.fill_null(ok, False)
        vals = pc.cast(pc.if_else(ok, arr, "nan"), pa.float64()).to_numpy(zero_copy_only=False)
        return vals, ~ok.to_numpy(zero_copy_only=False)


REMEMBER = 200_000
"""Published ticks remembered (all symbols) to recognise repeats: many seconds of an overlap."""
_TID_BITS = 48  # key of a tick: symbol code << 48 ^ trade id


def tick_keys(sym: np.ndarray, tid: np.ndarray) -> np.ndarray:
    """One int64 per tick naming its symbol and trade id."""
    return (sym.astype(np.int64) << _TID_BITS) ^ tid


class _Generation:
    """Ticks published in one stretch of time: the columns as they were published, sorted by key
    into one index only when a lookup needs it (the usual batch never looks, so publishing costs
    no more than keeping the arrays)."""

    COLUMNS = 6  # symbol code, trade id, price, quantity, trade time, buyer is maker

    def __init__(self) -> None:
        self.keys = np.empty(0, np.int64)
        self.cols: list[np.ndarray] = []
        self.pending: list[tuple[np.ndarray, ...]] = []
        self.size = 0

    def add(self, cols: tuple[np.ndarray, ...]) -> None:
        self.pending.append(cols)
        self.size += len(cols[0])

    def index(self) -> tuple[np.ndarray, list[np.ndarray]]:
        if self.pending:
            new = [np.concatenate([p[c] for p in self.pending]) for c in range(self.COLUMNS)]
            keys = np.concatenate([self.keys, tick_keys(new[0], new[1])])
            cols = [np.concatenate([a, b]) for a, b in zip(self.cols, new, strict=True)] if self.cols else new
            order = np.argsort(keys, kind="stable")  # a sorted run and a short one: close to linear
            self.keys, self.cols = keys[order], [c[order] for c in cols]
            self.pending.clear()
        return self.keys, self.cols


class PublishedTicks:
    """The newest published ticks (at least `remember / 2`, at most `remember`): two generations,
    the older dropped when the newer is full."""

    def __init__(self, remember: int = REMEMBER) -> None:
        self.half = max(1, remember // 2)
        self.gens = [_Generation()]

    def add(
        self,
        sym: np.ndarray,
        tid: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        trade_ns: np.ndarray,
        buyer_maker: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Remember published ticks; returns the (symbol codes, trade ids) forgotten to make room."""
        if len(tid) == 0:
            return None
        dropped = None
        if self.gens[-1].size >= self.half:
            if len(self.gens) == 2:
                _, cols = self.gens[0].index()
                dropped = (cols[0], cols[1])
            self.gens = [self.gens[-1], _Generation()]
        self.gens[-1].add((sym, tid, price, qty, trade_ns, buyer_maker))
        return dropped

    def find(
        self,
        sym: np.ndarray,
        tid: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        trade_ns: np.ndarray,
        buyer_maker: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per tick: (published, published with these very values)."""
        keys = tick_keys(sym, tid)
        found = np.zeros(len(keys), bool)
        same = np.zeros(len(keys), bool)
        for gen in self.gens:
            k, cols = gen.index()
            if len(k) == 0:
                continue
            pos = np.minimum(np.searchsorted(k, keys), len(k) - 1)
            hit = k[pos] == keys
            if hit.any():
                at = pos[hit]
                eq = (
                    (cols[2][at] == price[hit])
                    & (cols[3][at] == qty[hit])
                    & (cols[4][at] == trade_ns[hit])
                    & (cols[5][at] == buyer_maker[hit])
                )
                found |= hit
                same[np.flatnonzero(hit)[eq]] = True
        return found, same


@dataclass
class Rejected:
    batch: int  # index of the raw batch in the call
    index: int  # index of the tick in that batch
    reason: str


@dataclass
class Validated:
    ticks: TickBatch | None
    rejected: list[Rejected] = field(default_factory=list)
    repeats: int = 0
    """Ticks already published (the overlap of two gateways), dropped and not rejected."""
    # columns of the accepted ticks, for aggregation
    sym: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint16))
    price: np.ndarray = field(default_factory=lambda: np.empty(0))
    qty: np.ndarray = field(default_factory=lambda: np.empty(0))
    trade_ns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


class TickValidator:
    def __init__(
        self,
        symbols: list[str] | None = None,
        *,
        max_future_s: float = 5.0,
        max_past_s: float = 3600.0,
        remember: int = REMEMBER,
    ) -> None:
        self.fixed = symbols is not None
        self.symbols: list[str] = list(symbols or [])
        self._code: dict[str, int] = {s: i for i, s in enumerate(self.symbols)}
        self.hwm = np.full(max(len(self.symbols), 1), -1, np.int64)
        self.floor = self.hwm.copy()  # ids at or below: published before what `published` remembers
        self.max_future_ns = int(max_future_s * 1e9)
        self.max_past_ns = int(max_past_s * 1e9)
        self.published = PublishedTicks(remember)

    # -- state that survives a restart -------------------------------------------------------------
    def hwm_map(self) -> dict[str, int]:
        return {s: int(self.hwm[i]) for i, s in enumerate(self.symbols) if self.hwm[i] >= 0}

    def load_hwm(self, marks: dict[str, int]) -> None:
        for s, v in marks.items():
            code = self._global(s)
            if code is not None:
                self.hwm[code] = max(self.hwm[code], v)
                self.floor[code] = max(self.floor[code], v)

    def code_of(self, symbol: str) -> int | None:
        """The symbol's code (in `symbols`), None for one the fixed list does not have."""
        return self._global(symbol)

    def _global(self, symbol: str) -> int | None:
        code = self._code.get(symbol)
        if code is None and not self.fixed:
            code = self._code[symbol] = len(self.symbols)
            self.symbols.append(symbol)
            if code >= len(self.hwm):
                grow = np.full(len(self.hwm) + 8, -1, np.int64)
                self.hwm = np.concatenate([self.hwm, grow])
                self.floor = np.concatenate([self.floor, grow])
        return code

    # -- validation ------------------------------------------------------------------------------
    def validate(
        self, batches: list[RawTickBatch], now_ns: int, normalized_ns: int = 0, *, check_hwm: bool = True
    ) -> Validated:
        """Accepted ticks as one TickBatch, and the rejected with their reasons.

        `check_hwm=False` for batches delivered again (after a crash, or taken over from another
        consumer of the group): they are older than the marks that later batches raised, and were
        never published (their commit would have acked them), so only repeats inside the call
        count as duplicates; the marks still only rise."""
        parts: list[tuple[np.ndarray, ...]] = []
        rejected: list[Rejected] = []
        repeats = 0
        for bi, b in enumerate(batches):
            if b.n == 0:
                continue
            part, rej, rep = self._one(bi, b, now_ns, check_hwm)
            rejected.extend(rej)
            repeats += rep
            if part is not None:
                parts.append(part)
        if not parts:
            return Validated(None, rejected, repeats)
        sym, tid, price, qty, tns, rns, bm = (np.concatenate(c) for c in zip(*parts, strict=True))
        batch = tickcols.pack(self.symbols, sym, tid, price, qty, tns, rns, bm, normalized_ns)
        return Validated(batch, rejected, repeats, sym, price, qty, tns)

    def _one(self, bi: int, b: RawTickBatch, now_ns: int, check_hwm: bool = True) -> Any:
        n = b.n
        local = rawcols.codes(b)
        lut = np.array(
            [(self._global(s) if self._global(s) is not None else NO_CODE) for s in b.symbols] or [NO_CODE], np.uint16
        )
        g = lut[local]
        tid = rawcols.ints(b, "trade_id")
        tns = rawcols.ints(b, "trade_ns")
        price, p_bad = _column(b, "price")
        qty, q_bad = _column(b, "qty")
        safe_g = np.where(g == NO_CODE, 0, g).astype(np.intp)
        marks = self.hwm[safe_g]
        bm = np.frombuffer(b.buyer_maker, np.uint8)
        repeat: np.ndarray | None = None

        bad = np.zeros(n, bool)
        reasons: dict[int, str] = {}

        def flag(mask: np.ndarray, why: Callable[[int], str]) -> None:
            new = mask & ~bad
            if new.any():
                for i in np.flatnonzero(new):
                    reasons[int(i)] = why(int(i))
                bad[new] = True

        # one combined test first: a clean batch (the usual case) skips the rule-by-rule reasons
        suspect = (
            p_bad is not None
            or q_bad is not None
            or bool(
                (
                    ~np.isfinite(price)
                    | ~np.isfinite(qty)
                    | (price <= 0)
                    | (qty <= 0)
                    | (g == NO_CODE)
                    | (tns > now_ns + self.max_future_ns)
                    | (tns < now_ns - self.max_past_ns)
                    | ((tid <= marks) if check_hwm else False)
                ).any()
            )
        )
        if suspect:
            if p_bad is not None:
                pstr = rawcols.strings(b, "price")
                flag(p_bad, lambda i: f"unparseable price {pstr[i].as_py()!r}")
            if q_bad is not None:
                qstr = rawcols.strings(b, "qty")
                flag(q_bad, lambda i: f"unparseable quantity {qstr[i].as_py()!r}")
            flag(~np.isfinite(price), lambda i: f"non-finite price {price[i]}")
            flag(~np.isfinite(qty), lambda i: f"non-finite quantity {qty[i]}")
            flag(price <= 0, lambda i: f"non-positive price {price[i]:g}")
            flag(qty <= 0, lambda i: f"non-positive quantity {qty[i]:g}")
            flag(g == NO_CODE, lambda i: f"unknown symbol {b.symbols[int(local[i])]!r}")
            flag(
                tns > now_ns + self.max_future_ns,
                lambda i: (
                    f"timestamp {int(tns[i])} is {(tns[i] - now_ns) / 1e9:.1f}s in the future "
                    f"(limit {self.max_future_ns / 1e9:g}s)"
                ),
            )
            flag(
                tns < now_ns - self.max_past_ns,
                lambda i: (
                    f"timestamp {int(tns[i])} is {(now_ns - tns[i]) / 1e9:.1f}s in the past "
                    f"(limit {self.max_past_ns / 1e9:g}s)"
                ),
            )
            # duplicates: at or below the symbol's high-water mark, unless a repeat of a
            # published tick (dropped, counted) or a late one never published (accepted) ...
            if check_hwm:
                low = (tid <= marks) & ~bad
                if low.any():
                    flag(
                        low & (tid <= self.floor[safe_g]),
                        lambda i: (
                            f"duplicate trade id {int(tid[i])} for {b.symbols[int(local[i])]} "
                            f"(already seen up to {int(marks[i])})"
                        ),
                    )
                    at = np.flatnonzero(low & ~bad)
                    found, same = self.published.find(safe_g[at], tid[at], price[at], qty[at], tns[at], bm[at])
                    repeat = np.zeros(n, bool)
                    repeat[at[same]] = True
                    other = np.zeros(n, bool)
                    other[at[found & ~same]] = True
                    flag(
                        other,
                        lambda i: (
                            f"duplicate trade id {int(tid[i])} for {b.symbols[int(local[i])]} "
                            "with another price, quantity, time or side than the tick published"
                        ),
                    )
        # ... or repeated within the batch (the first one stays)
        skip = bad if repeat is None else bad | repeat
        ok_idx = np.flatnonzero(~skip)
        if len(ok_idx) > 1:
            key = (safe_g[ok_idx].astype(np.int64) << 48) ^ tid[ok_idx]
            order = np.argsort(key, kind="stable")
            sk = key[order]
            rep = np.zeros(len(ok_idx), bool)
            rep[order[1:][sk[1:] == sk[:-1]]] = True
            if rep.any():
                mask = np.zeros(n, bool)
                mask[ok_idx[rep]] = True
                flag(
                    mask,
                    lambda i: (
                        f"duplicate trade id {int(tid[i])} for {b.symbols[int(local[i])]} (repeated in the batch)"
                    ),
                )

        rejected = [Rejected(bi, i, r) for i, r in sorted(reasons.items())]
        repeats = 0 if repeat is None else int(repeat.sum())
        skip = bad if repeat is None else bad | repeat
        keep = ~skip if skip.any() else slice(None)
        gk = g[keep]
        if len(gk) == 0:
            return None, rejected, repeats
        tk = tid[keep]
        np.maximum.at(self.hwm, gk.astype(np.intp), tk)
        pk, qk, tnk, bmk = price[keep], qty[keep], tns[keep], bm[keep]
        forgotten = self.published.add(gk, tk, pk, qk, tnk, bmk)
        if forgotten is not None:
            np.maximum.at(self.floor, forgotten[0].astype(np.intp), forgotten[1])
        return (gk, tk, pk, qk, tnk, rawcols.ints(b, "recv_ns")[keep], bmk), rejected, repeats


_BAR_STATE = msgspec.msgpack.Decoder(tuple[float, float, float, float, float, float, int, int, int])


@dataclass
class _Open:
    open: float
    high: float
    low: float
    close: float
    volume: float
    pv: float
    trades: int
    first_ns: int
    last_ns: int


class BarAggregator:
    """OHLCV bars per symbol and interval, closed on their time boundary.

    Time is the exchange's: a bar [start, start+interval) closes once the watermark passes its end
    plus `grace_s`. The watermark is the newest trade time seen, advanced by the wall clock while
    no ticks arrive, and never more than `max_delay_s` behind the wall clock, so a quiet symbol's
    bar still closes on time. A tick for a bar already closed is counted in `late_ticks` (it
    still flows on md.ticks) and does not reopen the bar: bars are final.

    The open bars survive their owner (a crash, a partition handed to another instance): `state()`
    gives the ones a batch touched as hash fields, written with the batch's commit, and `load()`
    takes them back, so a bar is emitted once, whole, by whoever closes it."""

    def __init__(
        self, intervals: tuple[str, ...] = ("1s", "1m"), grace_s: float = 0.25, max_delay_s: float = 2.0
    ) -> None:
        self.intervals = {k: INTERVALS[k] for k in intervals}
        self.grace_ns = int(grace_s * 1e9)
        self.max_delay_ns = int(max_delay_s * 1e9)
        self.open: dict[tuple[str, int, int], _Open] = {}  # (interval, sym code, start) -> bar
        self.max_trade_ns = 0
        self.wall_at_max = 0
        self.closed_until: dict[str, int] = {k: 0 for k in self.intervals}
        self.late_ticks = 0
        self.max_lateness_ns = 0
        self.touched: set[tuple[str, int, int]] = set()
        """Open bars changed since `state()` last took them."""
        self.closed_fields: list[str] = []
        """Bars closed since `state()` last took them (their fields, to delete)."""

    # -- state that survives the owner -------------------------------------------------------------
    @staticmethod
    def field(key: tuple[str, int, int], symbols: list[str]) -> str:
        name, code, start = key
        return f"{name}|{symbols[code]}|{start}"

    def state(
        self, symbols: list[str], only: Callable[[str], bool] | None = None
    ) -> tuple[dict[str, bytes], list[str]]:
        """The open bars touched since the last call, as hash fields (to HSET), and the fields of
        bars closed meanwhile (to HDEL); `only`: just the symbols it accepts (a partition's), the
        others kept for their own call."""
        out: dict[str, bytes] = {}
        for key in [k for k in self.touched if only is None or only(symbols[k[1]])]:
            self.touched.discard(key)
            bar = self.open.get(key)
            if bar is not None:
                out[self.field(key, symbols)] = msgspec.msgpack.encode(
                    (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.pv, bar.trades, bar.first_ns, bar.last_ns)
                )
        gone = [f for f in self.closed_fields if only is None or only(f.split("|")[1])]
        if gone:
            taken = set(gone)
            self.closed_fields = [f for f in self.closed_fields if f not in taken]
        return out, gone

    def load(self, fields: dict[str, bytes], code_of: Callable[[str], int | None]) -> int:
        """Open bars as `state()` wrote them (a partition's, at its handover or a restart); the
        ones in memory for the same keys are replaced. Returns how many were loaded."""
        n = 0
        for f, raw in fields.items():
            name, sym, start = f.split("|")
            code = code_of(sym)
            if code is None or name not in self.intervals:
                continue
            o, h, lo, c, v, pv, trades, first, last = _BAR_STATE.decode(raw)
            self.open[(name, code, int(start))] = _Open(o, h, lo, c, v, pv, trades, first, last)
            n += 1
        return n

    def drop(self, keep: Callable[[str], bool], symbols: list[str]) -> None:
        """Forget the open bars of the symbols `keep` refuses (a partition gone to another owner,
        or whose last commit failed: its state is taken again from Redis)."""
        for key in [k for k in self.open if not keep(symbols[k[1]])]:
            del self.open[key]
            self.touched.discard(key)

    def add(self, sym: np.ndarray, price: np.ndarray, qty: np.ndarray, trade_ns: np.ndarray, wall_ns: int) -> None:
        if len(price) == 0:
            return
        top = int(trade_ns.max())
        if top > self.max_trade_ns:
            self.max_trade_ns, self.wall_at_max = top, wall_ns
        pq = price * qty
        for name, ival in self.intervals.items():
            start = (trade_ns // ival) * ival
            late = start < self.closed_until[name]
            if late.any():
                self.late_ticks += int(late.sum())
                self.max_lateness_ns = max(self.max_lateness_ns, int((self.closed_until[name] - trade_ns[late]).max()))
                live = ~late
                s_, st_, p_, q_, pq_, t_ = sym[live], start[live], price[live], qty[live], pq[live], trade_ns[live]
            else:
                s_, st_, p_, q_, pq_, t_ = sym, start, price, qty, pq, trade_ns
            if len(p_) == 0:
                continue
            order = np.lexsort((t_, st_, s_))
            s_, st_, p_, q_, pq_, t_ = s_[order], st_[order], p_[order], q_[order], pq_[order], t_[order]
            change = (np.diff(s_.astype(np.int64)) != 0) | (np.diff(st_) != 0)
            starts = np.concatenate(([0], np.flatnonzero(change) + 1))
            ends = np.concatenate((starts[1:], [len(p_)])) - 1
            highs = np.maximum.reduceat(p_, starts)
            lows = np.minimum.reduceat(p_, starts)
            vols = np.add.reduceat(q_, starts)
            pvs = np.add.reduceat(pq_, starts)
            counts = ends - starts + 1
            for j in range(len(starts)):
                a, z = starts[j], ends[j]
                key = (name, int(s_[a]), int(st_[a]))
                bar = self.open.get(key)
                self.touched.add(key)
                if bar is None:
                    self.open[key] = _Open(
                        float(p_[a]),
                        float(highs[j]),
                        float(lows[j]),
                        float(p_[z]),
                        float(vols[j]),
                        float(pvs[j]),
                        int(counts[j]),
                        int(t_[a]),
                        int(t_[z]),
                    )
                    continue
                if t_[a] < bar.first_ns:
                    bar.open, bar.first_ns = float(p_[a]), int(t_[a])
                if t_[z] >= bar.last_ns:
                    bar.close, bar.last_ns = float(p_[z]), int(t_[z])
                bar.high = max(bar.high, float(highs[j]))
                bar.low = min(bar.low, float(lows[j]))
                bar.volume += float(vols[j])
                bar.pv += float(pvs[j])
                bar.trades += int(counts[j])

    def watermark(self, wall_ns: int) -> int:
        if not self.max_trade_ns:
            return 0
        return max(self.max_trade_ns + max(0, wall_ns - self.wall_at_max), wall_ns - self.max_delay_ns)

    def close_due(
        self, symbols: list[str], wall_ns: int, *, everything: bool = False, only: Callable[[str], bool] | None = None
    ) -> list[Bar]:
        """Close and return every bar whose end (plus grace) the watermark has passed (`symbols`:
        the code -> symbol list; `only`: close just the bars of the symbols it accepts)."""
        mark = self.watermark(wall_ns)
        out: list[Bar] = []
        for key in sorted(self.open, key=lambda k: (k[2], k[0], k[1])):
            name, code, start = key
            end = start + self.intervals[name]
            if only is not None and not only(symbols[code]):
                continue
            if everything or end + self.grace_ns <= mark:
                bar = self.open.pop(key)
                self.touched.discard(key)
                self.closed_fields.append(self.field(key, symbols))
                self.closed_until[name] = max(self.closed_until[name], end)
                out.append(
                    Bar(
                        symbol=symbols[code],
                        interval=name,  # type: ignore[arg-type]  # a key of self.intervals: "1s" or "1m"
                        start_ns=start,
                        open=bar.open,
                        high=bar.high,
                        low=bar.low,
                        close=bar.close,
                        volume=bar.volume,
                        vwap=bar.pv / bar.volume if bar.volume else bar.close,
                        trades=bar.trades,
                    )
                )
        return out
