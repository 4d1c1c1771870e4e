"""The REST adapter: the venue's order API (Binance-style `/api/v3/order`) over httpx, every
request signed with HMAC-SHA256 (`signature` over the query string, key in `X-MBX-APIKEY`)."""

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
    pass


class RestVenue:
    def __init__(self, base_url: str, api_key: str, api_secret: str, timeout: float = 5.0) -> None:
        self.base = base_url.rstrip("/")
        self.key, self.secret = api_key, api_secret
        self.http = httpx.AsyncClient(timeout=timeout, headers={"X-MBX-APIKEY": api_key})

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        params = {**params, "timestamp": int(time.time() * 1000)}
        params["signature"] = sign(self.secret, params)
        resp = await self.http.request(method, f"{self.base}/api/v3/order", params=params)
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code >= 400:
            raise VenueError(f"venue {method} /api/v3/order: HTTP {resp.status_code}: "
                             f"{body.get('msg', resp.text[:200])}")
        return body

    async def place(self, o: Order) -> dict[str, Any]:
        params: dict[str, Any] = {"symbol": o.symbol, "side": o.side.upper(), "type": o.type.upper(),
                                  "quantity": repr(o.quantity), "newClientOrderId": o.client_order_id}
        if o.type == "limit":
            params["price"] = repr(o.limit_price)
            params["timeInForce"] = o.time_in_force if o.time_in_force != "DAY" else "GTC"
        return await self._call("POST", params)

    async def cancel(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        return await self._call("DELETE", {"symbol": symbol, "origClientOrderId": client_order_id})

    async def query(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        return await self._call("GET", {"symbol": symbol, "origClientOrderId": client_order_id})

    async def close(self) -> None:
        await self.http.aclose()


STATUS_KIND: dict[str, Literal["canceled", "expired", "rejected"]] = {
    "CANCELED": "canceled", "EXPIRED": "expired", "REJECTED": "rejected"}


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
    base = _OrderFields(client_order_id=o.client_order_id, venue_order_id=vid, account=o.account,
                        symbol=o.symbol, side=o.side)
    for f in body.get("fills", []):
        tid = f"{vid}-{f['tradeId']}"
        qty = float(f["qty"])
        cum += qty
        if tid in known_trades:
            continue
        known_trades.add(tid)
        out.append(ExecReport(kind="fill", trade_id=tid, fill_qty=qty, fill_price=float(f["price"]),
                              cum_qty=cum, leaves_qty=max(0.0, o.quantity - cum), ts_ns=time.time_ns(),
                              **base))
    kind = STATUS_KIND.get(body.get("status", ""))
    if kind:
        out.append(ExecReport(kind=kind, reason=body.get("msg", "") or f"venue status {body['status']}",
                              cum_qty=cum, ts_ns=time.time_ns(), **base))
    return out
