"""The console's audit rows mark each entry signed-valid (who signed) / invalid (why) / unsigned,
never blank, and say which rows are entries of the hash chain (real Redis, keys the tests make)."""

from __future__ import annotations

import msgspec
import redis

from backend.bus import codec, streams
from backend.messages import GateEvent
from backend.migration.state import move
from backend.settings import Settings
from backend.trading.killswitch import set_kill_switch
from console.data.live import LiveSource
from console.data.replay import ReplaySource
from gates import audit, decisions, model, sealed
from tests.keys import Keys


def test_each_row_is_marked_and_chain_entries_are_numbered(r: redis.Redis, redis_url: str, team: Keys) -> None:
    gates = model.load()
    decisions.attest(r, gates["phase1"], "secrets", team("ann"), "vault in place")  # chain entry 1: valid
    audit.append(r, GateEvent(gate="task02", kind="approve", operator="mallory", ts_ns=0, reason="me too"))  # 2
    ev = move(
        r, "normalizer", "start", "ann", "go", seal=sealed.seal_move(team("ann")), decisions={"phase1": "proceed"}
    )
    # the signed move edited afterwards (invalid), and a kill switch toggle with no signature (unsigned)
    r.xadd(streams.OPS_MIGRATION, codec.fields(msgspec.structs.replace(ev, reason="edited", ts_ns=ev.ts_ns + 1)))
    set_kill_switch(r, True, "bob", "runaway")
    src = LiveSource(redis_url, Settings(), "alice", slow_every=1)
    try:
        snap = src.poll()
    finally:
        src.close()
    rows = {(row[2], row[5]): row for row in snap.audit}
    assert all(len(row) == 8 and row[6] for row in snap.audit)  # every row marked, never blank
    assert rows[("attest", "vault in place")][6:] == ("✓ ann", "#1")
    assert rows[("approve", "me too")][6:] == ("unsigned", "#2")
    assert rows[("migration", "go")][6:] == ("✓ ann", "—")
    signed, chain = rows[("migration", "edited")][6:]
    assert signed.startswith("✗ ") and "does not verify" in signed and chain == "—"
    assert rows[("kill switch", "runaway")][6:] == ("unsigned", "—")


def test_replayed_entries_without_a_signature_are_unsigned() -> None:
    snap = ReplaySource().current()
    assert snap.audit and all(row[6] == "unsigned" for row in snap.audit)
    assert [row[7] for row in snap.audit] == [f"#{i}" for i in range(1, len(snap.audit) + 1)]


def test_a_cut_control_log_is_an_anchor_alert(r: redis.Redis, redis_url: str, team: Keys, tmp_path) -> None:
    from gates import anchor, proof

    for on in (True, False):
        set_kill_switch(r, on, "bob", "drill", seal=sealed.seal_control(team("bob")))
    settings = Settings(data_dir=str(tmp_path / "data"))
    logs = proof.from_redis(r)
    anchor.write(logs.chains(), proof.registry_of(logs), team("lee"), anchor.places(settings.resolved_data_dir()))
    src = LiveSource(redis_url, settings, "alice", slow_every=1)
    try:
        snap = src.poll()
        assert not any(a.startswith("audit anchor") for a in snap.alerts)
        first = r.xrange(streams.OPS_CONTROL)[0][0].decode()
        r.xtrim(streams.OPS_CONTROL, maxlen=1, approximate=False)
        snap = src.poll()
        assert any(
            a.startswith("audit anchor: ") and "ops.control: 1 entries removed before entry 2" in a and first in a
            for a in snap.alerts
        ), snap.alerts
        assert "ANCHOR FAILED" in snap.audit_verdict
    finally:
        src.close()
