"""The whole stack for `tradeops up` / `down` / `ps` / `demo`: the embedded Redis (unless a Redis
URL is configured), the local exchange and every built service, under a process supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from backend.bus import embedded
from backend.errors import TradeopsError
from backend.health import read_heartbeats
from backend.runtime.process import ProcessSupervisor, read_table
from backend.settings import Settings


class Stack:
    def __init__(self, settings: Settings, runtime: str = "process", exchange_rate: float = 2000.0) -> None:
        if runtime != "process":
            raise TradeopsError(f"runtime {runtime!r} is not available in this build (use process)")
        self.settings = settings
        self.data_dir = settings.resolved_data_dir()
        self.exchange_rate = exchange_rate
        self.redis_server: embedded.EmbeddedRedis | None = None
        self.url = ""
        self.supervisor: ProcessSupervisor | None = None
        self._thread: threading.Thread | None = None

    def _redis(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        live = embedded.live_info(self.data_dir)
        if live:
            return live.url
        self.redis_server = embedded.EmbeddedRedis(self.data_dir, detach=True)
        return self.redis_server.start()

    def up(self, *, detach: bool = True, timeout: float = 60.0) -> str:
        """Start everything; return once every instance heartbeats. detach: the supervisor runs as
        its own process (`tradeops up`); otherwise in a thread of this process (`tradeops demo`)."""
        table = read_table(self.data_dir)
        if table and _alive(table.get("supervisor_pid", 0)):
            raise TradeopsError(f"a stack is already up for {self.data_dir} "
                                f"(supervisor pid {table['supervisor_pid']}); `tradeops down` stops it")
        self.url = self._redis()
        if detach:
            log = self.data_dir / "logs" / "supervisor.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as out:
                subprocess.Popen([sys.executable, "-m", "console.cli", "--data-dir", str(self.data_dir),
                                  "--redis-url", self.url, "supervise", "--rate", str(self.exchange_rate)],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        else:
            self.supervisor = ProcessSupervisor(self.url, self.data_dir, exchange_rate=self.exchange_rate)
            self._thread = threading.Thread(target=self.supervisor.run, name="supervisor", daemon=True)
            self._thread.start()
        self.wait_healthy(timeout)
        return self.url

    def wait_healthy(self, timeout: float) -> None:
        r = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                table = read_table(self.data_dir)
                if table and table["instances"]:
                    want = {(i["service"], i["instance"]) for i in table["instances"] if i["service"] != "exchange"}
                    beats = {(b.service, b.instance) for b in read_heartbeats(r) if b.state == "running"}
                    if want and want <= beats:
                        return
                time.sleep(0.1)
        finally:
            r.close()
        raise TradeopsError(f"the stack did not become healthy within {timeout:.0f}s; see {self.data_dir / 'logs'}")

    def down(self) -> list[str]:
        done = []
        if self.supervisor is not None:
            self.supervisor.stop()  # the loop first, so it restarts nothing while we stop
            if self._thread:
                self._thread.join(10)
            self.supervisor.shutdown()
            done.append("supervisor (in process)")
        else:
            table = read_table(self.data_dir)
            pid = table.get("supervisor_pid") if table else None
            if pid and _alive(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                done.append(f"supervisor pid {pid}")
        if not self.settings.redis_url:
            info = embedded.stop_data_dir(self.data_dir)
            if info:
                done.append(f"redis {info.url}")
        return done

    def ps(self) -> list[dict[str, Any]]:
        table = read_table(self.data_dir)
        if not table:
            return []
        beats: dict[str, Any] = {}
        try:
            r = redis.Redis.from_url(table["redis_url"], socket_connect_timeout=1)
            beats = {b.instance: b for b in read_heartbeats(r)}
            r.close()
        except redis.RedisError:
            pass
        rows = []
        for i in table["instances"]:
            hb = beats.get(i["instance"])
            rows.append({**i, "health": hb.state if hb else ("n/a" if i["service"] == "exchange" else "no heartbeat"),
                         "uptime_s": round(time.time() - i["started"], 1),
                         "rate": hb.rate if hb else None})
        return rows


def _alive(pid: int) -> bool:
    return bool(pid) and embedded._alive(pid)


def serve_supervisor(redis_url: str, data_dir: Path, exchange_rate: float) -> None:
    """`tradeops supervise`: run the supervisor in the foreground until SIGTERM."""
    sup = ProcessSupervisor(redis_url, data_dir, exchange_rate=exchange_rate)
    signal.signal(signal.SIGTERM, lambda *_: sup.stop())
    signal.signal(signal.SIGINT, lambda *_: sup.stop())
    try:
        sup.run()
    finally:
        sup.shutdown()
