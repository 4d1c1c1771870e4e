"""Services under garbage: oms, risk, live-gateway, ptrc and alerting run in-process while entries
that are not messages land on every stream they consume or follow. They keep running: what they
consume and cannot decode is in the stream's dead-letter stream (once per consumer group), what
they follow as a broadcast and cannot decode is counted in their heartbeat
(`skipped_undecodable`), odd but well-typed messages are handled or rejected, and an order
submitted afterwards still fills."""

from __future__ import annotations

import asyncio
import math
from functools import partial

import msgspec
import pytest
import redis

from backend.bench.risk import seed_prices
from backend.bus import codec, streams
from backend.bus.publish import queue_fields
from backend.marketdata.ticks import from_ticks
from backend.messages import (
    FINAL_STATES,
    Alert,
    ControlCommand,
    ExecOrder,
    ExecReport,
    GateEvent,
    Heartbeat,
    Instrument,
    Order,
    OrderEvent,
    RiskDecision,
    RiskRequest,
    Tick,
)
from backend.services import service_class
from tests.conftest import await_for

NAN, INF = math.nan, math.inf
BIG = 2**64 - 1


def garbage(tag: str) -> list[dict[bytes, bytes]]:
    """Entries that are not messages of the type tagged `tag`."""
    hb = Heartbeat(service="x", instance="x-1", environment="legacy", state="running", ts_ns=1, started_ns=1, pid=1)
    return [
        {codec.FIELD: b"\xc1junk"},  # not msgpack
        {codec.FIELD: b""},
        {b"other": b"field"},  # no payload field
        {codec.FIELD: msgspec.msgpack.encode([1, "two", None])},  # msgpack, not a message
        codec.fields(hb),  # a message of another type
        {codec.FIELD: msgspec.msgpack.encode({"_t": tag})},  # required fields missing
    ] + (
        [{codec.FIELD: msgspec.msgpack.encode(["ticks.v1", 3, ["X"], b"\x00\x00", b"", b"", b"", b"", b"", b"", 0])}]
        if tag == "ticks.v1"
        else []
    )  # a batch whose columns do not hold its ticks


