"""The operator registry: who may act on the gates, with which roles, by which SSH keys. It is
itself a chain of signed events on ops.operators (backend.messages.OperatorEvent):

- `init`: the first lead, set once when the control plane is initialised, signed by its own key
  (`tradeops operators init --key FILE.pub`); refused once the registry has one;
- `add`, `remove`, `roles`, `add_key`, `revoke_key`: each signed by a key that belongs to a lead at
  that time. Making someone a lead (an `add` or `roles` that grants `lead`) needs two leads once
  there are two: it waits until another lead signs a `confirm` naming its hash;
- a key belongs to one operator, once: a key registered under one name (even revoked since) is
  refused under another.

The registry is a fold over those events, in log order, that remembers when each key was added,
became valid, expired or was revoked and which roles each operator had when: a signature is
judged against the registry as it was at the signed time (`Registry.judge`). Events that do not
verify, or that break a rule, change nothing and are kept with the reason (`entries`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import redis

from backend.bus import archive, streams
from backend.bus.entries import Skips
from backend.errors import TradeopsError
from backend.messages import OperatorEvent
from gates import chained, signing
from gates.signing import PublicKey, Signer

HEAD_KEY = "operators:head"
ROLES = ("operator", "lead")


class Refused(TradeopsError):
    """An action the rules refuse; the message names the rule."""


def when(ts_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts_ns / 1e9)) if ts_ns else "-"


@dataclass
class KeyRecord:
    key: PublicKey
    name: str
    added_ns: int
    valid_after_ns: int = 0
    valid_before_ns: int = 0  # 0: no end
    revoked_ns: int = 0

    def status(self, now_ns: int) -> str:
        if self.revoked_ns and now_ns >= self.revoked_ns:
            return f"revoked {when(self.revoked_ns)}"
        if self.valid_before_ns and now_ns >= self.valid_before_ns:
            return f"expired {when(self.valid_before_ns)}"
        if now_ns < self.valid_after_ns:
            return f"valid from {when(self.valid_after_ns)}"
        return "valid"


@dataclass
class Operator:
    name: str
    added_ns: int
    roles: list[tuple[int, tuple[str, ...]]]  # (from when, roles), in time order
    keys: list[str] = field(default_factory=list)  # fingerprints
    removed_ns: int = 0

    def roles_at(self, ts_ns: int) -> tuple[str, ...]:
        if ts_ns < self.added_ns or (self.removed_ns and ts_ns >= self.removed_ns):
            return ()
        out: tuple[str, ...] = ()
        for t, roles in self.roles:
            if t <= ts_ns:
                out = roles
        return out


@dataclass(frozen=True)
class Trust:
    """The judgement of one signed record: valid (signed by `name`'s key, valid at the signed
    time, with `roles` then), invalid (why), or unsigned."""

    status: Literal["valid", "invalid", "unsigned"]
    name: str = ""
    fingerprint: str = ""
    roles: tuple[str, ...] = ()
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "valid"

    def label(self) -> str:
        if self.ok:
            return f"signed by {self.name} ({self.fingerprint})"
        return f"{self.status}: {self.why}" if self.why else self.status


class Registry:
    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.operators: dict[str, Operator] = {}
        self.pending: dict[str, OperatorEvent] = {}  # hash -> a lead grant waiting for a second lead
        self.entries: list[tuple[str, OperatorEvent, str]] = []  # (id, event, problem or "")
        self.root = ""  # fingerprint of the key that initialised the registry
        self.head = ""  # hash of the newest entry
        self.chain_problem = ""
        self.read = 0  # entries read from ops.operators (decodable or not)

    # --- questions ---------------------------------------------------------------------------
    def key_at(self, fp: str, ts_ns: int) -> tuple[KeyRecord | None, str]:
        """The key `fp` if it was valid at `ts_ns`, else (record or None, why not)."""
        k = self.keys.get(fp)
        if k is None:
            return None, f"key {fp} is not registered"
        who = f"key {fp} of {k.name}"
        op = self.operators[k.name]
        if ts_ns < k.added_ns:
            return k, f"{who} was not registered yet at {when(ts_ns)}"
        if k.revoked_ns and ts_ns >= k.revoked_ns:
            return k, f"{who} was revoked at {when(k.revoked_ns)}"
        if ts_ns < k.valid_after_ns:
            return k, f"{who} is valid only from {when(k.valid_after_ns)}"
        if k.valid_before_ns and ts_ns >= k.valid_before_ns:
            return k, f"{who} expired at {when(k.valid_before_ns)}"
        if op.removed_ns and ts_ns >= op.removed_ns:
            return k, f"{k.name} was removed from the registry at {when(op.removed_ns)}"
        return k, ""

    def roles_at(self, name: str, ts_ns: int) -> tuple[str, ...]:
        op = self.operators.get(name)
        return op.roles_at(ts_ns) if op else ()

    def leads_at(self, ts_ns: int) -> set[str]:
        return {n for n, op in self.operators.items() if "lead" in op.roles_at(ts_ns)}

    def fingerprints(self) -> set[str]:
        return set(self.keys)

    def name_of(self, fp: str) -> str:
        k = self.keys.get(fp)
        return k.name if k else ""

    def judge(self, message: bytes, sig: str, signer: str, ts_ns: int, namespace: str) -> Trust:
        """Whether `sig` is a valid signature of `message` by a key registered and valid at `ts_ns`."""
        if not sig:
            return Trust("unsigned", why="not signed")
        try:
            pk = signing.verify(message, sig, namespace)
        except signing.BadSignature as exc:
            return Trust("invalid", fingerprint=signer, why=f"the signature does not verify: {exc}")
        if pk.fingerprint != signer:
            return Trust(
                "invalid",
                fingerprint=pk.fingerprint,
                why=f"signed by key {pk.fingerprint}, but names key {signer or 'none'}",
            )
        k, problem = self.key_at(pk.fingerprint, ts_ns)
        if problem or k is None:
            return Trust("invalid", k.name if k else "", pk.fingerprint, why=problem)
        return Trust("valid", k.name, pk.fingerprint, self.roles_at(k.name, ts_ns))

    def judge_event(self, ev: OperatorEvent) -> Trust:
        return self.judge(chained.signed_message(ev), ev.sig, ev.signer, ev.ts_ns, signing.NS_OPERATORS)

    # --- the rules ---------------------------------------------------------------------------
    def check(self, ev: OperatorEvent, signed_by: PublicKey | None = None) -> tuple[str, bool]:
        """(the rule `ev` breaks or "", whether it waits for a second lead). Pure. `signed_by`:
        judge a draft as if that key had signed it (the rules before asking for a signature)."""
        if ev.kind == "refused":
            return "a record of a refused attempt", False
        if ev.kind == "init":
            return self._check_init(ev, signed_by), False
        if not self.root:
            return "the registry is not initialised: `tradeops operators init --key FILE.pub` first", False
        if signed_by is None:
            t = self.judge_event(ev)
        else:
            k, why = self.key_at(signed_by.fingerprint, ev.ts_ns)
            t = (
                Trust("invalid", why=why)
                if why or k is None
                else Trust("valid", k.name, signed_by.fingerprint, self.roles_at(k.name, ev.ts_ns))
            )
        if not t.ok:
            return f"a registry change must be signed by a lead: {t.why}", False
        if "lead" not in t.roles:
            return f"a registry change must be signed by a lead: {t.name} has {', '.join(t.roles) or 'no role'}", False
        op = self.operators.get(ev.name)
        active = op is not None and not (op.removed_ns and ev.ts_ns >= op.removed_ns)
        leads = self.leads_at(ev.ts_ns)
        if ev.kind == "add":
            if op is not None:
                return f"operator {ev.name} {'exists' if active else 'was removed; choose a new name'}", False
            if problem := self._check_roles(ev.roles) or self._check_keys(ev.keys):
                return problem, False
            return "", "lead" in ev.roles and len(leads) >= 2
        if ev.kind == "confirm":
            pend = self.pending.get(ev.confirms)
            if pend is None:
                return f"no registry change {ev.confirms[:16]} waits for a second lead", False
            first = self.name_of(pend.signer)
            if first == t.name:
                return f"making someone a lead needs two leads: {t.name} proposed it and may not confirm it", False
            return "", False
        if not active or op is None:
            return f"no operator {ev.name}", False
        if ev.kind == "remove":
            if leads == {ev.name}:
                return f"{ev.name} is the only lead: add another lead first", False
            return "", False
        if ev.kind == "roles":
            if problem := self._check_roles(ev.roles):
                return problem, False
            if "lead" not in ev.roles and leads == {ev.name}:
                return f"{ev.name} is the only lead: add another lead first", False
            return "", "lead" in ev.roles and ev.name not in leads and len(leads) >= 2
        if ev.kind == "add_key":
            return self._check_keys(ev.keys), False
        if ev.kind == "revoke_key":
            k = self.keys.get(ev.key)
            if k is None or k.name != ev.name:
                return f"{ev.name} has no key {ev.key}", False
            if k.revoked_ns:
                return f"key {ev.key} was already revoked at {when(k.revoked_ns)}", False
            return "", False
        return f"unknown registry change {ev.kind!r}", False

    def _check_init(self, ev: OperatorEvent, signed_by: PublicKey | None) -> str:
        if self.root:
            return (
                f"the registry was initialised at {when(self.keys[self.root].added_ns)} by "
                f"{self.name_of(self.root)}: the first lead is set once"
            )
        pk = signed_by
        if pk is None:
            if not ev.sig:
                return "the first lead's entry must be signed by its own key"
            try:
                pk = signing.verify(chained.signed_message(ev), ev.sig, signing.NS_OPERATORS)
            except signing.BadSignature as exc:
                return f"the first lead's signature does not verify: {exc}"
        keys = self._parse(ev.keys)
        if isinstance(keys, str):
            return keys
        if pk not in keys or pk.fingerprint != ev.signer:
            return "the first lead's entry must be signed by its own key"
        if "lead" not in ev.roles:
            return "the first operator must be a lead"
        return self._check_roles(ev.roles)

    @staticmethod
    def _check_roles(roles: list[str]) -> str:
        bad = [x for x in roles if x not in ROLES]
        if bad or not roles:
            return f"roles must be among {', '.join(ROLES)}, not {', '.join(bad) or 'none'}"
        return ""

    @staticmethod
    def _parse(lines: list[str]) -> list[PublicKey] | str:
        if not lines:
            return "an operator needs at least one SSH public key"
        out = []
        for ln in lines:
            try:
                out.append(signing.parse_public_key(ln))
            except ValueError as exc:
                return f"bad public key: {exc}"
        return out

    def _check_keys(self, lines: list[str]) -> str:
        keys = self._parse(lines)
        if isinstance(keys, str):
            return keys
        for k in keys:
            if k.fingerprint in self.keys:
                return (
                    f"key {k.fingerprint} is already registered to {self.keys[k.fingerprint].name}: "
                    f"one key, one operator"
                )
        if len({k.fingerprint for k in keys}) != len(keys):
            return "the same key twice"
        return ""

    def apply(self, eid: str, ev: OperatorEvent) -> str:
        """Fold one entry in log order: the rule it breaks ("" when it took effect or waits)."""
        if ev.prev_hash != self.head and not self.chain_problem:
            self.chain_problem = (
                f"entry {len(self.entries) + 1} ({eid}) of the registry does not follow the "
                f"entry before it: an entry was removed or reordered"
            )
        elif chained.digest(ev) != ev.hash and not self.chain_problem:
            self.chain_problem = f"entry {len(self.entries) + 1} ({eid}) of the registry was changed"
        self.head = ev.hash
        problem, waits = self.check(ev)
        if problem or self.chain_problem:
            self.entries.append((eid, ev, problem or "after a break in the registry's chain"))
            return problem
        if waits:
            self.pending[ev.hash] = ev
        elif ev.kind == "confirm":
            self._take(self.pending.pop(ev.confirms), ev.ts_ns)
        else:
            self._take(ev, ev.ts_ns)
        self.entries.append((eid, ev, ""))
        return ""

    def _take(self, ev: OperatorEvent, ts: int) -> None:
        if ev.kind in ("init", "add"):
            op = self.operators[ev.name] = Operator(ev.name, ts, [(ts, tuple(ev.roles))])
            self._add_keys(op, ev, ts)
            if ev.kind == "init":
                self.root = ev.signer
        elif ev.kind == "add_key":
            self._add_keys(self.operators[ev.name], ev, ts)
        elif ev.kind == "roles":
            self.operators[ev.name].roles.append((ts, tuple(ev.roles)))
        elif ev.kind == "revoke_key":
            self.keys[ev.key].revoked_ns = ts
        elif ev.kind == "remove":
            self.operators[ev.name].removed_ns = ts

    def _add_keys(self, op: Operator, ev: OperatorEvent, ts: int) -> None:
        for ln in ev.keys:
            k = signing.parse_public_key(ln)
            self.keys[k.fingerprint] = KeyRecord(k, op.name, ts, ev.valid_after_ns, ev.valid_before_ns)
            op.keys.append(k.fingerprint)

    def extend(self, items: Iterable[tuple[str, OperatorEvent]]) -> Registry:
        for eid, ev in items:
            self.apply(eid, ev)
        return self

    def allowed_signers(self, namespaces: str = "*@tradeops") -> str:
        """The registry as an ssh-keygen allowed_signers file: one line per key, principal = the
        operator, with its validity (valid-after / valid-before, revocation as the end), so that
        `ssh-keygen -Y verify -f FILE -I NAME -n gate@tradeops -s SIG < MSG` checks one signature."""

        def stamp(ns: int) -> str:
            return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(ns / 1e9))

        lines = ["# tradeops operator registry: principal, options, key (ssh-keygen -Y verify -f this)"]
        for fp, k in self.keys.items():
            opts = [f'namespaces="{namespaces}"', f'valid-after="{stamp(max(k.added_ns, k.valid_after_ns))}"']
            ends = [t for t in (k.valid_before_ns, k.revoked_ns, self.operators[k.name].removed_ns) if t]
            if ends:
                opts.append(f'valid-before="{stamp(min(ends))}"')
            lines.append(f"{k.name} {','.join(opts)} {k.key.line} {fp}")
        return "\n".join(lines) + "\n"


def history(r: redis.Redis, skips: Skips | None = None) -> list[tuple[str, OperatorEvent | str]]:
    """ops.operators whole, archived entries first (backend/bus/archive.py), each entry as its event
    or, when it does not decode, the text of why (counted in `skips`)."""
    return chained.decode_all(
        archive.history(r, streams.OPS_OPERATORS), OperatorEvent, stream=streams.OPS_OPERATORS, skips=skips
    )


def events(r: redis.Redis, skips: Skips | None = None) -> list[tuple[str, OperatorEvent]]:
    """The registry's events in log order (entries that do not decode skipped, counted in `skips`)."""
    return [(eid, ev) for eid, ev in history(r, skips) if not isinstance(ev, str)]


