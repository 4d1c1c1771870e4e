"""The Redis users generated from the services' declared access (backend/bus/access.py,
backend/bus/acl.py): one per service of the inventory, each selector its commands on its keys only,
and the invariants the attacks of issue 16 rest on (who may write what)."""

from __future__ import annotations

import pytest

from backend.bus import acl, streams
from backend.bus.access import Access, Keys, Reads, Writes
from backend.migration import inventory
from backend.services.base import Service, UndeclaredAccess


def _writers(stream: str) -> set[str]:
    return {u for u, a in acl.accesses().items() if a is not None and a.may_write(stream)}


def test_one_user_per_inventory_service_plus_operator_and_admin() -> None:
    users = acl.accesses()
    assert list(users)[:2] == ["admin", "operator"]
    assert set(users) - {"admin", "operator"} == {s.name for s in inventory.load().services}
    assert users["admin"] is None  # every command, every key


def test_the_control_plane_and_the_fills_have_one_writer() -> None:
    assert _writers(streams.OPS_CONTROL) == {"operator"}  # a forged kill switch toggle: NOPERM
    assert _writers(streams.EXEC_REPORTS) == {"live-gateway"}  # a forged fill: NOPERM
    assert _writers(streams.OPS_GATES) == {"operator"}
    assert _writers(streams.OPS_MIGRATION) == {"operator"}
    assert _writers(streams.ORDERS_NEW) == {"operator", "marketplace"}
    kill = {
        u
        for u, a in acl.accesses().items()
        if a is not None and any(k.write and k.pattern == "risk:kill_switch" for k in a.keys)
    }
    assert kill == {"operator"}


def test_a_consumer_may_not_append_to_what_it_consumes() -> None:
    for user, a in acl.accesses().items():
        if a is None:
            continue
        for sel in a.selectors():
            if sel.what == "consumes":
                assert "xadd" not in sel.commands and all(k.startswith("~") for k in sel.keys), user
        for s in a.consumed():
            assert not a.may_write(s) or user == "operator", f"{user} may write {s}, which it consumes"


def test_selectors_keep_commands_to_their_keys() -> None:
    oms = acl.accesses()["oms"]
    assert oms is not None
    by = {s.what: s for s in oms.selectors()}
    # each stream and its partitions (the order path may be split by account)
    path = ("orders.new", "risk.decisions", "exec.reports")
    assert by["consumes"].keys == tuple(k for s in path for k in (f"~{s}", f"~{s}:{{p*}}"))
    assert set(by["dead letters"].keys) >= {f"~dlq.{s}" for s in path}
    assert by["dead letters"].commands == ("xadd", "xlen")
    assert by["reads"].keys == ("%R~ops.control",) and "xadd" not in by["reads"].commands
    out = ("risk.requests", "exec.orders", "orders.events")
    assert set(by["writes"].keys) == {"%W~ops.health"} | {k for s in out for k in (f"%W~{s}", f"%W~{s}:{{p*}}")}
    assert by["writes"].commands == ("xadd",)
    assert set(by["runs scripts on"].keys) >= {"~oms:order:*", "~oms:open*"}  # and its partitions' leases
    rules = " ".join(oms.rules())
    assert rules.startswith("resetkeys resetchannels -@all +@connection -@dangerous")
    assert "+script|load" in rules and "~*" not in rules and "+@all" not in rules


def test_the_operator_reads_everything_and_writes_the_control_plane() -> None:
    op = acl.OPERATOR_ACCESS
    rules = op.rules()
    assert "%R~*" in rules and "+@read" in rules and rules.index("+@read") < rules.index("-@dangerous")
    for s in (streams.OPS_GATES, streams.OPS_MIGRATION, streams.OPS_CONTROL, streams.ORDERS_NEW):
        assert op.may_write(s)
    for s in (streams.EXEC_REPORTS, streams.MD_TICKS, streams.RISK_DECISIONS, streams.POSITIONS, streams.OPS_HEALTH):
        assert not op.may_write(s)


