"""Every wire type, in one place: msgspec Structs, tagged (`<name>.v<version>`) so one decoder
reads any of them. Encoded with backend.bus.codec (msgpack in the stream field `d`).

Hot streams carry batches: a TickBatch holds many ticks in columns (numpy buffers), so the
normalizer and sinks validate and aggregate vectorised instead of per tick.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta, Struct


class Wire(Struct, tag_field="_t"):
    """Base of every wire type: the tag (`_t`) names the type and its version."""


# --------------------------------------------------------------------------------------------
# Market data
# --------------------------------------------------------------------------------------------


class RawTick(Wire, tag="raw_tick.v1", array_like=True):
    """One trade as the venue sent it (Binance `@trade` fields), prices/quantities as strings."""

    symbol: str  # s
    trade_id: int  # t
    price: str  # p
    qty: str  # q
    trade_ns: int  # T (ms on the wire) in ns
    event_ns: int  # E in ns
    buyer_maker: bool  # m
    recv_ns: int  # when the gateway received it


class RawTickBatch(Wire, tag="raw_ticks.v2", array_like=True):
    """Raw ticks from one gateway read loop (md.ticks.raw), in columns, still unvalidated.

    Prices and quantities stay the venue's strings, joined into one buffer each with int32
    offsets (Arrow's string layout), so the normalizer parses them vectorised without making a
    Python object per tick. `sym` is uint16 codes into `symbols`; `trade_id`, `trade_ns`,
    `event_ns`, `recv_ns` are int64 buffers; `buyer_maker` uint8. `n` ticks in all.
    """

    source: str
    n: int
    symbols: list[str]
    sym: bytes
    trade_id: bytes
    price: bytes
    price_offsets: bytes
    qty: bytes
    qty_offsets: bytes
    trade_ns: bytes
    event_ns: bytes
    recv_ns: bytes
    buyer_maker: bytes


class TickBatch(Wire, tag="ticks.v1", array_like=True):
    """Clean ticks (md.ticks), columnar. Numeric columns are little-endian numpy buffers:
    `sym` uint16 codes into `symbols`, `trade_id` int64, `price`/`qty` float64,
    `trade_ns`/`recv_ns` int64, `buyer_maker` uint8. `n` is the number of ticks."""

    n: int
    symbols: list[str]
    sym: bytes
    trade_id: bytes
    price: bytes
    qty: bytes
    trade_ns: bytes
    recv_ns: bytes
    buyer_maker: bytes
    normalized_ns: int = 0

    def __post_init__(self) -> None:
        """A batch whose columns do not hold `n` ticks, or whose symbol codes point past
        `symbols`, is not a TickBatch: it does not decode (a reader skips it, the worker
        dead-letters it) instead of failing whoever reads its columns."""
        n = self.n
        if (
            n < 0
            or len(self.sym) != 2 * n
            or len(self.buyer_maker) != n
            or any(len(c) != 8 * n for c in (self.trade_id, self.price, self.qty, self.trade_ns, self.recv_ns))
        ):
            raise ValueError(f"the columns do not hold n={n} ticks")
        if n:
            import numpy as np

            if int(np.frombuffer(self.sym, "<u2").max()) >= len(self.symbols):
                raise ValueError(f"a symbol code points past the {len(self.symbols)} symbols")


class Tick(Wire, tag="tick.v1", array_like=True):
    """One clean tick (for slow consumers and tests; md.ticks carries TickBatch)."""

    symbol: str
    trade_id: int
    price: float
    qty: float
    trade_ns: int
    recv_ns: int = 0
    buyer_maker: bool = False


class Bar(Wire, tag="bar.v1", array_like=True):
    """An OHLCV bar (md.bars.1s, md.bars.1m); `start_ns` is the bar's open boundary."""

    symbol: str
    interval: Literal["1s", "1m"]
    start_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float
    trades: int


class BarBatch(Wire, tag="bars.v1", array_like=True):
    bars: list[Bar]


class AltItem(Wire, tag="alt_item.v1"):
    """A news / alt-data item (alt.raw, alt.items)."""

    id: str
    ts_ns: int
    symbols: list[str]
    headline: str
    body: str
    sentiment: float  # -1 .. 1
    source: str = "local"


# --------------------------------------------------------------------------------------------
# Trading
# --------------------------------------------------------------------------------------------

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]
TimeInForce = Literal["GTC", "IOC", "FOK", "DAY"]
OrderState = Literal[
    "NEW",
    "PENDING_RISK",
    "DENIED",
    "ROUTED",
    "ACCEPTED",
    "PARTIALLY_FILLED",
    "FILLED",
    "CANCELED",
    "EXPIRED",
    "REJECTED",
]
FINAL_STATES = frozenset({"DENIED", "FILLED", "CANCELED", "EXPIRED", "REJECTED"})

