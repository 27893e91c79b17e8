"""Withdrawals: once per natural month, debited up front, paid out to Alipay by the worker."""

import json
import logging

import msgspec
import peewee
from peewee import fn

from payapi.contract.errors import NOT_ALLOWED, NOT_FOUND, ApiError
from payapi.contract.shapes import BalanceInfo
from payapi.domain.clock import iso, natural_month, next_month_start, now_ms
from payapi.domain.ids import new_id
from payapi.domain.lifecycles import WITHDRAWAL, Outcome, WithdrawalStatus, active_month_key
from payapi.infra import jobs, outbox
from payapi.infra.db import Prepared, RowByKey, db, locked, transaction
from payapi.infra.gateway import GatewayError, TransferRequest
from payapi.infra.models import Lockout, Profile, Wallet, Withdrawal
from payapi.money import payments, wallet
from payapi.users import security

log = logging.getLogger("payapi.withdrawals")

PENDING, PROCESSING = WithdrawalStatus.PENDING, WithdrawalStatus.PROCESSING
SUCCEEDED, FAILED = WithdrawalStatus.SUCCEEDED, WithdrawalStatus.FAILED
# What a transfer's status means for its withdrawal; any other status (scheduled, pending) is
# still in flight. A cancelled transfer paid nothing: the withdrawal fails and is refunded.
TRANSFER_OUTCOMES = {"paid": SUCCEEDED, "failed": FAILED, "canceled": FAILED, "cancelled": FAILED}
LEASE_MS = 5 * 60 * 1000
RECONCILE_AFTER_MS = 5 * 60 * 1000
# Ping++'s `created` of a transfer is its own clock's: look a little before the withdrawal was made.
CLOCK_SKEW_S = 300


withdrawal_by_active_month = RowByKey(Withdrawal, Withdrawal.active_month)


def month_is_used(user_id, month):
    # active_month is set exactly while a withdrawal is pending, processing or succeeded.
    return withdrawal_by_active_month(active_month_key(user_id, month)) is not None


@security.uses_bcrypt
def withdraw(settings, user_id, passwd, amount, headers):
    """Checks in the contract's order, then one transaction debits and records the withdrawal."""
    profile = security.profile_of(user_id)
    if not profile or not profile.passwd_hash:
        raise ApiError(NOT_ALLOWED, "请先设置支付密码")
    if not profile.account_id:
        raise ApiError(NOT_ALLOWED, "请先设置提现账户")
    security.check_secret(user_id, security.PASSWD, passwd, profile.passwd_hash)
    try:
        return _debit_and_record(settings, user_id, amount, headers)
    except peewee.IntegrityError:
        # The unique (user, month) key caught a withdrawal the row lock did not (another host,
        # a Galera node): the month is used.
        raise ApiError(NOT_ALLOWED, "每个自然月只能提现一次") from None


@transaction
def _debit_and_record(settings, user_id, amount, headers):
    now = now_ms()
    month = natural_month(now, settings.tz)
    # The wallet row lock serialises this user's withdrawals across workers and hosts; the unique
    # active_month key would stop a second one even without it.
    available = wallet.locked_available(user_id)
    if month_is_used(user_id, month):
        raise ApiError(NOT_ALLOWED, "每个自然月只能提现一次")
    if amount > available:
        raise ApiError(NOT_ALLOWED, "可提现余额不足")
    profile = security.profile_of(user_id)  # the account as it is now, inside the lock
    withdrawal = Withdrawal(
        withdraw_id=new_id(),
        user_id=user_id,
        amount=amount,
        account_type=profile.account_type,
        account_id=profile.account_id,
        account_name=profile.account_name,
        month=month,
        client_ip=headers.client_ip,
        platform=headers.platform,
        store=headers.store,
    )
    WITHDRAWAL.begin(withdrawal, now)
    outbox.save(withdrawal, force_insert=True)
    wallet.withdrawn(withdrawal)
    return withdrawal


class _BalanceRow(msgspec.Struct, array_like=True):
    """The balance statement's one column, a JSON array in this order; null where no row was found."""

    pending: int | None
    available: int | None
    ready: bool | int | None  # a comparison: true/false on MariaDB, 1/0 on SQLite
    locked_until: int | None
    month_used: int | None  # 1 when this month's withdrawal key is taken
    next_release: int | None


