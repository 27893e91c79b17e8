"""POST/GET /internal/pays/{pay_id}/refunds: refunds the order service asks for, through Ping++.

The expert's share is debited when Ping++ accepts a refund, given back if Ping++ fails it, and
nothing more is debited when it succeeds; racing requests never refund more than was paid.
"""

import dataclasses
import json
import time
import types

import hypothesis
import pytest
import time_machine
from hypothesis import strategies as st

from payapi import worker
from payapi.infra.models import Pay, Refund
from payapi.money import refunds, wallet
from tests.conftest import SERVICE_KEY, Scripted, balance_of, ledger_of

FEE_BPS = 250


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, platform_fee_bps=FEE_BPS)


def ask(app, pay_id, body=None, key=None, raw=None):
    headers = {"X-Service-Key": SERVICE_KEY, **({"Idempotency-Key": key} if key else {})}
    data = raw if raw is not None else json.dumps(body if body is not None else {"description": "预约取消"}).encode()
    return app.post(f"/internal/pays/{pay_id}/refunds", data, headers=headers, content_type="application/json",
                    expect_errors=True)


def listed(app, pay_id):
    return app.get(f"/internal/pays/{pay_id}/refunds", headers={"X-Service-Key": SERVICE_KEY}, expect_errors=True)


@pytest.fixture
def paid(pay_expert):
    """A pay of 10,000 fen, paid; its expert credited 9,750."""
    return pay_expert("e" * 24, 10_000)


# --- asking ---------------------------------------------------------------------------------------

def test_a_partial_refund_is_made_at_ping_and_the_experts_share_is_taken_at_once(app, paid, fake_pingpp):
    answer = ask(app, paid["pay_id"], {"amount": 4_000, "description": "预约取消"})
    assert answer.status_int == 200 and answer.json["code"] == 900, answer.json
    refund = answer.json["refund"]
    assert (refund["pay_id"], refund["amount"], refund["status"], refund["description"]) == (
        paid["pay_id"], 4_000, "pending", "预约取消"
    )
    (made,) = [r for r in fake_pingpp.refunds.values()]
    assert (made["amount"], made["metadata"], made["charge"]) == (4_000, {"refund_id": refund["refund_id"]},
                                                                   paid["charge"]["id"])
    assert ledger_of(paid["expert_id"])[-1] == ("refund", made["id"], -3_900)
    assert balance_of(paid["expert_id"]) == 9_750 - 3_900
    assert Pay.get_by_id(paid["pay_id"]).status == "paid"
    assert listed(app, paid["pay_id"]).json == {"code": 900, "list": [refund]}


def test_without_an_amount_the_rest_is_refunded(app, paid):
    assert ask(app, paid["pay_id"], {"amount": "3000", "description": "部分"}).json["code"] == 900
    rest = ask(app, paid["pay_id"]).json["refund"]
    assert rest["amount"] == 7_000
    assert balance_of(paid["expert_id"]) == 0


@pytest.mark.parametrize("amount", [10_001, 100_000_000])
def test_more_than_was_paid_is_910_and_nothing_is_asked(app, paid, fake_pingpp, amount):
    answer = ask(app, paid["pay_id"], {"amount": amount, "description": "多退"})
    assert (answer.status_int, answer.json["code"]) == (403, 910)
    assert fake_pingpp.refunds == {} and Refund.select().count() == 0


def test_refunds_already_accepted_count(app, paid):
    assert ask(app, paid["pay_id"], {"amount": 6_000, "description": "一"}).json["code"] == 900
    assert ask(app, paid["pay_id"], {"amount": 4_001, "description": "二"}).json["code"] == 910
    assert ask(app, paid["pay_id"], {"amount": 4_000, "description": "二"}).json["code"] == 900
    fully = ask(app, paid["pay_id"], {"description": "三"})
    assert (fully.status_int, fully.json["code"]) == (403, 910)


