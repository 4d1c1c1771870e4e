"""refdata (P4): the instrument master (its domain: backend.refdata.master). Loaded from a data
file into Redis (`refdata:instruments`), changed by updates on refdata.updates (checked; bad ones
dead-lettered), every change published on refdata.events so other services can follow."""

from __future__ import annotations

import msgspec

from backend.bus import codec, replies, streams
from backend.bus.access import Keys, Reads, Writes
from backend.bus.publish import queue
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
    reads = (Reads(streams.REFDATA_UPDATES, group=True),)
    writes = (Writes(streams.REFDATA_EVENTS),)
    keys = (Keys(KEY, write=True),)

    async def setup(self) -> None:
        self.changes = 0
        current = {k.decode(): _inst.decode(v) for k, v in replies.fields(await self.r.hgetall(KEY)).items()}
        for inst in load_file(self.cfg.file):
            if inst.symbol not in current:  # seed what is missing; operator updates stay
                await self._apply(inst)
        self.worker = self.consume(streams.REFDATA_UPDATES, self.on_updates, decode=Instrument, count=100, block_ms=200)

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
