"""Check runs, attestations, approvals and decisions, each signed by the acting operator's SSH key
(gates/signing.py) and recorded as a hash-chained event on ops.gates; the state is the fold of
those events against the operator registry (gates/state.py, gates/operators.py).

Who acts is the registry's name for the signing key: a name typed on the command line is only a
label. Rules:
- the signing key must be registered, valid and unrevoked now;
- proceed needs every required check passed in its latest run; a failed (or unrun) required check
  can be overridden only by an operator who holds `lead` by the registry, naming it and giving a
  reason;
- proceed needs `approvals` approvals from distinct operators of the registry with the gate's
  role, each signing the evidence digest of the latest check runs (an approval of an earlier run
  counts for nothing); an approver who ran a check that failed and later passed (a fixer) may not
  be the only approver: at least one approver must be someone else;
- fix and stop always need a reason.
A refusal is one line naming the rule, and the attempt is recorded (a `refused` entry, unsigned).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis

from backend.bus.durable import wait_durable
from backend.bus.entries import Skips
from backend.messages import GateEvent
from gates import audit, chained, operators, signing
from gates.checks import CheckContext, run_check
from gates.model import Gate
from gates.operators import Refused, Registry
from gates.signing import Signer
from gates.state import CheckState, GateLedger, GateState

__all__ = ["CheckState", "GateState", "Refused", "approve", "attest", "decide", "run", "state", "states"]


def ledger(
    r: redis.Redis, gates: dict[str, Gate], registry: Registry | None = None, skips: Skips | None = None
) -> GateLedger:
    """The whole audit log folded, archive then live, every event judged against the registry
    (entries that do not decode skipped, counted in `skips`)."""
    reg = registry if registry is not None else operators.load(r, skips)
    return GateLedger(gates, reg).extend(ev for _, ev in audit.events(r, skips))


def state(r: redis.Redis, gate: Gate) -> GateState:
    """One gate's state, folded from the whole audit log."""
    return states(r, {gate.id: gate})[gate.id]


def states(r: redis.Redis, gates: dict[str, Gate], skips: Skips | None = None) -> dict[str, GateState]:
    """Every gate's state from one read of the audit log and the registry (entries that do not
    decode skipped, counted in `skips`)."""
    return ledger(r, gates, skips=skips).states()


def verified_decisions(r: redis.Redis, gates: dict[str, Gate], skips: Skips | None = None) -> dict[str, str]:
    """gate id -> its decision as the fold has it (signed, by the rules, not reopened): what the
    migration rules should count (backend.migration.state.check's `decisions`)."""
    return {g: st.decision for g, st in states(r, gates, skips).items() if st.decision}


@dataclass(frozen=True)
class Actor:
    """Who is acting: the signer and the registry's name and roles for its key now."""

    signer: Signer
    name: str
    roles: tuple[str, ...]
    label: str = ""

    @property
    def note(self) -> str:
        """What the CLI says when a typed name is not the signer's."""
        if self.label and self.label != self.name:
            return f"note: {self.label!r} is only a label; signed as {self.name} ({self.signer.fingerprint})"
        return ""


def refuse(
    r: redis.Redis, gate: str, attempt: str, rule: str, signer: Signer | None = None, label: str = ""
) -> Refused:
    """Record a refused attempt on ops.gates (unsigned: it counts for nothing); the error to raise."""
    audit.append(
        r,
        GateEvent(
            gate=gate,
            kind="refused",
            operator=label or "?",
            ts_ns=time.time_ns(),
            reason=rule,
            evidence={"attempt": attempt, "signer": signer.fingerprint if signer else ""},
        ),
    )
    return Refused(rule)


def actor(
    r: redis.Redis, signer: Signer, gate: str, attempt: str, label: str = "", registry: Registry | None = None
) -> Actor:
    """The registered operator behind `signer`, or Refused (recorded) when its key is unknown,
    revoked or not valid now."""
    reg = registry if registry is not None else operators.load(r)
    k, why = reg.key_at(signer.fingerprint, time.time_ns())
    if why or k is None:
        hint = " (a lead adds it: `tradeops operators add NAME --pubkey FILE.pub`)" if k is None else ""
        where = f" on {gate}" if gate != "-" else ""
        raise refuse(r, gate, attempt, f"{attempt}{where} refused: {why}{hint}", signer, label)
    return Actor(signer, k.name, reg.roles_at(k.name, time.time_ns()), label)


def _seal(signer: Signer) -> Any:
    def seal(ev: GateEvent) -> GateEvent:
        ev = msgspec.structs.replace(ev, signer=signer.fingerprint, nonce=signing.nonce(), sig="")
        return msgspec.structs.replace(ev, sig=signer.sign(chained.signed_message(ev), signing.NS_GATE))

    return seal


def _record(r: redis.Redis, who: Actor, *, durable: bool = True, **kw: Any) -> GateEvent:
    return audit.append(
        r, GateEvent(ts_ns=time.time_ns(), operator=who.name, **kw), durable=durable, seal=_seal(who.signer)
    )


