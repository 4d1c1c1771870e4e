"""Finding and connecting to the bus's Redis, as which user.

Every process logs in as one Redis user (backend/bus/acl.py): a service as its own (the runtimes
set `TRADEOPS_REDIS_USER` and `TRADEOPS_REDIS_PASSWORD_FILE`, the path of its password file), the
CLI and the console as `operator` (or `TRADEOPS_REDIS_USER`), the supervisor, the stack and the
benchmarks as `admin`. The password comes from the secrets provider (backend/secrets.py). A user
with no password anywhere logs in as nobody (Redis's `default` user): what a server without ACLs
(a test's, a plain external one) expects; a server with ACLs then says NOAUTH, and the error names
where the password was looked for.

The URL never holds a password (it is printed, logged and kept in files): a URL's user name
(`redis://oms@host:6379/0`) picks the user, the password still comes from the provider.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import redis
import redis.asyncio as aioredis

from backend import secrets
from backend.bus import embedded
from backend.errors import RedisUnavailable

USER_ENV = "TRADEOPS_REDIS_USER"
ADMIN = embedded.ADMIN
OPERATOR = "operator"


@dataclass(frozen=True)
class Login:
    """A Redis user and its password (never shown: not in repr, logs or errors)."""

    user: str
    password: str = field(repr=False)

    def kwargs(self) -> dict[str, str]:
        return {"username": self.user, "password": self.password}


def user_of(default: str) -> str:
    """The Redis user of this process: TRADEOPS_REDIS_USER, else `default`."""
    return os.environ.get(USER_ENV) or default


def login(user: str, settings: Any = None, *, data_dir: Path | None = None, url: str | None = None) -> Login | None:
    """`user`'s login (a URL's user name wins), its password from the secrets provider; None when
    no source has a password for it (log in as nobody: a server without ACLs)."""
    if url:
        named = urlparse(url).username
        if named:
            user = unquote(named)
    provider = secrets.provider(settings, data_dir=data_dir)
    secret = secrets.redis_password(user)
    if os.environ.get(USER_ENV) != user:  # TRADEOPS_REDIS_PASSWORD(_FILE) hold TRADEOPS_REDIS_USER's password
        provider = secrets.Provider(
            provider.data_dir, provider.vault, environ={k: v for k, v in os.environ.items() if k.startswith("VAULT_")}
        )
    password = provider.find(secret)
    return Login(user, password) if password is not None else None


def env_login() -> Login | None:
    """The login this process was handed (TRADEOPS_REDIS_USER, and TRADEOPS_REDIS_PASSWORD or the
    file TRADEOPS_REDIS_PASSWORD_FILE names), else None."""
    user = os.environ.get(USER_ENV)
    if not user:
        return None
    password = secrets.Provider(None).find(secrets.redis_password(user))
    return Login(user, password) if password is not None else None


def operator_login(settings: Any = None, url: str | None = None) -> Login | None:
    """The login of the CLI and the console: TRADEOPS_REDIS_USER, else `operator`."""
    return login(user_of(OPERATOR), settings, url=url)


def admin_login(settings: Any = None, *, data_dir: Path | None = None, url: str | None = None) -> Login | None:
    """The login of the supervisor, the stack, the benchmarks and `tradeops redis`: `admin`."""
    return login(ADMIN, settings, data_dir=data_dir, url=url)


LOGIN_ENV = (USER_ENV, "TRADEOPS_REDIS_PASSWORD", "TRADEOPS_REDIS_PASSWORD_FILE")


def login_env(user: str | None, data_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    """`environ` for a child process that logs in as `user`: TRADEOPS_REDIS_USER and the path of
    its password file in the data dir's secrets when there is one (never the password itself);
    None: no login of this process is handed on (it finds its own)."""
    env = {k: v for k, v in environ.items() if k not in LOGIN_ENV}
    if user is not None:
        env[USER_ENV] = user
        path = secrets.Provider(data_dir, environ={}).local_path(secrets.redis_password(user))
        if path is not None and path.exists():
            env["TRADEOPS_REDIS_PASSWORD_FILE"] = str(path)
    return env


def looked_for(user: str, settings: Any = None) -> str:
    """Whose password was looked for where, in words (for an error)."""
    places = secrets.provider(settings).places(secrets.redis_password(user))
    return f"the Redis user {user!r}; looked in: {', '.join(places)}"


def resolve_url(redis_url: str | None, data_dir: Path) -> str | None:
    """`--redis-url` / TRADEOPS_REDIS_URL if given, else the embedded server of the data dir."""
    if redis_url:
        return redis_url
    info = embedded.read_info(data_dir)
    return info.url if info else None


def require_url(redis_url: str | None, data_dir: Path) -> str:
    url = resolve_url(redis_url, data_dir)
    if url is None:
        raise RedisUnavailable(
            f"no Redis: none is running for data dir {data_dir} "
            "(start one with `tradeops redis up`, `tradeops up` or `tradeops demo`, "
            "or pass --redis-url)"
        )
    return url


CLUSTER_SCHEME = "redis+cluster://"
"""A Redis Cluster: `redis+cluster://host:port/0` names any one node; the client finds the rest and
routes each command to its slot's primary (redis-py's RedisCluster), following failovers."""


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def _node_url(url: str) -> str:
    return "redis://" + url[len(CLUSTER_SCHEME) :]


def client(url: str, auth: Login | None = None, **kw: Any) -> redis.Redis:
    """A sync client of `url` logged in as `auth` (not connected yet)."""
    if auth is not None:
        kw.update(username=auth.user, password=auth.password)
    if is_cluster(url):
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(_node_url(url), **kw)  # type: ignore[return-value]
    return redis.Redis.from_url(url, **kw)


def async_client(url: str, auth: Login | None = None, **kw: Any) -> aioredis.Redis:
    if auth is not None:
        kw.update(username=auth.user, password=auth.password)
    if is_cluster(url):
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(_node_url(url), **kw)  # type: ignore[return-value]
    return aioredis.Redis.from_url(url, **kw)


def connect(url: str, *, timeout: float = 2.0, auth: Login | None = None, who: str | None = None) -> redis.Redis:
    """A sync client that has answered PING, or RedisUnavailable with one clear line (`who`: whose
    password was looked for where, `looked_for()`, said when the server asks for a login)."""
    try:
        c = client(url, auth, socket_connect_timeout=timeout)
        c.ping()
        return c
    except (redis.RedisError, OSError, ValueError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {url}: {_reason(exc, auth, who)}") from None


async def connect_async(
    url: str, *, timeout: float = 2.0, auth: Login | None = None, who: str | None = None
) -> aioredis.Redis:
    try:
        c = async_client(url, auth, socket_connect_timeout=timeout)
        await c.ping()
        return c
    except (redis.RedisError, OSError, ValueError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {url}: {_reason(exc, auth, who)}") from None


def _reason(exc: BaseException, auth: Login | None = None, who: str | None = None) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    if auth is not None:
        line = line.replace(auth.password, "***")
    low = line.lower()
    if auth is None and ("authentication required" in low or "noauth" in low or "already authenticated" in low):
        line = "the server asks for a login (it has ACL users)"
        if who:
            line += f" and no password was found for {who}"
        line += " (see `tradeops redis acl`)"
    elif "invalid username-password" in low or "wrongpass" in low:
        line += f" (as user {auth.user if auth else 'default'})"
    return line
