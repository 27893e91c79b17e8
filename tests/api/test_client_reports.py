"""Route 3, POST /rest/pay/{pay_id}/status: what the phone saw is recorded, never trusted for money."""

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import webtest

from payapi.app import create_app
from payapi.domain.ids import new_id
from payapi.infra.models import ClientReport, Pay, Wallet
from payapi.money.payments import REPORT_REPEAT_MS, REPORT_ROWS_PER_HOUR, RETRIEVE_INTERVAL_MS
from payapi.users.sms import FileSms
from payapi.wsgi import gateway_from
from tests.support.databases import balance_of, ledger_of, money_moved


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
    payer, pay_in, fake_pingpp, settings, failure, time_machine
):
    time_machine.move_to(time.time())
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
    # Once Ping++ answers again, the next report a few seconds later settles it.
    time_machine.shift(RETRIEVE_INTERVAL_MS / 1000)
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
        f"/rest/pay/{info['pay_id']}/status",
        b'{"status": "fail"}',
        headers={"auth": payer.token},
        content_type="application/json",
        expect_errors=True,
    )
    assert response.json == {"code": 900}
    row = ClientReport.get(ClientReport.pay_id == info["pay_id"])
    assert (row.status, row.client_ip, row.platform, row.store) == ("fail", "", "", "")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": None},
        {"status": "paid"},
        {"status": "SUCCESS"},
        {"status": ""},
        {"status": " success"},
        {"status": 1},
        {"status": ["success"]},
        {"state": "success"},
    ],
)
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
    response = app.post(
        f"/rest/pay/{info['pay_id']}/status",
        b'{"status": "cancel"}',
        content_type="application/json",
        expect_errors=True,
    )
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert Pay.get_by_id(info["pay_id"]).status == "pending"


def test_a_report_on_a_malformed_pay_id_is_904(payer):
    response = report(payer, "576b69ae7ce1fd7004cc828", "cancel")
    assert (response.status_int, response.json["code"]) == (400, 904)


# --- repeated reports: Ping++ asked once per few seconds, rows counted, not multiplied ---------


def report_from(app, user, pay_id, status, client="1.2.3.4"):
    """A report with the user's token and a given `client` header (the phone's IP as it sees it)."""
    return app.post(
        f"/rest/pay/{pay_id}/status",
        f'{{"status": "{status}"}}'.encode(),
        headers={"auth": user.token, "client": client, "platform": "android", "channel": "TencentAPP"},
        content_type="application/json",
        expect_errors=True,
    )


def rows_of(pay_id):
    rows = ClientReport.select().where(ClientReport.pay_id == pay_id).order_by(ClientReport.id)
    return [(r.status, r.client_ip, r.times) for r in rows]


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(time.time(), tick=False)
    return time_machine


def test_two_hundred_success_reports_in_a_second_ask_ping_plus_plus_once_and_keep_one_row(
    payer, pay_in, fake_pingpp, frozen
):
    info = pay_in("pending")
    for _ in range(200):
        assert report(payer, info["pay_id"], "success").json == {"code": 900}
        frozen.shift(0.004)
    assert len(retrievals(fake_pingpp, info["charge"]["id"])) == 1
    [row] = ClientReport.select().where(ClientReport.pay_id == info["pay_id"])
    assert (row.status, row.times, row.last_at - row.created_at) == ("success", 200, 199 * 4)


def test_a_success_report_asks_ping_plus_plus_again_only_after_a_few_seconds(payer, pay_in, fake_pingpp, frozen):
    info = pay_in("pending")
    report(payer, info["pay_id"], "success")
    frozen.shift(RETRIEVE_INTERVAL_MS / 1000 - 0.001)
    report(payer, info["pay_id"], "success")
    assert len(retrievals(fake_pingpp, info["charge"]["id"])) == 1
    frozen.shift(0.001)
    fake_pingpp.mark_paid(info["charge"]["id"])
    report(payer, info["pay_id"], "success")
    assert len(retrievals(fake_pingpp, info["charge"]["id"])) == 2
    assert Pay.get_by_id(info["pay_id"]).status == "paid"


