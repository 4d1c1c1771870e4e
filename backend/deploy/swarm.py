"""The deployment on Docker Swarm: a stack file generated from the inventory, deployed with
`docker stack deploy`, and the migration's blue/green between legacy and target on the swarm.

The stack file (`stack_file`):

- each service of the inventory is two swarm services, `<service>-legacy` and `<service>-target`
  (both in the service's consumer group, as under the process and docker runtimes), each with the
  inventory's `replicas` when the migration board wants that environment and 0 when it does not:
  legacy until the cutover, target from `start` (backend.migration.state.desired_instances);
- each replica is one instance, `<service>-<env>-<slot>` (TRADEOPS_INSTANCE, from the task's slot);
- one overlay network per CPGS lane, each service on its lanes; the backend lane is internal (no
  route out of it), as in the compose file and the docker runtime;
- secrets are Docker secrets, files under /run/secrets: each service's Redis password and what its
  class declares, named by the `*_FILE` variables (backend.runtime.secretfiles); Redis starts with
  the generated users' ACL file (hashes only). No value is in the stack file;
- the health check is the heartbeat's (backend.runtime.healthcheck, standard library only); the
  update policy is start-first (the new task healthy before the old one stops), one at a time,
  rolled back on failure; a stopped task gets `STOP_GRACE` to drain;
- the bus's Redis is a service of the stack on its inventory lanes with the embedded server's
  settings (`workload.redis_args`) and a volume, its name resolving to its task (`dnsrr`: no
  virtual IP, which needs the engine's iptables and IPVS rules), or an external one (`redis_url`).

The image: a production image (`docker build`), or the local one (`docker import`,
backend.runtime.image) whose interpreter, venv and source are bind-mounted read-only from the host,
which is what a one-node swarm here runs (`--resolve-image never`: no registry is asked).

Blue/green (`Swarm.converge`, `Swarm.watch`): the migration board is read and each environment's
service scaled to what it wants; `backend.migration.cutover` records the moves and waits on the
heartbeats as under any runtime: a cutover scales the legacy service to 0, its tasks get SIGTERM
and drain (their final heartbeat says `stopped`).

Docker secrets cannot change under a deployed stack: a secret file whose content changed (the local
exchange makes a new key pair at each start) needs the stack removed first (`--remove`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from backend.bus import streams
from backend.deploy.workload import (
    ACL_FILE,
    ACL_SECRET,
    INSTANCE_ENV,
    REDIS_DATA,
    REDIS_PORT,
    Workload,
    dump_yaml,
    environment_replicas,
    redis_args,
)
from backend.errors import TradeopsError
from backend.migration import inventory
from backend.migration.compose import INTERNAL_LANES, LANES
from backend.migration.state import ServiceState
from backend.runtime.commands import CONTAINER_PYTHON
from backend.runtime.image import ImageSpec

log = logging.getLogger("tradeops.deploy")
STACK = "tradeops"
REDIS = "redis"
STOP_GRACE = "20s"
HEALTH_INTERVAL_S = 5.0
"""How often the engine runs a task's health check (a task counts as running once one passed)."""
PRODUCTION_REDIS_IMAGE = "redis:7.2"
GWBRIDGE = "docker_gwbridge"
"""The bridge through which a swarm task on a network that is not internal reaches its node."""


class SwarmError(TradeopsError):
    """The engine refused, or is not a swarm manager; the message says what to do."""


def swarm_service(service: str, environment: str) -> str:
    """The stack's name of one environment of a service."""
    return f"{service}-{environment}"


def _health(test: list[str], interval_s: float, *, shell: bool = False) -> dict[str, Any]:
    return {
        "test": ["CMD-SHELL" if shell else "CMD", *test],
        "interval": f"{interval_s:g}s",
        "timeout": "5s",
        "retries": 3,
        "start_period": "60s",
    }


def _labels(w: Workload, environment: str) -> dict[str, str]:
    return {
        "tradeops.service": w.name,
        "tradeops.environment": environment,
        "tradeops.priority": str(w.spec.priority),
        "tradeops.lanes": ",".join(w.spec.lanes),
        "tradeops.risk": w.spec.risk,
    }


