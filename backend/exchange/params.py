"""Reading a request's parameters as Binance does, with its error codes: `ApiError` (HTTP status,
code, message) for a parameter missing (-1102), malformed (-1100), sent when not required
(-1106), an unknown symbol (-1121)."""

from __future__ import annotations

import re
from decimal import Decimal

from backend.exchange.filters import NUMBER_RANGE, SymbolFilters, parse_number

SYMBOL = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}


def missing(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal(name: str, legal: str) -> ApiError:
    return ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def not_required(name: str) -> ApiError:
    return ApiError(400, -1106, f"Parameter '{name}' sent when not required.")


def text(p: dict[str, str], name: str, required: bool = False) -> str | None:
    v = p.get(name)
    if v is None or v == "":
        if required:
            raise missing(name)
        return None
    return v


def integer(p: dict[str, str], name: str, required: bool = False) -> int | None:
    v = text(p, name, required)
    if v is None:
        return None
    if not v.isdigit() or len(v) > 20:
        raise illegal(name, "^[0-9]{1,20}$")
    return int(v)


def number(p: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    v = text(p, name, required)
    if v is None:
        return None
    d = parse_number(v)
    if d is None:
        raise illegal(name, NUMBER_RANGE)
    return d


def choice(p: dict[str, str], name: str, legal: tuple[str, ...], required: bool = False) -> str | None:
    v = text(p, name, required)
    if v is not None and v not in legal:
        raise illegal(name, ", ".join(legal))
    return v


def limit(p: dict[str, str], default: int, most: int) -> int:
    n = integer(p, "limit")
    return default if n is None else min(max(n, 1), most)


def symbol(p: dict[str, str], filters: dict[str, SymbolFilters], required: bool = True) -> SymbolFilters | None:
    v = text(p, "symbol", required)
    if v is None:
        return None
    if not SYMBOL.match(v):
        raise illegal("symbol", "^[A-Z0-9-_.]{1,20}$")
    f = filters.get(v)
    if f is None:
        raise ApiError(400, -1121, "Invalid symbol.")
    return f


def symbols(p: dict[str, str], filters: dict[str, SymbolFilters]) -> list[SymbolFilters] | None:
    """`symbol` or `symbols` (a JSON array), or None for every symbol."""
    one = symbol(p, filters, required=False)
    if one is not None:
        return [one]
    raw = text(p, "symbols")
    if raw is None:
        return None
    import json

    try:
        names = json.loads(raw)
        assert isinstance(names, list) and names and all(isinstance(n, str) for n in names)
    except (ValueError, AssertionError):
        raise illegal("symbols", '["BTCUSDT","BNBUSDT"]') from None
    out = []
    for n in names:
        f = filters.get(n)
        if f is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        out.append(f)
    return out
