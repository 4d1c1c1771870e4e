"""The process runtime: every service instance its own OS process, logs under `<data>/logs`,
restarted with backoff when it crashes, the instance table kept in `<data>/runtime/instances.json`
so `tradeops ps` in another terminal sees it.

The supervisor converges on the migration state: legacy instances for services not yet cut over,
target instances from `start` on (blue/green: both in the same consumer group); a cutover stops the
legacy instance with SIGTERM, so it drains (stops reading, finishes its batch, acks)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from backend.bus import streams
from backend.errors import TradeopsError
from backend.fileio import write_text_atomic
from backend.migration import inventory
from backend.migration.state import board, desired_instances
from backend.runtime.spawn import spawn_service, stop_process

log = logging.getLogger("tradeops.supervisor")
EXCHANGE = "exchange"


def runtime_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "runtime"


def table_path(data_dir: Path) -> Path:
    return runtime_dir(data_dir) / "instances.json"


def built_services() -> tuple[list[str], list[str]]:
    """(services this build can run, services not built yet), in migration order."""
    from backend.services import service_class

    ok, missing = [], []
    for name in inventory.load().order():
        try:
            service_class(name)
            ok.append(name)
        except TradeopsError:
            missing.append(name)
    return ok, missing


@dataclass
class Instance:
    service: str
    environment: str
    instance: str
    pid: int
    started: float
    log: str
    restarts: int = 0
    proc: Any = field(default=None, repr=False)
    next_restart: float = 0.0


class ProcessSupervisor:
    def __init__(self, redis_url: str, data_dir: Path, *, exchange_rate: float = 2000.0,
                 with_exchange: bool = True, config: Path | None = None) -> None:
        self.redis_url = redis_url
        self.data_dir = Path(data_dir)
        self.exchange_rate = exchange_rate
        self.with_exchange = with_exchange
        self.config = config
        self.instances: dict[str, Instance] = {}
        self.services, self.missing = built_services()
        self.r = redis.Redis.from_url(redis_url)
        self._stop = threading.Event()
        self._migration_len = -1
        self.pid = os.getpid()

    # -- instances -------------------------------------------------------------------------------
    def _spawn(self, service: str, environment: str) -> Instance:
        instance = f"{service}-{environment}"
        logf = self.data_dir / "logs" / f"{instance}.log"
        if service == EXCHANGE:
            logf.parent.mkdir(parents=True, exist_ok=True)
            with open(logf, "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "console.cli", "--data-dir", str(self.data_dir), "exchange",
                     "--rate", str(self.exchange_rate)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        else:
            proc = spawn_service(service, redis_url=self.redis_url, data_dir=self.data_dir, instance=instance,
                                 environment=environment, log_path=logf, config=self.config)
        old = self.instances.get(instance)
        inst = Instance(service, environment, instance, proc.pid, time.time(), str(logf),
                        restarts=old.restarts + 1 if old else 0, proc=proc)
        self.instances[instance] = inst
        log.info("started %s (pid %d)", instance, proc.pid)
        return inst

    def stop_instance(self, instance: str, *, kill: bool = False) -> None:
        inst = self.instances.pop(instance, None)
        if inst is not None and inst.proc is not None:
            stop_process(inst.proc, kill=kill)
            log.info("stopped %s", instance)

    def desired(self) -> set[tuple[str, str]]:
        want = {(EXCHANGE, "legacy")} if self.with_exchange else set()
        for svc, envs in desired_instances(board(self.r)).items():
            if svc in self.services:
                want |= {(svc, env) for env in envs}
        return want

    def reconcile(self) -> None:
        want = self.desired()
        have = {(i.service, i.environment) for i in self.instances.values()}
        if self.with_exchange and (EXCHANGE, "legacy") not in have:
            self._spawn(EXCHANGE, "legacy")
            self._wait_exchange()
            have.add((EXCHANGE, "legacy"))
        for svc, env in sorted(want - have, key=lambda x: x[0] != EXCHANGE):
            self._spawn(svc, env)
        for svc, env in have - want:
            self.stop_instance(f"{svc}-{env}")  # SIGTERM: the instance drains
        self.write_table()

    def _wait_exchange(self, timeout: float = 10.0) -> None:
        f = self.data_dir / "exchange.json"
        deadline = time.monotonic() + timeout
        while not f.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def check_children(self) -> None:
        now = time.monotonic()
        for inst in list(self.instances.values()):
            code = inst.proc.poll() if inst.proc is not None else None
            if code is None:
                continue
            if not inst.next_restart:
                backoff = min(30.0, 0.5 * 2 ** inst.restarts)
                inst.next_restart = now + backoff
                log.warning("%s exited with %s; restarting in %.1fs", inst.instance, code, backoff)
            elif now >= inst.next_restart:
                self._spawn(inst.service, inst.environment)
                self.write_table()

    def write_table(self) -> None:
        path = table_path(self.data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"service": i.service, "environment": i.environment, "instance": i.instance, "pid": i.pid,
                 "started": i.started, "log": i.log, "restarts": i.restarts} for i in self.instances.values()]
        write_text_atomic(path, json.dumps({"supervisor_pid": self.pid, "redis_url": self.redis_url,
                                            "not_built": self.missing, "instances": rows}, indent=1))

    # -- loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        self.reconcile()
        while not self._stop.wait(0.25):
            try:
                n = self.r.xlen(streams.OPS_MIGRATION)
                if n != self._migration_len:
                    self._migration_len = n
                    self.reconcile()
                self.check_children()
            except redis.RedisError as exc:
                log.warning("supervisor: redis unavailable: %s", exc)

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        self._stop.set()
        # every service at once (each drains: finishes its batch, acks), then the exchange
        services = [i for i in self.instances.values() if i.service != EXCHANGE]
        for inst in services:
            if inst.proc is not None and inst.proc.poll() is None:
                inst.proc.send_signal(signal.SIGTERM)
        for inst in services:
            self.stop_instance(inst.instance)
        for inst in list(self.instances.values()):
            self.stop_instance(inst.instance)
        table_path(self.data_dir).unlink(missing_ok=True)
        self.r.close()


def read_table(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(table_path(data_dir).read_text())
    except (OSError, ValueError):
        return None
