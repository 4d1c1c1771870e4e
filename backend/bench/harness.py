"""What every benchmark needs: an embedded Redis in a temporary data dir and services started as
their own processes, all stopped afterwards (even on error or Ctrl-C).

The embedded server runs with its ACL users, as a deployed one does (`acl=False`: without): each
service logs in as its own user; the benchmark itself, and the helper processes it starts, as
`admin` (TRADEOPS_REDIS_USER and TRADEOPS_REDIS_PASSWORD_FILE are set for them while it runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from backend.bus.connection import ADMIN, LOGIN_ENV, Login, admin_login, client, login_env
from backend.bus.embedded import EmbeddedRedis, local_url
from backend.errors import TradeopsError
from backend.runtime.spawn import spawn_service, stop_process, wait_healthy


class BenchStack:
    def __init__(self, *, redis_url: str | None = None, keep_dir: bool = False, acl: bool = True) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="tradeops-bench-"))
        self.keep_dir = keep_dir
        self.acl = acl and redis_url is None
        self._external_url = redis_url
        self._env: dict[str, str | None] = {}
        self.auth: Login | None = None
        self.server: EmbeddedRedis | None = None
        self.url = ""
        self.r: redis.Redis | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.retries = 0  # writes a benchmark had to try again (a cluster failing over)

    def __enter__(self) -> BenchStack:
        if self._external_url:
            self.url = self._external_url
        else:
            self.server = EmbeddedRedis(self.data_dir, acl=self.acl)
            self.url = local_url(self.server.start(), self.data_dir)  # its unix socket
        if self.acl:
            self.auth = admin_login(data_dir=self.data_dir)
            env = login_env(ADMIN, self.data_dir, {})
            self._env = {k: os.environ.get(k) for k in LOGIN_ENV}
            for k in LOGIN_ENV:
                os.environ.pop(k, None)
            os.environ.update(env)
        self.r = client(self.url, self.auth)
        return self

    def start(
        self,
        name: str,
        *,
        instance: str | None = None,
        environment: str = "legacy",
        config: Path | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        instance = instance or f"{name}-bench"
        log = self.data_dir / "logs" / f"{instance}.log"
        proc = spawn_service(
            name,
            redis_url=self.url,
            data_dir=self.data_dir,
            instance=instance,
            environment=environment,
            log_path=log,
            config=config,
            env=env,
        )
        self.procs[instance] = proc
        if wait:
            assert self.r is not None
            wait_healthy(self.r, name, instance, proc=proc, log_path=log)
        return proc

    def stop(self, instance: str, *, kill: bool = False) -> int:
        return stop_process(self.procs.pop(instance), kill=kill)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        for instance in list(self.procs):
            self.stop(instance)
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.r is not None:
            self.r.close()
        if self.server is not None:
            self.server.stop()
        if not self.keep_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def wait_until(pred: Callable[[], Any], timeout: float, what: str, bench: str = "bench") -> None:
    """Poll `pred` until it is true; after `timeout` seconds one clear error naming `what`."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TradeopsError(f"{bench}: timed out waiting for {what}")
        time.sleep(0.02)
