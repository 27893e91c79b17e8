"""One Falcon resource per documented route. They do HTTP only: read, call the domain, answer.

Each responder declares its operation (`@operation`): the request shape it takes (decoded before
it runs, 904 naming the field otherwise), the answer it gives, and the errors it may meet. The
OpenAPI document is built from these declarations.
"""

import logging
import threading
from typing import Any

import falcon
import msgspec

from payapi.backoffice import actions, operators
from payapi.contract.errors import UNAUTHENTICATED, UNEXPECTED, ApiError, invalid
from payapi.contract.render import (
    audit_info,
    ops_notification,
    ops_pay,
    reconciliation_info,
    refund_info,
    withdrawal_info,
)
from payapi.contract.shapes import (
    AccountAnswer,
    AccountTotal,
    AuditAnswer,
    AuditQuery,
    BalanceAnswer,
    BillsAnswer,
    BillsQuery,
    BillsSummaryAnswer,
    BillsSummaryQuery,
    CheckInfoAnswer,
    DayVolume,
    Done,
    FailRequest,
    HealthAnswer,
    LimitQuery,
    NewPayRequest,
    OpsNotificationAnswer,
    OpsPaysAnswer,
    OpsWithdrawalAnswer,
    PasswdRequest,
    PayAnswer,
    PaySearchQuery,
    QuestionRequest,
    ReasonRequest,
    ReconciliationsAnswer,
    RefundAnswer,
    RefundRequest,
    RefundsAnswer,
    SmsCodeRequest,
    StatusAnswer,
    StatusReport,
    TrialBalanceAnswer,
    VolumesAnswer,
    WebhookAnswer,
    WithdrawAccount,
    WithdrawAnswer,
    WithdrawInfoRequest,
    WithdrawRequest,
    WithdrawsAnswer,
    WithdrawsQuery,
)
from payapi.domain.ids import is_id
from payapi.http.body import MAX_WEBHOOK_BODY, read_body
from payapi.http.operation import operation
from payapi.infra import idempotency, metrics
from payapi.infra.db import db, describe_error
from payapi.infra.models import Reconciliation
from payapi.money import books, events, payments, refunds, statement, withdrawals
from payapi.users import security, sms

log = logging.getLogger("payapi.resources")

PASSWORD_LOCK = "Five wrong pay passwords within any 3 hours (withdraw, passwd and question together) lock for 3 hours."


def path_id(value):
    if not is_id(value):
        raise invalid("id 格式错误")
    return value


def message_path_id(value):
    if not (value.startswith("msg_") and is_id(value[4:])):
        raise invalid("通知 id 格式错误")
    return value


def phone_headers(req):
    """The phone's own headers (`channel` is the app store here), kept for audit; never an error."""
    return payments.PhoneHeaders(
        client_ip=(req.get_header("client") or "")[:64],
        platform=(req.get_header("platform") or "")[:32],
        store=(req.get_header("channel") or "")[:64],
    )


def with_info(resp, info_json):
    # A PayAnswer whose info is already JSON text: it goes out as it is, not decoded and encoded again.
    resp.text = '{"code":900,"info":' + info_json + "}"
    resp.content_type = falcon.MEDIA_JSON


class PayResource:
    @operation(id="getPay", summary="A pay record (seed 1); only its payer may read it.", tag="mobile",
               answer=PayAnswer, errors={404: None})
    def on_get(self, req, resp, pay_id):
        with_info(resp, payments.info_of(path_id(pay_id), req.context.user_id))


class PayStatusResource:
    def __init__(self, codec, settings, gateway):
        self.codec, self.settings, self.gateway = codec, settings, gateway

    @operation(id="getPayStatus", summary="A pay's status and the app's last report (seed 2).", tag="mobile",
               answer=StatusAnswer, errors={404: None})
    def on_get(self, req, resp, pay_id):
        status, client_status = payments.status_of(path_id(pay_id), req.context.user_id)
        resp.media = StatusAnswer(status=status, client_status=client_status)

    @operation(id="reportPayStatus", summary="Record what the app's payment SDK showed (seed 3).", tag="mobile",
               body=StatusReport, errors={404: None}, example={"status": "success"},
               description="Never marks a pay paid by itself: on `success` the server asks Ping++ and applies its "
               "answer (at most once per pay every few seconds; a report meanwhile is recorded and answered 900). "
               "While pending, `cancel` → cancel, `invalid` → fail, `fail` leaves it pending.")
    def on_post(self, req, resp, pay_id, body):
        payments.report_client_status(
            self.gateway, self.settings, req.context.user_id, path_id(pay_id), body.status, phone_headers(req)
        )
        resp.media = Done()


