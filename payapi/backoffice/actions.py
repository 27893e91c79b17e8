"""What operators see and do (the console, /ops/api and the commands share these functions).

Reads: withdrawals in flight (stuck ones first), pays by any of their ids with their history,
failed notifications, daily volumes. Actions: retry a pending payout now, fail a withdrawal that
Ping++ confirms it never paid, resend a notification. Each action writes its audit row (who, why,
the state before and after) in the same transaction as the change it makes.
"""

import bisect
import datetime
import json

from peewee import fn

from payapi.backoffice import operators
from payapi.contract import render
from payapi.contract.errors import NOT_ALLOWED, NOT_FOUND, PROVIDER_FAILED, ApiError, invalid
from payapi.domain.clock import now_ms
from payapi.domain.ids import is_id
from payapi.domain.lifecycles import Outcome, WithdrawalStatus
from payapi.infra import outbox
from payapi.infra.db import for_update, transaction
from payapi.infra.gateway import GatewayError
from payapi.infra.models import ClientReport, Event, JournalEntry, Notification, Pay, Posting, Refund, Withdrawal
from payapi.money import withdrawals

RETRY, FAIL, RESEND = "withdrawal.retry", "withdrawal.fail", "notification.resend"
ACTIONS = (RETRY, FAIL, RESEND)
PENDING, PROCESSING, FAILED = WithdrawalStatus.PENDING, WithdrawalStatus.PROCESSING, WithdrawalStatus.FAILED
# The worker sends a pending withdrawal within a minute; Ping++ settles an Alipay transfer within
# hours. Past these (or with an error on its last attempt) a withdrawal needs someone to look.
STUCK_PENDING_MS = 10 * 60 * 1000
STUCK_PROCESSING_MS = 24 * 3600 * 1000
DAYS = 30
# The books' kinds that make the daily chart: a charge paid, a refund accepted, a transfer paid out.
VOLUME_KINDS = {"charge": "paid", "refund": "refunded", "transfer": "withdrawn"}


# --- withdrawals -----------------------------------------------------------------------------------


def is_stuck(withdrawal, now):
    age = now - withdrawal.created_at
    if withdrawal.status == PENDING:
        return bool(withdrawal.last_error) or age > STUCK_PENDING_MS
    return withdrawal.status == PROCESSING and age > STUCK_PROCESSING_MS


def withdrawal_view(w, now=None):
    now = now or now_ms()
    return render.ops_withdrawal(w, now, is_stuck(w, now))


def withdrawals_in_flight(limit=200):
    """Pending and processing withdrawals: stuck ones first, then the oldest."""
    now = now_ms()
    rows = list(
        Withdrawal.select()
        .where(Withdrawal.status.in_((PENDING, PROCESSING)))
        .order_by(Withdrawal.created_at)
        .limit(limit)
    )
    return sorted(rows, key=lambda w: not is_stuck(w, now))


def withdrawal(withdraw_id):
    found = Withdrawal.get_or_none(Withdrawal.withdraw_id == withdraw_id)
    if found is None:
        raise ApiError(NOT_FOUND, "提现记录不存在")
    return found


def withdrawal_state(w):
    return {
        "status": w.status,
        "attempts": w.attempts,
        "last_error": w.last_error,
        "lease_until": w.lease_until,
        "retry_after": w.retry_after,
        "transfer_id": w.transfer_id,
    }


def retry_withdrawal(gateway, withdraw_id, who, reason=""):
    """A pending payout, tried now: the worker's lease is taken first, so the two never both call Ping++."""
    before = withdrawal(withdraw_id)
    if before.status != PENDING:
        raise ApiError(NOT_ALLOWED, f"只有待发送（pending）的提现可以重试，该提现为 {before.status}")
    if not withdrawals.claim(withdraw_id, operator=True):
        raise ApiError(NOT_ALLOWED, "该提现正由其他进程发送，请稍后再试")
    audited = {}

    def write_audit():
        after = Withdrawal.get_by_id(withdraw_id)
        audited["entry"] = operators.audit(
            who, RETRY, withdraw_id, reason, withdrawal_state(before), withdrawal_state(after)
        )

    withdrawals.pay_out(gateway, withdraw_id, claimed=True, then=write_audit)
    return Withdrawal.get_by_id(withdraw_id), audited["entry"]


