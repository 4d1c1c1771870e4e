"""What the signed, hash-chained logs share (ops.gates, ops.operators): the canonical form of an
event, its hash, the bytes its signer signs, and the append that chains and signs an event after
the newest one in one optimistic transaction.

- canonical(ev): JSON with sorted keys of every field but `hash`, leaving out the signing fields
  when they are empty (so entries written before signing existed keep their hashes);
- digest(ev): SHA-256 of canonical(ev): what the next entry's prev_hash names;
- signed_message(ev): canonical(ev) without `sig`: what `ssh-keygen -Y sign` signed (it covers the
  previous hash, the time, the nonce and, for approvals and decisions, the evidence digest)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import redis

from backend.bus import codec
from backend.bus.durable import wait_durable

E = TypeVar("E", bound=msgspec.Struct)
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


def append(r: Any, stream: str, head_key: str, ev: E, *, seal: Callable[[E], E] | None = None,
           durable: bool = True) -> E:
    """Chain `ev` after the newest entry of `stream` and add it, `seal` (sign) it once its previous
    hash and time are set; optimistic: signed again and retried if another writer won. Returns
    once it is on disk (`durable=False`: the caller waits once for several appends)."""
    for _ in range(50):
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(stream, head_key)
                last = pipe.xrevrange(stream, count=1)
                prev = codec.decode(codec.payload(last[0][1]), type(ev)).hash if last else ""  # type: ignore[attr-defined]
                ev = msgspec.structs.replace(ev, prev_hash=prev, ts_ns=ev.ts_ns or time.time_ns())  # type: ignore[attr-defined]
                if seal is not None:
                    ev = seal(ev)
                ev = msgspec.structs.replace(ev, hash=digest(ev))
                pipe.multi()
                pipe.xadd(stream, codec.fields(ev))
                pipe.set(head_key, ev.hash)  # type: ignore[attr-defined]
                pipe.execute()
            except redis.WatchError:
                continue
        if durable:
            wait_durable(r)
        return ev
    raise RuntimeError(f"could not append to {stream}: too much contention")
