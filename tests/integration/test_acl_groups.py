"""NOPERM for a service reading another's consumer group (issue 16), on a real server with the
generated users applied.

Redis ACLs check keys, not groups (redis/redis#13381): what keeps one service out of another's
group is that each stream consumed in groups has one consuming service, so another's group is
always on a stream the service has no key rights on. exec.reports, which the OMS and ptrc both
need whole, is consumed by the OMS; ptrc consumes its copy, exec.reports.ptrc, which live-gateway's
publish writes with every report in the same MULTI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backend.bus import acl, codec, connection, streams
from backend.bus.embedded import EmbeddedRedis
from backend.bus.publish import queue
from backend.messages import ExecReport

NOPERM = redis.exceptions.NoPermissionError


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An embedded server started with the generated users (as `tradeops redis up` starts it)."""
    data = tmp_path_factory.mktemp("acl-groups")
    server = EmbeddedRedis(data, acl=True)
    url = server.start()
    yield url, data
    server.stop()


@pytest.fixture
def users(acl_server: tuple[str, Path]) -> Iterator[dict[str, redis.Redis]]:
    """A client per generated user, on a flushed server with an empty ACL LOG."""
    url, data = acl_server
    out = {}
    for u in acl.accesses():
        auth = connection.login(u, data_dir=data)
        assert auth is not None, f"no password generated for {u}"
        out[u] = connection.client(url, auth)
    out["admin"].flushall()
    out["admin"].execute_command("ACL", "LOG", "RESET")
    yield out
    for c in out.values():
        c.close()


def report(n: int) -> ExecReport:
    return ExecReport(
        client_order_id=f"c{n}", venue_order_id=f"v{n}", kind="fill", account="a", symbol="BTCUSDT", trade_id=f"t{n}"
    )


def test_oms_and_ptrc_cannot_read_each_others_group(users: dict[str, redis.Redis]) -> None:
    admin, oms, ptrc, gw = users["admin"], users["oms"], users["ptrc"], users["live-gateway"]
    # each creates its group on the stream it consumes (at setup, as ensure_group does)
    oms.xgroup_create(streams.EXEC_REPORTS, "oms", id="0", mkstream=True)
    ptrc.xgroup_create(streams.EXEC_REPORTS_PTRC, "ptrc", id="0", mkstream=True)
    # the producer, as its own user, writes each report to exec.reports and ptrc's copy in one MULTI
    queue(gw, streams.EXEC_REPORTS, report(1))
    queue(gw, streams.EXEC_REPORTS, report(2))
    got = [codec.decode(codec.payload(f), ExecReport) for _, f in admin.xrange(streams.EXEC_REPORTS_PTRC)]
    assert [r.trade_id for r in got] == ["t1", "t2"] and admin.xlen(streams.EXEC_REPORTS) == 2

    # oms on ptrc's group: ptrc's group is on ptrc's copy, a key oms has no rights on
    with pytest.raises(NOPERM):
        oms.xreadgroup("ptrc", "intruder", {streams.EXEC_REPORTS_PTRC: ">"})
    for cmd in (
        ("XACK", streams.EXEC_REPORTS_PTRC, "ptrc", "0-1"),
        ("XAUTOCLAIM", streams.EXEC_REPORTS_PTRC, "ptrc", "intruder", "0", "0-0"),
        ("XPENDING", streams.EXEC_REPORTS_PTRC, "ptrc"),
        ("XGROUP", "CREATE", streams.EXEC_REPORTS_PTRC, "oms", "0"),
    ):
        with pytest.raises(NOPERM):
            oms.execute_command(*cmd)
    # oms on exec.reports with GROUP ptrc: oms may consume exec.reports, so the ACL lets the command
    # through, and Redis answers that ptrc has no group there (ptrc reads its copy): NOGROUP
    with pytest.raises(
        redis.exceptions.ResponseError,
        match=r"^NOGROUP No such key 'exec\.reports' or consumer group 'ptrc' in XREADGROUP with GROUP option$",
    ):
        oms.xreadgroup("ptrc", "intruder", {streams.EXEC_REPORTS: ">"})
    # ptrc on oms's group: exec.reports is not a key ptrc has rights on
    with pytest.raises(NOPERM):
        ptrc.xreadgroup("oms", "intruder", {streams.EXEC_REPORTS: ">"})
    for cmd in (
        ("XACK", streams.EXEC_REPORTS, "oms", "0-1"),
        ("XCLAIM", streams.EXEC_REPORTS, "oms", "intruder", "0", "0-1"),
        ("XGROUP", "CREATE", streams.EXEC_REPORTS, "ptrc", "0"),
    ):
        with pytest.raises(NOPERM):
            ptrc.execute_command(*cmd)

    # nothing was taken from either: each still reads both reports in its own group
    assert len(oms.xreadgroup("oms", "oms-1", {streams.EXEC_REPORTS: ">"})[0][1]) == 2
    assert len(ptrc.xreadgroup("ptrc", "ptrc-1", {streams.EXEC_REPORTS_PTRC: ">"})[0][1]) == 2
    # and the attempts are in the ACL LOG, which alerting turns into alerts naming user, command, key
    # (Redis counts the refusals of one user on one key in one entry, naming the latest command)
    seen = {(d.user, d.key): d.count for d in acl.denials(admin.acl_log())}
    assert seen == {("oms", streams.EXEC_REPORTS_PTRC): 5, ("ptrc", streams.EXEC_REPORTS): 4}


