"""Pay records: POST/GET /internal/pays (the order service) and routes 1 and 2 (the payer)."""

import dataclasses
import json
import re
import threading
import time

import pytest
import webtest

from payapi.domain.ids import new_id
from payapi.infra.db import db
from payapi.infra.models import Pay
from tests.support.config import SERVICE_KEY

SEED_FIELDS = {
    "pay_id": str,
    "o_id": str,
    "note_id": str,
    "expert_id": str,
    "userID": str,
    "amount": int,
    "money": int,
    "charge": dict,
    "desc": str,
    "client_status": str,
    "status": str,
    "subject": str,
    "currency": str,
    "channel": str,
    "type": str,
    "createdAt": str,
    "updatedAt": str,
}
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def settings(settings):
    # Short enough that a hung Ping++ costs the test little, long enough for the local fake.
    return dataclasses.replace(settings, pingpp_timeout=0.5)


def internal_post(app, raw, headers=None):
    return app.post(
        "/internal/pays",
        raw,
        headers={"X-Service-Key": SERVICE_KEY} if headers is None else headers,
        content_type="application/json",
        expect_errors=True,
    )


def internal_get(app, pay_id, headers=None):
    headers = {"X-Service-Key": SERVICE_KEY} if headers is None else headers
    return app.get(f"/internal/pays/{pay_id}", headers=headers, expect_errors=True)


def order_fields(**fields):
    """The ids of one order, so several calls can be about the same order."""
    return {"o_id": new_id(), "userID": new_id(), "expert_id": new_id(), **fields}


def created(response):
    assert (response.status_int, response.json["code"]) == (200, 900), response.json
    return response.json["info"]


# --- POST /internal/pays: the service key ----------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-Service-Key": "wrong-key"}, {"X-Service-Key": ""}])
def test_creating_a_pay_without_the_right_service_key_is_901(app, fake_pingpp, headers):
    body = json.dumps({"type": "order", **order_fields(), "amount": 100, "channel": "alipay", "subject": "s"})
    response = internal_post(app, body.encode(), headers=headers)
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert Pay.select().count() == 0 and fake_pingpp.charge_creations() == []


def test_a_user_token_does_not_open_the_internal_routes(app, make_user):
    payer = make_user()
    response = internal_post(app, b"{}", headers=payer.headers)
    assert (response.status_int, response.json["code"]) == (401, 901)


# --- POST /internal/pays: validation -----------------------------------------------------------

BAD_FIELDS = [
    {"type": None},
    {"type": "orders"},
    {"type": "ORDER"},
    {"type": 1},
    {"o_id": None},
    {"o_id": ""},
    {"o_id": "abc"},
    {"o_id": "57691BBA8789FF202B5968FB"},
    {"o_id": "57691bba8789ff202b5968fb0"},
    {"o_id": "57691bba8789ff202b5968fg"},
    {"o_id": 57691},
    {"userID": None},
    {"userID": "not-an-id"},
    {"userID": ["57691bba8789ff202b5968fb"]},
    {"expert_id": None},
    {"expert_id": "57691bba8789ff202b5968f"},
    {"amount": None},
    {"amount": 0},
    {"amount": "0"},
    {"amount": -5},
    {"amount": "-5"},
    {"amount": "+5"},
    {"amount": 100_000_001},
    {"amount": "100000001"},
    {"amount": 10**30},
    {"amount": "9" * 40},
    {"amount": 10.5},
    {"amount": 1000.0},
    {"amount": "10.5"},
    {"amount": "1e3"},
    {"amount": " 5"},
    {"amount": "5 "},
    {"amount": ""},
    {"amount": True},
    {"amount": False},
    {"amount": [100]},
    {"amount": {}},
    {"money": 0},
    {"money": "-5"},
    {"money": 100_000_001},
    {"money": 99.0},
    {"money": "1e3"},
    {"money": " 5"},
    {"money": ""},
    {"money": True},
    {"channel": None},
    {"channel": "paypal"},
    {"channel": "ALIPAY"},
    {"channel": ""},
    {"channel": ["alipay"]},
    {"subject": None},
    {"subject": ""},
    {"subject": "   "},
    {"subject": "x" * 33},
    {"subject": "支" * 33},
    {"subject": 12},
    {"desc": 5},
    {"extra": "x"},
    {"extra": [1]},
    {"extra": 1},
    {"extra": True},
]


