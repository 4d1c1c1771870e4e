"""refdata (P4): the instrument master (its domain: backend.refdata.master). Loaded from a data
file into Redis (`refdata:instruments`), changed by updates on refdata.updates (checked; bad ones
dead-lettered), every change published on refdata.events so other services can follow."""

from __future__ import annotations

import msgspec

from backend.bus import codec, streams
from backend.bus.worker import Entry
from backend.messages import Instrument
from backend.refdata.master import KEY, load_file, problem
from backend.services.base import Service

_inst = msgspec.msgpack.Decoder(Instrument)


class RefdataConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    file: str | None = None
    """Instrument master TOML; unset: the one shipped in the package."""


class RefdataService(Service):
    name = "refdata"
    Config = RefdataConfig

    async def setup(self) -> None:
        self.changes = 0
        current = {k.decode(): _inst.decode(v) for k, v in (await self.r.hgetall(KEY)).items()}
        for inst in load_file(self.cfg.file):
            if inst.symbol not in current:  # seed what is missing; operator updates stay
                await self._apply(inst)
        self.worker = self.consume(streams.REFDATA_UPDATES, self.on_updates, count=100, block_ms=200)

    def processed(self) -> int:
        return self.changes

    async def _apply(self, inst: Instrument) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(KEY, inst.symbol, codec.encode(inst))
        pipe.xadd(streams.REFDATA_EVENTS, codec.fields(inst), maxlen=streams.maxlen(streams.REFDATA_EVENTS),
                  approximate=True)
        await pipe.execute()
        self.changes += 1

    async def on_updates(self, entries: list[Entry]) -> None:
        for eid, f in entries:
            try:
                inst = _inst.decode(codec.payload(f))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self.worker.dead_letter(eid, f, f"undecodable instrument: {exc}")
                continue
            why = problem(inst)
            if why:
                await self.worker.dead_letter(eid, f, f"bad instrument: {why}")
                continue
            await self._apply(inst)