def fold(items: Iterable[tuple[str, OperatorEvent | str]]) -> Registry:
    """The registry folded from the log's entries; one that does not decode breaks its chain."""
    out = Registry()
    for eid, ev in items:
        out.read += 1
        if isinstance(ev, str):
            out.chain_problem = out.chain_problem or f"registry entry {eid} is not an operator event: {ev}"
            continue
        out.apply(eid, ev)
    return out


def load(r: redis.Redis, skips: Skips | None = None) -> Registry:
    """The registry folded from ops.operators, archive then live."""
    return fold(history(r, skips))


def _seal(signer: Signer, by: str) -> Any:
    def seal(ev: OperatorEvent) -> OperatorEvent:
        ev = msgspec.structs.replace(ev, signer=signer.fingerprint, nonce=signing.nonce(), by=by, sig="")
        return msgspec.structs.replace(ev, sig=signer.sign(chained.signed_message(ev), signing.NS_OPERATORS))

    return seal


def refuse(r: redis.Redis, kind: str, name: str, rule: str, signer: str = "", by: str = "") -> Refused:
    """Record a refused registry change (unsigned: it counts for nothing) and return the error."""
    chained.append(
        r,
        streams.OPS_OPERATORS,
        HEAD_KEY,
        OperatorEvent(kind="refused", name=name, ts_ns=time.time_ns(), reason=f"{kind}: {rule}", signer=signer, by=by),
    )
    return Refused(f"{kind} {name} refused: {rule}")


