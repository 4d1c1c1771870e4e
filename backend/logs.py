"""Structured logs: one JSON object per line (ts, level, logger, msg, and any `extra` fields)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

_STD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_json = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def __init__(self, **static: Any) -> None:
        super().__init__()
        self.static = static

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(self.static)
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _json.encode(out).decode()


def setup(level: str = "INFO", stream: Any = None, **static: Any) -> None:
    """Route the `tradeops` loggers to JSON lines on `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(**static))
    root = logging.getLogger("tradeops")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
