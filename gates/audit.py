"""The audit log: every check run, attestation, approval and decision is a GateEvent on
ops.gates carrying the SHA-256 of the event before it. The head hash is also kept in
`gates:head`, written in the same transaction, so a removed tail is caught too. An append returns
once the event is fsynced to the AOF (`backend.bus.durable`): a decision an operator was told is
recorded survives a crash of Redis."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis

from backend.bus import codec, streams
from backend.bus.durable import wait_durable
from backend.messages import GateEvent

HEAD_KEY = "gates:head"
_canon = msgspec.json.Encoder(order="sorted")


def digest(ev: GateEvent) -> str:
    body = msgspec.structs.replace(ev, hash="")
    return hashlib.sha256(_canon.encode(body)).hexdigest()


def append(r: redis.Redis, ev: GateEvent, *, durable: bool = True) -> GateEvent:
    """Chain `ev` after the newest event and add it (optimistic: retried if another writer won);
    return once it is on disk (`durable=False`: the caller waits once for several appends)."""
    for _ in range(50):
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(streams.OPS_GATES, HEAD_KEY)
                last = pipe.xrevrange(streams.OPS_GATES, count=1)
                prev = codec.decode(codec.payload(last[0][1]), GateEvent).hash if last else ""
                ev = msgspec.structs.replace(ev, prev_hash=prev, ts_ns=ev.ts_ns or time.time_ns())
                ev = msgspec.structs.replace(ev, hash=digest(ev))
                pipe.multi()
                pipe.xadd(streams.OPS_GATES, codec.fields(ev))
                pipe.set(HEAD_KEY, ev.hash)
                pipe.execute()
            except redis.WatchError:
                continue
        if durable:
            wait_durable(r)
        return ev
    raise RuntimeError("could not append to the audit log: too much contention")


def events(r: redis.Redis) -> list[tuple[str, GateEvent]]:
    return [(eid.decode(), codec.decode(codec.payload(f), GateEvent)) for eid, f in r.xrange(streams.OPS_GATES)]


@dataclass
class Verdict:
    ok: bool
    checked: int
    problem: str = ""
    entry: str | None = None


def verify(r: redis.Redis) -> Verdict:
    evs = events(r)
    prev = ""
    for i, (eid, ev) in enumerate(evs):
        if ev.prev_hash != prev:
            return Verdict(False, i, f"entry {i + 1} ({eid}, {ev.kind} on {ev.gate}) does not follow the "
                                     f"entry before it: an entry was removed or reordered", eid)
        if digest(ev) != ev.hash:
            return Verdict(False, i, f"entry {i + 1} ({eid}, {ev.kind} on {ev.gate}) was changed: "
                                     f"its content does not match its hash", eid)
        prev = ev.hash
    head = r.get(HEAD_KEY)
    if (head.decode() if head else "") != prev:
        return Verdict(False, len(evs), "the newest entries were removed: the log ends before the "
                                        "recorded head", None)
    return Verdict(True, len(evs))


def to_row(ev: GateEvent) -> dict[str, Any]:
    return msgspec.to_builtins(ev)