def change(
    r: redis.Redis,
    signer: Signer,
    kind: str,
    name: str,
    *,
    roles: list[str] | None = None,
    keys: list[PublicKey] | None = None,
    key: str = "",
    valid_after_ns: int = 0,
    valid_before_ns: int = 0,
    confirms: str = "",
    reason: str = "",
) -> tuple[OperatorEvent, bool]:
    """Sign and record one registry change: (the event, whether it waits for a second lead).
    Refused (and the attempt recorded) when a rule forbids it: the rules are checked before the
    key is asked to sign, and the signed entry is judged again as every reader will judge it."""
    reg = load(r)
    ev = OperatorEvent(
        kind=kind,  # type: ignore[arg-type]  # one of the kinds checked by the caller
        name=name,
        ts_ns=time.time_ns(),
        roles=roles or [],
        keys=[k.line for k in keys or []],
        key=key,
        valid_after_ns=valid_after_ns,
        valid_before_ns=valid_before_ns,
        confirms=confirms,
        reason=reason,
        signer=signer.fingerprint,
    )
    by = name if kind == "init" else reg.name_of(signer.fingerprint)
    problem, _ = reg.check(ev, signed_by=signer.public)
    if problem:
        raise refuse(r, kind, name, problem, signer.fingerprint, by)
    out = chained.append(r, streams.OPS_OPERATORS, HEAD_KEY, ev, seal=_seal(signer, by))
    after = load(r)
    problem = next((p for _, e, p in reversed(after.entries) if e.hash == out.hash), "not recorded")
    waits = out.hash in after.pending
    if problem:  # the registry changed under us: the entry counts for nothing
        raise Refused(f"{kind} {name} refused: {problem}")
    return out, waits
