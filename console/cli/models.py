"""`tradeops models list|show|train|promote|rollback`: the model registry (modelops) and training.

Changes go through modelops as requests on `models.requests`; the command waits for the event
that answers it and prints it (or modelops' refusal, with its reason)."""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from backend.bus import publish_sync, replies, streams
from backend.bus.broadcast import BroadcastSync
from backend.errors import TradeopsError
from backend.messages import ModelEvent, ModelStage, TrainJob, to_builtins
from backend.models import registry as reg
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 60


def register(sub: Any) -> None:
    p = command(sub, "models", "model registry: versions, stages, promotion, rollback, training")
    msub = p.add_subparsers(dest="models_cmd", metavar="ACTION", required=True)
    q = command(msub, "list", "every model with its stages")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = command(msub, "show", "a model's versions, lineage and events")
    q.add_argument("name")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_show)
    q = command(msub, "train", "queue a training job for ml-training")
    q.add_argument("name")
    q.add_argument("--symbols", default="", help="comma-separated (default: all)")
    q.add_argument("--horizon", type=float, default=5.0, help="label horizon in seconds")
    q.add_argument("--ridge", type=float, default=1.0)
    q.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait for the job to finish")
    q.set_defaults(func=cmd_train)
    for action, help_ in (
        ("promote", "promote a version to a stage"),
        ("rollback", "put production back to the version before it"),
    ):
        q = command(msub, action, help_)
        q.add_argument("name")
        if action == "promote":
            q.add_argument("version", type=int)
            q.add_argument("--stage", choices=reg.STAGES, default="production")
        q.add_argument("--reason", default="", help="why (required)")
        q.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for modelops")
        q.set_defaults(func=cmd_stage, action=action)


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    r = ctx.redis
    rows = []
    for name in reg.names(r):
        st = reg.stages(r, name)
        vs = reg.versions(r, name)
        prod = next((v for v in vs if v.version == st.get("production")), None)
        rows.append(
            {
                "name": name,
                "versions": len(vs),
                "staging": st.get("staging"),
                "production": st.get("production"),
                "production_ic": prod.metrics.get("ic") if prod else None,
            }
        )
    if args.json:
        ctx.print_json(rows)
    elif not rows:
        print("no models registered")
    else:
        show(
            ["MODEL", "VERSIONS", "STAGING", "PRODUCTION", "PROD IC"],
            [
                [
                    x["name"],
                    x["versions"],
                    x["staging"] or "-",
                    x["production"] or "-",
                    "-" if x["production_ic"] is None else f"{x['production_ic']:.3f}",
                ]
                for x in rows
            ],
        )
    return 0


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    r = ctx.redis
    vs = reg.versions(r, args.name)
    if not vs:
        raise TradeopsError(f"no model {args.name!r}; known: {', '.join(reg.names(r)) or 'none'}")
    st = reg.stages(r, args.name)
    evs = reg.events(r, args.name, skips=ctx.skips)
    if args.json:
        ctx.print_json(
            {
                "name": args.name,
                "stages": st,
                "production_history": reg.history(r, args.name),
                "versions": [v.summary() for v in vs],
                "events": [to_builtins(e) for e in evs],
            }
        )
        return 0
    print(f"model {args.name}: staging v{st.get('staging', '-')}, production v{st.get('production', '-')}")
    show(
        ["VERSION", "STAGE", "ROWS", "IC", "HIT", "FEATURES", "DATA (UTC)", "PARENT", "BY"],
        [
            [
                v.version,
                ",".join(s for s, n in st.items() if n == v.version) or "-",
                v.rows,
                f"{v.metrics.get('ic', 0):.3f}",
                f"{v.metrics.get('hit_rate', 0):.2f}",
                ",".join(v.features),
                f"{_t(v.data_start_ns)}..{_t(v.data_end_ns)}",
                v.parent or "-",
                v.trained_by,
            ]
            for v in vs
        ],
    )
    print()
    show(
        ["TIME (UTC)", "EVENT", "VERSION", "FROM", "OPERATOR", "REASON"],
        [[_t(e.ts_ns), e.kind, e.version or "-", e.from_version or "-", e.operator, e.reason] for e in evs],
    )
    return 0


def _t(ns: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ns / 1e9)) if ns else "-"


def cmd_train(ctx: Context, args: argparse.Namespace) -> int:
    if args.horizon <= 0 or args.ridge < 0:
        raise TradeopsError("--horizon must be positive and --ridge not negative")
    job = TrainJob(
        job_id=uuid.uuid4().hex[:12],
        name=args.name,
        symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
        horizon_s=args.horizon,
        ridge=args.ridge,
        requested_by=ctx.operator,
    )
    r = ctx.redis
    r.hset(f"training:job:{job.job_id}", mapping={"state": "queued", "name": job.name})
    publish_sync(r, streams.TRAINING_JOBS, job)
    print(f"training job {job.job_id} queued for {job.name}")
    if args.wait > 0:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            h = replies.fields(r.hgetall(f"training:job:{job.job_id}"))
            state = h.get(b"state", b"").decode()
            if state in ("registered", "failed"):
                print(
                    f"{state}: "
                    + ", ".join(
                        f"{k.decode()}={v.decode()}" for k, v in h.items() if k not in (b"state", b"name", b"ts_ns")
                    )
                )
                return 0 if state == "registered" else 1
            time.sleep(0.1)
        raise TradeopsError(f"job {job.job_id} not finished within {args.wait:g}s (is ml-training running?)")
    return 0


def cmd_stage(ctx: Context, args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise TradeopsError(f"{args.action} needs --reason")
    r = ctx.redis
    rid = uuid.uuid4().hex[:12]
    req = ModelStage(
        name=args.name,
        action=args.action,
        version=getattr(args, "version", 0),
        stage=getattr(args, "stage", "production"),
        reason=args.reason,
        operator=ctx.operator,
        request_id=rid,
        ts_ns=time.time_ns(),
    )
    events = BroadcastSync(r, {streams.MODELS_EVENTS: "$"}, count=100, block_ms=200, decode=ModelEvent, skips=ctx.skips)
    events.start()  # before the request: its answer cannot slip past
    publish_sync(r, streams.MODELS_REQUESTS, req)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        for _, _, ev in events.read():
            if ev.request_id == rid:
                return _report(ev)
    raise TradeopsError(f"no answer from modelops within {args.timeout:g}s (is it running?); the request stays queued")


def _report(ev: ModelEvent) -> int:
    if ev.kind == "refused":
        raise TradeopsError(f"modelops refused: {ev.reason}")
    verb = "promoted" if ev.kind == "promoted" else "rolled back"
    print(
        f"{ev.name}: {verb} to v{ev.version} in {ev.stage} (was v{ev.from_version or '-'}) "
        f"by {ev.operator}: {ev.reason}"
    )
    return 0
