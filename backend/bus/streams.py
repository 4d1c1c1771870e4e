"""Stream names: one constant each (DESIGN.md's list), the dead-letter naming rule, each stream's
copies (`COPIES`), and each stream's memory budget (from which its MAXLEN and largest entry
follow)."""

from typing import NamedTuple

from backend.bus.partitions import split as _split

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


def copy_for(stream: str, service: str) -> str:
    """The name of `stream`'s copy that `service` consumes: `<stream>.<service>`."""
    return f"{stream}.{service}"


EXEC_REPORTS_PTRC = copy_for(EXEC_REPORTS, "ptrc")

# -- copies ----------------------------------------------------------------------------------------
# Each stream consumed in consumer groups is consumed by exactly ONE service (one Redis user), so
# that another service's group always lives on a stream the service has no key rights on: Redis
# ACLs check keys, not consumer groups, and a service that may consume a stream could otherwise
# XREADGROUP it under any group name. A second service that needs every entry of a stream
# consumes a copy of its own: the producer's publish (backend/bus/publish.py) writes each entry
# to the stream and to each of its copies in one MULTI, the producer's ACL may write the copies
# (backend/bus/access.py), and a copy has its source's budget, trimming and archiving. The ACL
# generator refuses two services consuming one stream in groups (backend/bus/acl.py).
COPIES: dict[str, tuple[str, ...]] = {
    EXEC_REPORTS: (EXEC_REPORTS_PTRC,),  # oms consumes exec.reports, ptrc its copy
}
"""Stream -> its copies, each written with every entry of the stream (one MULTI)."""
SOURCES: dict[str, str] = {c: s for s, cs in COPIES.items() for c in cs}
"""A copy -> the stream it copies."""


def copies(stream: str) -> tuple[str, ...]:
    """The copies of `stream` (written with each of its entries), or (); of a partition
    (`exec.reports:{p1of2}`), the same partition of each copy."""
    got = COPIES.get(stream)
    if got is not None:
        return got
    base, _, n = _split(stream)
    if n == 1 and base == stream:
        return ()
    return tuple(f"{c}{stream[len(base) :]}" for c in COPIES.get(base, ()))


def source(stream: str) -> str:
    """The stream `stream` is a copy of, or `stream` itself."""
    return SOURCES.get(stream, stream)


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

KB = 1 << 10
MB = 1 << 20

# -- memory budgets ---------------------------------------------------------------------------
# Redis holds every stream in memory, so each stream gets a budget in bytes that it may use, and
# its MAXLEN is derived from it: MAXLEN = budget // typical entry size (the encoded payload plus
# Redis's own per-entry bytes). A stream's budgets together fit the embedded server's `maxmemory`
# with room to spare for the keys beside the streams (order records, model versions, the feature
# store, heartbeats ...), Redis's buffers and fragmentation (tests/unit/test_budgets.py).
#
# `maxmemory-policy noeviction`: when Redis is full, a write fails with an OOM error (loudly, in
# the writer's log and heartbeat) instead of evicting keys: an evicting policy could drop a
# stream, an order record or the audit log's head without a word. `tradeops health`, the console
# and alerting (a warning at ALERT_MEMORY_PCT) show the memory used against the limit before that.
#
# A producer refuses an entry larger than its stream's `max_entry` (backend/bus/publish.py:
# PayloadTooLarge), so a typical entry size holds up: nothing 1000 times too big gets in.
DEFAULT_MAXMEMORY = "1gb"
"""The embedded server's `maxmemory` (settings: `redis_maxmemory`)."""
MAXMEMORY_POLICY = "noeviction"
"""Writes fail rather than evicting stream data (see above)."""
ALERT_MEMORY_PCT = 80.0
"""Alerting warns at this share of maxmemory, and clears the alert below it."""
BUDGET_SHARE = 0.6
"""The budgets of all streams and their dead-letter streams together stay under this share of
DEFAULT_MAXMEMORY (tests/unit/test_budgets.py)."""


