"""The operator registry on a real Redis, with keys the tests generate: the first lead set once,
every change signed by a lead, a second lead to make a lead once there are two, one key under one
name, revocation judged at the signed time, and entries forged into Redis counting for nothing."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
import redis

from backend.bus import archive, codec, streams
from backend.bus.entries import Skips
from backend.messages import OperatorEvent
from gates import anchor, audit, chained, decisions, operators, proof, signing
from gates.feed import GateFeed
from gates.model import Check, Gate
from gates.operators import Refused
from tests.keys import Keys, enrol


def refused(r: redis.Redis) -> list[str]:
    return [ev.reason for _, ev in operators.events(r) if ev.kind == "refused"]


def test_init_once_and_changes_signed_by_a_lead(r: redis.Redis, keys: Keys) -> None:
    with pytest.raises(Refused, match="not initialised"):
        operators.change(r, keys("ann"), "add", "ann", roles=["operator"], keys=[keys("ann").public])
    enrol(r, keys)
    reg = operators.load(r)
    assert reg.root == keys("lee").fingerprint and reg.name_of(keys("ann").fingerprint) == "ann"
    assert reg.roles_at("lee", time.time_ns()) == ("operator", "lead")
    with pytest.raises(Refused, match="the first lead is set once"):
        operators.change(
            r, keys("mallory"), "init", "mallory", roles=["operator", "lead"], keys=[keys("mallory").public]
        )
    with pytest.raises(Refused, match="must be signed by a lead: ann has operator"):
        operators.change(r, keys("ann"), "add", "mallory", roles=["operator", "lead"], keys=[keys("mallory").public])
    with pytest.raises(Refused, match=r"must be signed by a lead: key .* is not registered"):
        operators.change(r, keys("mallory"), "roles", "mallory", roles=["operator", "lead"])
    with pytest.raises(Refused, match="already registered to ann: one key, one operator"):
        operators.change(r, keys("lee"), "add", "mallory2", roles=["operator"], keys=[keys("ann").public])
    assert len(refused(r)) == 5  # every refusal is recorded
    assert all(p == "" for _, ev, p in operators.load(r).entries if ev.kind != "refused")


def test_a_second_lead_confirms_a_new_lead(r: redis.Redis, keys: Keys) -> None:
    enrol(r, keys, leads=["liz"])  # two leads now
    ev, waits = operators.change(r, keys("lee"), "roles", "ann", roles=["operator", "lead"])
    assert waits and "ann" not in operators.load(r).leads_at(time.time_ns())
    with pytest.raises(Refused, match="lee proposed it and may not confirm it"):
        operators.change(r, keys("lee"), "confirm", "ann", confirms=ev.hash)
    operators.change(r, keys("liz"), "confirm", "ann", confirms=ev.hash)
    assert "ann" in operators.load(r).leads_at(time.time_ns())


def test_revocation_is_judged_at_the_signed_time(r: redis.Redis, keys: Keys) -> None:
    enrol(r, keys)
    before = time.time_ns()
    operators.change(r, keys("lee"), "revoke_key", "ann", key=keys("ann").fingerprint, reason="laptop lost")
    reg = operators.load(r)
    msg = b"x"
    sig = keys("ann").sign(msg, signing.NS_GATE)
    assert reg.judge(msg, sig, keys("ann").fingerprint, before, signing.NS_GATE).ok
    t = reg.judge(msg, sig, keys("ann").fingerprint, time.time_ns(), signing.NS_GATE)
    assert t.status == "invalid" and "was revoked at" in t.why
    t = reg.judge(msg, sig, keys("bob").fingerprint, before, signing.NS_GATE)
    assert t.status == "invalid" and "names key" in t.why
    assert reg.judge(msg, "", "", before, signing.NS_GATE).status == "unsigned"


def test_entries_forged_into_redis_count_for_nothing(r: redis.Redis, keys: Keys) -> None:
    enrol(r, keys)
    # mallory, with Redis access, adds herself as a lead: unsigned, then signed with her own key
    forged = OperatorEvent(
        kind="add", name="mallory", ts_ns=0, roles=["operator", "lead"], keys=[keys("mallory").public.line]
    )
    chained.append(r, streams.OPS_OPERATORS, operators.HEAD_KEY, forged)
    chained.append(r, streams.OPS_OPERATORS, operators.HEAD_KEY, forged, seal=operators._seal(keys("mallory"), "lee"))
    reg = operators.load(r)
    assert "mallory" not in reg.operators
    assert [p for _, ev, p in reg.entries if ev.name == "mallory"] == [
        "a registry change must be signed by a lead: not signed",
        f"a registry change must be signed by a lead: key {keys('mallory').fingerprint} is not registered",
    ]
    # and a re-initialisation after deleting the registry is another registry: the anchor catches it
    r.xadd(streams.OPS_OPERATORS, codec.fields(forged))
    assert "does not follow" in operators.load(r).chain_problem


def test_allowed_signers_checks_with_ssh_keygen(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    enrol(r, keys)
    reg = operators.load(r)
    f = tmp_path / "allowed_signers"
    f.write_text(reg.allowed_signers())
    sig = tmp_path / "sig"
    sig.write_text(keys("ann").sign(b"hello", signing.NS_GATE))
    ok = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(f), "-I", "ann", "-n", signing.NS_GATE, "-s", str(sig)],
        input=b"hello",
        capture_output=True,
        text=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(f), "-I", "bob", "-n", signing.NS_GATE, "-s", str(sig)],
        input=b"hello",
        capture_output=True,
    )
    assert bad.returncode != 0


def _archive(redis_url: str, data_dir: Path, stream: str) -> archive.Archived:
    async def go() -> archive.Archived:
        ar = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await archive.archive(ar, stream, data_dir, keep_s=0)  # all but the newest
        finally:
            await ar.aclose()

    return asyncio.run(go())


def test_the_registry_is_read_archive_then_live(redis_url: str, r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    enrol(r, keys, leads=["liz"])
    g = Gate(id="task04", title="t", approvals=1, checks=[Check(id="plan", title="p", kind="manual")])
    decisions.attest(r, g, "plan", keys("ann"), "rehearsed")
    decisions.attest(r, g, "plan", keys("ann"), "rehearsed again")
    before = operators.load(r)
    n = len(before.entries)
    done = _archive(redis_url, tmp_path, streams.OPS_OPERATORS)
    assert done.archived == n - 1 and r.xlen(streams.OPS_OPERATORS) == 1
    _archive(redis_url, tmp_path, streams.OPS_GATES)
    reg = operators.load(r)
    assert (reg.root, sorted(reg.operators), reg.read, reg.chain_problem) == (
        before.root,
        sorted(before.operators),
        n,
        "",
    )
    # a change after the archive chains onto the live newest; signed actions still count
    operators.change(r, keys("lee"), "add", "cat", roles=["operator"], keys=[keys("cat").public])
    decisions.approve(r, g, keys("bob"), "reviewed")
    assert decisions.state(r, g).approvers == ["bob"]
    logs = proof.from_redis(r)
    assert logs.archived == {
        streams.OPS_GATES: 1,
        streams.OPS_OPERATORS: n - 1,
        streams.OPS_MIGRATION: 0,
        streams.OPS_CONTROL: 0,
    }
    rep = proof.verify(logs, {g.id: g}, anchor.places(tmp_path))
    assert rep.ok, rep.lines
    assert rep.lines[0] == f"audit OK: {len(logs.gates)} entries (1 archived), chain intact"
    assert "cat" in rep.registry.operators and len(logs.operators) == n + 1
    # the console's feed folds the registry again when the archiver moves it
    feed = GateFeed(r, {g.id: g})
    feed.poll()
    assert feed.verdict.ok and "cat" in feed.registry.operators
    _archive(redis_url, tmp_path, streams.OPS_OPERATORS)
    feed.poll()
    assert feed.registry.read == n + 1 and feed.refolds == 1
    # a missing archive is named, never a shorter registry
    (tmp_path / "archive").rename(tmp_path / "elsewhere")
    with pytest.raises(archive.ArchiveUnreadable, match="restore it from a backup"):
        operators.load(r)


def test_an_undecodable_entry_breaks_a_chain_and_appends_go_on(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    enrol(r, keys)
    g = Gate(id="task04", title="t", approvals=1, checks=[Check(id="plan", title="p", kind="manual")])
    attested = decisions.attest(r, g, "plan", keys("ann"), "rehearsed")
    r.xadd(streams.OPS_GATES, {codec.FIELD: b"\xc1 not a gate event"})
    r.xadd(streams.OPS_OPERATORS, {b"x": b"no payload"})
    # appending chains onto the recorded heads, signed as ever
    ev = decisions.approve(r, g, keys("bob"), "reviewed")
    assert ev.prev_hash == attested.hash and r.get(audit.HEAD_KEY) == ev.hash.encode()
    # the registry fails closed after a break: a change is appended (no crash) but counts for nothing
    with pytest.raises(Refused, match="add cat refused: after a break in the registry's chain"):
        operators.change(r, keys("lee"), "add", "cat", roles=["operator"], keys=[keys("cat").public])
    skips = Skips()
    reg = operators.load(r, skips)
    assert "cat" not in reg.operators and "is not an operator event: no 'd' field" in reg.chain_problem
    assert [ev.name for _, ev in operators.events(r)][-1] == "cat"
    assert reg.name_of(keys("bob").fingerprint) == "bob"  # the keys registered before the break still sign
    assert decisions.states(r, {g.id: g}, skips)[g.id].approvers == ["bob"]
    assert skips.by_stream == {streams.OPS_OPERATORS: 2, streams.OPS_GATES: 1}
    logs = proof.from_redis(r)
    rep = proof.verify(logs, {g.id: g}, anchor.places(tmp_path))
    assert not rep.ok and "is not a gate event" in rep.problem
    assert any("ops.operators: registry entry" in p and "is not an operator event" in p for p in rep.problems)
