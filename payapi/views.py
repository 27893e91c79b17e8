"""Records as the app sees them: the seed's wire names (userID, createdAt, o_id) live only here."""

import json

from .clock import iso


def pay_info(pay):
    return {
        "pay_id": pay.pay_id,
        "o_id": pay.o_id,
        "note_id": pay.note_id,
        "expert_id": pay.expert_id,
        "userID": pay.user_id,
        "amount": pay.amount,
        "money": pay.money,
        "charge": json.loads(pay.charge) if pay.charge else {},
        "desc": pay.description,
        "client_status": pay.client_status,
        "status": pay.status,
        "subject": pay.subject,
        "currency": pay.currency,
        "channel": pay.channel,
        "type": pay.type,
        "createdAt": iso(pay.created_at),
        "updatedAt": iso(pay.updated_at),
    }


def withdrawal_info(withdrawal):
    return {
        "withdraw_id": withdrawal.withdraw_id,
        "amount": withdrawal.amount,
        "status": withdrawal.status,
        "account": {
            "type": withdrawal.account_type,
            "id": withdrawal.account_id,
            "name": withdrawal.account_name,
        },
        "createdAt": iso(withdrawal.created_at),
        "updatedAt": iso(withdrawal.updated_at),
    }
