"""Every signed operator log is under the anchor (real Redis, keys the tests make): migration moves
(ops.migration) and kill switch toggles (ops.control) are in each signed checkpoint (entry count,
running head hash), so truncating or rewriting either is reported by `audit verify`, naming the
first entry that differs; ops.control is archived before it is trimmed, like the other
control-plane logs, and the archive keeps it whole for the anchor."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import msgspec
import redis

from backend.bus import archive, codec, streams
from backend.messages import ControlCommand, MigrationEvent
from backend.migration.state import move
from backend.trading.killswitch import set_kill_switch
from gates import anchor, proof, sealed
from gates.model import Check, Gate
from tests.conftest import TRADEOPS
from tests.keys import Keys

GATES = {"task04": Gate(id="task04", title="t", approvals=1, checks=[Check(id="plan", title="p", kind="manual")])}


def moves_and_toggles(r: redis.Redis, team: Keys) -> None:
    for action in ("start", "validate", "cutover"):
        move(r, "normalizer", action, "ann", "go", seal=sealed.seal_move(team("ann")), decisions={"phase1": "proceed"})
    for on in (True, False, True):
        set_kill_switch(r, on, "bob", "drill", seal=sealed.seal_control(team("bob")))


def anchor_now(r: redis.Redis, team: Keys, where: list[Path]) -> anchor.Checkpoint:
    logs = proof.from_redis(r)
    return anchor.write(logs.chains(), proof.registry_of(logs), team("lee"), where)


def verify(r: redis.Redis, where: list[Path]) -> proof.Report:
    return proof.verify(proof.from_redis(r), GATES, where)


def ids(r: redis.Redis, stream: str) -> list[str]:
    return [eid.decode() for eid, _ in r.xrange(stream)]


def test_checkpoints_cover_moves_and_toggles(r: redis.Redis, team: Keys, tmp_path: Path) -> None:
    where = [tmp_path / "anchor"]
    moves_and_toggles(r, team)
    cp = anchor_now(r, team, where)
    assert cp.counts[streams.OPS_MIGRATION] == 3 and cp.counts[streams.OPS_CONTROL] == 3
    assert cp.heads[streams.OPS_CONTROL] == proof.from_redis(r).chains()[streams.OPS_CONTROL][-1][1]
    assert (where[0] / "migration.hashes").read_text().count("\n") == 3
    assert (where[0] / "control.hashes").read_text().count("\n") == 3
    rep = verify(r, where)
    assert rep.ok, rep.lines
    assert any("migration 3, control 3 entries" in ln for ln in rep.lines), rep.lines
    # a new toggle extends the anchored log
    set_kill_switch(r, False, "bob", "drill over", seal=sealed.seal_control(team("bob")))
    assert verify(r, where).ok


def test_a_truncated_control_log_is_named(r: redis.Redis, team: Keys, tmp_path: Path) -> None:
    where = [tmp_path / "anchor"]
    moves_and_toggles(r, team)
    anchor_now(r, team, where)
    control_entries = r.xrange(streams.OPS_CONTROL)
    toggles = ids(r, streams.OPS_CONTROL)
    r.xtrim(streams.OPS_CONTROL, maxlen=1, approximate=False)  # the two oldest toggles gone, the key untouched
    rep = verify(r, where)
    assert not rep.ok
    assert (
        f"ops.control: 2 entries removed before entry 3 ({toggles[2]}); the first missing is entry 1 "
        f"({toggles[0]})" in rep.problem
    ), rep.problems
    assert [f.entry for f in rep.findings if not f.ok] == [toggles[0]]
    # the newest toggle deleted (the tail cut)
    r.delete(streams.OPS_CONTROL)
    for eid, f in control_entries[:2]:
        r.xadd(streams.OPS_CONTROL, f, id=eid)
    rep = verify(r, where)
    assert (
        f"ops.control: 1 entries removed: the live log has 2, the anchor has 3; the first missing is entry 3 "
        f"({toggles[2]})" in rep.problem
    ), rep.problems


def test_a_rewritten_or_cut_migration_log_is_named(r: redis.Redis, team: Keys, tmp_path: Path) -> None:
    where = [tmp_path / "anchor"]
    moves_and_toggles(r, team)
    anchor_now(r, team, where)
    entries = r.xrange(streams.OPS_MIGRATION)
    moved = [eid.decode() for eid, _ in entries]
    # the second move rewritten in place (same id), its signature stripped: the chain of moves is not
    # hash-linked, so only the anchor can tell
    ev = codec.decode(codec.payload(entries[1][1]), MigrationEvent)
    r.delete(streams.OPS_MIGRATION)
    for i, (eid, f) in enumerate(entries):
        fields = codec.fields(msgspec.structs.replace(ev, operator="mallory", sig="", signer="")) if i == 1 else f
        r.xadd(streams.OPS_MIGRATION, fields, id=eid)
    rep = verify(r, where)
    assert not rep.ok
    assert (
        f"ops.migration: entry 2 differs from the anchored migration log: anchored {moved[1]}" in rep.problem
        and "(rewritten after it was anchored)" in rep.problem
    ), rep.problems
    # the last move deleted
    r.delete(streams.OPS_MIGRATION)
    for eid, f in entries[:2]:
        r.xadd(streams.OPS_MIGRATION, f, id=eid)
    rep = verify(r, where)
    assert not rep.ok and "ops.migration: 1 entries removed: the live log has 2, the anchor has 3; the first " in (
        rep.problem
    )
    assert moved[2] in rep.problem
    # a tampered log is never anchored
    try:
        anchor_now(r, team, where)
    except anchor.AnchorError as exc:
        assert "ops.migration: 1 entries removed" in str(exc)
    else:
        raise AssertionError("a cut migration log was anchored")


def test_control_is_archived_before_it_is_trimmed_and_stays_anchored(
    r: redis.Redis, redis_url: str, team: Keys, tmp_path: Path
) -> None:
    assert streams.OPS_CONTROL in streams.archived() and streams.maxlen(streams.OPS_CONTROL) is None
    where = [tmp_path / "anchor"]
    moves_and_toggles(r, team)
    r.xadd(streams.OPS_CONTROL, codec.fields(ControlCommand(target="oms", command="drain", operator="x", ts_ns=1)))
    anchor_now(r, team, where)
    before = proof.from_redis(r).chains()[streams.OPS_CONTROL]

    async def run() -> archive.Archived:
        import redis.asyncio as aioredis

        ar = aioredis.Redis.from_url(redis_url)
        try:
            return await archive.archive(r=ar, stream=streams.OPS_CONTROL, data_dir=tmp_path / "data", keep=1)
        finally:
            await ar.aclose()

    done = asyncio.run(run())
    assert (done.archived, done.trimmed) == (3, 3) and r.xlen(streams.OPS_CONTROL) == 1
    assert proof.from_redis(r).chains()[streams.OPS_CONTROL] == before  # archive, then live: the same log
    assert verify(r, where).ok
    counts, bad = sealed.tally(r)
    assert counts == {"valid": 6, "invalid": 0, "unsigned": 0} and not bad


def test_cli_toggles_are_anchored_and_verify_catches_a_truncated_control_log(
    r: redis.Redis, team: Keys, tradeops_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(tradeops_env, TRADEOPS_SIGNING_KEY=str(team.path("bob")))
    for state in ("on", "off", "on"):
        out = subprocess.run(
            [*TRADEOPS, "risk", "kill", state, "--reason", "drill"], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr
        assert "ALERT" not in out.stderr
    out = subprocess.run([*TRADEOPS, "audit", "verify"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout
    assert "control 3 entries" in out.stdout
    toggles = ids(r, streams.OPS_CONTROL)
    r.xtrim(streams.OPS_CONTROL, maxlen=1, approximate=False)
    out = subprocess.run([*TRADEOPS, "audit", "verify"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stdout.startswith(
        f"audit FAILED: anchor: {tmp_path}/data/anchor: ops.control: 2 entries removed before entry 3 "
        f"({toggles[2]}); the first missing is entry 1 ({toggles[0]})"
    ), out.stdout
    # an export carries the moves and toggles, and verifies them without Redis
    f = tmp_path / "audit.jsonl"
    r.delete(streams.OPS_CONTROL)
    out = subprocess.run([*TRADEOPS, "audit", "export", str(f)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    offline = dict(env, TRADEOPS_REDIS_URL="redis://127.0.0.1:1/0")
    out = subprocess.run([*TRADEOPS, "audit", "verify", "--from", str(f)], capture_output=True, text=True, env=offline)
    assert out.returncode == 1 and "ops.control: 3 entries removed: the live log has 0" in out.stdout, out.stdout
