"""refdata, alerting and md-replay on real Redis, each with its bad input (the scheduler has
test_scheduler.py)."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import redis

from backend.bus import codec, streams
from backend.marketdata import store, ticks
from backend.messages import Alert, GateEvent, Instrument, ReplayRequest, Tick, TickBatch
from backend.refdata.master import instruments
from backend.services.alerting import AlertingService, ack, active
from backend.services.base import Service
from backend.services.md_replay import MdReplayService
from backend.services.refdata import RefdataService
from backend.settings import Settings
from tests.conftest import await_for


async def run_until(svc: Service, pred: Callable[[], Any], timeout: float = 20) -> None:
    task = asyncio.create_task(svc.run())
    try:
        await await_for(pred, timeout)
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)


async def test_refdata_seeds_updates_and_rejects(redis_url: str, r: redis.Redis) -> None:
    r.xadd(
        streams.REFDATA_UPDATES,
        codec.fields(Instrument(symbol="BTCUSDT", tick_size=0.1, lot_size=0.001, status="halted")),
    )
    r.xadd(streams.REFDATA_UPDATES, codec.fields(Instrument(symbol="ETHUSDT", tick_size=-1, lot_size=1)))
    svc = RefdataService(redis_url=redis_url, instance="rd")
    await run_until(svc, lambda: r.xlen(streams.dlq(streams.REFDATA_UPDATES)) == 1 and svc.changes >= 11)
    inst = instruments(r)
    assert len(inst) == 10 and inst["BTCUSDT"].status == "halted" and inst["ETHUSDT"].tick_size == 0.01
    ((_, f),) = r.xrange(streams.dlq(streams.REFDATA_UPDATES))
    assert f[b"dlq_reason"] == b"bad instrument: ETHUSDT: tick_size must be positive, not -1.0"
    assert r.xlen(streams.REFDATA_EVENTS) == 11


@pytest.mark.parametrize(
    "text,message",
    [
        (
            '[[instrument]]\nsymbol = "BTCUSDT"\ntick_size = 0.1\nlot_size = 1\n[[instrument]]\nsymbol = "ETHUSDT"\n'
            "tick_size = -1\nlot_size = 1\n",
            "instrument 2: ETHUSDT: tick_size must be positive, not -1.0",
        ),
        (
            '[[instrument]]\nsymbol = "BTCUSDT"\ntick_sise = 0.1\nlot_size = 1\n',
            "instrument 1: Object missing required field `tick_size`",
        ),
        (
            '[[instrument]]\nsymbol = "X"\ntick_size = 1\nlot_size = 1\nstatus = "open"\n',
            "instrument 1: Invalid enum value 'open'",
        ),
        ("[[instrument]\n", "not valid TOML"),
        ('title = "none"\n', "no [[instrument]] entries"),
        (
            '[[instrument]]\nsymbol = "X"\ntick_size = 1\nlot_size = 1\n[[instrument]]\nsymbol = "X"\ntick_size = 1\n'
            "lot_size = 1\n",
            "symbols listed twice: X",
        ),
    ],
)
def test_refdata_master_file_errors_name_the_entry(tmp_path, text: str, message: str) -> None:
    from backend.errors import ConfigError
    from backend.refdata.master import load_file

    f = tmp_path / "instruments.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=r"\[services\.refdata\] file .*instruments\.toml: ") as err:
        load_file(str(f))
    assert message in str(err.value)


async def test_alerting_skips_undecodable_gate_events_and_heartbeats(redis_url: str, r: redis.Redis) -> None:
    from gates import audit

    audit.append(
        r, GateEvent(gate="task03", kind="check_run", operator="ann", ts_ns=0, check="latency", outcome="failed")
    )
    r.xadd(streams.OPS_GATES, {b"d": b"\xc1junk"})
    r.hset("health:x:x-1", "d", b"\xc1junk")
    svc = AlertingService(redis_url=redis_url, instance="al-2")
    task = asyncio.create_task(svc.run())
    try:
        await await_for(lambda: "gate:task03:latency" in [k for k, _ in active(r)], 20)
        # the junk heartbeat and the junk gate entry are read by two loops: wait for both skips
        await await_for(lambda: svc.skipped >= 2 or task.done(), 20, what="both bad entries skipped")
        assert svc.skipped >= 2 and not task.done()
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)


class _Hook(http.server.BaseHTTPRequestHandler):
    got: ClassVar[list[dict]] = []
    fail_first = True

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Hook.fail_first:
            _Hook.fail_first = False
            self.send_response(503)
        else:
            _Hook.got.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *a) -> None:
        pass


async def test_alerting_dedups_acks_watches_and_retries_webhooks(redis_url: str, r: redis.Redis) -> None:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        for _ in range(2):  # the same breach twice: one alert
            r.xadd(
                streams.OPS_ALERTS,
                codec.fields(
                    Alert(
                        id="x",
                        ts_ns=1,
                        severity="warning",
                        source="ptrc",
                        kind="exposure",
                        message="too big",
                        key="exposure:a:BTC",
                    )
                ),
            )
        r.xadd(streams.OPS_ALERTS, {b"d": b"junk"})
        r.xadd("dlq.md.ticks.raw", {b"dlq_reason": b"x"})
        from gates import audit

        svc = AlertingService(
            redis_url=redis_url, instance="al", config={"webhook": f"http://127.0.0.1:{srv.server_address[1]}/hook"}
        )
        task = asyncio.create_task(svc.run())
        await asyncio.sleep(0)
        audit.append(
            r, GateEvent(gate="task02", kind="check_run", operator="ann", ts_ns=0, check="bars", outcome="failed")
        )
        try:
            await await_for(lambda: {k.split(":")[0] for k, _ in active(r)} >= {"exposure", "dlq", "gate"}, 20)
        finally:
            svc.request_stop()
            await asyncio.wait_for(task, 10)
        keys = [k for k, _ in active(r)]
        assert keys.count("exposure:a:BTC") == 1
        assert any(
            f[b"dlq_reason"].startswith(b"undecodable alert") for _, f in r.xrange(streams.dlq(streams.OPS_ALERTS))
        )
        assert {a["kind"] for a in _Hook.got} >= {"exposure"}  # delivered after a retry
        assert ack(r, "exposure:a:BTC", "ann").acked_by == "ann"
        assert "exposure:a:BTC" not in [k for k, _ in active(r)]
    finally:
        srv.shutdown()


async def test_alerting_resolves_alerts_whose_cause_is_gone(redis_url: str, r: redis.Redis) -> None:
    """A breach that is over (ptrc says so), a failed instance that runs again, a dead-letter
    stream that stopped growing and a gate check that passes on its next run: each alert leaves
    the active ones and is kept on ops.alerts.resolved with the reason; a clean stop is no alert."""
    from backend.messages import Heartbeat
    from backend.services.alerting import RESOLVED
    from gates import audit

    def beat(instance: str, state: str) -> None:
        now = time.time_ns()
        r.hset(
            f"health:svc:{instance}",
            "d",
            codec.encode(
                Heartbeat(
                    service="svc",
                    instance=instance,
                    environment="legacy",
                    state=state,
                    ts_ns=now,
                    started_ns=now,
                    pid=0,
                )
            ),
        )

    breach = {
        "id": "x",
        "ts_ns": 1,
        "severity": "warning",
        "source": "ptrc",
        "kind": "exposure",
        "key": "exposure:a:BTC",
    }
    r.xadd(streams.OPS_ALERTS, codec.fields(Alert(message="too big", **breach)))
    beat("svc-1", "failed")
    beat("svc-2", "stopped")  # drained in a cutover
    r.xadd("dlq.md.ticks.raw", {b"dlq_reason": b"x"})
    audit.append(
        r, GateEvent(gate="task03", kind="check_run", operator="ann", ts_ns=0, check="latency", outcome="failed")
    )
    keys = {"exposure:a:BTC", "heartbeat:svc-1", "dlq:dlq.md.ticks.raw:0", "gate:task03:latency"}
    svc = AlertingService(redis_url=redis_url, instance="al-3", config={"dlq_quiet_s": 3.0})
    task = asyncio.create_task(svc.run())
    try:
        await await_for(lambda: {k for k, _ in active(r)} == keys, 20, what="the four alerts")
        r.xadd(streams.OPS_ALERTS, codec.fields(Alert(message="over", resolved="back within its limit", **breach)))
        audit.append(
            r, GateEvent(gate="task03", kind="check_run", operator="bob", ts_ns=0, check="latency", outcome="passed")
        )

        def running_and_all_resolved() -> bool:
            beat("svc-1", "running")  # it beats while it runs
            return not active(r)

        await await_for(running_and_all_resolved, 30, interval=0.2, what="every alert resolved")
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)
    resolved = {a.key: a.resolved for a in (codec.decode(codec.payload(f), Alert) for _, f in r.xrange(RESOLVED))}
    assert resolved == {
        "exposure:a:BTC": "back within its limit",
        "heartbeat:svc-1": "svc (svc-1) is running again",
        "dlq:dlq.md.ticks.raw:0": "dlq.md.ticks.raw has not grown for 3s (1 dead letter(s))",
        "gate:task03:latency": "check latency passed (by bob)",
    }
    assert svc.resolved == 4


async def test_alerting_raises_a_degraded_instance_with_its_reason_until_it_runs_again(
    redis_url: str, r: redis.Redis
) -> None:
    from backend.messages import Heartbeat
    from backend.services.alerting import RESOLVED

    def beat(state: str, reason: str = "") -> None:
        now = time.time_ns()
        r.hset(
            "health:sink-ticks:sink-1",
            "d",
            codec.encode(
                Heartbeat(
                    service="sink-ticks",
                    instance="sink-1",
                    environment="legacy",
                    state=state,
                    ts_ns=now,
                    started_ns=now,
                    pid=0,
                    reason=reason,
                )
            ),
        )

    svc = AlertingService(redis_url=redis_url, instance="al-4")
    task = asyncio.create_task(svc.run())
    try:

        def degraded_alert() -> Alert | None:
            beat("degraded", "cannot write the tick store: no space left on device (ENOSPC)")
            return dict(active(r)).get("degraded:sink-1")

        alert = await await_for(degraded_alert, 20, interval=0.2, what="the degraded alert")
        assert alert.severity == "warning" and alert.kind == "degraded"
        assert alert.message == (
            "sink-ticks (sink-1) is degraded: cannot write the tick store: no space left on device (ENOSPC)"
        )
        assert "heartbeat:sink-1" not in dict(active(r))  # alive: no heartbeat alert

        def cleared() -> bool:
            beat("running")
            return not active(r)

        await await_for(cleared, 20, interval=0.2, what="the alert resolved")
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)
    resolved = [codec.decode(codec.payload(f), Alert) for _, f in r.xrange(RESOLVED)]
    assert [(a.key, a.resolved) for a in resolved] == [("degraded:sink-1", "sink-ticks (sink-1) is running again")]


async def test_md_replay_in_order_and_bad_requests(redis_url: str, r: redis.Redis, tmp_path) -> None:
    now = time.time_ns()
    tks = [
        Tick("BTCUSDT" if i % 2 else "ETHUSDT", i, 100.0 + i, 1.0, now - 5_000_000_000 + i * 1_000_000)
        for i in range(300)
    ]
    batch = ticks.from_ticks(tks)
    store.ParquetStore(store.ticks_dir(tmp_path)).write(store.to_table([("1-0", batch)]), "1-0", "1-0")
    r.xadd(streams.REPLAY_REQUESTS, codec.fields(ReplayRequest(id="bad", start_ns=10, end_ns=5)))
    r.xadd(
        streams.REPLAY_REQUESTS,
        codec.fields(ReplayRequest(id="r1", start_ns=now - 10**10, end_ns=now, speed=0, target="md.ticks.replay.test")),
    )
    svc = MdReplayService(
        redis_url=redis_url, settings=Settings(data_dir=str(tmp_path)), instance="mr", config={"batch": 64}
    )
    await run_until(
        svc, lambda: getattr(svc, "replayed", 0) == 300 and r.xlen(streams.dlq(streams.REPLAY_REQUESTS)) == 1
    )
    got = [
        t
        for _, f in r.xrange("md.ticks.replay.test")
        for t in ticks.iter_ticks(codec.decode(codec.payload(f), TickBatch))
    ]
    assert [t.trade_id for t in got] == list(range(300))
    assert [t.trade_ns for t in got] == sorted(t.trade_ns for t in got)


@pytest.mark.timeout(90)
def test_risk_validates_orders_against_refdata(redis_url: str, r: redis.Redis) -> None:
    """refdata and risk as processes: the instrument master's lot and tick sizes and status reach
    risk through refdata.events, and orders off the lot or tick, or for a halted symbol, are denied."""
    from backend.bench.harness import BenchStack
    from backend.bench.risk import seed_prices
    from backend.messages import Order, RiskDecision, RiskRequest
    from tests.conftest import wait_for

    def ask(coid: str, **kw: object) -> None:
        o = Order(
            **{
                "client_order_id": coid,
                "account": "a",
                "symbol": "BTCUSDT",
                "side": "buy",
                "type": "limit",
                "quantity": 0.001,
                "limit_price": 65000.0,
                **kw,
            }
        )
        r.xadd(
            streams.RISK_REQUESTS, codec.fields(RiskRequest(request_id=f"{coid}#1", order=o, sent_ns=time.time_ns()))
        )

    def decisions() -> dict[str, RiskDecision]:
        return {
            d.client_order_id: d
            for d in (codec.decode(codec.payload(f), RiskDecision) for _, f in r.xrange(streams.RISK_DECISIONS))
        }

    with BenchStack(redis_url=redis_url) as st:
        seed_prices(st.r)
        st.start("refdata")
        st.start("risk")
        probes = [0]

        def risk_knows_the_lots() -> bool:
            # risk reads refdata.events beside its requests: probe with odd lots until one is denied
            last = decisions().get(f"probe-{probes[0]}")
            if probes[0] and last is None:
                return False  # not decided yet
            if last is not None and last.rule == "lot_size":
                return True
            probes[0] += 1
            ask(f"probe-{probes[0]}", quantity=0.000015)
            return False

        wait_for(risk_knows_the_lots, 20, what="risk following refdata")
        ask("good")
        ask("odd-lot", quantity=0.000015)
        ask("off-tick", limit_price=65000.005)
        wait_for(lambda: {"good", "odd-lot", "off-tick"} <= set(decisions()), 20, what="decisions")
        d = decisions()
        assert d["good"].approved
        assert (d["odd-lot"].rule, d["odd-lot"].reason) == (
            "lot_size",
            "quantity 1.5e-05 is not a multiple of BTCUSDT's lot size 1e-05 (refdata)",
        )
        assert (d["off-tick"].rule, d["off-tick"].reason) == (
            "tick_size",
            "limit 65000 is not on BTCUSDT's tick size 0.01 (refdata)",
        )
        r.xadd(
            streams.REFDATA_UPDATES,
            codec.fields(Instrument(symbol="BTCUSDT", tick_size=0.01, lot_size=0.00001, status="halted")),
        )
        wait_for(lambda: r.xlen(streams.REFDATA_EVENTS) == 11, 20, what="the halt published")
        ask("after-halt")
        wait_for(lambda: "after-halt" in decisions(), 20, what="the decision after the halt")
        assert decisions()["after-halt"].rule == "instrument_status"
