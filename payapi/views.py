"""Records as the app sees them: the answer shapes filled from the tables."""

import json

import msgspec

from .clock import iso
from .shapes import PayInfo, WithdrawAccount, WithdrawalInfo


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