class Withdraw:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(id="withdraw", summary="Withdraw to the Alipay account (seed 4); once per natural month.",
               tag="mobile", body=WithdrawRequest, answer=WithdrawAnswer, example={"passwd": "xxxx", "amount": "1000"},
               idempotent=True,
               errors={403: "905: wrong pay password. 910: pay password or withdraw account not set, already "
                       "withdrawn this month, or insufficient balance.", 429: None},
               description="Checks in order: amount (904), pay password and account set (910), lock (906), "
               "password (905), one per natural month (910), available balance (910). " + PASSWORD_LOCK)
    def on_post(self, req, resp, body):
        withdrawal = withdrawals.withdraw(self.settings, req.context.user_id, body.passwd, body.amount, phone_headers(req))
        resp.media = WithdrawAnswer(withdraw_id=withdrawal.withdraw_id)


class Passwd:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(id="setPayPassword", summary="Set or change the pay password (seed 5).", tag="mobile",
               body=PasswdRequest, example={"passwd": "xxxx"},
               errors={403: "905: wrong old password or answers. 910: a change without `old_passwd` or answers, "
                       "or answers when none were set.", 429: None},
               description="A change needs `old_passwd` (checked when present) or all three answers; one or two "
               "answers are 904. " + PASSWORD_LOCK)
    def on_post(self, req, resp, body):
        security.set_pay_password(self.settings, req.context.user_id, body.passwd, body.old_passwd, body.answers)
        resp.media = Done()


class Question:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(id="setSecurityAnswers", summary="Set or replace the three security answers (seed 6).", tag="mobile",
               body=QuestionRequest, example={"answer1": "a", "answer2": "b", "answer3": "c"},
               errors={403: "905: wrong pay password. 910: `passwd` is needed while a pay password is set.",
                       429: None},
               description="Whenever a pay password is set, setting or replacing answers needs the correct `passwd`.")
    def on_post(self, req, resp, body):
        security.set_answers(self.settings, req.context.user_id, body.answers, body.passwd)
        resp.media = Done()


class WithdrawInfo:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(id="getWithdrawAccount", summary="The withdraw account (seed 8); empty strings when none is set.",
               tag="mobile", answer=AccountAnswer)
    def on_get(self, req, resp):
        resp.media = AccountAnswer(info=WithdrawAccount(**security.withdraw_account(req.context.user_id)))

    @operation(id="setWithdrawAccount", summary="Set the withdraw account with an SMS code (seed 7).", tag="mobile",
               body=WithdrawInfoRequest, example={"smscode": "123123", "type": "alipay", "id": "xxxx", "name": "xxxx"},
               errors={403: "905: the SMS code is wrong, expired, used, or tried 5 times. 910: the token has no "
                       "usable phone."},
               description="The body is checked before the code; the code is used up only by a successful change.")
    def on_post(self, req, resp, body):
        security.set_withdraw_account(
            self.settings, req.context.user_id, req.context.phone, body.smscode, body.type, body.id, body.name
        )
        resp.media = Done()


class CheckInfo:
    @operation(id="getCheckInfo", summary="Which security settings are set (seed 9).", tag="mobile",
               answer=CheckInfoAnswer)
    def on_get(self, req, resp):
        resp.media = CheckInfoAnswer(**security.check_info(req.context.user_id))


class SmsCodeResource:
    def __init__(self, codec, settings, sms_backend):
        self.codec, self.settings, self.sms_backend = codec, settings, sms_backend

    @operation(id="sendSmsCode", summary="Send a 6-digit code to the token's phone.", tag="mobile",
               body=SmsCodeRequest, example={"purpose": sms.WITHDRAW_INFO},
               errors={403: "910: the token has no usable phone, or the SMS provider refuses the number.", 429: None, 502: None},
               description=f"At most 1 per {sms.MIN_INTERVAL_MS // 1000} s and {sms.MAX_PER_DAY} per calendar day "
               "(TIMEZONE) per user, else 906 (also the SMS provider's own per-number limit); the code lives "
               "5 minutes. A code no provider accepted (920) costs none of that quota.")
    def on_post(self, req, resp, body):
        sms.send_code(self.settings, self.sms_backend, req.context.user_id, req.context.phone, body.purpose)
        resp.media = Done()


class Balance:
    def __init__(self, settings):
        self.settings = settings

    @operation(id="getBalance", summary="The wallet balance and whether a withdrawal is possible now.",
               tag="mobile", answer=BalanceAnswer)
    def on_get(self, req, resp):
        resp.media = BalanceAnswer(info=withdrawals.balance_info(self.settings, req.context.user_id))


