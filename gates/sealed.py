"""The control plane's other operator actions, signed like the gate events: migration moves
(ops.migration, namespace migration@tradeops) and kill switch toggles (ops.control, namespace
control@tradeops). backend/ records them and never imports gates/: it takes a `seal` callable that
this module makes from the operator's signer. `judge_*` checks one against the registry at its
signed time; `actor` refuses (and records) a key that is not registered and valid now."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import redis

from backend.bus import archive, codec, streams
from backend.bus.entries import Skips, decode_entries
from backend.messages import ControlCommand, MigrationEvent
from gates import chained, decisions, operators, signing
from gates.anchor import SEALED
from gates.operators import Registry, Trust
from gates.signing import Signer


def _sealer(signer: Signer, namespace: str) -> Callable[[Any], Any]:
    def seal(ev: Any) -> Any:
        ev = msgspec.structs.replace(ev, signer=signer.fingerprint, nonce=signing.nonce(), sig="")
        return msgspec.structs.replace(ev, sig=signer.sign(chained.signed_message(ev), namespace))

    return seal


def seal_move(signer: Signer) -> Callable[[MigrationEvent], MigrationEvent]:
    return _sealer(signer, signing.NS_MIGRATION)


def seal_control(signer: Signer) -> Callable[[ControlCommand], ControlCommand]:
    return _sealer(signer, signing.NS_CONTROL)


def actor(r: redis.Redis, signer: Signer, what: str, label: str = "") -> str:
    """The registry's name for `signer`'s key, or Refused (the attempt recorded on ops.gates)."""
    return decisions.actor(r, signer, "-", what, label).name


def judge_move(reg: Registry, ev: MigrationEvent) -> Trust:
    return reg.judge(chained.signed_message(ev), ev.sig, ev.signer, ev.ts_ns, signing.NS_MIGRATION)


def judge_control(reg: Registry, cmd: ControlCommand) -> Trust:
    return reg.judge(chained.signed_message(cmd), cmd.sig, cmd.signer, cmd.ts_ns, signing.NS_CONTROL)


def tally(r: redis.Redis, reg: Registry | None = None, skips: Skips | None = None) -> tuple[dict[str, int], list[str]]:
    """Moves and kill switch toggles by judgement (valid / invalid / unsigned), and the invalid
    ones in words; each log read whole, archive then live (entries that do not decode skipped,
    counted in `skips`)."""
    reg = reg if reg is not None else operators.load(r, skips)
    logs = {s: [(eid.decode(), f) for eid, f in archive.history(r, s)] for s in SEALED}
    return tally_logs(logs, reg, skips)


def tally_logs(
    logs: Mapping[str, Sequence[tuple[str, Any]]], reg: Registry, skips: Skips | None = None
) -> tuple[dict[str, int], list[str]]:
    """`tally` of logs already read: log -> (entry id, its fields or its payload bytes) in order
    (what gates/proof.py's Logs.sealed holds, from Redis or an export)."""
    counts = {"valid": 0, "invalid": 0, "unsigned": 0}
    bad = []
    kinds: dict[str, tuple[type, Callable[[Registry, Any], Trust]]] = {
        streams.OPS_MIGRATION: (MigrationEvent, judge_move),
        streams.OPS_CONTROL: (ControlCommand, judge_control),
    }
    for stream, items in logs.items():
        typ, judge = kinds[stream]
        raw = [(eid.encode(), f if not isinstance(f, bytes) else {codec.FIELD: f}) for eid, f in items]
        got: list[tuple[bytes, Any]]
        got, _ = decode_entries(raw, typ, stream=stream, skips=skips)
        for eid, ev in got:
            if isinstance(ev, ControlCommand) and ev.command != "kill_switch":
                continue
            t = judge(reg, ev)
            counts[t.status] += 1
            if t.status == "invalid":
                what = (
                    f"{ev.action} {ev.service}"
                    if isinstance(ev, MigrationEvent)
                    else f"kill switch {'on' if ev.args.get('on') else 'off'}"
                )
                bad.append(
                    f"{stream} {eid.decode()} ({what}, labelled {ev.operator!r}, "
                    f"{time.strftime('%H:%M:%S', time.gmtime(ev.ts_ns / 1e9))}): {t.why}"
                )
    return counts, bad
