"""Core commands: version, redis, inventory, service, health."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from backend import __version__
from backend.bus import embedded, streams
from backend.errors import TradeopsError
from backend.health import read_heartbeats, redis_memory
from backend.migration import inventory as inv_mod
from backend.services import run as service_run
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 0


def register(sub: Any) -> None:
    p = command(sub, "version", "print the tradeops version")
    p.set_defaults(func=cmd_version)

    p = command(sub, "redis", "the embedded Redis server of the data dir")
    rsub = p.add_subparsers(dest="redis_cmd", metavar="ACTION", required=True)
    q = command(rsub, "up", "start the embedded redis-server (AOF on) for the data dir")
    q.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    q.set_defaults(func=cmd_redis_up)
    q = command(rsub, "down", "stop the embedded redis-server of the data dir")
    q.set_defaults(func=cmd_redis_down)
    q = command(rsub, "status", "is the bus's Redis up, and where")
    q.set_defaults(func=cmd_redis_status)
    q = command(
        rsub,
        "archive",
        "archive the control-plane logs' older entries (ops.gates, ops.migration, "
        "models.events) to the data dir, then trim them (what the scheduler's stream-archive job does)",
    )
    q.add_argument(
        "--keep", default="7d", help="how long entries stay live (default 7d; 0s archives all but the newest)"
    )
    q.set_defaults(func=cmd_redis_archive)
    q = command(
        rsub,
        "acl",
        "the Redis users generated from the services' declared access and the inventory: "
        "print their rules (`acl check`: compare them with the live server; `acl apply`: set them on it)",
    )
    q.add_argument("--user", action="append", default=None, metavar="USER", help="only this user (repeatable)")
    q.set_defaults(func=cmd_redis_acl)
    asub = q.add_subparsers(dest="acl_cmd", metavar="ACTION")
    a = command(
        asub, "check", "compare the generated users with the live server (as admin): exit 1 naming every drifted rule"
    )
    a.set_defaults(func=cmd_redis_acl_check)
    a = command(
        asub,
        "apply",
        "set the generated users on the server (as admin: the embedded server's, or "
        "redis_admin_url's for an external one); passwords from the secrets provider, new ones generated "
        "into the data dir",
    )
    a.set_defaults(func=cmd_redis_acl_apply)

    q = command(
        rsub,
        "cluster",
        "a local Redis Cluster from the same binaries, for development, tests and `bench scale` "
        "(up: start and form it; down: stop it; status: each node's role and state)",
    )
    csub = q.add_subparsers(dest="cluster_cmd", metavar="ACTION", required=True)
    c = command(csub, "up", "start a local cluster: every slot served, replicas following their primaries")
    c.add_argument("--primaries", type=int, default=3, help="primaries (default 3)")
    c.add_argument("--replicas", type=int, default=1, help="replicas per primary (default 1)")
    c.set_defaults(func=cmd_redis_cluster_up)
    c = command(csub, "down", "stop the local cluster of the data dir")
    c.set_defaults(func=cmd_redis_cluster_down)
    c = command(csub, "status", "each node of the local cluster: port, role, cluster state")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_redis_cluster_status)

    p = command(
        sub, "inventory", "the 18 services and 8 infrastructure services, their CPGS lanes and dependency levels"
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object: services, infra, lane totals, levels and the plan"
    )
    p.add_argument(
        "--levels", action="store_true", help="the dependency levels (what each service needs, what needs it)"
    )
    p.set_defaults(func=cmd_inventory)
    isub = p.add_subparsers(dest="inventory_cmd", metavar="ACTION")
    q = command(isub, "check", "validate an inventory file (exit 1 with the reason)")
    q.add_argument("file")
    q.set_defaults(func=cmd_inventory_check)
    q = command(
        isub,
        "show",
        "one service's whole sheet: purpose, ports, dependencies, configuration, environment, secrets, "
        "data flows (from its code), lanes, complexity, testing, known issues",
    )
    q.add_argument("name", help="service name")
    q.add_argument("--json", action="store_true", dest="show_json")
    q.set_defaults(func=cmd_inventory_show)

    p = command(sub, "service", "run or list services")
    ssub = p.add_subparsers(dest="service_cmd", metavar="ACTION", required=True)
    q = command(
        ssub, "run", "run one service instance in the foreground until SIGTERM (what `python -m backend.services` does)"
    )
    service_run.add_arguments(q)
    q.set_defaults(func=cmd_service_run)
    q = command(ssub, "list", "the services this build can run")
    q.set_defaults(func=cmd_service_list)

    p = command(sub, "health", "latest heartbeat of every live service instance")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_health)


def cmd_version(ctx: Context, args: argparse.Namespace) -> int:
    print(f"tradeops {__version__}")
    return 0


def cmd_redis_up(ctx: Context, args: argparse.Namespace) -> int:
    server = embedded.EmbeddedRedis(
        ctx.data_dir,
        port=args.port,
        detach=True,
        maxmemory=ctx.settings.redis_maxmemory,
        acl=True,
        settings=ctx.settings,
    )
    url = server.start()
    print(
        f"redis up: {url} (pid {server.proc.pid if server.proc else '?'}, data {server.dir}; "
        f"ACL users in {server.dir / embedded.ACL_FILE}, passwords in {ctx.data_dir / 'secrets' / 'redis'})"
    )
    return 0


def cmd_redis_cluster_up(ctx: Context, args: argparse.Namespace) -> int:
    from backend.bus import cluster

    c = cluster.LocalCluster(
        ctx.data_dir,
        primaries=args.primaries,
        replicas=args.replicas,
        maxmemory=ctx.settings.redis_maxmemory,
        detach=True,
    )
    info = c.start()
    for n in info.nodes:
        follows = f" (replica of :{n.primary_port})" if n.primary_port else ""
        print(f"  {n.role:<8} {n.url}  pid {n.pid}{follows}")
    print(
        f"redis cluster up: {len(info.primaries)} primaries, {len(info.nodes) - len(info.primaries)} replicas; "
        f"clients start from any node, e.g. --redis-url redis+cluster://127.0.0.1:{info.nodes[0].port}/0"
    )
    return 0


def cmd_redis_cluster_down(ctx: Context, args: argparse.Namespace) -> int:
    from backend.bus import cluster

    info = cluster.stop_data_dir(ctx.data_dir)
    if info is None:
        print(f"redis cluster: none for data dir {ctx.data_dir}")
    else:
        print(f"redis cluster down: {len(info.nodes)} nodes stopped")
    return 0


def cmd_redis_cluster_status(ctx: Context, args: argparse.Namespace) -> int:
    from backend.bus import cluster

    rows = cluster.status(ctx.data_dir)
    if args.json:
        ctx.print_json(rows)
        return 0 if rows else 1
    if not rows:
        print(f"redis cluster: none for data dir {ctx.data_dir} (`tradeops redis cluster up` starts one)")
        return 1
    show(["PORT", "PID", "ROLE", "STATE"], [[r["port"], r["pid"], r["role"], r.get("state", "-")] for r in rows])
    return 0 if all(r.get("state") == "ok" for r in rows) else 1


def cmd_redis_down(ctx: Context, args: argparse.Namespace) -> int:
    from backend.runtime.supervisor import read_table

    table = read_table(ctx.data_dir) or {}
    sup = table.get("supervisor_pid")
    info = embedded.read_info(ctx.data_dir)
    if sup and embedded._alive(sup) and info is not None and table.get("redis_url") == info.url:
        raise TradeopsError(
            f"a stack is up on this Redis (supervisor pid {sup}), which would start it again; "
            "`tradeops down` stops the stack and its Redis"
        )
    info = embedded.stop_data_dir(ctx.data_dir)
    if info is None:
        print(f"redis: none running for data dir {ctx.data_dir}")
    else:
        print(f"redis down: {info.url} (pid {info.pid})")
    return 0


def cmd_redis_status(ctx: Context, args: argparse.Namespace) -> int:
    url = ctx.redis_url()
    r = ctx.redis
    info = r.info()
    live = embedded.live_info(ctx.data_dir)
    where = f"embedded, pid {live.pid}, data {live.dir}" if live and live.url == url else "external"
    print(
        f"redis ok: {url} ({where}); server {info.get('redis_version')}, "
        f"aof {'on' if info.get('aof_enabled') else 'off'}, "
        f"memory {info.get('used_memory_human')}, keys {r.dbsize()}"
    )
    return 0


def cmd_redis_archive(ctx: Context, args: argparse.Namespace) -> int:
    import asyncio

    from backend.bus import archive, connection
    from backend.scheduling.calendar import duration

    try:
        keep_s = duration(args.keep, key="--keep") if args.keep not in ("0", "0s") else 0.0
    except ValueError as exc:
        raise TradeopsError(str(exc)) from None
    url = ctx.redis_url()
    auth = connection.admin_login(ctx.settings)  # XTRIM: only the scheduler and the admin

    async def run() -> list[archive.Archived]:
        r = await connection.connect_async(url, auth=auth)
        try:
            return await archive.archive_all(r, ctx.data_dir, keep_s=keep_s)
        finally:
            await r.aclose()

    for a in asyncio.run(run()):
        print(
            f"{a.stream}: {a.archived} archived, {a.trimmed} trimmed; {a.total} in "
            f"{archive.stream_dir(ctx.data_dir, a.stream)}"
            if a.last_id
            else f"{a.stream}: nothing to archive"
        )
    return 0


def cmd_redis_acl(ctx: Context, args: argparse.Namespace) -> int:
    from backend.bus import acl

    users = acl.accesses()
    if args.user:
        unknown = [u for u in args.user if u not in users]
        if unknown:
            raise TradeopsError(f"no generated Redis user {', '.join(unknown)}; users: {', '.join(users)}")
        users = {u: users[u] for u in args.user}
    sys.stdout.write(acl.describe(users, default=not args.user))
    return 0


def _acl_scope(ctx: Context) -> tuple[tuple[str, ...], bool]:
    """(users not to touch, whether to turn `default` off): an external server's admin login is
    its own, and so is `admin`; the embedded server's admin is generated."""
    from urllib.parse import unquote, urlparse

    from backend.bus import connection

    admin_url = ctx.settings.redis_admin_url
    if not admin_url:
        return (), True
    who = unquote(urlparse(admin_url).username or "") or connection.ADMIN
    return tuple(dict.fromkeys([connection.ADMIN, who])), who != "default"


