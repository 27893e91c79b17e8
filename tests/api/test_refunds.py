"""POST/GET /internal/pays/{pay_id}/refunds: refunds the order service asks for, through Ping++.

The expert's share is debited when Ping++ accepts a refund, given back if Ping++ fails it, and
nothing more is debited when it succeeds; racing requests never refund more than was paid.
"""

import dataclasses
import json
import time

import pytest
import time_machine
import webtest

from payapi import worker
from payapi.app import create_app
from payapi.contract.errors import ApiError
from payapi.domain import ids
from payapi.infra import gateway as gateway_module
from payapi.infra.gateway import GatewayError, call_seconds
from payapi.infra.models import Notification, Pay, Refund
from payapi.money import refunds
from payapi.users.sms import FileSms
from tests.support.config import SERVICE_KEY
from tests.support.databases import balance_of, ledger_of
from tests.support.pingpp import Scripted

FEE_BPS = 250


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, platform_fee_bps=FEE_BPS)


def ask(app, pay_id, body=None, key=None, raw=None):
    headers = {"X-Service-Key": SERVICE_KEY, **({"Idempotency-Key": key} if key else {})}
    data = raw if raw is not None else json.dumps(body if body is not None else {"description": "预约取消"}).encode()
    return app.post(
        f"/internal/pays/{pay_id}/refunds", data, headers=headers, content_type="application/json", expect_errors=True
    )


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
        paid["pay_id"],
        4_000,
        "pending",
        "预约取消",
    )
    (made,) = [r for r in fake_pingpp.refunds.values()]
    assert (made["amount"], made["metadata"], made["charge"]) == (
        4_000,
        {"refund_id": refund["refund_id"]},
        paid["charge"]["id"],
    )
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
    [
        {},
        {"description": ""},
        {"description": "x" * 256},
        {"description": "d", "amount": 0},
        {"description": "d", "amount": 10.5},
        {"description": "d", "amount": "-1"},
        {"description": 5},
    ],
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
    answer = app.post(
        f"/internal/pays/{paid['pay_id']}/refunds",
        b'{"description":"x"}',
        content_type="application/json",
        expect_errors=True,
    )
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


def test_after_a_failed_refund_the_shares_of_a_full_refund_add_up_to_exactly_the_credit(
    app, paid, fake_pingpp, gateway
):
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


def test_a_pending_refund_is_asked_about_only_after_a_few_minutes(app, paid, fake_pingpp, gateway):
    ask(app, paid["pay_id"])
    (made_id,) = fake_pingpp.refunds
    fake_pingpp.settle_refund(made_id, "succeeded")
    assert refunds.reconcile_refunds(gateway) == {"settled": 0, "not_made": 0, "failed": 0}
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
        answer["refund"]["refund_id"],
        made_id,
        "succeeded",
        2_000,
    )


def test_a_lost_answers_refund_is_applied_once_when_its_event_arrives(app, paid, fake_pingpp, send_event):
    fake_pingpp.lose_next_response()
    fake_pingpp.fail_next()  # then (faults queue in order) Ping++ cannot say whether it made one: pending
    answer = ask(app, paid["pay_id"], {"amount": 2_000, "description": "退"}).json
    assert (answer["code"], answer["refund"]["status"]) == (900, "pending")
    assert balance_of(paid["expert_id"]) == 9_750 - 1_950  # its share is held: Ping++ may have made it
    (made_id,) = fake_pingpp.refunds
    assert send_event("refund.succeeded", fake_pingpp.settle_refund(made_id, "succeeded")).json["result"] == "applied"
    assert balance_of(paid["expert_id"]) == 9_750 - 1_950
    (row,) = Refund.select()
    assert (row.refund_id, row.pingpp_refund_id, row.status, row.amount) == (
        answer["refund"]["refund_id"],
        made_id,
        "succeeded",
        2_000,
    )


def after_the_lease(settings):
    return time_machine.travel(time.time() + refunds.lease_ms(settings.pingpp_timeout) / 1000 + 1, tick=False)


