"""The scheduler's calendar, pure: schedules parsed with errors naming the job and the value, the
latest and next occurrence (across midnight, aligned to the epoch), the trading session's last
closed day."""

from __future__ import annotations

import calendar as cal
import time

import pytest

from backend.scheduling.calendar import DAY_S, Schedule, Session, duration, hhmm, is_late


def ts(text: str) -> float:
    """'YYYY-MM-DD HH:MM:SS' UTC as epoch seconds."""
    return float(cal.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def test_hhmm_and_duration_parse() -> None:
    assert hhmm("00:00") == 0 and hhmm("7:05") == 425 and hhmm("23:59") == 1439
    assert duration("30s") == 30 and duration("15m") == 900 and duration("1.5h") == 5400
    assert duration(" 2d ") == 2 * DAY_S and duration("1 h") == 3600


def test_a_daily_job_across_midnight() -> None:
    s = Schedule.parse("daily-report", "23:30", None)
    # just after midnight: the latest occurrence is yesterday's, the next one tonight
    assert s.latest(ts("2024-03-02 00:10:00")) == ("2024-03-01", ts("2024-03-01 23:30:00"))
    assert s.next_due(ts("2024-03-02 00:10:00")) == ts("2024-03-02 23:30:00")
    # at the minute itself it is due (the latest), the next one is tomorrow's
    assert s.latest(ts("2024-03-02 23:30:00")) == ("2024-03-02", ts("2024-03-02 23:30:00"))
    assert s.next_due(ts("2024-03-02 23:30:00")) == ts("2024-03-03 23:30:00")
    early = Schedule.parse("sink-compaction", "00:30", None)
    assert early.latest(ts("2024-03-01 23:59:59")) == ("2024-03-01", ts("2024-03-01 00:30:00"))
    assert early.next_due(ts("2024-03-01 23:59:59")) == ts("2024-03-02 00:30:00")
    # over a month and a year end
    assert early.next_due(ts("2024-12-31 12:00:00")) == ts("2025-01-01 00:30:00")
    assert early.latest(ts("2025-01-01 00:29:59"))[0] == "2024-12-31"
    assert s.describe() == "daily at 23:30 UTC" and s.period_s == DAY_S


def test_an_every_job_is_aligned_to_the_epoch() -> None:
    s = Schedule.parse("compact", None, "15m")
    assert s.latest(ts("2024-03-01 23:59:00")) == ("2024-03-01T23:45:00", ts("2024-03-01 23:45:00"))
    assert s.next_due(ts("2024-03-01 23:59:00")) == ts("2024-03-02 00:00:00")
    assert s.latest(ts("2024-03-02 00:00:00"))[0] == "2024-03-02T00:00:00"
    assert Schedule.parse("d", None, "1d").latest(ts("2024-03-01 13:00:00"))[0] == "2024-03-01T00:00:00"
    assert s.describe() == "every 15m" and s.period_s == 900


@pytest.mark.parametrize(
    "at,every,message",
    [
        ("25:00", None, "job 'daily-report': time '25:00' is not HH:MM (00:00 .. 23:59, UTC)"),
        ("12:60", None, "job 'daily-report': time '12:60' is not HH:MM"),
        ("noon", None, "job 'daily-report': time 'noon' is not HH:MM"),
        (None, "5x", "job 'daily-report': every '5x' is not a positive duration like 30s, 15m, 1h, 1d"),
        (None, "0m", "job 'daily-report': every '0m' is not a positive duration"),
        (None, "-1h", "job 'daily-report': every '-1h' is not a positive duration"),
        (None, None, "job 'daily-report' needs exactly one of `at` (HH:MM) or `every` (15m)"),
        ("01:00", "1h", "job 'daily-report' needs exactly one of `at` (HH:MM) or `every` (15m)"),
    ],
)
def test_bad_schedules_name_the_job_and_the_value(at: str | None, every: str | None, message: str) -> None:
    with pytest.raises(ValueError) as err:
        Schedule.parse("daily-report", at, every)
    assert message in str(err.value)


def test_an_every_shorter_than_the_tick_names_the_job() -> None:
    s = Schedule.parse("r", None, "5s")
    with pytest.raises(
        ValueError, match=r"^job 'r': every 5s is shorter than tick_s 20s \(how often the scheduler looks\)$"
    ):
        s.check_tick("r", 20.0)
    s.check_tick("r", 5.0)  # as often as the scheduler looks: fine
    Schedule.parse("r", "00:01", None).check_tick("r", 3600.0)  # daily jobs are never too short


def test_late_means_missed_not_just_found_on_the_next_look() -> None:
    t = ts("2024-03-01 00:30:00")
    assert not is_late(t + 59, t, 20.0) and is_late(t + 61, t, 20.0)
    assert not is_late(t + 290, t, 100.0) and is_late(t + 301, t, 100.0)  # 3 ticks when ticks are long


def test_the_session_and_its_last_closed_day() -> None:
    day = Session.parse("00:00", "23:59")
    assert day.closed_day(ts("2024-03-01 00:30:00")) == "2024-02-29"
    assert day.closed_day(ts("2024-03-01 23:58:59")) == "2024-02-29"
    assert day.closed_day(ts("2024-03-01 23:59:00")) == "2024-03-01"
    assert day.is_open(ts("2024-03-01 12:00:00")) and day.is_open(ts("2024-03-01 23:59:30"))
    us = Session.parse("14:30", "21:00")
    assert not us.is_open(ts("2024-03-01 14:29:00")) and us.is_open(ts("2024-03-01 14:30:00"))
    assert us.closed_day(ts("2024-03-01 20:59:00")) == "2024-02-29"
    assert us.closed_day(ts("2024-03-01 21:00:00")) == "2024-03-01"
    with pytest.raises(ValueError, match=r"^session_close: time '24:00' is not HH:MM"):
        Session.parse("00:00", "24:00")