def test_an_unpaid_pay_cannot_be_refunded(app, order_service):
    info = order_service().json["info"]
    answer = ask(app, info["pay_id"])
    assert (answer.status_int, answer.json["code"]) == (403, 910)


def test_an_unknown_pay_is_911(app, database):
    assert ask(app, "0" * 24).json["code"] == 911
    assert listed(app, "0" * 24).json["code"] == 911


@pytest.mark.parametrize(
    "body",
    [{}, {"description": ""}, {"description": "x" * 256}, {"description": "d", "amount": 0},
     {"description": "d", "amount": 10.5}, {"description": "d", "amount": "-1"}, {"description": 5}],
)
def test_bad_bodies_are_904(app, paid, body):
    answer = ask(app, paid["pay_id"], body)
    assert (answer.status_int, answer.json["code"]) == (400, 904)


def test_an_explicit_null_amount_is_904_and_nothing_is_refunded(app, paid, fake_pingpp):
    # Absent means "everything still refundable"; a null is a caller's bug, not a full refund.
    answer = ask(app, paid["pay_id"], {"amount": None, "description": "退"})
    assert (answer.status_int, answer.json["code"]) == (400, 904)
    assert fake_pingpp.refunds == {} and Refund.select().count() == 0
    assert balance_of(paid["expert_id"]) == 9_750


def test_the_service_key_is_needed(app, paid):
    answer = app.post(f"/internal/pays/{paid['pay_id']}/refunds", b'{"description":"x"}',
                      content_type="application/json", expect_errors=True)
    assert (answer.status_int, answer.json["code"]) == (401, 901)


@pytest.mark.parametrize("failure", ["fail", "hang"])
def test_ping_failing_is_920_and_nothing_is_written_or_debited(app, paid, fake_pingpp, settings, failure):
    if failure == "fail":
        fake_pingpp.fail_next()
    else:
        fake_pingpp.hang_next(settings.pingpp_timeout + 0.5)
    answer = ask(app, paid["pay_id"], {"amount": 1_000, "description": "退"})
    assert (answer.status_int, answer.json["code"]) == (502, 920)
    assert Refund.select().count() == 0
    assert balance_of(paid["expert_id"]) == 9_750
    assert ask(app, paid["pay_id"], {"amount": 1_000, "description": "退"}).json["code"] == 900


# --- Ping++ settles it ------------------------------------------------------------------------------

def test_refund_succeeded_marks_it_succeeded_and_debits_nothing_more(app, paid, fake_pingpp, send_event):
    refund = ask(app, paid["pay_id"]).json["refund"]
    (made_id,) = fake_pingpp.refunds
    succeeded = fake_pingpp.settle_refund(made_id, "succeeded")
    assert send_event("refund.succeeded", succeeded).json["result"] == "applied"
    assert send_event("refund.succeeded", succeeded).json["result"] == "ignored"  # another event, same refund
    assert Refund.get_by_id(refund["refund_id"]).status == "succeeded"
    assert balance_of(paid["expert_id"]) == 0
    assert [kind for kind, _, _ in ledger_of(paid["expert_id"])] == ["charge", "refund"]
    assert Pay.get_by_id(paid["pay_id"]).status == "refunded"


def test_a_refund_ping_fails_gives_the_share_back_when_the_worker_asks(app, paid, fake_pingpp, gateway, settings):
    refund = ask(app, paid["pay_id"], {"amount": 4_000, "description": "退"}).json["refund"]
    (made_id,) = fake_pingpp.refunds
    fake_pingpp.settle_refund(made_id, "failed")  # Ping++ sends no event for a failed refund
    with time_machine.travel(time.time() + 5 * 60 + 1, tick=False):
        assert refunds.reconcile_refunds(gateway)["settled"] == 1
    assert Refund.get_by_id(refund["refund_id"]).status == "failed"
    assert balance_of(paid["expert_id"]) == 9_750
    assert ledger_of(paid["expert_id"])[-2:] == [("refund", made_id, -3_900), ("refund_failed", made_id, 3_900)]
    assert listed(app, paid["pay_id"]).json["list"][0]["status"] == "failed"
    # The money is refundable again.
    assert ask(app, paid["pay_id"], {"amount": 10_000, "description": "全退"}).json["code"] == 900


