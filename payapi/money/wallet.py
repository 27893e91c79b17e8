"""What each money movement posts to the books, and the experts' balances.

A paid pay credits its expert `money` less the platform fee (rounded down, so the odd fen goes to
the expert), held as `pending` for SETTLEMENT_HOLD_SECONDS. A refund takes the expert's share
(pro rata, cumulative rounding: the shares of all refunds of a pay add up exactly to its credit)
from `pending` while the pay's credit is held, else from `available`; the rest of the refund is
the fee's share. Withdrawals need `available`.
"""

from payapi.domain.clock import now_ms
from payapi.infra.db import RowByKey, lock_row
from payapi.infra.models import Wallet
from payapi.money import books
from payapi.money.books import AVAILABLE, FEES, PAYOUTS, PENDING, PINGPP, REFUNDS, credit, debit, expert

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
        "charge",
        pay.pay_id,
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
        "release",
        pay.pay_id,
        debit(expert(pay.expert_id, PENDING), amount),
        credit(expert(pay.expert_id, AVAILABLE), amount),
    )
    if not released:
        raise books.Unbalanced(f"pay {pay.pay_id} holds {amount} although its hold was released")
    return released


def _taken(pay, refunded):
    """What refunding `refunded` fen of pay in all takes from its expert: pro rata, rounded down."""
    return pay.credited * refunded // pay.money


def refund_share(pay, amount):
    """The expert's part of refunding amount more of pay: cumulative rounding over what stands
    refunded (pay.amount_refunded, which a failed refund leaves), so the refunds standing always
    take exactly _taken of their sum, and all shares of a full refund add up to the credit."""
    return _taken(pay, pay.amount_refunded + amount) - _taken(pay, pay.amount_refunded)


def returned_share(pay, amount):
    """What a failed refund of amount gives back: the last `amount` of what stands refunded, by
    the same rule. It may differ by a fen from what that refund took (when refunds fail out of
    order); giving back exactly that instead would let a later share fall below 0 or above its
    refund's amount."""
    return _taken(pay, pay.amount_refunded) - _taken(pay, pay.amount_refunded - amount)


def take_refund(refund, pay, settled):
    """Debit the refund's share from the expert and its fee share from the fees (refunds are booked
    under Ping++'s refund id, which links each entry to Ping++'s own records).

    settled: Ping++ already refunded it (a refund made elsewhere), so the money leaves `pingpp`;
    else it waits in `refunds` until Ping++ settles it.
    """
    refund.share = refund_share(pay, refund.amount)
    refund.bucket = PENDING if pay.held >= refund.share and pay.held > 0 else AVAILABLE
    if refund.bucket == PENDING:
        pay.held -= refund.share
    pay.amount_refunded += refund.amount
    return books.record(
        "refund",
        refund.pingpp_refund_id or refund.refund_id,  # ours while Ping++'s is unknown (unclear)
        debit(expert(pay.expert_id, refund.bucket), refund.share),
        debit(FEES, refund.amount - refund.share),
        credit(PINGPP if settled else REFUNDS, refund.amount),
    )


def refund_settled(refund):
    return books.record(
        "refund_settled", refund.pingpp_refund_id, debit(REFUNDS, refund.amount), credit(PINGPP, refund.amount)
    )


def give_refund_back(refund, pay):
    """Ping++ refused a refund it had accepted: the expert's share (see returned_share) and the fee
    share come back."""
    share = returned_share(pay, refund.amount)
    # Back where it came from while the pay's credit is still held; once the hold is released
    # (booked, whatever any clock says), to available.
    held = refund.bucket == PENDING and pay.release_at is not None and not books.recorded("release", pay.pay_id)
    bucket = PENDING if held else AVAILABLE
    if bucket == PENDING:
        pay.held += share
    pay.amount_refunded -= refund.amount
    return books.record(
        "refund_failed",
        refund.pingpp_refund_id or refund.refund_id,
        debit(REFUNDS, refund.amount),
        credit(expert(pay.expert_id, bucket), share),
        credit(FEES, refund.amount - share),
    )


def withdrawn(withdrawal):
    return books.record(
        "withdraw",
        withdrawal.withdraw_id,
        debit(expert(withdrawal.user_id, AVAILABLE), withdrawal.amount),
        credit(PAYOUTS, withdrawal.amount),
    )


def withdrawal_paid(withdrawal):
    return books.record(
        "transfer", withdrawal.withdraw_id, debit(PAYOUTS, withdrawal.amount), credit(PINGPP, withdrawal.amount)
    )


def withdrawal_failed(withdrawal):
    """Ping++ paid nothing: the amount goes back to the expert's available balance."""
    return books.record(
        "withdraw_refund",
        withdrawal.withdraw_id,
        debit(PAYOUTS, withdrawal.amount),
        credit(expert(withdrawal.user_id, AVAILABLE), withdrawal.amount),
    )


def locked_available(user_id):
    """The available balance, locked until the transaction ends (for a debit that must not overdraw)."""
    return lock_row(Wallet, {"updated_at": now_ms()}, user_id=user_id).available


def balance_of(user_id):
    """(pending, available)."""
    row = wallet_by_user(user_id)
    return (row.pending, row.available) if row else (0, 0)
