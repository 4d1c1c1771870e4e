"""The bus: Redis connection, stream names, codec, consumer-group worker, embedded redis-server."""

from backend.bus import codec, streams
from backend.bus.connection import connect, connect_async, require_url, resolve_url
from backend.bus.publish import publish, publish_many, publish_sync
from backend.bus.worker import Entry, Poison, StreamWorker, ensure_group

__all__ = [
    "Entry",
    "Poison",
    "StreamWorker",
    "codec",
    "connect",
    "connect_async",
    "ensure_group",
    "publish",
    "publish_many",
    "publish_sync",
    "require_url",
    "resolve_url",
    "streams",
]
