"""The user data stream: listen keys (`POST /api/v3/userDataStream` makes one, or gives the
account's live one again; `PUT` keeps it alive for another 60 minutes; `DELETE` closes it) and
the websocket connections on `/ws/<listenKey>` that receive the account's `executionReport`
and `outboundAccountPosition` events. A key not kept alive expires: its connections get
`listenKeyExpired` and are closed."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast

TTL_S = 3600.0


class UserStreams:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self.keys: dict[str, list[Any]] = {}  # listen key -> [account, expires (monotonic)]
        self.conns: dict[str, set[ServerConnection]] = {}

    def create(self, account: str) -> str:
        for key, entry in self.keys.items():
            if entry[0] == account and entry[1] > time.monotonic():
                entry[1] = time.monotonic() + self.ttl_s
                return key
        key = secrets.token_urlsafe(45).replace("-", "").replace("_", "")[:60]
        self.keys[key] = [account, time.monotonic() + self.ttl_s]
        return key

    def keepalive(self, account: str, key: str) -> bool:
        entry = self.keys.get(key)
        if entry is None or entry[0] != account or entry[1] <= time.monotonic():
            return False
        entry[1] = time.monotonic() + self.ttl_s
        return True

    def close(self, account: str, key: str) -> bool:
        entry = self.keys.get(key)
        if entry is None or entry[0] != account:
            return False
        del self.keys[key]
        for c in self.conns.pop(key, set()):
            _close(c)
        return True

    def account_of(self, key: str) -> str | None:
        entry = self.keys.get(key)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else None

    def attach(self, key: str, conn: ServerConnection) -> None:
        self.conns.setdefault(key, set()).add(conn)

    def detach(self, key: str, conn: ServerConnection) -> None:
        s = self.conns.get(key)
        if s is not None:
            s.discard(conn)

    def send(self, account: str, events: list[dict[str, Any]]) -> None:
        targets: set[ServerConnection] = set()
        for key, entry in self.keys.items():
            if entry[0] == account:
                targets |= self.conns.get(key, set())
        if targets:
            for ev in events:
                broadcast(targets, json.dumps(ev, separators=(",", ":")))

    def sweep(self) -> None:
        """Expire the keys not kept alive."""
        now = time.monotonic()
        for key, entry in list(self.keys.items()):
            if entry[1] <= now:
                del self.keys[key]
                conns = self.conns.pop(key, set())
                if conns:
                    ms = time.time_ns() // 1_000_000
                    broadcast(conns, json.dumps({"e": "listenKeyExpired", "E": ms, "listenKey": key}))
                    for c in conns:
                        _close(c)


def _close(conn: ServerConnection) -> None:
    import asyncio

    try:
        asyncio.get_running_loop().create_task(conn.close())
    except RuntimeError:
        pass