def test_a_refund_whose_answer_and_look_up_were_lost_is_pending_and_a_plain_retry_does_not_refund_twice(
    app, paid, fake_pingpp, gateway, settings
):
    fake_pingpp.lose_next_response()  # Ping++ makes it; its answer is lost
    fake_pingpp.fail_next()  # and asking Ping++ whether it made it fails too
    first = ask(app, paid["pay_id"], {"amount": 3_000, "description": "退"})
    if first.json["code"] != 900:
        ask(app, paid["pay_id"], {"amount": 3_000, "description": "退"})  # the order service asks again
    assert [r["amount"] for r in fake_pingpp.refunds.values()] == [3_000]
    assert (first.json["code"], first.json["refund"]["status"]) == (900, "pending")
    assert ask(app, paid["pay_id"], {"amount": 7_001, "description": "退"}).json["code"] == 910  # it is held
    assert balance_of(paid["expert_id"]) == 9_750 - 2_925  # and so is its share
    assert refunds.reconcile_refunds(gateway)["settled"] == 0  # not while the request could still be running
    assert Refund.get().pingpp_refund_id is None
    with after_the_lease(settings):
        refunds.reconcile_refunds(gateway)  # the worker finds it at Ping++ by its metadata
    (made_id,) = fake_pingpp.refunds
    (row,) = Refund.select()
    assert (row.refund_id, row.pingpp_refund_id, row.status) == (first.json["refund"]["refund_id"], made_id, "pending")
    assert balance_of(paid["expert_id"]) == 9_750 - 2_925


def test_a_worker_whose_clock_is_half_a_minute_ahead_does_not_judge_a_request_still_running(
    app, paid, fake_pingpp, gateway, settings
):
    # The lease is written with the request's host's clock and read with the worker's: a worker
    # ahead by half a minute, just after the request's longest path at Ping++ (look-up, create,
    # look-up again), must still leave the reservation alone, or a create still running would be
    # failed here and made at Ping++.
    fake_pingpp.fail_next(times=2)
    answer = ask(app, paid["pay_id"], {"amount": 3_000, "description": "退"}).json
    assert (answer["code"], answer["refund"]["status"]) == (900, "pending")
    longest_path_s = refunds.LONGEST_REQUEST_CALLS * call_seconds(settings.pingpp_timeout)
    with time_machine.travel(time.time() + longest_path_s + 30, tick=False):
        assert refunds.reconcile_refunds(gateway)["not_made"] == 0
    assert Refund.get().status == "pending" and balance_of(paid["expert_id"]) == 9_750 - 2_925


def test_an_unclear_refund_ping_never_made_fails_gives_its_amount_back_and_is_announced(
    app, paid, fake_pingpp, gateway, settings
):
    fake_pingpp.fail_next(
        times=2
    )  # a 500 to the create (Ping++ did nothing, but 5xx says nothing sure), then the look-up
    answer = ask(app, paid["pay_id"], {"amount": 3_000, "description": "退"}).json
    assert (answer["code"], answer["refund"]["status"]) == (900, "pending")
    assert balance_of(paid["expert_id"]) == 9_750 - 2_925
    with after_the_lease(settings):
        assert refunds.reconcile_refunds(gateway)["not_made"] == 1
    (row,) = Refund.select()
    assert (row.refund_id, row.status, row.pingpp_refund_id) == (answer["refund"]["refund_id"], "failed", None)
    assert [n.type for n in Notification.select().where(Notification.subject_id == row.refund_id)] == ["refund.failed"]
    assert fake_pingpp.refunds == {} and balance_of(paid["expert_id"]) == 9_750
    assert ask(app, paid["pay_id"]).json["refund"]["amount"] == 10_000  # all of it is refundable again


def test_ping_refusing_a_refund_is_920_and_nothing_is_kept(app, paid, fake_pingpp):
    fake_pingpp.fail_next(status=400)
    assert ask(app, paid["pay_id"], {"amount": 3_000, "description": "退"}).json["code"] == 920
    assert Refund.select().count() == 0 and balance_of(paid["expert_id"]) == 9_750


