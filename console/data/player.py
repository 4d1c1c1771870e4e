"""Plays a recording (console/data/recording.py) back through the ConsoleSource interface: the app
polls it as it polls the live bus, and gets the frame the player is on. Play (at a speed), pause,
step, seek to a time; the audit entries that appeared up to the frame shown are kept with it, so
the operator's actions of that period are seen with the data they acted on."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime

from backend.errors import TradeopsError
from console.data.recording import Recording
from console.data.snapshot import Snapshot

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
_REL = re.compile(r"^([+-])(\d+(?:\.\d+)?)(s|m|h)?$")
_UNIT = {"s": 1, "m": 60, "h": 3600, None: 1}


class PlayerSource:
    def __init__(self, recording: Recording) -> None:
        self.rec = recording
        self.url = f"replay://{recording.path.name}"
        self.i = 0
        self.playing = False
        self.speed = 1.0
        self._lock = threading.Lock()
        self._wall = time.monotonic()  # when playback was last anchored to frame self.i
        self._cache: dict[int, Snapshot] = {}
        self.audit_new = self._audit_firsts()

    # -- ConsoleSource -----------------------------------------------------------------------------
    def poll(self) -> Snapshot:
        with self._lock:
            if self.playing:
                self._advance()
            return self._snap(self.i)

    def current(self) -> Snapshot:
        with self._lock:
            return self._snap(self.i)

    def close(self) -> None:
        pass

    # -- controls ----------------------------------------------------------------------------------
    def play(self) -> None:
        with self._lock:
            if self.i >= len(self.rec) - 1:
                self.i = 0  # at the end: play from the start
            self.playing = True
            self._wall = time.monotonic()

    def pause(self) -> None:
        with self._lock:
            if self.playing:
                self._advance()
            self.playing = False

    def toggle(self) -> None:
        if self.playing:
            self.pause()
        else:
            self.play()

    def step(self, n: int) -> None:
        """Pause and move `n` frames (back when negative)."""
        with self._lock:
            self.playing = False
            self.i = max(0, min(len(self.rec) - 1, self.i + n))

    def faster(self, up: bool) -> None:
        with self._lock:
            if self.playing:
                self._advance()
            k = SPEEDS.index(self.speed) if self.speed in SPEEDS else 2
            self.speed = SPEEDS[max(0, min(len(SPEEDS) - 1, k + (1 if up else -1)))]

    def seek(self, when: str) -> None:
        """Go to a time: `HH:MM[:SS]` (UTC, on the recording's days), `+30s` / `-2m` from here, or
        `N%` of the recording. Refused, with what is accepted, when it is none of these."""
        t = self.parse_time(when)
        with self._lock:
            self.i = self._index_at(t)
            self._wall = time.monotonic()

    def parse_time(self, when: str) -> float:
        times = self.rec.times
        when = when.strip()
        m = _REL.match(when)
        if m:
            sign = -1 if m.group(1) == "-" else 1
            return times[self.i] + sign * float(m.group(2)) * _UNIT[m.group(3)]
        if when.endswith("%"):
            try:
                pct = float(when[:-1])
            except ValueError:
                pct = -1
            if 0 <= pct <= 100:
                return times[0] + (times[-1] - times[0]) * pct / 100
        for fmt in ("%H:%M:%S", "%H:%M"):
            try:
                hms = datetime.strptime(when, fmt).time()
            except ValueError:
                continue
            first = datetime.fromtimestamp(times[0], UTC)
            t = datetime.combine(first.date(), hms, UTC).timestamp()
            return t + 86400 if t < times[0] - 1 else t  # past midnight: the next day
        raise TradeopsError(
            f"cannot seek to {when!r}: give a time HH:MM[:SS] (UTC) between {self.clock(0)} and "
            f"{self.clock(len(self.rec) - 1)}, a step like +30s or -2m, or a share like 50%"
        )

    # -- what the player bar shows -----------------------------------------------------------------
    def clock(self, i: int) -> str:
        return time.strftime("%H:%M:%S", time.gmtime(self.rec.times[i]))

    @property
    def elapsed(self) -> float:
        return self.rec.times[self.i] - self.rec.times[0]

    @property
    def length(self) -> float:
        return self.rec.times[-1] - self.rec.times[0]

    def audit_until(self, limit: int = 4) -> list[tuple[int, tuple[str, ...]]]:
        """The newest audit entries the recording had seen by the frame shown, with the frame each
        first appeared in (newest last)."""
        out: list[tuple[int, tuple[str, ...]]] = []
        for j in range(self.i, -1, -1):
            for row in reversed(self.audit_new[j]):
                out.append((j, row))
                if len(out) >= limit:
                    return out[::-1]
        return out[::-1]

    # -- inside ------------------------------------------------------------------------------------
    def _advance(self) -> None:
        now = time.monotonic()
        target = self.rec.times[self.i] + (now - self._wall) * self.speed
        j = self._index_at(target)
        if j != self.i:
            # anchor to the frame reached, keeping the time beyond it
            self._wall = now - (target - self.rec.times[j]) / self.speed
            self.i = j
        if self.i >= len(self.rec) - 1:
            self.playing = False

    def _index_at(self, t: float) -> int:
        """The last frame taken at or before `t` (the first frame before the start)."""
        import bisect

        return max(0, min(len(self.rec) - 1, bisect.bisect_right(self.rec.times, t) - 1))

    def _snap(self, i: int) -> Snapshot:
        snap = self._cache.get(i)
        if snap is None:
            if len(self._cache) > 64:
                self._cache.clear()
            snap = self._cache[i] = self.rec.snapshot(i)
        return snap

    def _audit_firsts(self) -> list[list[tuple[str, ...]]]:
        """For each frame, the audit rows that were not in the frame before."""
        seen: set[tuple[str, ...]] = set()
        out: list[list[tuple[str, ...]]] = []
        prev = None
        for state in self.rec.states:
            rows = state.get("audit") or []
            if rows is prev:  # unchanged (the recording shares the list): nothing new
                out.append([])
                continue
            prev = rows
            new = []
            for row in rows:
                key = tuple(str(x) for x in row)
                if key not in seen:
                    seen.add(key)
                    new.append(key)
            out.append(new)
        return out
