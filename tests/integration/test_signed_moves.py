"""Migration moves and kill switch toggles are signed too (real Redis, keys the tests make): a
forged proceed does not open a priority to the CLI, an unknown key is refused and recorded, and
`audit verify` tells valid, tampered and unsigned moves apart."""

from __future__ import annotations

import subprocess

import msgspec
import pytest
import redis

from backend.bus import codec, streams
from backend.messages import GateEvent, MigrationEvent
from backend.migration.state import MoveRefused, move
from backend.trading.killswitch import set_kill_switch
from gates import audit, decisions, model, sealed
from gates.decisions import Refused
from tests.conftest import TRADEOPS
from tests.keys import Keys


def test_moves_and_toggles_carry_the_operators_signature(r: redis.Redis, team: Keys) -> None:
    gates = model.load()
    # a proceed written straight into Redis: the raw log says proceed, the verified fold does not
    audit.append(
        r, GateEvent(gate="phase1", kind="decision", operator="lee", ts_ns=0, decision="proceed", reason="forged")
    )
    assert decisions.verified_decisions(r, gates) == {}
    with pytest.raises(MoveRefused, match=r"gate phase1 .* has no proceed decision"):
        move(
            r,
            "normalizer",
            "start",
            "ann",
            "go",
            seal=sealed.seal_move(team("ann")),
            decisions=decisions.verified_decisions(r, gates),
        )
    ev = move(r, "normalizer", "start", "ann", "go", seal=sealed.seal_move(team("ann")))  # raw decisions
    assert sealed.judge_move(sealed.operators.load(r), ev).ok
    cmd = set_kill_switch(r, True, "bob", "runaway", seal=sealed.seal_control(team("bob")))
    assert sealed.judge_control(sealed.operators.load(r), cmd).name == "bob"
    with pytest.raises(Refused, match=r"kill switch on refused: key .* is not registered"):
        sealed.actor(r, team("mallory"), "kill switch on", "bob")
    assert audit.events(r)[-1][1].kind == "refused"
    # a forged move and a signed move edited afterwards
    r.xadd(
        streams.OPS_MIGRATION,
        codec.fields(
            MigrationEvent(
                service="risk", from_state="planned", to_state="migrated", operator="lee", reason="x", ts_ns=1
            )
        ),
    )
    r.xadd(streams.OPS_MIGRATION, codec.fields(msgspec.structs.replace(ev, reason="edited")))
    counts, bad = sealed.tally(r)
    assert counts == {"valid": 2, "invalid": 1, "unsigned": 1}
    assert len(bad) == 1 and "start normalizer" in bad[0] and "does not verify" in bad[0]


def test_the_cli_signs_and_refuses_an_unknown_key(r: redis.Redis, team: Keys, tradeops_env) -> None:
    decisions.attest(r, model.load()["phase1"], "secrets", team("ann"), "vault")  # something to anchor
    env = dict(tradeops_env, TRADEOPS_SIGNING_KEY=str(team.path("mallory")), TRADEOPS_OPERATOR="lee")
    out = subprocess.run([*TRADEOPS, "risk", "kill", "on", "--reason", "x"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"tradeops: error: kill switch on refused: key {team('mallory').fingerprint} is not registered (a lead adds "
        f"it: `tradeops operators add NAME --pubkey FILE.pub`)"
    ]
    env["TRADEOPS_SIGNING_KEY"] = str(team.path("bob"))
    out = subprocess.run(
        [*TRADEOPS, "risk", "kill", "on", "--reason", "runaway"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0 and f"(bob, {team('bob').fingerprint}: runaway)" in out.stdout
    out = subprocess.run([*TRADEOPS, "audit", "verify"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout
    assert "kill switch toggles: 1 signed and valid, 0 invalid, 0 unsigned" in out.stdout
