"""Start one service instance as its own OS process (`python -m backend.services NAME`, the
command of backend.runtime.commands), wait for its heartbeat, stop it with SIGTERM (drain) or
SIGKILL (crash). The supervisor, the benchmarks and the tests all start processes through here."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from backend.bus import streams
from backend.bus.connection import login_env
from backend.errors import TradeopsError
from backend.runtime.commands import service_command


def spawn_service(
    name: str,
    *,
    redis_url: str,
    data_dir: Path,
    instance: str | None = None,
    environment: str = "legacy",
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    config: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start service `name` (`python -m backend.services NAME`) with its logs in `log_path`
    (default under data_dir/logs), logged in as its own Redis user (the path of its password file
    in TRADEOPS_REDIS_PASSWORD_FILE when the data dir holds one)."""
    instance = instance or f"{name}-{environment}"
    log_path = log_path or Path(data_dir) / "logs" / f"{instance}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    penv = login_env(name, Path(data_dir), dict(os.environ))  # its own user, its password file's path
    penv.update(
        TRADEOPS_REDIS_URL=redis_url,
        TRADEOPS_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    if config is not None:
        penv["TRADEOPS_CONFIG"] = str(config)
    penv.update(env or {})
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            service_command(name, instance, environment),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=penv,
            start_new_session=True,
        )


def health_key(name: str, instance: str) -> str:
    return streams.HEALTH_KEY.format(service=name, instance=instance)


def wait_healthy(
    r: redis.Redis,
    name: str,
    instance: str,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 20.0,
    log_path: Path | None = None,
) -> None:
    """Wait until the instance heartbeats `running`; a clear error if it died or timed out."""
    key = health_key(name, instance)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.hget(key, "state") == b"running":
            return
        if proc is not None and proc.poll() is not None:
            raise TradeopsError(
                f"{name} ({instance}) exited with {proc.returncode} before it was healthy"
                + (f": {_tail(log_path)}" if log_path else "")
            )
        time.sleep(0.02)
    raise TradeopsError(f"{name} ({instance}) not healthy within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[Any], *, timeout: float = 15.0, kill: bool = False) -> int:
    """SIGTERM (the service drains: finishes its batch, acks, exits) or SIGKILL; returns the code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _tail(path: Path | None, n: int = 5) -> str:
    if path is None:
        return ""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])
