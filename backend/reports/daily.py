"""The daily report: one trading day (UTC) from the stores and streams, written to the data dir
as `reports/daily-<day>.json` and `.md` (each replaced in one rename, so a reader never gets half).

What the day held: ticks stored per symbol (OHLC, volume, from the tick store), orders and how
they ended (orders.events), fills and notional (exec.reports), positions and PnL per account at
the day's end (the last `positions` entry of each account and symbol), signals per model,
alerts, dead letters added, and the scheduler's jobs. Streams are read as retained (MAXLEN ~
trims the oldest entries of busy streams): counts say what the bus still held. Entries that do not
decode are skipped and counted per stream (`skipped_undecodable`).

It is pure backend (no gates, no console): the scheduler builds it at end of day.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from backend.bus import streams
from backend.bus.entries import Skips, decode_entries
from backend.bus.history import xrange_between
from backend.bus.replies import Entry
from backend.fileio import write_text_atomic
from backend.marketdata.store import read_ticks
from backend.messages import Alert, ExecReport, JobRun, OrderEvent, Position, Signal

DAY_NS = 86_400_000_000_000

T = TypeVar("T")


def reports_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "reports"


def day_bounds(day: str) -> tuple[int, int]:
    """[start, end) of a UTC day "YYYY-MM-DD" in ns; ValueError naming a bad day."""
    try:
        start = pd.Timestamp(day, tz="UTC")
    except ValueError:
        raise ValueError(f"day {day!r} is not a date (YYYY-MM-DD)") from None
    if start.strftime("%Y-%m-%d") != day:
        raise ValueError(f"day {day!r} is not a date (YYYY-MM-DD)")
    return start.value, start.value + DAY_NS


def _decoded(entries: list[Entry], typ: type[T], stream: str, skips: Skips) -> list[T]:
    """The messages of `entries`; a bad entry is its producer's DLQ matter: the report skips it
    and says how many it skipped (`skipped_undecodable`)."""
    return [m for _, m in decode_entries(entries, typ, stream=stream, skips=skips)[0]]


def market_section(data_dir: Path, start: int, end: int) -> dict[str, Any]:
    df = read_ticks(data_dir, None, start, end)
    out: dict[str, Any] = {}
    for sym, g in df.groupby("symbol", sort=True):
        out[str(sym)] = {
            "ticks": len(g),
            "open": float(g.price.iloc[0]),
            "high": float(g.price.max()),
            "low": float(g.price.min()),
            "close": float(g.price.iloc[-1]),
            "volume": round(float(g.qty.sum()), 8),
            "first": g.ts.iloc[0].strftime("%H:%M:%S"),
            "last": g.ts.iloc[-1].strftime("%H:%M:%S"),
        }
    return out


async def build(r: Any, data_dir: Path, day: str) -> dict[str, Any]:
    """The report for `day` as plain data."""
    start, end = day_bounds(day)
    market = await asyncio.to_thread(market_section, data_dir, start, end)
    skips = Skips()

    async def read(stream: str, typ: type, since: int = start) -> list:
        return _decoded(await xrange_between(r, stream, since, end), typ, stream, skips)

    events: list[OrderEvent] = await read(streams.ORDERS_EVENTS, OrderEvent)
    final: dict[str, OrderEvent] = {}
    for ev in events:
        final[ev.client_order_id] = ev
    states = Counter(ev.state for ev in final.values())
    reasons = Counter(
        ev.reason.split(":", 1)[0] for ev in final.values() if ev.state in ("DENIED", "REJECTED") and ev.reason
    )

    fills = [x for x in await read(streams.EXEC_REPORTS, ExecReport) if x.kind == "fill"]
    by_sym: dict[str, dict[str, float]] = defaultdict(lambda: {"fills": 0, "bought": 0.0, "sold": 0.0, "notional": 0.0})
    for x in fills:
        s = by_sym[x.symbol]
        s["fills"] += 1
        s["bought" if x.side == "buy" else "sold"] += x.fill_qty
        s["notional"] += x.fill_qty * x.fill_price

    positions: dict[tuple[str, str], Position] = {}
    for p in await read(streams.POSITIONS, Position, 0):
        positions[(p.account, p.symbol)] = p
    accounts: dict[str, dict[str, Any]] = {}
    for (acc, sym), p in sorted(positions.items()):
        a = accounts.setdefault(acc, {"pnl": 0.0, "realized": 0.0, "unrealized": 0.0, "exposure": 0.0, "positions": {}})
        a["positions"][sym] = {
            "quantity": p.quantity,
            "avg_price": p.avg_price,
            "mark": p.mark,
            "realized": round(p.realized_pnl, 6),
            "unrealized": round(p.unrealized_pnl, 6),
        }
        a["realized"] += p.realized_pnl
        a["unrealized"] += p.unrealized_pnl
        a["exposure"] += p.exposure
    for a in accounts.values():
        for k in ("realized", "unrealized", "exposure"):
            a[k] = round(a[k], 6)
        a["pnl"] = round(a["realized"] + a["unrealized"], 6)

    sigs: list[Signal] = await read(streams.SIGNALS, Signal)
    models: dict[str, dict[str, Any]] = {}
    for sig in sigs:
        m = models.setdefault(sig.model, {"signals": 0, "buy": 0, "sell": 0, "versions": set()})
        m["signals"] += 1
        if sig.side:
            m[sig.side] += 1
        m["versions"].add(sig.version)
    for m in models.values():
        m["versions"] = sorted(m["versions"])

    alerts: list[Alert] = await read(streams.OPS_ALERTS, Alert)
    dead: dict[str, int] = {}
    async for key in r.scan_iter(match=streams.dlq("*"), count=500):
        n = len(await xrange_between(r, key.decode(), start, end))
        if n:
            dead[key.decode()] = n
    jobs: list[JobRun] = await read(streams.OPS_JOBS, JobRun)

    return {
        "day": day,
        "market": market,
        "orders": {
            "orders": len(final),
            "states": dict(sorted(states.items())),
            "denied_or_rejected_by": dict(reasons.most_common()),
        },
        "fills": {
            "fills": len(fills),
            "by_symbol": {k: {kk: round(vv, 6) for kk, vv in v.items()} for k, v in sorted(by_sym.items())},
        },
        "accounts": accounts,
        "models": models,
        "alerts": {
            "raised": len(alerts),
            "by_severity": dict(Counter(a.severity for a in alerts)),
            "by_kind": dict(Counter(a.kind for a in alerts)),
        },
        "dead_letters": dict(sorted(dead.items())),
        "jobs": [
            {"job": j.job, "day": j.day, "outcome": j.detail.get("outcome", ""), "reason": j.detail.get("reason", "")}
            for j in jobs
        ],
        "skipped_undecodable": dict(sorted(skips.by_stream.items())),
    }


def markdown(rep: dict[str, Any]) -> str:
    lines = [f"# Daily report {rep['day']} (UTC)", ""]
    lines += ["## Market data (tick store)", ""]
    if rep["market"]:
        lines += [
            "| symbol | ticks | open | high | low | close | volume | first | last |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {s} | {m['ticks']} | {m['open']:g} | {m['high']:g} | {m['low']:g} | {m['close']:g} | "
            f"{m['volume']:g} | {m['first']} | {m['last']} |"
            for s, m in rep["market"].items()
        ]
    else:
        lines.append("No ticks stored for the day.")
    o = rep["orders"]
    lines += [
        "",
        "## Orders and fills",
        "",
        f"{o['orders']} orders: " + (", ".join(f"{k} {v}" for k, v in o["states"].items()) or "none") + ".",
        f"{rep['fills']['fills']} fills.",
    ]
    if o["denied_or_rejected_by"]:
        lines.append(
            "Denied or rejected by: " + ", ".join(f"{k} ({v})" for k, v in o["denied_or_rejected_by"].items()) + "."
        )
    if rep["fills"]["by_symbol"]:
        lines += ["", "| symbol | fills | bought | sold | notional |", "|---|---|---|---|---|"]
        lines += [
            f"| {s} | {int(f['fills'])} | {f['bought']:g} | {f['sold']:g} | {f['notional']:,.2f} |"
            for s, f in rep["fills"]["by_symbol"].items()
        ]
    lines += ["", "## Positions and PnL at the day's end", ""]
    if rep["accounts"]:
        lines += ["| account | PnL | realized | unrealized | exposure |", "|---|---|---|---|---|"]
        lines += [
            f"| {acc} | {a['pnl']:,.2f} | {a['realized']:,.2f} | {a['unrealized']:,.2f} | {a['exposure']:,.2f} |"
            for acc, a in rep["accounts"].items()
        ]
    else:
        lines.append("No positions.")
    lines += ["", "## Models", ""]
    lines += [
        f"- {name}: {m['signals']} signals ({m['buy']} buy, {m['sell']} sell), versions "
        f"{', '.join(map(str, m['versions']))}"
        for name, m in rep["models"].items()
    ] or ["No signals."]
    a = rep["alerts"]
    lines += [
        "",
        "## Operations",
        "",
        f"Alerts raised: {a['raised']}"
        + (f" ({', '.join(f'{k} {v}' for k, v in a['by_severity'].items())})" if a["by_severity"] else "")
        + ".",
        "Dead letters added: " + (", ".join(f"{k} {v}" for k, v in rep["dead_letters"].items()) or "none") + ".",
    ]
    if rep.get("skipped_undecodable"):
        lines.append(
            "Entries skipped by this report (undecodable): "
            + ", ".join(f"{k} {v}" for k, v in rep["skipped_undecodable"].items())
            + "."
        )
    for j in rep["jobs"]:
        lines.append(
            f"- job {j['job']} ({j['day']}): {j['outcome'] or 'started'}" + (f": {j['reason']}" if j["reason"] else "")
        )
    return "\n".join(lines) + "\n"


def write(data_dir: Path, rep: dict[str, Any]) -> tuple[Path, Path]:
    """Write the JSON and Markdown reports; each replaces the old one in one rename."""
    base = reports_dir(data_dir) / f"daily-{rep['day']}"
    js, md = base.with_suffix(".json"), base.with_suffix(".md")
    write_text_atomic(js, json.dumps(rep, indent=2, sort_keys=False, default=str) + "\n")
    write_text_atomic(md, markdown(rep))
    return js, md
