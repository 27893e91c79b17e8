"""Closing charges and never paying twice: a pay payapi closes has its charge closed at Ping++
too (Charge.reverse, retried by the worker), and a second paid pay for one order is refunded in
full automatically."""

import time

import pytest
import time_machine

from payapi import worker
from payapi.infra.gateway import GatewayError
from payapi.infra.models import Notification, Pay, Refund
from payapi.money import payments, refunds
from payapi.sandbox.core import ControlError
from tests.support.databases import balance_of, ledger_of
from tests.support.pingpp import Scripted


def reversed_at_ping(fake_pingpp, info):
    return fake_pingpp.charges[info["charge"]["id"]]["reversed"]


def test_a_pay_replaced_at_a_new_price_cannot_be_paid_at_the_old_one(order_service, fake_pingpp, send_event):
    order = {"o_id": "5" * 24, "userID": "6" * 24, "expert_id": "7" * 24}
    old = order_service(**order, amount=100).json["info"]
    new = order_service(**order, amount=10_000).json["info"]
    assert Pay.get_by_id(old["pay_id"]).status == "cancel" and reversed_at_ping(fake_pingpp, old)
    assert Pay.get_by_id(old["pay_id"]).reversed_at is not None
    with pytest.raises(ControlError):
        fake_pingpp.mark_paid(old["charge"]["id"])  # the old credential can no longer take money
    assert send_event("charge.succeeded", fake_pingpp.mark_paid(new["charge"]["id"])).json["result"] == "applied"
    assert ledger_of(order["expert_id"]) == [("charge", new["pay_id"], 10_000)]


ORDER = {"o_id": "5" * 24, "userID": "6" * 24, "expert_id": "7" * 24}


def announced(info):
    """What the order service was told of a pay, oldest first."""
    return [
        m.type
        for m in Notification.select()
        .where(Notification.subject_id == info["pay_id"])
        .order_by(Notification.created_at, Notification.message_id)
    ]


def test_a_replaced_pay_is_announced_closed_only_once_its_replacement_has_a_charge(order_service, fake_pingpp):
    old = order_service(**ORDER, amount=100).json["info"]
    fake_pingpp.fail_next()
    assert order_service(**ORDER, amount=10_000).json["code"] == 920
    assert Pay.get_by_id(old["pay_id"]).status == "pending" and not reversed_at_ping(fake_pingpp, old)
    assert announced(old) == []  # it never closed
    new = order_service(**ORDER, amount=10_000).json["info"]
    assert announced(old) == ["pay.closed"] and announced(new) == []
    assert Pay.get_by_id(old["pay_id"]).status == "cancel" and reversed_at_ping(fake_pingpp, old)


def test_a_failed_replacement_leaves_the_old_pay_closed_and_announced_when_its_charge_was_closed_meanwhile(
    app_with, order_service, gateway, settings, fake_pingpp
):
    old = order_service(**ORDER, amount=100).json["info"]

    def refused_after_the_worker_reversed_the_old_charge(create, request):
        assert payments.reverse_closed_pays(gateway, settings)["reversed"] == 1
        raise GatewayError("sandbox: refused")

    scripted = app_with(Scripted(gateway, create_charge=refused_after_the_worker_reversed_the_old_charge))
    assert order_service(via=scripted, **ORDER, amount=10_000).json["code"] == 920
    pay = Pay.get_by_id(old["pay_id"])
    assert (pay.status, pay.open_for) == ("cancel", None) and reversed_at_ping(fake_pingpp, old)
    assert announced(old) == ["pay.closed"]
    # The order is free for a new pay (a pending pay whose charge cannot be paid would block it).
    again = order_service(**ORDER, amount=100).json
    assert again["code"] == 900 and again["info"]["pay_id"] != old["pay_id"]