# Bounded strings where an order comes in: an id, an account or a symbol has no reason to be long,
# and one of megabytes is refused when it is decoded (the OMS's worker dead-letters the entry with
# the reason) and, with a message naming the field, before it is sent
# (backend.trading.orders.invalid, used by the CLI and the console).
ID_MAX = 128
ACCOUNT_MAX = 64
SYMBOL_MAX = 32
TEXT_MAX = 1024
OrderId = Annotated[str, Meta(max_length=ID_MAX)]
Account = Annotated[str, Meta(max_length=ACCOUNT_MAX)]
Symbol = Annotated[str, Meta(max_length=SYMBOL_MAX)]
Text = Annotated[str, Meta(max_length=TEXT_MAX)]


class Order(Wire, tag="order.v1", kw_only=True):
    """A new order (orders.new). `client_order_id` is the idempotency key."""

    client_order_id: OrderId
    account: Account
    symbol: Symbol
    side: Side
    type: OrderType
    quantity: float
    limit_price: float | None = None
    time_in_force: TimeInForce = "GTC"
    sent_ns: int = 0
    source: Text = "cli"


class CancelRequest(Wire, tag="cancel.v1", kw_only=True):
    client_order_id: OrderId
    account: Account = ""
    reason: Text = ""
    sent_ns: int = 0


class RiskRequest(Wire, tag="risk_request.v1", kw_only=True):
    """OMS -> risk (risk.requests)."""

    request_id: str
    order: Order
    sent_ns: int


class RiskDecision(Wire, tag="risk_decision.v1", kw_only=True):
    """risk -> OMS (risk.decisions). A denial names the rule and the numbers in `reason`."""

    request_id: str
    client_order_id: str
    approved: bool
    rule: str = ""
    reason: str = ""
    request_sent_ns: int = 0
    decided_ns: int = 0
    instance: str = ""
    """The risk instance that decided (what a gate check timing the deployed target counts)."""


class ExecOrder(Wire, tag="exec_order.v1", kw_only=True):
    """OMS -> live-gateway (exec.orders): place or cancel at the venue."""

    action: Literal["new", "cancel", "query"]
    client_order_id: str
    order: Order | None = None
    sent_ns: int = 0
    reason: str = ""


class ExecReport(Wire, tag="exec_report.v1", kw_only=True):
    """live-gateway -> OMS, risk, ptrc (exec.reports)."""

    client_order_id: str
    venue_order_id: str
    kind: Literal["accepted", "fill", "canceled", "expired", "rejected", "status"]
    account: str = ""
    symbol: str = ""
    side: Side = "buy"
    trade_id: str = ""
    fill_qty: float = 0.0
    fill_price: float = 0.0
    cum_qty: float = 0.0
    leaves_qty: float = 0.0
    reason: str = ""
    ts_ns: int = 0


class OrderEvent(Wire, tag="order_event.v1", kw_only=True):
    """Every OMS state transition (orders.events)."""

    client_order_id: str
    account: str
    symbol: str
    side: Side
    quantity: float
    limit_price: float | None
    state: OrderState
    prev_state: OrderState | None = None
    filled_qty: float = 0.0
    avg_price: float = 0.0
    reason: str = ""
    ts_ns: int = 0
    seq: int = 0
    instance: str = ""
    """On NEW (and on a refusal at the door, REJECTED overloaded): the OMS instance that took the
    order in (what a gate check timing the deployed target counts)."""


class Position(Wire, tag="position.v1", kw_only=True):
    """ptrc -> positions stream: one account/symbol's position and PnL."""

    account: str
    symbol: str
    quantity: float
    avg_price: float
    realized_pnl: float
    unrealized_pnl: float
    mark: float
    exposure: float
    ts_ns: int


# --------------------------------------------------------------------------------------------
# Features, models, signals
# --------------------------------------------------------------------------------------------


class FeatureRow(Wire, tag="features.v1", kw_only=True):
    symbol: str
    ts_ns: int
    values: dict[str, float]


class Signal(Wire, tag="signal.v1", kw_only=True):
    symbol: str
    ts_ns: int
    model: str
    version: int
    score: float
    side: Side | None = None
    strength: float = 0.0


