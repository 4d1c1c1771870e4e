"""What every runtime shares: the instance table (`<data>/runtime/instances.json`, what `tradeops ps`
reads), the convergence on the migration state, restart with backoff, the supervision loop and the
shutdown. A runtime (process, docker) only says how one instance is launched, polled and stopped:
it returns an `InstanceHandle` from `launch`.

Given `keep_redis` (the stack's embedded Redis), the supervisor also keeps that server running
(`backend.runtime.redis_watch`): restarted on the same port and data dir when it is gone, while the
instances ride through (they reconnect, or exit and are restarted). Every instance is polled each
round whether Redis answers or not, so an instance that exited is reaped and restarted at once.

The local exchange is a stand-in for an outside venue, not one of the deployed services, so it is a
host process under every runtime."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import redis

from backend.bus import connection, streams
from backend.bus.entries import Skips
from backend.errors import TradeopsError
from backend.fileio import write_text_atomic
from backend.health import read_heartbeats
from backend.migration import inventory
from backend.migration.state import board, desired_instances
from backend.runtime.commands import exchange_command
from backend.runtime.redis_watch import STABLE_S, RedisWatch
from backend.runtime.scrape import ScrapeConfig
from backend.runtime.scrape import targets as scrape_targets
from backend.runtime.spawn import stop_process

log = logging.getLogger("tradeops.supervisor")
EXCHANGE = "exchange"


def instance_name(service: str, environment: str, replica: int = 0) -> str:
    """`normalizer-legacy`, then `normalizer-legacy-2`, `-3` ... for its further replicas."""
    return f"{service}-{environment}" if replica == 0 else f"{service}-{environment}-{replica + 1}"


def runtime_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "runtime"


def table_path(data_dir: Path) -> Path:
    return runtime_dir(data_dir) / "instances.json"


def read_table(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(table_path(data_dir).read_text())
    except (OSError, ValueError):
        return None


def built_services() -> tuple[list[str], list[str]]:
    """(services this build can run, services not built yet), in the order to start them (what a
    service needs at run time first)."""
    from backend.services import service_class

    ok, missing = [], []
    for name in inventory.load().start_order():
        try:
            service_class(name)
            ok.append(name)
        except TradeopsError:
            missing.append(name)
    return ok, missing


class InstanceHandle(Protocol):
    """One running instance as its runtime sees it."""

    pid: int | None
    """The OS process id (process runtime); None for a container."""
    container: str
    """The container name (docker runtime); empty for a process."""

    def poll(self) -> int | None:
        """The exit code once the instance is gone for good, None while it runs (or while its
        runtime restarts it by itself)."""

    def terminate(self) -> None:
        """Ask it to drain (SIGTERM: stop reading, finish the batch, ack, exit); do not wait."""

    def stop(self, *, kill: bool = False) -> None:
        """Drain (or SIGKILL) and wait until it is gone; release what the runtime holds for it."""

    def describe(self) -> dict[str, Any]:
        """Runtime-specific columns for the instance table (container id, engine status ...)."""


class ProcessHandle:
    """An instance that is a child OS process."""

    container = ""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid: int | None = proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, *, kill: bool = False) -> None:
        stop_process(self.proc, kill=kill)

    def describe(self) -> dict[str, Any]:
        return {}


@dataclass
class Instance:
    service: str
    environment: str
    instance: str
    handle: InstanceHandle
    started: float
    log: str
    restarts: int = 0
    next_restart: float = 0.0
    failures: int = 0
    """Ends in a row that came before STABLE_S (the backoff grows with them; a longer run resets it)."""
    replica: int = 0
    """Which of the service's replicas in its environment (0: the first, named `<service>-<env>`)."""

    @property
    def pid(self) -> int | None:
        return self.handle.pid

    @property
    def container(self) -> str:
        return self.handle.container

    @property
    def proc(self) -> Any:
        """The child process (process runtime), else None."""
        return getattr(self.handle, "proc", None)

    def row(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "environment": self.environment,
            "instance": self.instance,
            "pid": self.pid,
            "container": self.container,
            "started": self.started,
            "log": self.log,
            "restarts": self.restarts,
            "replica": self.replica,
            **self.handle.describe(),
        }