def test_a_failed_replacement_does_not_reopen_a_pay_of_an_order_paid_meanwhile(
    app_with, order_service, gateway, settings, fake_pingpp, send_event
):
    # The first pay was replaced (closed, its charge reversed), then paid after all while a second
    # replacement was being made, which Ping++ refused: the pay that second replacement was to close
    # must not become payable again on an order that is paid.
    first = order_service(**ORDER, amount=100).json["info"]
    second = order_service(**ORDER, amount=200).json["info"]

    def refused_while_the_first_turns_out_paid(create, request):
        late = fake_pingpp.mark_paid(first["charge"]["id"], even_if_reversed=True)
        assert send_event("charge.succeeded", late).json["result"] == "applied"
        raise GatewayError("sandbox: refused")

    scripted = app_with(Scripted(gateway, create_charge=refused_while_the_first_turns_out_paid))
    assert order_service(via=scripted, **ORDER, amount=300).json["code"] == 920
    assert Pay.get_by_id(first["pay_id"]).status == "paid"
    assert Pay.select().where(Pay.o_id == ORDER["o_id"], Pay.status == "pending").count() == 0
    assert Pay.get_by_id(second["pay_id"]).status == "cancel"
    assert announced(second) == ["pay.closed"]  # closed for good, and told so once
    assert payments.reverse_closed_pays(gateway, settings)["reversed"] == 1
    assert reversed_at_ping(fake_pingpp, second)
    assert announced(second) == ["pay.closed"]
    assert order_service(**ORDER, amount=300).json["code"] == 910


def test_a_replacement_that_dies_before_its_charge_is_attached_still_announces_the_close(
    app_with, order_service, gateway, settings, fake_pingpp
):
    old = order_service(**ORDER, amount=100).json["info"]

    def made_then_the_process_dies(create, request):
        create(request)
        raise RuntimeError("killed")  # nothing after the charge's creation runs

    dying = app_with(Scripted(gateway, create_charge=made_then_the_process_dies))
    assert order_service(via=dying, **ORDER, amount=10_000).status_int == 500
    pay = Pay.get_by_id(old["pay_id"])
    assert (pay.status, pay.reversed_at) == ("cancel", None) and announced(old) == []  # what the crash left
    # The worker closes the old charge at Ping++; then the close is for good, and announced.
    assert payments.reverse_closed_pays(gateway, settings)["reversed"] == 1
    assert reversed_at_ping(fake_pingpp, old) and announced(old) == ["pay.closed"]
    # The dead reservation is given up once stale; a new pay for the order announces nothing more.
    with time_machine.travel(time.time() + 10, tick=False):
        again = order_service(**ORDER, amount=10_000).json
    assert again["code"] == 900 and again["info"]["pay_id"] != old["pay_id"]
    assert payments.reverse_closed_pays(gateway, settings)["reversed"] == 0
    assert announced(old) == ["pay.closed"]


@pytest.mark.parametrize("webhook", ["not arrived yet", "arriving while the new charge is made"])
def test_replacing_a_pay_paid_meanwhile_is_910_with_the_paid_pay_and_the_new_charge_closed(
    webhook, app_with, order_service, gateway, fake_pingpp, send_event
):
    old = order_service(**ORDER, amount=100).json["info"]
    via = None
    if webhook == "not arrived yet":
        fake_pingpp.mark_paid(old["charge"]["id"])  # found paid when its charge is to be closed
    else:

        def made_while_the_old_charge_is_paid(create, request):
            paid = fake_pingpp.mark_paid(old["charge"]["id"])
            assert send_event("charge.succeeded", paid).json["result"] == "applied"
            return create(request)

        via = app_with(Scripted(gateway, create_charge=made_while_the_old_charge_is_paid))
    answer = order_service(via=via, **ORDER, amount=10_000)
    assert (answer.status_int, answer.json["code"]) == (403, 910)
    assert (answer.json["info"]["pay_id"], answer.json["info"]["status"]) == (old["pay_id"], "paid")
    (new,) = Pay.select().where(Pay.pay_id != old["pay_id"])
    assert new.status == "cancel" and new.reversed_at is not None and fake_pingpp.charges[new.charge_id]["reversed"]
    assert ledger_of(ORDER["expert_id"]) == [("charge", old["pay_id"], 100)]


def test_an_expired_pay_closed_by_the_worker_is_closed_at_ping_too(order_service, fake_pingpp, gateway, settings):
    info = order_service().json["info"]
    with time_machine.travel(time.time() + 25 * 3600, tick=False):
        assert payments.reconcile_pays(gateway, settings)["closed"] == 1
    pay = Pay.get_by_id(info["pay_id"])
    assert pay.status == "cancel" and pay.reversed_at is not None and reversed_at_ping(fake_pingpp, info)


