"""One bad entry crashes no reader (property-based): random entries written onto every stream
(and every dead-letter stream), the readers run over them: the CLI commands, the console's live
poll, the gates and the migration board. None raises; every good entry is still shown; what was
skipped is counted exactly, per stream.

A bad entry is one that is not a message of its stream's type: random bytes in `d`, no `d`,
the payload under another field name, msgpack that is not a message, a message of another type,
one with required fields missing, and (md.ticks) a TickBatch whose columns do not hold its ticks.
A good entry is a message of the stream's type with any values its type allows (huge or negative
numbers, NaN and infinities, odd text): those are shown as they are."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.bus import codec, streams
from backend.bus.entries import Skips
from backend.health import HEARTBEATS
from backend.marketdata.ticks import from_ticks
from backend.messages import (
    WIRE_TYPES,
    Alert,
    AltItem,
    BacktestJob,
    Bar,
    ControlCommand,
    ExecOrder,
    ExecReport,
    FeatureRow,
    GateEvent,
    Heartbeat,
    Instrument,
    JobRun,
    MigrationEvent,
    ModelEvent,
    ModelRegister,
    ModelStage,
    OperatorEvent,
    Order,
    OrderEvent,
    Position,
    RawTickBatch,
    RiskDecision,
    RiskRequest,
    Signal,
    Tick,
    TickBatch,
    TrainJob,
)
from backend.migration import inventory
from backend.migration.gate_status import latest_decisions
from backend.migration.state import board
from backend.models import registry
from backend.settings import Settings
from console.cli import main as cli_main
from console.data.live import LiveSource
from gates import audit, chained, decisions, model, operators, report
from gates.feed import GateFeed

TYPES: dict[str, Any] = {
    streams.MD_TICKS_RAW: RawTickBatch,
    streams.MD_TICKS: TickBatch,
    streams.MD_BARS_1S: Bar,
    streams.MD_BARS_1M: Bar,
    streams.ALT_RAW: AltItem,
    streams.ALT_ITEMS: AltItem,
    streams.ORDERS_NEW: Order,
    streams.RISK_REQUESTS: RiskRequest,
    streams.RISK_DECISIONS: RiskDecision,
    streams.EXEC_ORDERS: ExecOrder,
    streams.EXEC_REPORTS: ExecReport,
    streams.ORDERS_EVENTS: OrderEvent,
    streams.POSITIONS: Position,
    streams.FEATURES: FeatureRow,
    streams.SIGNALS: Signal,
    streams.OPS_HEALTH: Heartbeat,
    streams.OPS_MIGRATION: MigrationEvent,
    streams.OPS_GATES: GateEvent,
    streams.OPS_OPERATORS: OperatorEvent,
    streams.OPS_ALERTS: Alert,
    streams.OPS_CONTROL: ControlCommand,
    streams.REFDATA_EVENTS: Instrument,
    streams.MODELS_REQUESTS: (ModelRegister, ModelStage),
    streams.MODELS_EVENTS: ModelEvent,
    streams.TRAINING_JOBS: TrainJob,
    streams.BACKTEST_JOBS: BacktestJob,
}
assert set(TYPES) == set(streams.ALL), "a stream without its type here: add it"

SERVICES = [s.name for s in inventory.load().services]

# -- strategies ------------------------------------------------------------------------------------
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


def _of(info: Any) -> st.SearchStrategy[Any]:
    """Any value of a msgspec type (msgspec.inspect): the odd ones too."""
    i = msgspec.inspect
    if isinstance(info, i.StructType):
        return st.builds(info.cls, **{f.name: _of(f.type) for f in info.fields})
    if isinstance(info, i.UnionType):
        return st.one_of(*[_of(t) for t in info.types])
    if isinstance(info, i.NoneType):
        return st.none()
    if isinstance(info, i.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, i.StrType):
        return st.text(max_size=12)
    if isinstance(info, i.BoolType):
        return st.booleans()
    if isinstance(info, i.IntType):
        return st.integers(-(2**63), 2**64 - 1)
    if isinstance(info, i.FloatType):
        return ANY_FLOAT
    if isinstance(info, i.BytesType):
        return st.binary(max_size=16)
    if isinstance(info, i.ListType):
        return st.lists(_of(info.item_type), max_size=3)
    if isinstance(info, i.DictType):
        return st.dictionaries(st.text(max_size=6), _of(info.value_type), max_size=3)
    if isinstance(info, i.AnyType):
        return ANY_VALUE
    raise AssertionError(f"no strategy for {info}")


TICKS = st.lists(
    st.builds(
        Tick,
        symbol=st.text(min_size=1, max_size=6),
        trade_id=st.integers(-(2**63), 2**63 - 1),
        price=ANY_FLOAT,
        qty=ANY_FLOAT,
        trade_ns=st.integers(-(2**63), 2**63 - 1),
        recv_ns=st.integers(-(2**63), 2**63 - 1),
        buyer_maker=st.booleans(),
    ),
    max_size=4,
)


def message(t: Any) -> st.SearchStrategy[Any]:
    """A message of type `t` (or of one of the types of a tuple)."""
    if isinstance(t, tuple):
        return st.one_of(*[message(x) for x in t])
    if t is TickBatch:  # a batch is its columns: built from ticks
        return st.builds(from_ticks, TICKS, st.integers(-(2**63), 2**64 - 1))
    return _of(msgspec.inspect.type_info(t))


def _tags(t: Any) -> set[str]:
    return {x.__struct_config__.tag for x in (t if isinstance(t, tuple) else (t,))}


OTHER_FIELD = st.binary(min_size=1, max_size=8).filter(lambda k: k not in (codec.FIELD, b"dlq_reason"))


def bad(t: Any) -> st.SearchStrategy[dict[bytes, bytes]]:
    """The fields of an entry that is not a message of type `t`."""
    others = [x for x in WIRE_TYPES if x.__struct_config__.tag not in _tags(t)]
    some_tag = sorted(_tags(t))[0]
    choices = [
        st.binary(max_size=48).map(lambda b: {codec.FIELD: b}),  # random bytes
        st.dictionaries(OTHER_FIELD, st.binary(max_size=16), min_size=1, max_size=3),  # no `d`
        message(t).map(lambda m: {b"data": codec.encode(m)}),  # the payload under another name
        ANY_VALUE.map(lambda v: {codec.FIELD: msgspec.msgpack.encode(v)}),  # msgpack, not a message
        st.sampled_from(others).flatmap(message).map(codec.fields),  # a message of another type
        st.just({codec.FIELD: msgspec.msgpack.encode({"_t": some_tag})}),  # required fields missing
    ]
    if t is TickBatch:  # a batch whose columns do not hold its n ticks
        choices.append(
            st.integers(1, 50).map(
                lambda n: {
                    codec.FIELD: msgspec.msgpack.encode(
                        ["ticks.v1", n, ["X"], b"\x00\x00", b"", b"", b"", b"", b"", b"", 0]
                    )
                }
            )
        )
    return st.one_of(*choices)


@dataclass
class Entry:
    good: Any = None  # the message, or None for a bad entry
    fields: dict[bytes, bytes] = field(default_factory=dict)


def entries(t: Any, max_size: int = 6) -> st.SearchStrategy[list[Entry]]:
    one = st.one_of(message(t).map(lambda m: Entry(m, codec.fields(m))), bad(t).map(lambda f: Entry(None, f)))
    return st.lists(one, max_size=max_size)


def _unique(stream: str, es: list[Entry]) -> list[Entry]:
    """Good entries made tellable apart (the readers show the latest per key)."""
    out = []
    for k, e in enumerate(es):
        m = e.good
        if m is None:
            out.append(e)
            continue
        if stream == streams.ORDERS_EVENTS:
            m = msgspec.structs.replace(m, client_order_id=f"ev-{k}")
        elif stream == streams.POSITIONS:
            m = msgspec.structs.replace(m, account=f"acct-{k}", symbol="S")
        elif stream == streams.OPS_JOBS:
            m = msgspec.structs.replace(m, job=f"job-{k}", detail={**m.detail, "outcome": "ok"})
        elif stream == streams.OPS_CONTROL:
            m = msgspec.structs.replace(m, command="kill_switch", operator=f"op-{k}")
        elif stream == streams.MODELS_EVENTS:
            m = msgspec.structs.replace(m, name=f"m-{k}")
        elif stream == streams.OPS_GATES:
            m = msgspec.structs.replace(m, operator=f"g-{k}", ts_ns=0)  # appended: chained, stamped
        elif stream == streams.OPS_OPERATORS:  # appended: chained, stamped; unsigned (counts for nothing)
            m = msgspec.structs.replace(m, name=f"o-{k}", ts_ns=0, signer="", nonce="", sig="")
        out.append(Entry(m, codec.fields(m)))
    return out


@st.composite
def bus(draw: st.DrawFn) -> dict[str, list[Entry]]:
    """Entries for every stream, its dead-letter stream, and ops.jobs (read by `jobs history`)."""
    out = {s: _unique(s, draw(entries(t))) for s, t in TYPES.items()}
    out[streams.OPS_JOBS] = _unique(streams.OPS_JOBS, draw(entries(JobRun)))
    for s in streams.ALL:  # dead letters: any fields at all
        out[streams.dlq(s)] = [
            Entry(None, f)
            for f in draw(
                st.lists(
                    st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(max_size=16), min_size=1, max_size=3),
                    max_size=2,
                )
            )
        ]
    return out


# -- writing and reading -----------------------------------------------------------------------------
def write(r: redis.Redis, es: dict[str, list[Entry]], bad_heartbeat: bool) -> None:
    for stream, got in es.items():
        for e in got:
            if stream == streams.OPS_GATES and e.good is not None:
                audit.append(r, e.good)  # chained onto the good events before it
            elif stream == streams.OPS_OPERATORS and e.good is not None:
                chained.append(r, stream, operators.HEAD_KEY, e.good)
            else:
                r.xadd(stream, e.fields)
    if bad_heartbeat:
        r.hset("health:nope:nope-1", codec.FIELD_STR, b"\xc1junk")


def good(es: dict[str, list[Entry]], stream: str) -> list[Any]:
    return [e.good for e in es.get(stream, []) if e.good is not None]


def nbad(es: dict[str, list[Entry]], stream: str) -> int:
    return sum(e.good is None for e in es.get(stream, []))


@dataclass
class Run:
    code: int
    out: str
    err: str

    def notes(self) -> dict[str, int]:
        """stream -> the count of its "skipped N undecodable entries on STREAM" line on stderr."""
        found = re.findall(r"^tradeops: skipped (\d+) undecodable entr(?:y|ies) on (\S+)$", self.err, re.M)
        return {s: int(n) for n, s in found}


def cli(url: str, data_dir: str, *args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([*args, "--redis-url", url, "--data-dir", data_dir, "--operator", "tester"])
    run = Run(code, out.getvalue(), err.getvalue())
    assert "Traceback" not in run.err, run.err
    return run


def expected(es: dict[str, list[Entry]], *names: str) -> dict[str, int]:
    return {s: nbad(es, s) for s in names if nbad(es, s)}


# -- the property ------------------------------------------------------------------------------------
@pytest.mark.timeout(600)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(es=bus(), bad_heartbeat=st.booleans())
def test_every_reader_skips_and_counts_what_does_not_decode(
    r: redis.Redis,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    es: dict[str, list[Entry]],
    bad_heartbeat: bool,
) -> None:
    r.flushall()
    # an order that ended: `order submit --wait` finds it after everything else on orders.events
    done = OrderEvent(
        client_order_id="final-1",
        account="a",
        symbol="BTCUSDT",
        side="buy",
        quantity=1.0,
        limit_price=None,
        state="FILLED",
        filled_qty=1.0,
        avg_price=1.0,
        ts_ns=1,
    )
    es[streams.ORDERS_EVENTS] = [*es[streams.ORDERS_EVENTS], Entry(done, codec.fields(done))]
    write(r, es, bad_heartbeat)
    data = str(tmp_path_factory.getbasetemp() / "undecodable")
    heartbeats = {HEARTBEATS: 1} if bad_heartbeat else {}

    # the CLI: every command that reads the bus, each note the exact count of its stream
    res = cli(redis_url, data, "order", "list", "--json", "--limit", "1000")
    assert res.code == 0 and res.notes() == expected(es, streams.ORDERS_EVENTS)
    assert {o["client_order_id"] for o in json.loads(res.out)} == {
        m.client_order_id for m in good(es, streams.ORDERS_EVENTS)
    }
    res = cli(redis_url, data, "order", "show", "final-1")
    assert res.code == 0 and "FILLED" in res.out and res.notes() == expected(es, streams.ORDERS_EVENTS)
    res = cli(redis_url, data, "order", "submit", "buy", "1", "BTCUSDT", "--id", "final-1", "--wait", "10")
    assert res.code == 0 and "FILLED" in res.out and res.notes() == expected(es, streams.ORDERS_EVENTS)
    res = cli(redis_url, data, "positions", "--json")
    assert res.code == 0 and res.notes() == expected(es, streams.POSITIONS)
    assert sorted(p["account"] for p in json.loads(res.out)) == sorted(p.account for p in good(es, streams.POSITIONS))
    res = cli(redis_url, data, "jobs", "history", "--json", "--limit", "1000")
    assert res.code == 0 and res.notes() == expected(es, streams.OPS_JOBS)
    assert sorted(j["job"] for j in json.loads(res.out)) == sorted(j.job for j in good(es, streams.OPS_JOBS))
    res = cli(redis_url, data, "risk", "kill", "status")
    assert res.code == 0 and res.notes() == expected(es, streams.OPS_CONTROL)
    assert all(c.operator in res.out for c in good(es, streams.OPS_CONTROL))
    res = cli(redis_url, data, "audit", "--json")  # signatures judged against the registry: read too
    assert res.code == 0 and res.notes() == expected(es, streams.OPS_GATES, streams.OPS_OPERATORS)
    assert [e["operator"] for e in json.loads(res.out)] == [e.operator for e in good(es, streams.OPS_GATES)]
    res = cli(redis_url, data, "audit", "verify")
    # a break in a chain fails it, and so does a signature that does not verify (any good message may carry one)
    forged = any(m.sig for s in (streams.OPS_GATES, streams.OPS_MIGRATION, streams.OPS_CONTROL) for m in good(es, s))
    assert res.code == (1 if nbad(es, streams.OPS_GATES) or nbad(es, streams.OPS_OPERATORS) or forged else 0), res.out
    assert ("is not a gate event" in res.out) == bool(nbad(es, streams.OPS_GATES))
    assert ("is not an operator event" in res.out) == bool(nbad(es, streams.OPS_OPERATORS))
    for args in (["gate", "list", "--json"], ["gate", "show", "phase1"]):
        res = cli(redis_url, data, *args)
        assert res.code == 0 and res.notes() == expected(es, streams.OPS_GATES, streams.OPS_OPERATORS)
    res = cli(redis_url, data, "migrate", "status", "--json")
    assert res.code == 0 and res.notes() == expected(es, streams.OPS_MIGRATION, streams.OPS_GATES)
    res = cli(redis_url, data, "report", "--json")
    assert res.code == 0 and res.notes() == expected(
        es, streams.OPS_MIGRATION, streams.OPS_GATES, streams.OPS_OPERATORS
    )
    res = cli(redis_url, data, "health", "--json")
    assert res.code == 0 and res.notes() == heartbeats
    for args in (["alerts"], ["jobs"], ["refdata"], ["backtest", "list"], ["market", "list"]):
        res = cli(redis_url, data, *args)  # hashes, not streams: unaffected
        assert res.code == 0 and not res.notes(), (args, res.err)

    # the gates and the migration board, as functions
    skips = Skips()
    assert [e.operator for _, e in audit.events(r, skips)] == [e.operator for e in good(es, streams.OPS_GATES)]
    gates = model.load()
    decisions.states(r, gates, skips)
    latest_decisions(r, skips)
    report.build(r, gates, skips)
    states = board(r, skips)
    assert skips.by_stream == {
        s: n * k
        for s, n, k in (
            (streams.OPS_GATES, nbad(es, streams.OPS_GATES), 4),
            (streams.OPS_MIGRATION, nbad(es, streams.OPS_MIGRATION), 2),
            (streams.OPS_OPERATORS, nbad(es, streams.OPS_OPERATORS), 2),
        )
        if n
    }
    moves = [m for m in good(es, streams.OPS_MIGRATION) if m.service in states]
    assert sum(len(s.history) for s in states.values()) == len(moves)
    feed = GateFeed(r, gates)
    feed.poll()
    assert feed.skipped == nbad(es, streams.OPS_GATES) and feed.verdict.ok == (feed.skipped == 0)
    skips = Skips()
    assert [e.name for e in registry.events(r, skips=skips)] == [e.name for e in good(es, streams.MODELS_EVENTS)]
    assert skips.by_stream == expected(es, streams.MODELS_EVENTS)

    # the console's live poll, twice: the first reads what is there, the second what came since
    src = LiveSource(redis_url, Settings(), "tester", slow_every=1)
    try:
        snap = src.poll()
        assert snap.connected, snap.error
        shown = (
            expected(
                es,
                streams.MD_TICKS,
                streams.MD_BARS_1S,
                streams.ORDERS_EVENTS,
                streams.OPS_MIGRATION,
                streams.OPS_CONTROL,
                streams.OPS_GATES,
                streams.OPS_OPERATORS,
                streams.POSITIONS,
            )
            | heartbeats
        )
        assert snap.skipped == shown
        assert all(f"skipped {n} undecodable entr" in " ".join(snap.alerts) for n in shown.values())
        assert {o.client_order_id for o in snap.orders} == {m.client_order_id for m in good(es, streams.ORDERS_EVENTS)}
        assert len(snap.bars) == len(good(es, streams.MD_BARS_1S))
        assert {(p.account, p.symbol) for p in snap.positions} == {
            (p.account, p.symbol) for p in good(es, streams.POSITIONS)
        }
        assert {m.symbol for m in snap.market} == {s for b in good(es, streams.MD_TICKS) for s in b.symbols}
        kinds = [row[2] for row in snap.audit]
        assert kinds.count("migration") == len(good(es, streams.OPS_MIGRATION))
        assert kinds.count("kill switch") == len(good(es, streams.OPS_CONTROL))
        assert snap.audit_verdict.startswith("chain OK" if not nbad(es, streams.OPS_GATES) else "chain BROKEN")
        r.xadd(streams.ORDERS_EVENTS, {codec.FIELD: b"\xc1 one more bad"})
        r.xadd(streams.ORDERS_EVENTS, codec.fields(msgspec.structs.replace(done, client_order_id="later")))
        snap = src.poll()
        assert snap.skipped.get(streams.ORDERS_EVENTS) == nbad(es, streams.ORDERS_EVENTS) + 1
        assert "later" in {o.client_order_id for o in snap.orders}
    finally:
        src.close()
