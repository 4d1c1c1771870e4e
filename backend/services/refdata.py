"""refdata (P4): the instrument master. Loaded from a data file into Redis (`refdata:instruments`),
changed by updates on refdata.updates (checked; bad ones dead-lettered), every change published on
refdata.events so other services can follow."""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path

import msgspec

from backend.bus import codec, streams
from backend.bus.publish import queue
from backend.errors import ConfigError
from backend.messages import Instrument
from backend.services.base import Service

KEY = "refdata:instruments"
_inst = msgspec.msgpack.Decoder(Instrument)


class RefdataConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    file: str | None = None
    """Instrument master TOML; unset: the one shipped in the package."""


def load_file(path: str | None) -> list[Instrument]:
    """The instruments of a master file, each checked; ConfigError naming the file and the entry."""
    where = f"[services.refdata] file {path}" if path else "the packaged instruments.toml"
    try:
        text = Path(path).read_text() if path else resources.files("backend.refdata").joinpath("instruments.toml").read_text()
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
    if not i.symbol.strip() or i.symbol != i.symbol.upper():
        return f"symbol {i.symbol!r} must be upper case and not empty"
    for name in ("tick_size", "lot_size"):
        v = getattr(i, name)
        if not math.isfinite(v) or v <= 0:
            return f"{i.symbol}: {name} must be positive, not {v}"
    return None


class RefdataService(Service):
    name = "refdata"
    Config = RefdataConfig

    async def setup(self) -> None:
        self.changes = 0
        current = {k.decode(): _inst.decode(v) for k, v in (await self.r.hgetall(KEY)).items()}
        for inst in load_file(self.cfg.file):
            if inst.symbol not in current:  # seed what is missing; operator updates stay
                await self._apply(inst)
        self.worker = self.consume(streams.REFDATA_UPDATES, self.on_updates, decode=Instrument, count=100,
                                   block_ms=200)

    def processed(self) -> int:
        return self.changes

    async def _apply(self, inst: Instrument) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(KEY, inst.symbol, codec.encode(inst))
        queue(pipe, streams.REFDATA_EVENTS, inst)
        await pipe.execute()
        self.changes += 1

    async def on_updates(self, updates: list[tuple[bytes, Instrument]]) -> None:
        for eid, inst in updates:
            why = problem(inst)
            if why:
                self.worker.reject(eid, f"bad instrument: {why}")
                continue
            await self._apply(inst)


def instruments(r) -> dict[str, Instrument]:  # noqa: ANN001
    return {k.decode(): _inst.decode(v) for k, v in r.hgetall(KEY).items()}