def test_describe_prints_a_rule_line_per_user_and_the_default_off() -> None:
    text = acl.describe()
    lines = [ln for ln in text.splitlines() if ln.startswith("user ")]
    assert len(lines) == len(acl.accesses()) + 1
    assert lines[-1] == "user default off resetkeys resetchannels -@all"
    assert "# risk: P3, lanes lowlatency: consumes risk.requests" in text


def test_acl_file_lines_hold_hashes_not_passwords() -> None:
    line = acl.user_line("risk", acl.accesses()["risk"], "s3cret-value")
    assert "s3cret-value" not in line and f"#{acl.password_hash('s3cret-value')}" in line


def test_parse_line_reads_root_and_selectors() -> None:
    line = "user x on #ab ~a %RW~b resetchannels -@all +get (%R~c resetchannels -@all +xread)"
    name, root, sels = acl._parse_line(line)
    assert name == "x" and root == ["on", "#ab", "~a", "~b", "-@all", "+get"]
    assert sels == [frozenset({"%R~c", "-@all", "+xread"})]


class _Sneaky(Service):
    name = "sneaky"
    reads = (Reads(streams.MD_TICKS, group=True),)


def test_a_registered_read_must_be_declared() -> None:
    svc = _Sneaky(redis_url="redis://127.0.0.1:1/0")

    async def noop(_: list) -> None:
        return None

    svc.consume(streams.MD_TICKS, noop)  # declared
    with pytest.raises(UndeclaredAccess, match=r"sneaky consumes exec.reports but does not declare it"):
        svc.consume(streams.EXEC_REPORTS, noop)
    with pytest.raises(UndeclaredAccess, match=r"reads md.ticks whole but does not declare it"):
        svc.broadcast({streams.MD_TICKS: "$"})  # consumed in its group is not read whole


def test_access_adds_up() -> None:
    a = Access(reads=(Reads("a"),), keys=(Keys("k"),)) + Access(reads=(Reads("a"), Reads("b")), read_all=True)
    assert a.reads == (Reads("a"), Reads("b")) and a.keys == (Keys("k"),) and a.read_all
    assert Access(writes=(Writes("md.ticks.replay.*"),)).may_write("md.ticks.replay.x")


def test_acl_log_entries_become_denials_naming_user_command_and_key() -> None:
    log = [  # newest first, as ACL LOG answers; the second as a server before 7.2 (no entry id)
        {
            "count": 3,
            "reason": "key",
            "context": "toplevel",
            "object": "ops.control",
            "username": "ptrc",
            "client-info": {"addr": "127.0.0.1:5000", "cmd": "xadd"},
            "entry-id": 7,
            "timestamp-created": 99,
        },
        {
            b"count": 1,
            b"reason": b"command",
            b"context": b"lua",
            b"object": b"set",
            b"username": b"serving",
            b"client-info": b"id=4 addr=127.0.0.1:6000 cmd=evalsha user=serving",
        },
        {
            "count": 1,
            "reason": "auth",
            "context": "toplevel",
            "object": "AUTH",
            "username": "risk",
            "client-info": {"addr": "10.0.0.9:1", "cmd": "hello"},
            "entry-id": 5,
            "timestamp-created": 90,
        },
    ]
    auth, script, key = acl.denials(log)
    assert (key.user, key.command, key.key, key.count, key.entry) == ("ptrc", "xadd", "ops.control", 3, "7:99")
    assert key.alert_key == "acl:ptrc:xadd:ops.control"
    assert key.message().startswith(
        "Redis refused XADD on the key ops.control to the user ptrc (3 times from 127.0.0.1:5000): NOPERM"
    )
    assert (script.command, script.key, script.entry) == ("set", "", "serving|command|set|lua")
    assert "the command SET to the user serving inside a script" in script.message()
    assert auth.alert_key == "acl:risk:auth:-" and auth.message().startswith("failed Redis login as the user risk")
