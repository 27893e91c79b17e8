"""GET /rest/pay/balance and GET /rest/pay/withdraws."""

import re

import pytest
import time_machine

from payapi.domain.clock import iso, now_ms
from payapi.money.withdrawals import run_payouts
from tests.support.scenarios import (
    ACCOUNT,
    refresh_token,
    set_account,
    set_passwd,
    set_up_expert,
    transfer_object,
    withdraw,
    withdrawal,
)

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def expert(make_user, pay_expert):
    user = set_up_expert(make_user())
    pay_expert(user.id, 10_000)
    return user


def balance_body(user):
    response = user.get("/rest/pay/balance")
    assert response.status_int == 200
    return response.json


# --- balance -----------------------------------------------------------------------------------


def test_balance_of_a_new_user_is_zero_and_cannot_withdraw(user):
    assert balance_body(user) == {
        "code": 900,
        "info": {
            "balance": 0,
            "available": 0,
            "pending": 0,
            "next_available_at": None,
            "currency": "cny",
            "can_withdraw": False,
            "next_withdraw_at": None,
        },
    }


def test_balance_of_a_set_up_expert_with_earnings_can_withdraw(expert):
    assert balance_body(expert) == {
        "code": 900,
        "info": {
            "balance": 10_000,
            "available": 10_000,
            "pending": 0,
            "next_available_at": None,
            "currency": "cny",
            "can_withdraw": True,
            "next_withdraw_at": None,
        },
    }


def test_balance_is_the_sum_of_the_experts_paid_pays(make_user, pay_expert):
    user = make_user()
    pay_expert(user.id, 1_234)
    pay_expert(user.id, 5_000)
    assert balance_body(user)["info"]["balance"] == 6_234


def test_balance_requires_auth(app):
    response = app.get("/rest/pay/balance", expect_errors=True)
    assert (response.status_int, response.json["code"]) == (401, 901)


def test_cannot_withdraw_without_pay_password(make_user, pay_expert):
    user = make_user()
    set_account(user)
    pay_expert(user.id, 10_000)
    assert balance_body(user)["info"] == {
        "balance": 10_000,
        "available": 10_000,
        "pending": 0,
        "next_available_at": None,
        "currency": "cny",
        "can_withdraw": False,
        "next_withdraw_at": None,
    }


def test_cannot_withdraw_without_account(make_user, pay_expert):
    user = make_user()
    set_passwd(user)
    pay_expert(user.id, 10_000)
    assert balance_body(user)["info"] == {
        "balance": 10_000,
        "available": 10_000,
        "pending": 0,
        "next_available_at": None,
        "currency": "cny",
        "can_withdraw": False,
        "next_withdraw_at": None,
    }


def test_cannot_withdraw_while_locked_and_can_again_when_the_lock_ends(expert):
    with time_machine.travel(now_ms() / 1000, tick=False) as clock:
        for _ in range(5):
            withdraw(expert, 1000, passwd="wrong")
        assert balance_body(expert)["info"] == {
            "balance": 10_000,
            "available": 10_000,
            "pending": 0,
            "next_available_at": None,
            "currency": "cny",
            "can_withdraw": False,
            "next_withdraw_at": None,
        }
        clock.shift(3 * 3600 + 1)
        assert balance_body(refresh_token(expert))["info"]["can_withdraw"] is True


def test_wrong_passwords_below_the_limit_do_not_block(expert):
    for _ in range(4):
        withdraw(expert, 1000, passwd="wrong")
    assert balance_body(expert)["info"]["can_withdraw"] is True


def test_month_used_blocks_and_says_when_the_next_withdrawal_is_possible(expert):
    with time_machine.travel("2026-11-12T03:00:00.000Z", tick=False):
        refresh_token(expert)
        assert withdraw(expert, 1000).json["code"] == 900
        assert balance_body(expert)["info"] == {
            "balance": 9_000,
            "available": 9_000,
            "pending": 0,
            "next_available_at": None,
            "currency": "cny",
            "can_withdraw": False,
            "next_withdraw_at": "2026-11-30T16:00:00.000Z",
        }