def fail_at_ping(fake_pingpp, gateway, *refund_ids):
    """Ping++ fails these accepted refunds (no event for that); the worker learns it a few minutes later."""
    for refund_id in refund_ids:
        fake_pingpp.settle_refund(Refund.get_by_id(refund_id).pingpp_refund_id, "failed")
    with time_machine.travel(time.time() + 5 * 60 + 1, tick=False):
        assert refunds.reconcile_refunds(gateway)["settled"] == len(refund_ids)


def test_after_a_failed_refund_the_shares_of_a_full_refund_add_up_to_exactly_the_credit(app, paid, fake_pingpp,
                                                                                         gateway):
    first = ask(app, paid["pay_id"], {"amount": 1, "description": "一"}).json["refund"]  # share 0 (0.975)
    assert ask(app, paid["pay_id"], {"amount": 1, "description": "二"}).json["code"] == 900  # share 1 (1.95 in all)
    fail_at_ping(fake_pingpp, gateway, first["refund_id"])
    rest = ask(app, paid["pay_id"], {"description": "余"}).json["refund"]
    assert rest["amount"] == 9_999
    assert balance_of(paid["expert_id"]) == 0  # refunded in full: the whole credit taken, not a fen more or less


def test_a_refund_after_others_failed_out_of_order_is_accepted_with_its_pro_rata_share(app, paid, fake_pingpp, gateway):
    amounts = [1, 39, 1]  # shares 0, 39, 0: 0.975, 39.0 and 39.975 fen in all, rounded down
    made = [ask(app, paid["pay_id"], {"amount": a, "description": "退"}).json["refund"] for a in amounts]
    fail_at_ping(fake_pingpp, gateway, made[1]["refund_id"])
    answer = ask(app, paid["pay_id"], {"amount": 1, "description": "退"})
    assert answer.json["code"] == 900, answer.json  # its share is never more than its amount, nor below 0
    assert balance_of(paid["expert_id"]) == 9_750 - 2  # 3 fen stand refunded: 2.925 of the credit, rounded down


@hypothesis.given(
    money=st.integers(1, 10_000), fee_bps=st.integers(0, 10_000),
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 10_000)), max_size=12),
)
def test_shares_stay_within_each_refund_and_those_standing_take_exactly_their_pro_rata_part(money, fee_bps, steps):
    pay = types.SimpleNamespace(money=money, credited=wallet.credit_for(money, fee_bps), amount_refunded=0)
    standing, taken = [], 0
    for refund, n in steps:
        if refund and pay.amount_refunded < money:
            amount = 1 + n % (money - pay.amount_refunded)
            share = wallet.refund_share(pay, amount)
            standing.append(amount)
            pay.amount_refunded += amount
        elif not refund and standing:
            amount = standing.pop(n % len(standing))  # Ping++ fails any of them, in any order
            share = wallet.returned_share(pay, amount)
            pay.amount_refunded -= amount
            share = -share
        else:
            continue
        assert 0 <= abs(share) <= amount
        taken += share
        assert taken == pay.credited * pay.amount_refunded // money
    if pay.amount_refunded == money:
        assert taken == pay.credited


def test_a_pending_refund_is_asked_about_only_after_a_few_minutes(app, paid, fake_pingpp, gateway):
    ask(app, paid["pay_id"])
    (made_id,) = fake_pingpp.refunds
    fake_pingpp.settle_refund(made_id, "succeeded")
    assert refunds.reconcile_refunds(gateway) == {"settled": 0, "dropped": 0, "failed": 0}
    with time_machine.travel(time.time() + 5 * 60 + 1, tick=False):
        assert refunds.reconcile_refunds(gateway)["settled"] == 1
    assert Refund.get(Refund.pingpp_refund_id == made_id).status == "succeeded"