def fail_withdrawal(gateway, withdraw_id, who, reason):
    """Fail a withdrawal (the money goes back to the expert, the month is free again), only once Ping++
    confirms it paid nothing: no transfer for it, or its transfer failed or was cancelled.

    If Ping++ says the transfer was paid or is still in flight, that is applied (as a webhook would)
    and the action is refused (910). Ping++ unreachable: 920, nothing changed.
    """
    before = withdrawal(withdraw_id)
    if before.status == PROCESSING:
        try:
            transfer = gateway.retrieve_transfer(before.transfer_id)
        except GatewayError:
            raise ApiError(PROVIDER_FAILED, "无法向 Ping++ 确认转账状态，未做任何更改") from None
        return _fail_by_transfer(before, transfer, who, reason)
    if before.status != PENDING:
        raise ApiError(NOT_ALLOWED, f"该提现已结束（{before.status}），不能再置为失败")
    # The payout lease, held while Ping++ is asked: no payout of it can be sent meanwhile.
    lease = withdrawals.claim(withdraw_id, attempt=False, operator=True)
    if not lease:
        raise ApiError(NOT_ALLOWED, "该提现正由其他进程发送，请稍后再试")
    try:
        try:
            made = withdrawals.transfer_made_for(gateway, before)
        except GatewayError:
            raise ApiError(PROVIDER_FAILED, "无法向 Ping++ 确认转账状态，未做任何更改") from None
        if made is not None:
            return _fail_by_transfer(before, made, who, reason)
        return _fail_unsent(withdraw_id, lease, who, reason, withdrawal_state(before))
    finally:
        withdrawals.release(withdraw_id, lease, back_to=before.lease_until)


@transaction
def _fail_unsent(withdraw_id, lease, who, reason, before):
    w = for_update(Withdrawal.select().where(Withdrawal.withdraw_id == withdraw_id)).get()
    if w.status != PENDING or w.lease_until != lease:
        raise ApiError(NOT_ALLOWED, "该提现在确认期间被更改，请刷新后重试")
    withdrawals.settle(w, FAILED, now_ms())
    outbox.save(w)
    return w, operators.audit(who, FAIL, withdraw_id, reason, before, withdrawal_state(w))


def _fail_by_transfer(before, transfer, who, reason):
    try:
        return _fail_if_transfer_failed(before, transfer, who, reason)
    except ApiError as refused:
        if refused.code == NOT_ALLOWED:  # Ping++'s answer refused it: audited too, with why
            after = Withdrawal.get_by_id(before.withdraw_id)
            operators.audit_refused(
                who, FAIL, before.withdraw_id, reason, withdrawal_state(before), withdrawal_state(after), refused.msg
            )
        raise


def _fail_if_transfer_failed(before, transfer, who, reason):
    outcome = withdrawals.TRANSFER_OUTCOMES.get(transfer.status)
    if outcome == FAILED:
        return _apply_failed_transfer(before, transfer, who, reason)
    applied = withdrawals.apply_transfer(transfer)  # what Ping++ says, as a webhook would
    if applied == Outcome.MISMATCH:
        raise ApiError(NOT_ALLOWED, f"Ping++ 的转账 {transfer.id} 与该提现不符，请人工核对")
    if outcome is not None:
        raise ApiError(NOT_ALLOWED, f"Ping++ 显示转账 {transfer.id} 已支付，不能置为失败（已按 Ping++ 更新为成功）")
    raise ApiError(NOT_ALLOWED, f"Ping++ 显示转账 {transfer.id} 仍在处理中（{transfer.status}），不能置为失败")


@transaction
def _apply_failed_transfer(before, transfer, who, reason):
    if withdrawals.apply_transfer(transfer) != Outcome.APPLIED:
        raise ApiError(NOT_ALLOWED, f"Ping++ 的转账 {transfer.id} 与该提现不符，请人工核对")
    w = Withdrawal.get_by_id(before.withdraw_id)
    return w, operators.audit(who, FAIL, w.withdraw_id, reason, withdrawal_state(before), withdrawal_state(w))


