"""Decisions, approvals, roles, the audit chain and the report."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from backend.bus import codec, streams
from backend.messages import GateEvent, MigrationEvent
from backend.migration.gate_status import blocking_gate, latest_decisions
from backend.migration.state import log_hours
from gates import audit, decisions, operators, report
from gates.decisions import Refused
from gates.model import Check, Gate, load
from gates.signing import Signer
from tests.conftest import TRADEOPS
from tests.keys import Keys

# the registry (tests/keys.py `team`): lee is a lead, ann and bob are operators; each signs with its own key


def gate(approvals: int = 1) -> Gate:
    return Gate(
        id="task04",
        title="t",
        approvals=approvals,
        critical=approvals > 1,
        checks=[
            Check(id="stream", title="s", kind="probe", params={"target": "bus:stream", "stream": "x"}),
            Check(id="rows", title="r", kind="data", params={"sink": "ticks", "min_rows": 1}),
            Check(id="plan", title="p", kind="manual"),
        ],
    )


def record_run(r: redis.Redis, g: Gate, check: str, outcome: str, who: Signer) -> None:
    """A check run signed by `who`, as `gate run` records it."""
    name = operators.load(r).name_of(who.fingerprint)
    audit.append(
        r,
        GateEvent(gate=g.id, kind="check_run", operator=name, ts_ns=0, check=check, outcome=outcome),
        seal=decisions._seal(who),
    )


def record_unsigned(r: redis.Redis, g: Gate, check: str, outcome: str, who: str) -> None:
    audit.append(r, GateEvent(gate=g.id, kind="check_run", operator=who, ts_ns=0, check=check, outcome=outcome))


def test_proceed_refused_while_a_required_check_is_red_and_override_needs_lead(r: redis.Redis, team: Keys) -> None:
    g = gate()
    record_run(r, g, "stream", "passed", team("ann"))
    record_run(r, g, "rows", "failed", team("ann"))
    decisions.attest(r, g, "plan", team("ann"), "rollback: stop target, legacy keeps consuming")
    with pytest.raises(Refused, match=r"required checks not passed in their latest run: rows \(failed\)"):
        decisions.decide(r, g, "proceed", team("bob"), "looks fine")
    decisions.approve(r, g, team("bob"), "evidence reviewed")
    with pytest.raises(Refused, match="overriding rows needs the lead role; ann has operator"):
        decisions.decide(r, g, "proceed", team("ann"), "ok", override=["rows"])
    ev = decisions.decide(r, g, "proceed", team("lee"), "sink backfill tracked separately", override=["rows"])
    assert ev.evidence["override"] == {"checks": ["rows"], "by": "lee", "reason": "sink backfill tracked separately"}
    with pytest.raises(Refused, match="a fix decision needs a reason"):
        decisions.decide(r, g, "fix", team("lee"), " ")
    assert latest_decisions(r)["task04"] == "proceed"


def test_two_approvers_and_the_fixer_may_not_be_the_only_one(r: redis.Redis, team: Keys) -> None:
    g = gate(approvals=2)
    record_run(r, g, "stream", "passed", team("ann"))
    record_run(r, g, "rows", "failed", team("ann"))
    record_run(r, g, "rows", "passed", team("ann"))  # ann fixed it
    decisions.attest(r, g, "plan", team("ann"), "attested")
    decisions.approve(r, g, team("ann"), "I fixed it")
    with pytest.raises(Refused, match="ann has already approved"):
        decisions.approve(r, g, team("ann"), "again")
    with pytest.raises(Refused, match=r"needs 1 more approval\(s\) \(1 of 2\)"):
        decisions.decide(r, g, "proceed", team("ann"), "go")
    decisions.approve(r, g, team("bob"), "reviewed")
    st = decisions.state(r, g)
    assert st.fixers == {"ann"} and st.approvers == ["ann", "bob"]
    decisions.decide(r, g, "proceed", team("bob"), "both approved")
    # approvals given before a new check run no longer count
    g2 = gate(approvals=1)
    g2 = Gate(id="task05", title="t", approvals=1, checks=g2.checks)
    record_run(r, g2, "stream", "failed", team("bob"))
    record_run(r, g2, "stream", "passed", team("bob"))
    record_run(r, g2, "rows", "passed", team("bob"))
    decisions.attest(r, g2, "plan", team("bob"), "ok")
    decisions.approve(r, g2, team("bob"), "mine")
    with pytest.raises(Refused, match="an approver who did not fix a failing check"):
        decisions.decide(r, g2, "proceed", team("bob"), "self-approved")
    decisions.approve(r, g2, team("ann"), "reviewed")
    record_run(r, g2, "rows", "passed", team("bob"))  # a re-run voids the approvals before it
    with pytest.raises(Refused, match=r"0 of 1"):
        decisions.decide(r, g2, "proceed", team("ann"), "go")


def test_decisions_feed_the_migration_rules(r: redis.Redis, team: Keys) -> None:
    assert blocking_gate(4, latest_decisions(r)) == "task04"
    g = gate()
    decisions.decide(r, g, "stop", team("ann"), "latency regression")
    assert blocking_gate(4, latest_decisions(r)) == "task04"
    for c in ("stream", "rows"):
        record_run(r, g, c, "passed", team("ann"))
    decisions.attest(r, g, "plan", team("ann"), "ok")
    decisions.approve(r, g, team("bob"), "ok")
    decisions.decide(r, g, "proceed", team("bob"), "fixed")
    assert blocking_gate(4, latest_decisions(r)) is None
    assert blocking_gate(5, latest_decisions(r)) == "task05"


def _chain(r: redis.Redis) -> list[tuple[bytes, dict]]:
    g = gate()
    for i in range(4):
        record_unsigned(r, g, "stream", "passed", f"op{i}")
    assert audit.verify(r).ok
    return r.xrange(streams.OPS_GATES)


def test_audit_verify_catches_edit_delete_and_reorder(r: redis.Redis) -> None:
    entries = _chain(r)
    # edited: rewrite entry 2's operator (same id, new content)
    ev = codec.decode(codec.payload(entries[1][1]), GateEvent)
    import msgspec

    forged = codec.fields(msgspec.structs.replace(ev, operator="mallory"))
    items = [(eid, (forged if i == 1 else f)) for i, (eid, f) in enumerate(entries)]
    _rewrite(r, items)
    v = audit.verify(r)
    assert not v.ok and v.entry == "1001-0" and v.problem.startswith("entry 2 (") and "was changed" in v.problem
    # deleted
    _rewrite(r, [e for i, e in enumerate(entries) if i != 2])
    v = audit.verify(r)
    assert not v.ok and v.problem.startswith("entry 3 (") and "removed or reordered" in v.problem
    # reordered
    _rewrite(r, [entries[0], entries[2], entries[1], entries[3]])
    v = audit.verify(r)
    assert not v.ok and "removed or reordered" in v.problem
    # the newest entry removed
    _rewrite(r, entries[:-1])
    v = audit.verify(r)
    assert not v.ok and "newest entries were removed" in v.problem


def _rewrite(r: redis.Redis, items: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
    head = r.get(audit.HEAD_KEY)
    r.delete(streams.OPS_GATES)
    base = 1_000
    for i, (_, f) in enumerate(items):
        r.xadd(streams.OPS_GATES, f, id=f"{base + i}-0")
    r.set(audit.HEAD_KEY, head)


def test_report_and_cli(r: redis.Redis, tradeops_env, tmp_path: Path, team: Keys) -> None:
    r.xadd(
        streams.OPS_MIGRATION,
        codec.fields(
            MigrationEvent(
                service="normalizer",
                from_state="planned",
                to_state="deploying",
                operator="ann",
                reason="go",
                ts_ns=1_000_000_000_000,
            )
        ),
    )
    r.xadd(
        streams.OPS_MIGRATION,
        codec.fields(
            MigrationEvent(
                service="normalizer",
                from_state="validating",
                to_state="migrated",
                operator="ann",
                reason="ok",
                ts_ns=1_000_000_000_000 + 2 * 3_600_000_000_000,
            )
        ),
    )
    # the effort is what the operators log (or a task's start to its gate decision), not start to cutover
    log_hours(r, "normalizer", 2.0, "ann", "deployed, validated and cut over")
    env = dict(tradeops_env, TRADEOPS_OPERATOR="ann", TRADEOPS_SIGNING_KEY=str(team.path("ann")))
    out = subprocess.run([*TRADEOPS, "gate", "run", "phase1", "clock-sync"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "phase1/clock-sync: passed" in out.stdout
    out = subprocess.run(
        [*TRADEOPS, "gate", "decide", "phase1", "proceed", "--reason", "go"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 1 and "proceed refused: required checks not passed" in out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run(
        [*TRADEOPS, "gate", "attest", "phase1", "secrets", "--note", "vault in place"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0
    out = subprocess.run(
        [*TRADEOPS, "gate", "decide", "phase1", "stop", "--reason", "wait for backups"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0
    rep = report.build(r, load())
    assert rep["overall"]["migrated"] == 1 and rep["overall"]["hours_spent"] == 2.0
    p1 = rep["priorities"][0]
    assert p1["migrated"] == 1 and p1["hours_estimated"] == 8.0 and p1["states"]["normalizer"] == "migrated"
    assert any("gate phase1 decided STOP: wait for backups" in x for x in rep["open_risks"])
    md = subprocess.run([*TRADEOPS, "report"], capture_output=True, text=True, env=env).stdout
    assert "| P1 | Task 02 | 3 | 1 | 33.3% | 8 | 2 |" in md and "**STOP** by ann: wait for backups" in md
    out = subprocess.run([*TRADEOPS, "audit", "verify"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "audit OK: 4 entries" in out.stdout  # run, the refused proceed, attest, stop
    r.xadd(streams.OPS_GATES, {b"d": codec.encode(GateEvent(gate="phase1", kind="approve", operator="x", ts_ns=1))})
    out = subprocess.run([*TRADEOPS, "audit", "verify"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "audit FAILED: entry 5" in out.stdout
    out = subprocess.run([*TRADEOPS, "gate", "show", "nosuch"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "unknown gate 'nosuch'" in out.stderr
