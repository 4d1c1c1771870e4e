"""The docker runtime end to end, on the session's own dockerd (tests/dockerd.py) and the local
image: a real service in a container against the test Redis, listed, converged on the migration
state (blue/green), restarted by the engine after a crash, stopped; labels, health check, restart
policy and lane networks as designed; `tradeops up/ps/down --runtime docker`; one clear line when
no engine answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from backend.bus import embedded, streams
from backend.messages import GateEvent
from backend.migration.state import move
from backend.runtime import healthcheck
from backend.runtime.docker import DockerSupervisor, lane_network, stack_id
from backend.runtime.image import LOCAL_IMAGE
from gates import audit
from tests.conftest import TRADEOPS, wait_for

docker_lib = pytest.importorskip("docker")


def run(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(TRADEOPS + args, capture_output=True, text=True, env=env, timeout=timeout)


def engine_client(host: str) -> Any:
    return docker_lib.DockerClient(base_url=host, version="auto")


def containers_of(client: Any, data_dir: Path) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"tradeops.stack={stack_id(data_dir)}"})


def state(r: redis.Redis, service: str, instance: str) -> bytes | None:
    return r.hget(f"health:{service}:{instance}", "state")


def healthy_container(sup: DockerSupervisor, instance: str) -> bool:
    sup.check_children()  # the supervisor's poll: what the engine says of each container
    return sup.instances[instance].handle.describe()["engine_health"] == "healthy"


def unlock_risk(r: redis.Redis) -> None:
    """risk may start: the gates before P1..P3 passed, its dependencies migrated (events only)."""
    for gate in ("phase1", "task02", "task03"):
        audit.append(r, GateEvent(gate=gate, kind="decision", operator="lee", ts_ns=0, decision="proceed", reason="ok"))
    for svc in ("normalizer", "live-gateway"):
        move(r, svc, "start", "ann", "dep")
        move(r, svc, "cutover", "ann", "dep")


@pytest.fixture
def supervisor(docker_engine: str, local_image: str, redis_url: str, tmp_path: Path) -> Iterator[DockerSupervisor]:
    sup = DockerSupervisor(
        redis_url,
        tmp_path / "data",
        with_exchange=False,
        docker_host=docker_engine,
        image=local_image,
        network="host",
        health_interval_s=1.0,
    )
    sup.services = ["risk"]  # one cheap service shows the mechanism
    yield sup
    sup.shutdown()


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_runs_a_service_in_a_container_lists_and_stops_it(
    supervisor: DockerSupervisor, r: redis.Redis, docker_engine: str, tradeops_env: dict[str, str]
) -> None:
    sup = supervisor
    data_dir = sup.data_dir
    sup.reconcile()
    assert set(sup.instances) == {"risk-legacy"}
    wait_for(lambda: state(r, "risk", "risk-legacy") == b"running", 30, what="risk-legacy heartbeat")
    wait_for(lambda: healthy_container(sup, "risk-legacy"), 60, interval=0.2, what="the engine's health check")

    # `tradeops ps` in another process reads the table: the container, not a pid
    env = {**tradeops_env, "TRADEOPS_DATA_DIR": str(data_dir), "DOCKER_HOST": docker_engine}
    out = run(["ps", "--json"], env)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    name = f"tradeops-risk-legacy-{stack_id(data_dir)}"
    assert row["runtime"] == "docker" and row["container"] == name and row["pid"] is None
    assert row["environment"] == "legacy" and row["health"] == "running (healthy)"
    table = run(["ps"], env).stdout
    assert name in table and "running (healthy)" in table

    # labels, health check, restart policy, host network, read-only mounts: as designed
    client = engine_client(docker_engine)
    (c,) = containers_of(client, data_dir)
    assert c.name == name
    assert {
        k: v
        for k, v in c.labels.items()
        if k in ("tradeops.service", "tradeops.environment", "tradeops.priority", "tradeops.lanes", "tradeops.instance")
    } == {
        "tradeops.service": "risk",
        "tradeops.environment": "legacy",
        "tradeops.priority": "3",
        "tradeops.lanes": "lowlatency",
        "tradeops.instance": "risk-legacy",
    }
    host_config = c.attrs["HostConfig"]
    assert host_config["RestartPolicy"]["Name"] == "on-failure"
    assert host_config["NetworkMode"] == "host"
    assert c.attrs["Config"]["Healthcheck"]["Test"] == [
        "CMD",
        "python",
        "-m",
        "backend.runtime.healthcheck",
        "risk",
        "risk-legacy",
    ]
    mounts = {m["Destination"]: m["RW"] for m in c.attrs["Mounts"]}
    assert mounts.pop(str(data_dir.resolve())) is True and mounts and not any(mounts.values())
    for lane in ("frontend", "lowlatency", "backend"):
        (net,) = client.networks.list(names=[lane_network(lane)])
        assert net.attrs["Driver"] == "bridge" and net.attrs["Labels"]["tradeops.lane"] == lane

    # converges on the migration state: blue/green, then the legacy container drains and goes
    unlock_risk(r)
    move(r, "risk", "start", "ann", "blue/green")
    sup.reconcile()
    assert set(sup.instances) == {"risk-legacy", "risk-target"}
    wait_for(lambda: state(r, "risk", "risk-target") == b"running", 30, what="risk-target heartbeat")
    move(r, "risk", "cutover", "ann", "target healthy")
    sup.reconcile()
    assert set(sup.instances) == {"risk-target"}
    assert state(r, "risk", "risk-legacy") == b"stopped"  # drained: its last heartbeat says so
    assert [x.labels["tradeops.environment"] for x in containers_of(client, data_dir)] == ["target"]

    # stopped: the container is gone, the heartbeat says stopped, the table is gone
    sup.shutdown()
    assert containers_of(client, data_dir) == []
    assert state(r, "risk", "risk-target") == b"stopped"
    assert json.loads(run(["ps", "--json"], env).stdout) == []
    client.close()


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_the_engine_restarts_a_crashed_container(
    supervisor: DockerSupervisor, r: redis.Redis, docker_engine: str
) -> None:
    sup = supervisor
    sup.reconcile()
    wait_for(lambda: state(r, "risk", "risk-legacy") == b"running", 30, what="risk-legacy heartbeat")
    client = engine_client(docker_engine)
    c = client.containers.get(sup.instances["risk-legacy"].container)
    r.delete("health:risk:risk-legacy")
    os.kill(c.attrs["State"]["Pid"], signal.SIGKILL)  # a crash, not a stop: on-failure restarts it

    def restarted() -> bool:
        sup.check_children()
        return sup.instances["risk-legacy"].handle.describe()["engine_restarts"] == 1

    wait_for(restarted, 60, interval=0.2, what="the engine's restart")
    wait_for(lambda: state(r, "risk", "risk-legacy") == b"running", 30, what="heartbeat after the restart")
    assert sup.instances["risk-legacy"].restarts == 0  # the engine's restart, not the supervisor's
    assert client.containers.get(c.id).attrs["RestartCount"] == 1

    # a restart asked of the supervisor: drained, a new container under the same name
    sup.restart_instance("risk", "legacy")
    (row,) = sup.list_instances()
    assert row["restarts"] == 1 and row["container_id"] != c.id[:12] and row["container"] == c.name
    wait_for(lambda: state(r, "risk", "risk-legacy") == b"running", 30, what="heartbeat after the supervisor's restart")
    client.close()


@pytest.fixture
def lane_redis(docker_engine: str, tmp_path: Path) -> Iterator[str]:
    """A Redis the lane networks reach: listening on the backend lane's gateway address."""
    from backend.runtime.docker import connect_engine, ensure_lane_networks

    client = connect_engine(docker_engine)
    ensure_lane_networks(client)
    gateway = client.networks.get(lane_network("backend")).attrs["IPAM"]["Config"][0]["Gateway"]
    client.close()
    port = embedded.free_port()
    proc = subprocess.Popen(
        [
            embedded.server_binary(),
            "--bind",
            gateway,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://{gateway}:{port}/0"
    wait_for(lambda: _pings(url), 10, what=f"redis on {url}")
    yield url
    proc.terminate()
    proc.wait(10)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_lanes_mode_puts_each_service_on_its_lane_networks(
    docker_engine: str, local_image: str, lane_redis: str, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(lane_redis)
    sup = DockerSupervisor(
        lane_redis,
        tmp_path / "data",
        with_exchange=False,
        docker_host=docker_engine,
        image=local_image,
        network="lanes",
    )
    sup.services = ["normalizer", "risk"]  # lowlatency + backend; lowlatency only
    client = engine_client(docker_engine)
    try:
        sup.reconcile()
        for svc in sup.services:
            wait_for(
                lambda svc=svc: state(r, svc, f"{svc}-legacy") == b"running", 30, what=f"{svc} heartbeat over the lanes"
            )
        nets = {
            c.labels["tradeops.service"]: c.attrs["NetworkSettings"]["Networks"]
            for c in containers_of(client, sup.data_dir)
        }
        assert set(nets["normalizer"]) == {"tradeops-lowlatency", "tradeops-backend"}
        assert set(nets["risk"]) == {"tradeops-lowlatency"}
        assert "normalizer" in nets["normalizer"]["tradeops-backend"]["Aliases"]
    finally:
        sup.shutdown()
        client.close()
        r.close()
    assert state(redis.Redis.from_url(lane_redis), "risk", "risk-legacy") == b"stopped"


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_up_ps_down_with_the_docker_runtime(
    docker_engine: str, local_image: str, tradeops_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**tradeops_env, "DOCKER_HOST": docker_engine}
    out = run(["up", "--runtime", "docker"], env)
    try:
        assert out.returncode == 0, out.stderr
        assert f"{LOCAL_IMAGE} on {docker_engine}, network host" in out.stdout
        assert "checking the Docker engine" in out.stdout and "starting the supervisor" in out.stdout  # progress
        rows = json.loads(run(["ps", "--json"], env).stdout)
        services = {r["service"]: r for r in rows}
        assert services["exchange"]["pid"] and not services["exchange"]["container"]  # a host process
        containers = [r for r in rows if r["service"] != "exchange"]
        assert len(containers) >= 10 and all(r["container"] and r["health"].startswith("running") for r in containers)
    finally:
        down = run(["down"], env)
    assert down.returncode == 0, down.stderr
    client = engine_client(docker_engine)
    assert containers_of(client, Path(env["TRADEOPS_DATA_DIR"])) == []
    client.close()


def test_health_check_reads_the_heartbeat_hash(r: redis.Redis, redis_url: str) -> None:
    """The containers' health check (stdlib only) against the real Redis: fresh running, stale,
    stopped, absent; another db of the URL; the same key and TTL as the bus."""
    assert (healthcheck.HEALTH_KEY, healthcheck.HEALTH_TTL_S) == (streams.HEALTH_KEY, streams.HEALTH_TTL_S)
    key = "health:risk:risk-legacy"
    assert healthcheck.check(redis_url, "risk", "risk-legacy") == f"no heartbeat at {key}"
    r.hset(key, mapping={"state": "running", "ts_ns": time.time_ns()})
    assert healthcheck.check(redis_url, "risk", "risk-legacy") is None
    r.hset(key, "ts_ns", time.time_ns() - 60 * 10**9)
    assert healthcheck.check(redis_url, "risk", "risk-legacy").startswith("last heartbeat 60.")
    r.hset(key, "state", "stopped")
    assert healthcheck.check(redis_url, "risk", "risk-legacy") == "risk-legacy is stopped"
    other = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    other.hset(key, mapping={"state": "running", "ts_ns": time.time_ns()})
    assert healthcheck.check(redis_url.rsplit("/", 1)[0] + "/3", "risk", "risk-legacy") is None
    other.close()
    env = {**os.environ, "TRADEOPS_REDIS_URL": redis_url}
    res = subprocess.run(
        [sys.executable, "-m", "backend.runtime.healthcheck", "risk", "risk-legacy"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert res.returncode == 1 and res.stderr == "risk-legacy is stopped\n"


def test_no_engine_is_one_clear_line(
    tradeops_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from console.cli import main

    for k in ("TRADEOPS_REDIS_URL", "TRADEOPS_DATA_DIR"):
        monkeypatch.setenv(k, tradeops_env[k])
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    for args in (["up", "--runtime", "docker"], ["image", "build-local"]):
        assert main(args) == 1, args
        assert capsys.readouterr().err == (
            f"tradeops: error: no Docker engine reachable at "
            f"unix://{tmp_path}/none.sock "
            "(start dockerd, or point DOCKER_HOST at one)\n"
        )
    assert main(["up", "--image", "tradeops:latest"]) == 1
    assert capsys.readouterr().err == "tradeops: error: --image and --network are options of --runtime docker\n"
    with pytest.raises(SystemExit) as exc:
        main(["up", "--runtime", "kubernetes"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "invalid choice: 'kubernetes'" in err and "Traceback" not in err


@pytest.mark.docker
@pytest.mark.timeout(240)
def test_a_container_logs_in_as_its_service_with_its_secrets_as_files(
    docker_engine: str, local_image: str, tmp_path: Path
) -> None:
    """On a Redis with the generated users: each container is its service's user, its password and
    the secrets its service declares are read-only files under /run/secrets, the rest of the data
    dir's secrets is hidden, and no secret is in its environment, labels or command."""
    from backend.bus import acl, connection
    from backend.exchange.keys import local_pair

    data = tmp_path / "data"
    server = embedded.EmbeddedRedis(data, acl=True)
    url = server.start()
    local_pair(data)  # the local exchange's key pair, as its start leaves it
    admin = connection.client(url, connection.admin_login(data_dir=data))
    sup = DockerSupervisor(
        url,
        data,
        with_exchange=False,
        docker_host=docker_engine,
        image=local_image,
        network="host",
        health_interval_s=1.0,
    )
    sup.services = ["risk", "live-gateway"]
    client = engine_client(docker_engine)
    try:
        sup.reconcile()
        for svc in sup.services:
            wait_for(
                lambda svc=svc: state(admin, svc, f"{svc}-legacy") == b"running",
                60,
                what=f"{svc} running as its own user",
            )
            wait_for(
                lambda svc=svc: healthy_container(sup, f"{svc}-legacy"), 60, what=f"{svc}'s health check logged in"
            )
        clients = admin.execute_command("CLIENT", "LIST").decode().splitlines()
        users = {ln.split(" user=")[1].split()[0] for ln in clients if " user=" in ln}
        assert {"risk", "live-gateway"} <= users
        assert admin.execute_command("ACL", "LOG") == []
        values = {p.read_text() for p in (data / "secrets").rglob("*") if p.is_file()}
        assert len(values) == len(acl.accesses()) + 2
        for c in containers_of(client, data):
            svc = c.labels["tradeops.service"]
            env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
            assert env["TRADEOPS_REDIS_USER"] == svc
            assert env["TRADEOPS_REDIS_PASSWORD_FILE"] == f"/run/secrets/redis-{svc}"
            shown = json.dumps(
                [
                    c.attrs["Config"]["Env"],
                    c.attrs["Config"]["Labels"],
                    c.attrs["Config"]["Cmd"],
                    c.attrs["Config"]["Entrypoint"],
                    c.attrs["Args"],
                ]
            )
            assert not any(v in shown for v in values), f"a secret in {svc}'s container config"
            mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
            assert mounts[f"/run/secrets/redis-{svc}"]["RW"] is False
            assert mounts[f"/run/secrets/redis-{svc}"]["Source"] == str(data / "secrets" / "redis" / svc)
            assert mounts[str(data.resolve() / "secrets")]["Type"] == "tmpfs"
            if svc == "live-gateway":
                assert env["TRADEOPS_EXCHANGE_API_KEY_FILE"] == "/run/secrets/exchange/api-key"
                assert env["TRADEOPS_EXCHANGE_API_SECRET_FILE"] == "/run/secrets/exchange/api-secret"
                assert mounts["/run/secrets/exchange"]["RW"] is False
            else:
                assert "/run/secrets/exchange" not in mounts and "TRADEOPS_EXCHANGE_API_KEY_FILE" not in env
            seen = c.exec_run(["ls", "-A", str(data.resolve() / "secrets")]).output.decode().split()
            assert seen == []  # the other services' passwords are not there
    finally:
        sup.shutdown()
        client.close()
        admin.close()
        server.stop()


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_a_backend_only_service_cannot_reach_the_frontend_lane(docker_engine: str, local_image: str) -> None:
    """The lanes follow the inventory's CPGS lanes: a container on the backend lane only has no route
    to a port on the frontend lane, which a frontend container reaches."""
    from docker.types import Mount

    from backend.runtime.docker import connect_engine, ensure_lane_networks
    from backend.runtime.image import image_spec

    client = connect_engine(docker_engine)
    ensure_lane_networks(client)
    spec = image_spec(client, local_image)
    mounts = [Mount(target=p, source=p, type="bind", read_only=True) for p in spec.mounts]
    py = sys.executable
    server = client.containers.run(
        local_image,
        ["-m", "http.server", "8099"],
        entrypoint=[py],
        detach=True,
        mounts=mounts,
        network=lane_network("frontend"),
        name="tradeops-lane-test-frontend",
    )
    try:
        server.reload()
        ip = server.attrs["NetworkSettings"]["Networks"][lane_network("frontend")]["IPAddress"]
        probe = (
            "import socket,sys\n"
            "try:\n socket.create_connection((sys.argv[1], 8099), timeout=3).close(); print('reached')\n"
            "except OSError as e:\n print('unreachable', e)\n"
        )

        def connect(lane: str) -> str:
            out = client.containers.run(
                local_image, ["-c", probe, ip], entrypoint=[py], remove=True, mounts=mounts, network=lane_network(lane)
            )
            return out.decode().strip()

        wait_for(lambda: connect("frontend") == "reached", 30, interval=0.5, what="the frontend port from the frontend")
        got = connect("backend")
        assert got.startswith("unreachable"), got
        assert client.networks.get(lane_network("backend")).attrs["Internal"] is True
        assert client.networks.get(lane_network("frontend")).attrs["Internal"] is False
    finally:
        server.remove(force=True)
        client.close()
