"""POST /rest/pay/webhook: Ping++'s signed events, stored by id and applied once."""

import base64
import dataclasses
import json

import pytest
import webtest

from payapi.app import create_app
from payapi.domain.ids import new_id
from payapi.infra.models import Event, Pay
from payapi.users.sms import FileSms
from payapi.wsgi import gateway_from
from tests.support.databases import balance_of, ledger_of, money_moved
from tests.support.pingpp import event, new_rsa_key, sign


@pytest.fixture
def fee_bps():
    return 250


@pytest.fixture
def settings(settings, fee_bps):
    return dataclasses.replace(settings, platform_fee_bps=fee_bps)


@pytest.fixture(scope="module")
def other_key():
    return new_rsa_key()


def post_raw(app, raw, signature):
    headers = {} if signature is None else {"X-Pingplusplus-Signature": signature}
    return app.post("/rest/pay/webhook", raw, headers=headers, content_type="application/json", expect_errors=True)


def outcome(event_id):
    return Event.get_by_id(event_id).outcome


@pytest.fixture
def pay_for(order_service, fake_pingpp):
    """A pending pay and its charge as Ping++ reports it once paid (not yet sent to us)."""

    def make(money=10000, **fields):
        response = order_service(amount=money, **fields)
        assert response.json["code"] == 900, response.json
        info = response.json["info"]
        return info, fake_pingpp.mark_paid(info["charge"]["id"])

    return make


@pytest.fixture
def paid_pay(pay_for, send_event):
    def make(money=10000, **fields):
        info, charge = pay_for(money, **fields)
        assert send_event("charge.succeeded", charge).json == {"code": 900, "result": "applied"}
        return info, charge

    return make


def refund_event(send_event, fake_pingpp, charge, amount, event_id=None):
    return send_event("refund.succeeded", fake_pingpp.refund(charge["id"], amount), event_id=event_id)


# --- the signature ---------------------------------------------------------------------------


def test_an_event_without_a_signature_is_401_and_changes_nothing(app, pay_for):
    info, charge = pay_for()
    response = post_raw(app, json.dumps(event("charge.succeeded", charge)).encode(), None)
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert Pay.get_by_id(info["pay_id"]).status == "pending"
    assert Event.select().count() == 0 and not money_moved()


@pytest.mark.parametrize(
    "signature",
    ["", "garbage", "!!!!", "bm90IGEgc2lnbmF0dXJl", base64.b64encode(bytes(256)).decode(), "a" * 5000],
)
def test_an_event_with_a_garbage_signature_is_401_and_changes_nothing(app, pay_for, signature):
    info, charge = pay_for()
    response = post_raw(app, json.dumps(event("charge.succeeded", charge)).encode(), signature)
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert Pay.get_by_id(info["pay_id"]).status == "pending"
    assert Event.select().count() == 0 and not money_moved()


def test_an_event_signed_by_another_key_is_401(app, pay_for, other_key):
    info, charge = pay_for()
    raw = json.dumps(event("charge.succeeded", charge)).encode()
    response = post_raw(app, raw, sign(other_key, raw))
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert Pay.get_by_id(info["pay_id"]).status == "pending" and Event.select().count() == 0


def test_a_signature_over_a_different_body_is_401(app, pay_for, pingpp_keys):
    info, charge = pay_for()
    signed = json.dumps(event("charge.succeeded", {**charge, "amount": 1})).encode()
    sent = json.dumps(event("charge.succeeded", charge)).encode()
    response = post_raw(app, sent, sign(pingpp_keys[0], signed))
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert Pay.get_by_id(info["pay_id"]).status == "pending" and not money_moved()


def test_the_signature_covers_the_raw_bytes_not_the_parsed_json(app, pay_for, pingpp_keys):
    info, charge = pay_for()
    raw = json.dumps(event("charge.succeeded", charge)).encode()
    response = post_raw(app, raw + b" ", sign(pingpp_keys[0], raw))
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert Pay.get_by_id(info["pay_id"]).status == "pending"