def _balance_query(user_id, passwd_kind, month_key):
    """What the balance answer reads, in one statement of six one-row lookups (_BalanceRow): the
    wallet's two columns, whether a pay password and an account are set, the pay password's lock,
    whether this month's withdrawal is used (its key), and when the next held credit is released
    (payments.next_release_query itself, so the rule is written once). Each was a query of its own,
    most of them of a whole row, before; the text is built once (Prepared).

    The six come back as one JSON array, one column: PyMySQL reads and parses a description of
    every column of every result (its name, table, type...), and under load six of them cost the
    workers about as much as the five lookups cost MariaDB (docs/performance.md, "The balance in
    one column"). The alias keeps that one description short (MariaDB would name the column after
    its whole expression)."""
    ready = (fn.COALESCE(Profile.passwd_hash, "") != "") & (fn.COALESCE(Profile.account_id, "") != "")
    return peewee.Select(
        columns=[
            fn.JSON_ARRAY(
                Wallet.select(Wallet.pending).where(Wallet.user_id == user_id),
                Wallet.select(Wallet.available).where(Wallet.user_id == user_id),
                Profile.select(ready).where(Profile.user_id == user_id),
                Lockout.select(Lockout.locked_until).where(Lockout.user_id == user_id, Lockout.kind == passwd_kind),
                Withdrawal.select(peewee.SQL("1")).where(Withdrawal.active_month == month_key),
                payments.next_release_query(user_id),
            ).alias("balance")
        ]
    ).bind(db.obj)


_balance = Prepared(_balance_query)
_balance_row = msgspec.json.Decoder(_BalanceRow)


def balance_info(settings, user_id):
    now = now_ms()
    month_key = active_month_key(user_id, natural_month(now, settings.tz))  # as month_is_used asks
    row = _balance_row.decode(_balance(user_id, security.PASSWD, month_key).fetchone()[0])
    pending, available = row.pending or 0, row.available or 0  # wallet.balance_of
    used = row.month_used is not None
    can = bool(
        row.ready
        and (row.locked_until or 0) <= now  # security.lock_remaining
        and not used
        and available >= settings.withdraw_min
    )
    return BalanceInfo(
        balance=pending + available,
        available=available,
        pending=pending,
        next_available_at=iso(row.next_release) if pending > 0 else None,  # payments.next_release
        can_withdraw=can,
        next_withdraw_at=iso(next_month_start(now, settings.tz)) if used else None,
    )


def list_withdrawals(user_id, limit, before=None):
    query = Withdrawal.select().where(Withdrawal.user_id == user_id)
    if before:
        cursor = Withdrawal.get_or_none(Withdrawal.withdraw_id == before, Withdrawal.user_id == user_id)
        if cursor is None:
            raise ApiError(NOT_FOUND, "提现记录不存在")
        query = query.where(
            (Withdrawal.created_at < cursor.created_at)
            | ((Withdrawal.created_at == cursor.created_at) & (Withdrawal.withdraw_id < cursor.withdraw_id))
        )
    rows = list(query.order_by(Withdrawal.created_at.desc(), Withdrawal.withdraw_id.desc()).limit(limit + 1))
    return rows[:limit], len(rows) > limit


# --- payouts -------------------------------------------------------------------------------


@transaction
def claim(withdraw_id, attempt=True, operator=False):
    """Take the payout lease; only one process at a time (a worker, an operator) may talk to Ping++
    about a pending withdrawal. -> the lease's end, or 0 if someone else holds it (or it is not pending).

    attempt: a payout attempt (counted); an operator's check before failing it is not one.
    operator: an operator need not wait for the back-off after a failed attempt (the worker does).
    """
    now = now_ms()
    changes = {"lease_until": now + LEASE_MS}
    if attempt:
        changes["attempts"] = Withdrawal.attempts + 1
    free = (Withdrawal.withdraw_id == withdraw_id) & (Withdrawal.status == PENDING) & (Withdrawal.lease_until < now)
    if not operator:
        free &= Withdrawal.retry_after <= now
    taken = Withdrawal.update(**changes).where(free).execute()
    return now + LEASE_MS if taken == 1 else 0


