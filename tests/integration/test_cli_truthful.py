"""Exit codes and messages that tell the truth (issue 19's walkthrough): a denied order is a
failure; an unknown symbol, an unknown or finished order to cancel are refused before anything is
sent; `ps` checks the Redis it is given; a misspelt keymap id or service key is an error at start;
an empty inventory is not "ok"; a refused migration move names the next command; a rollback under
a service that stays migrated warns; `migrate status` cuts nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import redis

from backend.bus import codec, embedded, streams
from backend.messages import Heartbeat, OrderEvent
from backend.migration.state import ServiceState, dependents_moved
from backend.runtime.stack import health_text
from backend.runtime.supervisor import table_path
from tests.conftest import TRADEOPS


def run(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(TRADEOPS + args, capture_output=True, text=True, env=env, timeout=60, **kw)


def _event(coid: str, state: str, reason: str = "") -> OrderEvent:
    return OrderEvent(
        client_order_id=coid,
        account="paper-1",
        symbol="BTCUSDT",
        side="buy",
        quantity=1.0,
        limit_price=None,
        state=state,  # type: ignore[arg-type]
        reason=reason,
        ts_ns=1,
    )


def test_orders_say_what_happened(tradeops_env: dict[str, str], r: redis.Redis) -> None:
    r.xadd(streams.ORDERS_EVENTS, codec.fields(_event("denied-1", "DENIED", "max_quantity: 1 > 0.5")))
    res = run(["order", "submit", "buy", "1", "BTCUSDT", "--id", "denied-1", "--wait", "10"], tradeops_env)
    assert res.returncode == 1, res
    assert "tradeops: error: denied-1 DENIED: max_quantity: 1 > 0.5" in res.stderr and "Traceback" not in res.stderr

    res = run(["order", "submit", "buy", "1", "NOSUCHUSDT"], tradeops_env)
    assert res.returncode == 1 and "unknown symbol 'NOSUCHUSDT': the instrument master lists ADAUSDT" in res.stderr
    sent = r.xlen(streams.ORDERS_NEW)

    res = run(["order", "cancel", "nosuchid"], tradeops_env)
    assert res.returncode == 1 and "no order 'nosuchid': nothing to cancel" in res.stderr
    r.xadd(streams.ORDERS_EVENTS, codec.fields(_event("done-1", "FILLED")))
    res = run(["order", "cancel", "done-1"], tradeops_env)
    assert res.returncode == 1 and "done-1 is FILLED: nothing left to cancel" in res.stderr
    assert r.xlen(streams.ORDERS_NEW) == sent  # nothing sent for any of them
    r.xadd(streams.ORDERS_EVENTS, codec.fields(_event("open-1", "NEW")))
    res = run(["order", "cancel", "open-1"], tradeops_env)
    assert res.returncode == 0 and "cancel sent for open-1 (NEW)" in res.stdout
    assert r.xlen(streams.ORDERS_NEW) == sent + 1


def test_ps_checks_the_redis_it_is_given(tradeops_env: dict[str, str], redis_url: str) -> None:
    data = Path(tradeops_env["TRADEOPS_DATA_DIR"])
    table_path(data).parent.mkdir(parents=True, exist_ok=True)
    table_path(data).write_text(json.dumps({"supervisor_pid": 0, "redis_url": redis_url, "instances": []}))
    env = {k: v for k, v in tradeops_env.items() if k != "TRADEOPS_REDIS_URL"}
    for url, why in (
        (f"redis://127.0.0.1:{embedded.free_port()}", "cannot reach Redis at redis://127.0.0.1:"),
        ("notaurl", "cannot reach Redis at notaurl"),
        (redis_url.rsplit("/", 1)[0] + "/5", f"the stack of {data} runs on"),
    ):
        res = run(["ps", "--redis-url", url], env)
        assert res.returncode == 1 and why in res.stderr and res.stderr.count("\n") == 1, (url, res.stderr)
    assert run(["ps", "--redis-url", redis_url], env).returncode == 0
    assert run(["ps"], env).returncode == 0
    table_path(data).unlink()  # no stack: said as before, once the Redis named answers
    res = run(["ps", "--redis-url", redis_url], env)
    assert res.returncode == 0 and "no stack running for" in res.stdout


def test_ps_says_when_docker_and_the_heartbeat_disagree() -> None:
    beat = Heartbeat(
        service="risk", instance="risk-target", environment="target", state="running", ts_ns=1, started_ns=1, pid=1
    )
    docker_row = {"service": "risk", "engine_health": "unhealthy"}
    assert health_text(docker_row, beat) == (
        "running (Docker: unhealthy, but the heartbeat is fresh: its health check failed or timed out)"
    )
    assert health_text({"service": "risk", "engine_health": "healthy"}, beat) == "running (healthy)"
    assert health_text(docker_row, None) == "no heartbeat (unhealthy)"
    assert health_text({"service": "risk"}, None, "Connection refused") == (
        "unknown: the stack's Redis does not answer (Connection refused)"
    )


def test_misspelt_config_is_an_error_at_start(tradeops_env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[keymap]\n"screen.ordrs" = "o"\n')
    res = run(["--config", str(cfg), "console"], tradeops_env)
    assert res.returncode == 1
    assert "[keymap]: no key binding has the id 'screen.ordrs' (did you mean 'screen.orders'?)" in res.stderr
    env = {k: v for k, v in tradeops_env.items() if k != "TRADEOPS_REDIS_URL"}  # `up` would start one
    cfg.write_text("[services.sink-ticks]\nflush_ss = 1.0\n")
    res = run(["--config", str(cfg), "up"], env)
    assert res.returncode == 1 and "[services.sink-ticks]" in res.stderr and "flush_ss" in res.stderr, res.stderr
    cfg.write_text("[services.sink-tick]\nflush_s = 1.0\n")
    res = run(["--config", str(cfg), "up"], env)
    assert res.returncode == 1 and "there is no service 'sink-tick' (did you mean [services.sink-ticks]?)" in res.stderr
    assert not table_path(Path(env["TRADEOPS_DATA_DIR"])).exists()  # nothing was started


def test_an_empty_inventory_does_not_check_ok(tradeops_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    res = run(["inventory", "check", str(empty)], tradeops_env)
    assert res.returncode == 1 and "no [[service]] entries" in res.stderr


def test_a_rollback_names_the_services_it_leaves_moved() -> None:
    states = {n: ServiceState(n, 3, s) for n, s in (("risk", "migrated"), ("oms", "migrated"), ("ptrc", "planned"))}
    assert dependents_moved(states, "risk") == ["oms"]
    states["oms"].state = "rolled_back"
    assert dependents_moved(states, "risk") == []


def test_migrate_status_wraps_what_blocks_instead_of_cutting_it(tradeops_env: dict[str, str]) -> None:
    rows = json.loads(run(["migrate", "status", "--json"], tradeops_env).stdout)
    most = max(rows, key=lambda row: len("; ".join(row["blocked_by"])))
    assert len("; ".join(most["blocked_by"])) > 70  # what used to be cut at 70 characters
    table = run(["migrate", "status"], tradeops_env).stdout
    for why in most["blocked_by"]:  # each blocker whole, on a line of its own
        assert any(line.rstrip().endswith(why) for line in table.splitlines()), why
