"""`tradeops compose`: every service runs one instance with a fixed name, started by the services'
own entry point (`python -m backend.services`, not the console's `tradeops`), and its health check
is the standard-library one of the production image (no redis-cli there). The command and the
health check written for a service are run as they are, against the real Redis: the instance
heartbeats under the name the health check asks about."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from backend.migration import inventory
from backend.migration.compose import compose
from tests.conftest import wait_for


def _service_block(text: str, name: str) -> str:
    m = re.search(rf"^  {re.escape(name)}:\n((?:    .*\n)+)", text, re.M)
    assert m, f"no service {name} in the compose file"
    return m.group(1)


def _list(block: str, key: str) -> list[str]:
    m = re.search(rf"^\s+{key}: (\[.*\])$", block, re.M)
    assert m, f"no {key}"
    return json.loads(m.group(1))


def test_every_service_has_a_fixed_instance_and_the_images_health_check() -> None:
    text = compose("tradeops:1.0")
    assert "redis-cli" not in text.split("\n  normalizer:")[1]  # only the redis image's own check uses it
    for s in inventory.load().services:
        block = _service_block(text, s.name)
        # the image's entrypoint (`tradeops`) is replaced by the services' own
        assert _list(block, "entrypoint") == ["python", "-m", "backend.services"]
        assert _list(block, "command") == [s.name, "--instance", f"{s.name}-target", "--environment", "target"]
        assert _list(block, "test") == [
            "CMD",
            "python",
            "-m",
            "backend.runtime.healthcheck",
            s.name,
            f"{s.name}-target",
        ]


def test_the_written_command_and_health_check_agree_on_real_redis(redis_url: str, tmp_path: Path) -> None:
    block = _service_block(compose(), "refdata")
    env = {**os.environ, "TRADEOPS_REDIS_URL": redis_url, "TRADEOPS_DATA_DIR": str(tmp_path)}
    check = [sys.executable if a == "python" else a for a in _list(block, "test")[1:]]

    def healthy() -> bool:
        return subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0

    assert not healthy()  # nothing runs yet
    start = [sys.executable if a == "python" else a for a in _list(block, "entrypoint") + _list(block, "command")]
    proc = subprocess.Popen(start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(healthy, timeout=60, interval=0.2, what="the compose health check to pass")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_secrets_are_docker_secret_files_never_values(tmp_path: Path) -> None:
    """Each service logs in as its own Redis user with its password file (a Docker secret), the
    gateways get the venue's key pair the same way, Redis starts with the generated users; the file
    holds paths, no value; the backend lane is internal."""
    data = tmp_path / "data"
    out = subprocess.run(
        [sys.executable, "-m", "console.cli", "--data-dir", str(data), "compose", "-o", str(tmp_path / "c.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "c.yml").read_text()
    store = data / "secrets"
    assert "Docker secrets are files in" in out.stdout and str(store) in out.stdout
    values = [p.read_text() for p in (store / "redis").iterdir()]
    assert len(values) == 20 and not any(v in text or v in out.stdout for v in values)
    acl_file = (store / "redis.acl").read_text()
    assert "user default off" in acl_file and not any(v in acl_file for v in values)
    redis_block = _service_block(text, "redis")
    assert _list(redis_block, "command")[-2:] == ["--aclfile", "/run/secrets/redis-acl"]
    assert "    secrets: [redis-acl]\n" in redis_block
    for s in inventory.load().services:
        block = _service_block(text, s.name)
        assert f'TRADEOPS_REDIS_USER: "{s.name}"' in block
        assert f'TRADEOPS_REDIS_PASSWORD_FILE: "/run/secrets/redis-{s.name}"' in block
        # the sinks' S3 credentials are optional secrets: mounted only when their files are there (S3
        # configured), which they are not here
        venue = {
            "gateway": ["exchange-api-key"],
            "live-gateway": ["exchange-api-key", "exchange-api-secret"],
        }
        want = [f"redis-{s.name}", *venue.get(s.name, [])]
        m = re.search(r"^\s+secrets: \[(.*)\]$", block, re.M)
        assert m is not None and m.group(1).split(", ") == want
        assert f'  redis-{s.name}:\n    file: "{store}/redis/{s.name}"' in text
        assert "PASSWORD:" not in block and "API_KEY:" not in block  # only the _FILE variables
    assert 'TRADEOPS_EXCHANGE_API_KEY_FILE: "/run/secrets/exchange-api-key"' in _service_block(text, "gateway")
    assert f'  exchange-api-secret:\n    file: "{store}/exchange/api-secret"' in text
    assert "  backend:\n    driver: bridge\n    internal: true" in text
    assert "  frontend:\n    driver: bridge\n  " in text


def test_every_service_shares_a_lane_with_redis_and_starts_after_what_it_needs() -> None:
    """The lanes are the inventory's CPGS lanes; Redis, the bus, is on every lane a service is on (a
    frontend-only service such as marketplace reaches it too); depends_on is what a service needs at
    run time (its `needs`), not its migration order."""
    text = compose()

    def names(block: str, key: str) -> list[str]:  # a YAML flow list of plain names: [a, b]
        m = re.search(rf"^\s+{key}: \[(.*)\]$", block, re.M)
        assert m, f"no {key}"
        return m.group(1).split(", ")

    redis_lanes = set(names(_service_block(text, "redis"), "networks"))
    assert redis_lanes == {"frontend", "lowlatency", "backend"}
    for s in inventory.load().services:
        block = _service_block(text, s.name)
        assert names(block, "networks") == s.lanes and set(s.lanes) & redis_lanes, s.name
        assert names(block, "depends_on") == ["redis", *s.needs], s.name
    assert names(_service_block(text, "marketplace"), "networks") == ["frontend"]
