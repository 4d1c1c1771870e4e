"""The control-plane logs kept whole (streams.archived(): ops.gates, ops.migration, ops.operators,
ops.control, models.events).

Their writers never trim them; instead, entries older than a kept window are archived to the data
dir and only then trimmed, so the live stream stays within its memory budget and nothing the
control plane must keep (the audit chain, the migration history, the registry's trail) is lost.

Files: `<data dir>/archive/<stream>/<YYYY-MM-DD>.jsonl`, the UTC day of each entry's id, one JSON
object a line, oldest first:

    {"id": "1712345678901-0", "fields": {"d": "<base64>"}, "msg": {"_t": "gate_event.v1", ...}}

`fields` is the entry exactly as it was (each value base64): what readers decode. `msg` is the
payload decoded, for a person with `jq` (null when it does not decode).

Archive, then trim (`archive`):
1. the entries after the newest one archived that are older than `keep_s`, or beyond the newest
   `keep` (the stream's budget in entries); the newest entry always stays live (writers chain on it);
2. are appended to their day's file, flushed and fsynced (the file, then its directory);
3. then, in one MULTI, XTRIM MINID just past the last entry archived, and the record
   `archive:<stream>` (a hash: dir, last_id, entries) by which readers find the archive.
A crash between 2 and 3 leaves entries both archived and live: the next run starts after the newest
archived line, and readers skip live entries at or before it. A line torn by a crash in 2 is cut
off before the next append (its entry is still live, so it is archived again).

Reading (`history`): the archived entries, then the live ones after them, as one list of
(id, fields) like XRANGE's. A reader that needs a log whole (the gate state, the audit chain, the
migration board) reads it this way. An archive that the record names but that cannot be read, or
holds less than the record says, is an error naming the directory, never a silently shorter log.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from backend import locations
from backend.bus import codec, streams
from backend.errors import TradeopsError

KEY = "archive:{}"
KEEP_S = 7 * 86400
"""How long an entry stays live before it may be archived (it goes sooner when the stream is over
its budget in entries)."""
CHUNK = 1000

Entry = tuple[bytes, dict[bytes, bytes]]


class ArchiveUnreadable(TradeopsError):
    """The archive of a log cannot be read, or holds less than was trimmed from the stream."""


class Line(msgspec.Struct):
    id: str
    fields: dict[str, bytes]
    msg: msgspec.Raw = msgspec.Raw(b"null")


_enc = msgspec.json.Encoder()
_line = msgspec.json.Decoder(Line)


@dataclass
class Archived:
    """What one run did to one stream."""

    stream: str
    archived: int = 0
    """Entries appended to the archive by this run."""
    trimmed: int = 0
    """Entries XTRIM removed from the stream."""
    last_id: str = ""
    """The newest entry archived (by this run or before)."""
    total: int = 0
    """Entries in the archive now."""
    files: list[str] = field(default_factory=list)
    """The files this run appended to."""


def key(stream: str) -> str:
    """The record of `stream`'s archive (where it is, up to which entry, how many)."""
    return KEY.format(stream)


def stream_dir(data_dir: Path, stream: str) -> Path:
    return locations.archive_dir(Path(data_dir)) / stream


def _ord(eid: bytes | str) -> tuple[int, int]:
    s = eid.decode() if isinstance(eid, bytes) else eid
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


def _after(eid: str) -> str:
    """The smallest id after `eid` (XTRIM MINID keeps ids at or above it)."""
    ms, seq = _ord(eid)
    return f"{ms}-{seq + 1}"


def _day(eid: bytes) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(_ord(eid)[0] / 1000))


# -- reading -----------------------------------------------------------------------------------

_cache: dict[str, tuple[int, int, list[Entry]]] = {}  # file -> (mtime_ns, size, its entries)


