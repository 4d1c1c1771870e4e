"""Stream names: one constant each (DESIGN.md's list), and the dead-letter naming rule."""

MD_TICKS_RAW = "md.ticks.raw"
MD_TICKS = "md.ticks"
MD_BARS_1S = "md.bars.1s"
MD_BARS_1M = "md.bars.1m"
ALT_RAW = "alt.raw"
ALT_ITEMS = "alt.items"
ORDERS_NEW = "orders.new"
RISK_REQUESTS = "risk.requests"
RISK_DECISIONS = "risk.decisions"
EXEC_ORDERS = "exec.orders"
EXEC_REPORTS = "exec.reports"
ORDERS_EVENTS = "orders.events"
POSITIONS = "positions"
FEATURES = "features"
SIGNALS = "signals"
OPS_HEALTH = "ops.health"
OPS_MIGRATION = "ops.migration"
OPS_GATES = "ops.gates"
OPS_OPERATORS = "ops.operators"
OPS_ALERTS = "ops.alerts"
OPS_ALERTS_ACKED = "ops.alerts.acked"
OPS_CONTROL = "ops.control"
OPS_ALERTS_RESOLVED = "ops.alerts.resolved"
REFDATA_EVENTS = "refdata.events"
MODELS_REQUESTS = "models.requests"
MODELS_EVENTS = "models.events"
TRAINING_JOBS = "training.jobs"
BACKTEST_JOBS = "backtest.jobs"
REFDATA_UPDATES = "refdata.updates"
SCHEDULER_REQUESTS = "scheduler.requests"
OPS_JOBS = "ops.jobs"
REPLAY_REQUESTS = "replay.requests"
MD_TICKS_REPLAY = "md.ticks.replay"

ALL = (
    MD_TICKS_RAW,
    MD_TICKS,
    MD_BARS_1S,
    MD_BARS_1M,
    ALT_RAW,
    ALT_ITEMS,
    ORDERS_NEW,
    RISK_REQUESTS,
    RISK_DECISIONS,
    EXEC_ORDERS,
    EXEC_REPORTS,
    ORDERS_EVENTS,
    POSITIONS,
    FEATURES,
    SIGNALS,
    OPS_HEALTH,
    OPS_MIGRATION,
    OPS_GATES,
    OPS_OPERATORS,
    OPS_ALERTS,
    OPS_CONTROL,
    REFDATA_EVENTS,
    MODELS_REQUESTS,
    MODELS_EVENTS,
    TRAINING_JOBS,
    BACKTEST_JOBS,
)

DLQ_PREFIX = "dlq."

# Approximate MAXLEN (XADD MAXLEN ~) per stream; the event logs are never trimmed.
MAXLEN: dict[str, int | None] = {
    MD_TICKS_RAW: 200_000,  # entries are batches
    MD_TICKS: 200_000,
    MD_BARS_1S: 500_000,
    MD_BARS_1M: 500_000,
    OPS_HEALTH: 20_000,
    OPS_MIGRATION: None,
    OPS_GATES: None,
    OPS_OPERATORS: None,  # the operator registry
    MODELS_EVENTS: None,  # the registry's audit trail
}
DEFAULT_MAXLEN = 1_000_000


def dlq(stream: str) -> str:
    """The dead-letter stream of `stream`."""
    return DLQ_PREFIX + stream


def maxlen(stream: str) -> int | None:
    if stream.startswith(DLQ_PREFIX):
        return DEFAULT_MAXLEN
    return MAXLEN.get(stream, DEFAULT_MAXLEN)


# Keys (not streams) shared between processes.
HEALTH_KEY = "health:{service}:{instance}"  # per-instance hash, with a TTL
HEALTH_TTL_S = 5