class Budget(NamedTuple):
    bytes: int
    """The memory this stream may hold."""
    entry: int
    """A typical entry's size in memory (payload and Redis's per-entry overhead)."""
    max_entry: int
    """The largest encoded entry a producer may add (larger ones are refused)."""
    archived: bool = False
    """A control-plane log: never trimmed by its writers; entries older than its kept window are
    archived to the data dir, then trimmed (backend/bus/archive.py), so the live part stays
    within `bytes`."""

    @property
    def maxlen(self) -> int:
        """Entries kept: the budget over the typical entry size."""
        return self.bytes // self.entry


BUDGETS: dict[str, Budget] = {
    # market data: batches of up to the gateway's max_batch (2000) trades, ~60 B a raw trade and
    # ~45 B a clean one; a typical batch holds ~100 (about 3.7 KB clean). At the exchange's 2000
    # trades/s (~24 batches/s) md.ticks keeps ~20 min and md.ticks.raw ~10 min for a consumer
    # that falls behind (sink-ticks, the normalizer) to catch up before entries are trimmed.
    MD_TICKS_RAW: Budget(88 * MB, 6 * KB, 4 * MB),
    MD_TICKS: Budget(112 * MB, 4 * KB, 16 * MB),  # the normalizer joins up to 64 raw batches in one
    MD_TICKS_REPLAY: Budget(24 * MB, 4 * KB, 4 * MB),
    MD_BARS_1S: Budget(32 * MB, 160, 4 * KB),
    MD_BARS_1M: Budget(8 * MB, 160, 4 * KB),
    ALT_RAW: Budget(8 * MB, 1 * KB, 256 * KB),
    ALT_ITEMS: Budget(16 * MB, 1 * KB, 256 * KB),
    # trading: small structs whose strings are bounded (backend/messages.py)
    ORDERS_NEW: Budget(8 * MB, 256, 8 * KB),
    RISK_REQUESTS: Budget(8 * MB, 384, 8 * KB),
    RISK_DECISIONS: Budget(8 * MB, 256, 8 * KB),
    EXEC_ORDERS: Budget(8 * MB, 384, 8 * KB),
    EXEC_REPORTS: Budget(12 * MB, 320, 8 * KB),
    ORDERS_EVENTS: Budget(40 * MB, 320, 8 * KB),  # the daily report reads a day of it
    POSITIONS: Budget(16 * MB, 256, 8 * KB),
    FEATURES: Budget(40 * MB, 384, 64 * KB),
    SIGNALS: Budget(16 * MB, 192, 8 * KB),
    REFDATA_UPDATES: Budget(2 * MB, 256, 8 * KB),
    REFDATA_EVENTS: Budget(2 * MB, 256, 8 * KB),
    # registrations carry the artifact; 1024 kept for modelops, which consumes them at once (16 MB,
    # was 24: exec.reports' copy, exec.reports.ptrc, 12 MB and 2 MB of dead letters, had to fit)
    MODELS_REQUESTS: Budget(16 * MB, 16 * KB, 4 * MB),
    MODELS_EVENTS: Budget(4 * MB, 512, 64 * KB, archived=True),  # the registry's trail
    TRAINING_JOBS: Budget(2 * MB, 512, 64 * KB),
    BACKTEST_JOBS: Budget(2 * MB, 512, 64 * KB),
    REPLAY_REQUESTS: Budget(1 * MB, 256, 8 * KB),
    SCHEDULER_REQUESTS: Budget(1 * MB, 512, 64 * KB),
    OPS_JOBS: Budget(4 * MB, 1 * KB, 64 * KB),
    # operations
    OPS_HEALTH: Budget(16 * MB, 768, 64 * KB),  # a heartbeat a second per instance
    OPS_CONTROL: Budget(1 * MB, 256, 8 * KB, archived=True),  # kill switch toggles, signed and anchored
    OPS_ALERTS: Budget(8 * MB, 512, 64 * KB),
    OPS_ALERTS_ACKED: Budget(4 * MB, 512, 64 * KB),
    OPS_ALERTS_RESOLVED: Budget(4 * MB, 512, 64 * KB),
    OPS_MIGRATION: Budget(4 * MB, 512, 64 * KB, archived=True),
    OPS_GATES: Budget(16 * MB, 2 * KB, 512 * KB, archived=True),  # check evidence
    OPS_OPERATORS: Budget(2 * MB, 1 * KB, 64 * KB, archived=True),  # the operator registry
}
DEFAULT_BUDGET = Budget(4 * MB, 1 * KB, 1 * MB)
"""A stream not in the table (a replay's own target, a test's stream)."""
BUDGETS.update({c: BUDGETS.get(s, DEFAULT_BUDGET) for c, s in SOURCES.items()})
# a copy holds its source's entries: its budget, MAXLEN, largest entry and archiving are its
# source's, and it counts in the total like any stream (tests/unit/test_budgets.py)
DLQ_BYTES = 2 * MB
"""Each dead-letter stream's budget."""
DLQ_OVERHEAD = 4 * KB
"""What a dead-letter record adds to the entry it holds (reason, origin)."""
DLQ_MAX_ENTRY = 256 * KB
"""The largest dead-letter record: a bigger one (an oversized entry, a long reason) is cut to fit,
with a note of what was cut (backend/bus/deadletter.py); it is kept to be read, not replayed."""