def _counted(r: redis.Redis, gate: Gate, ev: GateEvent, attempt: str) -> GateEvent:
    """`ev` as the fold judges it: Refused naming why when it counts for nothing (another event
    landed between the check and the signature)."""
    st = state(r, gate)
    for bad, why in st.rejected:
        if bad.hash == ev.hash:
            raise Refused(f"{attempt} on {gate.id} recorded but counts for nothing: {why}")
    return ev


def run(ctx: CheckContext, gate: Gate, signer: Signer, check_id: str | None = None, label: str = "") -> list[GateEvent]:
    who = actor(ctx.r, signer, gate.id, "check run", label)
    targets = [gate.check(check_id)] if check_id else [c for c in gate.checks if c.kind != "manual"]
    if check_id and targets[0].kind == "manual":
        raise Refused(f"{gate.id}/{check_id} is a manual check: attest it with `tradeops gate attest`")
    out = []
    for c in targets:
        res = run_check(ctx, c)
        if "threshold" in c.params:
            res.evidence.setdefault("threshold", c.params["threshold"])
        out.append(
            _record(
                ctx.r,
                who,
                gate=gate.id,
                kind="check_run",
                check=c.id,
                outcome=res.outcome,
                evidence=res.evidence,
                durable=False,
            )
        )
    if out:
        wait_durable(ctx.r)  # one fsync for the run's events, before they are reported
    return out


def attest(r: redis.Redis, gate: Gate, check_id: str, signer: Signer, note: str, label: str = "") -> GateEvent:
    c = gate.check(check_id)
    if c.kind != "manual":
        raise Refused(f"{gate.id}/{check_id} is a {c.kind} check: run it, attestation is for manual checks")
    if not note.strip():
        raise Refused("an attestation needs a note saying what was checked")
    who = actor(r, signer, gate.id, "attestation", label)
    return _record(r, who, gate=gate.id, kind="attest", check=check_id, outcome="passed", evidence={"note": note})


def approve(
    r: redis.Redis, gate: Gate, signer: Signer, reason: str, label: str = "", evidence: str | None = None
) -> GateEvent:
    """Sign an approval of the latest check runs (`evidence`: the digest the operator was shown;
    refused when the runs changed since)."""
    if not reason.strip():
        raise Refused("an approval needs a reason")
    reg = operators.load(r)
    who = actor(r, signer, gate.id, "approval", label, reg)
    st = ledger(r, {gate.id: gate}, reg).state(gate.id)
    if gate.role not in who.roles:
        raise refuse(
            r,
            gate.id,
            "approval",
            f"approving {gate.id} needs the {gate.role} role; {who.name} has {', '.join(who.roles) or 'none'}",
            signer,
            label or who.name,
        )
    if who.name in st.approvers:
        raise refuse(
            r,
            gate.id,
            "approval",
            f"{who.name} has already approved {gate.id} (key "
            f"{signer.fingerprint}); approvals must come from {gate.approvals} "
            f"different operators",
            signer,
            label,
        )
    if evidence is not None and evidence != st.evidence_digest:
        raise refuse(
            r,
            gate.id,
            "approval",
            f"the evidence shown ({evidence[:16]}) is not the latest check runs "
            f"({st.evidence_digest[:16]}): look again",
            signer,
            label or who.name,
        )
    ev = _record(r, who, gate=gate.id, kind="approve", reason=reason, evidence_digest=st.evidence_digest)
    return _counted(r, gate, ev, "approval")


def decide(
    r: redis.Redis,
    gate: Gate,
    decision: str,
    signer: Signer,
    reason: str,
    override: list[str] | None = None,
    label: str = "",
    evidence: str | None = None,
) -> GateEvent:
    if decision not in ("proceed", "fix", "stop"):
        raise Refused(f"decision must be proceed, fix or stop, not {decision!r}")
    if not reason.strip():
        raise Refused(f"a {decision} decision needs a reason")
    reg = operators.load(r)
    who = actor(r, signer, gate.id, f"{decision} decision", label, reg)
    st = ledger(r, {gate.id: gate}, reg).state(gate.id)
    body: dict[str, Any] = {
        "checks": {c: s.outcome for c, s in st.checks.items()},
        "approvers": [{"operator": a.operator, "key": a.fingerprint} for a in st.approvals],
    }
    if evidence is not None and evidence != st.evidence_digest:
        raise refuse(
            r,
            gate.id,
            f"{decision} decision",
            f"the evidence shown ({evidence[:16]}) is not the latest "
            f"check runs ({st.evidence_digest[:16]}): look again",
            signer,
            label or who.name,
        )
    if decision == "proceed":
        override = override or []
        problems = st.proceed_problems(override, who.name, who.roles, st.evidence_digest)
        if problems:
            raise refuse(
                r, gate.id, "proceed decision", "proceed refused: " + "; ".join(problems), signer, label or who.name
            )
        if override:
            body["override"] = {"checks": override, "by": who.name, "reason": reason}
    ev = _record(
        r,
        who,
        gate=gate.id,
        kind="decision",
        decision=decision,
        reason=reason,
        evidence=body,
        evidence_digest=st.evidence_digest,
    )
    return _counted(r, gate, ev, f"{decision} decision")
