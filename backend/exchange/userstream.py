"""The user data stream: listen keys (`POST /api/v3/userDataStream` makes one, or gives the
account's live one again; `PUT` keeps it alive for another 60 minutes; `DELETE` closes it) and
the streams named by the key (`/ws/<listenKey>`, or SUBSCRIBE to it: `backend.exchange.wsapi`)
that receive the account's `executionReport` and `outboundAccountPosition` events. A key not
kept alive expires: its connections get `listenKeyExpired` and are closed."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

TTL_S = 3600.0


class UserStreams:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self.keys: dict[str, list[Any]] = {}  # listen key -> [account, expires (monotonic)]
        self.sink: Callable[[str, dict[str, Any]], None] | None = None
        """Sends an event on the stream named by a listen key (the websocket hub's `send`)."""
        self.on_gone: Callable[[str, dict[str, Any] | None], None] | None = None
        """Ends a listen key's stream, after a last event (the hub's `end_stream`)."""

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
        if self.on_gone is not None:
            self.on_gone(key, None)
        return True

    def account_of(self, key: str) -> str | None:
        entry = self.keys.get(key)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else None

    def send(self, account: str, events: list[dict[str, Any]]) -> None:
        if self.sink is None:
            return
        for key, entry in self.keys.items():
            if entry[0] == account:
                for ev in events:
                    self.sink(key, ev)

    def sweep(self) -> None:
        """Expire the keys not kept alive: their streams get `listenKeyExpired` and end."""
        now = time.monotonic()
        for key, entry in list(self.keys.items()):
            if entry[1] <= now:
                del self.keys[key]
                if self.on_gone is not None:
                    self.on_gone(key, {"e": "listenKeyExpired", "E": time.time_ns() // 1_000_000, "listenKey": key})
