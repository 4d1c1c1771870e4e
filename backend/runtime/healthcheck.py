"""A container's health check: `python -m backend.runtime.healthcheck SERVICE [INSTANCE]`.

Healthy (exit 0) when the instance's heartbeat hash (`health:<service>:<instance>`) says `running`
and was written within `--max-age` seconds; otherwise one line saying why, exit 1. Without INSTANCE,
the instance is the one TRADEOPS_INSTANCE names (what a swarm task or a pod runs). It reads the bus
URL from TRADEOPS_REDIS_URL, as the service itself does, so it sees what the service sees.

The engine runs this every few seconds in every container, so it imports only the standard
library (a tenth of the CPU time of importing the Redis client and the bus package): one
connection, AUTH (as the service's own Redis user: TRADEOPS_REDIS_USER, its password from
TRADEOPS_REDIS_PASSWORD or the file TRADEOPS_REDIS_PASSWORD_FILE names, as the service finds it)
and SELECT when the URL asks for it, one HMGET."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import BinaryIO
from urllib.parse import unquote, urlparse

HEALTH_KEY = "health:{service}:{instance}"  # = backend.bus.streams.HEALTH_KEY (a test keeps them equal)
HEALTH_TTL_S = 5  # = backend.bus.streams.HEALTH_TTL_S


class RespError(Exception):
    """Redis answered with an error, or not in RESP."""


def _command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


Reply = bytes | list["Reply"] | None


def _reply(f: BinaryIO) -> Reply:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise RespError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"-":
        raise RespError(rest.decode(errors="replace"))
    if kind in (b"+", b":"):
        return rest
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_reply(f) for _ in range(n)]
    raise RespError(f"unexpected reply {line[:20]!r}")


def login() -> tuple[str, str] | None:
    """(user, password) from the environment the service runs with, or None."""
    user = os.environ.get("TRADEOPS_REDIS_USER")
    password = os.environ.get("TRADEOPS_REDIS_PASSWORD")
    path = os.environ.get("TRADEOPS_REDIS_PASSWORD_FILE")
    if not password and path:
        with open(path) as f:
            password = f.read().rstrip("\r\n")
    return (user, password) if user and password else None


def hmget(
    url: str, key: str, *fields: str, timeout: float = 2.0, auth: tuple[str, str] | None = None
) -> list[bytes | None]:
    """HMGET over one short connection to the Redis at `url` (redis:// or rediss://), logged in as
    `auth` (user, password) when given."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=timeout)
    if u.scheme == "rediss":
        import ssl

        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=u.hostname)
    with sock, sock.makefile("rb") as f:
        calls: list[tuple[str, ...]] = []
        if auth is not None:
            calls.append(("AUTH", *auth))
        elif u.password:
            calls.append(
                ("AUTH", unquote(u.username), unquote(u.password)) if u.username else ("AUTH", unquote(u.password))
            )
        db = u.path.strip("/")
        if db and db != "0":
            calls.append(("SELECT", db))
        calls.append(("HMGET", key, *fields))
        sock.sendall(b"".join(_command(*c) for c in calls))
        replies = [_reply(f) for _ in calls]
    last = replies[-1]
    if not isinstance(last, list):
        raise RespError(f"unexpected HMGET reply {last!r}")
    return [v if isinstance(v, bytes) else None for v in last]


def check(url: str, service: str, instance: str, max_age_s: float = HEALTH_TTL_S) -> str | None:
    """None when healthy, else the reason."""
    key = HEALTH_KEY.format(service=service, instance=instance)
    state, ts_ns, reason = hmget(url, key, "state", "ts_ns", "reason", auth=login())
    if state is None:
        return f"no heartbeat at {key}"
    if state != b"running":
        return f"{instance} is {state.decode()}" + (f": {reason.decode()}" if reason else "")
    age = time.time() - int(ts_ns or 0) / 1e9
    if age > max_age_s:
        return f"last heartbeat {age:.1f}s ago (more than {max_age_s:g}s)"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="healthcheck", description=__doc__.splitlines()[0])
    p.add_argument("service")
    p.add_argument("instance", nargs="?", default=os.environ.get("TRADEOPS_INSTANCE"))
    p.add_argument("--max-age", type=float, default=float(HEALTH_TTL_S), metavar="S")
    args = p.parse_args(argv)
    url = os.environ.get("TRADEOPS_REDIS_URL")
    if not args.instance:
        print("no INSTANCE given and TRADEOPS_INSTANCE is not set", file=sys.stderr)
        return 1
    if not url:
        print("TRADEOPS_REDIS_URL is not set", file=sys.stderr)
        return 1
    try:
        why = check(url, args.service, args.instance, args.max_age)
    except (OSError, RespError, ValueError) as exc:
        why = f"redis at {url}: {exc}"
    if why:
        print(why, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