def odd() -> dict[str, list[object]]:
    """Well-typed messages with values nobody sends, per stream."""
    weird = Order(
        client_order_id="odd-1",
        account="",
        symbol="\x00",
        side="buy",
        type="limit",
        quantity=NAN,
        limit_price=INF,
        sent_ns=BIG,
    )
    return {
        streams.ORDERS_NEW: [
            weird,
            msgspec.structs.replace(weird, client_order_id="odd-2", quantity=1e308, limit_price=-1.0, symbol="BTCUSDT"),
        ],
        streams.RISK_REQUESTS: [RiskRequest(request_id="r?", order=weird, sent_ns=-(2**63))],
        streams.RISK_DECISIONS: [
            RiskDecision(request_id="nope", client_order_id="nope", approved=True, request_sent_ns=BIG)
        ],
        streams.EXEC_ORDERS: [
            ExecOrder(action="new", client_order_id="odd-3"),
            ExecOrder(action="cancel", client_order_id="never-seen"),
        ],
        streams.EXEC_REPORTS: [
            ExecReport(
                client_order_id="never-seen",
                venue_order_id="",
                kind="fill",
                account="a",
                symbol="BTCUSDT",
                fill_qty=NAN,
                fill_price=INF,
                trade_id="t?",
                ts_ns=BIG,
            )
        ],
        streams.OPS_ALERTS: [Alert(id="", ts_ns=-1, severity="critical", source="", kind="", message="\x00" * 3)],
        streams.MD_TICKS: [from_ticks([Tick(symbol="WEIRD", trade_id=-1, price=NAN, qty=-INF, trade_ns=BIG // 2)])],
        streams.OPS_CONTROL: [ControlCommand(target="nobody", command="kill_switch", args={"on": [1]}, ts_ns=BIG)],
        streams.REFDATA_EVENTS: [Instrument(symbol="WEIRD", tick_size=NAN, lot_size=-1.0)],
        streams.OPS_GATES: [
            GateEvent(
                gate="?",
                kind="check_run",
                operator="",
                ts_ns=-1,
                outcome="failed",
                check="\x00",
                evidence={"services": {"x": 1}},
            )
        ],
    }


TAGS = {
    streams.ORDERS_NEW: "order.v1",
    streams.RISK_REQUESTS: "risk_request.v1",
    streams.RISK_DECISIONS: "risk_decision.v1",
    streams.EXEC_ORDERS: "exec_order.v1",
    streams.EXEC_REPORTS: "exec_report.v1",
    streams.OPS_ALERTS: "alert.v1",
    streams.MD_TICKS: "ticks.v1",
    streams.OPS_CONTROL: "control.v1",
    streams.REFDATA_EVENTS: "instrument.v1",
    streams.OPS_GATES: "gate_event.v1",
}
SERVICES = ["risk", "live-gateway", "oms", "ptrc", "alerting"]


def heartbeat(r: redis.Redis, svc: object) -> Heartbeat | None:
    raw = r.hget(streams.HEALTH_KEY.format(service=svc.name, instance=svc.instance), codec.FIELD_STR)
    return codec.decode(raw, Heartbeat) if raw else None


def dead_lettered(r: redis.Redis, stream: str, group: str) -> set[bytes]:
    return {f[b"dlq_id"] for _, f in r.xrange(streams.dlq(stream)) if f.get(b"dlq_group") == group.encode()}


@pytest.mark.timeout(120)
async def test_services_keep_running_and_dead_letter_garbage(redis_url: str, r: redis.Redis) -> None:
    seed_prices(r)  # risk and the paper venue price BTCUSDT from the start
    svcs = [service_class(name)(redis_url=redis_url, instance=f"{name}-garbage") for name in SERVICES]
    tasks = [asyncio.create_task(s.run(), name=s.name) for s in svcs]
    try:
        # every broadcast reader knows where it starts (a "$" cursor is resolved at its first read)
        def started() -> bool:
            return all(
                s.state == "running" and all(c != "$" for b in s.readers for c in b.cursors.values()) for s in svcs
            ) or any(t.done() for t in tasks)

        await await_for(started, 30, what="the services started")
        assert not any(t.done() for t in tasks)
        bad: dict[str, list[bytes]] = {}
        for stream, tag in TAGS.items():
            # exec.reports through its producer's publish: with ptrc's copy, in one MULTI
            add = partial(queue_fields, r, stream) if streams.copies(stream) else partial(r.xadd, stream)
            for f in garbage(tag):
                bad.setdefault(stream, []).append(add(f))
            for msg in odd()[stream]:
                add(codec.fields(msg))
        for stream, copies in streams.COPIES.items():  # the same entries, in the same order
            # (the copy read second holds at least what the stream held: one MULTI writes both)
            ids = dict(zip([e for e, _ in r.xrange(stream)], [e for e, _ in r.xrange(copies[0])], strict=False))
            bad[copies[0]] = [ids[e] for e in bad[stream]]

        consumed = {(w.stream, w.group) for s in svcs for w in s.all_workers()}
        assert (streams.EXEC_REPORTS, "oms") in consumed and (streams.EXEC_REPORTS_PTRC, "ptrc") in consumed
        for stream, group in sorted(consumed):  # each group dead-letters each entry it cannot decode
            want = set(bad.get(stream, []))
            await await_for(
                lambda s=stream, g=group, w=want: w <= dead_lettered(r, s, g) or any(t.done() for t in tasks),
                30,
                what=f"{group}'s dead letters on {stream}",
            )
            assert want <= dead_lettered(r, stream, group), (stream, group)

        followed = {s.name: sum(len(bad.get(c, [])) for b in s.readers for c in b.cursors) for s in svcs}
        assert followed == {"risk": 25, "live-gateway": 7, "oms": 6, "ptrc": 7, "alerting": 6}
        for s in svcs:  # what a service follows and cannot decode is counted in its heartbeat
            await await_for(
                lambda s=s: (
                    ((hb := heartbeat(r, s)) is not None and hb.extra.get("skipped_undecodable") == followed[s.name])
                    or any(t.done() for t in tasks)
                ),
                30,
                what=f"{s.name}'s skipped_undecodable",
            )
            assert heartbeat(r, s).extra["skipped_undecodable"] == followed[s.name]

        # still working: an order submitted now fills
        r.xadd(
            streams.ORDERS_NEW,
            codec.fields(
                Order(
                    client_order_id="after-garbage",
                    account="acc-1",
                    symbol="BTCUSDT",
                    side="buy",
                    type="market",
                    quantity=0.5,
                )
            ),
        )

        def filled() -> OrderEvent | None:
            for _, f in r.xrange(streams.ORDERS_EVENTS):
                ev = codec.decode(codec.payload(f), OrderEvent)
                if ev.client_order_id == "after-garbage" and ev.state in FINAL_STATES:
                    return ev
            return None

        ev = await await_for(lambda: filled() or any(t.done() for t in tasks), 30, what="the order after the garbage")
        assert isinstance(ev, OrderEvent) and ev.state == "FILLED", ev
        assert not any(t.done() for t in tasks), [t for t in tasks if t.done()]
        assert all(s.state == "running" for s in svcs)
    finally:
        for s in svcs:
            s.request_stop()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    assert not [x for x in results if isinstance(x, BaseException)], results
