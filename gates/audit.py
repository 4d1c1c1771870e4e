"""The audit log: every check run, attestation, approval and decision is a GateEvent on
ops.gates carrying the SHA-256 of the event before it. The head hash is also kept in
`gates:head`, written in the same transaction, so a removed tail is caught too. An append returns
once the event is fsynced to the AOF (`backend.bus.durable`): a decision an operator was told is
recorded survives a crash of Redis.

The log's older entries may be archived to the data dir and trimmed from the stream
(backend/bus/archive.py); `events` and `verify` read the archive first, then the live entries, and
the chain runs on across the two: the first live entry's prev_hash is the last archived entry's
hash."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis

from backend.bus import archive, codec, streams
from backend.bus.durable import wait_durable
from backend.bus.entries import Skips, decode_entries
from backend.bus.publish import queue
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
                prev = head_hash(pipe)
                ev = msgspec.structs.replace(ev, prev_hash=prev, ts_ns=ev.ts_ns or time.time_ns())
                ev = msgspec.structs.replace(ev, hash=digest(ev))
                pipe.multi()
                queue(pipe, streams.OPS_GATES, ev)
                pipe.set(HEAD_KEY, ev.hash)
                pipe.execute()
            except redis.WatchError:
                continue
        if durable:
            wait_durable(r)
        return ev
    raise RuntimeError("could not append to the audit log: too much contention")


def head_hash(r: Any) -> str:
    """The hash a new event chains onto: the newest entry's; when that entry is not a gate event
    (the chain is broken there: `verify` says so), the recorded head, the newest event appended."""
    last = r.xrevrange(streams.OPS_GATES, count=1)
    if not last:
        return ""
    got, _ = decode_entries(last, GateEvent)
    if got:
        return got[0][1].hash
    head = r.get(HEAD_KEY)
    return head.decode() if head else ""


def decode(f: dict[Any, Any]) -> GateEvent:
    """One ops.gates entry's event (msgspec's DecodeError or ValidationError when it is not one)."""
    return codec.decode(codec.payload(f), GateEvent)


def events(r: redis.Redis, skips: Skips | None = None) -> list[tuple[str, GateEvent]]:
    """Every gate event in log order, the archived ones first; an entry that is not one is skipped
    here (counted in `skips`) and is a break in the chain for `verify`."""
    got, _ = decode_entries(archive.history(r, streams.OPS_GATES), GateEvent, stream=streams.OPS_GATES, skips=skips)
    return [(eid.decode(), ev) for eid, ev in got]


@dataclass
class Verdict:
    ok: bool
    checked: int
    problem: str = ""
    entry: str | None = None
    archived: int = 0
    """Of the entries checked, how many were read from the archive."""


class ChainVerifier:
    """The chain checked one entry at a time, in log order: it keeps the last verified hash and
    how many entries it verified, so each entry is verified once however often the log is read
    (the console feeds it only new entries; `audit verify` feeds it the whole log)."""

    def __init__(self) -> None:
        self.prev = ""  # hash of the last verified entry
        self.checked = 0  # entries verified
        self.problem = ""
        self.entry: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problem

    def feed(self, eid: str, ev: GateEvent) -> bool:
        """Verify the entry after the last verified one; False (and the problem kept) when it does
        not follow it or its content does not match its hash. Nothing is verified after a break."""
        if self.problem:
            return False
        i = self.checked
        if ev.prev_hash != self.prev:
            return self._broken(
                eid,
                f"entry {i + 1} ({eid}, {ev.kind} on {ev.gate}) does not follow the "
                f"entry before it: an entry was removed or reordered",
            )
        if digest(ev) != ev.hash:
            return self._broken(
                eid, f"entry {i + 1} ({eid}, {ev.kind} on {ev.gate}) was changed: its content does not match its hash"
            )
        self.prev = ev.hash
        self.checked += 1
        return True

    def unreadable(self, eid: str, why: str) -> None:
        """An entry that is not a GateEvent breaks the chain where it stands."""
        if not self.problem:
            self._broken(eid, f"entry {self.checked + 1} ({eid}) is not a gate event: {why}")

    def _broken(self, eid: str, problem: str) -> bool:
        self.problem, self.entry = problem, eid
        return False

    def verdict(self, head: str, archived: int = 0) -> Verdict:
        """The verdict on the entries fed so far, `head` being the recorded head hash read with them
        (`archived`: how many of them came from the archive)."""
        if self.problem:
            return Verdict(False, self.checked, self.problem, self.entry, archived)
        if head != self.prev:
            return Verdict(
                False,
                self.checked,
                "the newest entries were removed: the log ends before the recorded head",
                None,
                archived,
            )
        return Verdict(True, self.checked, archived=archived)


def verify(r: redis.Redis) -> Verdict:
    """The whole log verified from its first entry, the archived ones first (the live entries, the
    head and the archive's record read in one transaction)."""
    with r.pipeline(transaction=True) as pipe:
        pipe.xrange(streams.OPS_GATES)
        pipe.get(HEAD_KEY)
        pipe.hgetall(archive.key(streams.OPS_GATES))
        live, head, record = pipe.execute()
    try:
        old = archive.archived_entries(streams.OPS_GATES, record)
    except archive.ArchiveUnreadable as exc:
        return Verdict(False, 0, str(exc))
    items = archive.join(old, live)
    v = ChainVerifier()
    for eid, f in items:
        try:
            ev = decode(f)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            v.unreadable(eid.decode(), str(exc))
            break
        if not v.feed(eid.decode(), ev):
            break
    return v.verdict(head.decode() if head else "", min(len(old), v.checked))


def to_row(ev: GateEvent) -> dict[str, Any]:
    return msgspec.to_builtins(ev)