def cmd_redis_acl_check(ctx: Context, args: argparse.Namespace) -> int:
    from backend.bus import acl

    skip, off = _acl_scope(ctx)
    drifts = acl.check(
        ctx.admin, acl.local_passwords(ctx.data_dir, ctx.settings), skip=skip + (() if off else ("default",))
    )
    for d in drifts:
        print(f"drift: {d}")
    if drifts:
        where = ctx.settings.redis_admin_url or ctx.redis_url()
        raise TradeopsError(
            f"acl check: {len(drifts)} drifted rule(s) on {where} (`tradeops redis acl apply` sets the generated ones)"
        )
    n = len(acl.accesses()) - len([u for u in skip if u in acl.accesses()])
    print(f"acl check: ok: {n} users match the generated rules" + ("; default is off" if off else ""))
    return 0


def cmd_redis_acl_apply(ctx: Context, args: argparse.Namespace) -> int:
    from backend.bus import acl

    skip, off = _acl_scope(ctx)
    if not ctx.settings.redis_admin_url and embedded.read_info(ctx.data_dir) is not None:
        acl.prepare(ctx.data_dir, ctx.settings)  # the embedded server's file, then loaded from it
        ctx.admin.execute_command("ACL", "LOAD")
        print(f"acl apply: {len(acl.accesses())} users written to {acl.acl_path(ctx.data_dir)} and loaded")
        return 0
    users = [u for u in acl.accesses() if u not in skip]
    pws = acl.passwords(acl.store(ctx.data_dir, ctx.settings), users, create=True)
    done = acl.apply(ctx.admin, pws, skip=skip, disable_default=off)
    print(
        f"acl apply: {len(done)} users set on {ctx.settings.redis_admin_url or ctx.redis_url()}"
        + ("; default is off" if off else "")
    )
    return 0