def _read_file(path: Path) -> list[Entry]:
    st = path.stat()
    hit = _cache.get(str(path))
    if hit is not None and hit[:2] == (st.st_mtime_ns, st.st_size):
        return hit[2]
    data = path.read_bytes()
    out: list[Entry] = []
    lines = data.split(b"\n")
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            ln = _line.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if n == len(lines):  # a torn last line (no newline yet): its entry is still live
                break
            raise ArchiveUnreadable(f"{path}:{n}: not an archive line: {exc}") from None
        out.append((ln.id.encode(), {k.encode(): v for k, v in ln.fields.items()}))
    _cache[str(path)] = (st.st_mtime_ns, st.st_size, out)
    return out


def read_dir(d: Path) -> list[Entry]:
    """Every entry archived in `d`, oldest first (an entry written twice is read once)."""
    out: list[Entry] = []
    last = (-1, -1)
    for path in sorted(d.glob("*.jsonl")):
        for e in _read_file(path):
            k = _ord(e[0])
            if k > last:
                out.append(e)
                last = k
    return out


def archived_entries(stream: str, record: dict[bytes, bytes] | None) -> list[Entry]:
    """The archived entries of `stream`, found by its record (`archive:<stream>`, as HGETALL
    returns it); [] when nothing was archived. ArchiveUnreadable when the archive is missing or
    holds less than the record says was archived."""
    if not record:
        return []
    d = Path(record[b"dir"].decode())
    last = record.get(b"last_id", b"").decode()
    want = int(record.get(b"entries", b"0"))
    try:
        entries = read_dir(d) if d.is_dir() else None
    except OSError as exc:
        raise ArchiveUnreadable(f"{stream}: its archive {d} cannot be read: {exc.strerror or exc}") from None
    if entries is None:
        raise ArchiveUnreadable(
            f"{stream}: {want} entries (up to {last}) were archived to {d} and trimmed "
            f"from the stream, but that directory is not there; restore it from a backup"
        )
    if len(entries) < want or (last and (not entries or _ord(entries[-1][0]) < _ord(last))):
        have = entries[-1][0].decode() if entries else "none"
        raise ArchiveUnreadable(
            f"{stream}: its archive {d} holds {len(entries)} entries (up to {have}), but "
            f"{want} (up to {last}) were archived and trimmed from the stream; restore "
            f"it from a backup"
        )
    return entries


def combine(stream: str, record: dict[bytes, bytes] | None, live: list[Entry]) -> list[Entry]:
    """The archived entries, then the live ones after them (`live`: XRANGE's reply, read in the
    same transaction as `record`, before the files are read)."""
    return join(archived_entries(stream, record), live)


def join(old: list[Entry], live: list[Entry]) -> list[Entry]:
    """Archived entries `old`, then the entries of `live` after them."""
    if not old:
        return list(live)
    last = _ord(old[-1][0])
    return old + [e for e in live if _ord(e[0]) > last]


def history(r: Any, stream: str) -> list[Entry]:
    """`stream` whole: its archived entries, then the live ones (a sync client)."""
    with r.pipeline(transaction=True) as pipe:
        pipe.xrange(stream)
        pipe.hgetall(key(stream))
        live, record = pipe.execute()
    return combine(stream, record, live)


def record(r: Any, stream: str) -> dict[bytes, bytes]:
    """The archive record of `stream` ({} when nothing was archived)."""
    return r.hgetall(key(stream))


# -- archiving ---------------------------------------------------------------------------------


def _repair(path: Path) -> None:
    """Cut a torn last line (a crash mid-append) so the next append starts on a line of its own."""
    with open(path, "rb+") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())
    _cache.pop(str(path), None)


def _last_archived(d: Path) -> str:
    files = sorted(d.glob("*.jsonl"))
    for path in files:
        _repair(path)
    for path in reversed(files):
        entries = _read_file(path)
        if entries:
            return entries[-1][0].decode()
    return ""