class Withdraws:
    def __init__(self, codec):
        self.codec = codec

    @operation(id="listWithdrawals", summary="The user's withdrawals, newest first.", tag="mobile",
               query=WithdrawsQuery, answer=WithdrawsAnswer, errors={404: None},
               description="`before` is one of the user's withdraw_ids (exclusive); another id is 911.")
    def on_get(self, req, resp, query):
        rows, has_more = withdrawals.list_withdrawals(req.context.user_id, query.limit, query.before)
        resp.media = WithdrawsAnswer(list=[withdrawal_info(w) for w in rows], has_more=has_more)


class Bills:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(id="listBills", summary="The expert's statement (收支明细), newest first.", tag="mobile",
               query=BillsQuery, answer=BillsAnswer,
               description="Every movement of the token's user's money as the books hold it: `income` (a paid "
               "pay's credit net of `fee`), `refund` (its share, negative), `refund_returned` (a failed refund's "
               "share given back), `withdrawal` (negative), `withdrawal_returned` (a failed withdrawal given back), "
               "`available` (held money becoming withdrawable: `amount` 0, see `available_after`). `before` is a "
               "`bill_id` (exclusive), read as a place in the statement: an id that is not the user's gives their "
               "own older lines. `month` is a natural month in TIMEZONE.")
    def on_get(self, req, resp, query):
        lines, has_more = statement.page(req.context.user_id, query.limit, query.before, query.month,
                                         self.settings.tz)
        resp.media = BillsAnswer(list=lines, has_more=has_more)


class BillsSummary:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(id="getBillsSummary", summary="A natural month of the expert's statement: totals and balances.",
               tag="mobile", query=BillsSummaryQuery, answer=BillsSummaryAnswer,
               description="`month` defaults to the current natural month in TIMEZONE. `closing` = `opening` + "
               "`income` + `refunds` + `withdrawn` + `returned` (refunds and withdrawn are negative).")
    def on_get(self, req, resp, query):
        resp.media = BillsSummaryAnswer(**statement.summary(req.context.user_id, query.month, self.settings.tz))


class Webhook:
    auth = None  # authenticated by Ping++'s signature instead

    def __init__(self, settings, gateway):
        self.settings, self.gateway = settings, gateway

    @operation(id="pingppWebhook", summary="Ping++ events, verified by signature and applied once per event id.",
               tag="provider", body=Any, raw_body=True, max_body=MAX_WEBHOOK_BODY, answer=WebhookAnswer,
               errors={502: None},
               example={"id": "evt_401160623091616471", "object": "event", "type": "charge.succeeded",
                        "livemode": False, "data": {"object": {"id": "ch_Hm5uTSifDOuTy9iLeLPSurrD", "object": "charge"}}},
               description="Handled: charge.succeeded, refund.succeeded, transfer.succeeded, transfer.failed; other "
               "types are stored and acknowledged. A signed body that is not an event is acknowledged as "
               "`malformed`. A refund whose charge we have not seen paid makes the server ask Ping++ first; if "
               "Ping++ cannot be reached the answer is 502 and nothing is stored.")
    def on_post(self, req, resp):
        raw = read_body(req, MAX_WEBHOOK_BODY)
        if not self.gateway.webhook_is_authentic(raw, req.get_header("X-Pingplusplus-Signature")):
            raise ApiError(UNAUTHENTICATED, "签名无效")
        result = events.handle_event(self.settings, self.gateway, raw)
        metrics.observe_webhook(result)
        resp.media = WebhookAnswer(result=result)


class InternalPays:
    auth = "service"

    def __init__(self, codec, settings, gateway):
        self.codec, self.settings, self.gateway = codec, settings, gateway

    @operation(id="createPay", summary="Create a pay and its Ping++ charge (order service).", tag="internal",
               body=NewPayRequest, answer=PayAnswer, idempotent=True,
               errors={403: "910: the order or note is already paid (`info` is the pay that paid it).", 502: None},
               example={"type": "order", "o_id": "57691bba8789ff202b5968fb", "userID": "54f3b5fec08b6f54100c1cbe",
                        "expert_id": "54f3b5fec08b6f54100c1cbf", "amount": 12356, "channel": "alipay",
                        "subject": "支付预约订单_2016-06-23", "desc": ""},
               links={name: {"operationId": name, "parameters": {"pay_id": "$response.body#/info/pay_id"}}
                      for name in ("getPayInternal", "getPay", "getPayStatus", "reportPayStatus", "createRefund",
                                   "listRefunds")},
               description="A second call for the same order/note, money and channel while pending returns the "
               "same pay; other money or channel closes it (and its charge at Ping++) and makes a new one.")
    def on_post(self, req, resp, body):
        if not body.client_ip:
            body.client_ip = (req.get_header("client") or "")[:64]
        with_info(resp, payments.create_pay(self.gateway, self.settings, body).info)


