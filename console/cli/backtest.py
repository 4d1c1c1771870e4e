"""`tradeops backtest list|show|run`: backtest jobs run by bt-orchestrator over stored data."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import msgspec

from backend.backtest.names import PARAMS, STRATEGY_NAMES
from backend.errors import TradeopsError
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 61


def register(sub: Any) -> None:
    p = command(sub, "backtest", "backtests over stored ticks (bt-orchestrator)")
    bsub = p.add_subparsers(dest="bt_cmd", metavar="ACTION", required=True)
    q = command(bsub, "list", "recent jobs and their results")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = command(bsub, "show", "one job's result")
    q.add_argument("job_id")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_show)
    q = command(bsub, "run", "queue a backtest job (and wait for it with --wait)")
    q.add_argument("strategy", help=f"one of: {', '.join(sorted(STRATEGY_NAMES))}")
    q.add_argument("--symbols", default="", help="comma-separated (default: all stored)")
    q.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"strategy parameter ({', '.join(sorted(PARAMS))}); repeatable",
    )
    q.add_argument("--start", type=int, default=0, help="ns since the epoch (default: all)")
    q.add_argument("--end", type=int, default=0, help="ns since the epoch, exclusive")
    q.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_run)


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise TradeopsError(f"--param {item!r}: expected KEY=VALUE")
        try:
            out[key] = float(val) if any(c in val for c in ".eE") else int(val)
        except ValueError:
            raise TradeopsError(f"--param {key}: {val!r} is not a number") from None
    return out


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from backend.backtest import engine, jobs

    params = _params(args.param)
    try:
        engine.check(args.strategy, params)
    except ValueError as exc:
        raise TradeopsError(str(exc)) from None
    if args.end and args.end <= args.start:
        raise TradeopsError("--end must be after --start")
    r = ctx.redis
    job = jobs.submit(
        r,
        args.strategy,
        [s.strip().upper() for s in args.symbols.split(",") if s.strip()],
        params,
        start_ns=args.start,
        end_ns=args.end,
        operator=ctx.operator,
    )
    if args.wait <= 0:
        print(f"backtest {job.job_id} queued ({job.strategy})")
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        st = jobs.status(r, job.job_id)
        if st and st["state"] in ("done", "failed"):
            return _print(ctx, st, args.json)
        time.sleep(0.1)
    raise TradeopsError(f"backtest {job.job_id} not finished within {args.wait:g}s (is bt-orchestrator running?)")


def _print(ctx: Context, st: dict[str, Any], as_json: bool) -> int:
    if as_json:
        ctx.print_json(json.loads(msgspec.json.encode(st)))
        return 0 if st["state"] != "failed" else 1
    if st["state"] == "failed":
        raise TradeopsError(f"backtest {st['job_id']} failed: {st['reason']}")
    if st["state"] != "done":
        print(f"backtest {st['job_id']}: {st['state']}")
        return 0
    res = st["result"]
    print(f"backtest {st['job_id']}: {res.strategy} on {','.join(res.symbols)} ({st['reason']})")
    show(
        ["PNL", "SHARPE", "MAX DD", "TRADES", "BARS"],
        [[f"{res.pnl:.2f}", f"{res.sharpe:.2f}", f"{res.max_drawdown:.2%}", res.trades, res.bars]],
    )
    return 0


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    from backend.backtest import jobs

    st = jobs.status(ctx.redis, args.job_id)
    if st is None:
        raise TradeopsError(f"no backtest {args.job_id!r} (see `tradeops backtest list`)")
    return _print(ctx, st, args.json)


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    from backend.backtest import jobs

    recs = jobs.recent(ctx.redis)
    if args.json:
        ctx.print_json(json.loads(msgspec.json.encode(recs)))
        return 0
    if not recs:
        print("no backtests")
        return 0
    rows = []
    for st in recs:
        res = st.get("result")
        rows.append(
            [
                st["job_id"],
                st["job"]["strategy"] if "job" in st else "?",
                st["state"],
                f"{res.pnl:.2f}" if res else "-",
                f"{res.sharpe:.2f}" if res else "-",
                f"{res.max_drawdown:.2%}" if res else "-",
                res.trades if res else "-",
                st["reason"] if st["state"] == "failed" else "",
            ]
        )
    show(["JOB", "STRATEGY", "STATE", "PNL", "SHARPE", "MAX DD", "TRADES", "REASON"], rows)
    return 0