def test_failed_withdrawal_unblocks_the_month(expert, send_event):
    withdraw_id = withdraw(expert, 1000).json["withdraw_id"]
    assert send_event("transfer.failed", transfer_object(withdraw_id, 1000)).json["result"] == "applied"
    assert balance_body(expert)["info"] == {
        "balance": 10_000,
        "available": 10_000,
        "pending": 0,
        "next_available_at": None,
        "currency": "cny",
        "can_withdraw": True,
        "next_withdraw_at": None,
    }


@pytest.mark.parametrize("earned, can", [(99, False), (100, True)])
def test_can_withdraw_needs_at_least_withdraw_min(make_user, pay_expert, earned, can):
    user = set_up_expert(make_user())
    pay_expert(user.id, earned)
    assert balance_body(user)["info"] == {
        "balance": earned,
        "available": earned,
        "pending": 0,
        "next_available_at": None,
        "currency": "cny",
        "can_withdraw": can,
        "next_withdraw_at": None,
    }


# --- the list ----------------------------------------------------------------------------------


def make_withdrawals(expert, send_event, count, clock):
    """count withdrawals, oldest first, one second apart; all but the newest failed (so the month is free)."""
    ids = []
    for i in range(count):
        response = withdraw(expert, 100 + i)
        assert response.json["code"] == 900, response.json
        ids.append(response.json["withdraw_id"])
        if i < count - 1:
            assert send_event("transfer.failed", transfer_object(ids[-1], 100 + i)).json["result"] == "applied"
        clock.shift(1)
    return ids


def test_list_is_empty_for_a_user_without_withdrawals(user):
    assert user.get("/rest/pay/withdraws").json == {"code": 900, "list": [], "has_more": False}


def test_list_item_has_exactly_the_documented_shape(expert):
    withdraw_id = withdraw(expert, "1000").json["withdraw_id"]
    body = expert.get("/rest/pay/withdraws").json
    row = withdrawal(withdraw_id)
    assert body == {
        "code": 900,
        "list": [
            {
                "withdraw_id": withdraw_id,
                "amount": 1000,
                "status": "pending",
                "account": ACCOUNT,
                "createdAt": body["list"][0]["createdAt"],
                "updatedAt": body["list"][0]["updatedAt"],
            }
        ],
        "has_more": False,
    }
    item = body["list"][0]
    assert ISO.fullmatch(item["createdAt"]) and ISO.fullmatch(item["updatedAt"])
    assert item["createdAt"] == iso(row.created_at) and item["updatedAt"] == iso(row.updated_at)


def test_list_shows_status_changes(expert, gateway, fake_pingpp, send_event, clock):
    withdraw_id = withdraw(expert, 1000).json["withdraw_id"]
    created = expert.get("/rest/pay/withdraws").json["list"][0]
    clock.shift(2)
    run_payouts(gateway)
    assert expert.get("/rest/pay/withdraws").json["list"][0]["status"] == "processing"
    (transfer_id,) = fake_pingpp.transfers
    clock.shift(2)
    send_event("transfer.succeeded", fake_pingpp.set_transfer(transfer_id, "paid"))
    item = expert.get("/rest/pay/withdraws").json["list"][0]
    assert (item["withdraw_id"], item["status"], item["createdAt"]) == (withdraw_id, "succeeded", created["createdAt"])
    assert item["updatedAt"] > created["updatedAt"]


def test_list_is_newest_first(expert, send_event, clock):
    ids = make_withdrawals(expert, send_event, 3, clock)
    body = expert.get("/rest/pay/withdraws").json
    assert [w["withdraw_id"] for w in body["list"]] == ids[::-1]
    assert [w["status"] for w in body["list"]] == ["pending", "failed", "failed"]
    assert [w["amount"] for w in body["list"]] == [102, 101, 100]
    assert body["has_more"] is False


def test_list_defaults_to_twenty(expert, send_event, clock):
    ids = make_withdrawals(expert, send_event, 21, clock)
    body = expert.get("/rest/pay/withdraws").json
    assert [w["withdraw_id"] for w in body["list"]] == ids[::-1][:20]
    assert body["has_more"] is True


