"""The whole stack for `tradeops up` / `down` / `ps` / `demo`: the embedded Redis (unless a Redis
URL is configured), the local exchange and every built service, under a supervisor of the chosen
runtime: `process` (default) or `docker` (`backend.runtime.docker`). Redis is started first; the
supervisor then keeps the embedded one running too (`backend.runtime.redis_watch`)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from backend import dashboards
from backend.bus import connection, embedded
from backend.errors import TradeopsError
from backend.health import read_heartbeats
from backend.runtime.commands import supervisor_command
from backend.runtime.process import ProcessSupervisor
from backend.runtime.scrape import scraped
from backend.runtime.supervisor import Supervisor, read_table
from backend.settings import Settings

RUNTIMES = ("process", "docker")


def make_supervisor(
    runtime: str,
    redis_url: str,
    data_dir: Path,
    *,
    exchange_rate: float = 2000.0,
    network: str = "host",
    image: str | None = None,
    **kw: Any,
) -> Supervisor:
    """A supervisor of the named runtime (docker: `network` mode and `image`, see its module)."""
    check_runtime(runtime)
    if runtime == "docker":
        from backend.runtime.docker import DockerSupervisor

        return DockerSupervisor(redis_url, data_dir, exchange_rate=exchange_rate, network=network, image=image, **kw)
    return ProcessSupervisor(redis_url, data_dir, exchange_rate=exchange_rate, **kw)


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise TradeopsError(f"unknown runtime {runtime!r} (use {' or '.join(RUNTIMES)})")


class Stack:
    def __init__(
        self,
        settings: Settings,
        runtime: str = "process",
        exchange_rate: float = 2000.0,
        *,
        network: str = "host",
        image: str | None = None,
    ) -> None:
        check_runtime(runtime)
        self.settings = settings
        self.runtime = runtime
        self.network = network
        self.image = image
        self.data_dir = settings.resolved_data_dir()
        self.exchange_rate = exchange_rate
        self.redis_server: embedded.EmbeddedRedis | None = None
        self.url = ""
        self.supervisor: Supervisor | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.data_dir / "logs" / "supervisor.log"

    def _check_docker(self) -> None:
        """Before anything starts: an engine answers, the network mode fits the Redis, the image
        is there (the local one is made now), so a failure is one line here, not in a log."""
        from backend.runtime.docker import check_network_mode, connect_engine
        from backend.runtime.image import image_spec

        check_network_mode(self.network, self.settings.redis_url)
        client = connect_engine()
        self.image = image_spec(client, self.image).ref
        client.close()

    @property
    def keeps_redis(self) -> bool:
        """The stack runs on the data dir's embedded Redis, which its supervisor keeps running."""
        return not self.settings.redis_url

    def _redis(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        live = embedded.live_info(self.data_dir)
        if live:
            return live.url
        self.redis_server = embedded.EmbeddedRedis(
            self.data_dir, detach=True, maxmemory=self.settings.redis_maxmemory, acl=True, settings=self.settings
        )
        return self.redis_server.start()

    @property
    def auth(self) -> connection.Login | None:
        """The stack's own login (admin)."""
        return connection.admin_login(self.settings)

    def up(self, *, detach: bool = True, timeout: float = 60.0, progress: Callable[[str], None] | None = None) -> str:
        """Start everything; return once every instance heartbeats. detach: the supervisor runs as
        its own process (`tradeops up`); otherwise in a thread of this process (`tradeops demo`).
        `progress` is told each step and, while waiting, how many instances are running."""
        say = progress or (lambda _line: None)
        from backend.services import check_sections

        check_sections(self.settings)  # a misspelt [services.X] key is an error now, not when X runs
        table = read_table(self.data_dir)
        if table and _alive(table.get("supervisor_pid", 0)):
            raise TradeopsError(
                f"a stack is already up for {self.data_dir} "
                f"(supervisor pid {table['supervisor_pid']}); `tradeops down` stops it"
            )
        if self.runtime == "docker":
            say("checking the Docker engine and the image (the local image is made when missing) ...")
            self._check_docker()
            say(f"image {self.image}")
        self.url = self._redis()
        say(f"Redis on {_no_password(self.url)}; starting the supervisor ({self.runtime} runtime) ...")
        if detach:
            log = self._log
            log.parent.mkdir(parents=True, exist_ok=True)
            docker = self.runtime == "docker"
            cmd = supervisor_command(
                self.data_dir,
                self.url,
                self.exchange_rate,
                self.runtime,
                network=self.network if docker else None,
                image=str(self.image) if docker else None,
                keep_redis=self.keeps_redis,
            )
            with open(log, "ab") as out:  # the supervisor finds its own login (admin), no one else's
                self._proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env=connection.login_env(None, self.data_dir, dict(os.environ)),
                )
        else:
            self.supervisor = make_supervisor(
                self.runtime,
                self.url,
                self.data_dir,
                exchange_rate=self.exchange_rate,
                network=self.network,
                image=self.image,
                keep_redis=self.keeps_redis,
                redis_server=self.redis_server,
                auth=self.auth,
            )
            self._thread = threading.Thread(target=self.supervisor.run, name="supervisor", daemon=True)
            self._thread.start()
        self.wait_healthy(timeout, say)
        dashboards.write(dashboards.default_dir(self.data_dir))  # for the metrics the instances serve
        return self.url

    def wait_healthy(self, timeout: float, say: Callable[[str], None] | None = None) -> None:
        r = connection.client(self.url, self.auth)
        deadline = time.monotonic() + timeout
        last: tuple[int, int] | None = None
        last_said = time.monotonic()
        try:
            while time.monotonic() < deadline:
                table = read_table(self.data_dir)
                if self._proc is not None and self._proc.poll() is not None:
                    raise TradeopsError(
                        f"the supervisor exited with {self._proc.returncode}: {_last_line(self._log)} (see {self._log})"
                    )
                if table and table["instances"]:
                    want = {(i["service"], i["instance"]) for i in table["instances"] if i["service"] != "exchange"}
                    beats = {(b.service, b.instance) for b in read_heartbeats(r) if b.state == "running"}
                    if want and want <= beats and {i for _, i in want} <= scraped(self.data_dir):
                        return  # every instance healthy, and in the Prometheus targets
                    now = (len(want & beats), len(want))
                    quiet = time.monotonic() - last_said
                    if say and ((now != last and quiet >= 2) or quiet > 10):  # a line per change, 2 s apart
                        waiting = sorted({s for s, _ in want - beats})
                        more = f" +{len(waiting) - 6}" if len(waiting) > 6 else ""
                        say(f"{now[0]}/{now[1]} instances running; waiting for {', '.join(waiting[:6])}{more}")
                        last, last_said = now, time.monotonic()
                elif say and time.monotonic() - last_said > 10:
                    say("the supervisor is still starting the instances (its log: " + str(self._log) + ")")
                    last_said = time.monotonic()
                time.sleep(0.1)
        finally:
            r.close()
        raise TradeopsError(f"the stack did not become healthy within {timeout:.0f}s; see {self.data_dir / 'logs'}")

    def down(self) -> list[str]:
        done = []
        table = read_table(self.data_dir)
        if self.supervisor is not None:
            self.supervisor.stop()  # the loop first, so it restarts nothing while we stop
            if self._thread:
                self._thread.join(10)
            self.supervisor.shutdown()
            done.append("supervisor (in process)")
        else:
            pid = table.get("supervisor_pid") if table else None
            if pid and _alive(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 60
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                done.append(f"supervisor pid {pid}")
        if table and table.get("runtime") == "docker":
            from backend.runtime.docker import remove_stack

            try:
                left = remove_stack(table.get("docker_host"), table["stack"])  # what a supervisor that died left
            except TradeopsError as exc:
                left = [f"none ({exc})"]
            if left:
                done.append(f"containers {', '.join(left)}")
        # the embedded server this stack started (the demo then points its settings at it), or
        # the data dir's when no other Redis is configured (`tradeops down` from another shell)
        if self.redis_server is not None or not self.settings.redis_url:
            info = embedded.stop_data_dir(self.data_dir)
            if info:
                done.append(f"redis {info.url}")
        return done

    def ps(self) -> list[dict[str, Any]]:
        table = read_table(self.data_dir)
        if not table:
            return []
        beats: dict[str, Any] = {}
        unreachable = ""
        try:
            r = connection.client(table["redis_url"], self.auth, socket_connect_timeout=2, socket_timeout=5)
            try:
                beats = {b.instance: b for b in read_heartbeats(r)}
            finally:
                r.close()
        except (redis.RedisError, OSError, ValueError) as exc:
            unreachable = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        rows = []
        for i in table["instances"]:
            hb = beats.get(i["instance"])
            rows.append(
                {
                    **i,
                    "runtime": table.get("runtime", "process"),
                    "health": health_text(i, hb, unreachable),
                    "uptime_s": round(time.time() - i["started"], 1),
                    "rate": hb.rate if hb else None,
                    "reason": hb.reason if hb else "",
                    "partitions": owned_partitions(hb),
                }
            )
        return rows

    @property
    def redis_url(self) -> str | None:
        """The Redis the data dir's stack runs on (None: no stack)."""
        table = read_table(self.data_dir)
        return table.get("redis_url") if table else None


def health_text(instance: dict[str, Any], hb: Any, unreachable: str = "") -> str:
    """An instance's health as `ps` says it: its heartbeat's state (and why, when degraded), or
    why there is none; the container engine's health check beside it when they disagree."""
    engine = instance.get("engine_health") or ""
    if hb is None:
        if unreachable:
            health = f"unknown: the stack's Redis does not answer ({unreachable})"
        elif instance["service"] == "exchange":
            health = "n/a"
        else:
            health = "no heartbeat"
        return f"{health} ({engine})" if engine else health
    health = hb.state
    if hb.state == "degraded":
        health += f": {hb.reason or 'no reason given'}"  # why it makes no progress
    if engine == "unhealthy" and hb.state == "running":
        # the heartbeat is fresh (its hash expires within seconds): the engine's probe failed or timed out
        health += " (Docker: unhealthy, but the heartbeat is fresh: its health check failed or timed out)"
    elif engine:
        health += f" ({engine})"  # the container's health check, as the engine saw it
    return health


def _no_password(url: str) -> str:
    """The URL to print: a password in it replaced by ***."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    if u.password is None:
        return url
    return url.replace(f":{u.password}@", ":***@", 1)


def owned_partitions(hb: Any) -> str:
    """The partitions a heartbeat says its instance owns, as `0,2 of 4` ("" when not partitioned)."""
    if hb is None or not isinstance(hb.extra, dict) or "partitions" not in hb.extra:
        return ""
    owned = hb.extra.get("partitions") or []
    return f"{','.join(str(p) for p in owned) or 'none'} of {hb.extra.get('of', '?')}"


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def _alive(pid: int) -> bool:
    return bool(pid) and embedded._alive(pid)


def serve_supervisor(
    redis_url: str, data_dir: Path, exchange_rate: float, runtime: str = "process", **options: Any
) -> None:
    """Run the supervisor in the foreground until SIGTERM (backend.runtime.supervise)."""
    sup = make_supervisor(runtime, redis_url, data_dir, exchange_rate=exchange_rate, **options)
    signal.signal(signal.SIGTERM, lambda *_: sup.stop())
    signal.signal(signal.SIGINT, lambda *_: sup.stop())
    try:
        sup.run()
    finally:
        sup.shutdown()