def test_without_the_ping_plus_plus_public_key_every_event_is_401(database, settings, pay_for, pingpp_keys):
    info, charge = pay_for()
    no_key = dataclasses.replace(settings, pingpp_public_key_path="")
    app = webtest.TestApp(create_app(no_key, gateway_from(no_key), FileSms(settings.sms_file)))
    raw = json.dumps(event("charge.succeeded", charge)).encode()
    response = post_raw(app, raw, sign(pingpp_keys[0], raw))
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert Pay.get_by_id(info["pay_id"]).status == "pending"


# --- charge.succeeded ------------------------------------------------------------------------


def test_charge_succeeded_marks_the_pay_paid_and_credits_the_expert_money_less_the_fee(app, pay_for, send_event):
    info, charge = pay_for(money=10000)
    response = send_event("charge.succeeded", charge, event_id="evt_001")
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "applied"})
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.credited) == ("paid", 9750)
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]
    assert balance_of(info["expert_id"]) == 9750
    assert ledger_of(info["userID"]) == []
    stored = Event.get_by_id("evt_001")
    assert (stored.type, stored.object_id, stored.outcome) == ("charge.succeeded", charge["id"], "applied")
    assert json.loads(stored.payload)["data"]["object"] == charge


def test_the_pay_shows_the_charge_as_ping_plus_plus_last_sent_it(pay_for, send_event, make_user):
    payer = make_user()
    info, charge = pay_for(userID=payer.id)
    send_event("charge.succeeded", charge)
    shown = payer.get(f"/rest/pay/{info['pay_id']}").json["info"]
    assert shown["status"] == "paid" and shown["charge"] == charge and shown["charge"]["paid"] is True


def test_the_same_event_delivered_five_times_credits_once(pay_for, send_event):
    info, charge = pay_for(money=10000)
    results = [send_event("charge.succeeded", charge, event_id="evt_again").json for _ in range(5)]
    assert results == [{"code": 900, "result": "applied"}] + [{"code": 900, "result": "replay"}] * 4
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]
    assert balance_of(info["expert_id"]) == 9750 and Event.select().count() == 1


def test_a_second_event_for_the_same_charge_credits_once(pay_for, send_event):
    info, charge = pay_for(money=10000)
    assert send_event("charge.succeeded", charge, event_id="evt_first").json["result"] == "applied"
    assert send_event("charge.succeeded", charge, event_id="evt_second").json == {"code": 900, "result": "ignored"}
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]
    assert balance_of(info["expert_id"]) == 9750
    assert (outcome("evt_first"), outcome("evt_second")) == ("applied", "ignored")


def test_an_unpaid_charge_in_an_event_does_not_mark_the_pay_paid(pay_for, send_event):
    info, charge = pay_for()
    response = send_event("charge.succeeded", {**charge, "paid": False}, event_id="evt_unpaid")
    assert response.status_int == 200 and response.json["code"] == 900
    assert Pay.get_by_id(info["pay_id"]).status == "pending" and not money_moved()


@pytest.mark.parametrize("change", [{"amount": 9999}, {"amount": 10001}, {"amount": "10000"}, {"currency": "usd"}])
def test_a_charge_whose_amount_or_currency_differs_is_stored_as_a_mismatch_and_not_applied(pay_for, send_event, change):
    info, charge = pay_for(money=10000)
    response = send_event("charge.succeeded", {**charge, **change}, event_id="evt_mismatch")
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "mismatch"})
    assert outcome("evt_mismatch") == "mismatch"
    assert Pay.get_by_id(info["pay_id"]).status == "pending"
    assert not money_moved() and balance_of(info["expert_id"]) is None


def test_a_charge_for_the_order_price_instead_of_the_money_paid_is_a_mismatch(order_service, fake_pingpp, send_event):
    info = order_service(amount=12356, money=10000).json["info"]
    charge = fake_pingpp.mark_paid(info["charge"]["id"])
    assert send_event("charge.succeeded", {**charge, "amount": 12356}).json["result"] == "mismatch"
    assert send_event("charge.succeeded", charge).json["result"] == "applied"
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]


