"""The console's live data source on real Redis: what the audit screen lists, the gates read
incrementally, the gates file of the settings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import redis

from backend.bus import codec, streams
from backend.messages import GateEvent
from backend.settings import Settings, load_settings
from backend.trading.killswitch import set_kill_switch
from console.data.live import LiveSource
from gates import audit, decisions, model
from gates.bench import write_history
from tests.conftest import TRADEOPS
from tests.keys import Keys


def test_kill_switch_toggles_are_in_the_audit_log(r: redis.Redis, redis_url: str) -> None:
    set_kill_switch(r, True, "alice", "runaway algo")
    set_kill_switch(r, False, "bob", "fixed")
    src = LiveSource(redis_url, Settings(), "alice")
    try:
        snap = src.poll()
    finally:
        src.close()
    rows = [row for row in snap.audit if row[2] == "kill switch"]
    assert [(row[3], row[4], row[5]) for row in rows] == [("ON", "alice", "runaway algo"), ("off", "bob", "fixed")]
    assert snap.kill_switch is False


def _source(redis_url: str, settings: Settings | None = None) -> LiveSource:
    return LiveSource(redis_url, settings or Settings(), "alice", slow_every=1)  # gates read every poll


def test_a_poll_reads_only_the_gate_entries_after_the_last_it_saw(r: redis.Redis, redis_url: str, team: Keys) -> None:
    gates = model.load()
    write_history(r, gates, 300)
    src = _source(redis_url)
    try:
        snap = src.poll()
        assert src.gate_feed.read_last == 300 and snap.audit_verdict == "chain OK (300 entries)"
        decisions.attest(r, gates["phase1"], "secrets", team("ann"), "vault in place")
        decisions.approve(r, gates["task02"], team("bob"), "reviewed")
        decisions.decide(r, gates["task03"], "stop", team("bob"), "latency regression")
        snap = src.poll()
        assert src.gate_feed.read_last == 3  # the new entries, not the log's 303
        assert snap.audit_verdict == "chain OK (303 entries)"
        snap = src.poll()
        assert src.gate_feed.read_last == 0 and src.gate_feed.read_total == 303
        # the folded state is the one the CLI folds from the whole log
        cli = decisions.states(r, gates)
        assert [(row.id, row.status, row.approvals, row.needs, [c[3] for c in row.checks]) for row in snap.gates] == [
            (
                g,
                st.status,
                f"{len(st.counted)}/{st.gate.approvals}",
                [] if st.decision else st.approvals_needed(),
                [c.outcome for c in st.checks.values()],
            )
            for g, st in cli.items()
        ]
        assert [row for row in snap.audit if row[1] == "task03"][-1][2:] == (
            "decision",
            "stop",
            "bob",
            "latency regression",
            "✓ bob",
            "#303",  # the entry's number in the hash chain
        )
    finally:
        src.close()


def test_a_broken_chain_shows_in_the_console(r: redis.Redis, redis_url: str) -> None:
    gates = model.load()
    write_history(r, gates, 20)
    src = _source(redis_url)
    try:
        assert src.poll().audit_verdict == "chain OK (20 entries)"
        # an entry added around the chain (not after the newest): caught when it is first read
        r.xadd(streams.OPS_GATES, codec.fields(GateEvent(gate="phase1", kind="approve", operator="x", ts_ns=1)))
        snap = src.poll()
        assert snap.audit_verdict.startswith("chain BROKEN: entry 21 (")
        assert "removed or reordered" in snap.audit_verdict
        assert src.gate_feed.read_last == 1
        assert snap.audit_verdict == f"chain BROKEN: {audit.verify(r).problem}"
    finally:
        src.close()
    r.delete(streams.OPS_GATES, audit.HEAD_KEY)
    write_history(r, gates, 20)
    src = _source(redis_url)
    try:
        assert src.poll().audit_verdict == "chain OK (20 entries)"
        # an entry already verified removed: the log is no longer the one verified, so it is read again
        r.xdel(streams.OPS_GATES, r.xrange(streams.OPS_GATES)[5][0])
        snap = src.poll()
        assert src.gate_feed.refolds == 1 and src.gate_feed.read_last == 19
        assert snap.audit_verdict.startswith("chain BROKEN: entry 6 (") and "removed or reordered" in snap.audit_verdict
        src.poll()
        assert src.gate_feed.refolds == 1 and src.gate_feed.read_last == 0
        # the newest entry removed, the head still recorded
        r.delete(streams.OPS_GATES)
        r.set(audit.HEAD_KEY, "f" * 64)
        assert "newest entries were removed" in src.poll().audit_verdict
    finally:
        src.close()


def test_the_console_and_the_cli_load_the_gates_file_of_the_settings(
    r: redis.Redis, redis_url: str, tradeops_env, tmp_path: Path, team: Keys
) -> None:
    tradeops_env = dict(tradeops_env, TRADEOPS_SIGNING_KEY=str(team.path("ann")))
    extra = '[[gate]]\nid = "{id}"\ntitle = "extra"\nchecks = [{{ id = "plan", title = "p", kind = "manual" }}]\n'
    (tmp_path / "gates.toml").write_text(extra.format(id="extra"))
    (tmp_path / "other.toml").write_text(extra.format(id="other"))
    cfg = tmp_path / "config.toml"
    cfg.write_text('gates_file = "gates.toml"\n')  # relative to the config file
    settings = load_settings(cfg)
    assert settings.gates_file == str(tmp_path / "gates.toml")
    src = _source(redis_url, settings)
    try:
        console_ids = [g.id for g in src.poll().gates]
        assert console_ids[-1] == "extra" and console_ids == list(model.configured(settings))

        def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*TRADEOPS, "--config", str(cfg), *args],
                capture_output=True,
                text=True,
                env=env or tradeops_env,
                timeout=60,
                cwd=tmp_path.parent,
            )

        out = cli("gate", "list", "--json")
        assert out.returncode == 0, out.stderr
        assert [g["id"] for g in json.loads(out.stdout)] == console_ids
        out = cli("gate", "attest", "extra", "plan", "--note", "rehearsed")
        assert out.returncode == 0, out.stderr
        # --gates-file overrides the setting, and so does TRADEOPS_GATES_FILE
        out = cli("gate", "--gates-file", str(tmp_path / "other.toml"), "list", "--json")
        assert [g["id"] for g in json.loads(out.stdout)][-1] == "other"
        out = cli("gate", "list", "--json", env=dict(tradeops_env, TRADEOPS_GATES_FILE=str(tmp_path / "other.toml")))
        assert [g["id"] for g in json.loads(out.stdout)][-1] == "other"
        out = cli("gate", "--gates-file", str(tmp_path / "missing.toml"), "list")
        assert out.returncode == 1 and "gates file" in out.stderr and "no such file" in out.stderr
        assert "Traceback" not in out.stderr
        snap = src.poll()
        assert [row.status for row in snap.gates if row.id == "extra"] == ["ready"]  # the CLI's attestation
        # the console keeps its gates when the file stops loading, and says so
        (tmp_path / "gates.toml").write_text("[[gate]\n")
        snap = src.poll()
        assert [g.id for g in snap.gates] == console_ids
        assert any(a.startswith("gate definitions not loaded: ") and "gates.toml" in a for a in snap.alerts)
        (tmp_path / "gates.toml").write_text(extra.format(id="extra") + extra.format(id="extra2"))
        snap = src.poll()
        assert [g.id for g in snap.gates][-2:] == ["extra", "extra2"] and not snap.alerts
    finally:
        src.close()


def test_the_console_shows_the_key_the_signatures_and_a_failed_anchor(
    r: redis.Redis, redis_url: str, team: Keys, tmp_path: Path
) -> None:
    from gates import anchor, proof

    gates = model.load()
    decisions.attest(r, gates["phase1"], "secrets", team("ann"), "vault in place")
    decisions.approve(r, gates["task02"], team("bob"), "reviewed")
    audit.append(r, GateEvent(gate="task02", kind="approve", operator="mallory", ts_ns=0, reason="me too"))
    settings = Settings(signing_key=str(team.path("bob")), data_dir=str(tmp_path / "data"), operator="typed")
    logs = proof.from_redis(r)
    anchor.write(logs.chains(), proof.registry_of(logs), team("lee"), anchor.places(settings.resolved_data_dir()))
    src = _source(redis_url, settings)
    try:
        snap = src.poll()
        assert (snap.operator, snap.key) == ("bob", team("bob").fingerprint)  # the registry's name, not the label
        marks = {row[2]: row[6] for row in snap.audit if row[1] in ("phase1", "task02")}
        assert marks == {"attest": "✓ ann", "approve": "unsigned"}  # the last approve is mallory's, unsigned
        row = next(g for g in snap.gates if g.id == "task02")
        assert row.approved_by == [f"bob ({team('bob').fingerprint})"] and row.evidence
        assert any("not counted: approve labelled mallory" in n for n in row.notes)
        assert not any(a.startswith("audit anchor") for a in snap.alerts)
        # the newest entry removed and the head set back: the chain passes, the anchor does not
        last, before = r.xrevrange(streams.OPS_GATES, count=2)
        r.xdel(streams.OPS_GATES, last[0])
        r.set(audit.HEAD_KEY, codec.decode(codec.payload(before[1]), GateEvent).hash)
        snap = src.poll()
        assert any(a.startswith("audit anchor: ") and "entries removed" in a for a in snap.alerts)
        assert "ANCHOR FAILED" in snap.audit_verdict
    finally:
        src.close()
