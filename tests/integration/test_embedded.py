"""The embedded redis-server: start, find, refuse a held data dir, clean a dead leftover, stop."""

from __future__ import annotations

import os
import signal
import socket

import pytest
import redis

from backend.bus import connection, embedded
from backend.bus.embedded import DataDirHeld, EmbeddedRedis
from backend.errors import RedisUnavailable
from tests.conftest import wait_for


def test_start_writes_url_runs_with_aof_and_stops(tmp_path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        assert (tmp_path / "redis" / "redis.url").read_text().strip() == url
        assert connection.resolve_url(None, tmp_path) == url
        c = connection.connect(url)
        assert c.config_get("appendonly")["appendonly"] == "yes"
        assert c.config_get("appendfsync")["appendfsync"] == "everysec"
        assert c.config_get("auto-aof-rewrite-min-size")["auto-aof-rewrite-min-size"] == str(512 * 1024 * 1024)
        assert c.config_get("bind")["bind"].startswith("127.0.0.1")
        c.close()
    finally:
        server.stop()
    assert not (tmp_path / "redis" / "redis.url").exists()
    with pytest.raises(RedisUnavailable, match="no Redis: none is running for data dir"):
        connection.require_url(None, tmp_path)


def test_a_held_data_dir_is_refused(tmp_path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        with pytest.raises(DataDirHeld, match=r"is held by a live redis-server \(pid \d+"):
            EmbeddedRedis(tmp_path).start()
        assert redis.Redis.from_url(first.url).ping()


def test_a_dead_leftover_is_cleaned_up(tmp_path) -> None:
    first = EmbeddedRedis(tmp_path, detach=True)
    url1 = first.start()
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    assert (tmp_path / "redis" / "redis.pid").exists()  # the leftover
    with EmbeddedRedis(tmp_path) as second:
        assert second.url and redis.Redis.from_url(second.url).ping()
        assert connection.resolve_url(None, tmp_path) == second.url
    del url1


def test_data_survives_a_restart_through_aof(tmp_path) -> None:
    with EmbeddedRedis(tmp_path) as s:
        redis.Redis.from_url(s.url).xadd("orders.new", {"d": b"x"})
    with EmbeddedRedis(tmp_path) as s:
        c = redis.Redis.from_url(s.url)
        wait_for(lambda: c.xlen("orders.new") == 1, 5)


def test_unreachable_redis_is_one_clear_line() -> None:
    port = embedded.free_port()
    with pytest.raises(RedisUnavailable, match=rf"cannot reach Redis at redis://127.0.0.1:{port}/0: "):
        connection.connect(f"redis://127.0.0.1:{port}/0", timeout=0.5)


def test_local_processes_get_the_unix_socket(tmp_path) -> None:
    with EmbeddedRedis(tmp_path) as s:
        assert s.url is not None
        local = embedded.local_url(s.url, tmp_path)
        assert local == f"unix://{tmp_path / 'redis' / 'redis.sock'}?db=0"
        c = redis.Redis.from_url(local)
        c.set("k", "v")
        assert redis.Redis.from_url(s.url).get("k") == b"v"  # the same server over TCP
        c.close()
        other = f"redis://127.0.0.1:{embedded.free_port()}/0"
        assert embedded.local_url(other, tmp_path) == other  # not ours: unchanged
    assert not (tmp_path / "redis" / "redis.sock").exists()
    assert embedded.local_url(s.url, tmp_path) == s.url  # stopped: no socket to offer


def test_a_restart_comes_back_on_the_recorded_port(tmp_path) -> None:
    first = EmbeddedRedis(tmp_path, detach=True)
    url = first.start()
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    with EmbeddedRedis(tmp_path) as second:  # after a crash: the same URL and socket for every client
        assert second.url == url
    with EmbeddedRedis(tmp_path) as third:  # after a clean stop too
        assert third.url == url


def test_a_recorded_port_someone_else_took_gives_a_free_one(tmp_path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        url = first.url
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", embedded.recorded_port(tmp_path)))
        other.listen()
        with EmbeddedRedis(tmp_path) as second:
            assert second.url and second.url != url and redis.Redis.from_url(second.url).ping()


@pytest.mark.parametrize(
    ("banner", "policy"),
    [
        ("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64", "always"),  # no WAITAOF
        ("Redis server v=7.2.4 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64", "everysec"),
        ("Valkey server v=9.1.2 sha=00000000:1 malloc=libc bits=64", "everysec"),
        ("something else", "always"),
    ],
)
def test_appendfsync_follows_waitaof_support(tmp_path, banner: str, policy: str) -> None:
    binary = tmp_path / "redis-server"
    binary.write_text(f"#!/bin/sh\necho '{banner}'\n")
    binary.chmod(0o755)
    assert embedded.appendfsync_policy(str(binary)) == policy
