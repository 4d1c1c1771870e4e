"""The gate state as a fold over the audit log: a GateLedger takes the GateEvents of ops.gates in
log order and keeps, per gate, each check's latest outcome, the approvals still valid, the
decision (and the approvals that went into it) and who fixed a failing check. Each event is
applied once: the CLI folds the whole log for a command, the console keeps one ledger and folds
only the entries after the last it saw (gates/feed.py). One fold, so both say the same.

Every event is judged first against the operator registry as it was at the signed time
(gates/operators.py): an event that is unsigned, whose signature does not verify, whose key is
unknown, revoked or not valid then, counts for nothing and is kept with the reason (`rejected`).
Who acted is the registry's name for the signing key; the `operator` field is only a label.

The rules the fold applies (gates/decisions.py checks them before signing a new event):
- approvals count keys, not names: N approvals are N operators of the registry, each with the
  role the gate requires (`role`, default operator), each signing the evidence digest of the
  latest check runs (`GateState.evidence_digest`);
- a required check's run or attestation changes that digest: the approvals given before it are
  cancelled, each with the reason (`cancelled`);
- a proceed counts only when its rules hold at that point of the log: required checks passed or
  overridden by a lead, enough approvals, the evidence digest the current one;
- a decision keeps the approvals that went into it (`decision_approvals`) and clears the rest;
- a required check that fails in a run after a proceed reopens the gate (`reopened`);
- who passes a check that was failing in its latest run, after someone ran it and it failed, is a
  fixer (a fixer may not be a gate's only approver).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from backend.messages import GateEvent
from gates import chained, signing
from gates.model import Check, Gate
from gates.operators import Registry, Trust, when

_canon = msgspec.json.Encoder(order="sorted")


@dataclass
class CheckState:
    check: Check
    outcome: str = "pending"
    evidence: dict[str, Any] = field(default_factory=dict)
    operator: str = ""
    ts_ns: int = 0
    history: list[str] = field(default_factory=list)
    hash: str = ""  # the latest run's (or attestation's) entry


@dataclass
class Approval:
    operator: str  # the registry's name for the signing key
    reason: str
    ts_ns: int
    fingerprint: str
    evidence_digest: str
    hash: str = ""


@dataclass
class GateState:
    gate: Gate
    checks: dict[str, CheckState]
    approvals: list[Approval]  # valid now
    decision: str | None = None
    decision_reason: str = ""
    decided_by: str = ""
    decided_fingerprint: str = ""
    decided_ts_ns: int = 0  # when the decision was signed (the tracker's end of a task)
    decision_approvals: list[Approval] = field(default_factory=list)  # what the decision counted
    override: list[str] = field(default_factory=list)
    fixers: set[str] = field(default_factory=set)
    fixed: dict[str, list[str]] = field(default_factory=dict)  # fixer -> checks they re-ran to a pass
    cancelled: list[tuple[Approval, str]] = field(default_factory=list)  # approvals cancelled, why
    rejected: list[tuple[GateEvent, str]] = field(default_factory=list)  # events that count for nothing
    reopened: str = ""  # why a proceed no longer holds

    @property
    def red(self) -> list[str]:
        return [c.check.id for c in self.checks.values() if c.check.required and c.outcome != "passed"]

    @property
    def approvers(self) -> list[str]:
        return list(dict.fromkeys(a.operator for a in self.approvals))

    @property
    def decision_approvers(self) -> list[str]:
        return list(dict.fromkeys(a.operator for a in self.decision_approvals))

    @property
    def counted(self) -> list[Approval]:
        """The approvals the gate counts now: the valid ones, or after a decision those it took."""
        return self.decision_approvals if self.decision else self.approvals

    @property
    def evidence_digest(self) -> str:
        """SHA-256 of the latest run (or attestation) of each required check: what an approval or
        a decision signs, so it cannot be replayed onto a later run."""
        runs = {c: s.hash for c, s in self.checks.items() if s.check.required}
        return hashlib.sha256(_canon.encode({"gate": self.gate.id, "runs": runs})).hexdigest()

    @property
    def status(self) -> str:
        if self.decision:
            return self.decision
        if not any(c.outcome != "pending" for c in self.checks.values()):
            return "pending"
        return "ready" if not self.red else "blocked"

    def approvals_needed(self) -> list[str]:
        """What approval is still missing, in words (empty when enough)."""
        out = []
        if len(self.approvers) < self.gate.approvals:
            out.append(
                f"{self.gate.approvals - len(self.approvers)} more approval(s) "
                f"({len(self.approvers)} of {self.gate.approvals})"
            )
        elif self.approvers and all(a in self.fixers for a in self.approvers):
            who = "; ".join(f"{a} re-ran {', '.join(self.fixed.get(a, []))} after it failed" for a in self.approvers)
            out.append(
                f"an approver who did not fix a failing check ({who}; whoever fixed a check may not be "
                f"its only approver): another operator must approve: "
                f"`tradeops gate approve {self.gate.id} --reason ...`"
            )
        return out

    def proceed_problems(self, override: list[str], who: str, roles: tuple[str, ...], digest: str) -> list[str]:
        """Why a proceed by `who` with `roles` (by the registry), overriding `override`, signing
        `digest`, may not count now (empty: it may)."""
        out = []
        unknown = [o for o in override if o not in self.checks]
        if unknown:
            out.append(f"gate {self.gate.id} has no check {unknown[0]!r} to override")
        red = [c for c in self.red if c not in override]
        if red:
            out.append(
                "required checks not passed in their latest run: "
                + ", ".join(f"{c} ({self.checks[c].outcome})" for c in red)
            )
        if override and "lead" not in roles:
            out.append(
                f"overriding {', '.join(override)} needs the lead role; {who} has "
                f"{', '.join(roles) or 'no role'} (by the operator registry)"
            )
        out += [f"{self.gate.id} needs {m}" for m in self.approvals_needed()]
        if digest != self.evidence_digest:
            out.append(f"it signed evidence {digest[:16]} but the latest check runs are {self.evidence_digest[:16]}")
        return out


@dataclass
class _Fold:
    """One gate's state and what the fold needs besides it."""

    state: GateState
    failed_by: dict[str, set[str]] = field(default_factory=dict)  # check -> who saw it fail