class InternalPay:
    auth = "service"

    @operation(id="getPayInternal", summary="Any pay record (order service).", tag="internal", answer=PayAnswer,
               errors={404: None})
    def on_get(self, req, resp, pay_id):
        with_info(resp, payments.info_of(path_id(pay_id)))


class InternalRefunds:
    auth = "service"

    def __init__(self, codec, settings, gateway):
        self.codec, self.settings, self.gateway = codec, settings, gateway

    @operation(id="createRefund", summary="Refund part or all of a paid pay through Ping++ (order service).",
               tag="internal", body=RefundRequest, answer=RefundAnswer, idempotent=True,
               example={"amount": 5000, "description": "预约取消"},
               errors={404: None, 403: "910: the pay is not paid, already fully refunded, or the amount is more "
                       "than is still refundable.", 502: None},
               description="`amount` defaults to what is still refundable (refunds already accepted count, also when "
               "requests race). The expert's share is debited at once and given back if Ping++ fails the refund. "
               "Ping++ certainly making nothing: 920, nothing written. When it may have made it (its answer was "
               "lost and it cannot be asked), 900 with the refund `pending`: the worker finds out, and a refund "
               "Ping++ never made becomes `failed` (refund.failed).")
    def on_post(self, req, resp, pay_id, body):
        keyed = req.context.get("idempotency")
        amount = None if body.amount is msgspec.UNSET else body.amount
        refund = refunds.request_refund(self.gateway, path_id(pay_id), amount, body.description,
                                        self.settings.pingpp_timeout,
                                        refund_id=idempotency.derived_id(*keyed) if keyed else None)
        resp.media = RefundAnswer(refund=refund_info(refund))

    @operation(id="listRefunds", summary="A pay's refunds, oldest first (order service).", tag="internal",
               answer=RefundsAnswer, errors={404: None})
    def on_get(self, req, resp, pay_id):
        payments.info_of(path_id(pay_id))  # 911 for an unknown pay
        resp.media = RefundsAnswer(list=[refund_info(r) for r in refunds.refunds_of(pay_id)])


class Health:
    """`/healthz`; why the database is unreachable is logged once per distinct cause, not per probe."""

    auth = None

    def __init__(self):
        self._lock = threading.Lock()
        self._down_because = None  # the last cause logged, until the database answers again

    @operation(id="health", summary="Whether the database answers.", tag="operations", answer=HealthAnswer,
               errors={503: "999: the database is down (`db`: `down`)."})
    def on_get(self, req, resp):
        try:
            db.execute_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "down"; the log says which
            self._note(describe_error(exc, db.obj))
            resp.status = falcon.HTTP_503
            resp.media = {"code": UNEXPECTED, "msg": "数据库不可用", "db": "down"}
            return
        self._note(None)
        resp.media = HealthAnswer()

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

    def __init__(self, document):
        self.document = document

    @operation(id="openapi", summary="This document.", tag="operations", answer=dict)
    def on_get(self, req, resp):
        resp.media = self.document


# --- operators: JSON for scripts (HTTP Basic) --------------------------------------------------------

OPERATOR_ERRORS = {429: "906: this operator is locked after five wrong passwords within 3 hours."}


class ForOperators:
    """A /ops/api resource: an operator's HTTP Basic credentials (HeaderAuth); what it needs comes in."""

    auth = "operator"

    def __init__(self, codec=None, gateway=None, settings=None):
        self.codec, self.gateway, self.settings = codec, gateway, settings


class OpsWithdrawalRetry(ForOperators):
    @operation(id="opsRetryWithdrawal", summary="Try a pending payout now (audited).", tag="operators",
               body=ReasonRequest, answer=OpsWithdrawalAnswer, example={"reason": "Alipay account fixed"},
               errors={**OPERATOR_ERRORS, 404: None,
                       403: "910: not pending, or its payout lease is held (a worker is sending it, or it waits "
                       "after an error)."},
               description="Takes the worker's payout lease first, so a worker and an operator never both call "
               "Ping++ for it. A Ping++ failure is recorded on the withdrawal (`last_error`), as a worker's would be.")
    def on_post(self, req, resp, withdraw_id, body):
        w, entry = actions.retry_withdrawal(self.gateway, path_id(withdraw_id), req.context.operator, body.reason)
        resp.media = OpsWithdrawalAnswer(withdrawal=actions.withdrawal_view(w), audit_id=entry.audit_id)


