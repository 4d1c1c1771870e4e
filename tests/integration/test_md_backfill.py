"""Trades a crashed gateway missed come back from the venue's REST trade history.

- The local exchange serves Binance's `GET /api/v3/historicalTrades` (and `/api/v3/trades`) from
  a ring of its last trades, with Binance's fields and errors.
- The backfill pages through a gap, and says what the history no longer holds.
- Real processes: the exchange at 2,000 trades/s, a normalizer and a gateway; the gateway is
  SIGKILLed and started again; md.ticks ends holding every trade id the exchange sent from the
  first one on it, exactly once. With a ring too small to hold the gap, what is lost shows in the
  heartbeat (`missing_trades`) and as an alert on ops.alerts naming the symbol and the ids.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from backend.bench.md_pipeline import (
    delivered_ids,
    wait_gateway_flushed,
    wait_group_drained,
)
from backend.bus import codec, streams
from backend.exchange.feed import FeedConfig
from backend.exchange.server import Exchange, read_info
from backend.exchange.wire import history_decoder
from backend.marketdata import backfill
from backend.marketdata.backfill import Gap
from backend.messages import Alert, Heartbeat
from backend.runtime.commands import exchange_command
from backend.runtime.spawn import spawn_service, stop_process, wait_healthy
from tests.conftest import await_for, wait_for

SYMS = ["BTCUSDT", "ETHUSDT"]


# -- the local exchange's trade history ------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_exchange_serves_binance_historical_trades() -> None:
    ex = Exchange(FeedConfig(symbols=SYMS, rate=4000, news_every_s=3600), rest_port=0)
    info = await ex.start()
    base = f"{info.rest_url}/api/v3"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            await await_for(
                lambda: all((s := ex.feed.history.span(x)) and s[1] - s[0] >= 1100 for x in SYMS),
                30,
                what="1,100 trades per symbol",
            )
            await stop_flow(ex)  # the ring stays put while it is read
            oldest, _ = ex.feed.history.span("BTCUSDT")
            key = {"X-MBX-APIKEY": ex.api_key}

            resp = await http.get(
                f"{base}/historicalTrades", params={"symbol": "BTCUSDT", "fromId": oldest + 10}, headers=key
            )
            assert resp.status_code == 200
            rows = resp.json()
            assert len(rows) == 500  # the default limit
            assert set(rows[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
            assert [r["id"] for r in rows] == list(range(oldest + 10, oldest + 510))
            assert isinstance(rows[0]["price"], str) and isinstance(rows[0]["qty"], str)
            assert isinstance(rows[0]["quoteQty"], str) and isinstance(rows[0]["isBuyerMaker"], bool)
            assert rows[0]["isBestMatch"] is True and rows[0]["time"] > 1_600_000_000_000
            assert history_decoder.decode(resp.content)[0].id == oldest + 10

            resp = await http.get(
                f"{base}/historicalTrades", params={"symbol": "BTCUSDT", "fromId": oldest, "limit": 5000}, headers=key
            )
            assert len(resp.json()) == 1000  # at most 1000
            resp = await http.get(
                f"{base}/historicalTrades", params={"symbol": "BTCUSDT", "fromId": 0, "limit": 3}, headers=key
            )
            assert resp.json()[0]["id"] == oldest  # older than the ring: from the oldest still held
            resp = await http.get(
                f"{base}/historicalTrades", params={"symbol": "ETHUSDT", "fromId": 10**17}, headers=key
            )
            assert resp.status_code == 200 and resp.json() == []
            resp = await http.get(f"{base}/trades", params={"symbol": "ETHUSDT", "limit": 2})
            recent = resp.json()
            assert len(recent) == 2 and recent[1]["id"] == recent[0]["id"] + 1

            async def error(
                path: str, params: dict[str, Any], headers: dict[str, str] | None = None
            ) -> tuple[int, int]:
                resp = await http.get(f"{base}/{path}", params=params, headers=headers if headers is not None else key)
                return resp.status_code, resp.json()["code"]

            assert await error("historicalTrades", {"symbol": "NOPEUSDT"}) == (400, -1121)
            assert await error("historicalTrades", {"fromId": 1}) == (400, -1102)
            assert await error("historicalTrades", {"symbol": "BTCUSDT", "limit": "ten"}) == (400, -1100)
            assert await error("historicalTrades", {"symbol": "BTCUSDT", "fromId": "-1"}) == (400, -1100)
            assert await error("historicalTrades", {"symbol": "BTCUSDT"}, {}) == (401, -2014)
            assert await error("historicalTrades", {"symbol": "BTCUSDT"}, {"X-MBX-APIKEY": "wrong"}) == (401, -2015)
            assert await error("trades", {"symbol": "NOPEUSDT"}, {}) == (400, -1121)
    finally:
        await ex.stop()


@pytest.mark.timeout(60)
async def test_the_history_has_the_trades_the_stream_sent() -> None:
    """Prices and quantities come back exactly as the trade stream sent them."""
    from websockets.asyncio.client import connect

    ex = Exchange(FeedConfig(symbols=SYMS, rate=1000, news_every_s=3600), rest_port=0)
    info = await ex.start()
    try:
        sent = []
        async with connect(f"{info.ws_url}/ws/ethusdt@trade") as ws:
            while len(sent) < 50:
                sent.append(json.loads(await ws.recv()))
        async with httpx.AsyncClient(timeout=5) as http:
            got = await backfill.fetch_page(http, info.rest_url, ex.api_key, "ETHUSDT", sent[0]["t"], 50)
        assert [(t.id, t.price, t.qty, t.time, t.is_buyer_maker) for t in got] == [
            (m["t"], m["p"], m["q"], m["T"], m["m"]) for m in sent
        ]
    finally:
        await ex.stop()


@pytest.mark.timeout(60)
async def test_fill_pages_through_a_gap_and_says_what_is_lost() -> None:
    ex = Exchange(FeedConfig(symbols=SYMS, rate=4000, news_every_s=3600, history=3000), rest_port=0)
    info = await ex.start()
    try:
        ring = ex.feed.history.rings[0]
        await await_for(
            lambda: (s := ring.span()) and s[0] > ring.first,
            30,
            what="the BTCUSDT ring to have dropped its first trades",
        )
        await stop_flow(ex)  # the ring stays put while it is read
        oldest, newest = ex.feed.history.span("BTCUSDT")
        assert newest - oldest + 1 == 3000
        pages: list[list[int]] = []
        async with httpx.AsyncClient(timeout=5) as http:
            # inside the history: all of it, in pages of at most 1000
            gap = Gap("BTCUSDT", newest - 2500, newest - 1)
            done = await backfill.fill(
                http, info.rest_url, ex.api_key, gap, lambda ts: pages.append([t.id for t in ts])
            )
            assert done.fetched == 2500 and done.holes == [] and done.lost == 0 and done.reason == ""
            assert [len(p) for p in pages] == [1000, 1000, 500]
            assert [i for p in pages for i in p] == list(range(gap.first, gap.last + 1))

            # older than the ring holds: the part still held comes back, the rest is lost
            gap = Gap("BTCUSDT", oldest - 100, oldest + 9)
            got: list[int] = []
            done = await backfill.fill(http, info.rest_url, ex.api_key, gap, lambda ts: got.extend(t.id for t in ts))
            assert done.holes == [(oldest - 100, oldest - 1)] and got == list(range(oldest, oldest + 10))
            assert (done.lost, done.fetched) == (100, 10)
            assert "not in the venue's trade history" in done.reason

            # at most backfill_max_trades of the latest ids are asked for
            gap = Gap("BTCUSDT", newest - 100, newest - 1)
            got.clear()
            done = await backfill.fill(
                http, info.rest_url, ex.api_key, gap, lambda ts: got.extend(t.id for t in ts), max_trades=30
            )
            assert got == list(range(newest - 30, newest)) and done.holes == [(newest - 100, newest - 31)]
            assert "backfill_max_trades" in done.reason
            done = await backfill.fill(http, info.rest_url, ex.api_key, gap, pages.append, max_trades=0)
            assert done.holes == [(gap.first, gap.last)] and done.fetched == 0

            # no history to ask, or one that refuses: all lost, with the reason
            done = await backfill.fill(http, None, ex.api_key, gap, pages.append)
            assert done.holes == [(gap.first, gap.last)] and "rest_url" in done.reason
            done = await backfill.fill(http, info.rest_url, "wrong-key", gap, pages.append)
            assert done.lost == gap.size and "HTTP 401" in done.reason and "-2015" in done.reason
    finally:
        await ex.stop()


async def stop_flow(ex: Exchange) -> None:
    """The exchange stops trading; its servers (the REST history) stay up."""
    ex.feed.stop()
    assert ex._feed_task is not None
    await asyncio.wait_for(ex._feed_task, 10)


# -- the gateway, SIGKILLed and started again (real processes) -------------------------------------
def start_exchange(data_dir: Path, *, rate: float, symbols: list[str], history: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*exchange_command(data_dir, rate, news_every=3600), "--symbols", ",".join(symbols), "--history", str(history)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    first = proc.stdout.readline() if proc.stdout else ""
    if not first.startswith("exchange up"):
        stop_process(proc)
        pytest.fail(f"the exchange did not start: {first!r}")
    return proc


def stop_exchange(proc: subprocess.Popen[str]) -> dict[str, int]:
    """SIGTERM: it stops its flow, drains its subscribers, and says the last id it sent per symbol."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    down = [ln for ln in out.splitlines() if ln.startswith("exchange down: ")]
    assert down, f"the exchange did not say what it sent: {out!r}"
    return json.loads(down[-1].removeprefix("exchange down: "))["last_ids"]