class ModelRegister(Wire, tag="model_register.v1", kw_only=True):
    """ml-training -> modelops (models.requests): a trained artifact, its metrics and lineage."""

    name: str
    kind: str
    artifact: bytes
    features: list[str]
    label: str
    metrics: dict[str, float]
    data_start_ns: int
    data_end_ns: int
    rows: int
    symbols: list[str] = []
    params: dict[str, Any] = {}
    trained_by: str = ""
    request_id: str = ""
    ts_ns: int = 0


class ModelStage(Wire, tag="model_stage.v1", kw_only=True):
    """operator -> modelops (models.requests): promote a version to a stage, or roll production
    back to the version before it; always with a reason."""

    name: str
    action: Literal["promote", "rollback"]
    version: int = 0
    stage: Literal["staging", "production"] = "production"
    reason: str = ""
    operator: str = ""
    request_id: str = ""
    ts_ns: int = 0


ModelEventKind = Literal["registered", "promoted", "rolled_back", "refused"]


class ModelEvent(Wire, tag="model_event.v1", kw_only=True):
    """modelops -> models.events: what changed in the registry (serving hot-swaps on these)."""

    name: str
    kind: ModelEventKind
    version: int = 0
    stage: str = ""
    from_version: int = 0
    reason: str = ""
    operator: str = ""
    request_id: str = ""
    ts_ns: int = 0


class TrainJob(Wire, tag="train_job.v1", kw_only=True):
    """-> ml-training (training.jobs): train `name` on the features and labels in a time range."""

    job_id: str
    name: str
    symbols: list[str] = []
    horizon_s: float = 5.0
    start_ns: int = 0
    end_ns: int = 0
    ridge: float = 1.0
    requested_by: str = ""


class BacktestJob(Wire, tag="backtest_job.v1", kw_only=True):
    """-> bt-orchestrator (backtest.jobs): a strategy over stored ticks in a time range."""

    job_id: str
    strategy: str
    symbols: list[str] = []
    start_ns: int = 0
    end_ns: int = 0
    params: dict[str, Any] = {}
    submitted_by: str = ""
    ts_ns: int = 0


# --------------------------------------------------------------------------------------------
# Operations: health, alerts, control, migration, gates
# --------------------------------------------------------------------------------------------

Environment = Literal["legacy", "target"]


class Instrument(Wire, tag="instrument.v1", kw_only=True):
    """refdata's instrument master entry (refdata.updates in, refdata.events out)."""

    symbol: str
    tick_size: float
    lot_size: float
    currency: str = "USDT"
    session: str = "24x7"
    status: Literal["trading", "halted", "delisted"] = "trading"


class JobRun(Wire, tag="job_run.v1", kw_only=True):
    """A scheduled job that ran (ops.jobs) or a request to run one (scheduler.requests)."""

    job: str
    day: str
    ts_ns: int
    reason: str = "scheduled"
    detail: dict[str, Any] = {}


class ReplayRequest(Wire, tag="replay_request.v1", kw_only=True):
    """md-replay: stored ticks [start_ns, end_ns) into `target` at `speed` (0 = as fast as possible)."""

    id: str
    start_ns: int
    end_ns: int
    symbols: list[str] = []
    speed: float = 1.0
    target: str = "md.ticks.replay"


ServiceState = Literal["starting", "running", "degraded", "draining", "stopped", "failed"]
"""An instance's state in its heartbeat. `degraded`: alive but unable to make progress (a full
disk, a store that refuses writes ...), the heartbeat's `reason` says why; it goes back to
`running` by itself once it can. starting, running, degraded and draining are alive."""
LIVE_STATES: tuple[str, ...] = ("starting", "running", "degraded", "draining")


class Heartbeat(Wire, tag="heartbeat.v1", kw_only=True):
    """Every service instance, every second (ops.health + hash health:<service>:<instance>)."""

    service: str
    instance: str
    environment: Environment
    state: ServiceState
    ts_ns: int
    started_ns: int
    pid: int
    host: str = ""
    processed: int = 0
    rate: float = 0.0
    lag: int = 0
    pending: int = 0
    dlq: int = 0
    latency_ms: dict[str, float] = {}
    extra: dict[str, Any] = {}
    reason: str = ""
    """Why the instance is in its state, when that needs saying (degraded: what stops progress)."""
    metrics_addr: str = ""
    """host:port of the instance's Prometheus /metrics endpoint ('' when it serves none)."""


Severity = Literal["info", "warning", "critical"]


class Alert(Wire, tag="alert.v1", kw_only=True):
    id: str
    ts_ns: int
    severity: Severity
    source: str
    kind: str
    message: str
    key: str = ""
    acked_by: str | None = None
    resolved: str = ""
    """Non-empty on an alert saying its cause is gone (why): alerting clears the active alert of
    this key."""


