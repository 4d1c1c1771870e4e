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
    MIN_IN_FLIGHT,
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


def test_a_backlog_found_on_start_is_taken_in_whatever_it_waited() -> None:
    """Orders added before this instance started (a restart, a new instance) are not its load:
    taken in up to max_in_flight, even past the adaptive limit; later ones are judged."""
    a = Admission(AdmissionLimits(max_intake_age_ms=50, max_in_flight=3))
    a.start(9_000 * MS)
    a.in_flight_limit = 1  # answers were slow
    first = a.gate(10_000 * MS, 0)  # the first read sets since_ms
    assert (a.started_ms, a.since_ms) == (9_000, 10_000)
    assert first.backlog(b"1000-0") and not first.backlog(b"9000-0")
    assert [first.refuse(f"{1000 + i}-0") for i in range(4)] == [None, None, None, IN_FLIGHT]
    later = a.gate(10_100 * MS, 0)
    assert later.refuse(b"10020-0") == QUEUED  # waited 80 ms
    assert later.refuse(b"10060-0") is None and later.refuse(b"10070-0") == IN_FLIGHT  # past the limit of 1
    assert later.refuse(b"2000-0") is None  # still the backlog: its wait is not held against it
    assert a.since_ms == 10_000  # set once


def test_an_order_added_while_starting_waits_from_the_first_read() -> None:
    a = Admission(AdmissionLimits(max_intake_age_ms=50))
    a.start(9_000 * MS)
    g = a.gate(10_000 * MS, 0)
    assert not g.backlog(b"9500-0") and g.queued_ms(b"9500-0") == 0.0 and g.refuse(b"9500-0") is None
    assert a.gate(10_040 * MS, 0).refuse(b"9500-1") is None
    late = a.gate(10_051 * MS, 0)
    assert late.queued_ms(b"9500-2") == 51.0 and late.refuse(b"9500-2") == QUEUED


def test_without_start_the_first_read_is_the_start() -> None:
    a = Admission(AdmissionLimits(max_intake_age_ms=50))
    g = a.gate(10_000 * MS, 0)
    assert g.started_ms == g.since_ms == 10_000 and g.backlog(b"9000-0") and not g.backlog(b"10000-0")


def test_a_redelivered_batch_is_not_judged_by_its_wait() -> None:
    """Delivered before to a consumer that failed: its wait says nothing of this one's load."""
    a = Admission(AdmissionLimits(max_intake_age_ms=50), since_ms=0)
    g = a.gate(10_000 * MS, 0, redelivered=True)
    assert g.backlog(b"5000-0") and g.refuse(b"5000-0") is None
    assert a.gate(10_000 * MS, 0).refuse(b"5000-0") == QUEUED


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


def test_slow_answers_cut_the_in_flight_limit_and_timely_ones_raise_it_again() -> None:
    a = Admission(AdmissionLimits(max_in_flight=1000, max_answer_ms=20), since_ms=0)
    a.answered(5.0, 300, 0)
    assert a.in_flight_limit == 1000  # in time: at most max_in_flight
    a.answered(35.0, 400, 1000 * MS)  # too slow: a quarter off what is in flight
    assert a.in_flight_limit == 300 and a.calm_until_ms == 1035.0
    a.answered(50.0, 380, 1010 * MS)  # answers of orders let in before the cut: no second cut
    assert a.in_flight_limit == 300
    a.answered(25.0, 350, 1040 * MS)  # still slow after the calm: cut again (from the limit)
    assert a.in_flight_limit == 225
    g = a.gate(1041 * MS, 224)
    assert [g.refuse("1041-0"), g.refuse("1041-1")] == [None, IN_FLIGHT]
    for i in range(5):
        a.answered(10.0, 200, (1100 + i) * MS)  # in time again: one more per batch
    assert a.in_flight_limit == 230
    for i in range(100):
        a.answered(30.0, 0, (2000 + 100 * i) * MS)
    assert a.in_flight_limit == MIN_IN_FLIGHT  # never below the floor
    small = Admission(AdmissionLimits(max_in_flight=4, max_answer_ms=20), since_ms=0)
    small.answered(99.0, 4, 1000 * MS)
    assert small.in_flight_limit == 4  # nor above max_in_flight


def test_answers_to_an_earlier_life_count_from_this_one_start() -> None:
    a = Admission(AdmissionLimits(max_in_flight=100, max_answer_ms=20))
    a.answered(5000.0, 50, 10_000 * MS)
    assert a.in_flight_limit == 100  # nothing taken in yet: not this instance's answers
    a.gate(10_000 * MS, 50)  # began reading at 10,000
    a.answered(5000.0, 50, 10_010 * MS)  # taken in long ago, but this one began 10 ms ago
    assert a.in_flight_limit == 100
    a.answered(5000.0, 50, 10_030 * MS)  # 30 ms since: too slow now
    assert a.in_flight_limit == 37.5


def test_in_flight_states_are_the_ones_waiting_for_an_answer() -> None:
    assert {"PENDING_RISK", "ROUTED"} == IN_FLIGHT_STATES


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"max_in_flight": 0}, "max_in_flight must be at least 1, not 0"),
        ({"max_intake_age_ms": -5}, "max_intake_age_ms must be a positive number of milliseconds, not -5"),
        ({"max_intake_age_ms": "soon"}, "Expected `float`, got `str`"),
        ({"max_answer_ms": 0}, "max_answer_ms must be a positive number of milliseconds, not 0"),
        ({"max_queue": 3}, "Object contains unknown field `max_queue`"),
    ],
)
def test_bad_limits_are_a_config_error_naming_the_setting(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^\[services\.oms\]: ") as exc:
        convert_section("oms", {"admission": section}, OmsConfig)
    assert message in str(exc.value) and "admission" in str(exc.value)


def test_intake_chunk_is_at_least_one() -> None:
    with pytest.raises(ConfigError, match=r"^\[services\.oms\]: intake_chunk must be at least 1, not 0"):
        convert_section("oms", {"intake_chunk": 0}, OmsConfig)


def test_default_limits() -> None:
    cfg = msgspec.convert({}, OmsConfig)
    assert cfg.admission == AdmissionLimits() and cfg.admission.max_intake_age_ms == 50.0
    assert cfg.admission.max_in_flight == 1000 and cfg.admission.max_answer_ms == 20.0


def test_what_was_added_while_redis_was_away_is_a_backlog() -> None:
    """Redis went away and came back: the orders added meanwhile waited for Redis, not for this
    instance; after `resume` they are a backlog, and waits count from the resumption."""
    a = Admission(AdmissionLimits(max_intake_age_ms=50))
    a.start(1_000 * MS)
    a.gate(1_000 * MS, 0)
    during = a.gate(20_000 * MS, 0)  # without resume: an order added at 19,000 waited 1 s
    assert during.refuse(b"19000-0") == QUEUED
    a.resume(20_000 * MS)
    after = a.gate(20_010 * MS, 0)
    assert after.backlog(b"19000-0") and after.refuse(b"19000-0") is None
    assert after.refuse(b"20005-0") is None  # waited 5 ms from the resumption
    later = a.gate(20_100 * MS, 0)
    assert later.refuse(b"20030-0") == QUEUED  # waited 70 ms after it