def heartbeat(r: redis.Redis, instance: str) -> Heartbeat | None:
    raw = r.hget(f"health:gateway:{instance}", codec.FIELD_STR)
    return codec.decode(raw, Heartbeat) if raw else None


def latest_id(rest_url: str, symbol: str) -> int:
    resp = httpx.get(f"{rest_url}/api/v3/trades", params={"symbol": symbol, "limit": 1}, timeout=5)
    return int(resp.json()[0]["id"])


class Pipeline:
    """The exchange, a normalizer and a gateway, as processes, on the test's Redis."""

    def __init__(self, redis_url: str, data_dir: Path, symbols: list[str], history: int) -> None:
        self.url, self.data_dir, self.symbols = redis_url, data_dir, symbols
        self.r = redis.Redis.from_url(redis_url)
        self.exchange: subprocess.Popen[str] | None = start_exchange(
            data_dir, rate=2000, symbols=symbols, history=history
        )
        info = read_info(data_dir)
        assert info is not None and info.rest_url
        self.rest_url = info.rest_url
        self.procs: list[subprocess.Popen[bytes]] = []
        norm = self.spawn("normalizer", "normalizer-bf")
        wait_healthy(self.r, "normalizer", "normalizer-bf", proc=norm, timeout=60)
        self.gateway = self.spawn("gateway", "gateway-bf")
        wait_healthy(self.r, "gateway", "gateway-bf", proc=self.gateway, timeout=60)

    def spawn(self, name: str, instance: str) -> subprocess.Popen[bytes]:
        proc = spawn_service(name, redis_url=self.url, data_dir=self.data_dir, instance=instance)
        self.procs.append(proc)
        return proc

    def beat(self) -> Heartbeat | None:
        return heartbeat(self.r, "gateway-bf")

    def crash_gateway_and_restart(self, hole: int) -> tuple[dict[str, int], Heartbeat]:
        """SIGKILL the gateway once it has written trades of every symbol; start it again once
        the exchange has sent `hole` more trades of each; its first heartbeat after the gaps."""
        stored: dict[str, int] = {}

        def written() -> bool:
            stored.update({k.decode(): int(v) for k, v in self.r.hgetall(backfill.LAST_ID_KEY).items()})
            hb = self.beat()
            return set(stored) == set(self.symbols) and hb is not None and hb.extra.get("published", 0) > 500

        wait_for(written, 60, what="the gateway writing trades of every symbol")
        stop_process(self.gateway, kill=True)
        stored = {k.decode(): int(v) for k, v in self.r.hgetall(backfill.LAST_ID_KEY).items()}
        wait_for(
            lambda: all(latest_id(self.rest_url, s) > stored[s] + hole for s in self.symbols),
            60,
            what=f"{hole} trades of each symbol sent while the gateway is down",
        )
        self.gateway = self.spawn("gateway", "gateway-bf")

        def settled() -> Heartbeat | None:
            hb = self.beat()
            ok = (
                hb is not None
                and hb.pid == self.gateway.pid
                and hb.extra["gaps"] >= len(self.symbols)
                and not hb.extra["backfilling"]
            )
            assert self.gateway.poll() is None, "the restarted gateway exited"
            return hb if ok else None

        return stored, wait_for(settled, 60, what="the restarted gateway to see and fill every gap")

    def stop_flow(self) -> dict[str, dict[str, Any]]:
        """Stop the exchange; once everything is through the normalizer, the ids on md.ticks."""
        import time

        assert self.exchange is not None
        last_ids = stop_exchange(self.exchange)
        self.exchange = None
        wait_gateway_flushed(self.r, "gateway-bf", time.time_ns(), timeout=60)
        wait_group_drained(self.r, streams.MD_TICKS_RAW, "normalizer", timeout=60)
        got, _ = delivered_ids(self.r)
        return {s: {"ids": np.sort(got[s]), "last": last_ids[s]} for s in self.symbols}

    def close(self) -> None:
        if self.exchange is not None:
            stop_process(self.exchange, kill=True)
        for p in self.procs:
            stop_process(p)
        self.r.close()


