"""Errors that carry a message meant for an operator (printed as one line, never a traceback)."""


class TradeopsError(Exception):
    """An error with a clear, operator-facing message. The CLI prints it and exits 1."""

    exit_code = 1


class ConfigError(TradeopsError):
    """Bad configuration: the message names the file, the key and what was wrong."""


class RedisUnavailable(TradeopsError):
    """Redis could not be reached at the URL in the message."""
