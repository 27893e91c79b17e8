"""What each money movement posts to the books, and the experts' balances.

A paid pay credits its expert `money` less the platform fee (rounded down, so the odd fen goes to
the expert), held as `pending` for SETTLEMENT_HOLD_SECONDS. A refund takes the expert's share
(pro rata, cumulative rounding: the shares of all refunds of a pay add up exactly to its credit)
from `pending` while the pay's credit is held, else from `available`; the rest of the refund is
the fee's share. Withdrawals need `available`.
"""

from peewee import fn

from . import books
from .books import AVAILABLE, FEES, PAYOUTS, PENDING, PINGPP, REFUNDS, credit, debit, expert
from .clock import now_ms
from .db import RowByKey, lock_row
from .lifecycles import RefundStatus
from .models import Refund, Wallet

wallet_by_user = RowByKey(Wallet, Wallet.user_id, columns=(Wallet.pending, Wallet.available))


def credit_for(money, fee_bps):
    """What the expert earns from a paid pay: money less the platform fee (the fee rounds down)."""
    return money - money * fee_bps // 10_000


def pay_paid(pay, fee_bps, hold_ms, now):
    """Book a pay Ping++ reported paid; sets its credited, held and release_at. False if booked before."""
    pay.credited = credit_for(pay.money, fee_bps)
    bucket = PENDING if hold_ms > 0 else AVAILABLE
    pay.held = pay.credited if bucket == PENDING else 0
    pay.release_at = now + hold_ms if bucket == PENDING else None
    return books.record(
        "charge", pay.pay_id,
        debit(PINGPP, pay.money),
        credit(FEES, pay.money - pay.credited),
        credit(expert(pay.expert_id, bucket), pay.credited),
    )


def release_hold(pay):
    """The pay's held credit becomes available; False if there was nothing held."""
    if pay.held <= 0:
        return False
    amount, pay.held = pay.held, 0
    released = books.record(
        "release", pay.pay_id, debit(expert(pay.expert_id, PENDING), amount), credit(expert(pay.expert_id, AVAILABLE), amount)
    )
    if not released:
        raise books.Unbalanced(f"pay {pay.pay_id} holds {amount} although its hold was released")
    return released


def refund_share(pay, amount, refund_id):
    """The expert's part of refunding amount more of pay: cumulative rounding over the refunds
    accepted so far (a failed one no longer counts), so all shares add up to exactly the credit."""
    taken = int(
        Refund.select(fn.COALESCE(fn.SUM(Refund.share), 0))
        .where(Refund.pay_id == pay.pay_id, Refund.refund_id != refund_id, Refund.pingpp_refund_id.is_null(False),
               Refund.status != RefundStatus.FAILED)
        .scalar()
    )
    return pay.credited * (pay.amount_refunded + amount) // pay.money - taken


def take_refund(refund, pay, settled):
    """Debit the refund's share from the expert and its fee share from the fees (refunds are booked
    under Ping++'s refund id, which links each entry to Ping++'s own records).

    settled: Ping++ already refunded it (a refund made elsewhere), so the money leaves `pingpp`;
    else it waits in `refunds` until Ping++ settles it.
    """
    refund.share = refund_share(pay, refund.amount, refund.refund_id)
    refund.bucket = PENDING if pay.held >= refund.share and pay.held > 0 else AVAILABLE
    if refund.bucket == PENDING:
        pay.held -= refund.share
    pay.amount_refunded += refund.amount
    return books.record(
        "refund", refund.pingpp_refund_id,
        debit(expert(pay.expert_id, refund.bucket), refund.share),
        debit(FEES, refund.amount - refund.share),
        credit(PINGPP if settled else REFUNDS, refund.amount),
    )


def refund_settled(refund):
    return books.record(
        "refund_settled", refund.pingpp_refund_id, debit(REFUNDS, refund.amount), credit(PINGPP, refund.amount)
    )


def give_refund_back(refund, pay):
    """Ping++ refused a refund it had accepted: the expert's share and the fee share come back."""
    # Back where it came from while the pay's credit is still held; once the hold is released
    # (booked, whatever any clock says), to available.
    held = refund.bucket == PENDING and pay.release_at is not None and not books.recorded("release", pay.pay_id)
    bucket = PENDING if held else AVAILABLE
    if bucket == PENDING:
        pay.held += refund.share
    pay.amount_refunded -= refund.amount
    return books.record(
        "refund_failed", refund.pingpp_refund_id,
        debit(REFUNDS, refund.amount),
        credit(expert(pay.expert_id, bucket), refund.share),
        credit(FEES, refund.amount - refund.share),
    )


def withdrawn(withdrawal):
    return books.record(
        "withdraw", withdrawal.withdraw_id,
        debit(expert(withdrawal.user_id, AVAILABLE), withdrawal.amount), credit(PAYOUTS, withdrawal.amount),
    )


def withdrawal_paid(withdrawal):
    return books.record("transfer", withdrawal.withdraw_id, debit(PAYOUTS, withdrawal.amount), credit(PINGPP, withdrawal.amount))


def withdrawal_failed(withdrawal):
    """Ping++ paid nothing: the amount goes back to the expert's available balance."""
    return books.record(
        "withdraw_refund", withdrawal.withdraw_id,
        debit(PAYOUTS, withdrawal.amount), credit(expert(withdrawal.user_id, AVAILABLE), withdrawal.amount),
    )


def locked_available(user_id):
    """The available balance, locked until the transaction ends (for a debit that must not overdraw)."""
    return lock_row(Wallet, {"updated_at": now_ms()}, user_id=user_id).available


def balance_of(user_id):
    """(pending, available)."""
    row = wallet_by_user(user_id)
    return (row.pending, row.available) if row else (0, 0)
