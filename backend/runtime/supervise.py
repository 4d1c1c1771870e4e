"""The supervisor as a process: `python -m backend.runtime.supervise` (what `tradeops up` starts,
see backend.runtime.commands) and `tradeops supervise` both come here. It runs in the foreground
until SIGTERM, then stops every instance it started."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backend import entry, logs
from backend.bus import connection


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=2000.0, help="local exchange trades per second")
    p.add_argument("--runtime", choices=["process", "docker"], default="process")
    p.add_argument("--network", choices=["host", "lanes"], default="host")
    p.add_argument("--image", default=None)
    p.add_argument(
        "--keep-redis",
        action="store_true",
        help="also keep the data dir's embedded Redis running (restarted on its port when it dies)",
    )


def supervise(
    redis_url: str,
    data_dir: Path,
    rate: float,
    runtime: str = "process",
    *,
    network: str = "host",
    image: str | None = None,
    keep_redis: bool = False,
    auth: Any = None,
) -> None:
    """Run the supervisor of `runtime` until SIGTERM (docker: in `network` mode, on `image`);
    `keep_redis`: also restart the data dir's embedded Redis when it dies."""
    from backend.runtime.stack import serve_supervisor

    logs.setup("INFO", service="supervisor")
    options: dict[str, Any] = {"network": network, "image": image} if runtime == "docker" else {}
    if keep_redis:
        options["keep_redis"] = True
    if auth is not None:
        options["auth"] = auth
    serve_supervisor(redis_url, data_dir, rate, runtime, **options)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m backend.runtime.supervise", description="run the supervisor in the foreground until SIGTERM"
    )
    add_arguments(p)
    entry.add_settings_options(p)
    args = p.parse_args(argv)

    def body() -> None:
        settings = entry.settings_of(args)
        data_dir = settings.resolved_data_dir()
        supervise(
            connection.require_url(settings.redis_url, data_dir),
            data_dir,
            args.rate,
            args.runtime,
            network=args.network,
            image=args.image,
            keep_redis=args.keep_redis,
            auth=connection.admin_login(settings),
        )

    return entry.run(body)


if __name__ == "__main__":
    sys.exit(main())
