"""The embedded Redis kept running by the stack's supervisor, like a service instance: when its
process is gone (killed, crashed), it is started again on the same port and data dir (its AOF is
read again), with backoff, and the services reconnect to the same URL and unix socket. Only the
server is restarted: the instances that rode through the outage keep running.

The restart runs in a thread of its own (reading a big AOF takes seconds), so the supervisor keeps
polling its instances meanwhile: one that exited is reaped and restarted, never left a zombie. A
server the supervisor started is its child, and polling it reaps it too; one started by another
process (`tradeops up` starts it before the supervisor) is watched through the pid in the data dir."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from backend.bus import embedded
from backend.errors import TradeopsError

log = logging.getLogger("tradeops.supervisor")

BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0
"""A server (or, in the supervisor, an instance) that ran this long before it ended is restarted
after the shortest backoff again."""


class RedisWatch:
    def __init__(self, data_dir: Path, server: embedded.EmbeddedRedis | None = None) -> None:
        self.data_dir = Path(data_dir)
        info = embedded.read_info(self.data_dir)
        if info is None:
            raise TradeopsError(f"no embedded Redis recorded in {self.data_dir} to keep running")
        self.url = info.url
        self.port = urlparse(info.url).port or embedded.recorded_port(self.data_dir)
        self.pid = info.pid
        self.proc: subprocess.Popen[bytes] | None = server.proc if server is not None else None
        self.started = time.monotonic()
        self.restarts = 0
        self.failures = 0  # restarts in a row that did not stay up STABLE_S
        self.next_restart = 0.0
        self._starting: threading.Thread | None = None
        self._started: embedded.EmbeddedRedis | Exception | None = None

    def alive(self) -> bool:
        if self.proc is not None and self.proc.pid == self.pid:
            return self.proc.poll() is None  # our child: poll() reaps it
        return embedded._alive(self.pid)

    def check(self) -> bool:
        """Whether the server runs; start it again when it is gone and its backoff has passed
        (in the background: False until it answers)."""
        if self._starting is not None:
            if self._starting.is_alive():
                return False
            self._starting = None
            return self._started_one()
        if self.alive():
            return True
        now = time.monotonic()
        if not self.next_restart:
            if now - self.started >= STABLE_S:
                self.failures = 0
            backoff = 0.0 if not self.failures else min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (self.failures - 1))
            self.next_restart = now + backoff
            log.warning(
                "redis %s (pid %s) is gone; restarting it on the same port and data dir%s",
                self.url,
                self.pid,
                f" in {backoff:.1f}s" if backoff else "",
            )
        if now < self.next_restart:
            return False
        self.next_restart = 0.0
        self.failures += 1
        live = embedded.live_info(self.data_dir)
        if live is not None:  # started again by someone else (`tradeops redis up`): watch that one
            self._adopt(live)
            return True
        self._starting = threading.Thread(target=self._start, name="redis-restart", daemon=True)
        self._starting.start()
        return False

    def _start(self) -> None:
        server = embedded.EmbeddedRedis(self.data_dir, port=self.port, detach=True)
        try:
            server.start()
            self._started = server
        except Exception as exc:  # noqa: BLE001 - reported by check() on the supervisor's thread
            self._started = exc

    def _started_one(self) -> bool:
        got, self._started = self._started, None
        self.started = time.monotonic()  # a failed start counts as a short life
        if not isinstance(got, embedded.EmbeddedRedis) or got.proc is None:
            log.warning("redis restart failed: %s", got)
            return False
        self.proc, self.pid = got.proc, got.proc.pid
        self.restarts += 1
        log.warning("redis back on %s (pid %d, restart %d)", got.url, self.pid, self.restarts)
        return True

    def _adopt(self, live: embedded.ServerInfo) -> None:
        self.pid, self.started = live.pid, time.monotonic()
        if live.url != self.url:
            log.error(
                "redis of %s is back on %s, not %s: the stack does not follow it there (`tradeops down` and `up` do)",
                self.data_dir,
                live.url,
                self.url,
            )
        else:
            log.warning("redis %s is back (pid %d), started by another process", self.url, self.pid)

    def close(self, timeout: float = 30.0) -> None:
        """Wait for a restart in progress to finish (so `tradeops down` finds the server it started)."""
        if self._starting is not None:
            self._starting.join(timeout)
