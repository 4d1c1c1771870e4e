"""feast-pipeline and ptrc on real Redis, with their bad input."""

from __future__ import annotations

import asyncio

import redis

from backend.bus import codec, streams
from backend.bus.publish import queue_fields
from backend.messages import Bar, ExecReport, Order, Position
from backend.services.feast_pipeline import FeastPipelineService
from backend.services.ptrc import PtrcService
from backend.settings import Settings
from backend.trading.orders import OrderRecord, record_key
from tests.conftest import await_for


async def test_feast_pipeline_rows_online_store_and_bad_bars(redis_url: str, r: redis.Redis, tmp_path) -> None:
    for i in range(20):
        c = 100.0 + i
        r.xadd(streams.MD_BARS_1S, codec.fields(Bar("BTCUSDT", "1s", i * 10**9, c, c, c, c, 1.0, c, 1)))
    r.xadd(streams.MD_BARS_1S, codec.fields(Bar("BTCUSDT", "1s", 99 * 10**9, 1, 1, 1, -5.0, 1.0, 1, 1)))
    r.xadd(streams.MD_BARS_1S, {b"d": b"junk"})
    svc = FeastPipelineService(redis_url=redis_url, settings=Settings(data_dir=str(tmp_path)), instance="f1")
    task = asyncio.create_task(svc.run())
    await await_for(lambda: r.xlen(streams.FEATURES) == 20 and r.xlen(streams.dlq(streams.MD_BARS_1S)) == 2, 20)
    svc.request_stop()
    await asyncio.wait_for(task, 10)
    online = r.hgetall("features:online:BTCUSDT")
    assert int(online[b"ts_ns"]) == 20 * 10**9 and float(online[b"ret_1"]) > 0
    reasons = sorted(f[b"dlq_reason"].decode() for _, f in r.xrange(streams.dlq(streams.MD_BARS_1S)))
    assert reasons[0].startswith("bad bar for BTCUSDT: close -5.0") and reasons[1].startswith("undecodable bar")
    from backend.features.store import read_offline

    assert len(read_offline(tmp_path)) == 20


def fill(tid: str, side: str, qty: float, px: float, account: str = "a1") -> dict:
    return codec.fields(
        ExecReport(
            client_order_id=tid,
            venue_order_id="v",
            kind="fill",
            account=account,
            symbol="BTCUSDT",
            side=side,
            trade_id=tid,
            fill_qty=qty,
            fill_price=px,
        )
    )


def known(r: redis.Redis, *orders: tuple[str, str, float], account: str = "a1") -> None:
    """Orders (client order id, side, quantity) as the OMS records them: ptrc books only their fills."""
    for coid, side, qty in orders:
        o = Order(client_order_id=coid, account=account, symbol="BTCUSDT", side=side, type="market", quantity=qty)
        r.hset(record_key(coid), mapping={"v": 1, "d": codec.encode(OrderRecord(order=o, state="ROUTED"))})


async def test_ptrc_positions_dedup_restart_and_bad_fills(redis_url: str, r: redis.Redis) -> None:
    known(r, ("t1", "buy", 2), ("t2", "sell", 1), ("t3", "sell", 1), ("t4", "buy", 1))
    queue_fields(r, streams.EXEC_REPORTS, fill("t1", "buy", 2, 100.0))
    queue_fields(r, streams.EXEC_REPORTS, fill("t1", "buy", 2, 100.0))  # the same fill again
    queue_fields(r, streams.EXEC_REPORTS, fill("t2", "sell", 1, 110.0))
    queue_fields(r, streams.EXEC_REPORTS, fill("t3", "sell", -1, 110.0))  # bad
    svc = PtrcService(redis_url=redis_url, instance="p1")
    task = asyncio.create_task(svc.run())
    await await_for(lambda: r.xlen(streams.dlq(streams.EXEC_REPORTS_PTRC)) == 1 and getattr(svc, "fills", 0) == 2, 20)
    svc.request_stop()
    await asyncio.wait_for(task, 10)
    last = codec.decode(codec.payload(r.xrevrange(streams.POSITIONS, count=1)[0][1]), Position)
    assert (last.quantity, last.avg_price, last.realized_pnl) == (1.0, 100.0, 10.0)
    # a restart keeps the position and still counts each fill once
    queue_fields(r, streams.EXEC_REPORTS, fill("t2", "sell", 1, 110.0))
    queue_fields(r, streams.EXEC_REPORTS, fill("t4", "buy", 1, 120.0))
    svc = PtrcService(redis_url=redis_url, instance="p1")
    task = asyncio.create_task(svc.run())
    await await_for(lambda: getattr(svc, "fills", 0) == 1, 20)
    svc.request_stop()
    await asyncio.wait_for(task, 10)
    last = codec.decode(codec.payload(r.xrevrange(streams.POSITIONS, count=1)[0][1]), Position)
    assert (last.quantity, last.avg_price, last.realized_pnl) == (2.0, 110.0, 10.0)


async def test_ptrc_breaches_become_alerts_once_each(redis_url: str, r: redis.Redis) -> None:
    from backend.messages import Alert

    known(r, ("b1", "buy", 1), ("b2", "buy", 1), ("b3", "buy", 1), ("b4", "sell", 3), account="a2")
    queue_fields(r, streams.EXEC_REPORTS, fill("b1", "buy", 1, 100.0, account="a2"))
    queue_fields(r, streams.EXEC_REPORTS, fill("b2", "buy", 1, 100.0, account="a2"))  # exposure 200 > 150
    queue_fields(r, streams.EXEC_REPORTS, fill("b3", "buy", 1, 100.0, account="a2"))  # still breached: no second alert
    queue_fields(r, streams.EXEC_REPORTS, fill("b4", "sell", 3, 90.0, account="a2"))  # flat, lost 30 > 20
    svc = PtrcService(redis_url=redis_url, instance="p2", config={"max_exposure": 150.0, "max_drawdown": 20.0})
    task = asyncio.create_task(svc.run())
    await await_for(lambda: getattr(svc, "fills", 0) == 4, 20)
    svc.request_stop()
    await asyncio.wait_for(task, 10)
    alerts = [codec.decode(codec.payload(f), Alert) for _, f in r.xrange(streams.OPS_ALERTS)]
    # the exposure breach is over when the position is flat: its alert is resolved
    assert [(a.kind, a.severity, a.key, a.resolved) for a in alerts] == [
        ("exposure", "warning", "exposure:a2:BTCUSDT", ""),
        ("exposure", "info", "exposure:a2:BTCUSDT", "back within its limit"),
        ("drawdown", "critical", "drawdown:a2", ""),
    ]
    assert alerts[0].message == "a2 BTCUSDT exposure 200.00 > 150.00"
    assert alerts[2].message == "a2 PnL -30.00 beyond drawdown limit 20.00"