def _inventory_rows(inv: inv_mod.Inventory) -> list[list[Any]]:
    order, level = inv.order(), inv.level_of()
    return [
        [
            s.priority,
            s.name,
            s.task,
            s.port,
            ",".join(s.lanes),
            level[s.name],
            ",".join(s.needs) or "-",
            ",".join(s.migrate_after) or "-",
            s.complexity,
            s.risk,
            f"{s.hours:g}",
        ]
        for s in sorted(inv.services, key=lambda s: (s.priority, order.index(s.name)))
    ]


def _lane_line(inv: inv_mod.Inventory) -> str:
    t = inv.lane_totals()
    return (
        f"CPGS lanes over {t['entries']} entries ({len(inv.services)} services + {len(inv.infra)} core "
        f"infrastructure): frontend {t['frontend']}, lowlatency {t['lowlatency']}, backend {t['backend']}; "
        f"{t['multi']} on several lanes"
    )


def cmd_inventory(ctx: Context, args: argparse.Namespace) -> int:
    inv = inv_mod.load()
    if args.json and args.levels:
        ctx.print_json(
            {
                "levels": {str(k): v for k, v in inv.levels().items()},
                "needs": {s.name: s.needs for s in inv.services},
                "needed_by": {s.name: inv.needed_by(s.name) for s in inv.services},
                "migrate_after": {s.name: s.migrate_after for s in inv.services},
                "migrate_before": {s.name: inv.migrate_before(s.name) for s in inv.services},
            }
        )
        return 0
    if args.json:
        ctx.print_json(inv.to_json())
        return 0
    if args.levels:
        levels = inv.levels()
        print(f"{len(levels)} dependency levels (level 1 needs no service; level n needs one of level n-1)\n")
        show(
            ["LEVEL", "SERVICE", "P", "NEEDS", "NEEDED BY"],
            [
                [
                    lv,
                    name,
                    inv.service(name).priority,
                    ",".join(inv.service(name).needs) or "-",
                    ",".join(inv.needed_by(name)) or "-",
                ]
                for lv, names in levels.items()
                for name in names
            ],
        )
        print()
        for lv, names in levels.items():
            print(f"level {lv}: {', '.join(names)}")
        return 0
    show(
        ["P", "SERVICE", "TASK", "PORT", "LANES", "LEVEL", "NEEDS", "MIGRATE AFTER", "COMPLEXITY", "RISK", "HOURS"],
        _inventory_rows(inv),
    )
    total = sum(s.hours for s in inv.services)
    per = ", ".join(f"P{p} {sum(s.hours for s in ss):g}h" for p, ss in inv.by_priority().items())
    print(f"\n{len(inv.services)} services, {total:g} hours ({per}); {len(inv.levels())} dependency levels")
    print(_lane_line(inv) + "\n")
    show(
        ["INFRA", "PORT", "LANES", "PROBE", "EMBEDDED STAND-IN"],
        [
            [
                i.name,
                i.port,
                ",".join(i.lanes),
                i.probe.kind + (f" {i.probe.path}" if i.probe.kind == "http" else ""),
                i.standin,
            ]
            for i in inv.infra
        ],
    )
    return 0


