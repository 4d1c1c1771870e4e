"""The command lines that start the headless processes, built here and nowhere else: a service
instance (`python -m backend.services NAME ...`), the local exchange (`python -m backend.exchange`)
and the supervisor (`python -m backend.runtime.supervise`). The process runtime, the docker
runtime and its local image, the compose file, the benchmarks and the tests all take them from
here; none of them names the console (`tradeops service run NAME` is the operator's front door
onto the same code).

`python` is the interpreter to name: this one (a child process) by default, `"python"` inside a
container (the image's own, found on its PATH)."""

from __future__ import annotations

import sys
from pathlib import Path

SERVICE_MODULE = "backend.services"
EXCHANGE_MODULE = "backend.exchange"
SUPERVISOR_MODULE = "backend.runtime.supervise"
CONTAINER_PYTHON = "python"


def service_entrypoint(python: str | None = None) -> list[str]:
    """The program part of a service command (a container's entrypoint)."""
    return [python or sys.executable, "-m", SERVICE_MODULE]


def service_args(name: str, instance: str, environment: str) -> list[str]:
    """The arguments part of a service command (a container's command)."""
    return [name, "--instance", instance, "--environment", environment]


def service_command(name: str, instance: str, environment: str, *, python: str | None = None) -> list[str]:
    """Run one instance of service `name` in the foreground until SIGTERM."""
    return [*service_entrypoint(python), *service_args(name, instance, environment)]


def exchange_command(
    data_dir: Path | str, rate: float, *, news_every: float | None = None, python: str | None = None
) -> list[str]:
    """Run the local exchange for `data_dir` at `rate` trades/s until SIGTERM (its first line on
    stdout says it is up, its last one what it sent)."""
    cmd = [python or sys.executable, "-m", EXCHANGE_MODULE, "--data-dir", str(data_dir), "--rate", str(rate)]
    if news_every is not None:
        cmd += ["--news-every", str(news_every)]
    return cmd


def supervisor_command(
    data_dir: Path | str,
    redis_url: str,
    rate: float,
    runtime: str,
    *,
    network: str | None = None,
    image: str | None = None,
    keep_redis: bool = False,
    python: str | None = None,
) -> list[str]:
    """Run the supervisor of `runtime` in the foreground until SIGTERM (what `tradeops up` starts)."""
    cmd = [
        python or sys.executable,
        "-m",
        SUPERVISOR_MODULE,
        "--data-dir",
        str(data_dir),
        "--redis-url",
        redis_url,
        "--rate",
        str(rate),
        "--runtime",
        runtime,
    ]
    if network is not None:
        cmd += ["--network", network]
    if image is not None:
        cmd += ["--image", image]
    if keep_redis:  # the supervisor also keeps the embedded Redis up (same port, same data dir)
        cmd.append("--keep-redis")
    return cmd
