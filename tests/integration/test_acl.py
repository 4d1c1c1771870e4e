"""Least privilege on the bus (issue 16) on a real server with the generated ACL users applied: the
`default` user is off, each service runs as its own user and can do what it declares and nothing
else, the operator reads everything and writes only the control plane, `tradeops redis acl check`
names every drifted rule, and the two attacks (a forged kill switch toggle, a forged fill) are
refused with NOPERM."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backend.bench.harness import BenchStack
from backend.bench.risk import seed_prices
from backend.bus import acl, codec, connection, streams
from backend.bus.embedded import EmbeddedRedis
from backend.bus.scripts import Script
from backend.messages import ControlCommand, ExecReport, Order, OrderEvent, Position, RiskRequest
from backend.services.base import AccessDenied
from backend.services.risk import RiskService
from backend.settings import Settings
from backend.trading.killswitch import KILL_KEY, kill_switch_on, set_kill_switch
from tests.conftest import TRADEOPS, wait_for


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An embedded server started with the generated users (as `tradeops redis up` starts it)."""
    data = tmp_path_factory.mktemp("acl-data")
    server = EmbeddedRedis(data, acl=True)
    url = server.start()
    yield url, data
    server.stop()


@pytest.fixture
def acl_redis(acl_server: tuple[str, Path]) -> Iterator[tuple[str, Path]]:
    url, data = acl_server
    admin = as_user(acl_server, "admin")
    admin.flushall()
    admin.execute_command("ACL", "LOG", "RESET")
    admin.close()
    yield url, data


def as_user(server: tuple[str, Path], user: str) -> redis.Redis:
    url, data = server
    auth = connection.login(user, data_dir=data)
    assert auth is not None, f"no password generated for {user}"
    return connection.client(url, auth)


def forged_toggle() -> dict[bytes, bytes]:
    return codec.fields(
        ControlCommand(
            target="risk", command="kill_switch", args={"on": False}, operator="intruder", reason="forged", ts_ns=1
        )
    )


def forged_fill() -> dict[bytes, bytes]:
    return codec.fields(
        ExecReport(
            client_order_id="nobody-ordered-this",
            venue_order_id="v1",
            kind="fill",
            account="acc",
            symbol="ETHUSDT",
            side="buy",
            trade_id="forged-1",
            fill_qty=1000.0,
            fill_price=0.01,
        )
    )


def test_default_user_is_off_and_passwords_are_files_only_their_owner_reads(acl_redis: tuple[str, Path]) -> None:
    url, data = acl_redis
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url).ping()
    for user in acl.accesses():
        f = data / "secrets" / "redis" / user
        assert f.stat().st_mode & 0o777 == 0o600, user
    assert (data / "secrets").stat().st_mode & 0o777 == 0o700
    aclfile = data / "redis" / "users.acl"
    assert aclfile.stat().st_mode & 0o777 == 0o600
    text = aclfile.read_text()
    for user in acl.accesses():  # hashes only
        assert (data / "secrets" / "redis" / user).read_text() not in text
    assert "user default off" in text
    assert as_user(acl_redis, "operator").ping()


