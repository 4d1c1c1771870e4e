"""`tradeops deploy swarm | k8s`: the deployment generated from the inventory, on Docker Swarm
(`docker stack deploy`, blue/green between legacy and target; backend/deploy/swarm.py) or as
Kubernetes manifests (backend/deploy/k8s.py)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from pathlib import Path
from typing import Any

from backend.errors import TradeopsError
from console.cli.context import Context, command

ORDER = 12


def register(sub: Any) -> None:
    p = command(sub, "deploy", "deploy the services on Docker Swarm, or write them as Kubernetes manifests")
    dsub = p.add_subparsers(dest="deploy_command", metavar="TARGET", required=True, parser_class=type(p))
    s = command(dsub, "swarm", "docker stack deploy of a stack file generated from the inventory")
    s.add_argument("--stack", default="tradeops", help="the stack's name (default tradeops)")
    s.add_argument(
        "--image", default=None, help="the image (default: the local image, made by `docker import` when missing)"
    )
    s.add_argument(
        "--services",
        default=None,
        metavar="A,B",
        help="only these services (default: all); the stack then holds only them (others it had are removed)",
    )
    _replicas_option(s)
    s.add_argument(
        "--external-redis",
        default=None,
        metavar="URL",
        help="the services' Redis, outside the stack (default: the stack runs its own)",
    )
    s.add_argument("-o", "--output", default=None, help="the stack file (default <data dir>/deploy/swarm-stack.yml)")
    s.add_argument("--no-deploy", action="store_true", help="write the stack file only")
    s.add_argument(
        "--health-interval", type=float, default=5.0, metavar="S", help="how often each task's health is checked"
    )
    s.add_argument("--wait", type=float, default=300.0, metavar="S", help="wait until every service runs (0: not)")
    s.add_argument(
        "--watch",
        action="store_true",
        help="then follow the migration board on the bus (--redis-url, else the stack's Redis as this node "
        "reaches it): scale legacy and target as the moves say, until Ctrl-C",
    )
    s.add_argument("--remove", action="store_true", help="remove the stack (docker stack rm) and wait until it is gone")
    s.set_defaults(func=cmd_swarm)
    k = command(dsub, "k8s", "write the Kubernetes manifests generated from the inventory")
    k.add_argument("--out", default="k8s", metavar="DIR", help="the manifests' directory (default ./k8s)")
    k.add_argument("--image", default="tradeops:latest")
    k.add_argument("--namespace", default="tradeops")
    k.add_argument("--services", default=None, metavar="A,B", help="only these services (default: all)")
    _replicas_option(k)
    k.add_argument(
        "--external-redis",
        default=None,
        metavar="URL",
        help="the services' Redis, outside the cluster (default: a StatefulSet in the namespace)",
    )
    k.set_defaults(func=cmd_k8s)


def _replicas_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="instances of a service in place of the inventory's `replicas` (repeatable)",
    )


def _services(arg: str | None) -> list[str] | None:
    return [s.strip() for s in arg.split(",") if s.strip()] if arg else None


def cmd_swarm(ctx: Context, args: argparse.Namespace) -> int:
    from backend import secrets
    from backend.bus import acl
    from backend.deploy import swarm, workload
    from backend.migration.state import board

    sw = swarm.Swarm(args.stack)
    if args.remove:
        gone = sw.remove()
        print(f"removed stack {args.stack}: " + (", ".join(gone) if gone else "it had no services"))
        print(
            f"kept: its Redis's volume {args.stack}_redis-data (the bus, the migration board); "
            "`docker volume rm` drops it"
        )
        return 0
    store = ctx.data_dir / secrets.DIR
    secrets.write_private(store / workload.ACL_FILE, acl.acl_text(ctx.data_dir, ctx.settings))  # passwords if missing
    works = workload.workloads(
        services=_services(args.services), secrets_dir=store, replicas=workload.parse_replicas(args.replicas)
    )
    bus = _bus(ctx, sw, args.external_redis, required=False)  # a stack deployed before: its board
    states = board(bus, ctx.skips) if bus is not None else None
    image = _swarm_image(args.image, sw.docker_host, offline=args.no_deploy)
    data = swarm.stack_file(
        works, image, store, states=states, redis_url=args.external_redis, health_interval_s=args.health_interval
    )
    path = swarm.write_stack_file(data, Path(args.output or ctx.data_dir / "deploy" / "swarm-stack.yml"))
    print(
        f"wrote {path}: {len(works)} services as legacy and target, "
        + ("the migration board's environments" if states else "legacy only (no bus answers yet: no board read)")
        + f"; Docker secrets are files in {store}"
    )
    if args.no_deploy:
        return 0
    sw.deploy(path, data)
    print(f"deployed stack {args.stack} on {sw.docker_host} ({image.ref})")
    if args.wait:
        sw.wait_converged(args.wait)
        print(sw.service_ls(), end="")
        if args.external_redis is None:
            print(f"the stack's Redis from this node: {sw.redis_url() or 'not reachable here'}")
    if args.watch:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print("following the migration board (Ctrl-C stops following; the stack keeps running)")
        with contextlib.suppress(KeyboardInterrupt):
            sw.watch(_bus(ctx, sw, args.external_redis), works, stop)
    return 0


def _bus(ctx: Context, sw: Any, external: str | None, *, required: bool = True) -> Any:
    """The bus the board is read from, as the operator: --redis-url, the external Redis, or the
    stack's own as this node reaches it (not `required`: None when none is there yet)."""
    from backend.bus import connection

    if ctx.settings.redis_url:
        return ctx.redis
    try:
        url = external or sw.redis_url()
    except TradeopsError:  # no engine, no docker CLI: said again where it matters (the deploy)
        if required:
            raise
        url = None
    if url is None:
        if required:
            raise TradeopsError("the stack's Redis is not reachable from this node: give --redis-url")
        return None
    return connection.connect(url, auth=connection.operator_login(ctx.settings, url))


def _swarm_image(ref: str | None, docker_host: str, *, offline: bool = False) -> Any:
    """The image as the engine has it; a named one as it is when only the file is written and no
    engine answers."""
    from backend.runtime.docker import DockerUnavailable, connect_engine
    from backend.runtime.image import ImageSpec, image_spec

    try:
        client = connect_engine(docker_host)
    except DockerUnavailable:
        if offline and ref is not None:
            return ImageSpec(ref)
        raise
    try:
        return image_spec(client, ref)
    finally:
        client.close()


def cmd_k8s(ctx: Context, args: argparse.Namespace) -> int:
    from backend import secrets
    from backend.bus import acl
    from backend.deploy import k8s, workload

    store = ctx.data_dir / secrets.DIR
    if args.external_redis is None:  # the StatefulSet's ACL file (passwords made if missing)
        secrets.write_private(store / workload.ACL_FILE, acl.acl_text(ctx.data_dir, ctx.settings))
    works = workload.workloads(
        services=_services(args.services), secrets_dir=store, replicas=workload.parse_replicas(args.replicas)
    )
    if not works:
        raise TradeopsError("no services to deploy")
    docs = k8s.manifests(works, image=args.image, namespace=args.namespace, redis_url=args.external_redis)
    files = k8s.write(docs, Path(args.out))
    kinds: dict[str, int] = {}
    for d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    print(f"wrote {len(files)} files to {args.out}: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    print("the Secrets they name are not in them; make them from the data dir's files:")
    for line in k8s.secret_commands(works, store, args.namespace, with_redis=args.external_redis is None):
        print("  " + line)
    return 0