@pytest.mark.timeout(240)
def test_a_crashed_gateway_leaves_no_hole_in_md_ticks(redis_url: str, tmp_path: Path) -> None:
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
    p = Pipeline(redis_url, tmp_path, syms, history=100_000)
    try:
        stored, hb = p.crash_gateway_and_restart(hole=300)
        assert hb.extra["missing_trades"] == 0
        assert hb.extra["backfilled_trades"] >= 300 * len(syms)
        assert hb.extra["last_gap"]["lost"] == 0 and hb.extra["last_gap"]["backfilled"] > 0
        ticks = p.stop_flow()
        for sym in syms:
            ids, last = ticks[sym]["ids"], ticks[sym]["last"]
            assert ids[0] <= stored[sym] < last - 300  # md.ticks spans the crash
            assert ids[-1] == last, f"{sym}: md.ticks ends at {ids[-1]}, the exchange sent up to {last}"
            assert len(np.unique(ids)) == len(ids), f"{sym}: repeated trade ids on md.ticks"
            hole = np.setdiff1d(np.arange(ids[0], last + 1), ids)
            assert len(hole) == 0, f"{sym}: {len(hole)} trade ids missing from md.ticks, first {hole[:5]}"
        assert p.r.xlen(streams.dlq(streams.MD_TICKS_RAW)) == 0  # nothing refused as a repeat
        assert p.r.xlen(streams.OPS_ALERTS) == 0
        final = p.beat()
        assert final is not None and final.extra["missing_trades"] == 0
    finally:
        p.close()


