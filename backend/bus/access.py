"""What a client of the bus may do: a service's declared reads, writes, keys, scripts and keyless
commands (`Access`), and the Redis ACL rules that grant exactly that (`Access.rules`).

A service declares, on its class (backend/services/base.py):

- `reads`: `Reads(stream, group=True)` for a stream it consumes in its consumer group (XREADGROUP,
  XACK, XAUTOCLAIM, XCLAIM, XPENDING, XINFO GROUPS/CONSUMERS, XGROUP CREATE: they all need write
  access to the stream) and whose dead letters it writes (`dlq.<stream>`: XADD, XLEN);
  `Reads(stream)` for one it reads whole (XREAD, XRANGE, XREVRANGE, XLEN, XINFO STREAM: read only);
- `writes`: `Writes(stream)`, a stream it appends to (XADD only: never a read of it);
- `keys`: `Keys(pattern)` it reads, `Keys(pattern, write=True)` it reads and changes (strings,
  hashes, sets, sorted sets, lists, expiry, WATCH);
- `scripts`: `Scripts(keys...)`, the key patterns its server-side scripts name as KEYS (EVALSHA
  checks those for read and write; every command a script runs is checked again on its own keys);
- `commands`: keyless commands beyond the connection's (INFO, SCAN, ACL LOG ...).

Streams and keys are names or glob patterns (`dlq.*`, `health:oms:*`).

The rules (Redis 7 selectors): the root of the user has no keys and only the connection's
commands (`+@connection -@dangerous`: AUTH, HELLO, PING, CLIENT SETNAME/SETINFO, WAITAOF ...) and
MULTI/EXEC; each kind of access is a selector of its own, its commands on its keys only, so a
consumer of a stream cannot XADD to it, a reader cannot write, a writer cannot read. A command is
allowed when one selector allows it on every key it names.

Consumer groups are not keys: Redis checks a command's keys, never its group (redis/redis#13381),
so a user that may consume a stream could XREADGROUP it under any group name. What keeps one
service out of another's group is that every stream consumed in groups is consumed by exactly one
service (one Redis user; the legacy and the target instances of a service share it): another
service's group always lives on a stream the service has no key rights on, and XREADGROUP (XACK,
XCLAIM ...) there is NOPERM. A second service that needs every entry of a stream consumes a copy
of its own (backend/bus/streams.py `COPIES`: exec.reports -> exec.reports.ptrc), which the
producer's publish writes with each entry in one MULTI (backend/bus/publish.py); a `Writes` of a
stream (and a `Trims`) grants the same on its copies, so the producer's user may write them.
`backend/bus/acl.py` refuses to generate users when two of them consume one stream in groups
(`one_consumer_per_stream`). A consumer may create its group on its own stream (XGROUP CREATE,
at setup) but never destroy, move or edit a group (XGROUP DESTROY, SETID, CREATECONSUMER,
DELCONSUMER are not granted: the admin's).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

from redis.exceptions import NoPermissionError, RedisError

from backend.bus import partitions, streams


class Reads(NamedTuple):
    stream: str
    """A stream (or a glob pattern of streams)."""
    group: bool = False
    """True: consumed in the service's consumer group; False: read whole (broadcast, history)."""


class Writes(NamedTuple):
    stream: str
    """A stream (or glob pattern) appended to with XADD."""


class Trims(NamedTuple):
    stream: str
    """A stream (or glob pattern) trimmed with XTRIM (the archive of the control-plane logs)."""


class Keys(NamedTuple):
    pattern: str
    """A key or glob pattern of keys (not streams)."""
    write: bool = False
    """False: read only; True: read and change."""


class Scripts(NamedTuple):
    keys: tuple[str, ...]
    """The key patterns a server-side script of the service names as KEYS."""


T = TypeVar("T")