def test_a_reversal_ping_did_not_confirm_is_retried_by_the_worker(
    order_service, make_user, fake_pingpp, gateway, settings
):
    payer = make_user()
    info = order_service(userID=payer.id).json["info"]
    fake_pingpp.fail_next(times=2)  # the reverse, and the retrieve that asks why
    assert payer.post(f"/rest/pay/{info['pay_id']}/status", {"status": "cancel"}).json == {"code": 900}
    assert Pay.get_by_id(info["pay_id"]).reversed_at is None and not reversed_at_ping(fake_pingpp, info)

    assert payments.reverse_closed_pays(gateway, settings) == {"reversed": 0, "paid": 0, "failed": 0}  # backing off
    with time_machine.travel(time.time() + 61, tick=False):
        assert worker.run_once(settings, gateway)["reversals"] == {"reversed": 1, "paid": 0, "failed": 0}
    assert Pay.get_by_id(info["pay_id"]).reversed_at is not None and reversed_at_ping(fake_pingpp, info)
    assert payments.reverse_closed_pays(gateway, settings) == {"reversed": 0, "paid": 0, "failed": 0}


@pytest.fixture
def paid_twice(order_service, make_user, fake_pingpp, send_event):
    """The phone reported cancel, the order service made a second pay and the user paid it; then
    the first turned out paid after all (it slipped through before Ping++ closed it)."""
    payer = make_user()
    order = {"o_id": "5" * 24, "userID": payer.id, "expert_id": "7" * 24, "amount": 10_000}
    first = order_service(**order).json["info"]
    assert payer.post(f"/rest/pay/{first['pay_id']}/status", {"status": "cancel"}).json == {"code": 900}
    second = order_service(**order).json["info"]
    assert second["pay_id"] != first["pay_id"]
    assert send_event("charge.succeeded", fake_pingpp.mark_paid(second["charge"]["id"])).json["result"] == "applied"
    late = fake_pingpp.mark_paid(first["charge"]["id"], even_if_reversed=True)
    assert send_event("charge.succeeded", late).json["result"] == "applied"
    return first, second


def test_the_pay_paid_later_is_refunded_in_full_so_the_user_pays_once(
    paid_twice, fake_pingpp, gateway, send_event, settings
):
    first, second = paid_twice
    assert {Pay.get_by_id(p["pay_id"]).status for p in (first, second)} == {"paid"}
    (duplicate,) = Refund.select()
    assert (duplicate.pay_id, duplicate.amount, duplicate.source, duplicate.status) == (
        first["pay_id"],
        10_000,
        "duplicate",
        "pending",
    )
    assert worker.run_once(settings, gateway)["refunds"]["settled"] in (0, 1)  # made at Ping++
    (made,) = [r for r in fake_pingpp.refunds.values() if r["charge"] == first["charge"]["id"]]
    assert (made["amount"], made["description"], made["metadata"]) == (
        10_000,
        "duplicate payment",
        {"refund_id": duplicate.refund_id},
    )
    assert send_event("refund.succeeded", fake_pingpp.settle_refund(made["id"], "succeeded")).json["result"] in (
        "applied",
        "ignored",
    )
    assert Pay.get_by_id(first["pay_id"]).status == "refunded"
    assert Pay.get_by_id(second["pay_id"]).status == "paid"
    assert balance_of("7" * 24) == 10_000  # credited for one payment
    kept = sum(r["amount"] for r in fake_pingpp.charges.values() if r["paid"]) - sum(
        r["amount"] for r in fake_pingpp.refunds.values() if r["status"] == "succeeded"
    )
    assert kept == 10_000  # the user paid once


def test_a_duplicate_refund_whose_answer_was_lost_is_found_and_not_made_twice(paid_twice, fake_pingpp, gateway):
    first, _ = paid_twice
    fake_pingpp.lose_next_response(after=1)  # the list of the charge's refunds, then the create
    assert refunds.reconcile_refunds(gateway)["failed"] == 1
    assert len(fake_pingpp.refunds) == 1  # made, the answer lost
    with time_machine.travel(time.time() + 61, tick=False):
        assert refunds.reconcile_refunds(gateway)["failed"] == 0
    (made,) = fake_pingpp.refunds.values()
    assert Refund.get(Refund.pay_id == first["pay_id"]).pingpp_refund_id == made["id"]
