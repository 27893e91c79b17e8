"""One Falcon resource per documented route. They do HTTP only: read, call the domain, answer."""

import logging
import threading

import falcon

from . import events, openapi, payments, security, sms, withdrawals
from .db import db, describe_error
from .errors import INVALID, NOT_ALLOWED, OK, UNAUTHENTICATED, UNEXPECTED, ApiError, invalid
from .gateway import CHANNELS
from .ids import is_id
from .validate import choice, fen, object_id, parse_json_object, read_body, text, whole_number
from .views import withdrawal_info

log = logging.getLogger(__name__)

SECRET_MAX = 128  # the app sends its own hash of the pay password: an opaque string


def json_body(req):
    return parse_json_object(read_body(req.bounded_stream, req.content_length))


def path_id(value):
    if not is_id(value):
        raise invalid("id 格式错误")
    return value


def audit_of(req):
    """The phone's own headers (`channel` is the app store here), kept for audit; never an error."""
    return payments.Audit(
        client_ip=(req.get_header("client") or "")[:64],
        platform=(req.get_header("platform") or "")[:32],
        store=(req.get_header("channel") or "")[:64],
    )


def ok(resp, **fields):
    resp.media = {"code": OK, **fields}


def secret(body, name, required=True):
    return text(body, name, required=required, max_len=SECRET_MAX, strip=False)


def three_answers(body, required):
    """All three answers or none (None); one or two is 904."""
    present = [body.get(f"answer{i}") is not None for i in (1, 2, 3)]
    if not any(present) and not required:
        return None
    return [text(body, f"answer{i}", max_len=64) for i in (1, 2, 3)]


def ok_with_info(resp, info_json):
    # The stored info is already JSON: it goes out as it is, not decoded and encoded again.
    resp.text = '{"code": 900, "info": ' + info_json + "}"


class Pay:
    def on_get(self, req, resp, pay_id):
        ok_with_info(resp, payments.info_of(path_id(pay_id), req.context.user_id))


class PayStatus:
    def __init__(self, gateway, settings):
        self.gateway, self.settings = gateway, settings

    def on_get(self, req, resp, pay_id):
        status, client_status = payments.status_of(path_id(pay_id), req.context.user_id)
        ok(resp, status=status, client_status=client_status)

    def on_post(self, req, resp, pay_id):
        path_id(pay_id)
        status = choice(json_body(req), "status", payments.CLIENT_STATUSES)
        payments.report_client_status(
            self.gateway, self.settings.platform_fee_bps, req.context.user_id, pay_id, status, audit_of(req)
        )
        ok(resp)


class Withdraw:
    def __init__(self, settings):
        self.settings = settings

    def on_post(self, req, resp):
        body = json_body(req)
        amount = fen(body.get("amount"), "amount", self.settings.withdraw_min, self.settings.withdraw_max)
        passwd = secret(body, "passwd")
        withdrawal = withdrawals.withdraw(self.settings, req.context.user_id, passwd, amount, audit_of(req))
        ok(resp, withdraw_id=withdrawal.withdraw_id)


class Passwd:
    def __init__(self, settings):
        self.settings = settings

    def on_post(self, req, resp):
        body = json_body(req)
        passwd = secret(body, "passwd")
        old_passwd = secret(body, "old_passwd", required=False)
        answers = three_answers(body, required=False)
        security.set_pay_password(self.settings, req.context.user_id, passwd, old_passwd, answers)
        ok(resp)


class Question:
    def __init__(self, settings):
        self.settings = settings

    def on_post(self, req, resp):
        body = json_body(req)
        answers = three_answers(body, required=True)
        passwd = secret(body, "passwd", required=False)
        security.set_answers(self.settings, req.context.user_id, answers, passwd)
        ok(resp)


class WithdrawInfo:
    def __init__(self, settings):
        self.settings = settings

    def on_get(self, req, resp):
        ok(resp, info=security.withdraw_account(req.context.user_id))

    def on_post(self, req, resp):
        body = json_body(req)
        smscode = text(body, "smscode", max_len=16)
        account_type = choice(body, "type", ("alipay",), default="alipay")
        account_id = text(body, "id", max_len=64)
        name = text(body, "name", max_len=32)
        security.set_withdraw_account(
            self.settings, req.context.user_id, req.context.phone, smscode, account_type, account_id, name
        )
        ok(resp)


class CheckInfo:
    def on_get(self, req, resp):
        ok(resp, **security.check_info(req.context.user_id))


