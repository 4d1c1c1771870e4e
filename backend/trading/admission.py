"""Admission control at the OMS's intake: past its capacity the OMS refuses a new order at once
(REJECTED, reason `overloaded`) instead of queueing it for seconds, so the orders it accepts keep
their latency and a backlog drains as soon as the load drops.

Either of two signals refuses an order:
- `queued`: it waited in orders.new longer than `max_intake_age_ms` before the OMS read it. The
  wait is read off the stream entry id (Redis's clock when the order was added) against now on
  Redis's clock (ours plus the offset measured with TIME), so a client's clock plays no part.
- `in_flight`: as many orders as are let in flight are already taken in and not yet answered
  by risk and the venue (PENDING_RISK or ROUTED). That limit is `max_in_flight` while answers
  come in time; an order answered (routed, accepted) more than `max_answer_ms` after it was taken
  in cuts it by a quarter of what is in flight (once per answer time, so a cut shows before the
  next), and each batch answered in time raises it by one again (additive increase,
  multiplicative decrease). It is what keeps the accepted orders' latency when the OMS, risk or
  the venue is the stage that falls behind, which the intake's own queue does not show.

A backlog that is not this instance's load to judge is taken in whatever it waited, up to
`max_in_flight` at a time: orders added before this OMS instance started (a restart, a new
instance), and orders delivered before to a consumer that failed (its own earlier life, or one
whose entries were taken over). An order added while the instance was starting waits from its
first read, and answers to orders taken in by an earlier life count only the time since then.

Cancels are never refused (the OMS does not ask). No I/O here: the OMS gives the entry ids, the
clock readings and its count of orders in flight.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec

OVERLOADED = "overloaded"
"""The reason of an order refused by admission control (the OrderEvent's `reason`, exactly)."""
QUEUED = "queued"
IN_FLIGHT = "in_flight"
IN_FLIGHT_STATES = frozenset({"PENDING_RISK", "ROUTED"})
"""Taken in, not yet answered: what `max_in_flight` counts."""
MIN_IN_FLIGHT = 16
"""The in-flight limit is never cut below this (nor above max_in_flight)."""
CUT = 0.75
MAX_SYNC_RTT_MS = 20.0
"""A TIME round trip slower than this says too little about the offset to be used."""


class AdmissionLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    max_intake_age_ms: float = 50.0
    """An order that waited longer than this in orders.new is refused (overloaded)."""
    max_in_flight: int = 1000
    """New orders are refused while this many are waiting for risk or the venue (fewer while
    answers are slow, see max_answer_ms)."""
    max_answer_ms: float = 20.0
    """An order routed or accepted longer than this after it was taken in cuts the number of
    orders let in flight."""

    def __post_init__(self) -> None:
        if not self.max_intake_age_ms > 0:
            raise ValueError(
                f"max_intake_age_ms must be a positive number of milliseconds, not {self.max_intake_age_ms!r}"
            )
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {self.max_in_flight!r}")
        if not self.max_answer_ms > 0:
            raise ValueError(f"max_answer_ms must be a positive number of milliseconds, not {self.max_answer_ms!r}")


def entry_ms(eid: bytes | str) -> int:
    """The millisecond timestamp of a stream entry id (`<ms>-<seq>`): Redis's clock when added."""
    if isinstance(eid, bytes):
        eid = eid.decode()
    return int(eid.partition("-")[0])


def clock_offset_ms(samples: list[tuple[int, int, int, int]]) -> float | None:
    """Redis's clock minus ours, in ms, from TIME replies: (our ns before, seconds, microseconds,
    our ns after) each. The sample with the shortest round trip wins (its error is at most half
    of it); None if even that one was slower than MAX_SYNC_RTT_MS (a stalled process)."""
    if not samples:
        return None
    before, sec, usec, after = min(samples, key=lambda s: s[3] - s[0])
    if (after - before) / 1e6 > MAX_SYNC_RTT_MS:
        return None
    return (sec * 1_000_000 + usec) / 1e3 - (before + after) / 2e6


@dataclass
class Admission:
    """The intake's policy for one OMS instance; `gate()` judges one batch of new orders."""

    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    offset_ms: float = 0.0
    """Redis's clock minus ours (see clock_offset_ms)."""
    started_ms: float | None = None
    """When this instance started (Redis's clock): what was added before is a backlog."""
    since_ms: float | None = None
    """When this instance first read orders.new (Redis's clock): waits count from here at most."""
    in_flight_limit: float = field(init=False)
    """How many orders are let in flight now (max_in_flight while answers come in time)."""
    calm_until_ms: float = field(init=False, default=float("-inf"))
    """No further cut before this (Redis's clock): the orders let in before a cut are answered first."""

    def __post_init__(self) -> None:
        self.in_flight_limit = float(self.limits.max_in_flight)

    def start(self, now_ns: int) -> None:
        """This instance starts (`now_ns` our clock): orders added before are a backlog."""
        self.started_ms = now_ns / 1e6 + self.offset_ms

    def resume(self, now_ns: int) -> None:
        """The intake comes back after Redis was away (`now_ns` our clock): what was added meanwhile
        waited for Redis, not for this instance, so it is a backlog, as at a start, and waits
        count from now."""
        self.started_ms = self.since_ms = now_ns / 1e6 + self.offset_ms

    def gate(self, now_ns: int, in_flight: int, redelivered: bool = False) -> Gate:
        """The gate for a batch at `now_ns` (our clock) with `in_flight` orders waiting;
        `redelivered`: the batch was delivered before, to a consumer that failed."""
        now_ms = now_ns / 1e6 + self.offset_ms
        if self.since_ms is None:
            self.since_ms = now_ms
        started = self.since_ms if self.started_ms is None else min(self.started_ms, self.since_ms)
        return Gate(
            now_ms,
            started,
            self.since_ms,
            self.limits.max_intake_age_ms,
            self.limits.max_in_flight,
            int(self.in_flight_limit),
            in_flight,
            redelivered,
        )

    def answered(self, slowest_ms: float, in_flight: int, now_ns: int) -> None:
        """A batch of orders was answered (routed after risk's decision, or accepted by the venue),
        the slowest `slowest_ms` after it was taken in; `in_flight` orders still wait."""
        if self.since_ms is None:
            return  # nothing taken in yet: answers to an earlier life's orders
        now_ms = now_ns / 1e6 + self.offset_ms
        slowest_ms = min(slowest_ms, now_ms - self.since_ms)
        top = self.limits.max_in_flight
        if slowest_ms <= self.limits.max_answer_ms:
            self.in_flight_limit = min(float(top), self.in_flight_limit + 1)
        elif now_ms >= self.calm_until_ms:
            self.in_flight_limit = max(float(min(MIN_IN_FLIGHT, top)), min(self.in_flight_limit, in_flight) * CUT)
            self.calm_until_ms = now_ms + slowest_ms


@dataclass
class Gate:
    """One batch's admissions, asked in the order the entries were read. Each admitted order
    counts as in flight for the ones after it."""

    now_ms: float
    started_ms: float
    since_ms: float
    max_intake_age_ms: float
    max_in_flight: int
    limit: int
    """Orders let in flight now (max_in_flight, or fewer while answers are slow)."""
    in_flight: int
    redelivered: bool = False
    refused: Counter[str] = field(default_factory=Counter)

    def queued_ms(self, eid: bytes | str) -> float:
        """How long the entry waited in the stream, counted from this instance's first read."""
        return max(0.0, self.now_ms - max(entry_ms(eid), self.since_ms))

    def backlog(self, eid: bytes | str) -> bool:
        """Whether the entry is a backlog not to be judged by its wait: redelivered, or added
        before this instance started."""
        return self.redelivered or entry_ms(eid) < self.started_ms

    def refuse(self, eid: bytes | str) -> str | None:
        """Why the new order of entry `eid` is refused (QUEUED or IN_FLIGHT), or None: admitted."""
        backlog = self.backlog(eid)
        if not backlog and self.queued_ms(eid) > self.max_intake_age_ms:
            why = QUEUED
        elif self.in_flight >= (self.max_in_flight if backlog else self.limit):
            why = IN_FLIGHT
        else:
            self.in_flight += 1
            return None
        self.refused[why] += 1
        return why