@transaction
def release(withdraw_id, lease_until, back_to=0):
    """Give a lease back (to back_to: when it was free again before) if it is still ours and pending."""
    Withdrawal.update(lease_until=back_to).where(
        Withdrawal.withdraw_id == withdraw_id, Withdrawal.status == PENDING, Withdrawal.lease_until == lease_until
    ).execute()


def apply_transfer_event(transfer):
    """A transfer.* webhook. The transfer's status decides, never the event's type: the two can
    disagree, and the object is what Ping++ holds. A transfer still in flight changes nothing (the
    worker learns of a lost create answer by itself)."""
    if transfer.status not in TRANSFER_OUTCOMES:
        return Outcome.IGNORED
    return apply_transfer(transfer)


@transaction
def apply_transfer(transfer):
    """Apply a Ping++ transfer (a webhook's, a create's answer or a retrieve): its status decides."""
    outcome = TRANSFER_OUTCOMES.get(transfer.status)
    withdrawal = locked(Withdrawal, transfer.order_no)
    if withdrawal is None:
        return Outcome.UNKNOWN
    if (
        (withdrawal.transfer_id and transfer.id != withdrawal.transfer_id)
        or transfer.amount != withdrawal.amount
        or transfer.currency != "cny"
    ):
        log.warning("transfer %s does not match withdrawal %s; not applied", transfer.id, withdrawal.withdraw_id)
        return Outcome.MISMATCH
    now = now_ms()
    if withdrawal.status in (SUCCEEDED, FAILED):
        if outcome in (None, withdrawal.status):
            return Outcome.IGNORED
        log.error(
            "transfer %s says %s but withdrawal %s is %s",
            transfer.id,
            outcome,
            withdrawal.withdraw_id,
            withdrawal.status,
        )
        return Outcome.MISMATCH
    withdrawal.transfer_id = transfer.id
    withdrawal.transfer = json.dumps(transfer.raw, ensure_ascii=False)
    if outcome is None:
        if withdrawal.status == PENDING:
            WITHDRAWAL.move(withdrawal, PROCESSING, now)  # Ping++ accepted it
        # While processing, lease_until is when the worker next asks Ping++ about the transfer.
        withdrawal.lease_until = now + RECONCILE_AFTER_MS
        outbox.save(withdrawal)
        return Outcome.IGNORED
    settle(withdrawal, outcome, now)
    outbox.save(withdrawal)
    return Outcome.APPLIED


def settle(withdrawal, outcome, now):
    """Ping++ paid the transfer (SUCCEEDED) or paid nothing (FAILED: the money goes back to the
    expert and the month is free again). The caller locked and saves the withdrawal."""
    WITHDRAWAL.move(withdrawal, outcome, now)
    if outcome == FAILED:
        wallet.withdrawal_failed(withdrawal)
    else:
        wallet.withdrawal_paid(withdrawal)


@transaction
def _note_failure(withdraw_id, error, retry_in_ms, lookup_from=None):
    # The lease is given back; the worker tries again after retry_in_ms (an operator may at once).
    Withdrawal.update(
        last_error=error[:255], lease_until=0, retry_after=now_ms() + retry_in_ms, lookup_from=lookup_from
    ).where(Withdrawal.withdraw_id == withdraw_id).execute()


def _set_aside(withdraw_id):
    """After an unexpected error: leave it as it is and look again after a growing delay."""
    row = Withdrawal.get_or_none(Withdrawal.withdraw_id == withdraw_id)
    if row is not None and row.status == PENDING:
        # What the attempt did at Ping++ is unknown: the next one looks from its start (its claim) on.
        attempt_began = row.lease_until - LEASE_MS if row.lease_until else now_ms() - LEASE_MS
        lookup_from = attempt_began if row.lookup_from is None else min(row.lookup_from, attempt_began)
        _note_failure(
            withdraw_id, row.last_error or "unexpected error", jobs.backoff_ms(max(row.attempts, 1)), lookup_from
        )


@transaction
def _write(change, then):
    result = change()
    if then is not None:
        then()
    return result