def dlq(stream: str) -> str:
    """The dead-letter stream of `stream`."""
    return DLQ_PREFIX + stream


def budget(stream: str) -> Budget:
    """The memory budget of `stream`; a dead-letter stream's follows from its source's; a partition
    of a stream (backend/bus/partitions.py) has its share of the stream's bytes."""
    if stream.startswith(DLQ_PREFIX):
        src = BUDGETS.get(_unpartitioned(stream[len(DLQ_PREFIX) :]), DEFAULT_BUDGET)
        return Budget(DLQ_BYTES, min(src.entry, 2 * KB) + 256, min(src.max_entry + DLQ_OVERHEAD, DLQ_MAX_ENTRY))
    base, _, parts = _split(stream)
    b = BUDGETS.get(base, DEFAULT_BUDGET)
    return b if parts == 1 else b._replace(bytes=max(b.bytes // parts, 64 * b.entry))


def _unpartitioned(stream: str) -> str:
    return _split(stream)[0]


def maxlen(stream: str) -> int | None:
    """XADD's MAXLEN ~ for `stream`, or None for a log that is archived, never trimmed by XADD."""
    b = budget(stream)
    return None if b.archived else b.maxlen


def max_entry(stream: str) -> int:
    """The largest encoded entry a producer may add to `stream`."""
    return budget(stream).max_entry


def archived() -> tuple[str, ...]:
    """The control-plane logs kept whole: archived to the data dir before they are trimmed."""
    return tuple(s for s, b in BUDGETS.items() if b.archived)


def total_budget() -> int:
    """Every budgeted stream (copies included) and its dead-letter stream, together."""
    return sum(b.bytes + budget(dlq(s)).bytes for s, b in BUDGETS.items())


def memory_bytes(value: str | int) -> int:
    """A Redis memory size ("1gb", "512mb", "100000", 1024) in bytes, as redis.conf reads it
    (k/m/g are powers of 1000, kb/mb/gb of 1024); ValueError naming the value when it is not one."""
    if isinstance(value, int):
        return value
    units = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
    v = value.strip().lower()
    num = v.rstrip("kmgb")
    unit = v[len(num) :]
    if not num.isdigit() or unit not in units:
        raise ValueError(f"{value!r} is not a memory size (e.g. 1gb, 512mb, 1073741824)")
    return int(num) * units[unit]


# Keys (not streams) shared between processes.
HEALTH_KEY = "health:{service}:{instance}"  # per-instance hash, with a TTL
HEALTH_TTL_S = 5