def _mounts(image: ImageSpec) -> list[dict[str, Any]]:
    return [{"type": "bind", "source": p, "target": p, "read_only": True} for p in image.mounts]


def _redis(image: ImageSpec, maxmemory: str | int, health_interval_s: float) -> dict[str, Any]:
    """The bus's Redis as a service of the stack, on its inventory lanes."""
    lanes = inventory.load().infra_spec("redis").lanes
    svc: dict[str, Any]
    if image.kind == "local":  # the embedded server's binary, from the host's venv (bind-mounted)
        from backend.bus.embedded import server_binary

        probe = f"import socket; socket.create_connection(('127.0.0.1', {REDIS_PORT}), 2).close()"
        svc = {
            "image": image.ref,
            "entrypoint": [server_binary()],
            "command": redis_args(maxmemory),
            "healthcheck": _health([CONTAINER_PYTHON, "-c", probe], health_interval_s),
        }
    else:
        svc = {
            "image": PRODUCTION_REDIS_IMAGE,
            "command": ["redis-server", *redis_args(maxmemory)],
            "healthcheck": _health(["redis-cli ping | grep -qE 'PONG|NOAUTH'"], health_interval_s, shell=True),
        }
    svc["volumes"] = [*_mounts(image), {"type": "volume", "source": "redis-data", "target": REDIS_DATA}]
    svc["networks"] = list(lanes)
    svc["secrets"] = [ACL_SECRET]
    svc["stop_grace_period"] = STOP_GRACE
    svc["deploy"] = {
        "replicas": 1,
        "endpoint_mode": "dnsrr",  # its name resolves to the task itself: no virtual IP (IPVS, iptables)
        "labels": {"tradeops.infra": "redis"},
        "restart_policy": {"condition": "any", "delay": "1s"},
        "update_config": {"parallelism": 1, "order": "stop-first"},  # one server on its volume
    }
    return svc


def stack_file(
    works: list[Workload],
    image: ImageSpec,
    secrets_dir: Path | str,
    *,
    states: dict[str, ServiceState] | None = None,
    redis_url: str | None = None,
    maxmemory: str | int = streams.DEFAULT_MAXMEMORY,
    health_interval_s: float = HEALTH_INTERVAL_S,
) -> dict[str, Any]:
    """The stack file as data (see the module docstring). `states`: the migration board (None:
    before any move, legacy only); `redis_url`: an external Redis (None: the stack's own)."""
    if redis_url is not None:
        stranded = [w.name for w in works if all(lane in INTERNAL_LANES for lane in w.spec.lanes)]
        if stranded:
            raise SwarmError(
                f"{', '.join(stranded)} only on internal lanes ({', '.join(INTERNAL_LANES)}) cannot reach the "
                f"external Redis {redis_url}; deploy without an external Redis (the stack runs its own)"
            )
    bus = redis_url or f"redis://{REDIS}:{REDIS_PORT}/0"
    services: dict[str, Any] = {}
    if redis_url is None:
        services[REDIS] = _redis(image, maxmemory, health_interval_s)
    local_env = {}
    if image.kind == "local":  # the source is mounted where it is on the host: import it from there
        import backend

        local_env["PYTHONPATH"] = str(Path(backend.__file__).resolve().parents[1])
    secrets: dict[str, Any] = {} if redis_url else {ACL_SECRET: {"file": str(Path(secrets_dir) / ACL_FILE)}}
    for w in works:
        for env, n in environment_replicas(w, states).items():
            name = swarm_service(w.name, env)
            services[name] = {
                "image": image.ref,
                "entrypoint": w.entrypoint(),
                "command": w.args(env),
                "hostname": f"{name}-{{{{.Task.Slot}}}}",
                "environment": {
                    **w.env(bus, env),
                    INSTANCE_ENV: f"{name}-{{{{.Task.Slot}}}}",
                    **local_env,
                },
                "secrets": [f.name for f in w.files],
                "networks": list(w.spec.lanes),
                "volumes": _mounts(image),
                "healthcheck": _health(w.health(), health_interval_s),
                "stop_grace_period": STOP_GRACE,
                "stop_signal": "SIGTERM",
                "deploy": {
                    "replicas": n,
                    "labels": _labels(w, env),
                    "restart_policy": {"condition": "on-failure", "delay": "1s"},
                    "update_config": {
                        "parallelism": 1,
                        "order": "start-first",
                        "failure_action": "rollback",
                        "monitor": "10s",
                    },
                    "rollback_config": {"parallelism": 1, "order": "start-first"},
                },
            }
            if REDIS in services:
                services[name]["depends_on"] = [REDIS]  # ignored by swarm; says what it needs
            for f in w.files:
                secrets[f.name] = {"file": str(f.host)}
    networks = {
        lane: {
            "driver": "overlay",
            "labels": {"tradeops.lane": lane},
            **({"internal": True} if lane in INTERNAL_LANES else {}),
        }
        for lane in LANES
    }
    out: dict[str, Any] = {"version": "3.8", "services": services, "networks": networks, "secrets": secrets}
    if redis_url is None:
        out["volumes"] = {"redis-data": {}}
    return out


