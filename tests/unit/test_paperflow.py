"""The demo's paper orders are on the instruments' lot and tick sizes, so risk judges them on
their merits instead of denying every one for its step."""

from __future__ import annotations

from backend.refdata.master import load_file
from backend.runtime.paperflow import on_step
from backend.trading.risk_rules import _on_step


def test_quantities_and_limits_land_on_every_instruments_steps() -> None:
    for inst in load_file(None):
        for raw in (0.0000123, 0.37, 1.5, 12.345678, 2097.1, 64126.31234):
            qty = on_step(raw, inst.lot_size, minimum=True)
            assert qty >= inst.lot_size and _on_step(qty, inst.lot_size), (inst.symbol, raw, qty)
            px = on_step(raw, inst.tick_size, minimum=True)
            assert _on_step(px, inst.tick_size), (inst.symbol, raw, px)
            assert len(repr(qty)) < 20  # no float noise in what the blotter shows


def test_a_value_below_one_step_becomes_one_step() -> None:
    assert on_step(0.2, 1.0, minimum=True) == 1.0
    assert on_step(0.2, 1.0) == 0.0