def test_a_charge_whose_order_number_is_another_pay_is_a_mismatch(pay_for, send_event):
    info, charge = pay_for(money=10000)
    other, _ = pay_for(money=10000)
    response = send_event("charge.succeeded", {**charge, "order_no": other["pay_id"]}, event_id="evt_swapped")
    assert response.json == {"code": 900, "result": "mismatch"} and outcome("evt_swapped") == "mismatch"
    assert {p.status for p in Pay.select()} == {"pending"} and not money_moved()


def test_a_charge_for_an_unknown_pay_is_stored_as_unknown(pay_for, send_event):
    _, charge = pay_for()
    stranger = {**charge, "order_no": new_id(), "id": "ch_" + "9" * 24}
    response = send_event("charge.succeeded", stranger, event_id="evt_x")
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "unknown"})
    assert outcome("evt_x") == "unknown" and not money_moved()


@pytest.mark.parametrize("event_type", ["summary.daily.available", "charge.failed", "red_envelope.sent", "x" * 80])
def test_an_unknown_event_type_is_stored_and_acknowledged(pay_for, send_event, event_type):
    info, charge = pay_for()
    response = send_event(event_type, charge, event_id="evt_other")
    assert response.status_int == 200 and response.json == {"code": 900, "result": "ignored"}
    stored = Event.get_by_id("evt_other")
    assert stored.type == event_type[:64] and stored.outcome == "ignored"
    assert Pay.get_by_id(info["pay_id"]).status == "pending" and not money_moved()


@pytest.mark.parametrize("report, closed_as", [("cancel", "cancel"), ("invalid", "fail")])
def test_a_closed_pay_that_ping_plus_plus_says_was_paid_becomes_paid(
    order_service, fake_pingpp, send_event, make_user, report, closed_as
):
    payer = make_user()
    info = order_service(amount=10000, userID=payer.id).json["info"]
    assert payer.post(f"/rest/pay/{info['pay_id']}/status", {"status": report}).json == {"code": 900}
    assert Pay.get_by_id(info["pay_id"]).status == closed_as
    # The payment slipped through before Ping++ closed the charge.
    charge = fake_pingpp.mark_paid(info["charge"]["id"], even_if_reversed=True)
    assert send_event("charge.succeeded", charge).json["result"] == "applied"
    shown = payer.get(f"/rest/pay/{info['pay_id']}/status").json
    assert shown == {"code": 900, "status": "paid", "client_status": report}
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]


def test_a_pay_replaced_for_other_money_that_was_paid_after_all_becomes_paid(order_service, fake_pingpp, send_event):
    fields = {"o_id": new_id(), "userID": new_id(), "expert_id": new_id(), "amount": 10000}
    first = order_service(**fields).json["info"]
    order_service(**fields, money=8000)
    assert Pay.get_by_id(first["pay_id"]).status == "cancel"
    charge = fake_pingpp.mark_paid(first["charge"]["id"], even_if_reversed=True)
    assert send_event("charge.succeeded", charge).json["result"] == "applied"
    assert Pay.get_by_id(first["pay_id"]).status == "paid"
    assert ledger_of(fields["expert_id"]) == [("charge", first["pay_id"], 9750)]


# --- refund.succeeded -------------------------------------------------------------------------


def test_a_full_refund_debits_what_was_credited_and_marks_the_pay_refunded(paid_pay, send_event, fake_pingpp):
    info, charge = paid_pay(money=10000)
    refund = fake_pingpp.refund(charge["id"], 10000)
    response = send_event("refund.succeeded", refund, event_id="evt_refund")
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "applied"})
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750), ("refund", refund["id"], -9750)]
    assert balance_of(info["expert_id"]) == 0
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.amount_refunded) == ("refunded", 10000)
    assert (Event.get_by_id("evt_refund").object_id, outcome("evt_refund")) == (refund["id"], "applied")


@pytest.mark.parametrize("fee_bps", [333])
def test_partial_refunds_debit_pro_rata_and_add_up_to_exactly_the_credit(paid_pay, send_event, fake_pingpp):
    info, charge = paid_pay(money=1001)
    credit = 1001 - 33  # 3.33 % of 1001 is 33.33 fen; the fee is rounded down
    assert balance_of(info["expert_id"]) == credit
    statuses, debits = [], []
    for part in (333, 333, 335):
        refund = fake_pingpp.refund(charge["id"], part)
        assert send_event("refund.succeeded", refund).json["result"] == "applied"
        statuses.append(Pay.get_by_id(info["pay_id"]).status)
        debits.append(
            dict(((kind, ref), amount) for kind, ref, amount in ledger_of(info["expert_id"]))[("refund", refund["id"])]
        )
    assert statuses == ["paid", "paid", "refunded"]
    assert debits == [-322, -322, -324] and sum(debits) == -credit
    assert balance_of(info["expert_id"]) == 0


