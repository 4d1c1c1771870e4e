"""Gate state, check runs, attestations, approvals and decisions, all recorded as hash-chained
events on ops.gates; the state is the fold of those events (gates/state.py).

Rules:
- proceed needs every required check passed in its latest run; a failed (or unrun) required check
  can be overridden only by an operator with the `lead` role, naming it and giving a reason;
- proceed needs `approvals` distinct approvers, approving after the latest check run and after
  the latest decision; an approver who ran a check that failed and later passed (a fixer) may not
  be the only approver: at least one approver must be someone else;
- fix and stop always need a reason.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from backend.bus.durable import wait_durable
from backend.bus.entries import Skips
from backend.errors import TradeopsError
from backend.messages import GateEvent
from backend.settings import Settings
from gates import audit
from gates.checks import CheckContext, run_check
from gates.model import Gate
from gates.state import CheckState, GateLedger, GateState

__all__ = ["CheckState", "GateState", "Refused", "approve", "attest", "decide", "run", "state", "states"]


class Refused(TradeopsError):
    """A gate action that the rules refuse; the message says which rule."""


def state(r: redis.Redis, gate: Gate) -> GateState:
    """One gate's state, folded from the whole audit log."""
    return states(r, {gate.id: gate})[gate.id]


def states(r: redis.Redis, gates: dict[str, Gate], skips: Skips | None = None) -> dict[str, GateState]:
    """Every gate's state from one read of the audit log (entries that are not gate events
    skipped, counted in `skips`)."""
    return GateLedger(gates).extend(ev for _, ev in audit.events(r, skips)).states()


def _record(r: redis.Redis, *, durable: bool = True, **kw: Any) -> GateEvent:
    return audit.append(r, GateEvent(ts_ns=time.time_ns(), **kw), durable=durable)


def run(ctx: CheckContext, gate: Gate, operator: str, check_id: str | None = None) -> list[GateEvent]:
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
                gate=gate.id,
                kind="check_run",
                operator=operator,
                check=c.id,
                outcome=res.outcome,
                evidence=res.evidence,
                durable=False,
            )
        )
    if out:
        wait_durable(ctx.r)  # one fsync for the run's events, before they are reported
    return out


def attest(r: redis.Redis, gate: Gate, check_id: str, operator: str, note: str) -> GateEvent:
    c = gate.check(check_id)
    if c.kind != "manual":
        raise Refused(f"{gate.id}/{check_id} is a {c.kind} check: run it, attestation is for manual checks")
    if not note.strip():
        raise Refused("an attestation needs a note saying what was checked")
    return _record(
        r, gate=gate.id, kind="attest", operator=operator, check=check_id, outcome="passed", evidence={"note": note}
    )


def approve(r: redis.Redis, gate: Gate, operator: str, reason: str) -> GateEvent:
    st = state(r, gate)
    if not reason.strip():
        raise Refused("an approval needs a reason")
    if operator in st.approvers:
        raise Refused(
            f"{operator} has already approved {gate.id}; approvals must come from {gate.approvals} different operators"
        )
    return _record(r, gate=gate.id, kind="approve", operator=operator, reason=reason)


def decide(
    r: redis.Redis,
    settings: Settings,
    gate: Gate,
    decision: str,
    operator: str,
    reason: str,
    override: list[str] | None = None,
) -> GateEvent:
    if decision not in ("proceed", "fix", "stop"):
        raise Refused(f"decision must be proceed, fix or stop, not {decision!r}")
    if not reason.strip():
        raise Refused(f"a {decision} decision needs a reason")
    st = state(r, gate)
    evidence: dict[str, Any] = {"checks": {c: s.outcome for c, s in st.checks.items()}, "approvers": st.approvers}
    if decision == "proceed":
        override = override or []
        unknown = [o for o in override if o not in st.checks]
        if unknown:
            raise Refused(f"gate {gate.id} has no check {unknown[0]!r} to override")
        red = [c for c in st.red if c not in override]
        if red:
            raise Refused(
                f"proceed refused: required checks not passed in their latest run: "
                f"{', '.join(f'{c} ({st.checks[c].outcome})' for c in red)}"
            )
        if override:
            if "lead" not in settings.roles_of(operator):
                raise Refused(
                    f"overriding {', '.join(override)} needs the lead role; {operator} has "
                    f"{', '.join(settings.roles_of(operator))}"
                )
            evidence["override"] = {"checks": override, "by": operator, "reason": reason}
        missing = st.approvals_needed()
        if missing:
            raise Refused(f"proceed refused: {gate.id} needs {'; '.join(missing)}")
    return _record(
        r, gate=gate.id, kind="decision", operator=operator, decision=decision, reason=reason, evidence=evidence
    )
