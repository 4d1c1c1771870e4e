"""Admission control's policy at the OMS's intake: how long an order waited, how many are in
flight, the clock offset, and the limits' validation."""

from __future__ import annotations

import msgspec
import pytest

from backend.errors import ConfigError
from backend.services.oms import OmsConfig
from backend.settings import convert_section
from backend.trading.admission import (
    IN_FLIGHT,
    IN_FLIGHT_STATES,
    QUEUED,
    Admission,
    AdmissionLimits,
    clock_offset_ms,
    entry_ms,
)

MS = 1_000_000  # ns


def gate(now_ms: int, in_flight: int = 0, since_ms: int | None = None, **limits):
    a = Admission(AdmissionLimits(**limits), since_ms=since_ms)
    return a.gate(now_ms * MS, in_flight)


def test_entry_ms_reads_the_id_of_bytes_or_str() -> None:
    assert entry_ms(b"1700000000123-7") == entry_ms("1700000000123-7") == 1700000000123
    assert entry_ms("42") == 42


def test_an_order_that_waited_past_the_bound_is_refused_as_queued() -> None:
    g = gate(10_000, since_ms=0, max_intake_age_ms=50)
    assert g.queued_ms(b"9950-0") == 50.0 and g.refuse(b"9950-0") is None  # at the bound: admitted
    assert g.queued_ms(b"9949-0") == 51.0 and g.refuse(b"9949-0") == QUEUED
    assert g.refuse(b"10000-3") is None
    assert g.refused == {QUEUED: 1} and g.in_flight == 2


def test_an_entry_from_the_future_waited_nothing() -> None:
    g = gate(10_000, since_ms=0)
    assert g.queued_ms("10500-0") == 0.0 and g.refuse("10500-0") is None


def test_the_wait_counts_from_when_this_instance_began_reading() -> None:
    """A backlog found on start (a restart, a cutover) is not held against its orders."""
    a = Admission(AdmissionLimits(max_intake_age_ms=50))
    first = a.gate(10_000 * MS, 0)  # the first batch sets since_ms
    assert a.since_ms == 10_000
    assert first.queued_ms(b"1000-0") == 0.0 and first.refuse(b"1000-0") is None
    later = a.gate(10_040 * MS, 0)
    assert later.queued_ms(b"1000-0") == 40.0 and later.refuse(b"1000-0") is None
    late = a.gate(10_051 * MS, 0)  # the backlog not read within the bound of the start
    assert late.refuse(b"1000-1") == QUEUED and late.refuse(b"10050-0") is None
    assert a.since_ms == 10_000  # set once


def test_in_flight_counts_the_batch_own_admissions() -> None:
    g = gate(10_000, in_flight=2, since_ms=0, max_in_flight=4)
    assert [g.refuse(f"10000-{i}") for i in range(4)] == [None, None, IN_FLIGHT, IN_FLIGHT]
    assert g.in_flight == 4 and g.refused == {IN_FLIGHT: 2}


def test_a_queued_order_is_refused_without_taking_a_place_in_flight() -> None:
    g = gate(10_000, in_flight=0, since_ms=0, max_intake_age_ms=10, max_in_flight=1)
    assert g.refuse("9000-0") == QUEUED and g.in_flight == 0
    assert g.refuse("10000-0") is None and g.refuse("10000-1") == IN_FLIGHT
    assert g.refused == {QUEUED: 1, IN_FLIGHT: 1}


def test_the_offset_puts_now_on_redis_clock() -> None:
    a = Admission(AdmissionLimits(max_intake_age_ms=50), offset_ms=-100.0, since_ms=0)
    g = a.gate(10_000 * MS, 0)  # our clock 100 ms ahead of Redis's: now is 9,900 there
    assert g.now_ms == 9_900.0 and g.queued_ms("9880-0") == 20.0 and g.refuse("9880-0") is None


def test_clock_offset_takes_the_quickest_round_trip() -> None:
    # (ours before ns, redis s, redis us, ours after ns)
    slow = (0, 10, 0, 8 * MS)  # 8 ms round trip: Redis at 10,000 ms, ours 4 ms mid-way
    quick = (20 * MS, 10, 30_000, 21 * MS)  # 1 ms: Redis 10,030 ms, ours 20.5 ms
    assert clock_offset_ms([slow, quick]) == pytest.approx(10_030 - 20.5)
    assert clock_offset_ms([(0, 1, 0, 25 * MS)]) is None  # too slow to say anything
    assert clock_offset_ms([]) is None


def test_in_flight_states_are_the_ones_waiting_for_an_answer() -> None:
    assert IN_FLIGHT_STATES == {"PENDING_RISK", "ROUTED"}


@pytest.mark.parametrize(("section", "message"), [
    ({"max_in_flight": 0}, "max_in_flight must be at least 1, not 0"),
    ({"max_intake_age_ms": -5}, "max_intake_age_ms must be a positive number of milliseconds, not -5"),
    ({"max_intake_age_ms": "soon"}, "Expected `float`, got `str`"),
    ({"max_queue": 3}, "Object contains unknown field `max_queue`"),
])
def test_bad_limits_are_a_config_error_naming_the_setting(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^\[services\.oms\]: ") as exc:
        convert_section("oms", {"admission": section}, OmsConfig)
    assert message in str(exc.value) and "admission" in str(exc.value)


def test_default_limits() -> None:
    cfg = msgspec.convert({}, OmsConfig)
    assert cfg.admission == AdmissionLimits() and cfg.admission.max_intake_age_ms == 50.0
    assert cfg.admission.max_in_flight == 1000
