"""The local exchange process: the websocket market-data feed, and the REST order API when the
trading side provides one (`backend.exchange.rest`). Its URLs are written to
`<data dir>/exchange.json` so the gateways find it."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from backend.exchange.feed import FeedConfig, TradeFeed, serve_feed
from backend.exchange.keys import keep_pair, local_pair
from backend.exchange.venue import ACCOUNT, LocalVenue, VenueConfig
from backend.fileio import write_text_atomic

log = logging.getLogger("tradeops.exchange")
INFO_FILE = "exchange.json"


@dataclass
class ExchangeInfo:
    ws_url: str
    rest_url: str | None
    symbols: list[str]

    def stream_url(self, symbols: list[str] | None = None) -> str:
        names = "/".join(f"{s.lower()}@trade" for s in (symbols or self.symbols))
        return f"{self.ws_url}/stream?streams={names}"


def read_info(data_dir: Path) -> ExchangeInfo | None:
    try:
        raw = json.loads((data_dir / INFO_FILE).read_text())
        return ExchangeInfo(raw["ws_url"], raw.get("rest_url"), raw["symbols"])
    except (OSError, ValueError, KeyError):
        return None


class Exchange:
    def __init__(
        self,
        config: FeedConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        rest_port: int | None = 0,
        data_dir: Path | None = None,
        venue: VenueConfig | None = None,
    ) -> None:
        self.feed = TradeFeed(config)
        self.host, self.port, self.rest_port = host, port, rest_port
        self.data_dir = data_dir
        self.venue_config = venue
        self.venue: LocalVenue | None = None
        self.ws_server: Any = None
        self.rest_server: Any = None
        self.info: ExchangeInfo | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self.api_key = self.api_secret = ""  # set at start (backend/exchange/keys.py)

    def _with_keys(self, config: VenueConfig) -> VenueConfig:
        """`config` with its API keys: none configured, the pair of this start (local_pair: from the
        environment or generated); either way the first pair is kept in the data dir's secrets
        (0600), where the gateways find it through the secrets provider (backend/exchange/keys.py)."""
        if not config.keys:
            key, secret = local_pair(self.data_dir)
            config = replace(config, keys={key: (secret, ACCOUNT)})
        else:
            key, (secret, _) = next(iter(config.keys.items()))
            keep_pair(self.data_dir, key, secret)
        self.api_key, self.api_secret = key, secret
        return config

    async def start(self) -> ExchangeInfo:
        rest_url = None
        if self.rest_port is not None:
            self.venue = LocalVenue(self.feed, self._with_keys(self.venue_config or VenueConfig()))
            hub = self.feed.hub
            hub.venue = self.venue  # the book and user data streams
            self.venue.users.sink, self.venue.users.on_gone = hub.send, hub.end_stream
        self.ws_server = await serve_feed(self.feed, self.host, self.port)
        port = self.ws_server.sockets[0].getsockname()[1]
        if self.venue is not None and self.rest_port is not None:
            from backend.exchange.rest import create_rest_server

            self.rest_server = await create_rest_server(self.feed, self.host, self.rest_port, self.venue)
            rest_url = self.rest_server.url
        self.feed.hub.start()
        self._feed_task = asyncio.create_task(self.feed.run())
        self.info = ExchangeInfo(f"ws://{self.host}:{port}", rest_url, list(self.feed.config.symbols))
        if self.data_dir is not None:
            write_text_atomic(self.data_dir / INFO_FILE, json.dumps(self.info.__dict__) + "\n")
        log.info("exchange up", extra={"ws": self.info.ws_url, "rest": rest_url, "rate": self.feed.config.rate})
        return self.info

    async def stop(self) -> None:
        self.feed.stop()
        if self._feed_task:
            await asyncio.gather(self._feed_task, return_exceptions=True)
        await self.feed.drain()
        await self.feed.hub.stop()
        if self.ws_server:
            self.ws_server.close()
            await self.ws_server.wait_closed()
        if self.rest_server is not None:
            await self.rest_server.close()
        if self.data_dir is not None:
            (self.data_dir / INFO_FILE).unlink(missing_ok=True)

    async def __aenter__(self) -> Exchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_forever(exchange: Exchange, announce: Any = print) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info = await exchange.start()
    announce(f"exchange up: market data {info.stream_url()}" + (f", orders {info.rest_url}" if info.rest_url else ""))
    try:
        stopper = asyncio.create_task(stop.wait())
        assert exchange._feed_task is not None
        await asyncio.wait([stopper, exchange._feed_task], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    finally:
        await exchange.stop()
        announce("exchange down: " + json.dumps({"sent": exchange.feed.sent, "last_ids": exchange.feed.last_ids()}))
