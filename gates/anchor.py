"""The audit chain anchored outside Redis: signed checkpoints of every signed operator log (entry
count and head hash of ops.gates, ops.operators, ops.migration and ops.control, the registry's root
key, the time), written to the data dir on every operator action and on demand (`tradeops audit
anchor`), and to the further places the settings name (`anchor_to`: directories; a git work tree
gets each checkpoint committed).

ops.gates and ops.operators are hash chains (each entry names the previous one's hash); the moves
(ops.migration) and the kill switch toggles (ops.control) are signed one by one but not chained,
so their anchor is a running hash of their entries (`running`: each entry's hash covers the
SHA-256 of its payload and the previous running hash): the head covers the whole log, and the
first entry whose running hash differs is the first entry that was removed or rewritten.

A place holds `checkpoints.jsonl` (one signed checkpoint a line, namespace anchor@tradeops) and,
per log, `<log>.hashes` (entry id and hash, one a line, in log order: what the log was when it was
anchored). Someone with Redis access can rewrite the logs and their heads but not the files nor
the signatures: `check` says whether the live logs extend the last checkpoint, naming the first
entry that differs, or how many were removed. A checkpoint is written only when the live logs
extend the anchored ones, so a tampered log is never anchored."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from backend.bus import codec, streams
from backend.errors import TradeopsError
from gates import chained, signing
from gates.operators import Registry, Trust, when
from gates.signing import Signer

CHECKPOINTS = "checkpoints.jsonl"
LOGS = {
    streams.OPS_GATES: "gates",
    streams.OPS_OPERATORS: "operators",
    streams.OPS_MIGRATION: "migration",
    streams.OPS_CONTROL: "control",
}
SEALED = (streams.OPS_MIGRATION, streams.OPS_CONTROL)
"""The signed logs whose entries are not hash-chained: anchored by their running hash."""

Chain = list[tuple[str, str]]  # (entry id, hash) in log order


def entry_bytes(fields: Mapping[Any, Any]) -> bytes:
    """What an entry of a sealed log is, for its hash: its payload, or (an entry without one)
    every field, sorted."""
    data = fields.get(codec.FIELD, fields.get(codec.FIELD_STR))
    if isinstance(data, bytes):
        return data
    return b"\n".join(
        (k if isinstance(k, bytes) else str(k).encode()) + b"=" + (v if isinstance(v, bytes) else str(v).encode())
        for k, v in sorted(fields.items(), key=lambda kv: str(kv[0]))
    )


def running(items: Iterable[tuple[str, bytes]]) -> Chain:
    """(entry id, running hash) of a sealed log's entries (id, entry_bytes) in log order."""
    out: Chain = []
    h = ""
    for eid, data in items:
        h = hashlib.sha256(f"{h}:{hashlib.sha256(data).hexdigest()}".encode()).hexdigest()
        out.append((eid, h))
    return out


class AnchorError(TradeopsError):
    """The live logs do not extend the anchored ones (or a place cannot be written)."""


class Checkpoint(msgspec.Struct, kw_only=True):
    counts: dict[str, int]  # log -> entries
    heads: dict[str, str]  # log -> hash of its newest entry
    root: str  # the registry's first lead's key
    ts_ns: int
    signer: str = ""
    nonce: str = ""
    sig: str = ""


def places(data_dir: Path, anchor_to: list[str] | None = None) -> list[Path]:
    return [Path(data_dir) / "anchor", *(Path(p).expanduser() for p in anchor_to or [])]


def message(cp: Checkpoint) -> bytes:
    return chained.signed_message(cp)


def read_checkpoints(place: Path) -> list[Checkpoint]:
    f = place / CHECKPOINTS
    if not f.is_file():
        return []
    out = []
    for ln in f.read_text().splitlines():
        if ln.strip():
            try:
                out.append(msgspec.json.decode(ln, type=Checkpoint))
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue
    return out


def read_hashes(place: Path, log: str) -> Chain:
    f = place / f"{LOGS[log]}.hashes"
    if not f.is_file():
        return []
    out = []
    for ln in f.read_text().splitlines():
        parts = ln.split()
        if len(parts) == 2:
            out.append((parts[0], parts[1]))
    return out


@dataclass
class Finding:
    """What one place says of the live logs: ok, or the problem (naming the first entry that differs)."""

    place: Path
    ok: bool
    text: str
    entry: str | None = None


def compare(log: str, live: Chain, anchored: Chain) -> tuple[str, str | None]:
    """The first difference between the live log and the anchored one ("" when the live one
    extends it), and the id of the entry it names."""
    name = LOGS[log]
    for i, (eid, h) in enumerate(anchored):
        if i >= len(live):
            return (
                f"{log}: {len(anchored) - len(live)} entries removed: the live log has {len(live)}, the anchor "
                f"has {len(anchored)}; the first missing is entry {i + 1} ({eid})",
                eid,
            )
        if live[i][1] != h:
            later = next((j for j in range(i + 1, len(anchored)) if anchored[j][0] == live[i][0]), None)
            if later is not None:  # the live log goes on at a later anchored entry: the ones before it cut
                return (
                    f"{log}: {later - i} entries removed before entry {later + 1} ({live[i][0]}); the first "
                    f"missing is entry {i + 1} ({eid}) of the anchored {name} log",
                    eid,
                )
            how = "rewritten" if live[i][0] == eid else "removed or replaced"
            return (
                f"{log}: entry {i + 1} differs from the anchored {name} log: anchored {eid} {h[:16]}, live "
                f"{live[i][0]} {live[i][1][:16]} ({how} after it was anchored)",
                eid,
            )
    return "", None


