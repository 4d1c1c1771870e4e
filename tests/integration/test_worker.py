"""The consumer-group worker against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from backend.bus import codec, streams
from backend.bus.fence import Fence
from backend.bus.worker import Entry, Poison, StreamWorker
from backend.messages import CancelRequest, Order
from tests.conftest import await_for

S = "orders.new"


def order(i: int) -> Order:
    return Order(client_order_id=f"c{i}", account="acc", symbol="BTCUSDT", side="buy", type="market", quantity=1.0 + i)


async def fill(r: aioredis.Redis, n: int) -> list[bytes]:
    return [await r.xadd(S, codec.fields(order(i))) for i in range(n)]


async def run_until(worker: StreamWorker, pred, timeout: float = 10.0) -> None:
    task = asyncio.create_task(worker.run())
    try:
        await await_for(pred, timeout)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)


async def test_batches_are_handled_and_acked(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await fill(r, 50)
    seen: list[str] = []

    async def handler(entries: list[Entry]) -> None:
        seen.extend(codec.decode(codec.payload(f), Order).client_order_id for _, f in entries)

    w = StreamWorker(r, S, "g", "c1", handler, count=16, block_ms=20)
    await run_until(w, lambda: len(seen) >= 50)
    assert seen == [f"c{i}" for i in range(50)]
    assert (await r.xpending(S, "g"))["pending"] == 0
    assert w.stats.acked == 50
    await r.aclose()


async def test_entries_of_a_dead_consumer_are_reclaimed(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    ids = await fill(r, 10)
    # consumer "dead" reads everything and dies without acking
    await r.xgroup_create(S, "g", id="0")
    got = await r.xreadgroup("g", "dead", {S: ">"}, count=100)
    assert len(got[0][1]) == 10
    assert (await r.xpending(S, "g"))["pending"] == 10
    seen: list[bytes] = []

    async def handler(entries: list[Entry]) -> None:
        seen.extend(eid for eid, _ in entries)

    w = StreamWorker(r, S, "g", "alive", handler, block_ms=20, claim_idle_ms=50, claim_interval_s=0.05)
    await run_until(w, lambda: len(seen) >= 10)
    assert sorted(seen) == sorted(ids)
    assert w.stats.reclaimed == 10
    assert (await r.xpending(S, "g"))["pending"] == 0
    await r.aclose()


async def test_a_handler_that_keeps_failing_dead_letters_with_reason(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await fill(r, 5)
    done: list[str] = []

    async def handler(entries: list[Entry]) -> None:
        for _, f in entries:
            o = codec.decode(codec.payload(f), Order)
            if o.client_order_id == "c2":
                raise RuntimeError("downstream refused c2")
        done.extend(codec.decode(codec.payload(f), Order).client_order_id for _, f in entries)

    w = StreamWorker(r, S, "g", "c1", handler, block_ms=20, max_deliveries=3, retry_backoff_s=0.01)

    async def dead() -> int:
        return await r.xlen(streams.dlq(S))

    await run_until(w, dead)
    dl = await r.xrange(streams.dlq(S))
    assert len(dl) == 1
    _, f = dl[0]
    assert f[b"dlq_reason"] == b"RuntimeError: downstream refused c2"
    assert f[b"dlq_stream"] == S.encode()
    assert int(f[b"dlq_deliveries"]) == 3
    # the original payload is kept, byte for byte
    assert codec.decode(codec.payload(f), Order) == order(2)
    # nothing lost: the four good ones were handled, nothing is left pending
    assert set(done) == {"c0", "c1", "c3", "c4"}
    assert (await r.xpending(S, "g"))["pending"] == 0
    await r.aclose()


async def test_poison_goes_to_dlq_at_once(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await r.xadd(S, {b"d": b"\xc1 not msgpack"})
    await fill(r, 2)
    good: list[str] = []

    async def handler(entries: list[Entry]) -> None:
        out = []
        for _, f in entries:
            try:
                out.append(codec.decode(codec.payload(f), Order).client_order_id)
            except Exception as exc:
                raise Poison(f"undecodable order: {exc}") from exc
        good.extend(out)

    w = StreamWorker(r, S, "g", "c1", handler, block_ms=20, max_deliveries=10)

    async def ready() -> bool:
        return len(good) == 2 and await r.xlen(streams.dlq(S)) == 1

    await run_until(w, ready)
    ((_, f),) = await r.xrange(streams.dlq(S))
    assert f[b"dlq_reason"].startswith(b"undecodable order:")
    assert int(f[b"dlq_deliveries"]) == 1
    assert f[b"d"] == b"\xc1 not msgpack"
    await r.aclose()


async def test_with_a_type_the_handler_gets_messages_and_what_does_not_decode_is_dead_lettered(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    bad = [await r.xadd(S, {b"d": b"\xc1 not msgpack"})]
    ids = await fill(r, 2)
    bad.append(await r.xadd(S, {b"x": b"no payload field"}))
    bad.append(await r.xadd(S, codec.fields(CancelRequest(client_order_id="c9"))))  # a message of another type
    got: list[tuple[bytes, Order]] = []

    async def handler(items: list[tuple[bytes, Order]]) -> None:
        got.extend(items)

    w = StreamWorker(r, S, "g", "c1", handler, block_ms=20, decode=Order)

    async def ready() -> bool:
        return len(got) == 2 and await r.xlen(streams.dlq(S)) == 3

    await run_until(w, ready)
    assert got == [(ids[0], order(0)), (ids[1], order(1))]
    dl = await r.xrange(streams.dlq(S))
    assert [f[b"dlq_id"] for _, f in dl] == bad
    for _, f in dl:
        assert f[b"dlq_stream"] == S.encode() and f[b"dlq_group"] == b"g" and f[b"dlq_consumer"] == b"c1"
        assert f[b"dlq_reason"].startswith(b"undecodable order: ") and f[b"dlq_reason"].endswith(b"(expected Order)")
        assert int(f[b"dlq_deliveries"]) == 1
    assert dl[0][1][b"d"] == b"\xc1 not msgpack"  # the original fields, byte for byte
    assert b"no 'd' field" in dl[1][1][b"dlq_reason"] and dl[1][1][b"x"] == b"no payload field"
    assert (await r.xpending(S, "g"))["pending"] == 0
    assert w.stats.dead_lettered == 3 and w.stats.acked == 2
    await r.aclose()


async def test_a_rejected_entry_goes_to_the_dlq_and_the_rest_of_its_batch_is_acked(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    ids = await fill(r, 5)
    done: list[str] = []

    async def handler(items: list[tuple[bytes, Order]]) -> None:
        for eid, o in items:
            if o.quantity > 4:
                w.reject(eid, f"{o.client_order_id}: quantity {o.quantity} over 4")
                continue
            done.append(o.client_order_id)

    w = StreamWorker(r, S, "g", "c1", handler, block_ms=20, decode=Order, what="small order")

    async def ready() -> bool:
        return len(done) == 4 and await r.xlen(streams.dlq(S)) == 1

    await run_until(w, ready)
    ((_, f),) = await r.xrange(streams.dlq(S))
    assert f[b"dlq_reason"] == b"c4: quantity 5.0 over 4" and f[b"dlq_id"] == ids[4]
    assert codec.decode(codec.payload(f), Order) == order(4)
    assert (await r.xpending(S, "g"))["pending"] == 0 and w.stats.acked == 4
    await r.aclose()


async def test_stop_finishes_the_batch_in_hand(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await fill(r, 20)
    started = asyncio.Event()
    release = asyncio.Event()
    handled: list[bytes] = []

    async def handler(entries: list[Entry]) -> None:
        started.set()
        await release.wait()
        handled.extend(eid for eid, _ in entries)

    w = StreamWorker(r, S, "g", "c1", handler, count=5, block_ms=20)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(started.wait(), 5)
    w.stop()  # SIGTERM in a service
    release.set()
    await asyncio.wait_for(task, 5)
    assert len(handled) == 5  # the batch in hand, and no more
    assert (await r.xpending(S, "g"))["pending"] == 0
    assert len(await r.xrange(S)) == 20
    await r.aclose()


async def test_entries_of_a_gone_consumer_are_taken_over_at_once(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    ids = await fill(r, 10)
    await r.xgroup_create(S, "g", id="0")
    await r.xreadgroup("g", "gone", {S: ">"}, count=100)  # read, then SIGKILLed
    seen: list[tuple[bytes, bool]] = []

    async def handler(entries: list[Entry]) -> None:
        seen.extend((eid, w.redelivered) for eid, _ in entries)

    async def alive(consumer: str) -> bool:
        return consumer != "gone"  # its heartbeat has expired

    # the idle-time backstop is far away: only the liveness check can hand them over
    w = StreamWorker(
        r,
        S,
        "g",
        "survivor",
        handler,
        block_ms=20,
        claim_idle_ms=3_600_000,
        alive=alive,
        dead_check_s=0.05,
        dead_claim_idle_ms=0,
    )
    await run_until(w, lambda: len(seen) >= 10)
    assert sorted(eid for eid, _ in seen) == sorted(ids) and all(again for _, again in seen)
    assert (await r.xpending(S, "g"))["pending"] == 0
    await r.aclose()


async def test_a_fenced_commit_of_taken_over_entries_writes_nothing(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    ids = await fill(r, 3)
    await r.xgroup_create(S, "g", id="0")
    await r.xreadgroup("g", "paused", {S: ">"}, count=100)
    await r.xclaim(S, "g", "survivor", 0, ids[:1])  # one of its entries was taken over
    paused, survivor = Fence(r.execute_command, S, "g", "paused"), Fence(r.execute_command, S, "g", "survivor")
    assert not await paused.commit(ids, [["XADD", "out", "*", "n", "paused"]])
    assert await r.xlen("out") == 0 and (await r.xpending(S, "g"))["pending"] == 3
    assert await survivor.commit(ids[:1], [["XADD", "out", "*", "n", "survivor"]])
    assert await paused.commit(ids[1:], [["XADD", "out", "*", "n", "paused"]])
    assert [f[b"n"] for _, f in await r.xrange("out")] == [b"survivor", b"paused"]
    assert (await r.xpending(S, "g"))["pending"] == 0 and paused.refused == 1
    await r.aclose()


async def test_entries_held_in_flight_are_handed_once_even_after_a_restart(redis_url: str) -> None:
    """auto_ack=False (a sink that acks at its flush): a restart finds 300 of its own entries
    pending, far more than one read; each is handed once while the handler holds it, the re-read
    of its own pending entries pages on to the new ones, and a failed batch or a release hands
    again only what the handler does not hold."""
    r = aioredis.Redis.from_url(redis_url)
    ids = await fill(r, 300)
    await r.xgroup_create(S, "g", id="0")
    await r.xreadgroup("g", "sink-1", {S: ">"}, count=1000)  # a previous life of sink-1, SIGKILLed
    handed: list[bytes] = []
    failures: list[bytes] = []
    released: list[bytes] = []

    async def handler(entries: list[Entry]) -> None:
        for eid, _ in entries:
            if eid == ids[40] and len(failures) < 2:
                failures.append(eid)  # its batch, then it alone: it is handed again later
                raise RuntimeError("transient")
        handled = [eid for eid, _ in entries]
        handed.extend(handled)
        if ids[100] in handled and not released:  # not taken now: handed again later
            released.append(ids[100])
            w.release([ids[100]])
            handed.remove(ids[100])

    w = StreamWorker(
        r, S, "g", "sink-1", handler, count=16, block_ms=20, auto_ack=False, claim_interval_s=0.05, claim_idle_ms=60_000
    )
    task = asyncio.create_task(w.run())
    try:
        await await_for(lambda: len(handed) >= 300, what="the 300 pending entries")
        more = await fill(r, 20)
        await await_for(lambda: set(more) <= set(handed), what="new entries after the pending ones")
        assert sorted(handed, key=lambda e: tuple(map(int, e.split(b"-")))) == ids + more  # each once
        assert w.in_flight == set(ids + more)
        # what is held is touched, never delivered again: the previous life's delivery and this
        # life's (the new ones: one), and one more for the failed and the released entry
        times = {
            p["message_id"]: p["times_delivered"] for p in await r.xpending_range(S, "g", min="-", max="+", count=1000)
        }
        assert {eid: n for eid, n in times.items() if n != 2 - (eid in more)} == {ids[40]: 3, ids[100]: 3}
        await w.ack(ids + more)  # the flush stored them
        assert (await r.xpending(S, "g"))["pending"] == 0 and not w.in_flight
    finally:
        w.stop()
        await asyncio.wait_for(task, 5)
    await r.aclose()


async def test_a_paused_worker_reads_nothing_until_resumed(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    ids = await fill(r, 30)
    handed: list[bytes] = []

    async def handler(entries: list[Entry]) -> None:
        handed.extend(eid for eid, _ in entries)
        if len(handed) == 10:
            w.pause()  # a buffer at its bound

    w = StreamWorker(r, S, "g", "c1", handler, count=10, block_ms=20, auto_ack=False)
    task = asyncio.create_task(w.run())
    try:
        await await_for(lambda: w.paused and len(handed) == 10)
        await w.ack(handed)
        assert (await r.xinfo_groups(S))[0]["lag"] == 20  # the stream waits, not the memory
        w.resume()
        await await_for(lambda: len(handed) == 30)
        assert handed == ids
    finally:
        w.stop()
        await asyncio.wait_for(task, 5)
    await r.aclose()


async def test_a_server_that_cannot_take_writes_for_a_while_is_waited_for_not_fatal(redis_url: str) -> None:
    # NOREPLICAS (min-replicas-to-write not met) refuses XREADGROUP, a write: the worker must wait
    # it out like a lost connection (the OMS died of it in CI), and then take what came meanwhile
    r = aioredis.Redis.from_url(redis_url)
    seen: list[str] = []

    async def handler(entries: list[Entry]) -> None:
        seen.extend(codec.decode(codec.payload(f), Order).client_order_id for _, f in entries)

    w = StreamWorker(r, S, "g", "c1", handler, count=16, block_ms=20)
    task = asyncio.create_task(w.run())
    try:
        await fill(r, 1)
        await await_for(lambda: len(seen) == 1, what="the worker reading")  # past its setup
        seen.clear()
        await r.config_set("min-replicas-to-write", 1)
        try:
            await await_for(lambda: w.stats.reconnects >= 2, what="the worker backing off")
            assert not task.done()
        finally:
            await r.config_set("min-replicas-to-write", 0)
        await fill(r, 5)
        await await_for(lambda: len(seen) == 5, what="the entries taken after the server took writes again")
        assert not task.done()
    finally:
        w.stop()
        await asyncio.wait_for(task, 10)
    await r.aclose()


async def test_a_refusal_a_retry_cannot_fix_still_fails_the_worker(redis_url: str) -> None:
    # WRONGTYPE is a bug, not an outage: the worker fails loudly instead of retrying for ever
    r = aioredis.Redis.from_url(redis_url)
    await r.set(S, "not a stream")

    async def handler(entries: list[Entry]) -> None:
        raise AssertionError("nothing to hand")

    w = StreamWorker(r, S, "g", "c1", handler, count=16, block_ms=20)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await asyncio.wait_for(w.run(), 10)
    await r.aclose()
