"""sink-alt: stores, indexes and re-publishes alt items; bad items go to the DLQ; search finds them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import redis

from backend.alt.index import open_index
from backend.bus import codec, streams
from backend.messages import AltItem
from backend.services.sink_alt import SinkAltService, alt_dir
from backend.settings import Settings
from tests.conftest import TRADEOPS, await_for


def item(i: int, headline: str, sentiment: float = 0.3) -> AltItem:
    return AltItem(
        id=f"n{i}",
        ts_ns=time.time_ns(),
        symbols=["BTCUSDT"],
        headline=headline,
        body=f"{headline}. More details follow.",
        sentiment=sentiment,
    )


async def test_items_are_stored_indexed_and_searchable(redis_url: str, tmp_path: Path, tradeops_env) -> None:
    r = redis.Redis.from_url(redis_url)
    r.xadd(streams.ALT_RAW, codec.fields(item(1, "Bitcoin rallies as volumes climb", 0.6)))
    r.xadd(streams.ALT_RAW, codec.fields(item(2, "Exchange outage delays withdrawals", -0.6)))
    r.xadd(streams.ALT_RAW, codec.fields(item(3, "Sentiment off the scale", 7.0)))  # bad
    r.xadd(streams.ALT_RAW, {b"d": b"junk"})  # bad
    r.xadd(streams.ALT_RAW, codec.fields(item(1, "Bitcoin rallies as volumes climb", 0.6)))  # redelivery
    svc = SinkAltService(redis_url=redis_url, settings=Settings(data_dir=str(tmp_path)), instance="alt-1")
    task = asyncio.create_task(svc.run())
    await await_for(lambda: r.xlen(streams.dlq(streams.ALT_RAW)) == 2 and r.xlen(streams.ALT_ITEMS) == 3, 20)
    svc.request_stop()
    await asyncio.wait_for(task, 10)
    reasons = sorted(f[b"dlq_reason"].decode() for _, f in r.xrange(streams.dlq(streams.ALT_RAW)))
    assert reasons[0] == "bad alt item 'n3': sentiment 7.0 outside -1..1"
    assert reasons[1].startswith("undecodable alt item")
    idx = open_index(tmp_path)
    assert idx.count() == 2  # the redelivered item replaced itself
    assert [h.id for h in idx.search("rally")] == ["n1"]  # porter stemming: rallies ~ rally
    assert [h.id for h in idx.search("outage")] == ["n2"]
    idx.close()
    assert list(alt_dir(tmp_path).rglob("*.parquet"))
    env = dict(tradeops_env, TRADEOPS_DATA_DIR=str(tmp_path))
    out = subprocess.run(
        [*TRADEOPS, "alt", "search", "withdrawals", "--json"], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert [h["id"] for h in json.loads(out.stdout)] == ["n2"]
    out = subprocess.run([*TRADEOPS, "alt", "search", "AND AND"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 1 and "bad search query" in out.stderr and "Traceback" not in out.stderr
