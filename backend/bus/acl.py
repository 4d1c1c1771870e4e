"""The Redis users of the platform and their ACL rules, generated from the services' declared access
(backend/bus/access.py) and the inventory: one user per service with exactly its rights, `operator`
for the consoles and the CLI (reads everything; writes only the control plane), `admin` for the
supervisor, the stack, the benchmarks and these tools; the `default` user is off.

- `rules()`: user -> its ACL rules, generated (what `tradeops redis acl` prints);
- `prepare(data_dir)`: at `redis up` (and `tradeops up`, the benchmarks, a test that asks): every
  user's password from the secrets provider, generated into the data dir's secrets when it has none
  (`<data dir>/secrets/redis/<user>`, 0600), and the ACL file the embedded server starts with
  (`<data dir>/redis/users.acl`, 0600: password hashes only);
- `apply(r, passwords)`: the users set on a running server (an external Redis, through an admin
  login: `tradeops redis acl apply`);
- `check(r, passwords)`: the live users against the generated rules, every drift named
  (`tradeops redis acl check`).

Every stream consumed in consumer groups is consumed by one user only (`one_consumer_per_stream`,
checked whenever the users are generated): Redis ACLs check keys, not groups, so that is what keeps
a service out of another's group (backend/bus/access.py); a second consumer reads a copy of the
stream (backend/bus/streams.py `COPIES`).

The operator's rights: every key and stream read (`%R~*`, the @read commands), and writes only to
the control plane: the gates log and its head, the migration log, ops.control and the kill switch's
key, the order intake (orders.new), the requests to services (models, training, backtests,
replays, scheduler runs, refdata updates), alert acknowledgements, subscriptions, and the bus
probes of the gate checks (`gates:probe:*`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend import locations
from backend import secrets as sec
from backend.bus import embedded, streams
from backend.bus.access import Access, Keys, Reads, Writes, overlap
from backend.bus.connection import ADMIN, OPERATOR
from backend.errors import TradeopsError

ACL_FILE = embedded.ACL_FILE
DEFAULT = "default"
ADMIN_RULES = ("~*", "&*", "+@all")
GATES_HEAD = "gates:head"  # = gates.audit.HEAD_KEY (backend never imports gates)
OPERATORS_HEAD = "operators:head"  # = gates.operators.HEAD_KEY: the signed operator registry's head
GATES_PROBE = "gates:probe:*"  # the gate checks' bus probes (gates/checks.py)

OPERATOR_ACCESS = Access(
    writes=tuple(
        Writes(s)
        for s in (
            streams.OPS_GATES,
            streams.OPS_OPERATORS,
            streams.OPS_MIGRATION,
            streams.OPS_CONTROL,
            streams.ORDERS_NEW,
            streams.MODELS_REQUESTS,
            streams.TRAINING_JOBS,
            streams.BACKTEST_JOBS,
            streams.REPLAY_REQUESTS,
            streams.SCHEDULER_REQUESTS,
            streams.REFDATA_UPDATES,
            streams.OPS_ALERTS_ACKED,
            GATES_PROBE,
            streams.dlq(GATES_PROBE),
        )
    ),
    reads=(Reads(GATES_PROBE, group=True),),
    keys=(
        Keys(GATES_HEAD, True),
        Keys(OPERATORS_HEAD, True),
        Keys("archive:*", False),
        Keys("risk:kill_switch", True),
        Keys("durable:fence", True),
        Keys("training:job:*", True),
        Keys("backtest:job:*", True),
        Keys("market:subs:*", True),
        Keys("alerts:active", True),
        Keys(GATES_PROBE, True),
        Keys(streams.dlq(GATES_PROBE), True),
    ),
    commands=("info", "config|get", "time", "dbsize", "scan"),
    read_all=True,
)


class AclError(TradeopsError):
    """The ACL users cannot be generated, applied or checked; the message says why."""


def service_accesses() -> dict[str, Access]:
    """Every service of the inventory (in migration order) -> its declared access."""
    from backend.migration import inventory
    from backend.services import service_class

    return {name: service_class(name).access() for name in inventory.load().order()}


def accesses() -> dict[str, Access | None]:
    """Every generated user -> its access (None: admin, everything); AclError when two of them
    consume one stream in groups (`one_consumer_per_stream`)."""
    users: dict[str, Access | None] = {ADMIN: None, OPERATOR: OPERATOR_ACCESS, **service_accesses()}
    one_consumer_per_stream({u: a for u, a in users.items() if a is not None})
    return users


def shared_streams(users: Mapping[str, Access]) -> list[tuple[str, str, str, str]]:
    """Every stream (or pattern) that two users consume in consumer groups: (stream, user, the
    other's stream or pattern, the other user)."""
    out = []
    names = list(users)
    for i, u in enumerate(names):
        for v in names[i + 1 :]:
            for s in users[u].consumed():
                for t in users[v].consumed():
                    if overlap(s, t):
                        out.append((s, u, t, v))
    return out


def one_consumer_per_stream(users: Mapping[str, Access]) -> None:
    """AclError naming the stream and both services when two users consume one stream in consumer
    groups: Redis cannot keep one out of the other's group there (its ACLs check keys, not groups).
    The second consumer must read a copy of its own (backend/bus/streams.py COPIES)."""
    shared = shared_streams(users)
    if shared:
        raise AclError(
            "; ".join(
                f"{s} is consumed in consumer groups by two services, {u} and {v}" + (f" (as {t})" if t != s else "")
                for s, u, t, v in shared
            )
            + ": Redis ACLs check keys, not consumer groups, so each could read the other's group; give one "
            f"of them a copy of the stream of its own (COPIES in backend/bus/streams.py, e.g. "
            f"{shared[0][0]} -> {streams.copy_for(shared[0][0], shared[0][3])})"
        )


def rules(access: Access | None) -> list[str]:
    """The ACL rules of a user (after `on` and its password)."""
    return list(ADMIN_RULES) if access is None else access.rules()


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def user_line(user: str, access: Access | None, password: str | None) -> str:
    """The user as an ACL file line (a password as its SHA-256 only; none: nobody logs in)."""
    pw = [f"#{password_hash(password)}"] if password is not None else []
    return " ".join(["user", user, "on", *pw, *rules(access)])


def describe(users: Mapping[str, Access | None] | None = None, *, default: bool = True) -> str:
    """The generated rules, per user, with what each may do in words (`tradeops redis acl`)."""
    from backend.migration import inventory

    inv = {s.name: s for s in inventory.load().services}
    out = []
    for user, access in (users if users is not None else accesses()).items():
        if access is None:
            what = "the supervisor, the stack, the benchmarks and `tradeops redis` (every command, every key)"
        elif user == OPERATOR:
            what = "the consoles and the CLI: read everything; " + access.summary()
        else:
            spec = inv.get(user)
            where = f"P{spec.priority}, lanes {', '.join(spec.lanes)}: " if spec else ""
            what = where + access.summary()
        out.append(f"# {user}: {what}")
        out.append(user_line(user, access, None))
    if default:
        out.append(f"# {DEFAULT}: off (no process logs in without a user)")
        out.append(f"user {DEFAULT} off resetkeys resetchannels -@all")
    return "\n".join(out) + "\n"


# -- passwords and the embedded server's ACL file ---------------------------------------------------
def acl_path(data_dir: Path) -> Path:
    return locations.redis_dir(Path(data_dir)) / ACL_FILE


def passwords(provider: sec.Provider, users: list[str], *, create: bool) -> dict[str, str | None]:
    """Every user's password from the provider; `create`: a new one kept in the data dir for a user
    that has none."""
    out: dict[str, str | None] = {}
    for u in users:
        s = sec.redis_password(u)
        out[u] = provider.ensure(s) if create else provider.find(s)
    return out


def prepare(data_dir: Path, settings: Any = None) -> Path:
    """The embedded server's ACL file, written now from the generated rules and every user's password
    (generated into the data dir's secrets when missing). Returns its path."""
    path = acl_path(data_dir)
    sec.write_private(path, acl_text(data_dir, settings))
    return path


def store(data_dir: Path, settings: Any = None) -> sec.Provider:
    """Where every user's password is found: Vault (when configured) and the data dir, never the
    process's own TRADEOPS_REDIS_PASSWORD (that is one user's)."""
    return sec.provider(
        settings, data_dir=Path(data_dir), environ={k: v for k, v in os.environ.items() if k.startswith("VAULT_")}
    )


def acl_text(data_dir: Path, settings: Any = None) -> str:
    """The generated users as an ACL file (hashes), every password from the provider, generated
    into the data dir's secrets when missing."""
    users = accesses()
    provider = store(data_dir, settings)
    pws = passwords(provider, list(users), create=True)
    lines = [user_line(u, a, pws[u]) for u, a in users.items()]
    lines.append(f"user {DEFAULT} off resetkeys resetchannels -@all")
    return "\n".join(lines) + "\n"


def enabled(data_dir: Path) -> bool:
    """Whether the data dir's embedded server runs with ACLs (its ACL file is there)."""
    return acl_path(data_dir).exists()


# -- a running server --------------------------------------------------------------------------------
def apply(
    r: Any,
    pws: Mapping[str, str | None],
    *,
    skip: tuple[str, ...] = (),
    disable_default: bool = True,
    users: Mapping[str, Access | None] | None = None,
) -> list[str]:
    """Set every generated user on the server `r` (an admin login), each from scratch (`reset`);
    the `default` user off unless it is the one applying them. Returns the users set."""
    done = []
    for user, access in (users if users is not None else accesses()).items():
        if user in skip:
            continue
        pw = pws.get(user)
        if pw is None:
            raise AclError(f"no password for the Redis user {user}")
        r.execute_command("ACL", "SETUSER", user, "reset", "on", f"#{password_hash(pw)}", *rules(access))
        done.append(user)
    if disable_default and DEFAULT not in skip:
        r.execute_command("ACL", "SETUSER", DEFAULT, "off")
    return done


@dataclass(frozen=True)
class Drift:
    user: str
    what: str

    def __str__(self) -> str:
        return f"{self.user}: {self.what}"


def _parse_line(line: str) -> tuple[str, list[str], list[frozenset[str]]]:
    """`user NAME tokens... (selector) ...` -> (name, root tokens, selectors as token sets)."""
    _, _, rest = line.partition(" ")
    name, _, rest = rest.partition(" ")
    root: list[str] = []
    sels: list[frozenset[str]] = []
    i = 0
    while i < len(rest):
        if rest[i] == "(":
            j = rest.index(")", i)
            sels.append(frozenset(_norm(rest[i + 1 : j].split())))
            i = j + 1
        elif rest[i] == " ":
            i += 1
        else:
            j = rest.find(" ", i)
            j = len(rest) if j < 0 else j
            root.append(rest[i:j])
            i = j
    return name, _norm(root), sels


_IGNORED = {"reset", "resetkeys", "resetchannels", "resetpass", "nopass", "sanitize-payload", "skip-sanitize-payload"}


def _norm(tokens: list[str]) -> list[str]:
    return [("~" + t[4:]) if t.startswith("%RW~") else t for t in tokens if t not in _IGNORED]


def expected_line(user: str, access: Access | None, password: str | None) -> str:
    return user_line(user, access, password)


def check(
    r: Any,
    pws: Mapping[str, str | None],
    *,
    skip: tuple[str, ...] = (),
    users: Mapping[str, Access | None] | None = None,
) -> list[Drift]:
    """Every way the live users of `r` differ from the generated ones: a user missing or extra, a
    rule (root or selector) missing or extra, a password that is not the one the provider holds
    (when it holds one), `default` not off."""
    want = users if users is not None else accesses()
    live: dict[str, str] = {}
    for raw in r.execute_command("ACL", "LIST"):
        line = raw.decode() if isinstance(raw, bytes) else str(raw)
        name = line.split(" ", 2)[1] if line.count(" ") >= 1 else line
        live[name] = line
    drifts: list[Drift] = []
    for user, access in want.items():
        if user in skip:
            continue
        if user not in live:
            drifts.append(Drift(user, "missing on the server"))
            continue
        _, have_root, have_sels = _parse_line(live[user])
        _, want_root, want_sels = _parse_line(expected_line(user, access, None))
        have_pw = {t for t in have_root if t.startswith("#")}
        have_root = [t for t in have_root if not t.startswith(("#", ">"))]
        pw = pws.get(user)
        if pw is not None and f"#{password_hash(pw)}" not in have_pw:
            drifts.append(Drift(user, "its password is not the one the secrets provider holds"))
        elif len(have_pw) > 1:
            drifts.append(Drift(user, f"it takes {len(have_pw)} passwords, not the one the secrets provider holds"))
        elif "nopass" in live[user].split():
            drifts.append(Drift(user, "it takes any password (nopass)"))
        for t in want_root:
            if t not in have_root:
                drifts.append(Drift(user, f"rule {t} missing on the server"))
        for t in have_root:
            if t not in want_root:
                drifts.append(Drift(user, f"rule {t} on the server is not generated"))
        left = list(have_sels)
        for s in want_sels:
            if s in left:
                left.remove(s)
                continue
            peer = _closest(s, left)
            if peer is None:
                drifts.append(Drift(user, f"selector ({_show(s)}) missing on the server"))
                continue
            left.remove(peer)
            for t in sorted(s - peer):
                drifts.append(Drift(user, f"rule {t} missing from the selector ({_show(s)}) on the server"))
            for t in sorted(peer - s):
                drifts.append(Drift(user, f"rule {t} on the server is not in the selector ({_show(s)})"))
        for s in left:
            drifts.append(Drift(user, f"selector ({_show(s)}) on the server is not generated"))
    for user in sorted(set(live) - set(want) - {DEFAULT} - set(skip)):
        drifts.append(Drift(user, "a user on the server that is not generated"))
    if DEFAULT in live and DEFAULT not in skip and "on" in _parse_line(live[DEFAULT])[1]:
        drifts.append(Drift(DEFAULT, "the default user is on (it must be off)"))
    return drifts


def _commands(sel: frozenset[str]) -> frozenset[str]:
    return frozenset(t for t in sel if t[:1] in "+-")


def _closest(s: frozenset[str], among: list[frozenset[str]]) -> frozenset[str] | None:
    """The live selector with the same commands as `s` (else the one sharing most rules)."""
    same = [x for x in among if _commands(x) == _commands(s)]
    if same:
        return max(same, key=lambda x: len(x & s))
    best = max(among, key=lambda x: len(x & s), default=None)
    return best if best is not None and _commands(best) & _commands(s) - {"-@all"} else None


def _show(sel: frozenset[str]) -> str:
    keys = sorted(t for t in sel if t[:1] not in "+-")
    cmds = [t for t in sorted(sel) if t[:1] in "+-"]
    return " ".join(keys + sorted(cmds, key=lambda t: (t != "-@all", t)))


# -- denials (Redis's ACL LOG) --------------------------------------------------------------------------
DENIAL = "acl"
"""The kind of the alerts alerting raises for ACL LOG entries."""
ALERTS_ACTIVE = "alerts:active"  # = backend.services.alerting.ACTIVE


@dataclass(frozen=True)
class Denial:
    """One ACL LOG entry: Redis refused `command` (on `key`) to `user`, `count` times."""

    user: str
    reason: str
    """command (the command is not allowed), key, channel, auth (a failed login)."""
    command: str
    key: str
    context: str
    """toplevel, multi, lua (inside a script: `command` is the script's EVALSHA)."""
    count: int
    entry: str
    """The entry's id and creation time: the same entry, counted again, keeps it."""
    addr: str

    @property
    def alert_key(self) -> str:
        return f"{DENIAL}:{self.user}:{self.command}:{self.key or '-'}"

    def message(self) -> str:
        where = f" from {self.addr}" if self.addr else ""
        times = f"{self.count} time{'s' if self.count != 1 else ''}"
        if self.reason == "auth":
            return f"failed Redis login as the user {self.user} ({times}{where}): a wrong or stolen password"
        script = " inside a script" if self.context == "lua" else ""
        what = (
            f"{self.command.upper()} on the key {self.key}"
            if self.reason in ("key", "channel")
            else f"the command {self.command.upper()}"
        )
        return (
            f"Redis refused {what} to the user {self.user}{script} ({times}{where}): NOPERM, its ACL "
            f"does not allow it: a deployment bug or an intrusion"
        )


def denials(entries: list[Any]) -> list[Denial]:
    """The ACL LOG reply (redis-py's acl_log: dicts) as denials, oldest first."""
    out = []
    for e in entries:
        d = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in dict(e).items()}
        info = d.get("client-info") or {}
        if not isinstance(info, dict):
            info = dict(kv.split("=", 1) for kv in _text(info).split() if "=" in kv)
        obj, reason = _text(d.get("object", "")), _text(d.get("reason", ""))
        cmd = obj if reason == "command" else "auth" if reason == "auth" else _text(info.get("cmd", "")) or obj
        user, context = _text(d.get("username", "")), _text(d.get("context", ""))
        entry = (
            f"{_text(d['entry-id'])}:{_text(d.get('timestamp-created', ''))}"
            if "entry-id" in d
            else f"{user}|{reason}|{obj}|{context}"
        )  # a server before 7.2: its entries have no id
        key = obj if reason in ("key", "channel") else ""
        out.append(
            Denial(
                user=user,
                reason=reason,
                command=cmd.lower(),
                key=key,
                context=context,
                count=int(d.get("count", 1) or 1),
                entry=entry,
                addr=_text(info.get("addr", "")),
            )
        )
    return list(reversed(out))


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def active_denials(r: Any) -> list[str]:
    """The messages of the active ACL denial alerts (what the console shows), newest first."""
    from backend.bus.entries import decode_value
    from backend.messages import Alert

    alerts = [decode_value(v, Alert) for v in r.hvals(ALERTS_ACTIVE)]
    got = sorted((a for a in alerts if a is not None and a.kind == DENIAL), key=lambda a: -a.ts_ns)
    return [a.message for a in got]


def has_secret_files(data_dir: Path) -> bool:
    return (Path(data_dir) / sec.DIR / "redis").is_dir()


def local_passwords(data_dir: Path, settings: Any = None) -> dict[str, str | None]:
    """Every generated user's password as the provider finds it (no process-wide override)."""
    return passwords(store(data_dir, settings), list(accesses()), create=False)