# --- notifications ---------------------------------------------------------------------------------


def notification_state(n):
    return {
        "status": n.status,
        "attempts": n.attempts,
        "next_attempt_at": n.next_attempt_at,
        "give_up_at": n.give_up_at,
        "last_status": n.last_status,
        "last_error": n.last_error,
    }


@transaction
def resend_notification(message_id, who, reason=""):
    """Send a message again (a failed one, usually): new attempts for another 24 hours."""
    message = for_update(Notification.select().where(Notification.message_id == message_id)).first()
    if message is None:
        raise ApiError(NOT_FOUND, "通知不存在")
    before = notification_state(message)
    after = outbox.resend(message_id)
    return after, operators.audit(who, RESEND, message_id, reason, before, notification_state(after))


def notification(message_id):
    found = Notification.get_or_none(Notification.message_id == message_id)
    if found is None:
        raise ApiError(NOT_FOUND, "通知不存在")
    return found


# --- pays ------------------------------------------------------------------------------------------


def search_pays(q, limit=50):
    """Pays whose pay id, order or note id, payer or expert is q (a 24-hex id), newest first."""
    q = (q or "").strip().lower()
    if not is_id(q):
        raise invalid("请输入 24 位十六进制的支付单号、订单/小纸条号或用户号")
    return list(
        Pay.select()
        .where((Pay.pay_id == q) | (Pay.o_id == q) | (Pay.note_id == q) | (Pay.user_id == q) | (Pay.expert_id == q))
        .order_by(Pay.created_at.desc())
        .limit(limit)
    )


def pay_history(pay_id):
    """The pay with what happened to it: Ping++ events about its charge and refunds, the phone's
    reports, refunds, and the notifications sent about it."""
    pay = Pay.get_or_none(Pay.pay_id == pay_id)
    if pay is None:
        raise ApiError(NOT_FOUND, "支付记录不存在")
    refunds = list(Refund.select().where(Refund.pay_id == pay_id).order_by(Refund.created_at))
    objects = [o for o in [pay.charge_id, *(r.pingpp_refund_id for r in refunds)] if o]
    events = list(Event.select().where(Event.object_id.in_(objects)).order_by(Event.received_at)) if objects else []
    reports = list(ClientReport.select().where(ClientReport.pay_id == pay_id).order_by(ClientReport.created_at))
    subjects = [pay_id, *(r.refund_id for r in refunds)]
    messages = list(
        Notification.select().where(Notification.subject_id.in_(subjects)).order_by(Notification.created_at)
    )
    return {
        "pay": pay,
        "events": events,
        "reports": reports,
        "refunds": refunds,
        "notifications": messages,
        "charge": json.loads(pay.charge) if pay.charge else None,
    }


# --- daily volumes ---------------------------------------------------------------------------------


def daily_volumes(tz, days=DAYS, now=None):
    """[(date, {"paid", "refunded", "withdrawn"})] for the last `days` calendar days in tz, oldest first,
    from the books: charges paid, refunds accepted, transfers Ping++ paid out (fen)."""
    today = datetime.datetime.fromtimestamp((now or now_ms()) / 1000, tz).date()
    dates = [today - datetime.timedelta(days=n) for n in range(days - 1, -1, -1)]
    starts = [int(datetime.datetime.combine(d, datetime.time(), tzinfo=tz).timestamp() * 1000) for d in dates]
    totals = [dict.fromkeys(VOLUME_KINDS.values(), 0) for _ in dates]
    rows = (
        JournalEntry.select(JournalEntry.kind, JournalEntry.created_at, fn.SUM(Posting.debit))
        .join(Posting, on=(Posting.entry_id == JournalEntry.entry_id))
        .where(JournalEntry.created_at >= starts[0], JournalEntry.kind.in_(list(VOLUME_KINDS)))
        .group_by(JournalEntry.entry_id, JournalEntry.kind, JournalEntry.created_at)
        .tuples()
    )
    for kind, created_at, amount in rows:
        totals[bisect.bisect_right(starts, created_at) - 1][VOLUME_KINDS[kind]] += int(amount or 0)
    return list(zip(dates, totals, strict=True))
