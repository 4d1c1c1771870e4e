"""Test session fixtures: one real redis-server (or valkey-server) on a free loopback port,
started for the session and stopped after it; each test starts from an empty database."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from backend.bus.embedded import EmbeddedRedis
from tests.s3 import SessionS3

# Tests never touch the operator's real data/config dirs.
os.environ.pop("TRADEOPS_REDIS_URL", None)
os.environ.pop("TRADEOPS_DATA_DIR", None)


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("xdg")
    old = {k: os.environ.get(k) for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME")}
    os.environ["XDG_DATA_HOME"] = str(home / "data")
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _one_layout_per_test() -> Iterator[None]:
    """Loading settings sets the process's partition layout (backend/bus/partitions.py): a test
    that loads a split one leaves none behind for the next."""
    from backend.bus import partitions

    yield
    partitions.use({})


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-session"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SessionS3]:
    """A real S3 server (SeaweedFS) on loopback for the session, its credentials required, its
    bucket made; the test is skipped, with the reason, when it cannot start."""
    server = SessionS3()
    why = server.start()
    if why:
        server.stop()
        pytest.skip(f"no S3 server for the S3 tests: {why}")
    yield server
    server.stop()


@pytest.fixture
def s3_infra(s3_server: SessionS3, tmp_path: Path) -> dict[str, str]:
    """`[infra]` settings for the session's S3 server, under a prefix of this test's own; the
    credentials are in the secrets store of the data dir `tmp_path / "data"` (0600 files)."""
    from backend import secrets

    p = secrets.Provider(tmp_path / "data", environ={})
    p.store(secrets.S3_ACCESS_KEY_ID, s3_server.access_key_id)
    p.store(secrets.S3_SECRET_ACCESS_KEY, s3_server.secret_access_key)
    return {"minio": s3_server.endpoint, "s3_bucket": s3_server.bucket, "s3_prefix": tmp_path.name}


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session's redis-server, emptied for this test."""
    assert redis_server.url
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01, what: str = "") -> Any:
    """Poll `pred` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


async def await_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01, what: str = "") -> Any:
    """Async `wait_for`: `pred` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or pred}")
        await asyncio.sleep(interval)


@pytest.fixture
def tradeops_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Environment for running `tradeops` as a subprocess against the test Redis."""
    env = dict(os.environ)
    env["TRADEOPS_REDIS_URL"] = redis_url
    env["TRADEOPS_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONUNBUFFERED"] = "1"
    return env


TRADEOPS = [sys.executable, "-m", "console.cli"]


from tests.keys import keys, team  # noqa: E402,F401  (SSH keys the tests generate, a registry signed with them)
