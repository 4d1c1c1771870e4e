"""Broadcast reads: every entry after the start, from several streams, none skipped between two
reads (a "$" cursor is resolved once, at start() or the first read); decoded reads skip and count
what does not decode; the sync reader (CLI) reads the same way."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from backend.bus.broadcast import Broadcast
from tests.conftest import await_for


async def test_nothing_is_skipped_between_reads(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await r.xadd("prices", {"d": b"before"})  # older than the start: not read
    b = Broadcast(r, {"prices": "$", "control": "0"}, block_ms=20, min_interval_s=0.0)
    seen: list[tuple[str, bytes]] = []

    async def read() -> bool:
        seen.extend((name, f[b"d"]) for name, _, f in await b.read())
        return bool(seen)

    try:
        await r.xadd("control", {"d": b"kill"})
        await await_for(read, what="the first entries")
        # written while no read is waiting: a "$" read again would miss them
        await r.xadd("prices", {"d": b"p1"})
        await r.xadd("prices", {"d": b"p2"})
        await await_for(lambda: read() if len(seen) < 3 else True, what="the entries between reads")
        assert sorted(seen) == [("control", b"kill"), ("prices", b"p1"), ("prices", b"p2")]
    finally:
        await b.close()
        await r.aclose()


async def test_decoded_reads_skip_what_does_not_decode(redis_url: str) -> None:
    from backend.bus import codec
    from backend.messages import ControlCommand

    r = aioredis.Redis.from_url(redis_url)
    await r.xadd("control", codec.fields(ControlCommand(target="risk", command="old", operator="x", ts_ns=1)))
    b = Broadcast(r, {"control": "$"}, block_ms=None, min_interval_s=0.0, decode=ControlCommand)
    try:
        await b.start()  # "$" is now: what is added from here on is read, even before the first read
        await r.xadd("control", {"d": b"\xc1junk"})
        eid = await r.xadd(
            "control", codec.fields(ControlCommand(target="risk", command="kill_switch", operator="ann", ts_ns=2))
        )
        got = await b.read()  # without blocking
        assert [(s, i, m.command) for s, i, m in got] == [("control", eid, "kill_switch")]
        assert b.skipped == 1 and b.cursors["control"] == eid
        assert await b.read() == []
    finally:
        await b.close()
        await r.aclose()


def test_the_sync_reader_reads_the_same_way(r: redis.Redis) -> None:
    from backend.bus import codec
    from backend.bus.broadcast import BroadcastSync
    from backend.messages import OrderEvent

    def ev(coid: str) -> dict[bytes, bytes]:
        return codec.fields(
            OrderEvent(
                client_order_id=coid,
                account="a",
                symbol="BTCUSDT",
                side="buy",
                quantity=1.0,
                limit_price=None,
                state="NEW",
                ts_ns=1,
            )
        )

    r.xadd("orders.events", ev("before"))
    b = BroadcastSync(r, {"orders.events": "$", "other": "0"}, block_ms=50, decode=OrderEvent)
    b.start()
    r.xadd("orders.events", ev("o1"))
    r.xadd("orders.events", {"d": b"junk"})
    r.xadd("orders.events", ev("o2"))
    got = b.read()
    assert [(s, m.client_order_id) for s, _, m in got] == [("orders.events", "o1"), ("orders.events", "o2")]
    assert b.skipped == 1
    assert b.read() == []  # waited 50 ms: nothing new
    r.xadd("other", ev("o3"))
    assert [m.client_order_id for _, _, m in b.read()] == ["o3"]


async def test_a_split_stream_is_read_whole_and_producers_route_by_account(redis_url: str) -> None:
    # the order path split in 2 (this process's layout, as `[partitions]` sets it): a producer's
    # order goes to its account's partition, a cancel without the account is refused by name,
    # and a broadcast reader of orders.events reads both partitions under the stream's own name
    import pytest

    from backend.bus import codec, partitions, streams
    from backend.bus.publish import Unroutable, publish
    from backend.messages import CancelRequest, Order, OrderEvent

    r = aioredis.Redis.from_url(redis_url)
    partitions.use({streams.ORDERS_NEW: 2})
    try:
        b = Broadcast(r, {streams.ORDERS_EVENTS: "0"}, decode=OrderEvent, block_ms=20, min_interval_s=0.0)
        assert sorted(b.cursors) == ["orders.events:{p0of2}", "orders.events:{p1of2}"]
        accounts = [f"acct-{i}" for i in range(8)]
        for i, a in enumerate(accounts):
            o = Order(client_order_id=f"c{i}", account=a, symbol="BTCUSDT", side="buy", type="market", quantity=1.0)
            await publish(r, streams.ORDERS_NEW, o)
            ev = OrderEvent(
                client_order_id=o.client_order_id, account=a, symbol="BTCUSDT", side="buy", quantity=1.0,
                limit_price=None, state="NEW",
            )  # fmt: skip
            await r.xadd(partitions.route(streams.ORDERS_EVENTS, a, 2), codec.fields(ev))
        for i, a in enumerate(accounts):  # each order in its account's partition
            part = partitions.route(streams.ORDERS_NEW, a, 2)
            got = [codec.decode(codec.payload(f), Order) for _, f in await r.xrange(part)]
            assert f"c{i}" in {o.client_order_id for o in got}
        assert await r.xlen(streams.ORDERS_NEW) == 0  # the unsplit stream: nothing
        assert sum([await r.xlen(s) for s in partitions.names(streams.ORDERS_NEW, 2)]) == 8
        with pytest.raises(Unroutable, match="split into 2 partitions by account"):
            await publish(r, streams.ORDERS_NEW, CancelRequest(client_order_id="c1"))
        seen: list[tuple[str, str]] = []

        async def read() -> bool:
            seen.extend((s, m.account) for s, _, m in await b.read())
            return len(seen) >= 8

        await await_for(read, what="both partitions read")
        assert {s for s, _ in seen} == {streams.ORDERS_EVENTS} and sorted(a for _, a in seen) == accounts
        await b.close()
    finally:
        partitions.use({})
        await r.aclose()
