"""A console session on disk: every snapshot the console was shown, with the time it was taken,
so that `tradeops console --replay FILE` shows the operator exactly what they saw.

The file is a gzip stream (Python's own zlib; no zstd binding is in the environment) of frames,
each a 4-byte big-endian length and a msgpack map: a header first (`format`, `version`, `started`,
`source`), then one frame per snapshot, `t` (epoch seconds), `d`, the snapshot's fields that changed since
the frame before, whole, and `x`, the long lists and maps that changed, as edits of the frame
before (runs of its items and new ones; changed and removed keys). A keyframe (`k`, one in
KEYFRAME_EVERY) holds every field whole. The writer
flushes the compressor every FLUSH_S seconds, so a console that dies loses at most that much, and
the reader stops cleanly at a cut-off end.

`RecordingSource` wraps any ConsoleSource (the live one) and records what it hands the app;
`read` gives back the frames as `Recording`, which the player (console/data/player.py) serves
through the same ConsoleSource interface as the live and replay sources.
"""

from __future__ import annotations

import gzip
import struct
import threading
import time
import zlib
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from backend.errors import TradeopsError
from console.data.snapshot import Snapshot
from console.data.source import ConsoleSource

FORMAT = "tradeops-console-recording"
VERSION = 1
KEYFRAME_EVERY = 120  # one minute at the console's 2 polls/s
FLUSH_S = 2.0
SUFFIX = ".rec.gz"
FIELDS = [f.name for f in fields(Snapshot)]
_LEN = struct.Struct(">I")
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


class Recorder:
    """Appends snapshots to a new recording file."""

    def __init__(self, path: Path, source: str = "") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._f = gzip.open(self.path, "wb", compresslevel=6)  # noqa: SIM115 - open while recording
        except OSError as exc:
            raise TradeopsError(f"cannot record to {self.path}: {exc.strerror or exc}") from None
        self._prev: dict[str, Any] | None = None
        self.frames = 0
        self._flushed = time.monotonic()
        self._write({"format": FORMAT, "version": VERSION, "started": time.time(), "source": source})

    def _write(self, obj: dict[str, Any]) -> None:
        blob = _enc.encode(obj)
        self._f.write(_LEN.pack(len(blob)) + blob)

    def add(self, snap: Snapshot, t: float | None = None) -> None:
        now = msgspec.to_builtins(snap)
        prev = self._prev
        frame: dict[str, Any] = {"t": time.time() if t is None else t}
        if prev is None or self.frames % KEYFRAME_EVERY == 0:
            frame["k"] = True
            frame["d"] = now
        else:
            whole: dict[str, Any] = {}
            edits: dict[str, Any] = {}
            for k, v in now.items():
                old = prev.get(k)
                if old == v:
                    continue
                edit = _edit(old, v)
                if edit is None:
                    whole[k] = v
                else:
                    edits[k] = edit
            frame["d"] = whole
            if edits:
                frame["x"] = edits
        self._write(frame)
        self._prev = now
        self.frames += 1
        if time.monotonic() - self._flushed >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self._f.flush()  # a sync flush: everything so far can be read back
        self._flushed = time.monotonic()

    def close(self) -> None:
        self._f.close()