def test_a_partial_refund_debits_its_share_of_the_credit(paid_pay, send_event, fake_pingpp):
    info, charge = paid_pay(money=10000)
    refund = fake_pingpp.refund(charge["id"], 4000)
    assert send_event("refund.succeeded", refund).json["result"] == "applied"
    assert ledger_of(info["expert_id"])[-1] == ("refund", refund["id"], -3900)
    assert balance_of(info["expert_id"]) == 5850
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.amount_refunded) == ("paid", 4000)


def test_a_refund_over_what_was_paid_is_a_mismatch_and_not_applied(paid_pay, send_event, fake_pingpp):
    info, charge = paid_pay(money=10000)
    assert refund_event(send_event, fake_pingpp, charge, 6000).json["result"] == "applied"
    before = ledger_of(info["expert_id"])
    response = refund_event(send_event, fake_pingpp, charge, 4001, event_id="evt_over")
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "mismatch"})
    assert outcome("evt_over") == "mismatch" and ledger_of(info["expert_id"]) == before
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.amount_refunded) == ("paid", 6000)


def test_a_refund_after_a_full_refund_is_a_mismatch(paid_pay, send_event, fake_pingpp):
    info, charge = paid_pay(money=10000)
    assert refund_event(send_event, fake_pingpp, charge, 10000).json["result"] == "applied"
    assert refund_event(send_event, fake_pingpp, charge, 1).json["result"] == "mismatch"
    assert balance_of(info["expert_id"]) == 0 and Pay.get_by_id(info["pay_id"]).status == "refunded"


@pytest.mark.parametrize("change", [{"currency": "usd"}, {"charge_order_no": "57691bba8789ff202b5968fb"}])
def test_a_refund_whose_currency_or_order_number_differs_is_a_mismatch(paid_pay, send_event, fake_pingpp, change):
    info, charge = paid_pay(money=10000)
    refund = {**fake_pingpp.refund(charge["id"], 100), **change}
    assert send_event("refund.succeeded", refund).json["result"] == "mismatch"
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]


@pytest.mark.parametrize("amount", [0, -100, "100", 1.5, True])
def test_a_refund_with_a_bad_amount_is_a_mismatch(paid_pay, send_event, fake_pingpp, amount):
    info, charge = paid_pay(money=10000)
    refund = {**fake_pingpp.refund(charge["id"], 100), "amount": amount}
    assert send_event("refund.succeeded", refund).json["result"] == "mismatch"
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]
    assert Pay.get_by_id(info["pay_id"]).amount_refunded == 0


def test_the_same_refund_event_delivered_again_is_applied_once(paid_pay, send_event, fake_pingpp):
    info, charge = paid_pay(money=10000)
    refund = fake_pingpp.refund(charge["id"], 10000)
    results = [send_event("refund.succeeded", refund, event_id="evt_re").json["result"] for _ in range(3)]
    assert results == ["applied", "replay", "replay"]
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750), ("refund", refund["id"], -9750)]
    assert balance_of(info["expert_id"]) == 0


@pytest.mark.parametrize("part", [4000, 10000])
def test_the_same_refund_in_a_second_event_is_ignored(paid_pay, send_event, fake_pingpp, part):
    info, charge = paid_pay(money=10000)
    refund = fake_pingpp.refund(charge["id"], part)
    assert send_event("refund.succeeded", refund, event_id="evt_re_1").json["result"] == "applied"
    assert send_event("refund.succeeded", refund, event_id="evt_re_2").json["result"] == "ignored"
    assert outcome("evt_re_2") == "ignored"
    assert len(ledger_of(info["expert_id"])) == 2
    assert Pay.get_by_id(info["pay_id"]).amount_refunded == part