def write_stack_file(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# generated by `tradeops deploy swarm` from the inventory: do not edit by hand\n" + dump_yaml([data])
    )
    return path


def missing_secret_files(data: dict[str, Any]) -> list[str]:
    return sorted(s["file"] for s in data["secrets"].values() if not Path(s["file"]).is_file())


class Swarm:
    """One stack on a swarm manager, through the docker CLI (`docker stack` has no API of its own)."""

    def __init__(self, stack: str = STACK, docker_host: str | None = None) -> None:
        self.stack = stack
        self.docker_host = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.binary = shutil.which("docker")
        self._scaled: dict[str, int] = {}

    def docker(self, *args: str, timeout: float = 120.0) -> str:
        if self.binary is None:
            raise SwarmError("no docker CLI on PATH (`apt-get install docker.io`): `docker stack deploy` needs it")
        env = {**os.environ, "DOCKER_HOST": self.docker_host}
        try:
            out = subprocess.run(
                [self.binary, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise SwarmError(f"`docker {' '.join(args[:3])}` did not finish within {timeout:g}s") from None
        if out.returncode != 0:
            why = (out.stderr or out.stdout).strip().splitlines()
            raise SwarmError(
                f"`docker {' '.join(args[:3])}` on {self.docker_host}: {why[-1] if why else out.returncode}"
            )
        return out.stdout

    def check_manager(self) -> None:
        info = json.loads(self.docker("info", "--format", "{{json .Swarm}}"))
        if not info.get("ControlAvailable"):
            raise SwarmError(
                f"the engine at {self.docker_host} is not a swarm manager "
                f"(swarm {info.get('LocalNodeState') or 'inactive'}): `docker swarm init` makes it one"
            )

    def deploy(self, path: Path, data: dict[str, Any]) -> None:
        """`docker stack deploy` of the stack file at `path` (its secret files must exist)."""
        missing = missing_secret_files(data)
        if missing:
            raise SwarmError(
                f"secret files missing: {', '.join(missing)} (the Redis passwords and ACL file come from "
                "`tradeops deploy swarm`; the venue's key pair from the local exchange or `tradeops secrets`)"
            )
        self.check_manager()
        self.docker(
            "stack",
            "deploy",
            "--detach=true",
            "--resolve-image",
            "never",
            "--prune",
            "-c",
            str(path),
            self.stack,
            timeout=300,
        )

    def services(self) -> dict[str, dict[str, Any]]:
        """The stack's services by their stack name: running and desired replicas, image."""
        out = self.docker(
            "service", "ls", "--filter", f"label=com.docker.stack.namespace={self.stack}", "--format", "{{json .}}"
        )
        rows: dict[str, dict[str, Any]] = {}
        for line in out.splitlines():
            row = json.loads(line)
            running, _, desired = row["Replicas"].partition(" ")[0].partition("/")
            name = row["Name"].removeprefix(f"{self.stack}_")
            rows[name] = {"id": row["ID"], "running": int(running), "desired": int(desired), "image": row["Image"]}
        return rows

    def service_ls(self) -> str:
        """`docker service ls` of the stack, as the engine prints it."""
        return self.docker("service", "ls", "--filter", f"label=com.docker.stack.namespace={self.stack}")

    def converged(self) -> bool:
        rows = self.services()
        return bool(rows) and all(r["running"] == r["desired"] for r in rows.values())

    def wait_converged(self, timeout: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.services()
            if rows and all(r["running"] == r["desired"] for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                late = ", ".join(
                    f"{n} {r['running']}/{r['desired']}"
                    for n, r in sorted(rows.items())
                    if r["running"] != r["desired"]
                )
                raise SwarmError(f"stack {self.stack} not converged within {timeout:g}s: {late or 'no services'}")
            time.sleep(0.5)

    def wanted(self, works: list[Workload], states: dict[str, ServiceState]) -> dict[str, int]:
        return {swarm_service(w.name, env): n for w in works for env, n in environment_replicas(w, states).items()}

    def converge(self, works: list[Workload], states: dict[str, ServiceState]) -> dict[str, int]:
        """Scale each environment's service to what the migration board wants; return the changes."""
        have = self.services()
        change = {
            name: n
            for name, n in self.wanted(works, states).items()
            if name in have and have[name]["desired"] != n and self._scaled.get(name) != n
        }
        if change:
            self.docker("service", "scale", "--detach", *(f"{self.stack}_{k}={v}" for k, v in sorted(change.items())))
            self._scaled.update(change)
        return change

    def watch(self, r: Any, works: list[Workload], stop: threading.Event, every: float = 0.25) -> None:
        """Converge on every move recorded on ops.migration until `stop` is set; a bus or an engine
        that does not answer for a while is waited out (said once), not the end of the watch."""
        import redis

        from backend.migration.state import board

        seen = -1
        away = ""
        while not stop.is_set():
            try:
                n = r.xlen(streams.OPS_MIGRATION)
                if n != seen:
                    self._scaled.clear()
                    self.converge(works, board(r))
                    seen = n
                away = ""
            except (redis.ConnectionError, redis.TimeoutError, SwarmError) as exc:
                if str(exc) != away:
                    log.warning("swarm watch: %s (trying again)", exc)
                    away = str(exc)
                seen = -1
            stop.wait(every)

    def node_address(self, service: str) -> str | None:
        """The address on this node (its `docker_gwbridge`) of the service's first task here: how a
        process on a manager reaches the stack's Redis without a published port. None: no task here,
        or the task is on internal networks only."""
        ids = self.docker(
            "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.swarm.service.name={self.stack}_{service}"
        )
        if not ids.split():
            return None
        attached = json.loads(self.docker("network", "inspect", GWBRIDGE, "--format", "{{json .Containers}}") or "{}")
        ip = str((attached or {}).get(ids.split()[0], {}).get("IPv4Address", "")).split("/")[0]
        return ip or None

    def redis_url(self) -> str | None:
        """The stack's Redis as a URL this node reaches (see `node_address`)."""
        ip = self.node_address(REDIS)
        return f"redis://{ip}:{REDIS_PORT}/0" if ip else None

    def remove(self, timeout: float = 120.0) -> list[str]:
        """`docker stack rm`, then wait until its tasks' containers and its networks are gone."""
        names = sorted(self.services())
        self.docker("stack", "rm", self.stack)
        label = f"label=com.docker.stack.namespace={self.stack}"
        deadline = time.monotonic() + timeout
        while (
            self.docker("ps", "-aq", "--filter", label).strip()
            or self.docker("network", "ls", "-q", "--filter", label).strip()
        ):
            if time.monotonic() > deadline:
                raise SwarmError(
                    f"stack {self.stack} still has containers or networks {timeout:g}s after `docker stack rm`"
                )
            time.sleep(0.5)
        return names