def test_the_reservation_outlasts_the_longest_request_and_no_create_starts_too_late(
    gateway, paid, fake_pingpp, settings
):
    """The longest request: a keyed retry of one that died, which looks its refund up, creates it (the
    answer is lost) and looks it up again, each call as long as a call may take. The worker, passing
    at every step, must not take the reservation for abandoned. (The production time-out: the clock
    is moved, nobody waits.)"""
    settings = dataclasses.replace(settings, pingpp_timeout=5.0)

    def app_with(gateway_):
        return webtest.TestApp(create_app(settings, gateway_, FileSms(settings.sms_file)))

    call_s = gateway_module.call_seconds(settings.pingpp_timeout)
    lease_s = refunds.lease_ms(settings.pingpp_timeout) / 1000
    worker_saw = []

    def slow(real):
        def call(*args):
            clock.shift(call_s)
            worker_saw.append(refunds.reconcile_refunds(gateway))
            return real(*args)

        return call

    def lost(create, request):
        slow(create)(request)
        raise GatewayError("answer lost")

    def died(create, request):
        raise RuntimeError("the request died before it asked Ping++")

    def ask_with(gateway_, key, amount):
        return ask(app_with(gateway_), paid["pay_id"], {"amount": amount, "description": "退"}, key=key)

    with time_machine.travel(time.time(), tick=False) as clock:
        assert ask_with(Scripted(gateway, create_refund=died), "r-1", 3_000).json["code"] == 999
        scripted = Scripted(gateway, create_refund=lost, list_refunds=lambda real, charge_id: slow(real)(charge_id))
        answer = ask_with(scripted, "r-1", 3_000)
        assert answer.json["code"] == 900, answer.json
        assert worker_saw == [{"settled": 0, "not_made": 0, "failed": 0}] * 3
        (made,) = fake_pingpp.refunds.values()
        assert Refund.get_by_id(answer.json["refund"]["refund_id"]).pingpp_refund_id == made["id"]
        # A retry whose look-up took the whole lease sends no create (the worker may now judge it):
        # pending, and the worker finds Ping++ never made it.
        assert ask_with(Scripted(gateway, create_refund=died), "r-2", 1_000).json["code"] == 999
        slow_listing = Scripted(
            gateway, list_refunds=lambda real, charge_id: (clock.shift(lease_s), real(charge_id))[1]
        )
        late = ask_with(slow_listing, "r-2", 1_000).json
        assert (late["code"], late["refund"]["status"]) == (900, "pending") and len(fake_pingpp.refunds) == 1
        assert refunds.reconcile_refunds(gateway)["not_made"] == 1
        assert Refund.get_by_id(late["refund"]["refund_id"]).status == "failed"
    assert balance_of(paid["expert_id"]) == 9_750 - 2_925


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


def test_a_refund_whose_reservation_the_worker_dropped_while_ping_made_it_is_booked_again(
    app_with, gateway, paid, fake_pingpp
):
    def dropped_meanwhile(create, request):
        # The worker judged the reservation stale (Ping++ had no such refund yet) and dropped it.
        Refund.delete().where(Refund.refund_id == request.refund_id).execute()
        return create(request)

    answer = ask(
        app_with(Scripted(gateway, create_refund=dropped_meanwhile)),
        paid["pay_id"],
        {"amount": 2_000, "description": "退"},
    )
    assert answer.json["code"] == 900, answer.json
    (made_id,) = fake_pingpp.refunds
    (row,) = Refund.select()
    assert (row.refund_id, row.pingpp_refund_id, row.amount) == (answer.json["refund"]["refund_id"], made_id, 2_000)
    assert balance_of(paid["expert_id"]) == 9_750 - 1_950


def test_a_retry_that_finds_ping_never_made_an_unclear_refund_fails_it_and_gives_its_share_back(
    paid, fake_pingpp, gateway, settings
):
    refund_id = ids.new_id()  # as derived from the order service's key
    fake_pingpp.fail_next(times=2)  # a 500 to the create, then to the look-up: unclear
    unclear = refunds.request_refund(gateway, paid["pay_id"], 3_000, "退", settings.pingpp_timeout, refund_id)
    assert unclear.status == "pending" and balance_of(paid["expert_id"]) == 9_750 - 2_925
    fake_pingpp.fail_next(status=400)  # the same request again (its first died before answering): refused
    with pytest.raises(ApiError) as refused:
        refunds.request_refund(gateway, paid["pay_id"], 3_000, "退", settings.pingpp_timeout, refund_id)
    assert refused.value.code == 920
    row = Refund.get_by_id(refund_id)
    assert (row.status, row.pingpp_refund_id) == ("failed", None) and fake_pingpp.refunds == {}
    assert balance_of(paid["expert_id"]) == 9_750
    assert [n.type for n in Notification.select().where(Notification.subject_id == refund_id)] == ["refund.failed"]
