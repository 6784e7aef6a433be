"""Cron in a time zone: daily shorthand, clear errors, and the DST rules."""

import re
from datetime import UTC, datetime

import pytest
from django.utils import translation

from console.schedules.cron import CronError, next_runs, parse, previous_run, zone


def test_daily_shorthand_and_canonical_form():
    assert str(parse("daily at 03:00")) == "0 3 * * *"
    assert str(parse("3:05")) == "5 3 * * *"
    assert str(parse("  0  3 * *   mon-fri ")) == "0 3 * * mon-fri"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 3 * *", "five cron fields"),
        ("61 3 * * *", "minute field '61' is not valid"),
        ("0 25 * * *", "hour field '25' is not valid"),
        ("0 3 * * funday", "day of week field 'funday' is not valid"),
        ("daily at 24:00", "five cron fields"),
    ],
)
def test_invalid_expressions_say_which_field(text, message):
    with pytest.raises(CronError, match=message):
        parse(text)


@pytest.mark.parametrize(
    ("text", "english", "chinese"),
    [
        ("61 3 * * *", "61 is above the largest value, 59", "61 大于最大值 59"),
        ("0 3 0 * *", "0 is below the smallest value, 1", "0 小于最小值 1"),
        ("0 3 * * funday", "'funday' is neither a number nor a day or month name", "'funday' 既不是数字"),
        ("1,,2 3 * * *", "a part between commas is empty", "逗号之间有一段是空的"),
        ("*/ 3 * * *", "a step after / must be a whole number", "步长必须是整数"),
        ("*/5x 3 * * *", "a step after / must be a whole number", "步长必须是整数"),
        ("1-5/0 3 * * *", "a step of 0 is not allowed", "步长不能为 0"),
        ("-1 3 * * *", "negative numbers are not allowed", "不允许负数"),
    ],
)
def test_what_is_wrong_in_a_field_is_said_in_the_operators_language(text, english, chinese):
    # The parser's own words are English; the page says them in the operator's language.
    with pytest.raises(CronError, match=re.escape(english)):
        parse(text)
    with translation.override("zh-hans"), pytest.raises(CronError) as caught:
        parse(text)
    assert chinese in str(caught.value)


def test_unknown_zone():
    with pytest.raises(CronError, match="Unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")


def test_shanghai_three_am_is_seven_pm_utc_the_day_before():
    runs = next_runs(parse("daily at 03:00"), zone("Asia/Shanghai"), datetime(2026, 11, 24, 12, tzinfo=UTC), 2)
    assert runs == [datetime(2026, 11, 24, 19, tzinfo=UTC), datetime(2026, 11, 25, 19, tzinfo=UTC)]


def test_spring_forward_skips_a_time_that_does_not_exist():
    # 2027-03-14: New York clocks jump from 02:00 to 03:00.
    runs = next_runs(parse("30 2 * * *"), zone("America/New_York"), datetime(2027, 3, 13, tzinfo=UTC), 3)
    assert runs == [
        datetime(2027, 3, 13, 7, 30, tzinfo=UTC),  # 02:30 EST
        datetime(2027, 3, 15, 6, 30, tzinfo=UTC),  # 02:30 EDT; the 14th is skipped
        datetime(2027, 3, 16, 6, 30, tzinfo=UTC),
    ]


def test_fall_back_runs_a_repeated_time_once():
    # 2026-11-01: 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
    runs = next_runs(parse("30 1 * * *"), zone("America/New_York"), datetime(2026, 11, 1, tzinfo=UTC), 2)
    assert runs == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 2, 6, 30, tzinfo=UTC)]
    # Fired again at the second 01:30, the latest planned time is still the first one.
    again = previous_run(parse("30 1 * * *"), zone("America/New_York"), datetime(2026, 11, 1, 6, 31, tzinfo=UTC))
    assert again == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_leap_day_is_found():
    runs = next_runs(parse("0 3 29 2 *"), zone("UTC"), datetime(2026, 11, 24, tzinfo=UTC), 1)
    assert runs == [datetime(2028, 2, 29, 3, tzinfo=UTC)]