def test_a_refund_that_overtakes_its_charge_event_settles_the_charge_with_ping_plus_plus_first(
    pay_for, send_event, fake_pingpp
):
    info, charge = pay_for(money=10000)  # paid at Ping++, but charge.succeeded has not reached us
    response = send_event("refund.succeeded", fake_pingpp.refund(charge["id"], 10000), event_id="evt_early")
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "applied"})
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.amount_refunded) == ("refunded", 10000)
    assert [(kind, amount) for kind, _, amount in ledger_of(info["expert_id"])] == [
        ("charge", 9750),
        ("refund", -9750),
    ]  # 2.5 % fee in this file
    # the late charge event then changes nothing
    assert send_event("charge.succeeded", charge).json["result"] == "ignored"
    assert balance_of(info["expert_id"]) == 0


def test_a_refund_for_a_charge_ping_plus_plus_says_is_unpaid_is_a_mismatch(order_service, send_event, fake_pingpp):
    info = order_service(amount=10000).json["info"]
    response = send_event("refund.succeeded", fake_pingpp.refund(info["charge"]["id"], 10000), event_id="evt_odd")
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "mismatch"})
    assert outcome("evt_odd") == "mismatch"
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.amount_refunded) == ("pending", 0) and not money_moved()


def test_an_early_refund_while_ping_plus_plus_is_down_is_refused_unstored_and_applied_when_delivered_again(
    pay_for, send_event, fake_pingpp
):
    info, charge = pay_for(money=10000)
    refund = fake_pingpp.refund(charge["id"], 4000)
    fake_pingpp.fail_next()
    refused = send_event("refund.succeeded", refund, event_id="evt_retry")
    assert (refused.status_int, refused.json["code"]) == (502, 920)
    assert Event.get_or_none(Event.event_id == "evt_retry") is None and not money_moved()
    again = send_event("refund.succeeded", refund, event_id="evt_retry")
    assert again.json == {"code": 900, "result": "applied"}
    assert balance_of(info["expert_id"]) == 9750 - 3900  # credit less the refunded 40 %


def test_a_refund_of_an_unknown_charge_is_stored_as_unknown(paid_pay, send_event, fake_pingpp):
    info, charge = paid_pay(money=10000)
    refund = {**fake_pingpp.refund(charge["id"], 100), "charge": "ch_" + "7" * 24, "charge_order_no": new_id()}
    response = send_event("refund.succeeded", refund, event_id="evt_lost")
    assert response.json == {"code": 900, "result": "unknown"} and outcome("evt_lost") == "unknown"
    assert len(ledger_of(info["expert_id"])) == 1


def test_a_refund_that_did_not_succeed_is_not_applied(paid_pay, send_event, fake_pingpp):
    info, charge = paid_pay(money=10000)
    refund = {**fake_pingpp.refund(charge["id"], 100), "succeed": False, "status": "failed"}
    assert send_event("refund.succeeded", refund).json["result"] == "ignored"
    assert len(ledger_of(info["expert_id"])) == 1 and Pay.get_by_id(info["pay_id"]).amount_refunded == 0


def test_a_closed_pay_paid_after_all_closes_the_newer_pending_pay_of_its_order(
    order_service, make_user, fake_pingpp, send_event
):
    payer = make_user()
    first = order_service(userID=payer.id, o_id="57691bba8789ff202b5968fb", channel="alipay").json["info"]
    second = order_service(userID=payer.id, o_id="57691bba8789ff202b5968fb", channel="wx").json["info"]
    assert payer.get(f"/rest/pay/{first['pay_id']}/status").json["status"] == "cancel"
    paid = fake_pingpp.mark_paid(first["charge"]["id"], even_if_reversed=True)
    assert send_event("charge.succeeded", paid).json["result"] == "applied"
    assert payer.get(f"/rest/pay/{first['pay_id']}/status").json["status"] == "paid"
    assert payer.get(f"/rest/pay/{second['pay_id']}/status").json["status"] == "cancel"
    # and the order is now paid: the order service cannot open a third pay
    assert order_service(userID=payer.id, o_id="57691bba8789ff202b5968fb", channel="wx").json["code"] == 910
