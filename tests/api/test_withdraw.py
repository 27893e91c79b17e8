"""POST /rest/pay/withdraw: the contract's checks in their order, the debit, the snapshot, refunds."""

import dataclasses
import json

import pytest
import time_machine
import webtest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from payapi.app import create_app
from payapi.domain.clock import natural_month, now_ms
from payapi.users.sms import FileSms
from tests.support.databases import ledger_of
from tests.support.scenarios import (
    ACCOUNT,
    PASSWD,
    User,
    balance,
    refresh_token,
    set_account,
    set_passwd,
    set_up_expert,
    transfer_object,
    withdraw,
    withdrawal,
    withdrawals_of,
)

MALFORMED_AMOUNTS = [
    10.5,
    100.0,
    "10.5",
    "-1",
    -1,
    " 100",
    "100 ",
    "+100",
    "1e3",
    1e3,
    "",
    True,
    False,
    None,
    [1000],
    {"v": 1000},
    "１０００",
    "0x64",
    "1_000",
]


@pytest.fixture
def expert(make_user, pay_expert):
    """An expert with a pay password, an Alipay account and 10,000 fen earned."""
    user = set_up_expert(make_user())
    pay_expert(user.id, 10_000)
    return user


def fail_transfer(send_event, withdraw_id, amount):
    response = send_event("transfer.failed", transfer_object(withdraw_id, amount, "failed"))
    assert response.json == {"code": 900, "result": "applied"}, response.json


# --- success -----------------------------------------------------------------------------------


def test_withdrawal_debits_the_balance_and_records_a_pending_withdrawal_with_snapshot_and_audit(expert, settings):
    response = withdraw(expert, "1000")

    assert response.status_int == 200 and response.json["code"] == 900, response.json
    withdraw_id = response.json["withdraw_id"]
    assert balance(expert) == 9_000
    assert ledger_of(expert.id)[-1] == ("withdraw", withdraw_id, -1_000)
    row = withdrawal(withdraw_id)
    assert (row.user_id, row.amount, row.status) == (expert.id, 1_000, "pending")
    assert (row.account_type, row.account_id, row.account_name) == ("alipay", ACCOUNT["id"], ACCOUNT["name"])
    assert (row.client_ip, row.platform, row.store) == ("1.2.3.4", "android", "TencentAPP")
    assert row.month == natural_month(row.created_at, settings.tz)
    assert row.transfer_id is None and row.attempts == 0


@pytest.mark.parametrize("amount", [1000, "1000", "0000001000", "0000000000000000001000"])
def test_amount_is_accepted_as_json_integer_or_digit_string(expert, amount):
    response = withdraw(expert, amount)
    assert response.json["code"] == 900, response.json
    assert withdrawal(response.json["withdraw_id"]).amount == 1000
    assert balance(expert) == 9_000


@pytest.mark.parametrize("amount", [100, 5_000_000, "100", "5000000"])
def test_withdraw_min_and_max_themselves_are_allowed(make_user, pay_expert, amount):
    rich = set_up_expert(make_user())
    pay_expert(rich.id, 5_000_000)
    response = withdraw(rich, amount)
    assert response.json["code"] == 900, response.json
    assert balance(rich) == 5_000_000 - int(amount)


def test_the_whole_balance_may_be_withdrawn(expert):
    assert withdraw(expert, 10_000).json["code"] == 900
    assert balance(expert) == 0


def test_audit_headers_are_optional_and_stored_blank_when_absent(expert, app):
    response = app.post(
        "/rest/pay/withdraw",
        json.dumps({"passwd": PASSWD, "amount": 1000}).encode(),
        headers={"auth": expert.token},
        content_type="application/json",
        expect_errors=True,
    )
    assert response.json["code"] == 900, response.json
    row = withdrawal(response.json["withdraw_id"])
    assert (row.client_ip, row.platform, row.store) == ("", "", "")


def test_overlong_audit_headers_are_cut_not_refused(expert, app):
    response = app.post(
        "/rest/pay/withdraw",
        json.dumps({"passwd": PASSWD, "amount": 1000}).encode(),
        headers={"auth": expert.token, "client": "9" * 300, "platform": "p" * 300, "channel": "c" * 300},
        content_type="application/json",
        expect_errors=True,
    )
    assert response.json["code"] == 900, response.json
    row = withdrawal(response.json["withdraw_id"])
    assert (len(row.client_ip), len(row.platform), len(row.store)) == (64, 32, 64)


