"""Running one service instance in the foreground until SIGTERM: `python -m backend.services NAME`
(what every runtime starts, see backend.runtime.commands) and `tradeops service run NAME` (the
operator's front door) both come here.

The service's class comes from the registry, its settings from the config file and the
environment, its Redis user and password from TRADEOPS_REDIS_USER and the secrets provider (the
runtimes hand it the path of its password file, TRADEOPS_REDIS_PASSWORD_FILE); its logs are JSON
lines on stderr, the event loop is uvloop's, SIGTERM and SIGINT make it drain. A bad config or an
unknown service is one line naming what is wrong (a TradeopsError); a crash is one line too, the
traceback being in the log."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from backend import aio, entry, logs
from backend.bus import connection
from backend.errors import TradeopsError
from backend.settings import Settings

INSTANCE_ENV = "TRADEOPS_INSTANCE"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of a service run (the NAME and the options after it)."""
    p.add_argument("name", help="service name (see `tradeops inventory`)")
    p.add_argument(
        "--instance",
        default=os.environ.get(INSTANCE_ENV) or None,
        help=f"instance id (default: ${INSTANCE_ENV}, which a swarm or a Kubernetes deployment sets per "
        "replica, else <name>-<env>-<pid>)",
    )
    p.add_argument("--environment", choices=["legacy", "target"], default=None)
    p.add_argument("--log-level", default="INFO")


def run_service(
    name: str,
    settings: Settings,
    *,
    instance: str | None = None,
    environment: str | None = None,
    log_level: str = "INFO",
) -> None:
    """Run service `name` until it is stopped (SIGTERM/SIGINT: it drains)."""
    from backend.services import service_class

    cls = service_class(name)
    url = settings.redis_urls.get(name) or connection.require_url(settings.redis_url, settings.resolved_data_dir())
    auth = connection.login(connection.user_of(name), settings, url=url)  # its own user (backend/bus/acl.py)
    svc = cls(redis_url=url, settings=settings, instance=instance, environment=environment, login=auth)
    logs.setup(log_level.upper(), service=svc.name, instance=svc.instance)
    try:
        aio.run(svc.run(install_signals=True, serve_metrics=True))
    except TradeopsError:
        raise
    except Exception as exc:  # noqa: BLE001 - the log has the traceback; the operator gets a line
        raise TradeopsError(f"service {name} failed: {exc!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m backend.services", description="run one service instance in the foreground until SIGTERM"
    )
    add_arguments(p)
    entry.add_settings_options(p)
    args = p.parse_args(argv)
    return entry.run(
        lambda: run_service(
            args.name,
            entry.settings_of(args),
            instance=args.instance,
            environment=args.environment,
            log_level=args.log_level,
        )
    )
