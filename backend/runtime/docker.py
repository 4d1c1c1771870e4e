"""The docker runtime: every service instance a container, on the docker SDK, behind the same
supervisor as the process runtime (`backend.runtime.supervisor`): it converges on the migration
state, writes the same instance table (a container name where the process runtime has a pid).

- Networks: one bridge network per CPGS lane (`tradeops-frontend`, `tradeops-lowlatency`,
  `tradeops-backend`), labelled `tradeops.lane`, made when missing. An engine started with
  `--bridge=none --iptables=false` still creates them (only the default `bridge` network is
  gone, and nothing is NAT-ed or isolated by iptables).
- Network mode `lanes`: a container joins the networks of its service's lanes (aliases: service
  and instance), for a deployment whose Redis those networks reach. Mode `host`: containers share
  the host's network, what a Redis on the host's loopback (the embedded one, the test one) needs;
  the lane networks are still made, and the lanes are on the container's labels.
- Secrets: a container logs in as its service's own Redis user; its password file, and the secrets
  its service declares (the venue's key pair for the gateways), are bind-mounted read-only under
  /run/secrets from the data dir's secrets, the environment naming their paths
  (TRADEOPS_REDIS_PASSWORD_FILE ...; backend/runtime/secretfiles.py); the rest of the data dir's
  secrets is hidden under an empty tmpfs. No secret is in an environment variable or a label.
- The backend lane is an internal network (no route out of its subnet; on an engine without
  iptables rules, its bridge's forwarding is turned off on this host): a service on the backend
  lane only cannot reach a port on the frontend lane (nor the outside); the frontend lane reaches
  the venues, the low-latency lane its peers and the host.
- Labels: `tradeops.service`, `.environment`, `.instance`, `.priority`, `.lanes`, `.stack` (the
  data dir the instance belongs to) and `.data_dir`.
- Command: `python -m backend.services SERVICE --instance ... --environment ...` (the image's
  own entrypoint, `tradeops` in the production image, is replaced; backend.runtime.commands).
- Health check: `python -m backend.runtime.healthcheck SERVICE INSTANCE` (a fresh `running`
  heartbeat). Restart policy `on-failure`: the engine restarts a crashed container itself; the
  supervisor re-creates one that is gone or exited for good, with the shared backoff.
- The local exchange stays a host process (see `supervisor`)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from backend import locations
from backend.errors import TradeopsError
from backend.migration import inventory
from backend.migration.compose import LANES
from backend.runtime.commands import CONTAINER_PYTHON, service_args, service_entrypoint
from backend.runtime.image import ImageSpec, image_spec
from backend.runtime.secretfiles import CONTAINER_DIR, SECRETS_DIR, service_files
from backend.runtime.supervisor import InstanceHandle, Supervisor

if TYPE_CHECKING:
    import docker

log = logging.getLogger("tradeops.supervisor")
NETWORK_MODES = ("host", "lanes")
STOP_TIMEOUT_S = 15
_LOOPBACK = {"127.0.0.1", "localhost", "::1", ""}


class DockerUnavailable(TradeopsError):
    """No Docker engine answers at the address in the message."""


def engine_address(base_url: str | None = None) -> str:
    return base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect_engine(base_url: str | None = None, timeout: float = 30.0) -> docker.DockerClient:
    """A client of the engine at `base_url` (default: DOCKER_HOST, then the standard socket), or
    one clear line saying none answers."""
    import docker
    import requests

    where = engine_address(base_url)
    try:
        client = docker.DockerClient(base_url=where, version="auto", timeout=int(timeout))
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError):
        raise DockerUnavailable(
            f"no Docker engine reachable at {where} (start dockerd, or point DOCKER_HOST at one)"
        ) from None
    return client


def lane_network(lane: str) -> str:
    return f"tradeops-{lane}"


INTERNAL_LANES = ("backend",)
"""Lanes with no route out of their own subnet (docker's `internal` networks)."""


def ensure_lane_networks(client: docker.DockerClient) -> list[str]:
    """The lane networks, made (bridge, labelled `tradeops.lane`; the backend lane internal) when
    missing."""
    names = []
    for lane in LANES:
        name = lane_network(lane)
        have = [n for n in client.networks.list(names=[name]) if n.name == name]
        if not have:
            client.networks.create(
                name,
                driver="bridge",
                labels={"tradeops.lane": lane},
                check_duplicate=True,
                internal=lane in INTERNAL_LANES,
            )
            log.info("created network %s", name)
        elif bool(have[0].attrs.get("Internal")) != (lane in INTERNAL_LANES):
            log.warning(
                "network %s exists with internal=%s (made by an older tradeops): remove it to have it made again",
                name,
                have[0].attrs.get("Internal"),
            )
        if lane in INTERNAL_LANES:
            _no_forwarding(client.networks.get(name))
        names.append(name)
    return names


def _no_forwarding(net: Any) -> None:
    """An internal lane's bridge forwards nothing out of its subnet, even on an engine that manages
    no iptables rules (`--iptables=false`, where `internal` alone still leaves the containers a
    default route through the host): its IPv4 forwarding off, on this host, when the engine's
    bridge is here. The containers still reach the host's own addresses on it (the bus's Redis)."""
    bridge = (net.attrs.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{net.id[:12]}"
    flag = Path("/proc/sys/net/ipv4/conf") / bridge / "forwarding"
    try:
        if flag.exists() and flag.read_text().strip() != "0":
            flag.write_text("0")
    except OSError as exc:  # not root, or a read-only /proc/sys: the engine's iptables rules isolate it
        log.warning(
            "cannot turn forwarding off on %s (%s): the backend lane's isolation is the engine's",
            bridge,
            exc.strerror or exc,
        )


def stack_id(data_dir: Path) -> str:
    """Short id of the stack a data dir holds: containers of two data dirs never collide."""
    return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]


def container_name(instance: str, stack: str) -> str:
    return f"tradeops-{instance}-{stack}"


def check_network_mode(network: str, redis_url: str | None) -> None:
    """`lanes` needs a Redis the lane networks reach: not one on the host's loopback."""
    if network not in NETWORK_MODES:
        raise TradeopsError(f"unknown network mode {network!r} (use {' or '.join(NETWORK_MODES)})")
    if network == "lanes" and (redis_url is None or (urlparse(redis_url).hostname or "") in _LOOPBACK):
        raise TradeopsError(
            f"network mode lanes needs a Redis the lane networks reach; "
            f"{redis_url or 'the embedded Redis'} is on the host's loopback (use --network host)"
        )


def container_config(
    service: str,
    environment: str,
    instance: str,
    *,
    stack: str,
    image: ImageSpec,
    network: str,
    redis_url: str,
    data_dir: Path,
    config: Path | None,
    health_interval_s: float = 10.0,
) -> dict[str, Any]:
    """Arguments of `containers.create` for one instance (the first lane network only; the others
    are connected after create)."""
    from docker.types import Healthcheck, LogConfig, Mount

    spec = inventory.load().service(service)
    data_dir = Path(data_dir).resolve()
    env = {
        "TRADEOPS_REDIS_URL": redis_url,
        "TRADEOPS_DATA_DIR": str(data_dir),
        "TRADEOPS_ENVIRONMENT": environment,
        "PYTHONUNBUFFERED": "1",
        "TRADEOPS_REDIS_USER": service,
    }
    if image.kind == "local":  # the source is mounted where it is on the host: import it from there
        import backend

        env["PYTHONPATH"] = str(Path(backend.__file__).resolve().parents[1])
    mounts = [Mount(target=p, source=p, type="bind", read_only=True) for p in image.mounts]
    mounts.append(Mount(target=str(data_dir), source=str(data_dir), type="bind"))
    store = data_dir / SECRETS_DIR
    if store.is_dir():  # the data dir's secrets hidden; the service's own mounted, read-only
        mounts.append(Mount(target=str(store), source="", type="tmpfs"))
        for f in service_files(service, store):
            if f.host.exists():
                if f.name.startswith("redis-"):  # made once: the file itself
                    mounts.append(Mount(target=f.container, source=str(f.host), type="bind", read_only=True))
                    env[f.env] = f.container
                else:  # replaced at each start of the local exchange: its directory, read again
                    target = f"{CONTAINER_DIR}/{f.host.parent.name}"
                    if all(m["Target"] != target for m in mounts):
                        mounts.append(Mount(target=target, source=str(f.host.parent), type="bind", read_only=True))
                    env[f.env] = f"{target}/{f.host.name}"
    if config is not None:
        config = Path(config).resolve()
        env["TRADEOPS_CONFIG"] = str(config)
        mounts.append(Mount(target=str(config), source=str(config), type="bind", read_only=True))
    second = int(1e9)
    kw: dict[str, Any] = dict(
        image=image.ref,
        name=container_name(instance, stack),
        entrypoint=service_entrypoint(CONTAINER_PYTHON),
        command=service_args(service, instance, environment),
        environment=env,
        labels={
            "tradeops.service": service,
            "tradeops.environment": environment,
            "tradeops.instance": instance,
            "tradeops.priority": str(spec.priority),
            "tradeops.lanes": ",".join(spec.lanes),
            "tradeops.stack": stack,
            "tradeops.data_dir": str(data_dir),
        },
        mounts=mounts,
        healthcheck=Healthcheck(
            test=["CMD", "python", "-m", "backend.runtime.healthcheck", service, instance],
            interval=int(health_interval_s * second),
            timeout=5 * second,
            retries=3,
            start_period=20 * second,
        ),
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 0},
        stop_signal="SIGTERM",
        log_config=LogConfig(type="json-file", config={"max-size": "10m", "max-file": "3"}),
        detach=True,
    )
    if network == "host":
        kw["network_mode"] = "host"
    else:
        kw["network"] = lane_network(spec.lanes[0])
        env["TRADEOPS_METRICS_HOST"] = "0.0.0.0"  # /metrics reachable on the lane networks (backend/metrics.py)
        kw["hostname"] = instance
    return kw


