"""The settlement hold: a paid pay's credit is pending for SETTLEMENT_HOLD_SECONDS, then available;
withdrawals need available; refunds take from pending while the pay's credit is held."""

import dataclasses
import json
import time

import pytest
import time_machine

from payapi import worker
from payapi.domain.clock import iso
from payapi.infra.db import db
from payapi.infra.gateway import refund_from
from payapi.infra.models import Pay, Refund, Wallet
from payapi.money import books, payments, refunds, wallet
from tests.support.config import SERVICE_KEY
from tests.support.scenarios import set_up_expert, withdraw

HOLD_S = 3


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, settlement_hold_seconds=HOLD_S)


@pytest.fixture
def clock():
    with time_machine.travel(time.time(), tick=False) as traveller:
        yield traveller


@pytest.fixture
def expert(make_user, clock):
    return set_up_expert(make_user())


def balance(user):
    return user.get("/rest/pay/balance").json["info"]


def buckets(user_id):
    wallet = Wallet.get_by_id(user_id)
    return wallet.pending, wallet.available


def test_a_credit_is_pending_until_the_hold_is_over(expert, pay_expert, clock, settings, gateway):
    paid = pay_expert(expert.id, 10_000)
    paid_at = Pay.get_by_id(paid["pay_id"]).paid_at
    info = balance(expert)
    assert (info["balance"], info["pending"], info["available"]) == (10_000, 10_000, 0)
    assert info["next_available_at"] == iso(paid_at + HOLD_S * 1000)
    assert info["can_withdraw"] is False
    assert withdraw(expert, 1_000).json["code"] == 910

    clock.shift(HOLD_S - 1)
    assert payments.release_holds() == {"released": 0, "failed": 0}
    assert buckets(expert.id) == (10_000, 0)

    clock.shift(1)
    assert worker.run_once(settings, gateway)["holds"] == {"released": 1, "failed": 0}
    info = balance(expert)
    assert (info["balance"], info["pending"], info["available"], info["next_available_at"]) == (10_000, 0, 10_000, None)
    assert info["can_withdraw"] is True
    assert withdraw(expert.remint(), 1_000).json["code"] == 900
    assert payments.release_holds() == {"released": 0, "failed": 0}  # released once


def test_each_credit_has_its_own_hold(expert, pay_expert, clock):
    pay_expert(expert.id, 1_000)
    clock.shift(2)
    pay_expert(expert.id, 2_000)
    clock.shift(1)
    assert payments.release_holds()["released"] == 1
    assert buckets(expert.id) == (2_000, 1_000)
    clock.shift(2)
    assert payments.release_holds()["released"] == 1
    assert buckets(expert.id) == (0, 3_000)


def refund(app, pay_id, amount):
    answer = app.post(
        f"/internal/pays/{pay_id}/refunds",
        json.dumps({"amount": amount, "description": "退"}).encode(),
        headers={"X-Service-Key": SERVICE_KEY},
        content_type="application/json",
        expect_errors=True,
    )
    assert answer.json["code"] == 900, answer.json
    return answer.json["refund"]


def test_a_refund_takes_from_pending_while_the_pay_is_held(app, expert, pay_expert, clock):
    first = pay_expert(expert.id, 10_000)
    clock.shift(HOLD_S)
    payments.release_holds()
    second = pay_expert(expert.id, 4_000)
    assert buckets(expert.id) == (4_000, 10_000)
    refund(app, second["pay_id"], 1_000)  # still held: from pending
    assert buckets(expert.id) == (3_000, 10_000)
    refund(app, first["pay_id"], 2_000)  # released: from available
    assert buckets(expert.id) == (3_000, 8_000)
    clock.shift(HOLD_S)
    payments.release_holds()
    assert buckets(expert.id) == (0, 11_000)  # what was left of the second pay's credit


def test_a_refund_after_a_withdrawal_can_leave_the_balance_negative(app, expert, pay_expert, clock, gateway):
    paid = pay_expert(expert.id, 10_000)
    clock.shift(HOLD_S)
    payments.release_holds()
    assert withdraw(expert.remint(), 10_000).json["code"] == 900
    refund(app, paid["pay_id"], 8_000)
    info = balance(expert)
    assert (info["balance"], info["available"], info["can_withdraw"]) == (-8_000, -8_000, False)


def fail_at_ping(fake_pingpp, refund_info):
    """Ping++ fails an accepted refund; what payapi learns of it (worker, reconciliation) goes through apply_refund."""
    failed = fake_pingpp.settle_refund(Refund.get_by_id(refund_info["refund_id"]).pingpp_refund_id, "failed")
    assert refunds.apply_refund(refund_from(failed)) == "applied"


@pytest.fixture
def refunded(app, expert, pay_expert):
    """A held credit of 10,000 fen, 4,000 of it refunded (accepted by Ping++, not settled)."""
    made = refund(app, pay_expert(expert.id, 10_000)["pay_id"], 4_000)
    assert buckets(expert.id) == (6_000, 0)
    return made


def test_a_failed_refunds_share_goes_back_to_pending_while_the_hold_is_not_released_even_past_its_time(
    expert, refunded, clock, fake_pingpp
):
    clock.shift(HOLD_S + 60)  # the hold is over by the clock, but no worker has released it yet
    fail_at_ping(fake_pingpp, refunded)
    assert buckets(expert.id) == (10_000, 0)
    assert payments.release_holds() == {"released": 1, "failed": 0}
    assert buckets(expert.id) == (0, 10_000)


def test_once_the_hold_is_released_a_failed_refunds_share_goes_to_available_even_on_a_host_whose_clock_is_behind(
    expert, refunded, clock, fake_pingpp
):
    clock.shift(HOLD_S)
    assert payments.release_holds()["released"] == 1
    assert buckets(expert.id) == (0, 6_000)
    clock.shift(-HOLD_S)  # another host, its clock a few seconds behind: by it the hold is not over
    fail_at_ping(fake_pingpp, refunded)
    assert buckets(expert.id) == (0, 10_000)
    clock.shift(HOLD_S)
    assert payments.release_holds() == {"released": 0, "failed": 0}
    assert buckets(expert.id) == (0, 10_000)


def test_releasing_a_hold_the_books_already_released_is_refused_as_a_bug(expert, pay_expert, clock):
    paid = pay_expert(expert.id, 10_000)
    clock.shift(HOLD_S)
    assert payments.release_holds()["released"] == 1
    with pytest.raises(books.Unbalanced), db.atomic() as transaction:
        pay = Pay.get_by_id(paid["pay_id"])
        pay.held = 1_000  # a held amount the books no longer have: releasing it would book nothing
        try:
            wallet.release_hold(pay)
        finally:
            transaction.rollback()
    assert buckets(expert.id) == (0, 10_000)