# what each kind of access may run (lower case, as ACL rules name them)
CONNECTION = ("-@all", "+@connection", "-@dangerous", "+multi", "+exec", "+discard", "+unwatch")
GROUP_COMMANDS = (
    "xreadgroup",
    "xack",
    "xautoclaim",
    "xclaim",
    "xpending",
    "xinfo|groups",
    "xinfo|consumers",
    "xgroup|create",
)
DLQ_COMMANDS = ("xadd", "xlen")
STREAM_READ = ("xread", "xrange", "xrevrange", "xlen", "xinfo|stream")
STREAM_WRITE = ("xadd",)
STREAM_TRIM = ("xtrim",)
KEY_READ = (
    "get",
    "exists",
    "hget",
    "hmget",
    "hgetall",
    "hkeys",
    "hvals",
    "hexists",
    "hlen",
    "smembers",
    "sismember",
    "scard",
    "lrange",
    "llen",
    "zscore",
    "zcard",
    "zrange",
    "watch",
)
KEY_WRITE = (
    "set",
    "del",
    "expire",
    "incr",
    "incrby",
    "hset",
    "hsetnx",
    "hdel",
    "hincrby",
    "hincrbyfloat",
    "sadd",
    "srem",
    "rpush",
    "rpop",
    "zadd",
    "zrem",
    "zremrangebyscore",
    "pexpire",
)
SCRIPT_RUN = ("evalsha", "eval")


class Selector(NamedTuple):
    """One selector of a user: `commands` allowed on `keys` (ACL key patterns with their
    `~` / `%R~` / `%W~` prefix)."""

    what: str
    keys: tuple[str, ...]
    commands: tuple[str, ...]

    def rule(self) -> str:
        """The selector as ACL SETUSER takes it: `(~a %R~b -@all +cmd ...)`."""
        return "(" + " ".join([*self.keys, "resetchannels", "-@all", *(f"+{c}" for c in self.commands)]) + ")"


class Access(NamedTuple):
    """Everything one client may do on the bus."""

    reads: tuple[Reads, ...] = ()
    writes: tuple[Writes, ...] = ()
    keys: tuple[Keys, ...] = ()
    scripts: tuple[Scripts, ...] = ()
    commands: tuple[str, ...] = ()
    trims: tuple[Trims, ...] = ()
    read_all: bool = False
    """Read every key and stream (the @read commands on `%R~*`): the operator."""

    def __add__(self, other: object) -> Access:
        if not isinstance(other, Access):
            return NotImplemented
        return Access(
            reads=_merge(self.reads, other.reads),
            writes=_merge(self.writes, other.writes),
            keys=_merge(self.keys, other.keys),
            scripts=_merge(self.scripts, other.scripts),
            commands=_merge(self.commands, other.commands),
            trims=_merge(self.trims, other.trims),
            read_all=self.read_all or other.read_all,
        )

    # -- what is declared ------------------------------------------------------------------------
    def consumed(self) -> list[str]:
        return [r.stream for r in self.reads if r.group]

    def followed(self) -> list[str]:
        return [r.stream for r in self.reads if not r.group]

    def may_consume(self, stream: str) -> bool:
        return _matches(stream, self.consumed())

    def may_follow(self, stream: str) -> bool:
        return _matches(stream, self.followed())

    def written(self) -> list[str]:
        """The streams it appends to, and their copies (written with each entry)."""
        return _with_copies(w.stream for w in self.writes)

    def trimmed(self) -> list[str]:
        """The streams it trims, and their copies (trimmed alike)."""
        return _with_copies(t.stream for t in self.trims)

    def may_write(self, stream: str) -> bool:
        return _matches(stream, self.written())

    # -- the ACL rules -----------------------------------------------------------------------------
    def selectors(self) -> list[Selector]:
        out: list[Selector] = []
        consumed = self.consumed()
        if consumed:
            out.append(Selector("consumes", _streams("~", consumed), GROUP_COMMANDS))
            out.append(Selector("dead letters", _streams("~", [streams.dlq(s) for s in consumed]), DLQ_COMMANDS))
        if self.followed():
            out.append(Selector("reads", _streams("%R~", self.followed()), STREAM_READ))
        if self.writes:
            out.append(Selector("writes", _streams("%W~", self.written()), STREAM_WRITE))
        if self.trims:
            out.append(Selector("trims", _keys("%W~", self.trimmed()), STREAM_TRIM))
        ro = [k.pattern for k in self.keys if not k.write]
        rw = [k.pattern for k in self.keys if k.write]
        if ro:
            out.append(Selector("reads keys", _keys("%R~", ro), KEY_READ))
        if rw:
            out.append(Selector("changes keys", _keys("~", rw), KEY_READ + KEY_WRITE))
        script_keys = [k for s in self.scripts for k in s.keys]
        if script_keys:
            out.append(Selector("runs scripts on", _streams("~", script_keys), SCRIPT_RUN))
        return out

    def root(self) -> tuple[str, ...]:
        """The user's root rules: the connection's commands, MULTI/EXEC, SCRIPT LOAD when it runs
        scripts, and its keyless commands."""
        extra = ["script|load"] if self.scripts else []
        conn = CONNECTION if not self.read_all else (*CONNECTION[:2], "+@read", *CONNECTION[2:], "+watch")
        return (*conn, *(f"+{c}" for c in dict.fromkeys([*extra, *self.commands])))

    def rules(self) -> list[str]:
        """The ACL SETUSER rules after `on` and the password: the root's keys (none, or every key to
        read), its commands, then one selector per kind of access."""
        keys = ["%R~*"] if self.read_all else []
        return ["resetkeys", *keys, "resetchannels", *self.root(), *(s.rule() for s in self.selectors())]

    def summary(self) -> str:
        """One line in words: what it consumes, reads, writes, which keys."""
        parts = []
        for label, names in (
            ("consumes", self.consumed()),
            ("reads", self.followed()),
            ("writes", self.written()),
            ("trims", self.trimmed()),
            ("reads keys", [k.pattern for k in self.keys if not k.write]),
            ("changes keys", [k.pattern for k in self.keys if k.write]),
            ("scripts on", [k for s in self.scripts for k in s.keys]),
            ("commands", list(self.commands)),
        ):
            if names:
                parts.append(f"{label} {', '.join(dict.fromkeys(names))}")
        return "; ".join(parts)