@pytest.mark.parametrize("bad", BAD_FIELDS, ids=lambda bad: json.dumps(bad, ensure_ascii=False)[:40])
def test_creating_a_pay_with_an_invalid_field_is_904_and_creates_nothing(order_service, fake_pingpp, bad):
    response = order_service(**{**order_fields(), **bad})  # a None leaves the field out
    assert (response.status_int, response.json["code"]) == (400, 904), response.json
    assert Pay.select().count() == 0 and fake_pingpp.charge_creations() == []


@pytest.mark.parametrize("literal", ["1e3", "1E3", "1000.0", "-5", "1_000", "NaN", "Infinity"])
def test_amount_written_as_a_json_number_other_than_a_plain_integer_is_904(app, fake_pingpp, literal):
    fields = {"type": "order", **order_fields(), "channel": "alipay", "subject": "s"}
    raw = json.dumps(fields)[:-1] + f', "amount": {literal}}}'
    response = internal_post(app, raw.encode())
    assert (response.status_int, response.json["code"]) == (400, 904)
    assert Pay.select().count() == 0 and fake_pingpp.charge_creations() == []


def test_a_note_pay_needs_a_note_id_not_an_o_id(order_service):
    response = order_service(type="note", o_id=new_id())
    assert (response.status_int, response.json["code"]) == (400, 904)
    assert Pay.select().count() == 0


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"pay"', b"{", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_904(app, raw):
    response = internal_post(app, raw)
    assert (response.status_int, response.json["code"]) == (400, 904)


@pytest.mark.parametrize("amount", [1, "1", 100_000_000, "100000000", "0100"])
def test_amount_at_the_limits_as_integer_or_digit_string_is_accepted(order_service, fake_pingpp, amount):
    info = created(order_service(amount=amount))
    assert info["amount"] == int(amount) and info["money"] == int(amount)
    assert fake_pingpp.charge_for(info["pay_id"])["amount"] == int(amount)


@pytest.mark.parametrize("channel", ["alipay", "wx", "alipay_wap", "wx_pub", "upacp"])
def test_every_channel_the_contract_names_is_accepted(order_service, fake_pingpp, channel):
    info = created(order_service(channel=channel, extra={"open_id": "o1"} if channel == "wx_pub" else None))
    assert info["channel"] == channel and fake_pingpp.charge_for(info["pay_id"])["channel"] == channel


# --- POST /internal/pays: what is created --------------------------------------------------------


def test_created_pay_info_has_exactly_the_seed_fields_with_their_types(order_service):
    info = created(order_service(amount="12356", desc="预约 30 分钟"))
    assert set(info) == set(SEED_FIELDS)
    for name, kind in SEED_FIELDS.items():
        assert type(info[name]) is kind, (name, info[name])
    assert ISO_MS_Z.fullmatch(info["createdAt"]) and ISO_MS_Z.fullmatch(info["updatedAt"])
    assert info["createdAt"] <= info["updatedAt"]
    assert (info["status"], info["client_status"]) == ("pending", "pending")
    assert (info["currency"], info["type"]) == ("cny", "order")
    assert (info["amount"], info["money"], info["desc"], info["note_id"]) == (12356, 12356, "预约 30 分钟", "")
    assert re.fullmatch(r"[0-9a-f]{24}", info["pay_id"])


def test_created_pay_echoes_the_order_it_was_made_for(order_service):
    fields = order_fields()
    info = created(order_service(**fields, subject="支付预约订单_2016-06-23", channel="wx"))
    assert (info["o_id"], info["userID"], info["expert_id"]) == (fields["o_id"], fields["userID"], fields["expert_id"])
    assert (info["subject"], info["channel"]) == ("支付预约订单_2016-06-23", "wx")


