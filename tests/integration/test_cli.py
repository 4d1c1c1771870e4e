"""The CLI as an operator runs it: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from backend.bus import embedded
from tests.conftest import TRADEOPS


def run(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(TRADEOPS + args, capture_output=True, text=True, env=env, timeout=60, **kw)


def test_version_and_help(tradeops_env) -> None:
    out = run(["version"], tradeops_env)
    assert out.returncode == 0 and out.stdout.startswith("tradeops ")
    for cmd in (["--help"], ["redis", "--help"], ["inventory", "--help"], ["service", "run", "--help"]):
        res = run(cmd, tradeops_env)
        assert res.returncode == 0, cmd
        assert "usage: tradeops" in res.stdout


def test_inventory_table_and_json(tradeops_env) -> None:
    out = run(["inventory"], tradeops_env)
    assert out.returncode == 0
    assert "normalizer" in out.stdout and "68 hours" in out.stdout and "vault" in out.stdout
    data = json.loads(run(["inventory", "--json"], tradeops_env).stdout)
    assert len(data["services"]) == 18 and len(data["infra"]) == 8
    for entry in data["services"]:
        assert {"name", "priority", "lanes", "needs", "migrate_after", "port", "risk", "hours"} <= set(entry)


def test_inventory_check(tradeops_env, tmp_path: Path) -> None:
    good = Path(__file__).parents[2] / "backend" / "migration" / "inventory.toml"
    assert run(["inventory", "check", str(good)], tradeops_env).returncode == 0
    bad = tmp_path / "bad.toml"
    text = good.read_text()
    bad.write_text(text.replace('migrate_after = ["risk", "live-gateway"]', 'migrate_after = ["risk", "ptrc"]'))
    res = run(["inventory", "check", str(bad)], tradeops_env)
    assert res.returncode == 1
    assert "service 'oms' (P3) is migrated after 'ptrc' (P4), a later priority" in res.stderr
    assert "Traceback" not in res.stderr
    res = run(["inventory", "check", str(tmp_path / "missing.toml")], tradeops_env)
    assert res.returncode == 1 and "cannot read" in res.stderr


@pytest.mark.parametrize(
    "args", [["bogus"], ["redis"], ["redis", "sideways"], ["inventory", "--nope"], ["service", "run"]]
)
def test_wrong_arguments_exit_2_with_usage(args, tradeops_env) -> None:
    res = run(args, tradeops_env)
    assert res.returncode == 2
    assert "usage:" in res.stderr and "Traceback" not in res.stderr


def test_unreachable_redis_exits_1_with_one_line(tradeops_env) -> None:
    env = dict(tradeops_env, TRADEOPS_REDIS_URL=f"redis://127.0.0.1:{embedded.free_port()}/0")
    res = run(["redis", "status"], env)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "cannot reach Redis at" in res.stderr


def test_unknown_service_and_bad_config(tradeops_env, tmp_path: Path) -> None:
    res = run(["service", "run", "nope"], tradeops_env)
    assert res.returncode == 1 and "unknown service 'nope'" in res.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text('redis_urll = "x"\n')
    res = run(["--config", str(cfg), "health"], tradeops_env)
    assert res.returncode == 1 and "unknown field `redis_urll`" in res.stderr


def test_redis_up_status_down(tmp_path: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRADEOPS_REDIS_URL"}
    env["TRADEOPS_DATA_DIR"] = str(tmp_path / "d")
    try:
        up = run(["redis", "up"], env)
        assert up.returncode == 0 and "redis up: redis://127.0.0.1:" in up.stdout
        st = run(["redis", "status"], env)
        assert st.returncode == 0 and "aof on" in st.stdout and "embedded" in st.stdout
        again = run(["redis", "up"], env)
        assert again.returncode == 1 and "is held by a live redis-server" in again.stderr
    finally:
        down = run(["redis", "down"], env)
    assert down.returncode == 0 and "redis down" in down.stdout
    st = run(["redis", "status"], env)
    assert st.returncode == 1 and "tradeops redis up" in st.stderr