def test_a_refund_whose_answer_was_lost_is_found_at_ping_and_its_event_applies_nothing_more(
    app, paid, fake_pingpp, send_event
):
    fake_pingpp.lose_next_response()
    answer = ask(app, paid["pay_id"], {"amount": 2_000, "description": "退"}).json
    (made_id,) = fake_pingpp.refunds
    assert (answer["code"], answer["refund"]["status"]) == (900, "pending")  # found by asking Ping++ once
    assert balance_of(paid["expert_id"]) == 9_750 - 1_950
    assert send_event("refund.succeeded", fake_pingpp.settle_refund(made_id, "succeeded")).json["result"] == "applied"
    assert balance_of(paid["expert_id"]) == 9_750 - 1_950
    (row,) = Refund.select()
    assert (row.refund_id, row.pingpp_refund_id, row.status, row.amount) == (
        answer["refund"]["refund_id"], made_id, "succeeded", 2_000)


def test_a_lost_answers_refund_is_applied_once_when_its_event_arrives(app, paid, fake_pingpp, send_event):
    fake_pingpp.lose_next_response()
    fake_pingpp.fail_next()  # then (faults queue in order) Ping++ cannot say whether it made one: 920, nothing kept
    assert ask(app, paid["pay_id"], {"amount": 2_000, "description": "退"}).json["code"] == 920
    assert Refund.select().count() == 0 and balance_of(paid["expert_id"]) == 9_750
    (made_id,) = fake_pingpp.refunds
    assert send_event("refund.succeeded", fake_pingpp.settle_refund(made_id, "succeeded")).json["result"] == "applied"
    assert balance_of(paid["expert_id"]) == 9_750 - 1_950
    (row,) = Refund.select()
    assert (row.pingpp_refund_id, row.status, row.amount) == (made_id, "succeeded", 2_000)


def test_a_refund_made_on_the_ping_dashboard_is_applied_once(app, paid, fake_pingpp, send_event):
    made = fake_pingpp.refund(paid["charge"]["id"], 10_000)
    assert send_event("refund.succeeded", made).json["result"] == "applied"
    (row,) = listed(app, paid["pay_id"]).json["list"]
    assert (row["amount"], row["status"]) == (10_000, "succeeded")
    assert Pay.get_by_id(paid["pay_id"]).status == "refunded"
    assert ask(app, paid["pay_id"]).json["code"] == 910


def test_the_worker_pass_runs_refunds(app, paid, fake_pingpp, gateway, settings):
    ask(app, paid["pay_id"])
    (made_id,) = fake_pingpp.refunds
    fake_pingpp.settle_refund(made_id, "succeeded")
    with time_machine.travel(time.time() + 5 * 60 + 1, tick=False):
        assert worker.run_once(settings, gateway)["refunds"]["settled"] == 1
    assert Refund.get(Refund.pingpp_refund_id == made_id).status == "succeeded"


def test_a_refund_whose_reservation_the_worker_dropped_while_ping_made_it_is_booked_again(app_with, gateway, paid,
                                                                                            fake_pingpp):
    def dropped_meanwhile(create, request):
        # The worker judged the reservation stale (Ping++ had no such refund yet) and dropped it.
        Refund.delete().where(Refund.refund_id == request.refund_id).execute()
        return create(request)

    answer = ask(app_with(Scripted(gateway, create_refund=dropped_meanwhile)), paid["pay_id"],
                 {"amount": 2_000, "description": "退"})
    assert answer.json["code"] == 900, answer.json
    (made_id,) = fake_pingpp.refunds
    (row,) = Refund.select()
    assert (row.refund_id, row.pingpp_refund_id, row.amount) == (answer.json["refund"]["refund_id"], made_id, 2_000)
    assert balance_of(paid["expert_id"]) == 9_750 - 1_950
