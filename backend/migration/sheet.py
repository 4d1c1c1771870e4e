"""One service's sheet, as the plan documents a service: purpose, ports, dependencies
(infrastructure, services, external), configuration, environment variables, secrets, data flows,
CPGS lanes, complexity, testing requirements and known issues.

What the inventory says (purpose, lanes, dependencies, testing, known issues) is put beside what
the code declares, read from the service's class, so that part cannot drift from the code:

- data flows: its `reads` / `writes` / `keys` / `scripts` / `trims` (backend/bus/access.py, the
  same declarations its Redis user is made from), each stream with its consumer group and the
  services (and the operator's console and CLI) on the other side, from their declarations;
- configuration: the fields of its `Config` struct (name, type, default, the field's docstring),
  set in `[services.<name>]` of the config file;
- secrets: its Redis password and what its class declares in `secrets`;
- environment variables: those every service reads, and those of its secrets.

`sheet(name)` builds it (plain values); `sections(sheet)` is the same as headed lines, which
`tradeops inventory show NAME` prints and the migration board shows."""

from __future__ import annotations

import ast
import fnmatch
import inspect
import textwrap
from functools import cache
from typing import Any

import msgspec

from backend import secrets as sec
from backend.migration import inventory

OPERATOR = "operator (console, CLI)"
COMMON_ENV = (
    ("TRADEOPS_REDIS_URL", "the bus's Redis (unset: the data dir's embedded one)"),
    ("TRADEOPS_DATA_DIR", "the data dir (stores, secrets, logs)"),
    ("TRADEOPS_CONFIG", "the config file whose [services.<name>] section is checked by Config"),
    ("TRADEOPS_ENVIRONMENT", "legacy or target (the runtimes pass --environment)"),
    ("TRADEOPS_REDIS_USER", "its Redis user (set by the runtimes: the service's name)"),
    ("TRADEOPS_REDIS_PASSWORD_FILE", "the file holding that user's password (or TRADEOPS_REDIS_PASSWORD)"),
)


class Flow(msgspec.Struct, frozen=True):
    stream: str
    how: str
    """consumes (in its consumer group) / reads (whole) / writes / trims / dead letters."""
    group: str | None
    """The consumer group (consumes: the service's name)."""
    peers: list[str]
    """Who is on the other side: the writers of what it reads, the readers of what it writes."""


class KeyUse(msgspec.Struct, frozen=True):
    pattern: str
    how: str
    """reads / changes / scripts on."""


class ConfigKey(msgspec.Struct, frozen=True):
    name: str
    type: str
    default: str
    doc: str


class Sheet(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    priority: int
    task: str
    purpose: str
    port: int
    lanes: list[str]
    level: int
    complexity: str
    risk: str
    hours: float
    sla: dict[str, float]
    infra: list[str]
    needs: list[str]
    needed_by: list[str]
    migrate_after: list[str]
    migrate_before: list[str]
    external: list[str]
    config_section: str
    config: list[ConfigKey]
    env: list[tuple[str, str]]
    secrets: list[tuple[str, str]]
    """(secret name, the variable that may hold it)."""
    flows: list[Flow]
    keys: list[KeyUse]
    testing: list[str]
    known_issues: list[str]


def _overlap(a: str, b: str) -> bool:
    """Two stream names or glob patterns name a common stream."""
    return a == b or fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a)


@cache
def _declared() -> dict[str, Any]:
    """Every service's class (and the operator's access), from the registry."""
    from backend.services import service_class

    return {s.name: service_class(s.name) for s in inventory.load().services}


def _writers(stream: str, but: str) -> list[str]:
    from backend.bus.acl import OPERATOR_ACCESS

    out = [n for n, c in _declared().items() if n != but and any(_overlap(stream, w.stream) for w in c.writes)]
    return out + ([OPERATOR] if any(_overlap(stream, w.stream) for w in OPERATOR_ACCESS.writes) else [])


def _readers(stream: str, but: str) -> list[str]:
    out = []
    for n, c in _declared().items():
        for r in c.reads:
            if n != but and _overlap(stream, r.stream):
                out.append(f"{n} (group {n})" if r.group else f"{n} (whole)")
    return list(dict.fromkeys(out))


def flows(name: str) -> list[Flow]:
    """The streams `name` consumes, reads, writes and trims, from its class's declarations."""
    from backend.bus import streams

    cls = _declared()[name]
    out = [
        Flow(r.stream, "consumes" if r.group else "reads", name if r.group else None, _writers(r.stream, name))
        for r in cls.reads
    ]
    out += [Flow(streams.dlq(r.stream), "dead letters", None, []) for r in cls.reads if r.group]
    out += [Flow(w.stream, "writes", None, _readers(w.stream, name)) for w in cls.writes]
    out += [Flow(t.stream, "trims", None, []) for t in cls.trims]
    return out


def keys(name: str) -> list[KeyUse]:
    cls = _declared()[name]
    out = [KeyUse(k.pattern, "changes" if k.write else "reads") for k in cls.keys]
    return out + [KeyUse(k, "scripts on") for s in cls.scripts for k in s.keys]