def _merge(a: tuple[T, ...], b: tuple[T, ...]) -> tuple[T, ...]:
    return tuple(dict.fromkeys([*a, *b]))


def _keys(prefix: str, names: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}" for n in dict.fromkeys(names))


def _streams(prefix: str, names: Iterable[str]) -> tuple[str, ...]:
    """Streams' key patterns: each stream, and the partitions of one that may be partitioned
    (`md.ticks.raw:{p3of4}`: backend/bus/partitions.py)."""
    out = []
    for n in dict.fromkeys(names):
        out.append(n)
        if partitions.partitionable(n.removeprefix(streams.DLQ_PREFIX)):
            out.append(f"{n}:{{p*}}")
    return _keys(prefix, out)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """`name` (a stream, or a partition of one) is one of `patterns` or matches one."""
    base = partitions.split(name)[0]
    return any(n == p or fnmatch.fnmatchcase(n, p) for p in patterns for n in {name, base})


def _with_copies(names: Iterable[str]) -> list[str]:
    """`names` (streams or patterns), each followed by the copies of the streams it names."""
    out: list[str] = []
    for n in names:
        out.append(n)
        out += [c for s in streams.COPIES if _matches(s, [n]) for c in streams.copies(s)]
    return list(dict.fromkeys(out))


def overlap(a: str, b: str) -> bool:
    """Whether two stream names or glob patterns can name one stream (as far as a glob tells)."""
    return a == b or fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a)


def base(service: str) -> Access:
    """What every service does: its heartbeat (the hash `health:<service>:<instance>`, read back
    by the other instances of the service, and ops.health)."""
    return Access(
        writes=(Writes(streams.OPS_HEALTH),),
        keys=(Keys(streams.HEALTH_KEY.format(service=service, instance="*"), write=True),),
    )


def leased(service: str, reads: Iterable[Reads]) -> Access:
    """The leases of a service that consumes a stream that may be partitioned (backend/bus/
    leases.py): its membership and its partitions' leases; nothing for the others."""
    if not any(r.group and partitions.partitionable(r.stream) for r in reads):
        return Access()
    return Access(
        keys=(Keys(f"lease:{service}:*", write=True), Keys(f"members:{service}", write=True)),
        scripts=(Scripts((f"lease:{service}:*",)),),
    )


def denied(exc: BaseException | None) -> NoPermissionError | None:
    """The NOPERM error (the ACL refused a command) behind `exc`: itself, its cause or context."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, NoPermissionError):
            return exc
        if isinstance(exc, RedisError) and str(exc).startswith("NOPERM"):
            return NoPermissionError(str(exc))
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
