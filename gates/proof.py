"""The whole proof of the audit log, from Redis or from an export, with or without Redis:

1. each log's hash chain (ops.gates with its recorded head, ops.operators); the moves and kill
   switch toggles (ops.migration, ops.control) are read whole too, for their anchors;
2. every signature, against the operator registry as it was at the signed time (gates/operators.py):
   an entry signed by a key that was not valid then, or whose signature does not verify, fails;
   unsigned entries (refusal records, entries from before signing) count for nothing and are
   counted here;
3. the anchors (gates/anchor.py): the live logs (all four) extend the last signed checkpoint of
   every place, else the first entry that differs is named.

`export` writes the logs with their signatures (JSON Lines), the registry as an ssh-keygen
allowed_signers file and, per signed entry, the exact signed bytes and the signature, so that an
auditor can check any one with plain `ssh-keygen -Y verify`."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import redis

from backend.bus import archive, codec, replies, streams
from backend.bus.entries import Skips
from backend.errors import TradeopsError
from backend.messages import ControlCommand, GateEvent, MigrationEvent, OperatorEvent
from gates import anchor, audit, chained, operators, signing
from gates.model import Gate
from gates.operators import Registry, Trust
from gates.state import GateLedger

EXPORT_VERSION = 1
Item = tuple[str, Any]  # (entry id, the event, or the text of why it is unreadable)


@dataclass
class Logs:
    """The two logs as read, and the recorded head of ops.gates (None from an export)."""

    gates: list[Item]
    operators: list[Item]
    head: str | None = None
    checkpoints: dict[str, Any] = field(default_factory=dict)  # from an export: place -> its last checkpoint
    archived: dict[str, int] = field(default_factory=dict)  # log -> of its entries, how many were archived
    sealed: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    """ops.migration and ops.control whole: (entry id, anchor.entry_bytes) in log order."""

    def chains(self) -> dict[str, anchor.Chain]:
        out = {
            streams.OPS_GATES: [(eid, ev.hash if not isinstance(ev, str) else "") for eid, ev in self.gates],
            streams.OPS_OPERATORS: [(eid, ev.hash if not isinstance(ev, str) else "") for eid, ev in self.operators],
        }
        for log, items in self.sealed.items():
            out[log] = anchor.running(items)
        return out


def from_redis(r: redis.Redis, skips: Skips | None = None) -> Logs:
    """Both logs whole, archived entries first (backend/bus/archive.py), with the recorded head of
    ops.gates, the live entries, the head and the archives' records read in one transaction; an
    entry that does not decode stays in its place as the text of why (a break in its chain,
    counted in `skips`). ArchiveUnreadable when an archive cannot be read or holds less than was
    trimmed."""
    logs = (streams.OPS_GATES, streams.OPS_OPERATORS, *anchor.SEALED)
    with r.pipeline(transaction=True) as pipe:
        for stream in logs:
            pipe.xrange(stream)
            pipe.hgetall(archive.key(stream))
        pipe.get(audit.HEAD_KEY)
        *got, head = pipe.execute()
    live = {s: replies.entries(got[2 * i]) for i, s in enumerate(logs)}
    old = {s: archive.archived_entries(s, got[2 * i + 1]) for i, s in enumerate(logs)}
    gates = chained.decode_all(
        archive.join(old[streams.OPS_GATES], live[streams.OPS_GATES]),
        GateEvent,
        stream=streams.OPS_GATES,
        skips=skips,
    )
    ops = chained.decode_all(
        archive.join(old[streams.OPS_OPERATORS], live[streams.OPS_OPERATORS]),
        OperatorEvent,
        stream=streams.OPS_OPERATORS,
        skips=skips,
    )
    sealed = {
        s: [(eid.decode(), anchor.entry_bytes(f)) for eid, f in archive.join(old[s], live[s]) if f is not None]
        for s in anchor.SEALED
    }
    return Logs(gates, ops, head.decode() if head else "", archived={s: len(e) for s, e in old.items()}, sealed=sealed)


def registry_of(logs: Logs) -> Registry:
    return operators.fold(logs.operators)


@dataclass
class Report:
    ok: bool
    lines: list[str]  # what to print, the verdict first
    problems: list[str]
    trust: dict[str, Trust]  # gate entry hash -> judgement
    registry: Registry
    findings: list[anchor.Finding]

    @property
    def problem(self) -> str:
        return self.problems[0] if self.problems else ""


def verify(logs: Logs, gates: dict[str, Gate], where: list[Path]) -> Report:
    problems: list[str] = []
    # 1. the chains
    v = audit.ChainVerifier()
    for eid, ev in logs.gates:
        if isinstance(ev, str):
            v.unreadable(eid, ev)
            break
        if not v.feed(eid, ev):
            break
    archived = logs.archived.get(streams.OPS_GATES, 0)
    verdict = v.verdict(logs.head if logs.head is not None else v.prev, min(archived, v.checked))
    if not verdict.ok:
        problems.append(verdict.problem)  # the gate log's own words (`entry N (...)`), as before
    reg = registry_of(logs)
    if reg.chain_problem:
        problems.append(f"ops.operators: {reg.chain_problem}")
    # 2. the signatures, against the registry at the signed time
    ledger = GateLedger(gates, reg)
    counts = {"valid": 0, "invalid": 0, "unsigned": 0}
    for i, (eid, ev) in enumerate(logs.gates):
        if isinstance(ev, str):
            continue
        t = ledger.apply(ev)
        counts[t.status] += 1
        if t.status == "invalid":
            problems.append(
                f"ops.gates: entry {i + 1} ({eid}, {ev.kind} on {ev.gate} labelled {ev.operator!r}): {t.why}"
            )
    for i, (eid, oev, why) in enumerate(reg.entries):
        if why and oev.kind != "refused" and oev.sig:
            problems.append(f"ops.operators: entry {i + 1} ({eid}, {oev.kind} {oev.name}): {why}")
    # 3. the anchors
    findings = anchor.check(logs.chains(), reg, where)
    findings += _export_checkpoints(logs, reg)
    problems += [f"anchor: {f.text}" for f in findings if not f.ok]
    head = (
        f"audit OK: {len(logs.gates)} entries" + (f" ({archived} archived)" if archived else "") + ", chain intact"
        if not problems
        else f"audit FAILED: {problems[0]}"
    )
    lines = [
        head,
        f"signatures: {counts['valid']} valid, {counts['invalid']} invalid, {counts['unsigned']} unsigned "
        f"(count for nothing); registry: {len(reg.operators)} operators, {len(reg.keys)} keys, "
        f"{len(logs.operators)} entries",
    ]
    lines += [f"anchor {'ok' if f.ok else 'FAILED'}: {f.text}" for f in findings]
    lines += [f"problem: {p}" for p in problems[1:]]
    return Report(not problems, lines, problems, ledger.trust, reg, findings)


def _export_checkpoints(logs: Logs, reg: Registry) -> list[anchor.Finding]:
    """The checkpoints an export carries, against the exported logs themselves."""
    out = []
    chains = logs.chains()
    for place, raw in logs.checkpoints.items():
        try:
            cp = msgspec.convert(raw, anchor.Checkpoint)
        except msgspec.ValidationError as exc:
            out.append(anchor.Finding(Path(place), False, f"export checkpoint of {place}: {exc}"))
            continue
        t = anchor.judge(cp, reg)
        problem = "" if t.ok else f"not validly signed: {t.why}"
        for log, n in cp.counts.items():
            chain = chains.get(log, [])
            if problem:
                break
            if len(chain) < n:
                problem = f"{log}: the export has {len(chain)} entries, the checkpoint {n}"
            elif n and chain[n - 1][1] != cp.heads.get(log):
                problem = f"{log}: entry {n} ({chain[n - 1][0]}) is not the checkpoint's head"
        out.append(
            anchor.Finding(
                Path(place),
                not problem,
                f"exported checkpoint of {place}: " + (problem or f"the exported logs extend it ({cp.counts})"),
            )
        )
    return out


def export(r: redis.Redis, path: Path, where: list[Path]) -> dict[str, Any]:
    """Write the logs to `path` (JSON Lines), `path`.allowed_signers, and `path`.d/ with each signed
    entry's message and signature; returns what was written."""
    logs = from_redis(r)
    reg = registry_of(logs)
    last = {str(p): msgspec.to_builtins(cps[-1]) for p in where if (cps := anchor.read_checkpoints(p))}
    d = Path(str(path) + ".d")
    d.mkdir(parents=True, exist_ok=True)
    signed = 0
    try:
        with open(path, "w") as out:
            out.write(
                json.dumps(
                    {
                        "tradeops_audit_export": EXPORT_VERSION,
                        "exported_ns": time.time_ns(),
                        "root": reg.root,
                        "checkpoints": last,
                        "logs": list(anchor.LOGS),
                    }
                )
                + "\n"
            )
            for log, items, ns in (
                (streams.OPS_OPERATORS, logs.operators, signing.NS_OPERATORS),
                (streams.OPS_GATES, logs.gates, signing.NS_GATE),
            ):
                short = "gates" if log == streams.OPS_GATES else "operators"
                for i, (eid, ev) in enumerate(items, 1):
                    if isinstance(ev, str):
                        out.write(json.dumps({"log": log, "id": eid, "unreadable": ev}) + "\n")
                        continue
                    row: dict[str, Any] = {"log": log, "n": i, "id": eid, "event": msgspec.to_builtins(ev)}
                    if ev.sig:
                        stem = d / f"{short}-{i:06d}"
                        Path(f"{stem}.msg").write_bytes(chained.signed_message(ev))
                        Path(f"{stem}.sig").write_text(ev.sig)
                        row.update(
                            namespace=ns, message=f"{stem}.msg", signature=f"{stem}.sig", signer=reg.name_of(ev.signer)
                        )
                        signed += 1
                    out.write(json.dumps(row) + "\n")
            sealed_kinds: tuple[tuple[str, type[MigrationEvent] | type[ControlCommand], str], ...] = (
                (streams.OPS_MIGRATION, MigrationEvent, signing.NS_MIGRATION),
                (streams.OPS_CONTROL, ControlCommand, signing.NS_CONTROL),
            )
            for log, typ, ns in sealed_kinds:
                short = anchor.LOGS[log]
                for i, (eid, data) in enumerate(logs.sealed.get(log, []), 1):
                    # the payload is what is verified (its running hash, its signature); `event`
                    # is it decoded, for a person
                    row = {"log": log, "n": i, "id": eid, "payload": base64.b64encode(data).decode()}
                    sev: MigrationEvent | ControlCommand | None
                    try:
                        sev = codec.decode(data, typ)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        sev = None
                    row["event"] = msgspec.to_builtins(sev) if sev is not None else None
                    if sev is not None and sev.sig:
                        stem = d / f"{short}-{i:06d}"
                        Path(f"{stem}.msg").write_bytes(chained.signed_message(sev))
                        Path(f"{stem}.sig").write_text(sev.sig)
                        row.update(
                            namespace=ns, message=f"{stem}.msg", signature=f"{stem}.sig", signer=reg.name_of(sev.signer)
                        )
                        signed += 1
                    out.write(json.dumps(row) + "\n")
        Path(str(path) + ".allowed_signers").write_text(reg.allowed_signers())
    except OSError as exc:
        raise TradeopsError(f"cannot write the export {path}: {exc}") from None
    return {
        "gates": len(logs.gates),
        "operators": len(logs.operators),
        **{anchor.LOGS[k]: len(v) for k, v in logs.sealed.items()},
        "signed": signed,
        "allowed_signers": str(path) + ".allowed_signers",
        "signatures": str(d),
    }


