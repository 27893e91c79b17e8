"""Wallets and their ledger: every balance change is an entry in the same transaction."""

from .clock import now_ms
from .db import RowByKey, db, lock_row
from .models import LedgerEntry, Wallet

CHARGE = "charge"  # reference: pay_id
REFUND = "refund"  # reference: Ping++ refund id
WITHDRAW = "withdraw"  # reference: withdraw_id
WITHDRAW_REFUND = "withdraw_refund"  # reference: withdraw_id of a failed payout

wallet_by_user = RowByKey(Wallet, Wallet.user_id)


def book(user_id, amount, kind, reference):
    """Add amount (signed fen) to the user's balance; False if this (kind, reference) was booked before.

    Must run inside a transaction: the entry and the balance commit together. The unique key on
    (kind, reference) makes a second booking of the same movement impossible, even in a race.
    """
    assert db.in_transaction(), "book() must run inside a transaction"
    if LedgerEntry.select().where(LedgerEntry.kind == kind, LedgerEntry.reference == reference).exists():
        return False
    now = now_ms()
    wallet = lock_row(Wallet, {"balance": 0, "updated_at": now}, user_id=user_id)
    wallet.balance += amount
    wallet.updated_at = now
    LedgerEntry.create(
        user_id=user_id, amount=amount, kind=kind, reference=reference, balance_after=wallet.balance, created_at=now
    )
    wallet.save()
    return True


def locked_balance(user_id):
    """The balance, locked until the transaction ends (for a debit that must not overdraw)."""
    now = now_ms()
    return lock_row(Wallet, {"balance": 0, "updated_at": now}, user_id=user_id).balance


def balance_of(user_id):
    wallet = wallet_by_user(user_id)
    return wallet.balance if wallet else 0