@pytest.mark.timeout(240)
def test_trades_the_history_no_longer_holds_are_counted_and_alerted(redis_url: str, tmp_path: Path) -> None:
    p = Pipeline(redis_url, tmp_path, SYMS, history=20)  # a ring far smaller than the gap
    try:
        stored, hb = p.crash_gateway_and_restart(hole=400)
        missing = hb.extra["missing_trades"]
        assert missing >= 2 * (400 - 20)
        gap = hb.extra["last_gap"]
        assert gap["lost"] > 0 and gap["lost"] + gap["backfilled"] == gap["missing"] == gap["next"] - gap["after"] - 1
        alerts = [codec.decode(codec.payload(f), Alert) for _, f in p.r.xrange(streams.OPS_ALERTS)]
        assert {a.kind for a in alerts} == {"md_gap"} and {a.severity for a in alerts} == {"critical"}
        by_sym = {a.key.split(":")[1]: a for a in alerts}
        assert set(by_sym) == set(SYMS)
        ticks = p.stop_flow()
        lost = 0
        for sym in SYMS:
            ids, last = ticks[sym]["ids"], ticks[sym]["last"]
            assert ids[-1] == last and len(np.unique(ids)) == len(ids)
            hole = np.setdiff1d(np.arange(ids[0], last + 1), ids)
            lost += len(hole)
            # exactly the ids the alert names are missing, and they are in the gap after `stored`
            edges = np.flatnonzero(np.diff(hole) != 1)
            ranges = [
                (int(a), int(b))
                for a, b in zip(np.r_[hole[0], hole[edges + 1]], np.r_[hole[edges], hole[-1]], strict=True)
            ]
            alert = by_sym[sym]
            assert ranges[0][0] == stored[sym] + 1
            assert f"{sym}: {len(hole)} trade(s) lost" in alert.message
            assert backfill.describe(ranges) in alert.message, (ranges, alert.message)
        assert lost == missing  # the heartbeat counts exactly what md.ticks lacks
        assert p.r.xlen(streams.dlq(streams.MD_TICKS_RAW)) == 0
    finally:
        p.close()