def test_no_user_can_read_another_services_group(users: dict[str, redis.Redis]) -> None:
    """Every pair (generated from the registry): each service's group on each stream it consumes is
    created with an entry in it; every other user (the services, the operator) trying to read it
    (XREADGROUP), ack it (XACK) or take its entries (XAUTOCLAIM) gets NOPERM."""
    admin = users["admin"]
    owned = {name: a.consumed() for name, a in acl.service_accesses().items()}
    for name, consumed in owned.items():
        for s in consumed:
            assert not any(c in s for c in "*?["), f"{name} consumes a pattern, {s}: name its streams"
            admin.xgroup_create(s, name, id="0", mkstream=True)
            admin.xadd(s, {b"d": b"x"})
    attackers = [u for u in users if u != "admin"]
    allowed: list[str] = []
    tried = 0
    for victim, consumed in owned.items():
        for s in consumed:
            for u in attackers:
                if u == victim:
                    continue
                for cmd in (
                    ("XREADGROUP", "GROUP", victim, "intruder", "COUNT", "1", "STREAMS", s, ">"),
                    ("XACK", s, victim, "0-1"),
                    ("XAUTOCLAIM", s, victim, "intruder", "0", "0-0"),
                ):
                    tried += 1
                    try:
                        users[u].execute_command(*cmd)
                    except NOPERM:
                        continue
                    allowed.append(f"{u}: {' '.join(cmd)}")
    assert allowed == []
    assert tried >= 3 * 17 * 18  # every service consumes something, every other user tried each
    for name, consumed in owned.items():  # each group still has its entry, undelivered
        for s in consumed:
            (g,) = [g for g in admin.xinfo_groups(s) if g["name"] == name.encode()]
            assert (g["pending"], g["lag"]) == (0, 1), (name, s)


def test_a_service_creates_its_group_but_never_destroys_moves_or_edits_one(users: dict[str, redis.Redis]) -> None:
    ptrc = users["ptrc"]
    ptrc.xgroup_create(streams.EXEC_REPORTS_PTRC, "ptrc", id="0", mkstream=True)
    for cmd in (
        ("XGROUP", "DESTROY", streams.EXEC_REPORTS_PTRC, "ptrc"),
        ("XGROUP", "SETID", streams.EXEC_REPORTS_PTRC, "ptrc", "$"),
        ("XGROUP", "CREATECONSUMER", streams.EXEC_REPORTS_PTRC, "ptrc", "c"),
        ("XGROUP", "DELCONSUMER", streams.EXEC_REPORTS_PTRC, "ptrc", "c"),
        ("XTRIM", streams.EXEC_REPORTS_PTRC, "MAXLEN", "0"),
        ("XDEL", streams.EXEC_REPORTS_PTRC, "0-1"),
    ):
        with pytest.raises(NOPERM):
            ptrc.execute_command(*cmd)
    seen = {(d.user, d.reason, d.command) for d in acl.denials(users["admin"].acl_log(count=100))}
    assert {("ptrc", "command", c) for c in ("xgroup|destroy", "xgroup|setid", "xtrim", "xdel")} <= seen, seen


async def test_every_publish_path_writes_the_copies_in_the_streams_order(
    acl_server: tuple[str, Path], users: dict[str, redis.Redis]
) -> None:
    """As live-gateway's user: one report on an async client, a batch (publish_many), the raw
    commands (xadds) in a MULTI on the fast connection as live-gateway sends them; the copy holds
    the same entries in the same order."""
    from backend.bus.fastconn import FastRedis
    from backend.bus.publish import publish, publish_many, xadds

    url, data = acl_server
    auth = connection.login("live-gateway", data_dir=data)
    r = connection.async_client(url, auth)
    try:
        eid = await publish(r, streams.EXEC_REPORTS, report(1))
        assert await publish_many(r, streams.EXEC_REPORTS, [report(2), report(3)]) == 2
    finally:
        await r.aclose()
    fast = await FastRedis.connect(url, auth=auth)
    try:
        await fast.pipeline([("MULTI",), *xadds(streams.EXEC_REPORTS, report(4)), ("EXEC",)])
    finally:
        await fast.aclose()
    admin = users["admin"]
    src, cp = admin.xrange(streams.EXEC_REPORTS), admin.xrange(streams.EXEC_REPORTS_PTRC)
    assert src[0][0] == eid
    assert [f for _, f in src] == [f for _, f in cp] and len(cp) == 4
    assert [codec.decode(codec.payload(f), ExecReport).trade_id for _, f in cp] == ["t1", "t2", "t3", "t4"]
