"""The REST adapter: a Binance Spot venue (the local exchange, or Binance's Spot testnet: only
the URLs and the key differ) over httpx. Signed requests carry `timestamp` and `recvWindow`,
HMAC-SHA256 over the query string, the key in `X-MBX-APIKEY`; the venue's errors come back as
VenueError with Binance's code. Orders by REST (`place`, `cancel`, `query`, `open_orders`,
`my_trades`); the user data stream's listen key (`listen_key`, `keep_alive`, `close_listen_key`);
`user_stream_url` is where its events come (`executionReport`, `outboundAccountPosition`)."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Literal, TypedDict
from urllib.parse import urlencode

import httpx

from backend.errors import TradeopsError
from backend.messages import ExecReport, Order, Side


def sign(secret: str, params: dict[str, Any]) -> str:
    return hmac.new(secret.encode(), urlencode(params).encode(), hashlib.sha256).hexdigest()


class VenueError(TradeopsError):
    def __init__(self, msg: str, status: int = 0, code: int = 0) -> None:
        super().__init__(msg)
        self.status, self.code = status, code


def qty_str(x: float) -> str:
    """A float quantity or price as a plain decimal string (never '1e-05')."""
    s = f"{x:.8f}".rstrip("0").rstrip(".")
    return s or "0"


class RestVenue:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        timeout: float = 5.0,
        ws_url: str | None = None,
        recv_window: int = 5000,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.ws = ws_url.rstrip("/") if ws_url else None
        self.key, self.secret = api_key, api_secret
        self.recv_window = recv_window
        self.http = httpx.AsyncClient(timeout=timeout, headers={"X-MBX-APIKEY": api_key})

    async def _call(self, method: str, params: dict[str, Any], path: str = "/api/v3/order", signed: bool = True) -> Any:
        if signed:
            params = {**params, "recvWindow": self.recv_window, "timestamp": int(time.time() * 1000)}
            params["signature"] = sign(self.secret, params)
        resp = await self.http.request(method, f"{self.base}{path}", params=params)
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code >= 400:
            code = body.get("code", 0) if isinstance(body, dict) else 0
            msg = body.get("msg", resp.text[:200]) if isinstance(body, dict) else resp.text[:200]
            raise VenueError(f"venue {method} {path}: HTTP {resp.status_code}: {msg}", resp.status_code, code)
        return body

    async def place(self, o: Order) -> dict[str, Any]:
        params: dict[str, Any] = {
            "symbol": o.symbol,
            "side": o.side.upper(),
            "type": o.type.upper(),
            "quantity": qty_str(o.quantity),
            "newClientOrderId": o.client_order_id,
            "newOrderRespType": "FULL",
        }
        if o.type == "limit":
            params["price"] = qty_str(o.limit_price or 0.0)
            params["timeInForce"] = o.time_in_force if o.time_in_force != "DAY" else "GTC"
        return await self._call("POST", params)

    async def cancel(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        return await self._call("DELETE", {"symbol": symbol, "origClientOrderId": client_order_id})

    async def query(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        return await self._call("GET", {"symbol": symbol, "origClientOrderId": client_order_id})

    async def open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return await self._call("GET", {"symbol": symbol} if symbol else {}, "/api/v3/openOrders")

    async def my_trades(self, symbol: str, order_id: int) -> list[dict[str, Any]]:
        return await self._call("GET", {"symbol": symbol, "orderId": order_id}, "/api/v3/myTrades")

    async def listen_key(self) -> str:
        return (await self._call("POST", {}, "/api/v3/userDataStream", signed=False))["listenKey"]

    async def keep_alive(self, key: str) -> None:
        await self._call("PUT", {"listenKey": key}, "/api/v3/userDataStream", signed=False)

    async def close_listen_key(self, key: str) -> None:
        await self._call("DELETE", {"listenKey": key}, "/api/v3/userDataStream", signed=False)

    def user_stream_url(self, key: str) -> str:
        if not self.ws:
            raise VenueError("no websocket URL for the user data stream")
        return f"{self.ws}/ws/{key}"

    async def close(self) -> None:
        await self.http.aclose()


STATUS_KIND: dict[str, Literal["canceled", "expired", "rejected"]] = {
    "CANCELED": "canceled",
    "EXPIRED": "expired",
    "REJECTED": "rejected",
    "EXPIRED_IN_MATCH": "expired",
}


class _OrderFields(TypedDict):
    """What every report of one order carries."""

    client_order_id: str
    venue_order_id: str
    account: str
    symbol: str
    side: Side


def reports_from(o: Order, body: dict[str, Any], known_trades: set[str]) -> list[ExecReport]:
    """ExecReports for what a venue response says that we have not reported yet."""
    vid = str(body.get("orderId", ""))
    out = []
    cum = 0.0
    base = _OrderFields(
        client_order_id=o.client_order_id, venue_order_id=vid, account=o.account, symbol=o.symbol, side=o.side
    )
    for f in body.get("fills", []):
        tid = f"{vid}-{f['tradeId']}"
        qty = float(f["qty"])
        cum += qty
        if tid in known_trades:
            continue
        known_trades.add(tid)
        out.append(
            ExecReport(
                kind="fill",
                trade_id=tid,
                fill_qty=qty,
                fill_price=float(f["price"]),
                cum_qty=cum,
                leaves_qty=max(0.0, o.quantity - cum),
                ts_ns=time.time_ns(),
                **base,
            )
        )
    kind = STATUS_KIND.get(body.get("status", ""))
    if kind:
        out.append(
            ExecReport(
                kind=kind,
                reason=body.get("msg", "") or f"venue status {body['status']}",
                cum_qty=float(body.get("executedQty", cum) or cum),
                ts_ns=time.time_ns(),
                **base,
            )
        )
    return out