def config_keys(struct: type[msgspec.Struct]) -> list[ConfigKey]:
    """The fields of a Config struct: name, type (as written), default, the docstring under it."""
    docs, types = _field_source(struct)
    out = []
    for f in msgspec.structs.fields(struct):
        if f.default is not msgspec.NODEFAULT:
            default = repr(f.default)
        elif f.default_factory is not msgspec.NODEFAULT:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        if len(default) > 60:
            default = default[:57] + "..."
        out.append(ConfigKey(f.name, types.get(f.name, str(f.type)), default, docs.get(f.name, "")))
    return out


def _field_source(struct: type) -> tuple[dict[str, str], dict[str, str]]:
    """field -> its docstring, field -> its annotation, read from the class's source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(struct)))
    except (OSError, TypeError, SyntaxError):
        return {}, {}
    docs: dict[str, str] = {}
    types: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for prev, node in zip([None, *body], body, strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            types[node.target.id] = ast.unparse(node.annotation)
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs, types


def secrets_of(name: str) -> list[sec.Secret]:
    """Its Redis password, then the secrets its class declares."""
    return [sec.redis_password(name), *_declared()[name].secrets]


def env_of(name: str, spec: inventory.ServiceSpec) -> list[tuple[str, str]]:
    out = [(k, v.replace("<name>", name)) for k, v in COMMON_ENV]
    for s in _declared()[name].secrets:
        out.append((f"{s.env} / {s.env}_FILE", f"secret {s.name} (its value, or the file holding it)"))
    if "vault" in spec.infra:
        out.append(("VAULT_TOKEN / VAULT_TOKEN_FILE", "Vault's token, when infra.vault is configured"))
    return out


def sheet(name: str) -> Sheet:
    """`name`'s whole sheet (an unknown name: InventoryError naming the known ones)."""
    inv = inventory.load()
    spec = inv.service(name)
    cls = _declared()[name]
    return Sheet(
        name=name,
        priority=spec.priority,
        task=spec.task,
        purpose=spec.purpose,
        port=spec.port,
        lanes=list(spec.lanes),
        level=inv.level_of()[name],
        complexity=spec.complexity,
        risk=spec.risk,
        hours=spec.hours,
        sla=dict(spec.sla),
        infra=list(spec.infra),
        needs=list(spec.needs),
        needed_by=inv.needed_by(name),
        migrate_after=list(spec.migrate_after),
        migrate_before=inv.migrate_before(name),
        external=list(spec.external),
        config_section=f"[services.{name}]",
        config=config_keys(cls.Config),
        env=env_of(name, spec),
        secrets=[(s.name, s.env) for s in secrets_of(name)],
        flows=flows(name),
        keys=keys(name),
        testing=list(spec.testing),
        known_issues=list(spec.known_issues),
    )


def sections(sh: Sheet, states: dict[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """The sheet as (heading, lines); `states`: the services' migration states, shown beside the
    services it is migrated after (the migration board)."""

    def st(names: list[str]) -> str:
        if not names:
            return "none"
        return ", ".join(f"{n} ({states.get(n, 'planned')})" if states is not None else n for n in names)

    sla = ", ".join(f"{k} {v:g}" for k, v in sh.sla.items())
    flows = [
        f"{f.how} {f.stream}"
        + (f" in group {f.group}" if f.group else "")
        + (f" {'from' if f.how in ('consumes', 'reads') else 'to'} {', '.join(f.peers)}" if f.peers else "")
        for f in sh.flows
    ]
    flows += [f"{k.how} key {k.pattern}" for k in sh.keys]
    flows.append(f"heartbeat ops.health, health:{sh.name}:<instance>")
    return [
        (
            "Overview",
            [
                sh.purpose,
                f"P{sh.priority} · {sh.task} · dependency level {sh.level} · complexity {sh.complexity} · "
                f"risk {sh.risk} · {sh.hours:g} h" + (f" · SLA {sla}" if sla else ""),
                f"port {sh.port} · lanes {', '.join(sh.lanes)}",
            ],
        ),
        (
            "Dependencies",
            [
                f"infrastructure: {', '.join(sh.infra) or 'none'}",
                f"needs at run time: {', '.join(sh.needs) or 'none'}",
                f"needed by: {', '.join(sh.needed_by) or 'none'}",
                f"migrated after: {st(sh.migrate_after)}",
                f"migrated before: {st(sh.migrate_before)}",
                f"external: {'; '.join(sh.external) or 'none'}",
            ],
        ),
        ("Data flows (declared in code)", flows),
        (
            f"Configuration {sh.config_section}",
            [f"{c.name}: {c.type} = {c.default}" + (f"  {c.doc}" if c.doc else "") for c in sh.config] or ["none"],
        ),
        ("Environment variables", [f"{k}: {v}" for k, v in sh.env]),
        ("Secrets", [f"{n} ({env}, {env}_FILE, Vault, or the data dir's secrets)" for n, env in sh.secrets]),
        ("Testing requirements", sh.testing or ["none recorded"]),
        ("Known issues", sh.known_issues or ["none recorded"]),
    ]


def all_sections() -> dict[str, list[tuple[str, list[str]]]]:
    """Every service's sheet as (heading, lines), in migration order (the console's board)."""
    return {name: sections(sheet(name)) for name in inventory.load().order()}


def text(sh: Sheet) -> str:
    """The sheet as plain text (what `tradeops inventory show NAME` prints)."""
    lines = [f"{sh.name}"]
    for head, body in sections(sh):
        lines += ["", head] + [f"  {x}" for x in body]
    return "\n".join(lines) + "\n"
