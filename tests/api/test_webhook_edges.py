"""The edges of Ping++'s events: foreign apps and modes, large and malformed bodies, and a charge
whose create answer was lost while its webhook was not."""

import json
import threading
import time

import pytest

from payapi.infra.models import Event, Pay
from tests.support.databases import balance_of
from tests.support.pingpp import event, sign


def post_signed(app, pingpp_keys, raw):
    return app.post(
        "/rest/pay/webhook",
        raw,
        headers={"X-Pingplusplus-Signature": sign(pingpp_keys[0], raw)},
        content_type="application/json",
        expect_errors=True,
    )


@pytest.fixture
def paid_charge(order_service, fake_pingpp):
    def make():
        info = order_service(amount=10_000).json["info"]
        return info, fake_pingpp.mark_paid(info["charge"]["id"])

    return make


# --- another app, another mode ----------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda evt: evt.update(livemode=True),  # a live event, while our key is a test key
        lambda evt: evt.pop("livemode"),
        lambda evt: evt["data"]["object"].update(app="app_someone_else"),
        lambda evt: evt["data"]["object"].pop("app"),
    ],
    ids=["live", "no-livemode", "other-app", "no-app"],
)
def test_a_charge_event_for_another_app_or_mode_is_stored_and_not_applied(app, pingpp_keys, paid_charge, change):
    info, charge = paid_charge()
    evt = event("charge.succeeded", charge)
    change(evt)
    response = post_signed(app, pingpp_keys, json.dumps(evt).encode())
    assert response.json == {"code": 900, "result": "mismatch"}
    assert Event.get_by_id(evt["id"]).outcome == "mismatch"
    assert Pay.get_by_id(info["pay_id"]).status == "pending"
    assert balance_of(info["expert_id"]) is None


def test_a_transfer_event_for_another_app_is_not_applied(app, pingpp_keys):
    transfer = {
        "id": "tr_x",
        "object": "transfer",
        "app": "app_someone_else",
        "order_no": "0" * 24,
        "amount": 100,
        "currency": "cny",
        "status": "paid",
    }
    evt = event("transfer.succeeded", transfer)
    assert post_signed(app, pingpp_keys, json.dumps(evt).encode()).json["result"] == "mismatch"


# --- size ---------------------------------------------------------------------------------------


def test_a_signed_event_up_to_one_megabyte_is_accepted(app, pingpp_keys, paid_charge):
    info, charge = paid_charge()
    charge["metadata"] = {"padding": "退" * 300_000}  # ~900 KB of UTF-8
    raw = json.dumps(event("charge.succeeded", charge), ensure_ascii=False).encode()
    assert 800_000 < len(raw) < 1024 * 1024
    assert post_signed(app, pingpp_keys, raw).json == {"code": 900, "result": "applied"}
    assert Pay.get_by_id(info["pay_id"]).status == "paid"


def test_a_body_over_one_megabyte_is_413(app, pingpp_keys, paid_charge):
    info, charge = paid_charge()
    charge["metadata"] = {"padding": "x" * (1024 * 1024)}
    response = post_signed(app, pingpp_keys, json.dumps(event("charge.succeeded", charge)).encode())
    assert (response.status_int, response.json["code"]) == (413, 904)


# --- malformed but signed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b"not json",
        b"\xff\xfe",
        b'{"id": 5, "type": "charge.succeeded"}',
        b'{"id": "", "type": "x"}',
        json.dumps({"id": "e" * 65, "type": "charge.succeeded"}).encode(),
    ],
    ids=["array", "text", "invalid-utf8", "numeric-id", "empty-id", "long-id"],
)
def test_a_signed_body_without_a_usable_id_is_acknowledged_as_malformed_and_not_stored(app, pingpp_keys, raw):
    assert post_signed(app, pingpp_keys, raw).json == {"code": 900, "result": "malformed"}
    assert Event.select().count() == 0


@pytest.mark.parametrize(
    "evt",
    [
        {"id": "evt_no_type"},
        {"id": "evt_no_data", "type": "charge.succeeded"},
        {"id": "evt_bad_object", "type": "charge.succeeded", "data": {"object": "ch_x"}},
        {"id": "evt_type_number", "type": 7, "data": {"object": {}}},
    ],
    ids=["no-type", "no-data", "object-not-a-dict", "type-not-a-string"],
)
def test_a_signed_event_with_an_id_but_a_bad_shape_is_stored_once_as_malformed(app, pingpp_keys, evt):
    raw = json.dumps(evt).encode()
    assert post_signed(app, pingpp_keys, raw).json == {"code": 900, "result": "malformed"}
    stored = Event.get_by_id(evt["id"])
    assert (stored.outcome, json.loads(stored.payload)) == ("malformed", evt)
    assert post_signed(app, pingpp_keys, raw).json == {"code": 900, "result": "replay"}


# --- a charge whose create answer was lost ------------------------------------------------------------


def test_a_reservation_paid_while_its_create_answer_was_lost_is_kept_and_answered(
    order_service, fake_pingpp, send_event
):
    """Ping++ made the charge but its answer was lost; the user paid and the webhook came meanwhile."""
    fake_pingpp.lose_next_response(seconds=0.6)
    o_id = "5" * 24
    answer = {}
    creating = threading.Thread(target=lambda: answer.update(r=order_service(o_id=o_id, amount=10_000)))
    creating.start()
    deadline = time.monotonic() + 5
    while not fake_pingpp.charges and time.monotonic() < deadline:
        time.sleep(0.01)
    (charge_id,) = fake_pingpp.charges
    assert send_event("charge.succeeded", fake_pingpp.mark_paid(charge_id)).json["result"] == "applied"
    creating.join(timeout=10)

    created = answer["r"].json
    assert created["code"] == 900, created  # the pay it made, paid: not a 920 for a paid charge
    assert (created["info"]["status"], created["info"]["charge"]["id"]) == ("paid", charge_id)
    pay = Pay.get_by_id(created["info"]["pay_id"])
    assert (pay.status, pay.charge_id) == ("paid", charge_id)
    assert balance_of(pay.expert_id) == 10_000

    # The order service retrying the call is told the order is paid, and which pay paid it.
    retried = order_service(o_id=o_id, amount=10_000, expert_id=pay.expert_id, userID=pay.user_id).json
    assert (retried["code"], retried["info"]["pay_id"]) == (910, pay.pay_id)

    # Its refund finds it (it was never deleted).
    refund = fake_pingpp.refund(charge_id, 10_000)
    assert send_event("refund.succeeded", refund).json["result"] == "applied"
    assert Pay.get_by_id(pay.pay_id).status == "refunded"
