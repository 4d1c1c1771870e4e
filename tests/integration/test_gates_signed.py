"""Gate actions are signed and the rules count keys, not names (real Redis, keys the tests make):
one person under two names, unsigned and badly signed events, unknown and revoked keys, an
approval replayed onto a later check run, a lead override by a non-lead, roles from a config file.
Each refusal is one line naming the rule and leaves a record of the attempt."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import redis

from backend.errors import ConfigError
from backend.messages import GateEvent
from backend.settings import load_settings
from gates import audit, chained, decisions, operators, report, signing
from gates.decisions import Refused
from gates.model import Check, Gate
from gates.signing import Signer
from tests.keys import Keys


def gate(approvals: int = 2) -> Gate:
    return Gate(
        id="task04",
        title="t",
        approvals=approvals,
        critical=approvals > 1,
        checks=[
            Check(id="rows", title="r", kind="data", params={"sink": "ticks", "min_rows": 1}),
            Check(id="plan", title="p", kind="manual"),
        ],
    )


def run(r: redis.Redis, g: Gate, check: str, outcome: str, who: Signer) -> GateEvent:
    name = operators.load(r).name_of(who.fingerprint)
    return audit.append(
        r,
        GateEvent(gate=g.id, kind="check_run", operator=name, ts_ns=0, check=check, outcome=outcome),
        seal=decisions._seal(who),
    )


def green(r: redis.Redis, g: Gate, who: Signer) -> None:
    run(r, g, "rows", "passed", who)
    decisions.attest(r, g, "plan", who, "rehearsed")


def refusals(r: redis.Redis) -> list[str]:
    return [ev.reason for _, ev in audit.events(r) if ev.kind == "refused"]


def test_one_key_is_one_approver_whatever_the_name_typed(r: redis.Redis, team: Keys) -> None:
    g = gate()
    green(r, g, team("ann"))
    ev = decisions.approve(r, g, team("bob"), "reviewed", label="mallory")
    assert ev.operator == "bob" and ev.signer == team("bob").fingerprint
    with pytest.raises(Refused, match="bob has already approved task04"):
        decisions.approve(r, g, team("bob"), "again", label="mallory2")
    with pytest.raises(Refused, match=r"needs 1 more approval\(s\) \(1 of 2\)"):
        decisions.decide(r, g, "proceed", team("bob"), "go")
    # a second name for the same key is refused by the registry
    with pytest.raises(operators.Refused, match="already registered to bob: one key, one operator"):
        operators.change(r, team("lee"), "add", "bob2", roles=["operator"], keys=[team("bob").public])
    assert len(refusals(r)) == 2 and "already approved" in refusals(r)[0]


def test_unsigned_and_badly_signed_events_count_for_nothing(r: redis.Redis, team: Keys) -> None:
    g = gate(approvals=1)
    green(r, g, team("ann"))
    digest = decisions.state(r, g).evidence_digest
    # unsigned, straight into Redis
    audit.append(r, GateEvent(gate=g.id, kind="approve", operator="bob", ts_ns=0, reason="x", evidence_digest=digest))
    # signed by bob, then its reason changed and its hash recomputed
    good = audit.append(
        r,
        GateEvent(gate=g.id, kind="approve", operator="bob", ts_ns=0, reason="ok", evidence_digest=digest),
        seal=decisions._seal(team("bob")),
    )
    r.xdel("ops.gates", r.xrevrange("ops.gates", count=1)[0][0])
    forged = msgspec.structs.replace(good, reason="rubber stamp")
    audit.append(r, forged)
    # signed by a key nobody registered
    audit.append(
        r,
        GateEvent(gate=g.id, kind="approve", operator="lee", ts_ns=0, reason="x", evidence_digest=digest),
        seal=decisions._seal(team("mallory")),
    )
    st = decisions.state(r, g)
    assert st.approvers == []
    whys = [why for _, why in st.rejected]
    assert whys[0] == "not signed"
    assert "the signature does not verify" in whys[1]
    assert f"key {team('mallory').fingerprint} is not registered" in whys[2]
    with pytest.raises(Refused, match=r"approval on task04 refused: key .* is not registered"):
        decisions.approve(r, g, team("mallory"), "let me in")
    assert "is not registered" in refusals(r)[-1]


def test_a_revoked_key_may_not_act(r: redis.Redis, team: Keys) -> None:
    g = gate(approvals=1)
    green(r, g, team("ann"))
    operators.change(r, team("lee"), "revoke_key", "bob", key=team("bob").fingerprint, reason="laptop stolen")
    with pytest.raises(Refused, match=r"approval on task04 refused: key .* of bob was revoked"):
        decisions.approve(r, g, team("bob"), "still me")
    audit.append(
        r,
        GateEvent(
            gate=g.id,
            kind="approve",
            operator="bob",
            ts_ns=0,
            reason="x",
            evidence_digest=decisions.state(r, g).evidence_digest,
        ),
        seal=decisions._seal(team("bob")),
    )
    st = decisions.state(r, g)
    assert st.approvers == [] and "was revoked at" in st.rejected[-1][1]


def test_an_approval_is_of_one_check_run_and_is_cancelled_out_loud(r: redis.Redis, team: Keys) -> None:
    g = gate(approvals=1)
    green(r, g, team("ann"))
    old = decisions.state(r, g).evidence_digest
    decisions.approve(r, g, team("bob"), "reviewed", evidence=old)
    assert decisions.state(r, g).approvers == ["bob"]
    run(r, g, "rows", "passed", team("ann"))  # a new run: the approval no longer counts, and says why
    st = decisions.state(r, g)
    assert st.approvers == [] and st.evidence_digest != old
    assert st.cancelled[0][0].operator == "bob" and "rows re-run (passed) by ann" in st.cancelled[0][1]
    # replayed: a signature of the old evidence, on the new run
    audit.append(
        r,
        GateEvent(gate=g.id, kind="approve", operator="bob", ts_ns=0, reason="again", evidence_digest=old),
        seal=decisions._seal(team("bob")),
    )
    st = decisions.state(r, g)
    assert st.approvers == [] and "not of the latest check runs" in st.rejected[-1][1]
    with pytest.raises(Refused, match=r"the evidence shown .* is not the latest check runs"):
        decisions.approve(r, g, team("bob"), "I saw it", evidence=old)
    # approvals stay with the decision they went into
    decisions.approve(r, g, team("bob"), "reviewed the new run")
    decisions.decide(r, g, "proceed", team("ann"), "go")
    st = decisions.state(r, g)
    assert st.decision == "proceed" and st.decision_approvers == ["bob"] and [a.operator for a in st.counted] == ["bob"]
    md = report.markdown(report.build(r, {g.id: g}))
    assert f"**PROCEED** by ann: go. Approvals that went into it: bob ({team('bob').fingerprint}) (1 of 1)." in md
    assert "- cancelled: approval by bob: rows re-run (passed) by ann" in md
    assert "- not counted: approve labelled bob: an approval of evidence" in md


def test_a_lead_override_needs_lead_by_the_registry(r: redis.Redis, team: Keys, tmp_path: Path) -> None:
    evil = tmp_path / "evil.toml"
    evil.write_text('roles = { mallory = ["operator", "lead"] }\n')
    with pytest.raises(ConfigError, match="roles come from the signed operator registry"):
        load_settings(evil)
    g = gate(approvals=1)
    run(r, g, "rows", "failed", team("ann"))
    decisions.attest(r, g, "plan", team("ann"), "ok")
    decisions.approve(r, g, team("bob"), "reviewed")
    with pytest.raises(Refused, match="overriding rows needs the lead role; bob has operator"):
        decisions.decide(r, g, "proceed", team("bob"), "ship it", override=["rows"])
    # bob signs the override himself, past the CLI: it counts for nothing
    st = decisions.state(r, g)
    audit.append(
        r,
        GateEvent(
            gate=g.id,
            kind="decision",
            operator="lee",
            ts_ns=0,
            decision="proceed",
            reason="x",
            evidence={"override": {"checks": ["rows"], "by": "lee", "reason": "x"}},
            evidence_digest=st.evidence_digest,
        ),
        seal=decisions._seal(team("bob")),
    )
    st = decisions.state(r, g)
    assert st.decision is None and "overriding rows needs the lead role; bob has operator" in st.rejected[-1][1]
    decisions.decide(r, g, "proceed", team("lee"), "backfill tracked", override=["rows"])
    assert decisions.state(r, g).decision == "proceed"


def test_a_failed_run_after_proceed_reopens_the_gate(r: redis.Redis, team: Keys) -> None:
    g = gate(approvals=1)
    green(r, g, team("ann"))
    decisions.approve(r, g, team("bob"), "ok")
    decisions.decide(r, g, "proceed", team("bob"), "go")
    assert decisions.verified_decisions(r, {g.id: g}) == {g.id: "proceed"}
    run(r, g, "rows", "failed", team("ann"))
    st = decisions.state(r, g)
    assert st.decision is None and st.status == "blocked"
    assert st.reopened.startswith("proceed by bob reopened: rows failed in a run by ann")
    assert decisions.verified_decisions(r, {g.id: g}) == {}


def test_the_fixer_rule_says_the_way_forward(r: redis.Redis, team: Keys) -> None:
    g = gate(approvals=1)
    run(r, g, "rows", "failed", team("ann"))
    run(r, g, "rows", "passed", team("ann"))
    decisions.attest(r, g, "plan", team("ann"), "ok")
    decisions.approve(r, g, team("ann"), "flaky, re-ran it")
    with pytest.raises(
        Refused,
        match=r"an approver who did not fix a failing check \(ann re-ran rows after it "
        r"failed.*another operator must approve: `tradeops gate approve task04",
    ):
        decisions.decide(r, g, "proceed", team("ann"), "go")


def test_signatures_check_with_ssh_keygen(r: redis.Redis, team: Keys, tmp_path: Path) -> None:
    import subprocess

    g = gate(approvals=1)
    green(r, g, team("ann"))
    ev = decisions.approve(r, g, team("bob"), "reviewed")
    (tmp_path / "allowed").write_text(operators.load(r).allowed_signers())
    (tmp_path / "msg").write_bytes(chained.signed_message(ev))
    (tmp_path / "sig").write_text(ev.sig)
    out = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(tmp_path / "allowed"),
            "-I",
            "bob",
            "-n",
            signing.NS_GATE,
            "-s",
            str(tmp_path / "sig"),
        ],
        stdin=(tmp_path / "msg").open("rb"),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and 'Good "gate@tradeops" signature for bob' in out.stdout