class Supervisor:
    """Converges the running instances on the migration state: legacy instances for services not
    yet cut over, target instances from `start` on (blue/green: both in the same consumer group);
    a cutover stops the legacy instance with SIGTERM, so it drains. A runtime subclass implements
    `launch`."""

    runtime: ClassVar[str] = ""
    poll_every_s: ClassVar[float] = 0.25
    scrape_every_s: ClassVar[float] = 1.0
    """How often the Prometheus targets are made again from the heartbeats (backend/runtime/scrape.py)."""

    def __init__(
        self,
        redis_url: str,
        data_dir: Path,
        *,
        exchange_rate: float = 2000.0,
        with_exchange: bool = True,
        config: Path | None = None,
        keep_redis: bool = False,
        redis_server: Any = None,
        auth: connection.Login | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.data_dir = Path(data_dir)
        self.exchange_rate = exchange_rate
        self.with_exchange = with_exchange
        self.config = config
        self.instances: dict[str, Instance] = {}
        self.services, self.missing = built_services()
        self.auth = auth if auth is not None else connection.admin_login(data_dir=self.data_dir)
        """The supervisor's own login (admin); each instance logs in as its service's user."""
        self.r = connection.client(redis_url, self.auth, socket_timeout=5.0, socket_connect_timeout=2.0)
        self.redis_watch = RedisWatch(self.data_dir, redis_server) if keep_redis else None
        self._stop = threading.Event()
        self._migration_len = -1
        self._redis_away = False
        self._replicas: dict[str, int] | None = None
        self.pid = os.getpid()
        self.scrape = ScrapeConfig(self.data_dir)
        """The Prometheus scrape config of the running instances (`<data dir>/prometheus/`)."""
        self._scraped_at = 0.0

    # -- what a runtime provides ------------------------------------------------------------------
    def launch(self, service: str, environment: str, instance: str) -> tuple[InstanceHandle, str]:
        """Start one service instance; return its handle and where its log is."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Called before each round of polls (a runtime may fetch every instance's state at once)."""

    def table_extra(self) -> dict[str, Any]:
        """Runtime-wide fields for the instance table."""
        return {}

    # -- instances -------------------------------------------------------------------------------
    def replicas(self, service: str) -> int:
        """How many instances of `service` run in each environment: `[replicas]` in the config,
        else the inventory's `replicas` (1 by default). The instances of a partitioned consumer
        share its partitions."""
        if self._replicas is None:
            from backend.settings import load_settings

            inv = {s.name: s.replicas for s in inventory.load().services}
            self._replicas = {**inv, **load_settings(self.config).replicas}
        return self._replicas.get(service, 1)

    def _spawn(self, service: str, environment: str, replica: int = 0) -> Instance:
        instance = instance_name(service, environment, replica)
        if service == EXCHANGE:
            handle, logf = self._spawn_exchange(instance)
        else:
            handle, logf = self.launch(service, environment, instance)
        old = self.instances.get(instance)
        inst = Instance(
            service,
            environment,
            instance,
            handle,
            time.time(),
            logf,
            restarts=old.restarts + 1 if old else 0,
            failures=old.failures if old else 0,
            replica=replica,
        )
        self.instances[instance] = inst
        log.info("started %s (%s)", instance, inst.container or f"pid {inst.pid}")
        return inst

    def _spawn_exchange(self, instance: str) -> tuple[InstanceHandle, str]:
        logf = self.data_dir / "logs" / f"{instance}.log"
        logf.parent.mkdir(parents=True, exist_ok=True)
        with open(logf, "ab") as out:
            proc = subprocess.Popen(
                exchange_command(self.data_dir, self.exchange_rate),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=connection.login_env(None, self.data_dir, dict(os.environ)),
            )  # it has no Redis login
        return ProcessHandle(proc), str(logf)

    def stop_instance(self, instance: str, *, kill: bool = False) -> None:
        inst = self.instances.pop(instance, None)
        if inst is not None:
            inst.handle.stop(kill=kill)
            log.info("stopped %s", instance)

    def start_instance(self, service: str, environment: str) -> Instance:
        """Start (service, environment) unless it runs; the table says so at once."""
        inst = self.instances.get(f"{service}-{environment}") or self._spawn(service, environment)
        self.write_table()
        return inst

    def restart_instance(self, service: str, environment: str) -> Instance:
        """Drain and stop the instance, start it again (its restart count goes up)."""
        instance = f"{service}-{environment}"
        old = self.instances.get(instance)
        if old is None:
            return self.start_instance(service, environment)
        old.handle.stop()
        inst = self._spawn(service, environment)
        self.write_table()
        return inst

    def list_instances(self) -> list[dict[str, Any]]:
        """The instance table's rows: service, environment, instance, pid or container, restarts ..."""
        return self._rows()

    def desired(self) -> set[tuple[str, str, int]]:
        want = {(EXCHANGE, "legacy", 0)} if self.with_exchange else set()
        skips = Skips()
        states = board(self.r, skips)
        for line in skips.notes():  # an entry that is not a move moves nothing
            log.warning("supervisor: %s", line)
        for svc, envs in desired_instances(states).items():
            if svc in self.services:
                want |= {(svc, env, k) for env in envs for k in range(self.replicas(svc))}
        return want

    def reconcile(self) -> None:
        want = self.desired()
        have = {(i.service, i.environment, i.replica) for i in self.instances.values()}
        if self.with_exchange and (EXCHANGE, "legacy", 0) not in have:
            self._spawn(EXCHANGE, "legacy")
            self._wait_exchange()
            have.add((EXCHANGE, "legacy", 0))
        order = {name: i for i, name in enumerate(self.services)}  # the inventory's start order
        for svc, env, k in sorted(want - have, key=lambda x: (x[0] != EXCHANGE, order.get(x[0], 0), x)):
            self._spawn(svc, env, k)
        for svc, env, k in have - want:
            self.stop_instance(instance_name(svc, env, k))  # SIGTERM: the instance drains
        self.write_table()

    def _wait_exchange(self, timeout: float = 10.0) -> None:
        f = self.data_dir / "exchange.json"
        deadline = time.monotonic() + timeout
        while not f.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def check_children(self) -> None:
        """Restart, with backoff, every instance that ended (the table is rewritten if anything
        it shows changed)."""
        before = self._rows()
        self.refresh()
        now = time.monotonic()
        for inst in list(self.instances.values()):
            code = inst.handle.poll()
            if code is None:
                continue
            if not inst.next_restart:
                inst.failures = 1 if time.time() - inst.started >= STABLE_S else inst.failures + 1
                backoff = min(30.0, 0.5 * 2 ** (inst.failures - 1))
                inst.next_restart = now + backoff
                log.warning("%s exited with %s; restarting in %.1fs", inst.instance, code, backoff)
            elif now >= inst.next_restart:
                inst.handle.stop(kill=True)  # release what is left of it (a stopped container)
                self._spawn(inst.service, inst.environment, inst.replica)
        if self._rows() != before:
            self.write_table()

    def _rows(self) -> list[dict[str, Any]]:
        return [i.row() for i in self.instances.values()]

    def write_table(self) -> None:
        path = table_path(self.data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            path,
            json.dumps(
                {
                    "supervisor_pid": self.pid,
                    "runtime": self.runtime,
                    "redis_url": self.redis_url,
                    **self.table_extra(),
                    "not_built": self.missing,
                    "instances": self._rows(),
                },
                indent=1,
            ),
        )

    # -- loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        self.scrape.write_config()
        self.reconcile()
        while not self._stop.wait(self.poll_every_s):
            self.round()

    def update_scrape_targets(self) -> bool:
        """Write the Prometheus targets of the instances this supervisor runs, where their
        heartbeats say they serve /metrics; whether they changed."""
        self._scraped_at = time.monotonic()
        ids = [i.instance for i in self.instances.values() if i.service != EXCHANGE]
        return self.scrape.update(scrape_targets(read_heartbeats(self.r), ids))

    def round(self) -> None:
        """One supervision round: Redis (when it is ours to keep), the migration state, every
        instance. The instances are polled even while Redis is away, so one that exited is reaped
        and restarted, not left a zombie."""
        if self.redis_watch is not None:
            self.redis_watch.check()
        try:
            n = self.r.xlen(streams.OPS_MIGRATION)
            if self._redis_away:
                self._redis_away = False
                log.warning("supervisor: redis answers again")
            if n != self._migration_len:
                self._migration_len = n
                self.reconcile()
            if time.monotonic() - self._scraped_at >= self.scrape_every_s:
                self.update_scrape_targets()
        except redis.RedisError as exc:
            if not self._redis_away:  # once an outage, not every round
                self._redis_away = True
                log.warning("supervisor: redis unavailable: %s", exc)
        except TradeopsError as exc:  # a runtime that failed to start or poll: try again
            log.warning("supervisor: %s", exc)
            self._migration_len = -1
        try:
            self.check_children()
        except TradeopsError as exc:
            log.warning("supervisor: %s", exc)
            self._migration_len = -1

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        self._stop.set()
        if self.redis_watch is not None:
            self.redis_watch.close()  # a restart in progress ends first: `down` stops what it started
        # every service at once (each drains: finishes its batch, acks), then the exchange
        services = [i for i in self.instances.values() if i.service != EXCHANGE]
        for inst in services:
            inst.handle.terminate()
        for inst in services:
            self.stop_instance(inst.instance)
        for inst in list(self.instances.values()):
            self.stop_instance(inst.instance)
        table_path(self.data_dir).unlink(missing_ok=True)
        self.scrape.update([])  # nothing left to scrape
        self.r.close()
