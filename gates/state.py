"""The gate state as a fold over the audit log: a GateLedger takes the GateEvents of ops.gates in
log order and keeps, per gate, each check's latest outcome, the approvals still valid, the
decision and who fixed a failing check. Each event is applied once: the CLI folds the whole log
for a command, the console keeps one ledger and folds only the entries after the last it saw
(gates/feed.py). One fold, so both say the same.

The rules the fold applies (gates/decisions.py enforces them on a new event):
- a required check's run or attestation voids the approvals given before it;
- a decision clears the approvals;
- who passes a check that was failing in its latest run, after someone ran it and it failed, is a
  fixer (a fixer may not be a gate's only approver).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.messages import GateEvent
from gates.model import Check, Gate


@dataclass
class CheckState:
    check: Check
    outcome: str = "pending"
    evidence: dict[str, Any] = field(default_factory=dict)
    operator: str = ""
    ts_ns: int = 0
    history: list[str] = field(default_factory=list)


@dataclass
class GateState:
    gate: Gate
    checks: dict[str, CheckState]
    approvals: list[tuple[str, str, int]]  # (operator, reason, ts) valid now
    decision: str | None = None
    decision_reason: str = ""
    decided_by: str = ""
    fixers: set[str] = field(default_factory=set)

    @property
    def red(self) -> list[str]:
        return [c.check.id for c in self.checks.values() if c.check.required and c.outcome != "passed"]

    @property
    def approvers(self) -> list[str]:
        return list(dict.fromkeys(a for a, _, _ in self.approvals))

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
            out.append("an approver who did not fix a failing check")
        return out


@dataclass
class _Fold:
    """One gate's state and what the fold needs besides it."""

    state: GateState
    failed_by: dict[str, set[str]] = field(default_factory=dict)  # check -> who saw it fail
    last_run_ns: int = 0  # newest run of a required check


class GateLedger:
    """The state of `gates` (by id), folded from their events in log order. Events of gates not
    in `gates`, and of checks a gate does not have, change nothing."""

    def __init__(self, gates: Mapping[str, Gate]) -> None:
        self.gates = dict(gates)
        self._folds = {
            gid: _Fold(GateState(g, {c.id: CheckState(c) for c in g.checks}, [])) for gid, g in self.gates.items()
        }
        self.applied = 0  # events folded (of any gate)

    def apply(self, ev: GateEvent) -> None:
        self.applied += 1
        f = self._folds.get(ev.gate)
        if f is None:
            return
        st = f.state
        if ev.kind in ("check_run", "attest"):
            cs = st.checks.get(ev.check or "")
            if cs is None:
                return
            if ev.outcome == "failed":
                f.failed_by.setdefault(cs.check.id, set()).add(ev.operator)
            if ev.outcome == "passed" and cs.check.id in f.failed_by and cs.outcome == "failed":
                st.fixers.add(ev.operator)
            cs.outcome, cs.evidence, cs.operator, cs.ts_ns = ev.outcome or "pending", ev.evidence, ev.operator, ev.ts_ns
            cs.history.append(cs.outcome)
            if cs.check.required:
                f.last_run_ns = max(f.last_run_ns, ev.ts_ns)
                st.approvals[:] = [a for a in st.approvals if a[2] > f.last_run_ns]
        elif ev.kind == "approve":
            st.approvals.append((ev.operator, ev.reason, ev.ts_ns))
        elif ev.kind == "decision":
            st.decision, st.decision_reason, st.decided_by = ev.decision, ev.reason, ev.operator
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
