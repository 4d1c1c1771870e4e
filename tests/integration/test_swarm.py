"""`tradeops deploy swarm` end to end on a one-node swarm of the session's own dockerd
(tests/dockerd.py: `--iptables=false --bridge=none --storage-driver=vfs`) and the local image
(`docker import`, the host's Python, venv and source bind-mounted): the stack converges (every
service n/n, heartbeats in the stack's own Redis, each service logged in as its own user over the
lane overlays), a blue/green cutover of one service between its legacy and target swarm
services, and the stack removed. Skipped, with the reason, when no dockerd or docker CLI is here."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backend.bus import connection
from backend.deploy.swarm import GWBRIDGE, Swarm
from backend.messages import GateEvent
from backend.migration.cutover import cutover
from backend.migration.state import move
from gates import audit
from tests.conftest import TRADEOPS, wait_for

STACK = "tradeops-test"


def docker(host: str, *args: str) -> str:
    out = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, env={**os.environ, "DOCKER_HOST": host}
    )
    assert out.returncode == 0, f"docker {' '.join(args)}: {out.stderr}"
    return out.stdout


def free_udp_port() -> int:
    """A UDP port in the range a swarm's data path may use (1024-49151) that nothing holds."""
    for port in random.sample(range(20000, 49151), 50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    pytest.fail("no free UDP port for the swarm's VXLAN")


@pytest.fixture(scope="module")
def swarm_engine(docker_engine: str) -> Iterator[str]:
    """The session's engine as a one-node swarm manager; it leaves the swarm afterwards. Its
    `docker_gwbridge` is made first under a bridge name of its own and its overlays use a UDP port
    of their own, so it never meets another engine's on this machine."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI on PATH (`apt-get install docker.io`): `docker stack deploy` needs it")
    bridge = "tgw" + docker_engine.rsplit("-", 1)[-1].split("/")[0][:8]
    docker(
        docker_engine,
        "network",
        "create",
        "--driver",
        "bridge",
        "--opt",
        f"com.docker.network.bridge.name={bridge}",
        "--opt",
        "com.docker.network.bridge.enable_icc=false",
        "--opt",
        "com.docker.network.bridge.enable_ip_masquerade=true",
        GWBRIDGE,
    )
    vxlan = free_udp_port()  # its overlays' VXLAN port: not another swarm's 4789
    docker(docker_engine, "swarm", "init", "--advertise-addr", "127.0.0.1", "--data-path-port", str(vxlan))
    yield docker_engine
    docker(docker_engine, "swarm", "leave", "--force")
    docker(docker_engine, "network", "rm", GWBRIDGE)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_deploy_converge_cut_over_and_remove_a_stack(swarm_engine: str, local_image: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "DOCKER_HOST": swarm_engine}

    def tradeops(*args: str) -> str:
        out = subprocess.run(
            [*TRADEOPS, "--data-dir", str(data), "deploy", "swarm", "--stack", STACK, *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    services = ["normalizer", "sink-alt"]  # low-latency + backend; backend only (an internal overlay)
    # deployed, waited for, then following the migration board (the operator's blue/green)
    watcher = subprocess.Popen(
        [
            *TRADEOPS,
            "--data-dir",
            str(data),
            "deploy",
            "swarm",
            "--stack",
            STACK,
            "--services",
            ",".join(services),
            "--replicas",
            "sink-alt=2",
            "--image",
            local_image,
            "--wait",
            "240",
            "--health-interval",
            "1",
            "--watch",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    assert watcher.stdout is not None
    shown = ""
    while not shown.endswith("following the migration board (Ctrl-C stops following; the stack keeps running)\n"):
        line = watcher.stdout.readline()
        assert line, f"deploy swarm --watch ended: {shown}{watcher.communicate()[1]}"
        shown += line
    sw = Swarm(STACK, swarm_engine)
    rows = sw.services()
    assert {n: (r["running"], r["desired"]) for n, r in rows.items()} == {
        "redis": (1, 1),
        "normalizer-legacy": (1, 1),
        "normalizer-target": (0, 0),
        "sink-alt-legacy": (2, 2),
        "sink-alt-target": (0, 0),
    }
    assert f"{STACK}_sink-alt-legacy     replicated   2/2" in shown
    print(shown)  # the report's `docker service ls`

    # what the stack file made: lane overlays (backend internal), health check, start-first, secrets
    nets = docker(swarm_engine, "network", "ls", "--filter", "driver=overlay", "--format", "{{.Name}}").split()
    assert {f"{STACK}_lowlatency", f"{STACK}_backend"} <= set(nets)
    assert docker(swarm_engine, "network", "inspect", f"{STACK}_backend", "--format", "{{.Internal}}").strip() == "true"
    (spec,) = json.loads(docker(swarm_engine, "service", "inspect", f"{STACK}_sink-alt-legacy"))
    task = spec["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert task["Healthcheck"]["Test"] == ["CMD", "python", "-m", "backend.runtime.healthcheck", "sink-alt"]
    assert spec["Spec"]["UpdateConfig"]["Order"] == "start-first"
    assert [s["SecretName"] for s in task["Secrets"]] == [f"{STACK}_redis-sink-alt"]
    assert "TRADEOPS_REDIS_PASSWORD_FILE=/run/secrets/redis-sink-alt" in task["Env"]
    stack_text = (data / "deploy" / "swarm-stack.yml").read_text()
    values = [p.read_text() for p in (data / "secrets" / "redis").iterdir()]
    assert values and not any(v in stack_text or v in shown or v in json.dumps(spec) for v in values)

    # heartbeats in the stack's Redis (reached through this node's gwbridge), each as its own user
    url = sw.redis_url()
    assert url is not None and f"the stack's Redis from this node: {url}" in shown
    r = connection.client(url, connection.admin_login(data_dir=data), socket_timeout=5)

    def state(instance: str) -> bytes | None:
        return r.hget(f"health:{instance.rsplit('-', 2)[0]}:{instance}", "state")

    for inst in ("normalizer-legacy-1", "sink-alt-legacy-1", "sink-alt-legacy-2"):  # an instance per task slot
        wait_for(lambda inst=inst: state(inst) == b"running", 60, interval=0.2, what=f"{inst}'s heartbeat")
    users = {ln.split(" user=")[1].split()[0] for ln in r.execute_command("CLIENT", "LIST").decode().splitlines()}
    assert set(services) <= users and r.execute_command("ACL", "LOG") == []

    # blue/green on the swarm: the board's moves scale the target up and the legacy service down
    try:
        opened = GateEvent(gate="phase1", kind="decision", operator="lee", ts_ns=0, decision="proceed", reason="ok")
        audit.append(r, opened)
        move(r, "normalizer", "start", "ann", "blue/green on the swarm")
        assert watcher.poll() is None, f"deploy swarm --watch ended: {watcher.communicate()[1]}"
        result = cutover(r, "normalizer", "ann", "target healthy", timeout=120)
        assert result.incoming == ["normalizer-target-1"] and result.drained == ["normalizer-legacy-1"]
        assert not result.vanished  # drained: its final heartbeat said stopped
        print(result.summary())
        wait_for(
            lambda: (
                {n: (x["running"], x["desired"]) for n, x in sw.services().items() if n.startswith("normalizer")}
                == {"normalizer-legacy": (0, 0), "normalizer-target": (1, 1)}
            ),
            120,
            interval=0.5,
            what="the legacy service scaled to 0 and the target's one task running",
        )
        assert state("normalizer-legacy-1") == b"stopped" and state("normalizer-target-1") == b"running"
        print(sw.service_ls())
    finally:
        watcher.terminate()  # stops following; the stack keeps running
        _, err = watcher.communicate(timeout=30)
        r.close()
    assert watcher.returncode == 0, err
    assert sw.services()["normalizer-target"]["running"] == 1

    removed = tradeops("--remove")
    assert removed.startswith(f"removed stack {STACK}: normalizer-legacy, normalizer-target, redis, sink-alt-legacy")
    assert sw.services() == {}
    assert docker(swarm_engine, "ps", "-aq").strip() == ""


def test_the_instance_comes_from_the_environment(r: redis.Redis, redis_url: str) -> None:
    """A swarm task or a pod names its instance in TRADEOPS_INSTANCE: the service runs as it and the
    health check (no INSTANCE argument, as the stack file and the manifests give it) looks at it."""
    from backend.services.run import add_arguments

    env = {**os.environ, "TRADEOPS_REDIS_URL": redis_url, "TRADEOPS_INSTANCE": "risk-target-2"}
    check = [sys.executable, "-m", "backend.runtime.healthcheck", "risk"]
    r.hset("health:risk:risk-target-2", mapping={"state": "running", "ts_ns": time.time_ns()})
    assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0
    r.hset("health:risk:risk-target-2", "state", "stopped")
    res = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stderr == "risk-target-2 is stopped\n"
    res = subprocess.run(check, env={**env, "TRADEOPS_INSTANCE": ""}, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stderr == "no INSTANCE given and TRADEOPS_INSTANCE is not set\n"
    old = os.environ.get("TRADEOPS_INSTANCE")
    os.environ["TRADEOPS_INSTANCE"] = "risk-target-2"
    try:
        p = argparse.ArgumentParser()
        add_arguments(p)
        assert p.parse_args(["risk"]).instance == "risk-target-2"
        assert p.parse_args(["risk", "--instance", "x"]).instance == "x"
    finally:
        if old is None:
            os.environ.pop("TRADEOPS_INSTANCE")
        else:
            os.environ["TRADEOPS_INSTANCE"] = old


def test_no_engine_is_one_clear_line_and_the_file_is_written_without_one(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    base = [*TRADEOPS, "--data-dir", str(tmp_path / "data"), "deploy", "swarm", "--services", "risk"]
    out = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1 and out.stderr == (
        f"tradeops: error: no Docker engine reachable at unix://{tmp_path}/none.sock "
        "(start dockerd, or point DOCKER_HOST at one)\n"
    )
    stack = tmp_path / "stack.yml"
    out = subprocess.run(
        [*base, "--image", "tradeops:1.0", "--no-deploy", "-o", str(stack)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "image: tradeops:1.0" in stack.read_text() and "risk-target:" in stack.read_text()