class OpsWithdrawalFail(ForOperators):
    @operation(id="opsFailWithdrawal", summary="Fail a withdrawal Ping++ confirms it never paid (audited).",
               tag="operators", body=FailRequest, answer=OpsWithdrawalAnswer,
               example={"reason": "Alipay refuses the account"},
               errors={**OPERATOR_ERRORS, 404: None, 502: "920: Ping++ could not be asked; nothing changed.",
                       403: "910: already settled, its lease is held, or Ping++ says its transfer was paid or is "
                       "still in flight (then that is applied, as a webhook would)."},
               description="Only after Ping++ confirms that no transfer for it exists (its transfers listed from the "
               "withdrawal's creation on) or that its transfer failed or was cancelled; the payout lease is held "
               "meanwhile. The money goes back to the expert and the month is free again.")
    def on_post(self, req, resp, withdraw_id, body):
        w, entry = actions.fail_withdrawal(self.gateway, path_id(withdraw_id), req.context.operator, body.reason)
        resp.media = OpsWithdrawalAnswer(withdrawal=actions.withdrawal_view(w), audit_id=entry.audit_id)


class OpsPays(ForOperators):
    @operation(id="opsSearchPays", summary="Pays by pay id, order or note id, or user id (payer or expert).",
               tag="operators", query=PaySearchQuery, answer=OpsPaysAnswer, errors=OPERATOR_ERRORS)
    def on_get(self, req, resp, query):
        resp.media = OpsPaysAnswer(list=[ops_pay(p) for p in actions.search_pays(query.q)])


class OpsNotificationResend(ForOperators):
    @operation(id="opsResendNotification", summary="Send a notification again: new attempts for 24 hours "
               "(audited).", tag="operators", body=ReasonRequest, answer=OpsNotificationAnswer,
               example={"reason": "the order service is back"}, errors={**OPERATOR_ERRORS, 404: None})
    def on_post(self, req, resp, message_id, body):
        message, entry = actions.resend_notification(message_path_id(message_id), req.context.operator, body.reason)
        resp.media = OpsNotificationAnswer(notification=ops_notification(message), audit_id=entry.audit_id)


class OpsAudit(ForOperators):
    @operation(id="opsAudit", summary="What operators did, newest first.", tag="operators", query=AuditQuery,
               answer=AuditAnswer, errors={**OPERATOR_ERRORS, 404: None},
               description="`before` is an audit_id (exclusive); one that does not exist is 911.")
    def on_get(self, req, resp, query):
        resp.media = AuditAnswer(list=[audit_info(a) for a in operators.audit_entries(query.limit, query.before)])


class OpsTrialBalance(ForOperators):
    @operation(id="opsTrialBalance", summary="The books' debits and credits per account; the totals are equal.",
               tag="operators", answer=TrialBalanceAnswer, errors=OPERATOR_ERRORS)
    def on_get(self, req, resp):
        totals = books.trial_balance()
        resp.media = TrialBalanceAnswer(accounts=[AccountTotal(**a) for a in totals["accounts"]],
                                        debits=totals["debits"], credits=totals["credits"])


class OpsReconciliations(ForOperators):
    @operation(id="opsReconciliations", summary="The daily reconciliations with Ping++, newest first.",
               tag="operators", query=LimitQuery, answer=ReconciliationsAnswer, errors=OPERATOR_ERRORS)
    def on_get(self, req, resp, query):
        rows = Reconciliation.select().order_by(Reconciliation.created_at.desc()).limit(query.limit)
        resp.media = ReconciliationsAnswer(list=[reconciliation_info(r) for r in rows])


class OpsVolumes(ForOperators):
    @operation(id="opsDailyVolumes", summary="Paid, refunded and withdrawn per day, the last 30 days.",
               tag="operators", answer=VolumesAnswer, errors=OPERATOR_ERRORS)
    def on_get(self, req, resp):
        days = [DayVolume(date=d.isoformat(), **totals) for d, totals in actions.daily_volumes(self.settings.tz)]
        resp.media = VolumesAnswer(timezone=self.settings.timezone, days=days)


class Metrics:
    """Prometheus's text format; not JSON, so not in the OpenAPI document."""

    auth = "metrics"
    documented = False

    def on_get(self, req, resp):
        resp.data = metrics.render()
        resp.content_type = metrics.CONTENT_TYPE