class GateLedger:
    """The state of `gates` (by id), folded from their events in log order, each judged against
    `registry` (without one, no event is trusted). Events of gates not in `gates`, and of checks
    a gate does not have, change nothing."""

    def __init__(self, gates: Mapping[str, Gate], registry: Registry | None = None) -> None:
        self.gates = dict(gates)
        self.registry = registry if registry is not None else Registry()
        self._folds = {
            gid: _Fold(GateState(g, {c.id: CheckState(c) for c in g.checks}, [])) for gid, g in self.gates.items()
        }
        self.applied = 0  # events folded (of any gate)
        self.trust: dict[str, Trust] = {}  # entry hash -> judgement
        self._last_ts = 0  # newest signed time of a trusted event

    def judge(self, ev: GateEvent) -> Trust:
        if ev.kind == "refused":
            return Trust("unsigned", why="a refused attempt, recorded")
        t = self.registry.judge(chained.signed_message(ev), ev.sig, ev.signer, ev.ts_ns, signing.NS_GATE)
        if t.ok and ev.ts_ns < self._last_ts:
            return Trust("invalid", t.name, t.fingerprint, why="signed at a time before the entry it follows")
        return t

    def apply(self, ev: GateEvent) -> Trust:
        self.applied += 1
        t = self.trust[ev.hash] = self.judge(ev)
        if t.ok:
            self._last_ts = ev.ts_ns
        f = self._folds.get(ev.gate)
        if f is None or ev.kind == "refused":
            return t
        st = f.state
        if not t.ok:
            st.rejected.append((ev, t.why if t.status == "invalid" else "not signed"))
            return t
        if ev.kind in ("check_run", "attest"):
            self._check(f, ev, t)
        elif ev.kind == "approve":
            self._approve(st, ev, t)
        elif ev.kind == "decision":
            self._decide(st, ev, t)
        return t

    def _check(self, f: _Fold, ev: GateEvent, t: Trust) -> None:
        st = f.state
        cs = st.checks.get(ev.check or "")
        if cs is None:
            return
        if ev.outcome == "failed":
            f.failed_by.setdefault(cs.check.id, set()).add(t.name)
        if ev.outcome == "passed" and cs.check.id in f.failed_by and cs.outcome == "failed":
            st.fixers.add(t.name)
            st.fixed.setdefault(t.name, []).append(cs.check.id)
        cs.outcome, cs.evidence, cs.operator, cs.ts_ns = ev.outcome or "pending", ev.evidence, t.name, ev.ts_ns
        cs.hash = ev.hash
        cs.history.append(cs.outcome)
        if not cs.check.required:
            return
        what = "attested" if ev.kind == "attest" else f"re-run ({cs.outcome})"
        for a in st.approvals:
            st.cancelled.append(
                (
                    a,
                    f"{cs.check.id} {what} by {t.name} at {when(ev.ts_ns)}: the evidence "
                    f"approved is no longer the latest",
                )
            )
        st.approvals.clear()
        if st.decision == "proceed" and cs.outcome == "failed":
            st.reopened = (
                f"proceed by {st.decided_by} reopened: {cs.check.id} failed in a run by {t.name} at {when(ev.ts_ns)}"
            )
            st.decision = None

    def _approve(self, st: GateState, ev: GateEvent, t: Trust) -> None:
        role = st.gate.role
        if role not in t.roles:
            st.rejected.append(
                (ev, f"approving {st.gate.id} needs the {role} role; {t.name} has {', '.join(t.roles) or 'none'}")
            )
        elif ev.evidence_digest != st.evidence_digest:
            st.rejected.append(
                (
                    ev,
                    f"an approval of evidence {ev.evidence_digest[:16] or 'none'}, not of the "
                    f"latest check runs ({st.evidence_digest[:16]}): it counts for nothing",
                )
            )
        elif t.name in st.approvers:
            st.rejected.append((ev, f"{t.name} has already approved: one operator counts once"))
        else:
            st.approvals.append(Approval(t.name, ev.reason, ev.ts_ns, t.fingerprint, ev.evidence_digest, ev.hash))

    def _decide(self, st: GateState, ev: GateEvent, t: Trust) -> None:
        override = (
            list(ev.evidence.get("override", {}).get("checks", []))
            if isinstance(ev.evidence.get("override"), dict)
            else []
        )
        if ev.decision == "proceed":
            problems = st.proceed_problems(override, t.name, t.roles, ev.evidence_digest)
            if problems:
                st.rejected.append((ev, "proceed refused: " + "; ".join(problems)))
                return
        st.decision, st.decision_reason, st.decided_by = ev.decision, ev.reason, t.name
        st.decided_fingerprint, st.override, st.reopened = t.fingerprint, override, ""
        st.decided_ts_ns = ev.ts_ns
        st.decision_approvals = list(st.approvals)
        st.approvals.clear()

    def extend(self, events: Iterable[GateEvent]) -> GateLedger:
        for ev in events:
            self.apply(ev)
        return self

    def state(self, gate_id: str) -> GateState:
        return self._folds[gate_id].state

    def states(self) -> dict[str, GateState]:
        """gate id -> state, in the order of the gates given."""
        return {gid: f.state for gid, f in self._folds.items()}