def test_pages_with_limit_and_before_walk_every_withdrawal_once(expert, send_event, clock):
    ids = make_withdrawals(expert, send_event, 5, clock)
    seen, before, pages = [], None, []
    while True:
        params = {"limit": "2"} if before is None else {"limit": "2", "before": before}
        body = expert.get("/rest/pay/withdraws", **params).json
        assert body["code"] == 900
        seen += [w["withdraw_id"] for w in body["list"]]
        pages.append((len(body["list"]), body["has_more"]))
        if not body["has_more"]:
            break
        before = body["list"][-1]["withdraw_id"]
    assert seen == ids[::-1]
    assert pages == [(2, True), (2, True), (1, False)]


def test_before_is_exclusive(expert, send_event, clock):
    ids = make_withdrawals(expert, send_event, 3, clock)
    body = expert.get("/rest/pay/withdraws", before=ids[1]).json
    assert [w["withdraw_id"] for w in body["list"]] == [ids[0]]
    assert expert.get("/rest/pay/withdraws", before=ids[0]).json == {"code": 900, "list": [], "has_more": False}


def test_withdrawals_made_in_the_same_millisecond_page_without_loss(expert, send_event, clock):
    ids = []
    for i in range(4):  # the clock does not move: every created_at is equal
        response = withdraw(expert, 100 + i)
        ids.append(response.json["withdraw_id"])
        if i < 3:
            send_event("transfer.failed", transfer_object(ids[-1], 100 + i))
    first = expert.get("/rest/pay/withdraws", limit="2").json
    second = expert.get("/rest/pay/withdraws", limit="2", before=first["list"][-1]["withdraw_id"]).json
    listed = [w["withdraw_id"] for w in first["list"] + second["list"]]
    assert sorted(listed) == sorted(ids) and len(set(listed)) == 4
    assert (first["has_more"], second["has_more"]) == (True, False)


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_are_accepted(expert, limit):
    withdraw(expert, 1000)
    body = expert.get("/rest/pay/withdraws", limit=limit).json
    assert body["code"] == 900 and len(body["list"]) == 1 and body["has_more"] is False


def test_limit_one_says_there_is_more(expert, send_event, clock):
    ids = make_withdrawals(expert, send_event, 2, clock)
    body = expert.get("/rest/pay/withdraws", limit="1").json
    assert ([w["withdraw_id"] for w in body["list"]], body["has_more"]) == ([ids[1]], True)


@pytest.mark.parametrize("limit", ["0", "101", "x", "1.5", "-1", " 5", "1e1", "99999999999999999999"])
def test_limit_outside_1_to_100_or_not_an_integer_is_904(user, limit):
    response = user.get("/rest/pay/withdraws", limit=limit)
    assert (response.status_int, response.json["code"]) == (400, 904), response.json


@pytest.mark.parametrize("before", ["x", "0" * 23, "0" * 25, "G" * 24, "ABCDEF0123456789ABCDEF01"])
def test_before_that_is_not_24_hex_is_904(user, before):
    response = user.get("/rest/pay/withdraws", before=before)
    assert (response.status_int, response.json["code"]) == (400, 904), response.json


def test_unknown_before_is_911(user):
    response = user.get("/rest/pay/withdraws", before="0123456789abcdef01234567")
    assert (response.status_int, response.json["code"]) == (404, 911)


def test_someone_elses_withdrawal_as_before_is_911(expert, make_user):
    other_id = withdraw(expert, 1000).json["withdraw_id"]
    response = make_user().get("/rest/pay/withdraws", before=other_id)
    assert (response.status_int, response.json["code"]) == (404, 911)


def test_another_users_withdrawals_are_never_listed(expert, make_user, pay_expert):
    other = set_up_expert(make_user(phone="13900139000"))
    pay_expert(other.id, 10_000)
    mine = withdraw(expert, 1000).json["withdraw_id"]
    theirs = withdraw(other, 2000).json["withdraw_id"]
    assert [w["withdraw_id"] for w in expert.get("/rest/pay/withdraws").json["list"]] == [mine]
    assert [w["withdraw_id"] for w in other.get("/rest/pay/withdraws").json["list"]] == [theirs]


def test_list_requires_auth(app):
    response = app.get("/rest/pay/withdraws", expect_errors=True)
    assert (response.status_int, response.json["code"]) == (401, 901)
