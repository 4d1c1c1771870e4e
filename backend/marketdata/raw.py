"""The raw tick batch (md.ticks.raw): built by the gateway from venue messages, read by the
normalizer as numpy / Arrow columns without a Python object per tick."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from backend.messages import RawTick, RawTickBatch


def _joined(strings: Sequence[str]) -> tuple[bytes, bytes]:
    enc = [s.encode() for s in strings]
    off = np.zeros(len(enc) + 1, np.int32)
    if enc:
        np.cumsum(np.fromiter(map(len, enc), np.int32, len(enc)), out=off[1:])
    return b"".join(enc), off.tobytes()


class RawBatchBuilder:
    """Accumulates raw ticks (one venue message at a time) and packs them into a RawTickBatch."""

    def __init__(self, source: str, stream: str = "md.ticks.raw") -> None:
        self.source = source
        self.stream = stream
        """Where its batches go: md.ticks.raw, or the partition of it its symbols belong to."""
        self._codes: dict[str, int] = {}
        self.clear()

    def clear(self) -> None:
        self._codes.clear()
        self.symbols: list[str] = []
        self.sym: list[int] = []
        self.trade_id: list[int] = []
        self.price: list[str] = []
        self.qty: list[str] = []
        self.trade_ns: list[int] = []
        self.event_ns: list[int] = []
        self.recv_ns: list[int] = []
        self.buyer_maker: list[bool] = []

    def __len__(self) -> int:
        return len(self.trade_id)

    def add(
        self,
        symbol: str,
        trade_id: int,
        price: str,
        qty: str,
        trade_ns: int,
        event_ns: int,
        buyer_maker: bool,
        recv_ns: int,
    ) -> None:
        code = self._codes.get(symbol)
        if code is None:
            code = self._codes[symbol] = len(self.symbols)
            self.symbols.append(symbol)
        self.sym.append(code)
        self.trade_id.append(trade_id)
        self.price.append(price)
        self.qty.append(qty)
        self.trade_ns.append(trade_ns)
        self.event_ns.append(event_ns)
        self.recv_ns.append(recv_ns)
        self.buyer_maker.append(buyer_maker)

    def build(self) -> RawTickBatch:
        price, price_off = _joined(self.price)
        qty, qty_off = _joined(self.qty)
        return RawTickBatch(
            source=self.source,
            n=len(self.trade_id),
            symbols=list(self.symbols),
            sym=np.array(self.sym, np.uint16).tobytes(),
            trade_id=np.array(self.trade_id, np.int64).tobytes(),
            price=price,
            price_offsets=price_off,
            qty=qty,
            qty_offsets=qty_off,
            trade_ns=np.array(self.trade_ns, np.int64).tobytes(),
            event_ns=np.array(self.event_ns, np.int64).tobytes(),
            recv_ns=np.array(self.recv_ns, np.int64).tobytes(),
            buyer_maker=np.array(self.buyer_maker, np.uint8).tobytes(),
        )


def build(ticks: Sequence[RawTick], source: str = "test") -> RawTickBatch:
    b = RawBatchBuilder(source)
    for t in ticks:
        b.add(t.symbol, t.trade_id, t.price, t.qty, t.trade_ns, t.event_ns, t.buyer_maker, t.recv_ns)
    return b.build()


def strings(batch: RawTickBatch, name: str) -> pa.StringArray:
    """The `price` or `qty` column as an Arrow string array (zero copy)."""
    data = getattr(batch, name)
    offsets = getattr(batch, f"{name}_offsets")
    return pa.StringArray.from_buffers(batch.n, pa.py_buffer(offsets), pa.py_buffer(data))


def ints(batch: RawTickBatch, name: str) -> np.ndarray:
    return np.frombuffer(getattr(batch, name), np.int64)


def codes(batch: RawTickBatch) -> np.ndarray:
    return np.frombuffer(batch.sym, np.uint16)


def max_ids(batch: RawTickBatch) -> dict[str, int]:
    """The highest trade id of each symbol in the batch."""
    ids = ints(batch, "trade_id")
    if len(batch.symbols) == 1:
        return {batch.symbols[0]: int(ids.max())}
    top = np.full(len(batch.symbols), np.iinfo(np.int64).min, np.int64)
    np.maximum.at(top, codes(batch), ids)
    return {s: int(v) for s, v in zip(batch.symbols, top, strict=True)}


def tick_at(batch: RawTickBatch, i: int) -> RawTick:
    """One raw tick, as the venue sent it (for the dead-letter stream)."""
    price = strings(batch, "price")[i].as_py()
    qty = strings(batch, "qty")[i].as_py()
    return RawTick(
        symbol=batch.symbols[int(codes(batch)[i])],
        trade_id=int(ints(batch, "trade_id")[i]),
        price=price,
        qty=qty,
        trade_ns=int(ints(batch, "trade_ns")[i]),
        event_ns=int(ints(batch, "event_ns")[i]),
        buyer_maker=bool(np.frombuffer(batch.buyer_maker, np.uint8)[i]),
        recv_ns=int(ints(batch, "recv_ns")[i]),
    )
