"""Binance's request signing (SIGNED endpoints): HMAC-SHA256, keyed with the API secret, over
the total parameters, which are the query string followed by the request body, exactly as sent
and without the `signature` parameter itself. The API key travels in `X-MBX-APIKEY`.

A signed request carries `timestamp` (ms) and may carry `recvWindow` (default 5000, at most
60000): the server takes it only if `timestamp` is less than 1 s ahead of its clock and not
older than `recvWindow`, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qsl

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
AHEAD_MS = 1000


class SignatureError(Exception):
    """Binance's answer to a request that fails authentication: HTTP status, code, message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def sign(secret: str, payload: str) -> str:
    """The hex HMAC-SHA256 of `payload` keyed with `secret`."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _without_signature(raw: str) -> tuple[str, str | None]:
    """`raw` (a query string or a form body) without its signature parameter, and the signature."""
    if not raw:
        return "", None
    kept, sig = [], None
    for part in raw.split("&"):
        if part.startswith("signature="):
            sig = part[len("signature=") :]
        else:
            kept.append(part)
    return "&".join(kept), sig


def total_params(query: str, body: str) -> tuple[str, str | None]:
    """(what the signature covers, the signature sent) for a raw query string and form body."""
    q, sig_q = _without_signature(query)
    b, sig_b = _without_signature(body)
    return q + b, sig_q or sig_b


def params_of(query: str, body: str) -> dict[str, str]:
    """Query and body parameters together (the body's win)."""
    out = dict(parse_qsl(query, keep_blank_values=True))
    out.update(parse_qsl(body, keep_blank_values=True))
    return out


def mandatory(name: str) -> SignatureError:
    return SignatureError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def check(secret: str, query: str, body: str, params: dict[str, str], now_ms: int | None = None) -> None:
    """Raise SignatureError unless the request is signed with `secret` and on time."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    ts = params.get("timestamp", "")
    if not ts:
        raise mandatory("timestamp")
    if not ts.isdigit():
        raise SignatureError(
            400, -1100, "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'."
        )
    window_raw = params.get("recvWindow", "")
    window = DEFAULT_RECV_WINDOW
    if window_raw:
        try:
            window = int(float(window_raw))
        except ValueError:
            raise SignatureError(400, -1100, "Illegal characters found in parameter 'recvWindow'.") from None
        if window > MAX_RECV_WINDOW or window <= 0:
            raise SignatureError(400, -1131, f"recvWindow must be less than {MAX_RECV_WINDOW}.")
    t = int(ts)
    if t >= now + AHEAD_MS:
        raise SignatureError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if now - t > window:
        raise SignatureError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
    payload, sig = total_params(query, body)
    if not sig:
        raise mandatory("signature")
    if not hmac.compare_digest(sig.lower(), sign(secret, payload)):
        raise SignatureError(400, -1022, "Signature for this request is not valid.")
