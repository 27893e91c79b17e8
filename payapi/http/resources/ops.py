"""Operators' JSON for scripts (HTTP Basic): /ops/api/...; the console's pages are http/console.py."""

from payapi.backoffice import actions, operators
from payapi.contract.render import audit_info, ops_notification, ops_pay, reconciliation_info
from payapi.contract.shapes import (
    AccountTotal,
    AuditAnswer,
    AuditQuery,
    DayVolume,
    FailRequest,
    LimitQuery,
    OpsNotificationAnswer,
    OpsPaysAnswer,
    OpsWithdrawalAnswer,
    PaySearchQuery,
    ReasonRequest,
    ReconciliationsAnswer,
    TrialBalanceAnswer,
    VolumesAnswer,
)
from payapi.http.operation import operation
from payapi.http.resources.common import message_path_id, path_id
from payapi.infra.models import Reconciliation
from payapi.money import books

OPERATOR_ERRORS = {429: "906: this operator is locked after five wrong passwords within 3 hours."}


class ForOperators:
    """A /ops/api resource: an operator's HTTP Basic credentials (HeaderAuth); what it needs comes in."""

    auth = "operator"

    def __init__(self, codec=None, gateway=None, settings=None):
        self.codec, self.gateway, self.settings = codec, gateway, settings


class OpsWithdrawalRetry(ForOperators):
    @operation(
        id="opsRetryWithdrawal",
        summary="Try a pending payout now (audited).",
        tag="operators",
        body=ReasonRequest,
        answer=OpsWithdrawalAnswer,
        example={"reason": "Alipay account fixed"},
        errors={
            **OPERATOR_ERRORS,
            404: None,
            403: "910: not pending, or its payout lease is held (a worker is sending it, or it waits after an error).",
        },
        description="Takes the worker's payout lease first, so a worker and an operator never both call "
        "Ping++ for it. A Ping++ failure is recorded on the withdrawal (`last_error`), as a worker's would be.",
    )
    def on_post(self, req, resp, withdraw_id, body):
        w, entry = actions.retry_withdrawal(self.gateway, path_id(withdraw_id), req.context.operator, body.reason)
        resp.media = OpsWithdrawalAnswer(withdrawal=actions.withdrawal_view(w), audit_id=entry.audit_id)


class OpsWithdrawalFail(ForOperators):
    @operation(
        id="opsFailWithdrawal",
        summary="Fail a withdrawal Ping++ confirms it never paid (audited).",
        tag="operators",
        body=FailRequest,
        answer=OpsWithdrawalAnswer,
        example={"reason": "Alipay refuses the account"},
        errors={
            **OPERATOR_ERRORS,
            404: None,
            502: "920: Ping++ could not be asked; nothing changed.",
            403: "910: already settled, its lease is held, or Ping++ says its transfer was paid or is "
            "still in flight (then that is applied, as a webhook would).",
        },
        description="Only after Ping++ confirms that no transfer for it exists (its transfers listed from the "
        "withdrawal's creation on) or that its transfer failed or was cancelled; the payout lease is held "
        "meanwhile. The money goes back to the expert and the month is free again.",
    )
    def on_post(self, req, resp, withdraw_id, body):
        w, entry = actions.fail_withdrawal(self.gateway, path_id(withdraw_id), req.context.operator, body.reason)
        resp.media = OpsWithdrawalAnswer(withdrawal=actions.withdrawal_view(w), audit_id=entry.audit_id)


class OpsPays(ForOperators):
    @operation(
        id="opsSearchPays",
        summary="Pays by pay id, order or note id, or user id (payer or expert).",
        tag="operators",
        query=PaySearchQuery,
        answer=OpsPaysAnswer,
        errors=OPERATOR_ERRORS,
    )
    def on_get(self, req, resp, query):
        resp.media = OpsPaysAnswer(list=[ops_pay(p) for p in actions.search_pays(query.q)])


class OpsNotificationResend(ForOperators):
    @operation(
        id="opsResendNotification",
        summary="Send a notification again: new attempts for 24 hours (audited).",
        tag="operators",
        body=ReasonRequest,
        answer=OpsNotificationAnswer,
        example={"reason": "the order service is back"},
        errors={**OPERATOR_ERRORS, 404: None},
    )
    def on_post(self, req, resp, message_id, body):
        message, entry = actions.resend_notification(message_path_id(message_id), req.context.operator, body.reason)
        resp.media = OpsNotificationAnswer(notification=ops_notification(message), audit_id=entry.audit_id)


class OpsAudit(ForOperators):
    @operation(
        id="opsAudit",
        summary="What operators did, newest first.",
        tag="operators",
        query=AuditQuery,
        answer=AuditAnswer,
        errors={**OPERATOR_ERRORS, 404: None},
        description="`before` is an audit_id (exclusive); one that does not exist is 911.",
    )
    def on_get(self, req, resp, query):
        resp.media = AuditAnswer(list=[audit_info(a) for a in operators.audit_entries(query.limit, query.before)])


class OpsTrialBalance(ForOperators):
    @operation(
        id="opsTrialBalance",
        summary="The books' debits and credits per account; the totals are equal.",
        tag="operators",
        answer=TrialBalanceAnswer,
        errors=OPERATOR_ERRORS,
    )
    def on_get(self, req, resp):
        totals = books.trial_balance()
        resp.media = TrialBalanceAnswer(
            accounts=[AccountTotal(**a) for a in totals["accounts"]], debits=totals["debits"], credits=totals["credits"]
        )


class OpsReconciliations(ForOperators):
    @operation(
        id="opsReconciliations",
        summary="The daily reconciliations with Ping++, newest first.",
        tag="operators",
        query=LimitQuery,
        answer=ReconciliationsAnswer,
        errors=OPERATOR_ERRORS,
    )
    def on_get(self, req, resp, query):
        rows = Reconciliation.select().order_by(Reconciliation.created_at.desc()).limit(query.limit)
        resp.media = ReconciliationsAnswer(list=[reconciliation_info(r) for r in rows])


class OpsVolumes(ForOperators):
    @operation(
        id="opsDailyVolumes",
        summary="Paid, refunded and withdrawn per day, the last 30 days.",
        tag="operators",
        answer=VolumesAnswer,
        errors=OPERATOR_ERRORS,
    )
    def on_get(self, req, resp):
        days = [DayVolume(date=d.isoformat(), **totals) for d, totals in actions.daily_volumes(self.settings.tz)]
        resp.media = VolumesAnswer(timezone=self.settings.timezone, days=days)