def test_a_service_may_do_what_it_declares_and_nothing_else(acl_redis: tuple[str, Path]) -> None:
    risk = as_user(acl_redis, "risk")
    admin = as_user(acl_redis, "admin")
    admin.xgroup_create(streams.RISK_REQUESTS, "risk", id="0", mkstream=True)
    admin.xadd(streams.RISK_REQUESTS, {b"d": b"x"})
    # its own: consume risk.requests in a group, read the broadcasts, append its decisions
    assert risk.xreadgroup("risk", "r1", {streams.RISK_REQUESTS: ">"})
    risk.xadd(streams.RISK_DECISIONS, {b"d": b"x"})
    risk.xrevrange(streams.MD_TICKS, count=1)
    assert risk.get(KILL_KEY) is None
    # writing a stream it does not own: NOPERM (risk.requests is only consumed by it)
    for stream in (streams.EXEC_REPORTS, streams.RISK_REQUESTS, streams.OPS_CONTROL, streams.ORDERS_NEW):
        with pytest.raises(redis.exceptions.NoPermissionError):
            risk.xadd(stream, {b"d": b"x"})
    # reading what it only writes, changing what it only reads
    with pytest.raises(redis.exceptions.NoPermissionError):
        risk.xrange(streams.RISK_DECISIONS)
    with pytest.raises(redis.exceptions.NoPermissionError):
        risk.set(KILL_KEY, "0")
    # another's group on a stream it does not consume: ptrc's exec.reports group, oms's orders.new
    admin.xgroup_create(streams.ORDERS_NEW, "oms", id="0", mkstream=True)
    with pytest.raises(redis.exceptions.NoPermissionError):
        risk.xreadgroup("oms", "r1", {streams.ORDERS_NEW: ">"})
    ptrc = as_user(acl_redis, "ptrc")
    with pytest.raises(redis.exceptions.NoPermissionError):
        ptrc.xreadgroup("risk", "p1", {streams.RISK_REQUESTS: ">"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        ptrc.xack(streams.RISK_REQUESTS, "risk", "0-1")
    # keyless commands it was not given
    for cmd in (("KEYS", "*"), ("FLUSHALL",), ("CONFIG", "GET", "maxmemory"), ("ACL", "LIST"), ("CLIENT", "LIST")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            risk.execute_command(*cmd)


def test_scripts_run_only_on_keys_in_the_services_rights(acl_redis: tuple[str, Path]) -> None:
    serving = as_user(acl_redis, "serving")
    ok = Script("return redis.call('HSET', KEYS[1], 'x', '1')")
    sha = serving.script_load(ok.source)
    assert serving.evalsha(sha, 1, "serving:scored:alpha") == 1
    with pytest.raises(redis.exceptions.NoPermissionError):  # a key outside its rights, as KEYS
        serving.evalsha(sha, 1, "oms:order:x")
    # a key it may name, a command inside on a key outside its rights: checked too
    sneaky = serving.script_load("return redis.call('XADD', 'ops.control', '*', 'd', 'x')")
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)no permissions"):
        serving.evalsha(sneaky, 1, "serving:scored:alpha")
    refdata = as_user(acl_redis, "refdata")
    with pytest.raises(redis.exceptions.NoPermissionError):  # no scripts at all
        refdata.script_load(ok.source)
    # risk's scripts are its partitions' leases (the order path may be split): on those keys only
    risk = as_user(acl_redis, "risk")
    sha = risk.script_load(ok.source)
    with pytest.raises(redis.exceptions.NoPermissionError):
        risk.evalsha(sha, 1, "oms:order:x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        risk.evalsha(sha, 1, "lease:oms:{p0of2}")  # another service's lease


def test_the_operator_reads_everything_and_writes_only_the_control_plane(acl_redis: tuple[str, Path]) -> None:
    op = as_user(acl_redis, "operator")
    admin = as_user(acl_redis, "admin")
    admin.xadd(streams.EXEC_REPORTS, {b"d": b"x"})
    admin.hset("ptrc:pos", "a|b", b"x")
    assert op.xrange(streams.EXEC_REPORTS) and op.hgetall("ptrc:pos") and op.info("memory")
    cmd = set_kill_switch(op, True, "root", "acl test")  # the key and the audit entry, durable
    assert cmd.args == {"on": True} and kill_switch_on(op)
    op.xadd(
        streams.ORDERS_NEW,
        codec.fields(Order(client_order_id="o", account="a", symbol="ETHUSDT", side="buy", type="market", quantity=1)),
    )
    for stream in (streams.EXEC_REPORTS, streams.RISK_DECISIONS, streams.POSITIONS, streams.OPS_HEALTH):
        with pytest.raises(redis.exceptions.NoPermissionError):
            op.xadd(stream, {b"d": b"x"})
    for cmd_ in (("SET", "ptrc:pos", "x"), ("DEL", "oms:open"), ("FLUSHALL",), ("KEYS", "*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            op.execute_command(*cmd_)


def test_the_two_attacks_are_refused(acl_redis: tuple[str, Path]) -> None:
    """A forged `kill_switch off` on ops.control and a forged fill on exec.reports, from the
    services' users (any local process holding their password) and from nobody at all."""
    op = as_user(acl_redis, "operator")
    set_kill_switch(op, True, "root", "incident")
    for user in (u for u in acl.accesses() if u not in ("admin", "operator")):
        r = as_user(acl_redis, user)
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.xadd(streams.OPS_CONTROL, forged_toggle())
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.set(KILL_KEY, "0")
        if user != "live-gateway":  # the venue's reports are its own
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.xadd(streams.EXEC_REPORTS, forged_fill())
        r.close()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(acl_redis[0]).xadd(streams.OPS_CONTROL, forged_toggle())
    admin = as_user(acl_redis, "admin")
    assert kill_switch_on(admin) and admin.xlen(streams.EXEC_REPORTS) == 0
    log = admin.execute_command("ACL", "LOG", 128)
    assert {e[b"username"] for e in log} >= {b"ptrc", b"gateway", b"oms", b"risk"}


@pytest.mark.timeout(120)
def test_the_trading_path_runs_as_its_users() -> None:
    """oms, risk, live-gateway and ptrc as processes, each logged in as its own user (its password
    file's path in its environment, never the password); an order from the operator fills and is
    booked; nothing was refused."""
    with BenchStack(acl=True) as st:
        assert st.auth is not None and st.auth.user == "admin"
        seed_prices(st.r)
        procs = {name: st.start(name) for name in ("risk", "live-gateway", "oms", "ptrc")}
        for name, proc in procs.items():
            env = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
            assert f"TRADEOPS_REDIS_USER={name}".encode() in env
            assert f"TRADEOPS_REDIS_PASSWORD_FILE={st.data_dir}/secrets/redis/{name}".encode() in env
            password = (st.data_dir / "secrets" / "redis" / name).read_bytes()
            assert not any(password in e for e in env)
            assert password not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        op = as_user((st.url, st.data_dir), "operator")
        op.xadd(
            streams.ORDERS_NEW,
            codec.fields(
                Order(
                    client_order_id="acl-1",
                    account="acc-acl",
                    symbol="BTCUSDT",
                    side="buy",
                    type="market",
                    quantity=0.01,
                )
            ),
        )

        def filled() -> bool:
            evs = [codec.decode(codec.payload(f), OrderEvent) for _, f in op.xrange(streams.ORDERS_EVENTS)]
            return any(e.client_order_id == "acl-1" and e.state == "FILLED" for e in evs)

        wait_for(filled, 30, what="the order filled")
        wait_for(
            lambda: any(
                codec.decode(codec.payload(f), Position).account == "acc-acl" for _, f in op.xrange(streams.POSITIONS)
            ),
            30,
            what="ptrc's position",
        )
        assert st.r.execute_command("ACL", "LOG") == []
        # ptrc's group is on its copy, written by live-gateway as its own user: exec.reports is the OMS's
        assert {g["name"] for g in st.r.xinfo_groups(streams.EXEC_REPORTS)} == {b"oms"}
        assert {g["name"] for g in st.r.xinfo_groups(streams.EXEC_REPORTS_PTRC)} == {b"ptrc"}
        for proc in procs.values():
            assert proc.poll() is None


async def test_a_service_refused_a_command_fails_loudly(acl_redis: tuple[str, Path]) -> None:
    """risk's user without its right to append decisions (a deployment bug): the service fails at
    once with the reason; the request is not dead-lettered, no decision is made (the OMS sends a
    request that has no decision again, backend/services/oms.py)."""
    url, data = acl_redis
    admin = as_user(acl_redis, "admin")
    access = acl.accesses()["risk"]
    assert access is not None
    broken = access._replace(writes=tuple(w for w in access.writes if w.stream != streams.RISK_DECISIONS))
    admin.execute_command(
        "ACL",
        "SETUSER",
        "risk",
        "reset",
        "on",
        f"#{acl.password_hash((data / 'secrets' / 'redis' / 'risk').read_text())}",
        *broken.rules(),
    )
    try:
        admin.xadd(
            streams.RISK_REQUESTS,
            codec.fields(
                RiskRequest(
                    request_id="r#1",
                    order=Order(
                        client_order_id="r", account="a", symbol="ETHUSDT", side="buy", type="market", quantity=1
                    ),
                    sent_ns=1,
                )
            ),
        )
        svc = RiskService(
            redis_url=url,
            settings=Settings(data_dir=str(data)),
            instance="risk-broken",
            login=connection.login("risk", data_dir=data),
        )
        with pytest.raises(AccessDenied, match="NOPERM") as info:
            await asyncio.wait_for(svc.run(), 30)
        assert "deployment bug" in str(info.value) and "'risk'" in str(info.value)
        assert svc.state == "failed" and "NOPERM" in svc.reason
        assert admin.xlen(streams.dlq(streams.RISK_REQUESTS)) == 0
        assert admin.xlen(streams.RISK_DECISIONS) == 0
        assert admin.hget("health:risk:risk-broken", "state") == b"failed"
    finally:
        acl.apply(
            admin,
            {"risk": (data / "secrets" / "redis" / "risk").read_text()},
            users={"risk": access},
            disable_default=False,
        )


def test_acl_check_names_every_drifted_rule(acl_redis: tuple[str, Path], tmp_path: Path) -> None:
    _, data = acl_redis
    env = {
        "TRADEOPS_DATA_DIR": str(data),
        "PYTHONUNBUFFERED": "1",
        "PATH": "/usr/bin:/bin",
        "XDG_CONFIG_HOME": str(tmp_path),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(TRADEOPS + list(args), capture_output=True, text=True, env=env, timeout=120)

    out = cli("redis", "acl", "check")
    assert out.returncode == 0 and "acl check: ok: 20 users match the generated rules; default is off" in out.stdout, (
        out.stdout + out.stderr
    )
    admin = as_user(acl_redis, "admin")
    admin.execute_command("ACL", "SETUSER", "ptrc", "%W~exec.reports", "(+xadd %W~ops.control)")
    admin.execute_command("ACL", "SETUSER", "risk", "+keys", ">another-password")
    admin.execute_command("ACL", "SETUSER", "intruder", "on", ">x", "~*", "+@all")
    admin.execute_command("ACL", "SETUSER", "default", "on")
    admin.execute_command("ACL", "DELUSER", "modelops")
    out = cli("redis", "acl", "check")
    assert out.returncode == 1, out.stdout
    drifts = [ln for ln in out.stdout.splitlines() if ln.startswith("drift: ")]
    assert sorted(drifts) == sorted(
        [
            "drift: ptrc: rule %W~exec.reports on the server is not generated",
            "drift: ptrc: selector (%W~ops.control -@all +xadd) on the server is not generated",
            "drift: risk: it takes 2 passwords, not the one the secrets provider holds",
            "drift: risk: rule +keys on the server is not generated",
            "drift: modelops: missing on the server",
            "drift: intruder: a user on the server that is not generated",
            "drift: default: the default user is on (it must be off)",
        ]
    ), out.stdout
    assert "acl check: 7 drifted rule(s)" in out.stderr
    out = cli("redis", "acl", "apply")
    assert out.returncode == 0, out.stderr
    out = cli("redis", "acl", "check")
    assert out.returncode == 0, out.stdout + out.stderr
    out = cli("redis", "acl", "--user", "risk")
    assert out.returncode == 0 and out.stdout.count("\nuser risk on ") == 1


async def test_denials_become_alerts_naming_user_command_and_key_and_the_console_shows_them(
    acl_redis: tuple[str, Path],
) -> None:
    """alerting (as its own user) collects ACL LOG: the forged toggle and the forged fill are
    critical alerts naming the user, the command and the key, once each; a failed login too."""
    from backend.services.alerting import AlertingService, active
    from console.data.live import LiveSource
    from tests.conftest import await_for

    url, data = acl_redis
    settings = Settings(data_dir=str(data))
    svc = AlertingService(
        redis_url=url, settings=settings, instance="alerting-acl", login=connection.login("alerting", data_dir=data)
    )
    # the denials happen before alerting looks (a look between the three would count 1 or 2)
    ptrc = as_user(acl_redis, "ptrc")
    for _ in range(3):  # one entry counted three times: one alert
        with pytest.raises(redis.exceptions.NoPermissionError):
            ptrc.xadd(streams.OPS_CONTROL, forged_toggle())
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(acl_redis, "oms").xadd(streams.EXEC_REPORTS, forged_fill())
    with pytest.raises(redis.AuthenticationError):
        connection.client(url, connection.Login("risk", "not-its-password")).ping()
    task = asyncio.create_task(svc.run())
    try:
        await await_for(lambda: svc.state == "running", 20, what="alerting running")
        op = as_user(acl_redis, "operator")
        want = {"acl:ptrc:xadd:ops.control", "acl:oms:xadd:exec.reports", "acl:risk:auth:-"}

        def alerts() -> dict[str, object]:
            return {k: a for k, a in active(op) if k.startswith("acl:")}

        got = await await_for(lambda: (a := alerts()) and set(a) >= want and a, 20, what="the ACL alerts")
        toggle, fill, login = (
            got[k]
            for k in sorted(
                want, key=["acl:ptrc:xadd:ops.control", "acl:oms:xadd:exec.reports", "acl:risk:auth:-"].index
            )
        )
        assert toggle.severity == "critical" and toggle.kind == "acl" and toggle.source == "alerting"
        assert "Redis refused XADD on the key ops.control to the user ptrc (3 times" in toggle.message
        assert "Redis refused XADD on the key exec.reports to the user oms (1 time" in fill.message
        assert "failed Redis login as the user risk" in login.message and "not-its-password" not in login.message
        denials, ids = svc.denials, {k: a.id for k, a in got.items()}
        looks = svc.acl_looks  # another look at the log: nothing new (other alerts may come and go:
        # a heartbeat an earlier test left behind going stale)
        await await_for(lambda: svc.acl_looks > looks + 1, 20, what="two more looks at the ACL log")
        assert svc.denials == denials and {k: a.id for k, a in alerts().items()} == ids and svc.state == "running"
        src = LiveSource(url, settings, "alice")
        try:
            snap = await asyncio.to_thread(src.poll)
        finally:
            src.close()
        shown = [a for a in snap.alerts if a.startswith("ACL: ")]
        assert any("XADD on the key ops.control to the user ptrc" in a for a in shown), snap.alerts
        assert any("XADD on the key exec.reports to the user oms" in a for a in shown), snap.alerts
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 20)


@pytest.mark.timeout(120)
def test_an_external_redis_gets_the_users_through_its_admin_url(tmp_path: Path) -> None:
    """An external server whose admin is its `default` user (no ACLs of ours yet): `acl apply`
    through redis_admin_url sets the generated users (passwords made into the data dir), `acl check`
    agrees, and a service given its own URL (`redis_urls`) logs in as its user with its password."""
    from backend.services.run import run_service  # noqa: F401 - the entry point the URL is read by

    ext = EmbeddedRedis(tmp_path / "external")  # no ACL file: `default` may do everything
    url = ext.start()
    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRADEOPS_")},
        "TRADEOPS_DATA_DIR": str(data),
        "TRADEOPS_REDIS_URL": url,
        "TRADEOPS_REDIS_ADMIN_URL": url.replace("redis://", "redis://default@"),
    }
    try:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(TRADEOPS + list(args), capture_output=True, text=True, env=env, timeout=120)

        out = cli("redis", "acl", "apply")
        assert out.returncode == 0 and "acl apply: 19 users set on" in out.stdout, out.stdout + out.stderr
        assert "default is off" not in out.stdout  # it is the admin here
        out = cli("redis", "acl", "check")
        assert out.returncode == 0 and "acl check: ok: 19 users match" in out.stdout, out.stdout + out.stderr
        pw = (data / "secrets" / "redis" / "risk").read_text()
        assert (data / "secrets" / "redis" / "risk").stat().st_mode & 0o777 == 0o600
        risk = connection.client(url, connection.Login("risk", pw))
        risk.xadd(streams.RISK_DECISIONS, {b"d": b"x"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            risk.xadd(streams.EXEC_REPORTS, {b"d": b"x"})
        # a service given its own URL: the user from the URL, the password from the provider
        settings = Settings(data_dir=str(data), redis_urls={"risk": url.replace("redis://", "redis://risk@")})
        auth = connection.login(connection.user_of("risk"), settings, url=settings.redis_urls["risk"])
        assert auth is not None and auth.user == "risk" and auth.password == pw
        assert "risk" in repr(auth) and pw not in repr(auth)
        out = cli("health")
        assert out.returncode == 0, out.stderr  # the CLI as operator
    finally:
        ext.stop()
