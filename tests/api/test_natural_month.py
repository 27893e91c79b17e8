"""The natural month in TIMEZONE (default Asia/Shanghai, UTC+8): what once a month means."""

import dataclasses
import datetime

import pytest
import time_machine
import webtest

from payapi.app import create_app
from payapi.domain.clock import natural_month, now_ms
from payapi.users.sms import FileSms
from tests.support.scenarios import User, balance, refresh_token, set_up_expert, withdraw

# --- clock -------------------------------------------------------------------------------------


def test_natural_month_follows_the_clock(settings):
    with time_machine.travel("2026-11-30T15:59:59.999Z", tick=False) as traveller:
        assert natural_month(now_ms(), settings.tz) == "2026-11"
        traveller.shift(datetime.timedelta(milliseconds=1))
        assert natural_month(now_ms(), settings.tz) == "2026-12"


# --- withdrawals across the boundary -----------------------------------------------------------


@pytest.fixture
def funded(make_user, pay_expert):
    """Makes an expert with 10,000 fen at the current (travelled) time."""

    def make(user=None):
        expert = set_up_expert(user or make_user())
        pay_expert(expert.id, 10_000)
        return expert

    return make


# Each script: (when, the answer to a 1,000 fen withdrawal then), one expert, in Asia/Shanghai
# (UTC+8: a natural month there ends at 16:00 UTC on its last day).
MONTH_BOUNDARIES = {
    "just before and just after the end of November": [
        ("2026-11-30T15:59:00.000Z", 900),
        ("2026-11-30T15:59:30.000Z", 910),
        ("2026-11-30T16:01:00.000Z", 900),
        ("2026-11-30T16:02:00.000Z", 910),
    ],
    "the last millisecond of November is still November": [
        ("2026-11-30T15:58:00.000Z", 900),
        ("2026-11-30T15:59:59.999Z", 910),
        ("2026-11-30T16:00:00.000Z", 900),
    ],
    "a December withdrawal does not block January": [
        ("2026-12-31T15:30:00.000Z", 900),
        ("2026-12-31T16:00:00.000Z", 900),
    ],
    "the leap day belongs to February": [
        ("2028-02-01T00:00:00.000Z", 900),
        ("2028-02-29T15:59:00.000Z", 910),
        ("2028-02-29T16:00:00.000Z", 900),
    ],
}


@pytest.mark.parametrize("script", MONTH_BOUNDARIES.values(), ids=MONTH_BOUNDARIES.keys())
def test_one_withdrawal_per_natural_month(funded, script):
    with time_machine.travel(script[0][0], tick=False) as clock:
        expert = funded()
        for when, code in script:
            clock.move_to(when)
            assert withdraw(refresh_token(expert), 1000).json["code"] == code, when
        withdrawn = 1000 * [code for _, code in script].count(900)
        assert balance(expert) == 10_000 - withdrawn  # inside: the token minted then has expired by now


def test_balance_points_to_the_start_of_the_next_month_after_a_november_withdrawal(funded):
    with time_machine.travel("2026-11-30T15:59:00.000Z", tick=False) as traveller:
        expert = funded()
        assert withdraw(expert, 1000).json["code"] == 900
        info = expert.get("/rest/pay/balance").json["info"]
        assert (info["can_withdraw"], info["next_withdraw_at"]) == (False, "2026-11-30T16:00:00.000Z")
        traveller.move_to("2026-11-30T16:00:00.000Z")
        info = expert.get("/rest/pay/balance").json["info"]
        assert (info["can_withdraw"], info["next_withdraw_at"]) == (True, None)


def test_early_in_a_month_the_wait_is_until_the_next_first(funded):
    with time_machine.travel("2026-11-01T00:00:00.000Z", tick=False):  # 08:00 on 1 November locally
        expert = funded()
        assert withdraw(expert, 1000).json["code"] == 900
        assert expert.get("/rest/pay/balance").json["info"]["next_withdraw_at"] == "2026-11-30T16:00:00.000Z"


def test_timezone_utc_moves_the_boundary(database, settings, gateway, pay_expert):
    utc = dataclasses.replace(settings, timezone="UTC")
    app = webtest.TestApp(create_app(utc, gateway, FileSms(settings.sms_file)))
    with time_machine.travel("2026-11-30T15:59:00.000Z", tick=False) as traveller:
        expert = set_up_expert(User(app, utc))
        pay_expert(expert.id, 10_000)
        assert withdraw(expert, 1000).json["code"] == 900
        traveller.move_to("2026-11-30T16:01:00.000Z")  # already December in Shanghai, not in UTC
        assert withdraw(expert, 1000).json["code"] == 910
        info = expert.get("/rest/pay/balance").json["info"]
        assert info["next_withdraw_at"] == "2026-12-01T00:00:00.000Z"
        traveller.move_to("2026-12-01T00:00:00.000Z")
        assert withdraw(refresh_token(expert), 1000).json["code"] == 900
