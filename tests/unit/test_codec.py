"""Every wire type round-trips through the one codec, typed and untyped."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.bus import codec
from backend.marketdata.ticks import from_ticks
from backend.messages import WIRE_TYPES, Bar, Order, Tick, TickBatch

FILLERS = {
    str: st.text(max_size=12),
    int: st.integers(min_value=-(2**62), max_value=2**62),
    float: st.floats(allow_nan=False, allow_infinity=False),
    bool: st.booleans(),
    bytes: st.binary(max_size=32),
}


def _sample(t: type) -> msgspec.Struct:
    """A valid instance built from the type's own field types (a TickBatch's columns hold its
    `n` ticks, or it is not one)."""
    if t is TickBatch:
        return from_ticks(
            [Tick(symbol="x", trade_id=7, price=1.5, qty=1.5, trade_ns=7, recv_ns=7, buyer_maker=True)], normalized_ns=7
        )
    return msgspec.convert(_value_for(t), t)


def _value_for(t: object) -> object:
    info = msgspec.inspect.type_info(t)
    return _from_info(info)


def _from_info(info: msgspec.inspect.Type) -> object:
    mi = msgspec.inspect
    if isinstance(info, mi.StructType):
        values = {f.encode_name: _from_info(f.type) for f in info.fields}
        if info.array_like:
            return [info.tag, *values.values()]
        return {info.tag_field: info.tag, **values}
    if isinstance(info, mi.UnionType):
        non_none = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return _from_info(non_none[0])
    if isinstance(info, mi.LiteralType):
        return info.values[0]
    if isinstance(info, mi.StrType):
        return "x"
    if isinstance(info, mi.BoolType):
        return True
    if isinstance(info, mi.IntType):
        return 7
    if isinstance(info, mi.FloatType):
        return 1.5
    if isinstance(info, mi.BytesType):
        return "AAE="  # base64 for convert()
    if isinstance(info, (mi.ListType, mi.FrozenSetType, mi.SetType)):
        return [_from_info(info.item_type)]
    if isinstance(info, mi.DictType):
        return {"k": _from_info(info.value_type)}
    if isinstance(info, (mi.AnyType, mi.NoneType)):
        return None
    raise AssertionError(f"no sample for {info}")


@pytest.mark.parametrize("t", WIRE_TYPES, ids=lambda t: t.__name__)
def test_every_wire_type_round_trips(t: type[msgspec.Struct]) -> None:
    msg = _sample(t)
    data = codec.encode(msg)
    assert codec.decode(data, t) == msg
    assert codec.decode_any(data) == msg


def test_tags_are_unique_and_versioned() -> None:
    tags = [t.__struct_config__.tag for t in WIRE_TYPES]
    assert len(tags) == len(set(tags))
    assert all(".v" in tag for tag in tags)


@settings(max_examples=200, deadline=None)
@given(
    qty=st.floats(min_value=1e-9, max_value=1e9, allow_nan=False),
    price=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    coid=st.text(min_size=1, max_size=40),
)
def test_order_round_trips(qty: float, price: float | None, coid: str) -> None:
    o = Order(
        client_order_id=coid, account="a", symbol="BTCUSDT", side="sell", type="limit", quantity=qty, limit_price=price
    )
    assert codec.decode(codec.encode(o), Order) == o


def test_garbage_is_a_decode_error_not_a_crash() -> None:
    with pytest.raises(msgspec.DecodeError):
        codec.decode_any(b"\xc1\xff garbage")
    with pytest.raises(msgspec.ValidationError):
        codec.decode(codec.encode(Bar("X", "1s", 0, 1, 1, 1, 1, 1, 1, 1)), Order)


def test_payload_field() -> None:
    o = Order(client_order_id="c", account="a", symbol="S", side="buy", type="market", quantity=1)
    f = codec.fields(o)
    assert list(f) == [codec.FIELD]
    assert codec.decode(codec.payload(f), Order) == o
    with pytest.raises(msgspec.DecodeError, match="no 'd' field"):
        codec.payload({b"x": b"1"})