def _line_of(eid: bytes, fields: dict[bytes, bytes]) -> bytes:
    try:
        msg = msgspec.to_builtins(codec.decode_any(codec.payload(fields)))
    except (msgspec.DecodeError, msgspec.ValidationError):
        msg = None
    return (
        _enc.encode(
            {"id": eid.decode(), "fields": {k.decode(errors="replace"): v for k, v in fields.items()}, "msg": msg}
        )
        + b"\n"
    )


def _append(d: Path, entries: list[Entry]) -> list[str]:
    """Append `entries` to their days' files, fsynced, and the directory fsynced; the files."""
    by_day: dict[str, list[bytes]] = {}
    for eid, fields in entries:
        by_day.setdefault(_day(eid), []).append(_line_of(eid, fields))
    written = []
    for day, lines in by_day.items():
        path = d / f"{day}.jsonl"
        with open(path, "ab") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        written.append(str(path))
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


async def archive(
    r: Any, stream: str, data_dir: Path, *, keep_s: float = KEEP_S, keep: int | None = None, now_ms: int | None = None
) -> Archived:
    """Archive `stream`'s entries older than `keep_s` seconds, or beyond its newest `keep` (default:
    its budget in entries), to `<data dir>/archive/<stream>/`, then trim them from the stream (an
    async client). The newest entry always stays. One archiver at a time per stream (a file lock)."""
    d = stream_dir(data_dir, stream)
    d.mkdir(parents=True, exist_ok=True)
    keep = max(1, streams.budget(stream).maxlen if keep is None else keep)
    cutoff = (int(time.time() * 1000) if now_ms is None else now_ms) - int(keep_s * 1000)
    lock = await asyncio.to_thread(open, d / ".lock", "ab")  # held for the whole run, closed below
    try:
        await asyncio.to_thread(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
        return await _archive(r, stream, d, keep, cutoff)
    finally:
        lock.close()  # releases the lock


async def _archive(r: Any, stream: str, d: Path, keep: int, cutoff_ms: int) -> Archived:
    out = Archived(stream)
    rec = await r.hgetall(key(stream))
    last = await asyncio.to_thread(_last_archived, d)
    if rec:
        where = rec[b"dir"].decode()
        if where != str(d.resolve()):
            raise ArchiveUnreadable(
                f"{stream} is archived to {where}, not to {d}: archive it with the data dir it belongs to"
            )
        if not last or _ord(last) < _ord(rec.get(b"last_id", b"0-0")):
            archived_entries(stream, rec)  # raises, naming what is missing
    length = await r.xlen(stream)
    by_count = max(0, length - keep)  # the oldest this many go whatever their age
    i = 0
    lo = "-"
    done = False
    while not done:
        part = await r.xrange(stream, lo, "+", count=CHUNK)
        if not part:
            break
        batch: list[Entry] = []
        for eid, fields in part:
            if i >= length - 1 or (i >= by_count and _ord(eid)[0] >= cutoff_ms):
                done = True  # the newest stays, and so does what is recent and within the budget
                break
            i += 1
            if last and _ord(eid) <= _ord(last):
                continue  # archived by a run that stopped before trimming
            batch.append((eid, fields))
        if batch:
            out.files += [f for f in await asyncio.to_thread(_append, d, batch) if f not in out.files]
            out.archived += len(batch)
            last = batch[-1][0].decode()
        lo = "(" + part[-1][0].decode()
        if len(part) < CHUNK:
            break
    out.last_id = last
    if not last:
        return out
    out.total = len(await asyncio.to_thread(read_dir, d))
    async with r.pipeline(transaction=True) as pipe:
        pipe.xtrim(stream, minid=_after(last), approximate=False)
        pipe.hset(key(stream), mapping={"dir": str(d.resolve()), "last_id": last, "entries": out.total})
        out.trimmed, _ = await pipe.execute()
    return out


async def archive_all(r: Any, data_dir: Path, *, keep_s: float = KEEP_S) -> list[Archived]:
    """Archive, then trim, every control-plane log (streams.archived())."""
    return [await archive(r, s, data_dir, keep_s=keep_s) for s in streams.archived()]
