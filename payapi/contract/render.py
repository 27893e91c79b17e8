"""Records as the app sees them: the answer shapes filled from the tables."""

import json

import msgspec

from payapi.contract.shapes import (
    AuditInfo,
    OpsNotification,
    OpsPay,
    OpsWithdrawal,
    PayInfo,
    ReconciliationInfo,
    RefundInfo,
    WithdrawAccount,
    WithdrawalInfo,
)
from payapi.domain.clock import iso


def pay_info(pay):
    return PayInfo(
        pay_id=pay.pay_id,
        o_id=pay.o_id,
        note_id=pay.note_id,
        expert_id=pay.expert_id,
        user_id=pay.user_id,
        amount=pay.amount,
        money=pay.money,
        charge=json.loads(pay.charge) if pay.charge else {},
        description=pay.description,
        client_status=pay.client_status,
        status=pay.status,
        subject=pay.subject,
        currency=pay.currency,
        channel=pay.channel,
        type=pay.type,
        created_at=iso(pay.created_at),
        updated_at=iso(pay.updated_at),
    )


def pay_info_json(pay):
    return msgspec.json.encode(pay_info(pay)).decode()


def withdrawal_info(withdrawal):
    return WithdrawalInfo(
        withdraw_id=withdrawal.withdraw_id,
        amount=withdrawal.amount,
        status=withdrawal.status,
        account=WithdrawAccount(type=withdrawal.account_type, id=withdrawal.account_id, name=withdrawal.account_name),
        created_at=iso(withdrawal.created_at),
        updated_at=iso(withdrawal.updated_at),
    )


def refund_info(refund):
    return RefundInfo(
        refund_id=refund.refund_id,
        pay_id=refund.pay_id,
        amount=refund.amount,
        status=refund.status,
        description=refund.description,
        created_at=iso(refund.created_at),
        updated_at=iso(refund.updated_at),
    )


# --- as operators see them ---------------------------------------------------------------------------


def ops_withdrawal(withdrawal, now, stuck):
    return OpsWithdrawal(
        withdraw_id=withdrawal.withdraw_id,
        user_id=withdrawal.user_id,
        amount=withdrawal.amount,
        status=withdrawal.status,
        attempts=withdrawal.attempts,
        last_error=withdrawal.last_error,
        transfer_id=withdrawal.transfer_id,
        account=WithdrawAccount(type=withdrawal.account_type, id=withdrawal.account_id, name=withdrawal.account_name),
        stuck=stuck,
        age_s=max(0, (now - withdrawal.created_at) // 1000),
        created_at=iso(withdrawal.created_at),
        updated_at=iso(withdrawal.updated_at),
    )


def audit_info(entry):
    return AuditInfo(
        audit_id=entry.audit_id,
        operator=entry.operator,
        action=entry.action,
        target=entry.target,
        reason=entry.reason,
        before=json.loads(entry.before),
        after=json.loads(entry.after),
        created_at=iso(entry.created_at),
        outcome=entry.outcome,
        refusal=entry.refusal,
    )


def ops_pay(pay):
    return OpsPay(
        pay_id=pay.pay_id,
        type=pay.type,
        o_id=pay.o_id,
        note_id=pay.note_id,
        user_id=pay.user_id,
        expert_id=pay.expert_id,
        amount=pay.amount,
        money=pay.money,
        amount_refunded=pay.amount_refunded,
        status=pay.status,
        client_status=pay.client_status,
        channel=pay.channel,
        charge_id=pay.charge_id,
        created_at=iso(pay.created_at),
        paid_at=iso(pay.paid_at),
    )


def ops_notification(message):
    return OpsNotification(
        message_id=message.message_id,
        type=message.type,
        subject_id=message.subject_id,
        status=message.status,
        attempts=message.attempts,
        last_status=message.last_status,
        last_error=message.last_error,
        created_at=iso(message.created_at),
        updated_at=iso(message.updated_at),
    )


def reconciliation_info(row):
    return ReconciliationInfo(
        reconciliation_id=row.reconciliation_id,
        date=row.date,
        status=row.status,
        healed=json.loads(row.healed),
        differences=json.loads(row.differences),
        created_at=iso(row.created_at),
    )
