"""What the signed, hash-chained logs share (ops.gates, ops.operators): the canonical form of an
event, its hash, the bytes its signer signs, and the append that chains and signs an event after
the newest one in one optimistic transaction.

- canonical(ev): JSON with sorted keys of every field but `hash`, leaving out the signing fields
  when they are empty (so entries written before signing existed keep their hashes);
- digest(ev): SHA-256 of canonical(ev): what the next entry's prev_hash names;
- signed_message(ev): canonical(ev) without `sig`: what `ssh-keygen -Y sign` signed (it covers the
  previous hash, the time, the nonce and, for approvals and decisions, the evidence digest).

The logs are read whole archive first, then live (backend/bus/archive.py: `history`); `decode_all`
keeps an entry that does not decode in its place, as the text of why, so the chain's verifier
reports it as a break where it stands (the listings skip and count it: bus/entries.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec
import redis

from backend.bus import codec, entries
from backend.bus.durable import wait_durable
from backend.bus.publish import queue

E = TypeVar("E", bound=msgspec.Struct)
T = TypeVar("T")
_canon = msgspec.json.Encoder(order="sorted")
SIGNING_FIELDS = ("signer", "nonce", "evidence_digest", "sig")


def _body(ev: msgspec.Struct, *drop: str) -> dict[str, Any]:
    body = msgspec.to_builtins(ev)
    if "hash" in body:
        body["hash"] = ""
    for k in drop:
        body.pop(k, None)
    for k in SIGNING_FIELDS:
        if k in body and not body[k]:
            del body[k]
    return body


def canonical(ev: msgspec.Struct) -> bytes:
    return _canon.encode(_body(ev))


def digest(ev: msgspec.Struct) -> str:
    return hashlib.sha256(canonical(ev)).hexdigest()


def signed_message(ev: msgspec.Struct) -> bytes:
    """The exact bytes the signature covers (`ssh-keygen -Y verify ... < this`)."""
    return _canon.encode(_body(ev, "sig"))


def decode_all(
    items: Iterable[tuple[bytes, Mapping[Any, Any]]],
    type_: type[T],
    *,
    stream: str = "",
    skips: entries.Skips | None = None,
) -> list[tuple[str, T | str]]:
    """Every entry of a log in order as (id, event), and an entry that does not decode (as
    bus/entries.py judges it) as (id, why): the chain verifiers report it as a break where it
    stands; it is counted in `skips` under `stream`."""
    decode = codec.decoder(type_).decode
    out: list[tuple[str, T | str]] = []
    bad = 0
    for eid, fields in items:
        if fields is None:
            continue
        try:
            out.append((eid.decode(), decode(entries.payload(fields))))
        except entries.UNDECODABLE as exc:
            bad += 1
            out.append((eid.decode(), entries.reason(exc)))
    if skips is not None:
        skips.add(stream, bad)
    return out


def head_hash(r: Any, stream: str, head_key: str, type_: type) -> str:
    """The hash a new entry of `stream` chains onto: the newest entry's; when that entry does not
    decode (the chain is broken there: the verifier says so), the recorded head `head_key`, the
    newest entry appended."""
    last = r.xrevrange(stream, count=1)
    if not last:
        return ""
    got: list[tuple[bytes, Any]]
    got, _ = entries.decode_entries(last, type_)
    if got:
        return str(got[0][1].hash)
    head = r.get(head_key)
    return head.decode() if head else ""


def append(
    r: Any, stream: str, head_key: str, ev: E, *, seal: Callable[[E], E] | None = None, durable: bool = True
) -> E:
    """Chain `ev` after the newest entry of `stream` and add it, `seal` (sign) it once its previous
    hash and time are set; optimistic: signed again and retried if another writer won. When the
    newest entry does not decode, `ev` chains onto the recorded head (`head_hash`). The entry goes
    through the publisher's size limit (PayloadTooLarge). Returns once it is on disk
    (`durable=False`: the caller waits once for several appends)."""
    for _ in range(50):
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(stream, head_key)
                prev = head_hash(pipe, stream, head_key, type(ev))
                ev = msgspec.structs.replace(ev, prev_hash=prev, ts_ns=ev.ts_ns or time.time_ns())  # type: ignore[attr-defined]
                if seal is not None:
                    ev = seal(ev)
                ev = msgspec.structs.replace(ev, hash=digest(ev))
                pipe.multi()
                queue(pipe, stream, ev)
                pipe.set(head_key, ev.hash)  # type: ignore[attr-defined]
                pipe.execute()
            except redis.WatchError:
                continue
        if durable:
            wait_durable(r)
        return ev
    raise RuntimeError(f"could not append to {stream}: too much contention")