def from_export(path: Path) -> Logs:
    """The logs of an export (no Redis). TradeopsError naming the line when it is not one."""
    if not path.is_file():
        raise TradeopsError(f"{path}: no such export")
    logs = Logs([], [], None)
    for n, ln in enumerate(path.read_text().splitlines(), 1):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
        except json.JSONDecodeError as exc:
            raise TradeopsError(f"{path}:{n}: not JSON: {exc}") from None
        if n == 1:
            if row.get("tradeops_audit_export") != EXPORT_VERSION:
                raise TradeopsError(f"{path}: not a tradeops audit export (version {EXPORT_VERSION})")
            logs.checkpoints = row.get("checkpoints") or {}
            # the sealed logs it holds (an export from before they were anchored has none)
            logs.sealed = {s: [] for s in anchor.SEALED if s in (row.get("logs") or [])}
            continue
        if row.get("log") in anchor.SEALED:
            try:
                logs.sealed.setdefault(row["log"], []).append((str(row["id"]), base64.b64decode(row["payload"])))
            except (KeyError, ValueError) as exc:
                raise TradeopsError(f"{path}:{n}: an entry of {row['log']} without its payload: {exc}") from None
            continue
        typ: type = GateEvent if row.get("log") == streams.OPS_GATES else OperatorEvent
        items = logs.gates if typ is GateEvent else logs.operators
        if "unreadable" in row:
            items.append((row.get("id", "?"), str(row["unreadable"])))
            continue
        try:
            items.append((row["id"], msgspec.convert(row["event"], typ)))
        except (KeyError, msgspec.ValidationError) as exc:
            items.append((row.get("id", f"line {n}"), f"line {n}: {exc}"))
    return logs
