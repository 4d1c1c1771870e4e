"""A container's health check: `python -m backend.runtime.healthcheck SERVICE INSTANCE`.

Healthy (exit 0) when the instance's heartbeat hash (`health:<service>:<instance>`) says `running`
and was written within `--max-age` seconds; otherwise one line saying why, exit 1. It reads the bus
URL from TRADEOPS_REDIS_URL, as the service itself does, so it sees what the service sees."""

from __future__ import annotations

import argparse
import os
import sys
import time

import redis

from backend.bus import streams


def check(r: redis.Redis, service: str, instance: str, max_age_s: float) -> str | None:
    """None when healthy, else the reason."""
    key = streams.HEALTH_KEY.format(service=service, instance=instance)
    state, ts_ns = r.hmget(key, "state", "ts_ns")
    if state is None:
        return f"no heartbeat at {key}"
    if state != b"running":
        return f"{instance} is {state.decode()}"
    age = time.time() - int(ts_ns or 0) / 1e9
    if age > max_age_s:
        return f"last heartbeat {age:.1f}s ago (more than {max_age_s:g}s)"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="healthcheck", description=__doc__.splitlines()[0])
    p.add_argument("service")
    p.add_argument("instance")
    p.add_argument("--max-age", type=float, default=float(streams.HEALTH_TTL_S), metavar="S")
    args = p.parse_args(argv)
    url = os.environ.get("TRADEOPS_REDIS_URL")
    if not url:
        print("TRADEOPS_REDIS_URL is not set", file=sys.stderr)
        return 1
    try:
        r = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        why = check(r, args.service, args.instance, args.max_age)
    except redis.RedisError as exc:
        why = f"redis at {url} unreachable: {exc}"
    if why:
        print(why, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
