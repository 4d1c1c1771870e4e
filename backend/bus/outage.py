"""When Redis is away, as opposed to refusing us for a reason that a retry will not fix.

A loop that talks to Redis (a worker's reads, a broadcast read, a periodic task) retries with
backoff while Redis is away and fails loudly otherwise. "Away" is a lost or refused connection,
a timeout, and the error replies a healthy server gives while it cannot serve writes for a while:
LOADING (reading its AOF after a restart), NOREPLICAS (min-replicas-to-write not met),
MASTERDOWN / READONLY (a replica during a failover), TRYAGAIN / CLUSTERDOWN (a cluster moving
slots), MOVED / ASK (a slot served elsewhere now: the caller learns the slots again and
reconnects). NOPERM, WRONGTYPE, OOM and the rest are not: retrying them only hides a bug.
"""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: what a loop catches before asking `redis_away` (ResponseError: some of them are "away")
CAUGHT: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError, ResponseError)

#: error replies of a server that cannot serve us now but will
TRANSIENT_REPLIES = ("LOADING", "NOREPLICAS", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK")


def redis_away(exc: BaseException) -> bool:
    """True when `exc` means "Redis is away for now": retry later instead of failing."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(TRANSIENT_REPLIES)
