"""What a test sets up through the public routes, as the phone app and the order service would:
phone users, pays (paid at the sandbox, their signed events), experts with a pay password and an
account, withdrawals; and the envelope every answer is checked against."""

import json
import secrets

from payapi.domain.ids import new_id
from payapi.http.auth import Authenticator
from payapi.infra.models import Withdrawal
from tests.support.config import SERVICE_KEY
from tests.support.pingpp import event, sign

PASSWD = "e10adc3949ba59abbe56e057f20f883e"  # the app sends its own hash of the pay password
ACCOUNT = {"type": "alipay", "id": "expert@example.com", "name": "张三"}


def assert_envelope(answer, code, status):
    """answer (a webtest response, or a live server's Answer) is the contract's envelope: this code
    and HTTP status, a message on failures, nothing of a traceback or the driver. -> its body."""
    http_status = getattr(answer, "status_int", None) or answer.status
    body = answer.json if hasattr(answer, "json") else answer.body
    assert http_status == status and isinstance(body, dict) and body.get("code") == code, (
        http_status,
        answer.text[:500],
    )
    if hasattr(answer, "content_type"):
        assert answer.content_type == "application/json"
    if code != 900:
        assert isinstance(body.get("msg"), str) and body["msg"], body
    assert "Traceback" not in answer.text and "pymysql" not in answer.text.lower(), answer.text[:500]
    return body


class User:
    """A phone user: every call carries the seed's headers and this user's token."""

    def __init__(self, app, settings, phone="13800138000", user_id=None):
        self.app, self.settings = app, settings
        self.id = user_id or new_id()
        self.phone = phone
        self.token = Authenticator(settings.auth_secrets).mint(self.id, phone=phone)

    def remint(self, phone="keep", ttl=3600):
        """A fresh token for the same user (after time travel), optionally with another or no phone."""
        if phone != "keep":
            self.phone = phone
        self.token = Authenticator(self.settings.auth_secrets).mint(self.id, phone=self.phone, ttl=ttl)
        return self

    @property
    def headers(self):
        return {"auth": self.token, "client": "1.2.3.4", "platform": "android", "channel": "TencentAPP"}

    def get(self, path, **params):
        return self.app.get(path, params=params or None, headers=self.headers, expect_errors=True)

    def post(self, path, body=None, raw=None):
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        return self.app.post(path, data, headers=self.headers, content_type="application/json", expect_errors=True)

    def last_sms_code(self):
        with open(self.settings.sms_file, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        return [m for m in lines if m["phone"] == self.phone][-1]["code"]


# --- pays and Ping++'s events ------------------------------------------------------------------------


def pay_request(**fields):
    """A valid POST /internal/pays body for a new order; fields override it."""
    return {
        "type": "order",
        "o_id": new_id(),
        "userID": new_id(),
        "expert_id": new_id(),
        "amount": 12356,
        "channel": "alipay",
        "subject": "支付预约订单_2016-06-23",
        **fields,
    }


def create_pay(app, **fields):
    """POST /internal/pays as the order service (None fields left out); -> the webtest response."""
    body = pay_request(**{"desc": "", **fields})
    body = {k: v for k, v in body.items() if v is not None}
    return app.post(
        "/internal/pays",
        json.dumps(body).encode(),
        headers={"X-Service-Key": SERVICE_KEY, "client": "1.2.3.4"},
        content_type="application/json",
        expect_errors=True,
    )


def send_event(app, private_key, event_type, obj, event_id=None, body=None):
    """POST a Ping++ event signed with private_key to the webhook; -> the webtest response."""
    raw = json.dumps(body if body is not None else event(event_type, obj, event_id)).encode()
    return app.post(
        "/rest/pay/webhook",
        raw,
        headers={"X-Pingplusplus-Signature": sign(private_key, raw)},
        content_type="application/json",
        expect_errors=True,
    )


def pay_expert(app, sandbox, private_key, expert_id, money):
    """Credit an expert the honest way: a pay for them, paid at Ping++, its signed charge.succeeded."""
    created = create_pay(app, expert_id=expert_id, amount=money)
    assert created.json["code"] == 900, created.json
    charge = sandbox.mark_paid(created.json["info"]["charge"]["id"])
    assert send_event(app, private_key, "charge.succeeded", charge).json["result"] == "applied"
    return created.json["info"]


# --- experts and withdrawals, set up through the public routes ------------------------------------


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