def cmd_inventory_show(ctx: Context, args: argparse.Namespace) -> int:
    import msgspec

    from backend.migration import sheet

    sh = sheet.sheet(args.name)
    if args.show_json:
        ctx.print_json(msgspec.to_builtins(sh))
        return 0
    print(sheet.text(sh), end="")
    return 0


def cmd_inventory_check(ctx: Context, args: argparse.Namespace) -> int:
    inv = inv_mod.load_file(args.file)
    print(f"{args.file}: ok ({len(inv.services)} services, {len(inv.infra)} infrastructure)")
    return 0


def cmd_service_run(ctx: Context, args: argparse.Namespace) -> int:
    service_run.run_service(
        args.name, ctx.settings, instance=args.instance, environment=args.environment, log_level=args.log_level
    )
    return 0


def cmd_service_list(ctx: Context, args: argparse.Namespace) -> int:
    from backend.services import SERVICES, service_class

    rows = []
    for name in inv_mod.load().order():
        try:
            service_class(name)
            built = "yes"
        except TradeopsError:
            built = "no"
        rows.append([name, SERVICES[name].target, SERVICES[name].domain or "-", built])
    show(["SERVICE", "CLASS", "DOMAIN", "BUILT"], rows)
    return 0


def cmd_health(ctx: Context, args: argparse.Namespace) -> int:
    beats = read_heartbeats(ctx.redis, ctx.skips)
    if args.json:
        import msgspec

        ctx.print_json(msgspec.to_builtins(beats))
        return 0
    now = time.time_ns()
    show(
        ["SERVICE", "INSTANCE", "ENV", "STATE", "AGE", "PROCESSED", "RATE/s", "LAG", "PENDING", "DLQ"],
        [
            [
                b.service,
                b.instance,
                b.environment,
                f"{b.state}: {b.reason}" if b.state == "degraded" else b.state,
                f"{(now - b.ts_ns) / 1e9:.1f}s",
                b.processed,
                b.rate,
                b.lag,
                b.pending,
                b.dlq,
            ]
            for b in beats
        ],
    )
    if not beats:
        print(f"(no live instances; heartbeats expire after {streams.HEALTH_TTL_S}s)")
    mem = redis_memory(ctx.redis)
    print(mem.line())
    if mem.high:
        print(
            f"warning: redis memory is at or over {streams.ALERT_MEMORY_PCT:g}% of maxmemory; at 100% every "
            f"write fails ({mem.policy or 'no eviction'})"
        )
    return 0
