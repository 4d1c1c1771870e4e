"""Admission control at the OMS's intake: past its capacity the OMS refuses a new order at once
(REJECTED, reason `overloaded`) instead of queueing it for seconds, so the orders it accepts keep
their latency and a backlog drains as soon as the load drops.

Either of two signals refuses an order:
- `queued`: it waited in orders.new longer than `max_intake_age_ms` before the OMS read it. The
  wait is read off the stream entry id (Redis's clock when the order was added) against now on
  Redis's clock (ours plus the offset measured with TIME), so a client's clock plays no part.
  Time an order spent queued before this OMS instance began reading (a restart, a cutover) is not
  held against it: the wait counts from the later of the two, and a backlog found on start is
  taken in as far as it is read within the bound.
- `in_flight`: `max_in_flight` orders are already taken in and not yet answered by risk and the
  venue (PENDING_RISK or ROUTED). A backstop for a stage downstream (risk, the venue) that falls
  behind, which the intake's own queue does not show.

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
MAX_SYNC_RTT_MS = 20.0
"""A TIME round trip slower than this says too little about the offset to be used."""


class AdmissionLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    max_intake_age_ms: float = 50.0
    """An order that waited longer than this in orders.new is refused (overloaded)."""
    max_in_flight: int = 1000
    """New orders are refused while this many are waiting for risk or the venue."""

    def __post_init__(self) -> None:
        if not self.max_intake_age_ms > 0:
            raise ValueError(f"max_intake_age_ms must be a positive number of milliseconds, "
                             f"not {self.max_intake_age_ms!r}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {self.max_in_flight!r}")


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
    since_ms: float | None = None
    """When this instance first read orders.new (Redis's clock): waits count from here at most."""

    def gate(self, now_ns: int, in_flight: int) -> Gate:
        """The gate for a batch read at `now_ns` (our clock) with `in_flight` orders waiting."""
        now_ms = now_ns / 1e6 + self.offset_ms
        if self.since_ms is None:
            self.since_ms = now_ms
        return Gate(now_ms, self.since_ms, self.limits, in_flight)


@dataclass
class Gate:
    """One batch's admissions, asked in the order the entries were read. Each admitted order
    counts as in flight for the ones after it."""

    now_ms: float
    since_ms: float
    limits: AdmissionLimits
    in_flight: int
    refused: Counter[str] = field(default_factory=Counter)

    def queued_ms(self, eid: bytes | str) -> float:
        """How long the entry waited in the stream, counted from when this instance began reading."""
        return max(0.0, self.now_ms - max(entry_ms(eid), self.since_ms))

    def refuse(self, eid: bytes | str) -> str | None:
        """Why the new order of entry `eid` is refused (QUEUED or IN_FLIGHT), or None: admitted."""
        if self.queued_ms(eid) > self.limits.max_intake_age_ms:
            why = QUEUED
        elif self.in_flight >= self.limits.max_in_flight:
            why = IN_FLIGHT
        else:
            self.in_flight += 1
            return None
        self.refused[why] += 1
        return why
