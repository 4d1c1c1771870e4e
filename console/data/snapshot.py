"""Everything the screens show, as plain values: one Snapshot per refresh (at most a few per
second, however fast the bus runs), so a flood of ticks is one repaint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class HealthRow:
    service: str
    priority: int
    state: str  # ok | degraded | down | idle | absent
    legacy: int = 0
    target: int = 0
    rate: float = 0.0
    lag: int = 0
    pending: int = 0
    dlq: int = 0
    partitions: str = ""
    """The partitions each live instance owns, `0,2|1,3 of 4` (backend/bus/leases.py); "" unpartitioned."""


@dataclass
class MarketRow:
    symbol: str
    last: float
    change_pct: float
    ticks_per_s: float
    volume: float
    spark: list[float] = field(default_factory=list)


@dataclass
class BarRow:
    symbol: str
    interval: str
    start: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int


@dataclass
class OrderRow:
    time: str
    client_order_id: str
    account: str
    symbol: str
    side: str
    qty: float
    price: str
    state: str
    filled: float
    reason: str


@dataclass
class GateRow:
    id: str
    title: str
    status: str
    approvals: str
    needs: list[str]
    critical: bool
    checks: list[tuple[str, str, bool, str, str]]
    evidence: str = ""  # the evidence digest an approval or a decision signs
    approved_by: list[str] = field(default_factory=list)  # "ann (SHA256:...)": counted now, or by the decision
    notes: list[str] = field(default_factory=list)  # reopened, cancelled approvals, events not counted
    details: dict[str, list[str]] = field(default_factory=dict)
    """Per check: every field of its latest evidence ("median_ms=2.31"), shown for the selected check."""


@dataclass
class PositionRow:
    account: str
    symbol: str
    qty: float
    avg_price: float
    mark: float
    realized: float
    unrealized: float
    exposure: float


@dataclass
class AlertRow:
    key: str
    severity: str  # info | warning | critical
    source: str
    time: str
    message: str


@dataclass
class JobRow:
    name: str
    kind: str
    schedule: str
    slot: str
    outcome: str  # ok | failed | ... | never ran
    at: str
    trigger: str
    what: str


@dataclass
class ModelRow:
    name: str
    versions: list[int]
    staging: int | None
    production: int | None
    production_ic: float | None
    previous: int | None = None  # the production version a rollback goes back to
    served: str = ""  # what serving reports it loaded


@dataclass
class BacktestRow:
    job_id: str
    strategy: str
    state: str
    pnl: float | None
    sharpe: float | None
    max_drawdown: float | None
    trades: int | None
    reason: str


@dataclass
class CatalogRow:
    id: str
    kind: str
    name: str
    owner: str
    signals: str
    subscribers: list[str]


@dataclass
class InstrumentRow:
    symbol: str
    tick_size: float
    lot_size: float
    currency: str
    session: str
    status: str


@dataclass
class Snapshot:
    clock: str
    environment: str
    redis: str
    operator: str
    key: str = ""  # the signing key's fingerprint (live), or why there is none
    connected: bool = True
    error: str = ""
    health: list[HealthRow] = field(default_factory=list)
    infra: list[tuple[str, str]] = field(default_factory=list)
    progress: dict[int, tuple[int, int]] = field(default_factory=dict)
    open_gates: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    market: list[MarketRow] = field(default_factory=list)
    total_tps: float = 0.0
    bars: list[BarRow] = field(default_factory=list)
    orders: list[OrderRow] = field(default_factory=list)
    order_history: dict[str, list[str]] = field(default_factory=dict)
    risk_pcts: dict[str, float] = field(default_factory=dict)
    risk_series: list[float] = field(default_factory=list)
    risk_hist: list[tuple[float, int]] = field(default_factory=list)
    denials: dict[str, int] = field(default_factory=dict)
    kill_switch: bool = False
    board: dict[int, list[tuple[str, str, str]]] = field(default_factory=dict)
    gates: list[GateRow] = field(default_factory=list)
    audit: list[tuple[str, ...]] = field(default_factory=list)  # time, what, kind, ..., reason, signed (live)
    audit_verdict: str = ""
    redis_used: int = 0
    """Redis's memory used, in bytes (0 with redis_max: not known)."""
    redis_max: int = 0
    """Redis's maxmemory in bytes (0: no limit, or not known)."""
    skipped: dict[str, int] = field(default_factory=dict)  # undecodable entries skipped, per stream
    tracker: dict[str, Any] = field(default_factory=dict)
    """The completion tracker's figures (backend/migration/tracker.py `figures`)."""
    levels: dict[int, list[str]] = field(default_factory=dict)
    """Dependency level -> its services (the inventory's `levels()`)."""
    sheets: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict)
    """Service -> its sheet as (heading, lines) (backend/migration/sheet.py `sections`)."""
    checklists: dict[str, list[tuple[str, str, bool, str]]] = field(default_factory=dict)
    """Service -> its migration checklist as (step, auto/manual, done, evidence)
    (backend/migration/checklist.py)."""
    hours: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Service -> (estimated, logged) hours of its migration."""
    now: float = 0.0
    """The snapshot's time (seconds since the epoch): the plots' "now" (recorded data keeps its own)."""
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """The plotted figures over the last minutes, (time, value) by name: risk_rt_p50/p99,
    oms_p50/p99, ticks:SYMBOL, pnl:ACCOUNT, exposure:ACCOUNT, redis_mb, lag:SERVICE."""
    positions: list[PositionRow] = field(default_factory=list)
    alert_rows: list[AlertRow] = field(default_factory=list)  # alerting's active alerts, to acknowledge
    jobs: list[JobRow] = field(default_factory=list)
    models: list[ModelRow] = field(default_factory=list)
    backtests: list[BacktestRow] = field(default_factory=list)
    catalog: list[CatalogRow] = field(default_factory=list)
    instruments: list[InstrumentRow] = field(default_factory=list)