def check(chains: dict[str, Chain], registry: Registry, where: list[Path]) -> list[Finding]:
    """Each place's last checkpoint against the live logs: its signature (by a key of the
    registry valid then), the hash lists it seals, and that the live logs extend them."""
    out = []
    for place in where:
        cps = read_checkpoints(place)
        if not cps:
            out.append(Finding(place, True, f"{place}: no checkpoint yet"))
            continue
        cp = cps[-1]
        t = judge(cp, registry)
        if not t.ok:
            out.append(
                Finding(place, False, f"{place}: the last checkpoint ({when(cp.ts_ns)}) is not validly signed: {t.why}")
            )
            continue
        if cp.root != registry.root:
            out.append(
                Finding(
                    place,
                    False,
                    f"{place}: the registry's first lead is {registry.root or 'none'}, "
                    f"the anchor says {cp.root}: the registry was re-initialised",
                )
            )
            continue
        problem, entry = "", None
        for log in LOGS:
            if log not in chains:  # an export from before the log was anchored
                continue
            anchored = read_hashes(place, log)[: cp.counts.get(log, 0)]
            n = cp.counts.get(log, 0)
            if len(anchored) != n or (n and anchored[-1][1] != cp.heads.get(log)):
                problem = f"{log}: the anchored hash list does not match its signed checkpoint ({n} entries)"
                break
            problem, entry = compare(log, chains.get(log, []), anchored)
            if problem:
                break
        by = f"checkpoint of {when(cp.ts_ns)} signed by {t.name}"
        if problem:
            out.append(Finding(place, False, f"{place}: {problem} ({by})", entry))
        else:
            counts = ", ".join(f"{LOGS[k]} {v}" for k, v in cp.counts.items())
            out.append(Finding(place, True, f"{place}: the live logs extend the {by} ({counts} entries)"))
    return out


def judge(cp: Checkpoint, registry: Registry) -> Trust:
    return registry.judge(message(cp), cp.sig, cp.signer, cp.ts_ns, signing.NS_ANCHOR)


@contextmanager
def _locked(place: Path) -> Iterator[None]:
    place.mkdir(parents=True, exist_ok=True)
    with open(place / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write(chains: dict[str, Chain], registry: Registry, signer: Signer, where: list[Path]) -> Checkpoint:
    """A signed checkpoint of `chains` at every place, after checking the live logs extend what
    each place anchored (AnchorError naming the first difference when not)."""
    cp = Checkpoint(
        counts={k: len(v) for k, v in chains.items()},
        heads={k: v[-1][1] if v else "" for k, v in chains.items()},
        root=registry.root,
        ts_ns=time.time_ns(),
        signer=signer.fingerprint,
        nonce=signing.nonce(),
    )
    cp = msgspec.structs.replace(cp, sig=signer.sign(message(cp), signing.NS_ANCHOR))
    for place in where:
        try:
            with _locked(place):
                for log, live in chains.items():
                    anchored = read_hashes(place, log)
                    problem, _ = compare(log, live, anchored)
                    if problem:
                        raise AnchorError(f"not anchored at {place}: {problem}")
                    with open(place / f"{LOGS[log]}.hashes", "a") as f:
                        f.writelines(f"{eid} {h}\n" for eid, h in live[len(anchored) :])
                        f.flush()
                        os.fsync(f.fileno())
                with open(place / CHECKPOINTS, "a") as f:
                    f.write(msgspec.json.encode(cp).decode() + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            if (place / ".git").exists():
                _commit(place, cp)
        except OSError as exc:
            raise AnchorError(f"cannot write the anchor at {place}: {exc}") from None
    return cp


def _commit(place: Path, cp: Checkpoint) -> None:
    git = ["git", "-C", str(place), "-c", "user.name=tradeops", "-c", "user.email=tradeops@localhost"]
    subprocess.run(
        [*git, "add", CHECKPOINTS, *(f"{n}.hashes" for n in LOGS.values() if (place / f"{n}.hashes").exists())],
        capture_output=True,
        timeout=60,
        check=False,
    )
    counts = json.dumps(cp.counts)
    out = subprocess.run(
        [*git, "commit", "-q", "-m", f"tradeops anchor {when(cp.ts_ns)}: {counts}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0 and "nothing to commit" not in out.stdout + out.stderr:
        raise AnchorError(f"cannot commit the anchor in {place}: {out.stderr.strip() or out.stdout.strip()}")
