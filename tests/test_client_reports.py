"""Route 3, POST /rest/pay/{pay_id}/status: what the phone saw is recorded, never trusted for money."""

import dataclasses

import pytest

from payapi.ids import new_id
from payapi.models import ClientReport, Pay, Wallet
from tests.conftest import balance_of, ledger_of, money_moved


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, platform_fee_bps=250, pingpp_timeout=0.5)


def retrievals(fake_pingpp, charge_id):
    return [r for r in fake_pingpp.requests if r[:2] == ("GET", f"/v1/charges/{charge_id}")]


@pytest.fixture
def payer(make_user):
    return make_user()


@pytest.fixture
def pay_in(payer, order_service, fake_pingpp, send_event):
    """A pay of 10000 fen by `payer` brought into the given status the way it really gets there."""

    def make(status):
        info = order_service(userID=payer.id, amount=10000).json["info"]
        charge_id = info["charge"]["id"]
        if status in ("paid", "refunded"):
            charge = fake_pingpp.mark_paid(charge_id)
            assert send_event("charge.succeeded", charge).json["result"] == "applied"
        if status == "refunded":
            assert send_event("refund.succeeded", fake_pingpp.refund(charge_id, 10000)).json["result"] == "applied"
        if status in ("fail", "cancel"):
            report = {"fail": "invalid", "cancel": "cancel"}[status]
            assert payer.post(f"/rest/pay/{info['pay_id']}/status", {"status": report}).json == {"code": 900}
        assert Pay.get_by_id(info["pay_id"]).status == status
        return info

    return make


def report(user, pay_id, status):
    return user.post(f"/rest/pay/{pay_id}/status", {"status": status})


# The contract's table: what each report does to each status while Ping++ has no news
# (the charge at Ping++ is unpaid, except for the pays that were paid).
TABLE = {
    "pending": {"success": "pending", "fail": "pending", "cancel": "cancel", "invalid": "fail"},
    "paid": {"success": "paid", "fail": "paid", "cancel": "paid", "invalid": "paid"},
    "fail": {"success": "fail", "fail": "fail", "cancel": "fail", "invalid": "fail"},
    "cancel": {"success": "cancel", "fail": "cancel", "cancel": "cancel", "invalid": "cancel"},
    "refunded": {"success": "refunded", "fail": "refunded", "cancel": "refunded", "invalid": "refunded"},
}
CASES = [(start, seen, end) for start, row in TABLE.items() for seen, end in row.items()]


@pytest.mark.parametrize("start, seen, end", CASES, ids=[f"{s}-{c}" for s, c, _ in CASES])
def test_a_report_is_recorded_and_moves_the_status_as_the_contract_says(payer, pay_in, start, seen, end):
    info = pay_in(start)
    expert = info["expert_id"]
    money_before = (ledger_of(expert), balance_of(expert))
    response = report(payer, info["pay_id"], seen)
    assert (response.status_int, response.json) == (200, {"code": 900})
    assert payer.get(f"/rest/pay/{info['pay_id']}/status").json == {"code": 900, "status": end, "client_status": seen}
    assert (ledger_of(expert), balance_of(expert)) == money_before


def test_success_never_marks_the_pay_paid_while_ping_plus_plus_says_unpaid(payer, pay_in, fake_pingpp):
    info = pay_in("pending")
    assert report(payer, info["pay_id"], "success").json == {"code": 900}
    assert len(retrievals(fake_pingpp, info["charge"]["id"])) == 1  # it asked
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.client_status) == ("pending", "success")
    assert not money_moved() and Wallet.select().count() == 0


def test_success_with_the_charge_paid_at_ping_plus_plus_marks_it_paid_and_credits_money_less_fee(
    payer, order_service, fake_pingpp
):
    info = order_service(userID=payer.id, amount=12356, money=10000).json["info"]
    charge = fake_pingpp.mark_paid(info["charge"]["id"])
    assert report(payer, info["pay_id"], "success").json == {"code": 900}
    shown = payer.get(f"/rest/pay/{info['pay_id']}").json["info"]
    assert (shown["status"], shown["client_status"], shown["charge"]) == ("paid", "success", charge)
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]
    assert balance_of(info["expert_id"]) == 9750


def test_success_reported_twice_credits_once(payer, pay_in, fake_pingpp):
    info = pay_in("pending")
    fake_pingpp.mark_paid(info["charge"]["id"])
    assert [report(payer, info["pay_id"], "success").json for _ in range(2)] == [{"code": 900}] * 2
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]


@pytest.mark.parametrize("start", ["cancel", "fail"])
def test_success_on_a_closed_pay_that_ping_plus_plus_says_paid_makes_it_paid(payer, pay_in, fake_pingpp, start):
    info = pay_in(start)
    # The payment slipped through before Ping++ closed the charge.
    fake_pingpp.mark_paid(info["charge"]["id"], even_if_reversed=True)
    assert report(payer, info["pay_id"], "success").json == {"code": 900}
    assert Pay.get_by_id(info["pay_id"]).status == "paid"
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]


def test_a_fail_report_does_not_ask_ping_plus_plus(payer, pay_in, fake_pingpp):
    info = pay_in("pending")
    fake_pingpp.mark_paid(info["charge"]["id"])
    report(payer, info["pay_id"], "fail")
    assert retrievals(fake_pingpp, info["charge"]["id"]) == []
    assert Pay.get_by_id(info["pay_id"]).status == "pending" and not money_moved()