class SmsCode:
    def __init__(self, settings, sms_backend):
        self.settings, self.sms_backend = settings, sms_backend

    def on_post(self, req, resp):
        purpose = choice(json_body(req), "purpose", sms.PURPOSES, default=sms.WITHDRAW_INFO)
        if not req.context.phone:
            raise ApiError(NOT_ALLOWED, "账号未绑定手机号")
        sms.send_code(self.settings, self.sms_backend, req.context.user_id, req.context.phone, purpose)
        ok(resp)


class Balance:
    def __init__(self, settings):
        self.settings = settings

    def on_get(self, req, resp):
        ok(resp, info=withdrawals.balance_info(self.settings, req.context.user_id))


class Withdraws:
    def on_get(self, req, resp):
        raw_limit = req.get_param("limit")
        limit = whole_number(raw_limit, "limit", 1, 100) if raw_limit is not None else 20
        before = req.get_param("before")
        if before is not None:
            path_id(before)
        rows, has_more = withdrawals.list_withdrawals(req.context.user_id, limit, before)
        ok(resp, list=[withdrawal_info(w) for w in rows], has_more=has_more)


class Webhook:
    auth = None  # authenticated by Ping++'s signature instead

    def __init__(self, gateway, settings):
        self.gateway, self.settings = gateway, settings

    def on_post(self, req, resp):
        raw = read_body(req.bounded_stream, req.content_length)
        if not self.gateway.webhook_is_authentic(raw, req.get_header("X-Pingplusplus-Signature")):
            raise ApiError(UNAUTHENTICATED, "签名无效")
        outcome = events.handle_event(parse_json_object(raw), raw, self.settings.platform_fee_bps, self.gateway)
        if outcome is None:
            raise ApiError(INVALID, "事件格式错误")
        ok(resp, result=outcome)


class InternalPays:
    auth = "service"

    def __init__(self, gateway, settings):
        self.gateway, self.settings = gateway, settings

    def on_post(self, req, resp):
        body = json_body(req)
        pay_type = choice(body, "type", ("order", "note"))
        order_field = "o_id" if pay_type == "order" else "note_id"
        limit = self.settings.pay_money_max
        amount = fen(body.get("amount"), "amount", 1, limit)
        money = amount if body.get("money") is None else fen(body.get("money"), "money", 1, limit)
        extra = body.get("extra")
        if extra is not None and not isinstance(extra, dict):
            raise invalid("参数 extra 必须是对象")
        spec = payments.PaySpec(
            type=pay_type,
            order_id=object_id(body, order_field),
            user_id=object_id(body, "userID"),
            expert_id=object_id(body, "expert_id"),
            amount=amount,
            money=money,
            channel=choice(body, "channel", CHANNELS),
            subject=text(body, "subject", max_len=32),
            description=text(body, "desc", required=False, min_len=0, max_len=128, default=""),
            extra=extra,
            client_ip=text(body, "client_ip", required=False, min_len=0, max_len=64, default="")
            or (req.get_header("client") or "")[:64],
            platform=text(body, "platform", required=False, min_len=0, max_len=32, default=""),
            store=text(body, "store", required=False, min_len=0, max_len=64, default=""),
        )
        pay = payments.create_pay(self.gateway, spec, self.settings.pingpp_timeout)
        ok_with_info(resp, pay.info)


class InternalPay:
    auth = "service"

    def on_get(self, req, resp, pay_id):
        ok_with_info(resp, payments.info_of(path_id(pay_id)))


class Health:
    """`/healthz`; why the database is unreachable is logged once per distinct cause, not per probe."""

    auth = None

    def __init__(self):
        self._lock = threading.Lock()
        self._down_because = None  # the last cause logged, until the database answers again

    def on_get(self, req, resp):
        try:
            db.execute_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "down"; the log says which
            self._note(describe_error(exc, db.obj))
            resp.status = falcon.HTTP_503
            resp.media = {"code": UNEXPECTED, "msg": "数据库不可用", "db": "down"}
            return
        self._note(None)
        ok(resp, db="ok")

    def _note(self, cause):
        with self._lock:
            if cause == self._down_because:
                return
            before, self._down_because = self._down_because, cause
        if cause is not None:
            log.error("database unreachable: %s", cause, extra={"fields": {"cause": cause}})
        elif before is not None:
            log.info("database reachable again")


class OpenApi:
    auth = None

    def on_get(self, req, resp):
        resp.media = openapi.document()