def test_no_second_retrieve_while_one_is_still_in_flight(payer, pay_in, fake_pingpp, settings, frozen):
    info = pay_in("pending")
    # Ping++ gets 2 s here: the first report is surely still waiting while the second comes.
    patient = dataclasses.replace(settings, pingpp_timeout=2.0)
    patient_app = webtest.TestApp(create_app(patient, gateway_from(patient), FileSms(patient.sms_file)))
    fake_pingpp.hang_next(patient.pingpp_timeout + 1)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            patient_app.post_json, f"/rest/pay/{info['pay_id']}/status", {"status": "success"}, headers=payer.headers
        )
        deadline = time.monotonic() + 5
        while not retrievals(fake_pingpp, info["charge"]["id"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        frozen.shift(RETRIEVE_INTERVAL_MS / 1000 + 0.5)  # longer than the interval, but it is still waiting
        assert report(payer, info["pay_id"], "success").json == {"code": 900}
        assert first.result(timeout=10).json == {"code": 900}  # Ping++ timed out: recorded, 900
    assert len(retrievals(fake_pingpp, info["charge"]["id"])) == 1
    # The next one may ask a few seconds after the first ended.
    report(payer, info["pay_id"], "success")
    assert len(retrievals(fake_pingpp, info["charge"]["id"])) == 1
    frozen.shift(RETRIEVE_INTERVAL_MS / 1000)
    report(payer, info["pay_id"], "success")
    assert len(retrievals(fake_pingpp, info["charge"]["id"])) == 2


def test_identical_reports_are_counted_in_one_row_while_they_keep_coming_within_a_minute(app, payer, pay_in, frozen):
    info = pay_in("pending")
    for _ in range(3):
        report_from(app, payer, info["pay_id"], "fail")
        frozen.shift(REPORT_REPEAT_MS / 1000 - 1)  # each within a minute of the one before
    assert rows_of(info["pay_id"]) == [("fail", "1.2.3.4", 3)]
    frozen.shift(1)  # now a minute after the last one
    report_from(app, payer, info["pay_id"], "fail")
    assert rows_of(info["pay_id"]) == [("fail", "1.2.3.4", 3), ("fail", "1.2.3.4", 1)]


def test_a_report_that_differs_from_the_latest_row_gets_its_own_row(app, payer, pay_in, frozen):
    info = pay_in("pending")
    for status, client in [("fail", "1.1.1.1"), ("fail", "2.2.2.2"), ("success", "2.2.2.2"), ("fail", "2.2.2.2")]:
        report_from(app, payer, info["pay_id"], status, client)
    assert rows_of(info["pay_id"]) == [
        ("fail", "1.1.1.1", 1),
        ("fail", "2.2.2.2", 1),
        ("success", "2.2.2.2", 1),
        ("fail", "2.2.2.2", 1),
    ]
    row = ClientReport.select().order_by(ClientReport.id.desc()).first()
    assert row.created_at == row.last_at


def test_beyond_the_hourly_rows_of_a_pay_reports_are_counted_in_the_latest_row_of_their_status(
    app, payer, pay_in, frozen
):
    info = pay_in("pending")
    for i in range(REPORT_ROWS_PER_HOUR):  # a client that changes its headers every time
        report_from(app, payer, info["pay_id"], "fail" if i % 2 else "success", client=f"10.0.0.{i}")
    for i in range(50):
        report_from(app, payer, info["pay_id"], "fail", client=f"10.0.1.{i}")
    report_from(app, payer, info["pay_id"], "success", client="10.0.2.1")
    report_from(app, payer, info["pay_id"], "cancel", client="10.0.2.2")  # a status not seen before
    rows = rows_of(info["pay_id"])
    assert len(rows) == REPORT_ROWS_PER_HOUR + 1
    assert rows[-3:] == [
        ("success", f"10.0.0.{REPORT_ROWS_PER_HOUR - 2}", 2),
        ("fail", f"10.0.0.{REPORT_ROWS_PER_HOUR - 1}", 51),
        ("cancel", "10.0.2.2", 1),
    ]
    assert sum(times for _, _, times in rows) == REPORT_ROWS_PER_HOUR + 52
    assert Pay.get_by_id(info["pay_id"]).client_status == "cancel"
    frozen.shift(3600)  # an hour later, rows come again
    report_from(app, payer, info["pay_id"], "fail", client="10.0.3.1")
    assert rows_of(info["pay_id"])[-1] == ("fail", "10.0.3.1", 1)
