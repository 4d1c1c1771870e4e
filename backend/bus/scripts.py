"""Server-side Lua scripts run by their SHA, loaded again when the server has lost them (a restart,
SCRIPT FLUSH, a cluster node that never had them): what every atomic step of ours (the fenced
commit, the OMS's compare-and-set) does."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError, ResponseError


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, call: Callable[..., Awaitable[Any]], keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA through `call(*args)` (a fast connection's or redis-py's execute_command)."""
        try:
            return await call("EVALSHA", self.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not isinstance(exc, NoScriptError) and "NOSCRIPT" not in str(exc):
                raise
            # EVAL runs it and caches it on the server that holds the keys (a cluster's node: SCRIPT
            # LOAD names no key, so it could not be routed there)
            return await call("EVAL", self.source, len(keys), *keys, *args)
