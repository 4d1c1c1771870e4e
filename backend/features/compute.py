"""Feature definitions (data) and their computation over a symbol's closed bars."""

from __future__ import annotations

import math
import tomllib
from collections import deque
from functools import cache
from importlib import resources
from typing import Literal

import msgspec
import numpy as np

from backend.messages import Bar


class FeatureDef(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    kind: Literal["return", "volatility", "vwap_distance", "volume_z"]
    window: int = 1


class _File(msgspec.Struct, forbid_unknown_fields=True):
    feature: list[FeatureDef]


@cache
def definitions() -> tuple[FeatureDef, ...]:
    text = resources.files("backend.features").joinpath("definitions.toml").read_text()
    return tuple(msgspec.convert(tomllib.loads(text), _File).feature)


class SymbolHistory:
    """The last bars of one symbol; features are computed when each bar closes."""

    def __init__(self, depth: int) -> None:
        self.bars: deque[Bar] = deque(maxlen=depth + 1)

    def add(self, bar: Bar) -> dict[str, float] | None:
        if self.bars and bar.start_ns <= self.bars[-1].start_ns:
            return None  # a repeat or out of order: features are computed once per bar
        self.bars.append(bar)
        return compute(list(self.bars))


def compute(bars: list[Bar], defs: tuple[FeatureDef, ...] | None = None) -> dict[str, float]:
    """Features at the close of bars[-1], from bars[-1] and the bars before it only."""
    defs = defs or definitions()
    closes = np.array([b.close for b in bars])
    out: dict[str, float] = {}
    logret = np.diff(np.log(closes)) if len(closes) > 1 else np.array([])
    for d in defs:
        if d.kind == "return":
            out[d.name] = float(math.log(closes[-1] / closes[-1 - d.window])) if len(closes) > d.window else 0.0
        elif d.kind == "volatility":
            r = logret[-d.window :]
            out[d.name] = float(r.std()) if len(r) >= 2 else 0.0
        elif d.kind == "vwap_distance":
            out[d.name] = float(bars[-1].close / bars[-1].vwap - 1) if bars[-1].vwap else 0.0
        elif d.kind == "volume_z":
            v = np.array([b.volume for b in bars[-d.window :]])
            sd = v.std()
            out[d.name] = float((v[-1] - v.mean()) / sd) if len(v) >= 3 and sd > 0 else 0.0
    return out
