"""The audit log anchored outside Redis (real Redis, keys the tests make): the three rewrites
someone with Redis access can make pass the hash chain alone (the tail cut and the head set back,
the log and its head deleted, every entry re-encoded with the chain recomputed) are caught by the
signed checkpoints, naming the first entry that differs; an export verifies with no Redis, and one
approval verifies with plain `ssh-keygen -Y verify`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import msgspec
import pytest
import redis

from backend.bus import codec, streams
from backend.messages import GateEvent
from gates import anchor, audit, chained, decisions, model, proof
from gates.model import Check, Gate
from tests.conftest import TRADEOPS
from tests.keys import Keys

GATES = {"task04": Gate(id="task04", title="t", approvals=1, checks=[Check(id="plan", title="p", kind="manual")])}


def history(r: redis.Redis, team: Keys) -> None:
    g = GATES["task04"]
    decisions.attest(r, g, "plan", team("ann"), "rehearsed")
    decisions.approve(r, g, team("bob"), "reviewed")
    decisions.decide(r, g, "proceed", team("bob"), "go")


def anchor_now(r: redis.Redis, team: Keys, where: list[Path]) -> anchor.Checkpoint:
    logs = proof.from_redis(r)
    return anchor.write(logs.chains(), proof.registry_of(logs), team("lee"), where)


def verify(r: redis.Redis, where: list[Path]) -> proof.Report:
    return proof.verify(proof.from_redis(r), GATES, where)


def test_the_three_rewrites_are_caught_by_the_anchor(r: redis.Redis, team: Keys, tmp_path: Path) -> None:
    where = [tmp_path / "anchor"]
    history(r, team)
    anchor_now(r, team, where)
    rep = verify(r, where)
    assert rep.ok, rep.lines
    entries = r.xrange(streams.OPS_GATES)
    ids = [eid.decode() for eid, _ in entries]

    # 1. the last entry deleted and gates:head set to the hash before it: the chain alone passes
    prev = codec.decode(codec.payload(entries[-2][1]), GateEvent).hash
    r.xdel(streams.OPS_GATES, entries[-1][0])
    r.set(audit.HEAD_KEY, prev)
    assert audit.verify(r).ok
    rep = verify(r, where)
    assert (
        not rep.ok
        and f"1 entries removed: the live log has 2, the anchor has 3; the first missing is entry 3 ({ids[2]})"
        in rep.problem
    )
    assert decisions.state(r, GATES["task04"]).decision is None  # and the proceed is gone with it
    with pytest.raises(anchor.AnchorError, match="not anchored"):  # a tampered log is never anchored
        anchor_now(r, team, where)

    # 2. the stream and the head deleted
    r.delete(streams.OPS_GATES, audit.HEAD_KEY)
    assert audit.verify(r).ok
    rep = verify(r, where)
    assert not rep.ok and "3 entries removed: the live log has 0" in rep.problem and ids[0] in rep.problem

    # 3. every entry re-encoded with another operator, the chain and the head recomputed
    prev_hash = ""
    for eid, f in entries:
        ev = codec.decode(codec.payload(f), GateEvent)
        ev = msgspec.structs.replace(ev, operator="mallory", prev_hash=prev_hash)
        ev = msgspec.structs.replace(ev, hash=chained.digest(ev))
        r.xadd(streams.OPS_GATES, codec.fields(ev), id=eid)
        prev_hash = ev.hash
    r.set(audit.HEAD_KEY, prev_hash)
    assert audit.verify(r).ok  # the chain is consistent again
    rep = verify(r, where)
    assert not rep.ok
    assert any("entry 1 (" in p and "the signature does not verify" in p for p in rep.problems)
    assert any(f"entry 1 differs from the anchored gates log: anchored {ids[0]}" in p for p in rep.problems)


def test_unsigned_history_is_still_anchored(r: redis.Redis, team: Keys, tmp_path: Path) -> None:
    where = [tmp_path / "a", tmp_path / "b"]
    for i in range(3):
        audit.append(
            r, GateEvent(gate="task04", kind="check_run", operator=f"op{i}", ts_ns=0, check="plan", outcome="passed")
        )
    anchor_now(r, team, where)
    entries = r.xrange(streams.OPS_GATES)
    r.delete(streams.OPS_GATES)  # the log rebuilt with its first entry twice
    r.xadd(streams.OPS_GATES, entries[0][1], id="1-0")
    for eid, f in entries:
        r.xadd(streams.OPS_GATES, f, id=eid)
    rep = verify(r, where)
    assert not rep.ok and len([f for f in rep.findings if not f.ok]) == 2
    assert "entry 2 differs from the anchored gates log" in rep.problems[-1]
    assert "removed or replaced" in rep.problems[-1]


def test_anchor_in_a_git_repository(r: redis.Redis, team: Keys, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    history(r, team)
    anchor_now(r, team, [repo])
    anchor_now(r, team, [repo])
    log = subprocess.run(["git", "-C", str(repo), "log", "--oneline"], capture_output=True, text=True).stdout
    assert log.count("tradeops anchor") == 2
    assert verify(r, [repo]).ok


def test_export_verifies_without_redis_and_with_ssh_keygen(
    r: redis.Redis, team: Keys, tradeops_env, tmp_path: Path
) -> None:
    env = dict(tradeops_env, TRADEOPS_SIGNING_KEY=str(team.path("lee")))
    gates_file = tmp_path / "gates.toml"
    gates_file.write_text(
        '[[gate]]\nid = "task04"\ntitle = "t"\napprovals = 1\n'
        'checks = [{ id = "plan", title = "p", kind = "manual" }]\n'
    )
    env["TRADEOPS_GATES_FILE"] = str(gates_file)
    assert model.load(gates_file)["task04"].approvals == 1
    history(r, team)
    out = subprocess.run([*TRADEOPS, "audit", "anchor"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    f = tmp_path / "audit.jsonl"
    out = subprocess.run([*TRADEOPS, "audit", "export", str(f)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    # no Redis at all: an unreachable URL
    offline = dict(env, TRADEOPS_REDIS_URL="redis://127.0.0.1:1/0")
    out = subprocess.run([*TRADEOPS, "audit", "verify", "--from", str(f)], capture_output=True, text=True, env=offline)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("audit OK: 3 entries") and "3 valid, 0 invalid" in out.stdout
    # one approval, with plain ssh-keygen
    row = next(
        json.loads(ln)
        for ln in f.read_text().splitlines()[1:]
        if json.loads(ln).get("event", {}).get("kind") == "approve"
    )
    cmd = [
        "ssh-keygen",
        "-Y",
        "verify",
        "-f",
        f"{f}.allowed_signers",
        "-I",
        row["signer"],
        "-n",
        row["namespace"],
        "-s",
        row["signature"],
    ]
    with open(row["message"], "rb") as msg:
        ok = subprocess.run(cmd, stdin=msg, capture_output=True, text=True)
    assert ok.returncode == 0 and 'Good "gate@tradeops" signature for bob' in ok.stdout
    # an export edited afterwards fails, naming the entry
    lines = f.read_text().splitlines()
    lines = [ln.replace('"reviewed"', '"rubber stamp"') for ln in lines]
    f.write_text("\n".join(lines) + "\n")
    out = subprocess.run([*TRADEOPS, "audit", "verify", "--from", str(f)], capture_output=True, text=True, env=offline)
    assert out.returncode == 1 and "audit FAILED: entry 2" in out.stdout and "was changed" in out.stdout
    assert "Traceback" not in out.stderr
    assert os.path.isdir(f"{f}.d")
