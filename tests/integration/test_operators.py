"""The operator registry on a real Redis, with keys the tests generate: the first lead set once,
every change signed by a lead, a second lead to make a lead once there are two, one key under one
name, revocation judged at the signed time, and entries forged into Redis counting for nothing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis

from backend.bus import codec, streams
from backend.messages import OperatorEvent
from gates import chained, operators, signing
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
        operators.change(r, keys("mallory"), "init", "mallory", roles=["operator", "lead"],
                         keys=[keys("mallory").public])
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
    forged = OperatorEvent(kind="add", name="mallory", ts_ns=0, roles=["operator", "lead"],
                           keys=[keys("mallory").public.line])
    chained.append(r, streams.OPS_OPERATORS, operators.HEAD_KEY, forged)
    chained.append(r, streams.OPS_OPERATORS, operators.HEAD_KEY, forged,
                   seal=operators._seal(keys("mallory"), "lee"))
    reg = operators.load(r)
    assert "mallory" not in reg.operators
    assert [p for _, ev, p in reg.entries if ev.name == "mallory"] == [
        "a registry change must be signed by a lead: not signed",
        f"a registry change must be signed by a lead: key {keys('mallory').fingerprint} is not registered"]
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
    ok = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(f), "-I", "ann", "-n", signing.NS_GATE,
                         "-s", str(sig)], input=b"hello", capture_output=True, text=False)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(f), "-I", "bob", "-n", signing.NS_GATE,
                          "-s", str(sig)], input=b"hello", capture_output=True)
    assert bad.returncode != 0
