"""One consuming service per stream (issue 16: NOPERM for a service reading another's group).

Redis ACLs check keys, not consumer groups, so a service kept to its own streams is kept out of
another's group only if no stream is consumed in groups by two services. These are the rules that
keep it so: the generator refuses a shared stream, the second consumer of exec.reports reads a
copy its producer writes with every entry (one MULTI), the producer's user may write the copy, the
copy has its source's budget, and the benchmarks' stand-ins run as the service they replace."""

from __future__ import annotations

import pytest
import redis

from backend.bench.echo import EchoService
from backend.bench.passthrough import PassthroughService
from backend.bus import acl, codec, streams
from backend.bus.access import GROUP_COMMANDS, Access, Reads, Writes
from backend.bus.publish import CopiesLeftOut, queue, xadd, xadd_fields, xadds
from backend.messages import ExecReport
from backend.services import service_class


def consumers(users: dict[str, Access]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for u, a in users.items():
        for s in a.consumed():
            out.setdefault(s, set()).add(u)
    return out


def test_every_stream_consumed_in_groups_has_one_consuming_service() -> None:
    users = acl.service_accesses()
    assert acl.shared_streams(users) == []
    by = consumers(users)
    assert {s: u for s, u in by.items() if len(u) > 1} == {}
    assert by[streams.EXEC_REPORTS] == {"oms"} and by[streams.EXEC_REPORTS_PTRC] == {"ptrc"}
    assert streams.EXEC_REPORTS not in acl.accesses()["ptrc"].consumed()  # type: ignore[union-attr]


def test_two_services_consuming_one_stream_is_refused_naming_it_and_both(monkeypatch: pytest.MonkeyPatch) -> None:
    ptrc = service_class("ptrc")
    monkeypatch.setattr(ptrc, "reads", (Reads(streams.EXEC_REPORTS, group=True), Reads(streams.MD_TICKS)))
    with pytest.raises(acl.AclError) as e:
        acl.accesses()
    assert str(e.value).startswith(
        "exec.reports is consumed in consumer groups by two services, oms and ptrc: Redis ACLs check keys, "
        "not consumer groups, so each could read the other's group; give one of them a copy of the stream "
        "of its own (COPIES in backend/bus/streams.py, e.g. exec.reports -> exec.reports.ptrc)"
    )
    with pytest.raises(acl.AclError, match=r"^exec\.reports is consumed"):
        acl.describe()  # `tradeops redis acl`, `redis up`, `acl check` and `acl apply` all generate


def test_a_pattern_overlapping_another_consumers_stream_is_refused() -> None:
    users = {
        "a": Access(reads=(Reads("jobs.*", group=True),)),
        "b": Access(reads=(Reads("jobs.train", group=True),)),
        "c": Access(reads=(Reads("jobs.train"),)),  # read whole: no group, no conflict
    }
    with pytest.raises(acl.AclError, match=r"^jobs\.\* is consumed in consumer groups by two services, a and b "):
        acl.one_consumer_per_stream(users)
    acl.one_consumer_per_stream({k: v for k, v in users.items() if k != "b"})


def test_the_producer_may_write_the_copies_and_nobody_else_may() -> None:
    gw = acl.accesses()["live-gateway"]
    assert gw is not None and gw.may_write(streams.EXEC_REPORTS_PTRC)
    writes = {s.what: s for s in gw.selectors()}["writes"]
    assert set(writes.keys) == {"%W~ops.health"} | {  # the copy too, and the partitions of both
        k for s in ("exec.reports", "exec.reports.ptrc") for k in (f"%W~{s}", f"%W~{s}:{{p*}}")
    }
    writers = {u for u, a in acl.accesses().items() if a is not None and a.may_write(streams.EXEC_REPORTS_PTRC)}
    assert writers == {"live-gateway"}
    assert Access(writes=(Writes("exec.*"),)).written() == ["exec.*", "exec.reports.ptrc"]


def test_no_service_may_destroy_move_or_edit_a_group() -> None:
    assert "xgroup|create" in GROUP_COMMANDS  # its own group, at setup
    for cmd in ("xgroup|destroy", "xgroup|setid", "xgroup|createconsumer", "xgroup|delconsumer", "xgroup", "xtrim"):
        assert cmd not in GROUP_COMMANDS
    for user, a in acl.accesses().items():
        if a is not None:
            rules = " ".join(a.rules())
            assert "+xgroup|destroy" not in rules and "+xgroup|setid" not in rules and "+@stream" not in rules, user


def test_the_copy_has_its_sources_budget_and_counts_in_the_total() -> None:
    src, cp = streams.budget(streams.EXEC_REPORTS), streams.budget(streams.EXEC_REPORTS_PTRC)
    assert cp == src and streams.maxlen(streams.EXEC_REPORTS_PTRC) == streams.maxlen(streams.EXEC_REPORTS)
    assert streams.EXEC_REPORTS_PTRC in streams.BUDGETS and streams.source(streams.EXEC_REPORTS_PTRC) == "exec.reports"
    assert streams.budget(streams.dlq(streams.EXEC_REPORTS_PTRC)) == streams.budget(streams.dlq(streams.EXEC_REPORTS))
    assert streams.total_budget() >= sum(
        streams.budget(s).bytes + streams.budget(streams.dlq(s)).bytes
        for s in (streams.EXEC_REPORTS, streams.EXEC_REPORTS_PTRC)
    )
    assert all(streams.BUDGETS[c].archived == streams.BUDGETS[s].archived for c, s in streams.SOURCES.items())


def report() -> ExecReport:
    return ExecReport(client_order_id="c1", venue_order_id="v1", kind="accepted", account="a", symbol="BTCUSDT")


def test_publish_writes_a_stream_with_its_copies_or_refuses() -> None:
    cmds = xadds(streams.EXEC_REPORTS, report())
    data = codec.encode(report())
    n = streams.maxlen(streams.EXEC_REPORTS)
    assert cmds == [
        ("XADD", "exec.reports", "MAXLEN", "~", n, "*", codec.FIELD, data),
        ("XADD", "exec.reports.ptrc", "MAXLEN", "~", n, "*", codec.FIELD, data),
    ]
    assert xadds(streams.ORDERS_NEW, report())[0] == xadd(streams.ORDERS_NEW, report())
    with pytest.raises(CopiesLeftOut, match=r"^refused to publish to exec\.reports with a lone XADD: it has"):
        xadd(streams.EXEC_REPORTS, report())
    with pytest.raises(CopiesLeftOut, match=r"copies \(exec\.reports\.ptrc\)"):
        xadd_fields(streams.EXEC_REPORTS, {b"d": b"x"})
    r = redis.Redis(host="127.0.0.1", port=1)  # never connected: the refusal comes first
    with pytest.raises(CopiesLeftOut, match=r"on a pipeline that is not a MULTI"):
        queue(r.pipeline(transaction=False), streams.EXEC_REPORTS, report())
    pipe = r.pipeline(transaction=True)
    queue(pipe, streams.EXEC_REPORTS, report())
    assert [c[0][1] for c in pipe.command_stack] == ["exec.reports", "exec.reports.ptrc"]


def test_the_benchmarks_stand_ins_run_as_the_service_they_replace() -> None:
    for stand_in, name in ((EchoService, "risk"), (PassthroughService, "normalizer")):
        real = service_class(name).access()
        assert stand_in.name == name
        assert set(stand_in.access().consumed()) <= set(real.consumed()), stand_in
    echo, risk = EchoService.access(), service_class("risk").access()
    assert set(echo.written()) <= set(risk.written()) and set(echo.keys) <= set(risk.keys)  # risk's user will do