def pay_out(gateway, withdraw_id, claimed=False, then=None):
    """One payout attempt. claimed: the caller took the lease already. then(): called in the same
    transaction that writes the attempt's outcome (an operator's audit row).

    A failed attempt is tried again after a growing delay (jobs.backoff_ms), with the same order_no.
    Only after an attempt whose outcome is unclear (time-out, 5xx, lost answer: Ping++ may have made
    the transfer) does the next one first look for it, in Ping++'s transfers from that attempt on; a
    refusal made nothing, and the next attempt simply asks again.
    """
    if not claimed and not claim(withdraw_id):
        return None  # another worker has it
    started = now_ms()
    withdrawal = Withdrawal.get(Withdrawal.withdraw_id == withdraw_id)
    request = TransferRequest(
        order_no=withdrawal.withdraw_id,
        amount=withdrawal.amount,
        recipient=withdrawal.account_id,
        recipient_name=withdrawal.account_name,
        description=f"提现 {withdrawal.withdraw_id}",
    )
    lookup_from = withdrawal.lookup_from
    try:
        transfer = None
        if lookup_from is not None:
            transfer = transfer_made_for(gateway, withdrawal, since_ms=lookup_from)
        if transfer is None:
            # Nothing made before this attempt; only this one can leave an unclear outcome now.
            lookup_from = started
            transfer = gateway.create_transfer(request)
    except GatewayError as exc:
        error = str(exc)
        if exc.certain and lookup_from == started:
            lookup_from = None  # Ping++ refused the transfer: nothing was made
        log.warning("payout %s not sent: %s", withdraw_id, error, extra={"fields": {"withdraw_id": withdraw_id}})
        retry_in = jobs.backoff_ms(max(withdrawal.attempts, 1))
        _write(lambda: _note_failure(withdraw_id, error, retry_in, lookup_from), then)
        return "failed"
    _write(lambda: apply_transfer(transfer), then)
    return "sent"


def transfer_made_for(gateway, withdrawal, since_ms=None):
    """Ping++'s transfer for this withdrawal (its order_no), or None: Ping++'s list from since_ms
    (default: the withdrawal's creation) on. GatewayError if Ping++ cannot say."""
    start = (withdrawal.created_at if since_ms is None else since_ms) // 1000 - CLOCK_SKEW_S
    end = now_ms() // 1000 + CLOCK_SKEW_S
    return next((t for t in gateway.list_transfers(start, end) if t.order_no == withdrawal.withdraw_id), None)


def run_payouts(gateway, batch=50):
    """Send each pending withdrawal to Ping++ once; a failed attempt stays pending with the same order_no."""
    now = now_ms()
    due = [
        withdraw_id
        for (withdraw_id,) in Withdrawal.select(Withdrawal.withdraw_id)
        .where(Withdrawal.status == PENDING, Withdrawal.lease_until < now, Withdrawal.retry_after <= now)
        .order_by(Withdrawal.created_at)
        .limit(batch)
        .tuples()
    ]
    return jobs.run_pass("payouts", due, lambda i: pay_out(gateway, i), _set_aside, {"sent": 0, "failed": 0})


def _check_transfer(gateway, withdraw_id):
    withdrawal = Withdrawal.get(Withdrawal.withdraw_id == withdraw_id)
    if withdrawal.status != PROCESSING:
        return None
    try:
        transfer = gateway.retrieve_transfer(withdrawal.transfer_id)
    except GatewayError as exc:
        log.warning(
            "transfer %s of %s not retrieved: %s",
            withdrawal.transfer_id,
            withdraw_id,
            exc,
            extra={"fields": {"withdraw_id": withdraw_id, "transfer_id": withdrawal.transfer_id}},
        )
        return "failed"
    if apply_transfer(transfer) == Outcome.APPLIED:
        return "settled"
    return None  # still in flight at Ping++: apply_transfer set the next look


def reconcile_transfers(gateway, batch=50):
    """Ask Ping++ about transfers that stayed processing for a few minutes."""
    stuck = [
        withdraw_id
        for (withdraw_id,) in Withdrawal.select(Withdrawal.withdraw_id)
        .where(Withdrawal.status == PROCESSING, Withdrawal.lease_until < now_ms())
        .order_by(Withdrawal.lease_until)
        .limit(batch)
        .tuples()
    ]
    return jobs.run_pass(
        "transfers", stuck, lambda i: _check_transfer(gateway, i), _set_aside, {"settled": 0, "failed": 0}
    )
