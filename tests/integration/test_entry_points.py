"""The headless entry points, started with the commands every runtime uses
(backend.runtime.commands): a service (`python -m backend.services`), the local exchange
(`python -m backend.exchange`) and the supervisor (`python -m backend.runtime.supervise`). They run
without the console package, stop cleanly on SIGTERM and say what is wrong in one line."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import redis

from backend.runtime.commands import exchange_command, service_command, supervisor_command
from tests.conftest import wait_for


def _imported(importtime_log: str) -> set[str]:
    """The modules a `python -X importtime` run imported (from its stderr)."""
    return {m.group(1) for m in re.finditer(r"^import time:.*\|\s*([\w.]+)$", importtime_log, re.M)}


def test_a_service_runs_from_its_own_entry_point_without_the_console(
    tradeops_env: dict[str, str], r: redis.Redis, tmp_path: Path
) -> None:
    cmd = service_command("risk", "entry-1", "target")
    assert cmd[:3] == [sys.executable, "-m", "backend.services"]
    err = tmp_path / "stderr"
    with open(err, "wb") as out:
        proc = subprocess.Popen(
            [cmd[0], "-X", "importtime", *cmd[1:]], env=tradeops_env, stdout=subprocess.DEVNULL, stderr=out
        )
    try:
        wait_for(lambda: r.hget("health:risk:entry-1", "state") == b"running", timeout=30, what="the risk heartbeat")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert r.hget("health:risk:entry-1", "state") == b"stopped"
    modules = _imported(err.read_text())
    assert {"backend.services.run", "backend.trading.risk_rules"} <= modules  # what risk runs on
    assert not {m for m in modules if m.split(".")[0] in ("console", "widgets", "textual")}


def test_a_bad_service_config_or_name_is_one_line(tradeops_env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[services.risk]\nmax_ordr_qty = 1\n")
    for cmd, message in (
        ([*service_command("risk", "entry-2", "legacy"), "--config", str(cfg)], "[services.risk]: "),
        (service_command("nope", "entry-3", "legacy"), "unknown service 'nope'"),
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, env=tradeops_env, timeout=60)
        assert out.returncode == 1, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert out.stderr.startswith("tradeops: error: ") and message in out.stderr, out.stderr
    out = subprocess.run(
        service_command("risk", "x", "legacy")[:3], capture_output=True, text=True, env=tradeops_env, timeout=60
    )
    assert out.returncode == 2 and "usage: python -m backend.services" in out.stderr


def test_the_exchange_runs_from_its_own_entry_point(tradeops_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "exchange-data"
    proc = subprocess.Popen(
        exchange_command(data, 200.0, news_every=3600),
        env=tradeops_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("exchange up: market data ws://127.0.0.1:"), first
        assert (data / "exchange.json").is_file()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    last = rest.strip().splitlines()[-1]
    assert last.startswith("exchange down: ") and "last_ids" in json.loads(last.removeprefix("exchange down: "))
    out = subprocess.run(exchange_command(data, -5.0), capture_output=True, text=True, env=tradeops_env, timeout=60)
    assert out.returncode == 1 and out.stderr == "tradeops: error: --rate must be positive, not -5\n"


def test_the_supervisor_entry_point_says_what_is_wrong_in_one_line(
    tradeops_env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    env = {**tradeops_env, "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    out = subprocess.run(
        supervisor_command(tmp_path / "data", redis_url, 100.0, "docker", network="host"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert out.stderr == (
        f"tradeops: error: no Docker engine reachable at unix://{tmp_path}/none.sock "
        "(start dockerd, or point DOCKER_HOST at one)\n"
    )