# --- 904: the amount is checked first ------------------------------------------------------------


@pytest.mark.parametrize("amount", MALFORMED_AMOUNTS, ids=repr)
def test_malformed_amount_is_904_and_changes_nothing(expert, amount):
    response = withdraw(expert, amount)
    assert (response.status_int, response.json["code"]) == (400, 904), response.json
    assert balance(expert) == 10_000 and withdrawals_of(expert) == []


def test_missing_amount_is_904(expert):
    response = expert.post("/rest/pay/withdraw", {"passwd": PASSWD})
    assert response.json["code"] == 904


def test_amount_with_thousands_of_digits_is_904(expert):
    raw = b'{"passwd": "%s", "amount": %s}' % (PASSWD.encode(), b"9" * 5000)
    response = expert.post("/rest/pay/withdraw", raw=raw)
    assert (response.status_int, response.json["code"]) == (400, 904)
    assert balance(expert) == 10_000


@pytest.mark.parametrize("amount", [99, "99", 0, "0", 5_000_001, "5000001", 10**30, "999999999999999"])
def test_amount_outside_withdraw_min_max_is_904(expert, amount):
    response = withdraw(expert, amount)
    assert (response.status_int, response.json["code"]) == (400, 904), response.json
    assert balance(expert) == 10_000 and withdrawals_of(expert) == []


def test_withdraw_min_and_max_come_from_settings(database, settings, gateway, make_user, pay_expert):
    narrow = dataclasses.replace(settings, withdraw_min=500, withdraw_max=600)
    app = webtest.TestApp(create_app(narrow, gateway, FileSms(settings.sms_file)))
    user = set_up_expert(User(app, narrow))
    pay_expert(user.id, 10_000)
    assert withdraw(user, 499).json["code"] == 904
    assert withdraw(user, 601).json["code"] == 904
    assert withdraw(user, 500).json["code"] == 900


def test_missing_or_non_string_passwd_is_904(expert):
    assert expert.post("/rest/pay/withdraw", {"amount": 1000}).json["code"] == 904
    assert expert.post("/rest/pay/withdraw", {"amount": 1000, "passwd": 123456}).json["code"] == 904
    assert balance(expert) == 10_000


def test_malformed_amount_is_904_before_the_password_is_looked_at(expert):
    for _ in range(6):
        assert withdraw(expert, "10.5", passwd="wrong").json["code"] == 904
    # none of those counted toward the lock
    assert withdraw(expert, 1000).json["code"] == 900


def test_malformed_amount_is_904_even_without_pay_password(user):
    assert withdraw(user, "1e3").json["code"] == 904