def test_the_charge_is_for_money_with_the_pay_id_as_order_number(order_service, fake_pingpp):
    info = created(order_service(amount=12356, money="10000", subject="预约", desc="30 分钟咨询"))
    creations = fake_pingpp.charge_creations()
    assert len(creations) == 1
    sent = creations[0][2]
    assert sent["order_no"] == info["pay_id"]
    assert (sent["amount"], sent["currency"], sent["channel"]) == (10000, "cny", "alipay")
    assert (sent["subject"], sent["body"], sent["app"]) == ("预约", "30 分钟咨询", {"id": "app_test_payapi"})
    assert (info["amount"], info["money"]) == (12356, 10000)
    assert info["charge"] == fake_pingpp.charge_for(info["pay_id"])


def test_money_defaults_to_amount(order_service, fake_pingpp):
    info = created(order_service(amount="4321"))
    assert info["money"] == 4321 and fake_pingpp.charge_creations()[0][2]["amount"] == 4321


def test_the_charge_body_is_the_subject_when_desc_is_empty_or_absent(order_service, fake_pingpp):
    first = created(order_service(subject="小纸条", desc=""))
    second = created(order_service(subject="预约订单", desc=None))
    assert fake_pingpp.charge_for(first["pay_id"])["body"] == "小纸条"
    assert fake_pingpp.charge_for(second["pay_id"])["body"] == "预约订单"


def test_extra_is_passed_through_to_the_charge(order_service, fake_pingpp):
    extra = {"open_id": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
    info = created(order_service(channel="wx_pub", extra=extra))
    assert fake_pingpp.charge_creations(info["pay_id"])[0][2]["extra"] == extra


def test_the_charge_client_ip_comes_from_the_body_before_the_client_header(order_service, fake_pingpp):
    from_body = created(order_service(client_ip="5.6.7.8"))
    from_header = created(order_service())  # the order service's request carries client: 1.2.3.4
    assert fake_pingpp.charge_for(from_body["pay_id"])["client_ip"] == "5.6.7.8"
    assert fake_pingpp.charge_for(from_header["pay_id"])["client_ip"] == "1.2.3.4"


def test_an_empty_client_ip_falls_back_to_the_client_header(order_service, fake_pingpp):
    info = created(order_service(client_ip="", platform="", store=""))
    assert fake_pingpp.charge_for(info["pay_id"])["client_ip"] == "1.2.3.4"


def test_the_phone_headers_relayed_by_the_order_service_are_stored(order_service):
    info = created(order_service(client_ip="5.6.7.8", platform="ios", store="AppStore"))
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.client_ip, pay.platform, pay.store) == ("5.6.7.8", "ios", "AppStore")


def test_a_note_pay_is_made_for_its_note_id(order_service, fake_pingpp):
    note_id = new_id()
    info = created(order_service(type="note", o_id=None, note_id=note_id))
    assert (info["type"], info["note_id"], info["o_id"]) == ("note", note_id, "")
    assert fake_pingpp.charge_for(info["pay_id"]) is not None


def test_a_note_and_an_order_with_the_same_id_are_different_pays(order_service, fake_pingpp):
    fields = order_fields()
    order = created(order_service(**fields))
    note = created(order_service(**{**fields, "o_id": None}, type="note", note_id=fields["o_id"]))
    assert order["pay_id"] != note["pay_id"] and len(fake_pingpp.charge_creations()) == 2
    assert {p.status for p in Pay.select()} == {"pending"}


# --- POST /internal/pays: one pending pay per order ---------------------------------------------


def test_asking_again_for_a_pending_order_returns_the_same_pay_and_charge(order_service, fake_pingpp):
    fields = order_fields()
    first = created(order_service(**fields, amount=500))
    again = created(order_service(**fields, amount="500"))
    assert again == first
    assert len(fake_pingpp.charge_creations()) == 1 and Pay.select().count() == 1


def test_asking_again_for_a_pending_note_returns_the_same_pay(order_service, fake_pingpp):
    fields = order_fields(o_id=None, type="note", note_id=new_id())
    assert created(order_service(**fields)) == created(order_service(**fields))
    assert len(fake_pingpp.charge_creations()) == 1


