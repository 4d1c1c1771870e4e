"""`tradeops jobs [list] | run NAME | history`: the scheduler's jobs, their last outcomes, a run on
request."""

from __future__ import annotations

import argparse
import time
from typing import Any

from backend.errors import TradeopsError
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 36


def register(sub: Any) -> None:
    p = command(sub, "jobs", "the scheduler's jobs: schedule, last outcome, runs on request")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    jsub = p.add_subparsers(dest="jobs_cmd", metavar="ACTION")
    q = command(jsub, "list", "every job with its schedule and last outcome")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = command(jsub, "run", "ask the scheduler to run a job now")
    q.add_argument("name")
    q.add_argument("--day", default="", help="YYYY-MM-DD to compact through / report on (default: last closed day)")
    q.add_argument("--reason", default="")
    q.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait for the outcome")
    q.set_defaults(func=cmd_run)
    q = command(jsub, "history", "finished runs, newest first (ops.jobs)")
    q.add_argument("name", nargs="?", default="")
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_history)


def _what(rec: dict[str, Any]) -> str:
    if rec.get("state") == "failed":
        return rec.get("reason", "")
    d = rec.get("detail") or {}
    return ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, (list, dict)))


def _t(ns: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9)) if ns else "-"


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    from backend.scheduling.records import last_runs, schedule

    r = ctx.redis
    sched, last = schedule(r), last_runs(r)
    if args.json:
        ctx.print_json(
            {name: {**sched.get(name, {}), "last": last.get(name)} for name in sorted(set(sched) | set(last))}
        )
        return 0
    if not sched and not last:
        print("no jobs yet (is scheduler running?)")
        return 0
    rows = []
    for name in sorted(set(sched) | set(last)):
        s, rec = sched.get(name, {}), last.get(name) or {}
        rows.append(
            [
                name,
                s.get("kind", rec.get("kind", "-")),
                s.get("schedule", "(no longer scheduled)"),
                rec.get("slot", "-"),
                rec.get("state", "never ran"),
                _t(rec.get("ts_ns")),
                rec.get("trigger", ""),
                _what(rec),
            ]
        )
    show(["JOB", "KIND", "SCHEDULE", "LAST SLOT", "OUTCOME", "AT (UTC)", "TRIGGER", "WHAT"], rows)
    return 0


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from backend.reports.daily import day_bounds  # pandas: loaded only here
    from backend.scheduling.records import request_run, schedule, wait_finished

    if args.day:
        try:
            day_bounds(args.day)
        except ValueError as exc:
            raise TradeopsError(f"--day: {exc}") from None
    r = ctx.redis
    sched = schedule(r)
    if not sched:
        raise TradeopsError("the scheduler has published no jobs (is scheduler running?)")
    if args.name not in sched:
        raise TradeopsError(f"no job {args.name!r}; jobs: {', '.join(sorted(sched))}")
    slot = request_run(r, args.name, day=args.day, reason=args.reason, operator=ctx.operator)
    print(f"job {args.name} requested ({slot})")
    if args.wait <= 0:
        return 0
    rec = wait_finished(r, args.name, slot, args.wait)
    if rec is None:
        raise TradeopsError(
            f"job {args.name} not finished within {args.wait:g}s (is scheduler running?); "
            f"`tradeops jobs` shows it when it is"
        )
    print(f"{rec['state']}: {_what(rec)} (took {rec.get('took_s', 0):g}s)")
    return 0 if rec["state"] == "ok" else 1


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise TradeopsError("--limit must be positive")
    from backend.scheduling.records import finished_runs

    rows = finished_runs(ctx.redis, args.name, args.limit, skips=ctx.skips)
    if args.json:
        from backend.messages import to_builtins

        ctx.print_json([to_builtins(x) for x in rows])
        return 0
    if not rows:
        print("no finished runs yet")
        return 0
    show(
        ["AT (UTC)", "JOB", "SLOT", "OUTCOME", "TRIGGER", "WHAT"],
        [
            [
                _t(x.ts_ns),
                x.job,
                x.day,
                x.detail.get("outcome"),
                x.reason,
                x.detail.get("reason")
                or _what({"detail": {k: v for k, v in x.detail.items() if k not in ("outcome", "reason")}}),
            ]
            for x in rows
        ],
    )
    return 0
