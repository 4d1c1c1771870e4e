"""The scheduler's calendar, pure (no Redis, no asyncio, no clock of its own: `now` is given).

A job runs daily `at = "HH:MM"` UTC, or `every = "15m"` (30s / 15m / 1h / 1d, aligned to the
epoch). Its slot names an occurrence: the date for a daily job, the start time for an `every`
one. The trading session (`session_open` .. `session_close`, UTC) decides the last closed day,
the one end-of-day jobs work on. Bad values raise ValueError naming the job (or the key) and
the value.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

DAY_S = 86400
_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _where(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def hhmm(text: str, where: str = "") -> int:
    """Minutes after midnight of "HH:MM" (UTC); ValueError naming `where` and the value."""
    m = _HHMM.fullmatch(text)
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(_where(where, f"time {text!r} is not HH:MM (00:00 .. 23:59, UTC)"))
    return int(m[1]) * 60 + int(m[2])


def duration(text: str, where: str = "", key: str = "every") -> float:
    """Seconds of "30s" / "15m" / "1h" / "1d"; ValueError naming `where`, the key and the value."""
    m = _DURATION.fullmatch(text.strip())
    if not m or float(m[1]) <= 0:
        raise ValueError(_where(where, f"{key} {text!r} is not a positive duration like 30s, 15m, 1h, 1d"))
    return float(m[1]) * _UNIT[m[2]]


def job_where(job: str) -> str:
    return f"job {job!r}"


@dataclass(frozen=True)
class Schedule:
    """When one job runs: daily at `at_min` minutes after midnight UTC, or every `step_s` seconds."""

    at: str | None = None
    every: str | None = None
    at_min: int | None = None
    step_s: float | None = None

    @classmethod
    def parse(cls, job: str, at: str | None, every: str | None) -> Schedule:
        """Exactly one of `at` ("HH:MM") or `every` ("15m"); ValueError naming the job and the value."""
        if at is not None and every is None:
            return cls(at=at, at_min=hhmm(at, job_where(job)))
        if every is not None and at is None:
            return cls(every=every, step_s=duration(every, job_where(job)))
        raise ValueError(f"job {job!r} needs exactly one of `at` (HH:MM) or `every` (15m)")

    @property
    def period_s(self) -> float:
        return DAY_S if self.step_s is None else self.step_s

    def latest(self, now: float) -> tuple[str, float]:
        """The latest occurrence at or before `now`: (its slot, its time)."""
        if self.at_min is not None:
            t = now - now % DAY_S + self.at_min * 60
            if t > now:
                t -= DAY_S
            return time.strftime("%Y-%m-%d", time.gmtime(t)), t
        step = self.period_s
        t = now - now % step
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)), t

    def next_due(self, now: float) -> float:
        """The first occurrence after `now`."""
        return self.latest(now)[1] + self.period_s

    def check_tick(self, job: str, tick_s: float) -> None:
        """An `every` shorter than how often the scheduler looks would skip occurrences."""
        if self.step_s is not None and self.step_s < tick_s:
            raise ValueError(
                f"job {job!r}: every {self.every} is shorter than tick_s {tick_s:g}s (how often the scheduler looks)"
            )

    def describe(self) -> str:
        return f"daily at {self.at} UTC" if self.at is not None else f"every {self.every}"


def is_late(now: float, t: float, tick_s: float) -> bool:
    """Whether an occurrence at `t` found at `now` was missed (the scheduler was down), not just
    found on the next look."""
    return now - t > max(60.0, 3 * tick_s)


@dataclass(frozen=True)
class Session:
    """The trading session, minutes after midnight UTC (24x7 markets: the whole day)."""

    open_min: int
    close_min: int

    @classmethod
    def parse(cls, open_: str, close: str) -> Session:
        return cls(hhmm(open_, "session_open"), hhmm(close, "session_close"))

    def is_open(self, t: float) -> bool:
        minute = int(t % DAY_S) // 60
        return self.open_min <= minute <= self.close_min

    def closed_day(self, t: float) -> str:
        """The last trading day whose session had closed at time `t` (YYYY-MM-DD)."""
        minute = int(t % DAY_S) // 60
        day_start = t - t % DAY_S
        closed = day_start if minute >= self.close_min else day_start - DAY_S
        return time.strftime("%Y-%m-%d", time.gmtime(closed))
