"""Catalog items and subscriptions in Redis (shared by the marketplace service and the CLI).

`market:catalog` hash id -> JSON CatalogItem; `market:subs:<id>` hash account -> JSON
Subscription; `market:by_model:<model>` set of item ids whose subscribers get that model's
signals; `market:target:<account>` hash `<item>|<symbol>` (a sleeve) -> the position the
subscription wants (filled or in flight); `market:orders` hash client order id -> the sleeve and
signed quantity of each marketplace order not yet ended; `market:sent:<order id>` marks a
signal acted on for a sleeve (with a TTL).
"""

from __future__ import annotations

import re
import time
import tomllib
from importlib import resources
from typing import Any, Literal

import msgspec

from backend.errors import TradeopsError

CATALOG = "market:catalog"
OPEN_ORDERS = "market:orders"
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CatalogItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    kind: Literal["strategy", "dataset", "model"]
    name: str
    owner: str
    description: str = ""
    signals: str = ""
    """The model whose signals subscribers receive (strategies and models)."""
    metadata: dict[str, Any] = {}


class Subscription(msgspec.Struct, kw_only=True):
    account: str
    item: str
    quantity: float
    operator: str
    since_ns: int


def k_subs(item: str) -> str:
    return f"market:subs:{item}"


def k_by_model(model: str) -> str:
    return f"market:by_model:{model}"


def k_target(account: str) -> str:
    return f"market:target:{account}"


def k_sent(client_order_id: str) -> str:
    return f"market:sent:{client_order_id}"


def sleeve(item: str, symbol: str) -> str:
    return f"{item}|{symbol}"


def targets(r: Any, account: str) -> dict[tuple[str, str], float]:
    """(item, symbol) -> the position that subscription wants for `account`."""
    out = {}
    for k, v in r.hgetall(k_target(account)).items():
        item, _, sym = k.decode().rpartition("|")
        out[(item, sym)] = float(v)
    return out


def seed_items() -> list[CatalogItem]:
    raw = tomllib.loads(resources.files("backend.catalog").joinpath("catalog.toml").read_text())
    return msgspec.convert(raw.get("items", []), list[CatalogItem])


def queue_put(pipe: Any, item: CatalogItem) -> None:
    pipe.hset(CATALOG, item.id, msgspec.json.encode(item))
    if item.signals:
        pipe.sadd(k_by_model(item.signals), item.id)


def items(r: Any) -> list[CatalogItem]:
    return sorted((msgspec.json.decode(v, type=CatalogItem) for v in r.hvals(CATALOG)), key=lambda i: (i.kind, i.id))


def subscriptions(r: Any, item: str) -> list[Subscription]:
    return [msgspec.json.decode(v, type=Subscription) for v in r.hvals(k_subs(item))]


def subscribe(r: Any, account: str, item_id: str, quantity: float, operator: str) -> Subscription:
    """Give `account` the signals of `item_id`; a clear error for an unknown item or bad account."""
    if not ACCOUNT_RE.match(account):
        raise TradeopsError(f"account {account!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if not quantity > 0:
        raise TradeopsError(f"quantity must be positive, not {quantity:g}")
    raw = r.hget(CATALOG, item_id)
    if raw is None:
        known = ", ".join(i.id for i in items(r)) or "none (is marketplace running?)"
        raise TradeopsError(f"no catalog item {item_id!r}; known: {known}")
    item = msgspec.json.decode(raw, type=CatalogItem)
    if not item.signals:
        raise TradeopsError(f"{item_id} is a {item.kind} without signals: nothing to subscribe to")
    sub = Subscription(account=account, item=item_id, quantity=quantity, operator=operator, since_ns=time.time_ns())
    r.hset(k_subs(item_id), account, msgspec.json.encode(sub))
    return sub


def unsubscribe(r: Any, account: str, item_id: str) -> bool:
    return bool(r.hdel(k_subs(item_id), account))