@pytest.mark.parametrize("seen, closed_as", [("cancel", "cancel"), ("invalid", "fail")])
def test_a_closing_report_closes_the_charge_at_ping_plus_plus_too(payer, pay_in, fake_pingpp, seen, closed_as):
    info = pay_in("pending")
    report(payer, info["pay_id"], seen)
    pay = Pay.get_by_id(info["pay_id"])
    assert pay.status == closed_as and pay.reversed_at is not None
    assert fake_pingpp.charges[info["charge"]["id"]]["reversed"] is True
    assert not money_moved()


@pytest.mark.parametrize("seen", ["cancel", "invalid"])
def test_a_closing_report_on_a_charge_ping_plus_plus_says_is_paid_makes_the_pay_paid(payer, pay_in, fake_pingpp, seen):
    info = pay_in("pending")
    fake_pingpp.mark_paid(info["charge"]["id"])  # paid, but the phone showed something else
    report(payer, info["pay_id"], seen)
    assert Pay.get_by_id(info["pay_id"]).status == "paid"
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]


@pytest.mark.parametrize("failure", ["500", "hang"])
def test_success_is_recorded_and_answered_900_when_ping_plus_plus_is_unreachable(
    payer, pay_in, fake_pingpp, settings, failure
):
    info = pay_in("pending")
    fake_pingpp.mark_paid(info["charge"]["id"])
    if failure == "hang":
        fake_pingpp.hang_next(settings.pingpp_timeout + 2)
    else:
        fake_pingpp.fail_next(status=500)
    assert report(payer, info["pay_id"], "success").json == {"code": 900}
    shown = payer.get(f"/rest/pay/{info['pay_id']}/status").json
    assert shown == {"code": 900, "status": "pending", "client_status": "success"}
    assert [r.status for r in ClientReport.select()] == ["success"]
    assert not money_moved()
    # Once Ping++ answers again, the next report settles it.
    assert report(payer, info["pay_id"], "success").json == {"code": 900}
    assert Pay.get_by_id(info["pay_id"]).status == "paid"


def test_every_report_is_kept_with_the_phone_headers(payer, pay_in):
    info = pay_in("pending")
    for seen in ("fail", "success", "cancel"):
        report(payer, info["pay_id"], seen)
    rows = ClientReport.select().where(ClientReport.pay_id == info["pay_id"]).order_by(ClientReport.id)
    assert [(r.status, r.user_id, r.client_ip, r.platform, r.store) for r in rows] == [
        (seen, payer.id, "1.2.3.4", "android", "TencentAPP") for seen in ("fail", "success", "cancel")
    ]
    assert all(r.created_at > 0 for r in rows)


def test_a_report_without_the_optional_headers_is_recorded_with_empty_ones(app, payer, pay_in):
    info = pay_in("pending")
    response = app.post(
        f"/rest/pay/{info['pay_id']}/status", b'{"status": "fail"}',
        headers={"auth": payer.token}, content_type="application/json", expect_errors=True,
    )
    assert response.json == {"code": 900}
    row = ClientReport.get(ClientReport.pay_id == info["pay_id"])
    assert (row.status, row.client_ip, row.platform, row.store) == ("fail", "", "", "")


@pytest.mark.parametrize("body", [{}, {"status": None}, {"status": "paid"}, {"status": "SUCCESS"}, {"status": ""},
                                  {"status": " success"}, {"status": 1}, {"status": ["success"]}, {"state": "success"}])
def test_a_report_with_an_invalid_status_is_904_and_changes_nothing(payer, pay_in, body):
    info = pay_in("pending")
    response = payer.post(f"/rest/pay/{info['pay_id']}/status", body)
    assert (response.status_int, response.json["code"]) == (400, 904)
    assert Pay.get_by_id(info["pay_id"]).client_status == "pending" and ClientReport.select().count() == 0


@pytest.mark.parametrize("raw", [b"", b"success", b"[]", b'{"status": "success"', b"null"])
def test_a_report_whose_body_is_not_a_json_object_is_904(payer, pay_in, raw):
    info = pay_in("pending")
    response = payer.post(f"/rest/pay/{info['pay_id']}/status", raw=raw)
    assert (response.status_int, response.json["code"]) == (400, 904)
    assert ClientReport.select().count() == 0


def test_a_report_on_someone_elses_pay_is_911_and_changes_nothing(make_user, pay_in, fake_pingpp):
    info = pay_in("pending")
    fake_pingpp.mark_paid(info["charge"]["id"])
    stranger = make_user()
    theirs = report(stranger, info["pay_id"], "cancel")
    unknown = report(stranger, new_id(), "cancel")
    assert (theirs.status_int, theirs.json["code"]) == (404, 911)
    assert (theirs.status_int, theirs.json) == (unknown.status_int, unknown.json)
    assert report(stranger, info["pay_id"], "success").json["code"] == 911
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.client_status) == ("pending", "pending")
    assert ClientReport.select().count() == 0 and retrievals(fake_pingpp, info["charge"]["id"]) == []


def test_a_report_without_auth_is_401(app, pay_in):
    info = pay_in("pending")
    response = app.post(f"/rest/pay/{info['pay_id']}/status", b'{"status": "cancel"}',
                        content_type="application/json", expect_errors=True)
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert Pay.get_by_id(info["pay_id"]).status == "pending"


def test_a_report_on_a_malformed_pay_id_is_904(payer):
    response = report(payer, "576b69ae7ce1fd7004cc828", "cancel")
    assert (response.status_int, response.json["code"]) == (400, 904)