class ContainerHandle:
    """One instance's container; its state is what the supervisor's last `refresh` saw."""

    pid: int | None = None

    def __init__(self, container: Any) -> None:
        self.c = container
        self.container: str = container.name
        self.id: str = container.id
        self.state = "created"
        self.health = ""
        self.exit_code: int | None = None
        self.engine_restarts = 0
        self.gone = False

    def poll(self) -> int | None:
        if self.gone:
            return -1
        if self.state in ("exited", "dead"):
            return self.exit_code if self.exit_code is not None else -1
        return None  # created, running, restarting (the engine's on-failure policy), paused

    def terminate(self) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):  # not running, or gone
            self.c.kill(signal="SIGTERM")  # the engine will not restart it after this

    def stop(self, *, kill: bool = False) -> None:
        import docker.errors

        try:
            if not kill:
                self.c.stop(timeout=STOP_TIMEOUT_S)
            self.c.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise
        self.gone = True

    def describe(self) -> dict[str, Any]:
        return {
            "container_id": self.id[:12],
            "status": self.state,
            "engine_health": self.health,
            "engine_restarts": self.engine_restarts,
        }

    def update(self, client: Any) -> None:
        """Read the container's state from the engine (gone: no such container)."""
        import docker.errors

        try:
            attrs = client.api.inspect_container(self.id)
        except docker.errors.NotFound:
            self.gone = True
            return
        st = attrs["State"]
        self.state = st.get("Status", "")
        self.health = (st.get("Health") or {}).get("Status", "")
        self.exit_code = st.get("ExitCode")
        self.engine_restarts = attrs.get("RestartCount", 0)


