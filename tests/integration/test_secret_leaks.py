"""No secret in plain sight (issue 16): the whole stack runs (`tradeops up`, every service as its own
Redis user, the live-gateway trading on the local exchange's REST API with its generated key pair),
operators use it, a service fails with a traceback; then every log, every output and every place
a process shows itself is collected, and no secret value may appear in any of it.

Scanned: the CLI's stdout and stderr (up, ps, ps --json, health, health --json, redis status,
redis acl, redis acl check, inventory, alerts, order submit --wait, risk kill on/status, positions,
compose and the file it writes, a login with a wrong password), every file under the data dir's
logs/ (the services', the exchange's, the supervisor's, with the tracebacks of a service refused a
command), the Redis server's log, the instance table and exchange.json, every heartbeat (the
`health:*` hashes and ops.health), the ACL LOG, the console's snapshot, and the command line and
environment of every process of the stack (what `ps e` shows). The secrets: every file under the
data dir's secrets/ (the 20 Redis passwords, the exchange's API key and secret)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import msgspec
import pytest

from backend.bus import codec, connection, embedded, streams
from backend.messages import Heartbeat
from backend.runtime.supervisor import read_table
from backend.settings import Settings
from tests.conftest import TRADEOPS, wait_for
from tests.keys import Keys

CONFIG = """
[services.live-gateway]
venue = "rest"
"""


def _pids_of_stack(data: Path) -> list[int]:
    table = read_table(data) or {}
    pids = [int(i["pid"]) for i in table.get("instances", []) if i.get("pid")]
    if table.get("supervisor_pid"):
        pids.append(int(table["supervisor_pid"]))
    info = embedded.read_info(data)
    if info is not None:
        pids.append(info.pid)
    return pids


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_no_secret_appears_in_any_log_output_heartbeat_or_process(tmp_path: Path, keys: Keys) -> None:
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOPS_")}
    env.update(
        TRADEOPS_DATA_DIR=str(data), TRADEOPS_CONFIG=str(config), PYTHONUNBUFFERED="1", TRADEOPS_OPERATOR="leak-test"
    )
    outputs: list[str] = []

    def cli(*args: str, ok: bool = True, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            TRADEOPS + list(args),
            capture_output=True,
            text=True,
            env={**env, **(extra or {})},
            timeout=240,
            check=False,
        )
        outputs.append(f"$ tradeops {' '.join(args)}\n{out.stdout}\n{out.stderr}")
        if ok:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    try:
        cli("up", "--rate", "200")
        admin = connection.client(connection.require_url(None, data), connection.admin_login(data_dir=data))
        cli("ps")
        cli("ps", "--json")
        cli("health")
        cli("health", "--json")
        cli("redis", "status")
        cli("redis", "acl")
        cli("redis", "acl", "check")
        cli("inventory")
        out = cli("order", "submit", "buy", "0.01", "BTCUSDT", "--wait", "30")
        assert "FILLED" in out.stdout  # through the REST venue: signed with the exchange's secret
        signed = {"TRADEOPS_SIGNING_KEY": str(keys.path("leak-test"))}  # toggles are signed by a registered key
        cli("operators", "init", extra=signed)
        cli("risk", "kill", "on", "--reason", "leak test", extra=signed)
        cli("risk", "kill", "status")
        cli("positions")
        compose_file = tmp_path / "compose.yml"
        cli("compose", "-o", str(compose_file))
        outputs.append(compose_file.read_text())
        # a login that fails, and a service refused a command: its traceback goes to its log
        wrong = cli(
            "health", ok=False, extra={"TRADEOPS_REDIS_USER": "operator", "TRADEOPS_REDIS_PASSWORD": "not-the-password"}
        )
        assert wrong.returncode == 1 and "invalid username-password pair" in wrong.stderr, wrong.stderr
        admin.execute_command("ACL", "SETUSER", "feast-pipeline", "clearselectors")
        log = data / "logs" / "feast-pipeline-legacy.log"
        wait_for(lambda: log.exists() and "NOPERM" in log.read_text(), 60, what="feast-pipeline refused")
        wait_for(lambda: "Traceback" in log.read_text(), 30, what="the refusal's traceback in its log")
        cli("redis", "acl", "apply")
        wait_for(lambda: "alerting" in cli("alerts").stdout, 30, what="the ACL denial alert")

        # what the console shows
        from console.data.live import LiveSource

        src = LiveSource(connection.require_url(None, data), Settings(data_dir=str(data)), "leak-test")
        try:
            outputs.append(repr(msgspec.to_builtins(src.poll(), builtin_types=(bytes,), str_keys=True)))
        finally:
            src.close()
        # the heartbeats, the ACL log
        for k in admin.scan_iter(match="health:*"):
            outputs.append(repr(admin.hgetall(k)))
        for _, f in admin.xrange(streams.OPS_HEALTH):
            outputs.append(repr(msgspec.to_builtins(codec.decode(codec.payload(f), Heartbeat))))
        outputs.append(repr(admin.execute_command("ACL", "LOG", 128)))
        # every process of the stack as `ps e` shows it: command line and environment
        pids = _pids_of_stack(data)
        assert len(pids) >= 20
        for pid in pids:
            for what in ("cmdline", "environ"):
                with contextlib.suppress(OSError):  # a process that ended meanwhile
                    raw = Path(f"/proc/{pid}/{what}").read_bytes()
                    outputs.append(raw.replace(b"\0", b" ").decode(errors="replace"))
        admin.close()
    finally:
        cli("down", ok=False)
    # every log the stack wrote, the Redis server's, the instance table, exchange.json
    files = [p for p in (data / "logs").rglob("*") if p.is_file()]
    files += [data / "redis" / "redis.log", data / "exchange.json"]
    files += [p for p in (data / "reports").rglob("*") if p.is_file()] if (data / "reports").exists() else []
    for p in files:
        if p.exists():
            outputs.append(p.read_text(errors="replace"))
    text = "\n".join(outputs)
    assert "Traceback" in text and "NOPERM" in text  # the scan saw the failure it was meant to see

    found = sorted(p for p in (data / "secrets").rglob("*") if p.is_file())
    values = {p.relative_to(data / "secrets").as_posix(): p.read_text() for p in found}
    assert len([v for v in values if v.startswith("redis/")]) == 20
    assert {"exchange/api-key", "exchange/api-secret"} <= set(values)
    leaked = {name for name, v in values.items() if v and v in text}
    assert not leaked, f"secrets in plain sight: {sorted(leaked)}"
