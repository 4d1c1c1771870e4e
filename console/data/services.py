"""The P4/P5 services as the console's services screen shows them: alerting's active alerts, the
scheduler's jobs, the model registry and what serving loaded, backtests, the marketplace's catalog
and subscriptions, the instrument master. Read on the slow polls (they change on an operator's
time scale), through the same functions the CLI uses; a record that does not read is an alert
line, never a crash."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from backend.bus.entries import Skips
from backend.messages import Heartbeat
from console.data.snapshot import (
    AlertRow,
    BacktestRow,
    CatalogRow,
    InstrumentRow,
    JobRow,
    ModelRow,
    Snapshot,
)

BACKTESTS = 30  # newest backtests shown


def read_services(r: Any, snap: Snapshot, beats: list[Heartbeat], skips: Skips) -> None:
    """Fills the snapshot's services part; the hashes read whole each time (alerting's active
    alerts, the instrument master) set their count of undecodable values in `skips`, not add to it."""
    from backend.refdata.master import KEY as INSTRUMENTS
    from backend.services.alerting import ACTIVE

    now = Skips()  # what does not decode in this read
    parts: list[tuple[str, Callable[[], None]]] = [
        ("alerts", lambda: _alerts(r, snap, now)),
        ("jobs", lambda: _jobs(r, snap)),
        ("models", lambda: _models(r, snap, beats)),
        ("backtests", lambda: _backtests(r, snap)),
        ("catalog", lambda: _catalog(r, snap)),
        ("instruments", lambda: _instruments(r, snap, now)),
    ]
    for what, read in parts:
        try:
            read()
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError, TypeError) as exc:
            snap.alerts.append(f"console: the {what} could not be read: {exc}")
    for key in (ACTIVE, INSTRUMENTS):
        skips.set(key, now.by_stream.get(key, 0))


def _hms(ns: int | None) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ns / 1e9)) if ns else "-"


def _alerts(r: Any, snap: Snapshot, skips: Skips) -> None:
    from backend.services.alerting import active

    for key, a in sorted(active(r, skips), key=lambda ka: -ka[1].ts_ns):
        snap.alert_rows.append(AlertRow(key, a.severity, a.source, _hms(a.ts_ns), a.message))


def job_what(rec: dict[str, Any]) -> str:
    """A run record's outcome in a line: why it failed, or its figures."""
    if rec.get("state") == "failed":
        return str(rec.get("reason", ""))
    d = rec.get("detail") or {}
    return ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, (list, dict)))


def _jobs(r: Any, snap: Snapshot) -> None:
    from backend.scheduling.records import last_runs, schedule

    sched, last = schedule(r), last_runs(r)
    for name in sorted(set(sched) | set(last)):
        s, rec = sched.get(name, {}), last.get(name) or {}
        snap.jobs.append(
            JobRow(
                name,
                str(s.get("kind", rec.get("kind", "-"))),
                str(s.get("schedule", "(no longer scheduled)")),
                str(rec.get("slot", "-")),
                str(rec.get("state", "never ran")),
                _hms(rec.get("ts_ns")),
                str(rec.get("trigger", "")),
                job_what(rec),
            )
        )


def _models(r: Any, snap: Snapshot, beats: list[Heartbeat]) -> None:
    from backend.models import registry as reg

    served: dict[str, list[str]] = {}
    for b in beats:
        if b.service == "serving" and b.extra.get("model"):
            served.setdefault(str(b.extra["model"]), []).append(f"v{b.extra.get('version') or '-'} ({b.instance})")
    for name in reg.names(r):
        st = reg.stages(r, name)
        vs = reg.versions(r, name)
        hist = reg.history(r, name)
        prod = next((v for v in vs if v.version == st.get("production")), None)
        ic = prod.metrics.get("ic") if prod else None
        snap.models.append(
            ModelRow(
                name,
                [v.version for v in vs],
                st.get("staging"),
                st.get("production"),
                float(ic) if ic is not None else None,
                previous=hist[-2] if len(hist) >= 2 else None,
                served=", ".join(served.get(name, [])),
            )
        )


def _backtests(r: Any, snap: Snapshot) -> None:
    from backend.backtest import jobs

    for st in jobs.recent(r, BACKTESTS):
        res = st.get("result")
        snap.backtests.append(
            BacktestRow(
                st["job_id"],
                str(st["job"].get("strategy", "?")) if "job" in st else "?",
                st["state"],
                res.pnl if res else None,
                res.sharpe if res else None,
                res.max_drawdown if res else None,
                res.trades if res else None,
                st["reason"] if st["state"] == "failed" else "",
            )
        )


def _catalog(r: Any, snap: Snapshot) -> None:
    from backend.catalog import store

    for i in store.items(r):
        subs = store.subscriptions(r, i.id)
        snap.catalog.append(
            CatalogRow(i.id, i.kind, i.name, i.owner, i.signals, sorted(f"{s.account} x{s.quantity:g}" for s in subs))
        )


def _instruments(r: Any, snap: Snapshot, skips: Skips) -> None:
    from backend.refdata.master import instruments

    for i in sorted(instruments(r, skips).values(), key=lambda i: i.symbol):
        snap.instruments.append(InstrumentRow(i.symbol, i.tick_size, i.lot_size, i.currency, i.session, i.status))
