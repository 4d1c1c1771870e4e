"""The whole loop on the real Redis with every service as its own process (issue 8's "Show"):

ticks (md.ticks.raw) -> normalizer (md.ticks, md.bars.1s) -> feast-pipeline (features) ->
ml-training (trains on the history) -> modelops (an operator promotes it, with a reason) ->
serving (scores the online feature store on each update: signals) -> marketplace (a subscribed
account's paper orders on orders.new) ->
oms / risk / live-gateway (fills) -> ptrc (positions and PnL).

Ticks are stamped in the recent past (the normalizer accepts up to an hour back and closes bars
on a watermark), so a few minutes of market run through in seconds. The figures of the run
(ticks in, bars, feature rows, signals, orders, fills, final PnL) are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from backend.bench.harness import BenchStack
from backend.bus import codec, connection, streams
from backend.bus.connection import LOGIN_ENV
from backend.errors import TradeopsError
from backend.features.store import online_key, read_offline
from backend.marketdata.raw import RawBatchBuilder
from backend.messages import ExecReport, Heartbeat, Order, Position, Signal
from backend.runtime.spawn import wait_healthy
from backend.services import service_class
from tests.conftest import TRADEOPS, wait_for

SERVICES = (
    "normalizer",
    "feast-pipeline",
    "modelops",
    "ml-training",
    "serving",
    "marketplace",
    "risk",
    "live-gateway",
    "oms",
    "ptrc",
)
SYMBOLS = ("BTCUSDT", "ETHUSDT")
S = 1_000_000_000
ACCOUNT = "loop-acct"

CONFIG = """
[services.normalizer]
symbols = ["BTCUSDT", "ETHUSDT"]
[services.ml-training]
min_rows = 30
[services.serving]
model = "alpha"
threshold = 0.3
"""


def _missing() -> list[str]:
    missing = []
    for name in SERVICES:
        try:
            service_class(name)
        except TradeopsError:
            missing.append(name)
    return missing


class Market:
    """Prices with momentum (returns follow returns), so there is something to learn."""

    def __init__(self, seed: int = 3) -> None:
        self.rng = np.random.default_rng(seed)
        self.px = {"BTCUSDT": 65000.0, "ETHUSDT": 3200.0}
        self.ret = dict.fromkeys(SYMBOLS, 0.0)
        self.trade_id = dict.fromkeys(SYMBOLS, 0)
        self.last: dict[str, float] = {}
        self.ticks = 0

    def second(self, t_ns: int, per_s: int = 5) -> object:
        b = RawBatchBuilder("loop")
        for sym in SYMBOLS:
            self.ret[sym] = 0.5 * self.ret[sym] + float(self.rng.normal(scale=0.0008))
            start, end = self.px[sym], self.px[sym] * np.exp(self.ret[sym])
            for k in range(per_s):
                self.trade_id[sym] += 1
                price = start + (end - start) * (k + 1) / per_s
                ts = t_ns + k * (S // per_s)
                self.last[sym] = float(f"{price:.2f}")
                b.add(
                    sym,
                    self.trade_id[sym],
                    f"{price:.2f}",
                    f"{self.rng.uniform(0.01, 0.5):.4f}",
                    ts,
                    ts,
                    bool(k % 2),
                    time.time_ns(),
                )
            self.px[sym] = end
        self.ticks += b.__len__()
        return b.build()

    def run(self, r: redis.Redis, start_ns: int, seconds: int) -> None:
        pipe = r.pipeline(transaction=False)
        for i in range(seconds):
            pipe.xadd(streams.MD_TICKS_RAW, codec.fields(self.second(start_ns + i * S)))
        pipe.execute()


def heartbeat(r: redis.Redis, name: str) -> Heartbeat | None:
    raw = r.hget(f"health:{name}:{name}-loop", "d")
    return codec.decode(raw, Heartbeat) if raw else None


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(TRADEOPS + list(args), capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("acl", [False, True], ids=["default-user", "acl-users"])
def test_ticks_to_pnl_loop(
    acl: bool, redis_url: str, r: redis.Redis, tradeops_env: dict[str, str], tmp_path: Path
) -> None:
    """`acl-users`: on a server of its own with the generated ACL users, each service as its own
    user, the CLI as the operator, the ticks written as the gateway writes them (its user)."""
    missing = _missing()
    if missing:
        pytest.skip(f"services not built yet: {', '.join(missing)}")
    config = tmp_path / "loop.toml"
    config.write_text(CONFIG)
    env = dict(tradeops_env, TRADEOPS_CONFIG=str(config), TRADEOPS_OPERATOR="loop-operator")
    with BenchStack(redis_url=None if acl else redis_url) as st:
        if acl:
            assert st.r is not None
            r = st.r  # admin: the test's own reads
            env = {k: v for k, v in env.items() if k not in ("TRADEOPS_REDIS_URL", *LOGIN_ENV)}
            env["TRADEOPS_DATA_DIR"] = str(st.data_dir)  # the CLI finds the server and its operator password
            writer = connection.client(st.url, connection.login("gateway", data_dir=st.data_dir))
        else:
            writer = r
        procs = {name: st.start(name, instance=f"{name}-loop", config=config, wait=False) for name in SERVICES}
        for name, proc in procs.items():
            wait_healthy(
                st.r, name, f"{name}-loop", proc=proc, timeout=45, log_path=st.data_dir / "logs" / f"{name}-loop.log"
            )
        market = Market()
        now = time.time_ns() // S * S
        # history: 150 s of market, ending 60 s ago; trained on from the feature store's offline
        # Parquet once feast-pipeline has flushed it
        market.run(writer, now - 210 * S, 150)
        wait_for(lambda: r.xlen(streams.FEATURES) >= 200, 30, what="feature rows from the history")
        wait_for(lambda: len(read_offline(st.data_dir)) >= 200, 30, what="offline feature store")

        out = cli(env, "models", "train", "alpha", "--horizon", "5", "--wait", "30")
        assert out.returncode == 0 and "registered" in out.stdout and "source=offline" in out.stdout, (
            out.stdout + out.stderr
        )
        out = cli(env, "models", "promote", "alpha", "1", "--reason", "loop test: first model")
        assert out.returncode == 0 and "promoted to v1 in production" in out.stdout, out.stderr
        wait_for(lambda: (hb := heartbeat(r, "serving")) and hb.extra.get("version") == 1, 15, what="serving on v1")
        out = cli(env, "market", "subscribe", "strategy:alpha-momentum", "--account", ACCOUNT, "--quantity", "0.01")
        assert out.returncode == 0, out.stderr

        # live: the last 55 s of market, 5 s at a time as a live feed brings them; serving scores the
        # online store on each update (updates that arrive together are coalesced: the newest wins)
        # -> signals -> orders -> fills -> positions

        def serving_caught_up(since_ns: int = 0) -> bool:
            # the newest online features of every symbol (from `since_ns` on) scored, no update waiting
            scored = r.hgetall("serving:scored:alpha")
            online = [r.hget(online_key(s), "ts_ns") for s in SYMBOLS]
            group = next(g for g in r.xinfo_groups(streams.FEATURES) if g["name"] == b"serving")
            return (
                group["lag"] == 0
                and group["pending"] == 0
                and all(o and int(o) >= since_ns for o in online)
                and [scored.get(s.encode()) for s in SYMBOLS] == online
            )

        features_before = r.xlen(streams.FEATURES)
        for k in range(11):
            t_k = now - 60 * S + 5 * k * S
            market.run(writer, t_k, 5)
            # the ticks of t_k + 4 s close the bar of t_k + 3 s (its features are stamped t_k + 4 s)
            wait_for(lambda t_k=t_k: serving_caught_up(t_k + 4 * S), 30, what=f"live second {5 * k + 4} scored")
        wait_for(lambda: r.xlen(streams.FEATURES) - features_before >= 2 * 55, 30, what="live feature rows")
        wait_for(serving_caught_up, 30, what="the newest online features of every symbol scored")
        wait_for(lambda: r.xlen(streams.ORDERS_NEW) >= 1, 30, what="paper orders")

        def fills() -> list[ExecReport]:
            reps = [codec.decode(codec.payload(f), ExecReport) for _, f in r.xrange(streams.EXEC_REPORTS)]
            return [x for x in reps if x.kind == "fill"]

        orders = wait_for(
            lambda: (
                (o := [codec.decode(codec.payload(f), Order) for _, f in r.xrange(streams.ORDERS_NEW)])
                and len(fills()) >= len(o)
                and o
            ),
            30,
            what="every order filled",
        )

        def positions() -> dict[str, Position]:
            out: dict[str, Position] = {}
            for _, f in r.xrange(streams.POSITIONS):
                p = codec.decode(codec.payload(f), Position)
                if p.account == ACCOUNT:
                    out[p.symbol] = p
            return out

        filled_syms = {x.symbol for x in fills()}

        def signed(sym: str) -> float:
            return sum(x.fill_qty if x.side == "buy" else -x.fill_qty for x in fills() if x.symbol == sym)

        # ptrc's positions add up to the fills
        pos = wait_for(
            lambda: (
                (p := positions())
                and set(p) >= filled_syms
                and all(abs(x.quantity - signed(s)) < 1e-9 for s, x in p.items())
                and p
            ),
            30,
            what="ptrc positions matching the fills",
        )
        pos = wait_for(
            lambda: (p := positions()) and all(x.quantity == 0 or x.mark == market.last[s] for s, x in p.items()) and p,
            30,
            what="ptrc marks at the last trades",
        )
        sigs = [codec.decode(codec.payload(f), Signal) for _, f in r.xrange(streams.SIGNALS)]
        wait_for(lambda: heartbeat(r, "serving").extra.get("signals") == len(sigs), 10, what="serving's heartbeat")
        assert {s.version for s in sigs} == {1} and all(s.model == "alpha" for s in sigs)
        assert all(o.account == ACCOUNT and o.source.startswith("marketplace:") for o in orders)
        # the same PnL computed from the fills, marked to the last trade of the run
        cash = -sum((x.fill_qty if x.side == "buy" else -x.fill_qty) * x.fill_price for x in fills())
        marked = cash + sum(signed(s) * market.last[s] for s in filled_syms)
        figures = {
            "ticks_in": market.ticks,
            "bars_1s": r.xlen(streams.MD_BARS_1S),
            "feature_rows": r.xlen(streams.FEATURES),
            "live_feature_updates": r.xlen(streams.FEATURES) - features_before,
            "signals_out": len(sigs),
            "updates_coalesced": heartbeat(r, "serving").extra.get("coalesced_updates"),
            "signals_with_side": sum(1 for s in sigs if s.side),
            "orders": len(orders),
            "fills": len(fills()),
            "positions": {s: p.quantity for s, p in pos.items()},
            "final_pnl_ptrc": round(sum(p.realized_pnl + p.unrealized_pnl for p in pos.values()), 4),
            "final_pnl_marked_to_last_trade": round(marked, 4),
            "ptrc_marks": {s: p.mark for s, p in pos.items()},
            "last_trades": {s: market.last[s] for s in pos},
            "model_ic": json.loads(cli(env, "models", "list", "--json").stdout)[0]["production_ic"],
            "serving_latency_ms": {
                k: v
                for k, v in heartbeat(r, "serving").latency_ms.items()
                if k in ("score_p50", "score_p99", "signal_p50", "signal_p99")
            },
        }
        print("\nLOOP FIGURES", json.dumps(figures))
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited"
        if acl:
            assert r.acl_log(count=128) == []  # nothing was refused to anyone
