"""`tradeops up | down | ps | compose` and the supervisor process (`tradeops supervise`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from backend.errors import TradeopsError
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 10


def register(sub: Any) -> None:
    p = command(sub, "up", "start the stack: embedded Redis, local exchange, every service (legacy + migrated)")
    _runtime_options(p)
    p.add_argument("--rate", type=float, default=2000.0, help="local exchange trades per second")
    p.set_defaults(func=cmd_up)
    p = command(sub, "down", "stop the stack of the data dir")
    p.set_defaults(func=cmd_down)
    p = command(sub, "ps", "instances: service, environment, pid or container, health, uptime")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ps)
    p = command(sub, "compose", "write the target deployment as a docker-compose file")
    p.add_argument("-o", "--output", default="docker-compose.target.yml")
    p.add_argument("--image", default="tradeops:latest")
    p.set_defaults(func=cmd_compose)
    p = command(sub, "supervise", "run the supervisor in the foreground (what `up` starts)")
    _runtime_options(p)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument(
        "--keep-redis",
        action="store_true",
        help="also keep the data dir's embedded Redis running (restarted on its port when it dies)",
    )
    p.set_defaults(func=cmd_supervise)


def _runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runtime",
        choices=["process", "docker"],
        default="process",
        help="instances as OS processes (default) or Docker containers",
    )
    p.add_argument(
        "--network",
        choices=["host", "lanes"],
        default="host",
        help="docker: share the host's network (default; a Redis on loopback needs it) or join "
        "the CPGS lane networks (a Redis those networks reach)",
    )
    p.add_argument(
        "--image",
        default=None,
        help="docker: image to run (default: the local image, made by `docker import` when missing)",
    )


def cmd_up(ctx: Context, args: argparse.Namespace) -> int:
    from backend import dashboards
    from backend.runtime.process import read_table
    from backend.runtime.scrape import CONFIG_FILE, TARGETS_FILE, prometheus_dir
    from backend.runtime.stack import Stack

    if args.runtime != "docker" and (args.image or args.network != "host"):
        raise TradeopsError("--image and --network are options of --runtime docker")
    stack = Stack(ctx.settings, args.runtime, exchange_rate=args.rate, network=args.network, image=args.image)
    t0 = time.monotonic()
    url = stack.up(
        timeout=60.0 if args.runtime == "process" else 180.0,
        progress=lambda line: print(f"  {time.monotonic() - t0:5.1f}s {line}", flush=True),
    )
    table = read_table(ctx.data_dir) or {}
    n = len(table.get("instances", []))
    where = (
        f" ({table.get('image')} on {table.get('docker_host')}, network {table.get('network')})"
        if args.runtime == "docker"
        else ""
    )
    print(f"stack up in {time.monotonic() - t0:.1f}s: {n} instances on {url}{where} (data {ctx.data_dir})")
    if table.get("not_built"):
        print(f"not built yet (skipped): {', '.join(table['not_built'])}")
    scrape = prometheus_dir(ctx.data_dir)
    print(
        f"prometheus: `prometheus --config.file={scrape / CONFIG_FILE}` scrapes every instance "
        f"({scrape / TARGETS_FILE}, kept current); grafana dashboards in {dashboards.default_dir(ctx.data_dir)}"
    )
    print("`tradeops` opens the console; `tradeops ps` lists instances; `tradeops down` stops it all")
    return 0


def cmd_down(ctx: Context, args: argparse.Namespace) -> int:
    from backend.runtime.stack import Stack

    done = Stack(ctx.settings).down()
    print("stopped: " + (", ".join(done) if done else f"nothing was running for {ctx.data_dir}"))
    return 0


def cmd_ps(ctx: Context, args: argparse.Namespace) -> int:
    from backend.runtime.stack import Stack

    stack = Stack(ctx.settings)
    if ctx.settings.redis_url:  # a Redis was named: it must answer, and be the stack's
        ctx.redis  # noqa: B018 - connects, or one line saying why not (a bad URL, nothing listening)
        ours = stack.redis_url
        if ours is not None and _bare(ours) != _bare(ctx.settings.redis_url):
            raise TradeopsError(
                f"the stack of {ctx.data_dir} runs on {_bare(ours)}, not {_bare(ctx.settings.redis_url)}: "
                f"`tradeops ps` without --redis-url lists it; `tradeops health` lists the heartbeats on "
                f"{_bare(ctx.settings.redis_url)}"
            )
    rows = stack.ps()
    if args.json:
        ctx.print_json(rows)
        return 0
    if not rows:
        print(f"no stack running for {ctx.data_dir} (`tradeops up` starts one)")
        return 0
    show(
        ["SERVICE", "ENV", "INSTANCE", "PID/CONTAINER", "HEALTH", "UPTIME", "RESTARTS", "RATE/s", "PARTITIONS"],
        [
            [
                r["service"],
                r["environment"],
                r["instance"],
                r.get("container") or r["pid"],
                r["health"],
                f"{r['uptime_s']:.0f}s",
                r["restarts"] + r.get("engine_restarts", 0),
                r["rate"] if r["rate"] is not None else "",
                r.get("partitions", ""),
            ]
            for r in rows
        ],
    )
    return 0


def _bare(url: str) -> str:
    """A Redis URL without its password, normalised enough to compare (scheme, host, port, db)."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    if u.scheme == "unix":
        return f"unix://{u.path}"
    db = u.path.strip("/") or "0"
    return f"{u.scheme}://{u.hostname}:{u.port or 6379}/{db}"


def cmd_compose(ctx: Context, args: argparse.Namespace) -> int:
    from backend import secrets
    from backend.bus import acl
    from backend.migration.compose import ACL_FILE, compose

    store = ctx.data_dir / secrets.DIR
    secrets.write_private(store / ACL_FILE, acl.acl_text(ctx.data_dir, ctx.settings))  # passwords made if missing
    Path(args.output).write_text(compose(args.image, store))
    print(
        f"wrote {args.output}; its Docker secrets are files in {store} (the Redis users' passwords, "
        f"{ACL_FILE}; the venue's exchange/api-key and api-secret), to be readable by the containers' users"
    )
    return 0


def cmd_supervise(ctx: Context, args: argparse.Namespace) -> int:
    from backend.bus import connection
    from backend.runtime.supervise import supervise

    supervise(
        ctx.redis_url(),
        ctx.data_dir,
        args.rate,
        args.runtime,
        network=args.network,
        image=args.image,
        keep_redis=args.keep_redis,
        auth=connection.admin_login(ctx.settings),
    )
    return 0
