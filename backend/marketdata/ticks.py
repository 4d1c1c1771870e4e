"""The columnar TickBatch (md.ticks): build one from columns, read it back as numpy arrays,
iterate it as Tick structs, or take the last price per symbol. Other services read md.ticks only
through these helpers, so the batch layout can change in one place."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from backend.bus import codec
from backend.messages import Tick, TickBatch

DT: dict[str, np.dtype[Any]] = {
    "sym": np.dtype("<u2"),
    "trade_id": np.dtype("<i8"),
    "price": np.dtype("<f8"),
    "qty": np.dtype("<f8"),
    "trade_ns": np.dtype("<i8"),
    "recv_ns": np.dtype("<i8"),
    "buyer_maker": np.dtype("u1"),
}


def pack(
    symbols: list[str],
    sym: np.ndarray,
    trade_id: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    trade_ns: np.ndarray,
    recv_ns: np.ndarray | None = None,
    buyer_maker: np.ndarray | None = None,
    normalized_ns: int = 0,
) -> TickBatch:
    """A TickBatch from columns; `sym` holds indexes into `symbols`."""
    n = len(price)
    if recv_ns is None:
        recv_ns = np.zeros(n, DT["recv_ns"])
    if buyer_maker is None:
        buyer_maker = np.zeros(n, DT["buyer_maker"])
    return TickBatch(
        n=n,
        symbols=list(symbols),
        sym=np.ascontiguousarray(sym, DT["sym"]).tobytes(),
        trade_id=np.ascontiguousarray(trade_id, DT["trade_id"]).tobytes(),
        price=np.ascontiguousarray(price, DT["price"]).tobytes(),
        qty=np.ascontiguousarray(qty, DT["qty"]).tobytes(),
        trade_ns=np.ascontiguousarray(trade_ns, DT["trade_ns"]).tobytes(),
        recv_ns=np.ascontiguousarray(recv_ns, DT["recv_ns"]).tobytes(),
        buyer_maker=np.ascontiguousarray(buyer_maker, DT["buyer_maker"]).tobytes(),
        normalized_ns=normalized_ns,
    )


def from_ticks(ticks: Sequence[Tick], normalized_ns: int = 0) -> TickBatch:
    """A TickBatch from Tick structs (tests, slow producers)."""
    symbols: list[str] = []
    index: dict[str, int] = {}
    codes = []
    for t in ticks:
        if t.symbol not in index:
            index[t.symbol] = len(symbols)
            symbols.append(t.symbol)
        codes.append(index[t.symbol])
    return pack(
        symbols,
        np.array(codes),
        np.array([t.trade_id for t in ticks]),
        np.array([t.price for t in ticks]),
        np.array([t.qty for t in ticks]),
        np.array([t.trade_ns for t in ticks]),
        np.array([t.recv_ns for t in ticks]),
        np.array([t.buyer_maker for t in ticks]),
        normalized_ns,
    )


def columns(batch: TickBatch) -> dict[str, np.ndarray]:
    """Zero-copy numpy views of the batch's columns."""
    return {name: np.frombuffer(getattr(batch, name), dt) for name, dt in DT.items()}


def iter_ticks(batch: TickBatch) -> Iterator[Tick]:
    c = columns(batch)
    syms = batch.symbols
    for i in range(batch.n):
        yield Tick(
            symbol=syms[c["sym"][i]],
            trade_id=int(c["trade_id"][i]),
            price=float(c["price"][i]),
            qty=float(c["qty"][i]),
            trade_ns=int(c["trade_ns"][i]),
            recv_ns=int(c["recv_ns"][i]),
            buyer_maker=bool(c["buyer_maker"][i]),
        )


def last_prices(batch: TickBatch) -> dict[str, float]:
    """The last price of each symbol in the batch (vectorised)."""
    if batch.n == 0:
        return {}
    c = columns(batch)
    sym, price = c["sym"], c["price"]
    # index of the last occurrence of each symbol code
    rev = sym[::-1]
    codes, first_in_rev = np.unique(rev, return_index=True)
    last_idx = batch.n - 1 - first_in_rev
    return {batch.symbols[int(k)]: float(price[i]) for k, i in zip(codes, last_idx, strict=True)}


def decode(data: bytes) -> TickBatch:
    """Decode one md.ticks payload."""
    return codec.decode(data, TickBatch)
