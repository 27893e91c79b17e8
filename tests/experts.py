"""Helpers for wallet and withdrawal tests: an expert set up through the public routes."""

import secrets

import pytest

from payapi.models import Withdrawal
from payapi.withdrawals import run_payouts
from tests.conftest import ledger_of

PASSWD = "e10adc3949ba59abbe56e057f20f883e"  # the app sends its own hash of the pay password
ACCOUNT = {"type": "alipay", "id": "expert@example.com", "name": "张三"}


def set_passwd(user, passwd=PASSWD):
    response = user.post("/rest/pay/passwd", {"passwd": passwd})
    assert response.json["code"] == 900, response.json


def set_account(user, account=ACCOUNT):
    """An SMS code to the token's phone, then the account; at most one code a minute per user."""
    sent = user.post("/rest/pay/smscode", {"purpose": "withdrawInfo"})
    assert sent.json["code"] == 900, sent.json
    response = user.post("/rest/pay/withdrawInfo", {"smscode": user.last_sms_code(), **account})
    assert response.json["code"] == 900, response.json


def set_up_expert(user, passwd=PASSWD, account=ACCOUNT):
    set_passwd(user, passwd)
    set_account(user, account)
    return user


def refresh_token(user):
    """A fresh token after travelling in time (tokens live an hour)."""
    return user.remint()


def withdraw(user, amount, passwd=PASSWD):
    return user.post("/rest/pay/withdraw", {"passwd": passwd, "amount": amount})


def balance(user):
    response = user.get("/rest/pay/balance")
    assert response.json["code"] == 900, response.json
    return response.json["info"]["balance"]


def ledger(user):
    return [(kind, amount, reference) for kind, reference, amount in ledger_of(user.id)]


def withdrawal(withdraw_id):
    return Withdrawal.get(Withdrawal.withdraw_id == withdraw_id)


def withdrawals_of(user):
    return list(Withdrawal.select().where(Withdrawal.user_id == user.id).order_by(Withdrawal.created_at))


def transfer_object(withdraw_id, amount, status="failed", transfer_id=None, currency="cny"):
    """A Ping++ transfer as its webhook carries it, for a withdrawal that never reached the fake."""
    return {
        "id": transfer_id or "tr_" + secrets.token_hex(12),
        "object": "transfer",
        "app": "app_test_payapi",
        "type": "b2c",
        "channel": "alipay",
        "order_no": withdraw_id,
        "amount": amount,
        "currency": currency,
        "status": status,
        "recipient": ACCOUNT["id"],
        "extra": {"recipient_name": ACCOUNT["name"]},
    }


# Fixtures for tests of what happens to a withdrawal (import them by name into the test module).

@pytest.fixture
def expert(make_user, pay_expert):
    """An expert with a pay password, an account and 10,000 fen available."""
    user = set_up_expert(make_user())
    pay_expert(user.id, 10_000)
    return user


@pytest.fixture
def pending(expert):
    """The id of the expert's pending withdrawal of 3,000 fen."""
    response = withdraw(expert, 3_000)
    assert response.json["code"] == 900, response.json
    return response.json["withdraw_id"]


@pytest.fixture
def processing(pending, gateway, fake_pingpp):
    """(withdraw_id, transfer_id) of a withdrawal Ping++ accepted."""
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    (transfer_id,) = fake_pingpp.transfers
    return pending, transfer_id
