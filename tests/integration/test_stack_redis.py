"""The embedded Redis a stack starts is stopped with it, even once the demo has pointed its
settings at that server (the demo left its Redis running after quit)."""

from __future__ import annotations

from pathlib import Path

from backend.bus import embedded
from backend.runtime.stack import Stack
from backend.settings import Settings


def test_the_embedded_redis_a_stack_started_stops_with_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    stack = Stack(settings)
    url = stack._redis()  # what up() does first
    try:
        assert embedded.live_info(tmp_path) is not None
        settings.redis_url = url  # as `tradeops demo` does before opening the console
        done = stack.down()
        assert f"redis {url}" in done
        assert embedded.live_info(tmp_path) is None
    finally:
        embedded.stop_data_dir(tmp_path)  # never leave a server behind, whatever failed


def test_a_configured_redis_is_left_alone(tmp_path: Path, redis_url: str) -> None:
    stack = Stack(Settings(data_dir=str(tmp_path), redis_url=redis_url))
    assert stack._redis() == redis_url
    assert stack.down() == []
    assert embedded._pings(redis_url)
