"""The instrument master, the refdata service's domain: the master file (the shipped
`instruments.toml`, or one the config names) loaded and checked entry by entry, the rule an
instrument must meet, and where the live master is kept (the Redis hash `refdata:instruments`,
symbol -> Instrument) with its reader."""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from backend.bus.entries import Skips, decode_value
from backend.errors import ConfigError
from backend.messages import Instrument

KEY = "refdata:instruments"


def load_file(path: str | None) -> list[Instrument]:
    """The instruments of a master file, each checked; ConfigError naming the file and the entry."""
    where = f"[services.refdata] file {path}" if path else "the packaged instruments.toml"
    try:
        text = (
            Path(path).read_text()
            if path
            else resources.files("backend.refdata").joinpath("instruments.toml").read_text()
        )
        raw = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    entries = raw.get("instrument", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: no [[instrument]] entries")
    out: list[Instrument] = []
    for n, entry in enumerate(entries, 1):
        try:
            inst = msgspec.convert({**entry, "_t": "instrument.v1"}, Instrument)
        except (msgspec.ValidationError, TypeError) as exc:
            raise ConfigError(f"{where}: instrument {n}: {exc}") from None
        why = problem(inst)
        if why:
            raise ConfigError(f"{where}: instrument {n}: {why}")
        out.append(inst)
    dup = sorted({i.symbol for i in out if sum(j.symbol == i.symbol for j in out) > 1})
    if dup:
        raise ConfigError(f"{where}: symbols listed twice: {', '.join(dup)}")
    return out


def problem(i: Instrument) -> str | None:
    """What is wrong with an instrument, or None."""
    if not i.symbol.strip() or i.symbol != i.symbol.upper():
        return f"symbol {i.symbol!r} must be upper case and not empty"
    for name in ("tick_size", "lot_size"):
        v = getattr(i, name)
        if not math.isfinite(v) or v <= 0:
            return f"{i.symbol}: {name} must be positive, not {v}"
    return None


def instruments(r: Any, skips: Skips | None = None) -> dict[str, Instrument]:
    """The live master (a sync Redis client): symbol -> Instrument (an entry that does not decode
    skipped, counted in `skips`)."""
    got = {k.decode(): decode_value(v, Instrument) for k, v in r.hgetall(KEY).items()}
    if skips is not None:
        skips.add(KEY, sum(i is None for i in got.values()))
    return {k: i for k, i in got.items() if i is not None}