@pytest.mark.parametrize("change", [{"money": 400}, {"channel": "wx"}])
def test_asking_with_other_money_or_channel_cancels_the_pending_pay_and_makes_a_new_one(
    order_service, fake_pingpp, change
):
    fields = order_fields(amount=500)
    first = created(order_service(**fields))
    second = created(order_service(**fields, **change))
    assert second["pay_id"] != first["pay_id"] and second["status"] == "pending"
    assert Pay.get_by_id(first["pay_id"]).status == "cancel"
    assert [c[2]["order_no"] for c in fake_pingpp.charge_creations()] == [first["pay_id"], second["pay_id"]]
    # The new pay is now the one a repeated call returns.
    assert created(order_service(**fields, **change))["pay_id"] == second["pay_id"]


def test_an_order_whose_pay_was_cancelled_by_the_payer_gets_a_new_pay(order_service, make_user, fake_pingpp):
    payer = make_user()
    fields = order_fields(userID=payer.id)
    first = created(order_service(**fields))
    assert payer.post(f"/rest/pay/{first['pay_id']}/status", {"status": "cancel"}).json["code"] == 900
    second = created(order_service(**fields))
    assert second["pay_id"] != first["pay_id"] and len(fake_pingpp.charge_creations()) == 2


@pytest.mark.parametrize("then_refunded", [False, True])
def test_an_order_that_is_already_paid_is_910(order_service, fake_pingpp, send_event, then_refunded):
    fields = order_fields(amount=500)
    info = created(order_service(**fields))
    charge = fake_pingpp.mark_paid(info["charge"]["id"])
    assert send_event("charge.succeeded", charge).json["result"] == "applied"
    if then_refunded:
        refund = {
            "id": "re_" + new_id(),
            "object": "refund",
            "amount": 500,
            "succeed": True,
            "status": "succeeded",
            "charge": charge["id"],
            "charge_order_no": info["pay_id"],
            "currency": "cny",
        }
        assert send_event("refund.succeeded", refund).json["result"] == "applied"
    for change in ({}, {"money": 400}, {"channel": "wx"}):
        response = order_service(**fields, **change)
        assert (response.status_int, response.json["code"]) == (403, 910), response.json
    assert len(fake_pingpp.charge_creations()) == 1 and Pay.select().count() == 1


def test_racing_calls_for_one_order_make_one_pay_and_one_charge(app, fake_pingpp, database):
    fields = {"type": "order", **order_fields(), "amount": 700, "channel": "alipay", "subject": "s"}
    raw = json.dumps(fields).encode()
    barrier, answers = threading.Barrier(8), []

    def call():
        client = webtest.TestApp(app.app)
        try:
            barrier.wait()
            answers.append(internal_post(client, raw))
        finally:
            db.close()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.json["code"] for a in answers] == [900] * 8, [a.json for a in answers]
    assert len({a.json["info"]["pay_id"] for a in answers}) == 1
    assert len(fake_pingpp.charge_creations()) == 1 and Pay.select().count() == 1


# --- POST /internal/pays: Ping++ failing -------------------------------------------------------


def test_ping_plus_plus_answering_500_is_920_and_leaves_no_pay(order_service, fake_pingpp):
    fake_pingpp.fail_next(status=500)
    response = order_service()
    assert (response.status_int, response.json["code"]) == (502, 920)
    assert set(response.json) == {"code", "msg"}
    assert Pay.select().count() == 0


def test_ping_plus_plus_hanging_past_the_timeout_is_920_and_leaves_no_pay(order_service, fake_pingpp, settings):
    fake_pingpp.hang_next(settings.pingpp_timeout + 2)
    started = time.monotonic()
    response = order_service()
    assert (response.status_int, response.json["code"]) == (502, 920)
    assert time.monotonic() - started < settings.pingpp_timeout + 1.5
    assert Pay.select().count() == 0


def test_after_ping_plus_plus_failed_the_same_order_can_be_created(order_service, fake_pingpp):
    fields = order_fields()
    fake_pingpp.fail_next(status=500)
    assert order_service(**fields).json["code"] == 920
    info = created(order_service(**fields))
    assert Pay.select().count() == 1 and fake_pingpp.charge_for(info["pay_id"]) is not None


