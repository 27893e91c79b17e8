"""The natural month in TIMEZONE (default Asia/Shanghai, UTC+8) as payapi/clock.py computes it;
withdrawals across the boundary are tests/api/test_natural_month.py."""

import datetime
import zoneinfo

import pytest

from payapi.domain.clock import iso, natural_month, next_month_start

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
UTC = zoneinfo.ZoneInfo("UTC")


def ms(text):
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.parametrize(
    "instant, month",
    [
        ("2026-11-30T15:59:59.999Z", "2026-11"),  # 23:59:59.999 on 30 November in Shanghai
        ("2026-11-30T16:00:00.000Z", "2026-12"),  # midnight, 1 December in Shanghai
        ("2026-10-31T16:00:00.000Z", "2026-11"),
        ("2026-10-31T15:59:59.999Z", "2026-10"),
        ("2026-12-31T15:59:59.999Z", "2026-12"),
        ("2026-12-31T16:00:00.000Z", "2027-01"),
        ("2028-02-28T16:00:00.000Z", "2028-02"),  # 29 February 2028 local
        ("2028-02-29T15:59:59.999Z", "2028-02"),
        ("2028-02-29T16:00:00.000Z", "2028-03"),
    ],
)
def test_natural_month_is_the_calendar_month_in_shanghai(instant, month):
    assert natural_month(ms(instant), SHANGHAI) == month


@pytest.mark.parametrize(
    "instant, start",
    [
        ("2026-11-01T00:00:00.000Z", "2026-11-30T16:00:00.000Z"),
        ("2026-11-30T15:59:59.999Z", "2026-11-30T16:00:00.000Z"),
        ("2026-11-30T16:00:00.000Z", "2026-12-31T16:00:00.000Z"),
        ("2026-12-31T15:59:59.999Z", "2026-12-31T16:00:00.000Z"),
        ("2026-12-31T16:00:00.000Z", "2027-01-31T16:00:00.000Z"),
        ("2028-02-10T00:00:00.000Z", "2028-02-29T16:00:00.000Z"),
        ("2028-01-31T16:00:00.000Z", "2028-02-29T16:00:00.000Z"),
    ],
)
def test_next_month_start_is_local_midnight_of_the_first(instant, start):
    assert iso(next_month_start(ms(instant), SHANGHAI)) == start


def test_utc_months_end_at_utc_midnight():
    assert natural_month(ms("2026-11-30T23:59:59.999Z"), UTC) == "2026-11"
    assert natural_month(ms("2026-12-01T00:00:00.000Z"), UTC) == "2026-12"
    assert iso(next_month_start(ms("2026-11-30T16:00:00.000Z"), UTC)) == "2026-12-01T00:00:00.000Z"