@pytest.mark.parametrize("raw", [b"", b"[]", b"null", b'"1000"', b"{broken", b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_904(expert, raw):
    response = expert.post("/rest/pay/withdraw", raw=raw)
    assert (response.status_int, response.json["code"]) == (400, 904)


def test_withdraw_without_auth_is_901(app, expert):
    response = app.post_json("/rest/pay/withdraw", {"passwd": PASSWD, "amount": 1000}, expect_errors=True)
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert balance(expert) == 10_000


# --- 910: pay password and account set -------------------------------------------------------------


def test_withdraw_without_pay_password_is_910(make_user, pay_expert):
    user = make_user()
    set_account(user)
    pay_expert(user.id, 10_000)
    response = withdraw(user, 1000)
    assert (response.status_int, response.json["code"]) == (403, 910)
    assert balance(user) == 10_000


def test_withdraw_with_nothing_set_is_910(user):
    assert withdraw(user, 1000).json["code"] == 910


def test_withdraw_without_account_is_910_and_the_password_is_not_checked(make_user, pay_expert):
    user = make_user()
    set_passwd(user)
    pay_expert(user.id, 10_000)
    for _ in range(6):
        response = withdraw(user, 1000, passwd="wrong")
        assert (response.status_int, response.json["code"]) == (403, 910)
    set_account(user)
    assert withdraw(user, 1000).json["code"] == 900  # the wrong guesses above never counted


def test_missing_account_is_910_even_while_locked(make_user):
    user = make_user()
    set_passwd(user)
    for _ in range(5):
        user.post("/rest/pay/passwd", {"passwd": "new", "old_passwd": "wrong"})
    assert withdraw(user, 1000).json["code"] == 910


# --- 905 / 906: password and lock ----------------------------------------------------------------


def test_wrong_password_is_905_and_changes_nothing(expert):
    response = withdraw(expert, 1000, passwd="wrong")
    assert (response.status_int, response.json["code"]) == (403, 905)
    assert balance(expert) == 10_000 and withdrawals_of(expert) == []


def test_five_wrong_passwords_lock_withdrawals_even_with_the_right_password(expert):
    codes = [withdraw(expert, 1000, passwd="wrong").json["code"] for _ in range(5)]
    assert codes == [905, 905, 905, 905, 906]
    response = withdraw(expert, 1000)
    assert (response.status_int, response.json["code"]) == (429, 906)
    assert 0 < response.json["retry_after"] <= 3 * 3600
    assert response.headers["Retry-After"] == str(response.json["retry_after"])
    assert balance(expert) == 10_000 and withdrawals_of(expert) == []


def test_wrong_passwords_on_other_routes_count_toward_the_withdrawal_lock(expert):
    for _ in range(4):
        assert withdraw(expert, 1000, passwd="wrong").json["code"] == 905
    assert expert.post("/rest/pay/passwd", {"passwd": "new", "old_passwd": "wrong"}).json["code"] == 906
    assert withdraw(expert, 1000).json["code"] == 906


def test_lock_ends_after_three_hours(expert):
    with time_machine.travel(now_ms() / 1000, tick=False) as traveller:
        for _ in range(5):
            withdraw(expert, 1000, passwd="wrong")
        traveller.shift(3 * 3600 - 1)
        assert withdraw(refresh_token(expert), 1000).json["code"] == 906
        traveller.shift(2)
        assert withdraw(expert, 1000).json["code"] == 900


def test_a_right_password_resets_the_count(expert, send_event):
    for _ in range(4):
        withdraw(expert, 1000, passwd="wrong")
    first = withdraw(expert, 1000)
    assert first.json["code"] == 900
    fail_transfer(send_event, first.json["withdraw_id"], 1000)
    for _ in range(4):
        assert withdraw(expert, 1000, passwd="wrong").json["code"] == 905
    assert withdraw(expert, 1000).json["code"] == 900


def test_wrong_password_is_905_even_when_the_month_is_used(expert):
    assert withdraw(expert, 1000).json["code"] == 900
    assert withdraw(expert, 1000, passwd="wrong").json["code"] == 905


# --- 910: once a natural month, within the balance ---------------------------------------------------


def test_second_withdrawal_in_the_same_month_is_910(expert):
    assert withdraw(expert, 1000).json["code"] == 900
    response = withdraw(expert, 1000)
    assert (response.status_int, response.json["code"]) == (403, 910)
    assert balance(expert) == 9_000 and len(withdrawals_of(expert)) == 1


@pytest.mark.parametrize("status", ["processing", "succeeded"])
def test_processing_or_succeeded_withdrawal_also_uses_up_the_month(expert, fake_pingpp, gateway, send_event, status):
    from payapi.money.withdrawals import run_payouts

    assert withdraw(expert, 1000).json["code"] == 900
    run_payouts(gateway)
    if status == "succeeded":
        (transfer_id,) = fake_pingpp.transfers
        assert (
            send_event("transfer.succeeded", fake_pingpp.set_transfer(transfer_id, "paid")).json["result"] == "applied"
        )
    assert withdrawals_of(expert)[0].status == status
    assert withdraw(expert, 1000).json["code"] == 910


def test_the_month_rule_is_checked_before_the_balance(expert, make_user, pay_expert):
    poor = set_up_expert(make_user(phone="13900139000"))
    pay_expert(poor.id, 500)
    insufficient = withdraw(poor, 1_000).json
    assert withdraw(expert, 1_000).json["code"] == 900
    month_used = withdraw(expert, 1_000).json
    both = withdraw(expert, 1_000_000).json
    assert insufficient["code"] == month_used["code"] == both["code"] == 910
    assert insufficient["msg"] != month_used["msg"]
    assert both["msg"] == month_used["msg"]


def test_amount_above_balance_is_910_and_changes_nothing(expert):
    response = withdraw(expert, 10_001)
    assert (response.status_int, response.json["code"]) == (403, 910)
    assert balance(expert) == 10_000 and withdrawals_of(expert) == []


def test_user_with_no_wallet_gets_910_for_insufficient_balance(make_user):
    user = set_up_expert(make_user())
    assert withdraw(user, 100).json["code"] == 910
    assert balance(user) == 0 and withdrawals_of(user) == []


def test_insufficient_balance_does_not_use_up_the_month(expert):
    assert withdraw(expert, 20_000).json["code"] == 910
    assert withdraw(expert, 1_000).json["code"] == 900


# --- the snapshot and failed withdrawals ----------------------------------------------------------


def test_later_account_change_does_not_change_the_withdrawals_account(expert):
    with time_machine.travel(now_ms() / 1000, tick=False) as traveller:
        withdraw_id = withdraw(expert, 1000).json["withdraw_id"]
        traveller.shift(61)  # one SMS code a minute
        set_account(expert, {"type": "alipay", "id": "new@example.com", "name": "李四"})
        listed = expert.get("/rest/pay/withdraws").json["list"][0]
    assert expert.get("/rest/pay/withdrawInfo").json["info"]["id"] == "new@example.com"
    row = withdrawal(withdraw_id)
    assert (row.account_type, row.account_id, row.account_name) == ("alipay", ACCOUNT["id"], ACCOUNT["name"])
    assert listed["account"] == ACCOUNT


def test_failed_withdrawal_is_refunded_and_frees_the_month(expert, send_event):
    first = withdraw(expert, 3_000).json["withdraw_id"]
    assert balance(expert) == 7_000

    fail_transfer(send_event, first, 3_000)

    assert withdrawal(first).status == "failed"
    assert balance(expert) == 10_000
    assert ledger_of(expert.id)[-2:] == [("withdraw", first, -3_000), ("withdraw_refund", first, 3_000)]
    second = withdraw(expert, 4_000)
    assert second.json["code"] == 900, second.json
    assert balance(expert) == 6_000
    assert withdrawal(second.json["withdraw_id"]).status == "pending"
    assert withdraw(expert, 100).json["code"] == 910  # the new one uses up the month again


# --- the property ----------------------------------------------------------------------------------


def _valid(amount):
    if isinstance(amount, bool):
        return False
    if isinstance(amount, int):
        return 100 <= amount <= 5_000_000
    if isinstance(amount, str) and amount and all(c in "0123456789" for c in amount):
        return 100 <= int(amount) <= 5_000_000
    return False


AMOUNTS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=0, max_value=6_000_000),
    st.integers(min_value=0, max_value=6_000_000).map(str),
    st.text(alphabet="0123456789", max_size=12),
    st.integers(min_value=0, max_value=6_000_000).map(lambda n: "0" * 16 + str(n)),
    st.text(alphabet="0123456789 +-.eE_x", max_size=10),
    st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@pytest.fixture
def rich_expert(make_user, pay_expert):
    user = set_up_expert(make_user())
    pay_expert(user.id, 5_000_000)
    return user


# The fixtures are made once for all examples: each valid withdrawal is failed again, which
# refunds it and frees the month, so every example starts from the same balance.
@hypothesis_settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amount=AMOUNTS)
def test_any_amount_gives_900_only_when_valid_and_never_5xx(rich_expert, send_event, amount):
    response = withdraw(rich_expert, amount)
    assert response.status_int < 500, response.json
    if _valid(amount):
        assert response.json["code"] == 900, (amount, response.json)
        assert balance(rich_expert) == 5_000_000 - int(amount)
        fail_transfer(send_event, response.json["withdraw_id"], int(amount))
    else:
        assert response.json["code"] == 904, (amount, response.json)
    assert balance(rich_expert) == 5_000_000
