"""Memory bounded by design, on real Redis: the embedded server's maxmemory and policy, oversized
payloads refused at the producer (and dead-lettered, cut to fit, when they reach the bus around
it), the control-plane logs archived before they are trimmed (the audit chain intact across the
archive), and Redis memory shown and alerted on."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import msgspec
import pytest
import redis

from backend.bus import archive, codec, deadletter, streams
from backend.bus.embedded import EmbeddedRedis
from backend.bus.publish import PayloadTooLarge, publish_sync, queue, xadd, xadd_fields
from backend.messages import GateEvent, MigrationEvent, Order
from backend.migration.gate_status import latest_decisions
from backend.services.alerting import MEMORY_KEY, AlertingService, active
from backend.services.oms import OmsService
from gates import audit, decisions
from gates.feed import GateFeed
from gates.model import load
from tests.conftest import TRADEOPS, await_for
from tests.keys import Keys

FIVE_MB = 5 * 1024 * 1024


def order(**kw) -> Order:
    base = dict(client_order_id="o-1", account="acc-1", symbol="BTCUSDT", side="buy", type="market", quantity=1.0)
    return Order(**{**base, **kw})


async def run_until(svc, pred, timeout: float = 20) -> None:
    task = asyncio.create_task(svc.run())
    try:
        await await_for(pred, timeout)
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)


def test_the_embedded_server_has_a_maxmemory_and_never_evicts(r: redis.Redis) -> None:
    cfg = r.config_get("maxmemory*")
    assert int(cfg["maxmemory"]) == streams.memory_bytes(streams.DEFAULT_MAXMEMORY)
    assert cfg["maxmemory-policy"] == "noeviction"


def test_oversized_payloads_are_refused_at_the_producer(r: redis.Redis) -> None:
    big = order(account="x" * FIVE_MB)
    limit = streams.max_entry(streams.ORDERS_NEW)
    with pytest.raises(PayloadTooLarge) as err:
        publish_sync(r, streams.ORDERS_NEW, big)
    msg = str(err.value)
    assert msg.startswith(f"refused to publish to {streams.ORDERS_NEW}: the entry is ")
    assert f"over the stream's limit of {limit:,} bytes" in msg
    assert err.value.size > FIVE_MB and err.value.limit == limit
    for attempt in (
        lambda: xadd(streams.ORDERS_NEW, big),  # the raw command (fast connection, fenced commits)
        lambda: xadd_fields(streams.ORDERS_NEW, {b"d": b"x" * (limit + 1)}),
        lambda: queue(r.pipeline(), streams.ORDERS_NEW, big),
    ):
        with pytest.raises(PayloadTooLarge, match=streams.ORDERS_NEW):
            attempt()
    assert r.xlen(streams.ORDERS_NEW) == 0
    publish_sync(r, streams.ORDERS_NEW, order())  # a normal one goes
    # the same check guards every stream at its own limit: a 5 MB raw tick batch is refused too
    with pytest.raises(PayloadTooLarge, match=r"md\.ticks\.raw: the entry is .* limit of 4,194,304 bytes"):
        xadd_fields(streams.MD_TICKS_RAW, {b"d": b"\0" * FIVE_MB})


def test_a_dead_letter_of_an_oversized_entry_is_cut_to_fit(r: redis.Redis) -> None:
    fields = {b"d": b"x" * FIVE_MB}
    rec = deadletter.record(streams.ORDERS_NEW, fields, "too big", eid=b"1-0", group="oms", consumer="oms-1")
    deadletter.queue(r, streams.ORDERS_NEW, fields, "too big", eid=b"1-0")  # fits: not refused
    assert len(rec[b"d"]) < streams.max_entry(streams.dlq(streams.ORDERS_NEW))
    assert rec[b"dlq_truncated"].decode().startswith("d: 5,242,880 bytes, first ")
    assert rec[b"dlq_reason"] == b"too big" and rec[b"dlq_id"] == b"1-0"
    long_reason = deadletter.record(streams.ORDERS_NEW, {b"d": b"ok"}, "why " * 5000)
    assert long_reason[b"dlq_reason"].endswith(b"... (20,000 bytes)") and long_reason[b"d"] == b"ok"


def test_order_submit_refuses_a_5mb_account(redis_url: str, r: redis.Redis, tmp_path: Path, capsys) -> None:
    from console.cli import main

    args = ["--redis-url", redis_url, "--data-dir", str(tmp_path)]
    rc = main(["order", "submit", "buy", "1", "BTCUSDT", "--account", "x" * FIVE_MB, *args])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip() == (
        "tradeops: error: order refused: account is 5,242,880 characters long, at most 64 are allowed"
    )
    rc = main(["order", "submit", "buy", "1", "S" * 40, *args])
    assert rc == 1 and "symbol is 40 characters long, at most 32" in capsys.readouterr().err
    assert r.xlen(streams.ORDERS_NEW) == 0


async def test_the_oms_dead_letters_a_5mb_account_that_reached_the_bus(redis_url: str, r: redis.Redis) -> None:
    # around the producer's check
    r.xadd(streams.ORDERS_NEW, {b"d": codec.encode(order(client_order_id="fat", account="x" * FIVE_MB))})
    r.xadd(streams.ORDERS_NEW, {b"d": codec.encode(order(client_order_id="x" * 200))})
    dlq = streams.dlq(streams.ORDERS_NEW)
    svc = OmsService(redis_url=redis_url, instance="oms-mem")
    await run_until(svc, lambda: r.xlen(dlq) == 2)
    (_, fat), (_, long_id) = r.xrange(dlq)
    assert fat[b"dlq_reason"].decode() == (
        "undecodable order: Expected `str` of length <= 64 - at `$.account` (expected Order | CancelRequest)"
    )
    assert re.fullmatch(rb"d: 5,24\d,\d{3} bytes, first [\d,]+ kept", fat[b"dlq_truncated"])  # cut to fit
    assert sum(len(k) + len(v) for k, v in fat.items()) <= streams.max_entry(dlq)
    assert long_id[b"dlq_reason"].decode() == (
        "undecodable order: Expected `str` of length <= 128 - at `$.client_order_id` (expected Order | CancelRequest)"
    )
    assert r.xlen(streams.RISK_REQUESTS) == 0 and r.xlen(streams.ORDERS_EVENTS) == 0  # not routed, not filled
    assert svc.state == "stopped"


# -- archive, then trim ------------------------------------------------------------------------------


def gate_event(i: int, **kw) -> GateEvent:
    base = dict(
        gate="task04", kind="check_run", operator="ann", ts_ns=0, check="health", outcome="passed", reason=f"run {i}"
    )
    return GateEvent(**{**base, **kw})


def archived_lines(data_dir: Path, stream: str) -> list[bytes]:
    """The archive's lines, oldest first (a run across midnight UTC writes two days' files)."""
    return [
        ln for p in sorted(archive.stream_dir(data_dir, stream).glob("*.jsonl")) for ln in p.read_bytes().splitlines()
    ]


def archive_now(r_url: str, data_dir: Path, stream: str, **kw) -> archive.Archived:
    async def go() -> archive.Archived:
        ar = redis.asyncio.Redis.from_url(r_url)
        try:
            return await archive.archive(ar, stream, data_dir, **kw)
        finally:
            await ar.aclose()

    return asyncio.run(go())


def test_archive_then_trim_keeps_the_audit_chain(redis_url: str, r: redis.Redis, tmp_path: Path, team: Keys) -> None:
    seal = decisions._seal(team("ann"))  # signed: the gate fold counts only signed events
    for i in range(20):
        audit.append(r, gate_event(i), seal=seal)
    audit.append(
        r, gate_event(20, kind="decision", decision="stop", check=None, outcome=None, reason="hold"), seal=seal
    )
    for i in range(21, 25):
        audit.append(r, gate_event(i), seal=seal)
    orig = r.xrange(streams.OPS_GATES)
    ids = [eid for eid, _ in orig]
    feed = GateFeed(r, load())
    feed.poll()
    assert feed.verdict.ok and feed.verdict.checked == 25

    done = archive_now(redis_url, tmp_path, streams.OPS_GATES, keep_s=0)  # all but the newest
    assert (done.archived, done.trimmed, done.total, done.last_id) == (24, 24, 24, ids[23].decode())
    assert [eid for eid, _ in r.xrange(streams.OPS_GATES)] == ids[24:]  # the newest stays live
    v = audit.verify(r)
    assert v.ok and v.checked == 25 and v.archived == 24, v
    assert [eid.encode() for eid, _ in audit.events(r)] == ids
    assert latest_decisions(r)["task04"] == "stop"  # an archived decision still counts
    # the chain runs on across the archive: the first live entry follows the last archived one
    last_archived = audit.events(r)[23][1]
    assert audit.decode(r.xrange(streams.OPS_GATES)[0][1]).prev_hash == last_archived.hash
    # the archived entries are readable as JSON lines: id, the fields exactly, the message decoded
    raw = archived_lines(tmp_path, streams.OPS_GATES)
    lines = [json.loads(ln) for ln in raw]
    assert [ln["id"] for ln in lines] == [i.decode() for i in ids[:24]]
    assert lines[20]["msg"]["_t"] == "gate_event.v1" and lines[20]["msg"]["decision"] == "stop"
    first = msgspec.json.decode(raw[0], type=archive.Line)
    assert first.fields == {codec.FIELD_STR: orig[0][1][codec.FIELD]}  # the entry's bytes, exactly
    # the console's feed folds the log again, archive and all, and says the same
    feed.poll()
    assert feed.verdict.ok and feed.verdict.checked == 25 and feed.verdict.archived == 24
    st = feed.states()["task04"]
    assert st.decision == "stop" and st.decided_by == "ann" and st.checks["health"].outcome == "passed"
    assert st.rejected == [] and decisions.states(r, load())["task04"].decision == "stop"
    # appends go on; a second run archives only what is new
    audit.append(r, gate_event(25))
    again = archive_now(redis_url, tmp_path, streams.OPS_GATES, keep_s=0)
    assert (again.archived, again.total) == (1, 25) and r.xlen(streams.OPS_GATES) == 1
    assert audit.verify(r).ok and audit.verify(r).checked == 26
    # a missing archive is named (a changed one: test_a_changed_archived_entry_breaks_the_chain)
    moved = tmp_path / "elsewhere"
    (tmp_path / "archive").rename(moved)
    v = audit.verify(r)
    assert not v.ok and "were archived to" in v.problem and "restore it from a backup" in v.problem
    (moved).rename(tmp_path / "archive")
    assert audit.verify(r).ok


def test_a_changed_archived_entry_breaks_the_chain(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    for i in range(5):
        audit.append(r, gate_event(i))
    archive_now(redis_url, tmp_path, streams.OPS_GATES, keep_s=0)
    third = archived_lines(tmp_path, streams.OPS_GATES)[2]
    ln = msgspec.json.decode(third, type=archive.Line)
    ev = msgspec.structs.replace(audit.decode({b"d": ln.fields["d"]}), operator="mallory")
    changed = msgspec.json.encode({"id": ln.id, "fields": {"d": codec.encode(ev)}, "msg": None})
    for path in (tmp_path / "archive" / streams.OPS_GATES).glob("*.jsonl"):
        path.write_bytes(path.read_bytes().replace(third, changed))
    v = audit.verify(r)
    assert not v.ok and v.problem.startswith("entry 3 (") and "was changed" in v.problem


def test_an_archiver_that_stopped_before_trimming_loses_and_doubles_nothing(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    for i in range(6):
        audit.append(r, gate_event(i))
    d = archive.stream_dir(tmp_path, streams.OPS_GATES)
    d.mkdir(parents=True)
    entries = r.xrange(streams.OPS_GATES)
    archive._append(d, entries[:3])  # appended and fsynced, then the process died: not trimmed, no record
    with open(next(d.glob("*.jsonl")), "ab") as f:
        f.write(b'{"id": "torn')  # and a line torn mid-write
    assert len(archive.history(r, streams.OPS_GATES)) == 6
    done = archive_now(redis_url, tmp_path, streams.OPS_GATES, keep_s=0)
    assert (done.archived, done.trimmed, done.total) == (2, 5, 5)  # 3 were in the files already
    assert [e for e, _ in archive.history(r, streams.OPS_GATES)] == [e for e, _ in entries]
    assert audit.verify(r).ok and audit.verify(r).checked == 6


def test_only_what_is_old_or_over_the_budget_is_archived(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    for i in range(10):
        audit.append(r, gate_event(i))
    assert archive_now(redis_url, tmp_path, streams.OPS_GATES).archived == 0  # a week not over, within budget
    done = archive_now(redis_url, tmp_path, streams.OPS_GATES, keep=4)  # over a budget of 4 entries
    assert done.archived == 6 and r.xlen(streams.OPS_GATES) == 4
    assert audit.verify(r).ok and audit.verify(r).checked == 10


def test_the_migration_board_and_its_history_survive_archiving(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    from backend.migration.state import board

    for to in ("deploying", "validating", "migrated"):
        publish_sync(
            r,
            streams.OPS_MIGRATION,
            MigrationEvent(service="refdata", from_state=None, to_state=to, operator="ann", reason="t", ts_ns=1),
        )
    publish_sync(
        r,
        streams.OPS_MIGRATION,
        MigrationEvent(service="alerting", from_state=None, to_state="deploying", operator="ann", reason="t", ts_ns=2),
    )
    before = {k: (v.state, len(v.history)) for k, v in board(r).items()}
    assert archive_now(redis_url, tmp_path, streams.OPS_MIGRATION, keep_s=0).archived == 3
    assert r.xlen(streams.OPS_MIGRATION) == 1
    assert {k: (v.state, len(v.history)) for k, v in board(r).items()} == before
    assert before["refdata"] == ("migrated", 3)


def test_redis_archive_and_audit_verify_from_the_cli(r: redis.Redis, tradeops_env: dict[str, str]) -> None:
    for i in range(4):
        audit.append(r, gate_event(i))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(TRADEOPS + list(args), env=tradeops_env, capture_output=True, text=True, timeout=60)

    out = run("redis", "archive", "--keep", "0s")
    assert out.returncode == 0, out.stderr
    data = Path(tradeops_env["TRADEOPS_DATA_DIR"])
    assert out.stdout.splitlines() == [
        "models.events: nothing to archive",
        "ops.control: nothing to archive",
        "ops.migration: nothing to archive",
        f"ops.gates: 3 archived, 3 trimmed; 3 in {data / 'archive' / 'ops.gates'}",
        "ops.operators: nothing to archive",
    ]
    out = run("audit", "verify")  # the verdict first, then the signatures and anchors (unsigned: none)
    assert out.returncode == 0 and out.stdout.splitlines()[0] == "audit OK: 4 entries (3 archived), chain intact"
    assert "signatures: 0 valid, 0 invalid, 4 unsigned" in out.stdout
    out = run("redis", "archive", "--keep", "soon")
    assert out.returncode == 1 and "--keep 'soon' is not a positive duration" in out.stderr


async def test_the_scheduler_job_archives_the_control_plane_logs(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    from backend.scheduling.jobs import KINDS, Run, parse_params

    now_ms = int(r.time()[0]) * 1000
    for k, age_days in enumerate((9, 8, 6, 1)):  # two older than the week kept, two within it
        ev = MigrationEvent(
            service="refdata", from_state=None, to_state="deploying", operator="ann", reason=str(k), ts_ns=1
        )
        r.xadd(streams.OPS_MIGRATION, codec.fields(ev), id=f"{now_ms - age_days * 86_400_000}-0")
    audit.append(r, gate_event(0))  # new: stays
    ar = redis.asyncio.Redis.from_url(redis_url)
    try:
        run = Run(
            job="stream-archive",
            slot="s",
            day="2024-01-01",
            params=parse_params("a", "stream-archive", {}),
            r=ar,
            data_dir=tmp_path,
            requested_by="scheduler:a",
            stopping=lambda: False,
        )
        out = await KINDS["stream-archive"].run(run)
    finally:
        await ar.aclose()
    assert out == {
        "archived": 2,
        "trimmed": 2,
        "streams": "models.events 0, ops.control 0, ops.migration 2, ops.gates 0, ops.operators 0",
        "dir": str(tmp_path / "archive"),
    }
    assert [ev.reason for ev in board_history(r)] == ["0", "1", "2", "3"]
    assert r.xlen(streams.OPS_MIGRATION) == 2 and audit.verify(r).ok


def board_history(r: redis.Redis) -> list[MigrationEvent]:
    from backend.migration.state import board

    return board(r)["refdata"].history


# -- memory shown and alerted on --------------------------------------------------------------------


def test_health_shows_redis_memory_against_its_limit(r: redis.Redis, tradeops_env: dict[str, str]) -> None:
    out = subprocess.run([*TRADEOPS, "health"], env=tradeops_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("redis memory:")]
    assert " of maxmemory 1.0 GB (" in line and "%, policy noeviction)" in line


async def test_alert_at_80_percent_of_maxmemory_and_cleared_below(tmp_path: Path) -> None:
    from console.data.live import LiveSource

    with EmbeddedRedis(tmp_path) as server:  # the test's own server: its maxmemory is set small
        r = redis.Redis.from_url(server.url)
        try:
            base = int(r.info("memory")["used_memory"])
            r.set("filler", b"x" * (8 << 20))
            # the command's 8 MB argument is counted until Redis frees the client's query buffer
            used = await await_for(lambda: (u := int(r.info("memory")["used_memory"])) < base + (9 << 20) and u, 20)
            r.config_set("maxmemory", int(used / 0.85))
            svc = AlertingService(redis_url=server.url, instance="al-mem")
            task = asyncio.create_task(svc.run())
            try:
                await await_for(lambda: MEMORY_KEY in dict(active(r)), 20)
                alert = dict(active(r))[MEMORY_KEY]
                assert alert.severity == "warning" and alert.kind == "memory"
                assert alert.message.startswith("redis memory: used ") and " of maxmemory " in alert.message
                assert alert.message.endswith("%, policy noeviction): at 100% every write fails (noeviction)")
                # the console shows the same figures, and the alert
                from backend.settings import Settings

                snap = LiveSource(server.url, Settings(), "ann").poll()
                assert snap.redis_max == int(r.config_get("maxmemory")["maxmemory"])
                assert snap.redis_used > 0.8 * snap.redis_max
                assert any(a.startswith("redis memory: used ") for a in snap.alerts)
                r.delete("filler")
                await await_for(lambda: MEMORY_KEY not in dict(active(r)), 20)
            finally:
                svc.request_stop()
                await asyncio.wait_for(task, 10)
            ((_, f),) = [e for e in r.xrange(streams.OPS_ALERTS_RESOLVED)]
            resolved = codec.decode(codec.payload(f), type(alert))
            assert resolved.key == MEMORY_KEY and resolved.resolved.startswith("redis memory: used ")
        finally:
            r.close()