class DockerSupervisor(Supervisor):
    """Each instance a container; see the module docstring."""

    runtime = "docker"
    refresh_every_s = 1.0

    def __init__(
        self,
        redis_url: str,
        data_dir: Path,
        *,
        image: str | None = None,
        network: str = "host",
        docker_host: str | None = None,
        health_interval_s: float = 10.0,
        **kw: Any,
    ) -> None:
        check_network_mode(network, redis_url)
        super().__init__(redis_url, data_dir, **kw)
        self.docker_host = engine_address(docker_host)
        self.client = connect_engine(docker_host)
        self.image = image_spec(self.client, image)
        self.network = network
        self.health_interval_s = health_interval_s
        self.stack = stack_id(self.data_dir)
        self.networks = ensure_lane_networks(self.client)
        self._refreshed = 0.0
        self.data_dir.mkdir(parents=True, exist_ok=True)  # bind-mounted: it must exist
        if self.config is None and locations.config_file(None).is_file():
            self.config = locations.config_file(None)  # what a child process would read

    def launch(self, service: str, environment: str, instance: str) -> tuple[InstanceHandle, str]:
        import docker.errors

        kw = container_config(
            service,
            environment,
            instance,
            stack=self.stack,
            image=self.image,
            network=self.network,
            redis_url=self.redis_url,
            data_dir=self.data_dir,
            config=self.config,
            health_interval_s=self.health_interval_s,
        )
        try:
            self._remove_leftover(kw["name"])
            c = self.client.containers.create(**kw)
            if self.network == "lanes":
                for lane in inventory.load().service(service).lanes[1:]:
                    self.client.networks.get(lane_network(lane)).connect(c, aliases=[service, instance])
            c.start()
        except docker.errors.APIError as exc:
            raise TradeopsError(f"docker: cannot start {kw['name']}: {exc.explanation or exc}") from None
        return ContainerHandle(c), f"docker logs {c.name}"

    def _remove_leftover(self, name: str) -> None:
        import docker.errors

        try:
            old = self.client.containers.get(name)
        except docker.errors.NotFound:
            return
        log.warning("removing leftover container %s", name)
        old.remove(force=True)

    def refresh(self) -> None:
        """Every container's state, at most once per `refresh_every_s` (one inspect each)."""
        import docker.errors
        import requests

        now = time.monotonic()
        if now - self._refreshed < self.refresh_every_s:
            return
        self._refreshed = now
        try:
            for inst in self.instances.values():
                if isinstance(inst.handle, ContainerHandle):
                    inst.handle.update(self.client)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise TradeopsError(f"docker engine at {self.docker_host}: {exc}") from None

    def table_extra(self) -> dict[str, Any]:
        return {"docker_host": self.docker_host, "stack": self.stack, "network": self.network, "image": self.image.ref}


def remove_stack(docker_host: str | None, stack: str) -> list[str]:
    """Remove every container of a stack (what a supervisor that died left behind)."""
    client = connect_engine(docker_host)
    names = []
    for c in client.containers.list(all=True, filters={"label": f"tradeops.stack={stack}"}):
        c.remove(force=True)
        names.append(c.name)
    return names