class RecordingSource:
    """A ConsoleSource that records every snapshot its inner source hands out."""

    def __init__(self, inner: ConsoleSource, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder
        self.url = getattr(inner, "url", "")
        self._lock = threading.Lock()  # the poll worker may still be in a poll when the app closes us
        self._closed = False

    def poll(self) -> Snapshot:
        snap = self.inner.poll()
        with self._lock:
            if not self._closed:
                self.recorder.add(snap)
        return snap

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.recorder.close()
        self.inner.close()


@dataclass
class Recording:
    path: Path
    started: float
    source: str
    times: list[float]
    states: list[dict[str, Any]]  # each frame whole, as plain values
    truncated: bool = False  # the file ended inside a frame (the console died)

    def __len__(self) -> int:
        return len(self.times)

    def snapshot(self, i: int) -> Snapshot:
        return msgspec.convert(self.states[i], Snapshot, strict=False)


def read(path: Path) -> Recording:
    path = Path(path)
    try:
        with gzip.open(path, "rb") as raw:
            return _read(path, raw)
    except FileNotFoundError:
        raise TradeopsError(f"no recording {path}") from None


def _read(path: Path, raw: Any) -> Recording:
    try:
        header = _frame(raw)
    except (OSError, EOFError, msgspec.DecodeError, zlib.error) as exc:
        raise TradeopsError(f"{path} is not a console recording: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TradeopsError(f"{path} is not a console recording (made by `tradeops console --record`)")
    if header.get("version") != VERSION:
        raise TradeopsError(f"{path} is a recording of version {header.get('version')}; this reads {VERSION}")
    times: list[float] = []
    states: list[dict[str, Any]] = []
    truncated = False
    state: dict[str, Any] = {}
    while True:
        try:
            frame = _frame(raw)
        except (EOFError, OSError, zlib.error, msgspec.DecodeError):
            truncated = True
            break
        if frame is None:
            break
        if frame.get("k"):
            state = dict(frame["d"])
        elif not state:
            continue  # no keyframe yet: nothing whole to show
        else:
            state = {**state, **frame["d"]}
            for k, edit in (frame.get("x") or {}).items():
                state[k] = _apply(state.get(k), edit)
        times.append(float(frame["t"]))
        states.append(state)
    if not times:
        raise TradeopsError(f"{path} holds no snapshots" + (" (it was cut off)" if truncated else ""))
    started = float(header.get("started", times[0]))
    return Recording(path, started, str(header.get("source", "")), times, states, truncated)


BIG = 16  # lists and maps longer than this are stored as edits of the frame before


def _edit(old: Any, new: Any) -> Any:
    """A long list as runs of the old one and new items (an order blotter: one row new, one
    changed, the rest the same rows shifted); a long map as its changed and removed keys. None:
    store it whole."""
    if isinstance(old, list) and isinstance(new, list) and len(new) > BIG:
        enc_old = [_enc.encode(x) for x in old]
        where: dict[bytes, int] = {}
        for i, e in enumerate(enc_old):
            where.setdefault(e, i)
        ops: list[Any] = []
        i = 0
        while i < len(new):
            j = where.get(_enc.encode(new[i]))
            if j is None:
                ops.append([new[i]])  # a new item
                i += 1
                continue
            n = 1
            while i + n < len(new) and j + n < len(old) and _enc.encode(new[i + n]) == enc_old[j + n]:
                n += 1
            ops.append(j if n == 1 else [j, n])  # old[j] / old[j:j+n]
            i += n
        return {"l": ops}
    if isinstance(old, dict) and isinstance(new, dict) and len(new) > BIG:
        changed = {k: v for k, v in new.items() if k not in old or old[k] != v}
        gone = [k for k in old if k not in new]
        return {"m": changed, "g": gone}
    return None


def _apply(old: Any, edit: dict[str, Any]) -> Any:
    if "l" in edit:
        out: list[Any] = []
        for op in edit["l"]:
            if isinstance(op, int):
                out.append(old[op])
            elif len(op) == 1:
                out.append(op[0])
            else:
                out.extend(old[op[0] : op[0] + op[1]])
        return out
    merged = {k: v for k, v in (old or {}).items() if k not in set(edit["g"])}
    merged.update(edit["m"])
    return merged


def _frame(f: Any) -> Any:
    head = f.read(_LEN.size)
    if not head:
        return None
    if len(head) < _LEN.size:
        raise EOFError("cut off in a frame's length")
    (n,) = _LEN.unpack(head)
    blob = f.read(n)
    if len(blob) < n:
        raise EOFError("cut off in a frame")
    return _dec.decode(blob)


def session_file(directory: Path, now: float | None = None) -> Path:
    """A new recording's path in `directory` (always-on recording: one file per console session)."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(directory) / f"console-{stamp}{SUFFIX}"


def prune(directory: Path, keep_days: float, now: float | None = None) -> list[Path]:
    """Delete the recordings in `directory` older than `keep_days`; returns what was deleted."""
    cutoff = (datetime.fromtimestamp(time.time() if now is None else now, UTC) - timedelta(days=keep_days)).timestamp()
    gone = []
    for p in sorted(Path(directory).glob(f"console-*{SUFFIX}")):
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
                gone.append(p)
        except FileNotFoundError:
            continue
    return gone