class ControlCommand(Wire, tag="control.v1", kw_only=True):
    """Operator commands to running services (ops.control): drain, kill switch, reload ..."""

    target: str  # service name, or service:instance
    command: str
    args: dict[str, Any] = {}
    operator: str = ""
    reason: str = ""
    ts_ns: int = 0
    signer: str = ""  # SSH key fingerprint of the operator who signed it (gates/signing.py)
    nonce: str = ""
    sig: str = ""  # SSHSIG (armored) over the command without `sig`, namespace control@tradeops


MigrationState = Literal["planned", "deploying", "validating", "migrated", "failed", "rolled_back"]


class MigrationEvent(Wire, tag="migration_event.v1", kw_only=True):
    """A migration transition (ops.migration): who, when, why."""

    service: str
    from_state: MigrationState | None
    to_state: MigrationState
    operator: str
    reason: str
    ts_ns: int
    action: str = ""
    detail: dict[str, Any] = {}
    signer: str = ""  # SSH key fingerprint of the operator who signed it (gates/signing.py)
    nonce: str = ""
    sig: str = ""  # SSHSIG (armored) over the event without `sig`, namespace migration@tradeops


class GateEvent(Wire, tag="gate_event.v1", kw_only=True):
    """A check run, attestation, approval or decision on a gate (ops.gates), hash-chained and
    signed by the operator's SSH key (`signer`, `sig`: gates/signing.py). `refused` records an
    attempt the rules refused (unsigned: it counts for nothing)."""

    gate: str
    kind: Literal["check_run", "attest", "approve", "decision", "refused"]
    operator: str
    ts_ns: int
    check: str | None = None
    outcome: str | None = None
    decision: Literal["proceed", "fix", "stop"] | None = None
    reason: str = ""
    evidence: dict[str, Any] = {}
    prev_hash: str = ""
    hash: str = ""
    signer: str = ""  # SSH key fingerprint (SHA256:...) of the signing key
    nonce: str = ""
    evidence_digest: str = ""  # approvals and decisions: the digest of the check runs they saw
    sig: str = ""  # SSHSIG (armored) over the canonical event without `hash` and `sig`


class OperatorEvent(Wire, tag="operator_event.v1", kw_only=True):
    """A change to the operator registry (ops.operators), hash-chained and signed by a lead: the
    first lead set once (`init`, signed by its own key), operators added or removed, roles changed,
    keys added or revoked, a change that needs a second lead confirmed. `refused` records an
    attempt the rules refused."""

    kind: Literal["init", "add", "remove", "roles", "add_key", "revoke_key", "confirm", "refused"]
    name: str  # the operator the change is about
    ts_ns: int
    roles: list[str] = []
    keys: list[str] = []  # public keys, `kind base64`
    key: str = ""  # a key's fingerprint (revoke_key)
    valid_after_ns: int = 0
    valid_before_ns: int = 0  # 0: no end
    confirms: str = ""  # confirm: the hash of the pending change
    reason: str = ""
    by: str = ""  # the signer's operator name (a label: the key says who)
    signer: str = ""
    nonce: str = ""
    sig: str = ""
    prev_hash: str = ""
    hash: str = ""


WIRE_TYPES: tuple[type[Wire], ...] = (
    Instrument,
    JobRun,
    ReplayRequest,
    RawTick,
    RawTickBatch,
    TickBatch,
    Tick,
    Bar,
    BarBatch,
    AltItem,
    Order,
    CancelRequest,
    RiskRequest,
    RiskDecision,
    ExecOrder,
    ExecReport,
    OrderEvent,
    Position,
    FeatureRow,
    Signal,
    ModelRegister,
    ModelStage,
    ModelEvent,
    TrainJob,
    BacktestJob,
    Heartbeat,
    Alert,
    ControlCommand,
    MigrationEvent,
    GateEvent,
    OperatorEvent,
)

# msgspec decodes a union only within one layout, so there is one union per layout:
# array-like (hot, compact) types and map types. codec.decode_any picks by the first byte.
# (runtime values for the decoders: a Union built from a tuple, which `X | Y` (UP007) cannot spell;
# no static type)
AnyArrayMessage: object = Union[tuple(t for t in WIRE_TYPES if t.__struct_config__.array_like)]  # noqa: UP007
AnyMapMessage: object = Union[tuple(t for t in WIRE_TYPES if not t.__struct_config__.array_like)]  # noqa: UP007


def to_builtins(msg: Struct) -> Any:
    """A plain dict/list view of a message (for --json output and the console)."""
    return msgspec.to_builtins(msg)