def test_ping_plus_plus_failing_while_replacing_a_pending_pay_leaves_that_pay_pending(order_service, fake_pingpp):
    fields = order_fields(amount=500)
    first = created(order_service(**fields))
    fake_pingpp.fail_next(status=500)
    assert order_service(**fields, money=400).json["code"] == 920
    assert [(p.pay_id, p.status) for p in Pay.select()] == [(first["pay_id"], "pending")]
    again = created(order_service(**fields))
    assert (again["pay_id"], again["status"], again["charge"]) == (first["pay_id"], "pending", first["charge"])
    assert len(fake_pingpp.charge_creations()) == 2  # the first charge and the failed attempt


# --- GET /internal/pays/{pay_id} ---------------------------------------------------------------


def test_the_order_service_reads_any_pay(app, order_service):
    info = created(order_service())
    response = internal_get(app, info["pay_id"])
    assert response.json == {"code": 900, "info": info}


@pytest.mark.parametrize("headers", [{}, {"X-Service-Key": "wrong-key"}])
def test_reading_a_pay_without_the_right_service_key_is_901(app, order_service, headers):
    info = created(order_service())
    response = internal_get(app, info["pay_id"], headers=headers)
    assert (response.status_int, response.json["code"]) == (401, 901) and "info" not in response.json


def test_reading_an_unknown_pay_is_911(app):
    response = internal_get(app, new_id())
    assert (response.status_int, response.json["code"]) == (404, 911)


@pytest.mark.parametrize(
    "bad_id", ["abc", "57691BBA8789FF202B5968FB", "57691bba8789ff202b5968fb0", "57691bba8789ff202b5968fz"]
)
def test_reading_a_pay_by_a_malformed_id_is_904(app, bad_id):
    response = internal_get(app, bad_id)
    assert (response.status_int, response.json["code"]) == (400, 904)


# --- routes 1 and 2: the payer reads ---------------------------------------------------------


def test_the_payer_reads_the_pay_as_the_order_service_created_it(order_service, make_user):
    payer = make_user()
    info = created(order_service(userID=payer.id))
    assert payer.get(f"/rest/pay/{info['pay_id']}").json == {"code": 900, "info": info}


def test_the_payer_reads_the_status_and_nothing_else(order_service, make_user):
    payer = make_user()
    info = created(order_service(userID=payer.id))
    response = payer.get(f"/rest/pay/{info['pay_id']}/status")
    assert response.json == {"code": 900, "status": "pending", "client_status": "pending"}


@pytest.mark.parametrize("suffix", ["", "/status"])
def test_someone_elses_pay_is_911_exactly_like_an_unknown_one(order_service, make_user, suffix):
    payer, stranger = make_user(), make_user()
    info = created(order_service(userID=payer.id))
    theirs = stranger.get(f"/rest/pay/{info['pay_id']}{suffix}")
    unknown = stranger.get(f"/rest/pay/{new_id()}{suffix}")
    assert (theirs.status_int, theirs.json["code"]) == (404, 911)
    assert (theirs.status_int, theirs.json) == (unknown.status_int, unknown.json)


@pytest.mark.parametrize("suffix", ["", "/status"])
def test_the_expert_cannot_read_the_pay_either(order_service, make_user, suffix):
    payer, expert = make_user(), make_user()
    info = created(order_service(userID=payer.id, expert_id=expert.id))
    assert expert.get(f"/rest/pay/{info['pay_id']}{suffix}").json["code"] == 911


@pytest.mark.parametrize("suffix", ["", "/status"])
def test_reading_a_pay_without_auth_is_901(app, order_service, suffix):
    info = created(order_service())
    response = app.get(f"/rest/pay/{info['pay_id']}{suffix}", expect_errors=True)
    assert (response.status_int, response.json["code"]) == (401, 901)


@pytest.mark.parametrize("suffix", ["", "/status"])
def test_reading_a_pay_by_a_malformed_id_on_the_mobile_routes_is_904(user, suffix):
    response = user.get(f"/rest/pay/57691BBA8789FF202B5968FB{suffix}")
    assert (response.status_int, response.json["code"]) == (400, 904)
