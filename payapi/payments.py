"""Pay records: creation with their Ping++ charge, the phone's reports, and applying Ping++'s truth."""

import dataclasses
import json
import logging
import time

import peewee

from . import jobs, wallet
from .clock import now_ms
from .db import RowByKey, for_update, transaction
from .errors import NOT_ALLOWED, NOT_FOUND, PROVIDER_FAILED, ApiError
from .gateway import ChargeRequest, GatewayError
from .ids import new_id
from .lifecycles import PAY, AppReport, Outcome, PayStatus
from .models import ClientReport, LedgerEntry, Pay

log = logging.getLogger(__name__)

PENDING, PAID, CANCEL, REFUNDED = PayStatus.PENDING, PayStatus.PAID, PayStatus.CANCEL, PayStatus.REFUNDED
# What the phone's report does to a pending pay: "fail" leaves it pending (the user may try again).
CLOSED_BY_REPORT = {AppReport.CANCEL: PayStatus.CANCEL, AppReport.INVALID: PayStatus.FAIL}

RECONCILE_AFTER_MS = 10 * 60 * 1000
RECHECK_MS = 5 * 60 * 1000  # a pending pay Ping++ has not settled yet is asked about again after this
DEFAULT_EXPIRY_MS = 24 * 3600 * 1000  # when a charge carries no time_expire


@dataclasses.dataclass(frozen=True)
class Audit:
    """The phone's own headers, kept with what it reported."""

    client_ip: str = ""
    platform: str = ""
    store: str = ""


# --- reading -------------------------------------------------------------------------------

# Reads take only the columns they answer with (see Pay.info).
pay_info_by_id = RowByKey(Pay, Pay.pay_id, columns=(Pay.user_id, Pay.info))
pay_status_by_id = RowByKey(Pay, Pay.pay_id, columns=(Pay.user_id, Pay.status, Pay.client_status))


def _found(pay, user_id=None):
    # Someone else's pay is as unknown as a missing one (911).
    if pay is None or (user_id is not None and pay.user_id != user_id):
        raise ApiError(NOT_FOUND, "支付记录不存在")
    return pay


def info_of(pay_id, user_id=None):
    """The pay's info JSON text; only its payer may read it unless user_id is None (the order service)."""
    return _found(pay_info_by_id(pay_id), user_id).info


def status_of(pay_id, user_id):
    pay = _found(pay_status_by_id(pay_id), user_id)
    return pay.status, pay.client_status


@transaction
def _move(pay_id, expected, to, **changes):
    """Move a pay still in expected to status to; False if it is no longer there or in expected."""
    pay = for_update(Pay.select().where(Pay.pay_id == pay_id)).first()
    if pay is None or pay.status != expected:
        return False
    for field, value in changes.items():
        setattr(pay, field, value)
    PAY.move(pay, to, now_ms())
    pay.save()
    return True


# --- creation ------------------------------------------------------------------------------

def _order_filter(new):
    return Pay.o_id == new.order_id if new.type == "order" else Pay.note_id == new.order_id


@transaction
def _reserve(new, stale_before):
    """-> ("existing", pay, None) | ("reserved", pay, replaced pay_id or None) | ("wait", None, None)."""
    paid = Pay.select(Pay.info).where(
        Pay.type == new.type, _order_filter(new), Pay.status.in_((PAID, REFUNDED))
    ).first()
    if paid is not None:
        # The order service may be retrying a call whose answer it lost: it gets the paid pay too.
        raise ApiError(NOT_ALLOWED, "该订单已支付", info=json.loads(paid.info))
    now = now_ms()
    replaced = None
    current = for_update(Pay.select().where(Pay.open_for == new.open_for)).first()
    if current is not None:
        if current.charge_id is None:
            if current.created_at > stale_before:
                return "wait", None, None  # another request is creating it
            current.delete_instance()  # its creator died between reserving and charging
        elif (current.money, current.channel, current.user_id, current.expert_id) == (
            new.money, new.channel, new.user_id, new.expert_id
        ):
            return "existing", current, None
        else:
            replaced = current.pay_id
            PAY.move(current, CANCEL, now)
            current.save()
    pay = Pay(
        pay_id=new_id(),
        type=new.type,
        o_id=new.order_id if new.type == "order" else "",
        note_id=new.order_id if new.type == "note" else "",
        expert_id=new.expert_id,
        user_id=new.user_id,
        amount=new.amount,
        money=new.money,
        channel=new.channel,
        subject=new.subject,
        description=new.description,
        client_ip=new.client_ip,
        platform=new.platform,
        store=new.store,
    )
    PAY.begin(pay, now)
    pay.save(force_insert=True)
    return "reserved", pay, replaced


@transaction
def _attach_charge(pay_id, charge):
    pay = for_update(Pay.select().where(Pay.pay_id == pay_id)).get()
    _take_charge(pay, charge)
    pay.updated_at = now_ms()
    pay.save()
    return pay


def _take_charge(pay, charge):
    """The charge as Ping++ last sent it; the pay's charge id and expiry come with its first sight."""
    pay.charge = json.dumps(charge.raw, ensure_ascii=False)
    if pay.charge_id is None:
        pay.charge_id = charge.id
        pay.time_expire = charge.time_expire * 1000 if charge.time_expire else None


@transaction
def _release(pay_id):
    """Remove a reservation whose charge was never made; True if it was removed.

    A reservation Ping++ reported paid meanwhile (its create answer was lost, its webhook was
    not) holds the user's money: it is never removed.
    """
    return Pay.delete().where(Pay.pay_id == pay_id, Pay.charge_id.is_null(), Pay.status == PENDING).execute() == 1


def _reopen(pay_id):
    """A failed replacement leaves the pay it was to close pending, as if nothing had happened."""
    if pay_id is None:
        return
    try:
        _move(pay_id, CANCEL, PENDING)
    except peewee.IntegrityError:
        pass  # another request already made a new pending pay for the order


def create_pay(gateway, new, gateway_timeout):
    """One pending pay (and one Ping++ charge) per order/note, money and channel, even when calls race.

    new: a shapes.NewPay.
    """
    # A reservation without a charge older than this was left by a request that died.
    stale_ms = int((2 * gateway_timeout + 5) * 1000)
    give_up_at = time.monotonic() + 2 * gateway_timeout + 2
    while True:
        try:
            state, pay, replaced = _reserve(new, now_ms() - stale_ms)
        except peewee.IntegrityError:
            state, pay, replaced = "wait", None, None  # lost a race for the open_for key; look again
        if state != "wait":
            break
        if time.monotonic() > give_up_at:
            raise ApiError(PROVIDER_FAILED, "支付服务繁忙，请稍后再试")
        time.sleep(0.05)
    if state == "existing":
        return pay
    request = ChargeRequest(
        order_no=pay.pay_id,
        amount=new.money,
        channel=new.channel,
        subject=new.subject,
        body=new.description or new.subject,
        client_ip=new.client_ip or "127.0.0.1",
        extra=new.extra,
    )
    try:
        charge = gateway.create_charge(request)
    except GatewayError:
        return _give_up(pay.pay_id, replaced)
    if charge.order_no != pay.pay_id or charge.amount != new.money or not charge.id:
        log.error("Ping++ answered charge creation for %s with a different charge", pay.pay_id)
        return _give_up(pay.pay_id, replaced)
    return _attach_charge(pay.pay_id, charge)


def _give_up(pay_id, replaced):
    """No usable answer from Ping++: remove the reservation, unless Ping++ reported it paid meanwhile."""
    if not _release(pay_id):
        pay = Pay.get_or_none(Pay.pay_id == pay_id)
        if pay is not None and pay.status in (PAID, REFUNDED):
            return pay  # the charge was made and paid; its answer was lost, its webhook was not
    _reopen(replaced)
    raise ApiError(PROVIDER_FAILED)


# --- applying Ping++'s truth -----------------------------------------------------------------

def credit_for(money, fee_bps):
    """What the expert earns from a paid pay: money less the platform fee (the fee rounds down)."""
    return money - money * fee_bps // 10_000


@transaction
def apply_charge(charge, fee_bps):
    """Apply a charge object (from a webhook or a retrieve). Idempotent; -> Outcome."""
    pay = for_update(Pay.select().where(Pay.pay_id == charge.order_no)).first()
    if pay is None:
        return Outcome.UNKNOWN
    if (pay.charge_id and charge.id != pay.charge_id) or charge.amount != pay.money or charge.currency != pay.currency:
        log.warning("charge %s does not match pay %s; not applied", charge.id, pay.pay_id)
        return Outcome.MISMATCH
    if pay.status in (PAID, REFUNDED):
        return Outcome.IGNORED
    now = now_ms()
    # Its create answer may have been lost (or still be on its way): the charge is ours by its order_no.
    _take_charge(pay, charge)
    pay.updated_at = now
    if not charge.paid:
        pay.save()
        return Outcome.IGNORED
    PAY.move(pay, PAID, now)
    pay.credited = credit_for(pay.money, fee_bps)
    wallet.book(pay.expert_id, pay.credited, wallet.CHARGE, pay.pay_id)
    pay.save()
    # A pay closed by a newer one may turn out paid after all: then the order is paid, and the
    # newer pending pay must not take the user's money a second time.
    for newer in for_update(Pay.select().where(Pay.open_for == f"{pay.type}:{pay.o_id or pay.note_id}")):
        PAY.move(newer, CANCEL, now)
        newer.save()
    return Outcome.APPLIED


def settle_charge_before_refund(gateway, refund, fee_bps):
    """A refund's webhook can overtake its charge's: ask Ping++ about the charge first.

    The refund itself is never taken as proof of payment. Ping++ unreachable → 920, so the
    webhook answers non-2xx, stores nothing, and Ping++ delivers the refund again later.
    """
    if not refund.charge_id:
        return
    pay = Pay.select(Pay.status).where(Pay.charge_id == refund.charge_id).first()
    if pay is None or pay.status in (PAID, REFUNDED):
        return
    try:
        charge = gateway.retrieve_charge(refund.charge_id)
    except GatewayError:
        raise ApiError(PROVIDER_FAILED) from None
    apply_charge(charge, fee_bps)


@transaction
def apply_refund(refund):
    """Apply a succeeded refund (gateway.Refund): debit the expert pro rata to the refunded part of the credit."""
    if not refund.id:
        return Outcome.MISMATCH
    pay = for_update(Pay.select().where(Pay.charge_id == refund.charge_id)).first() if refund.charge_id else None
    if pay is None:
        return Outcome.UNKNOWN
    if refund.charge_order_no not in (None, pay.pay_id) or refund.currency not in (None, pay.currency):
        return Outcome.MISMATCH
    if not refund.succeeded:
        return Outcome.IGNORED
    if LedgerEntry.select().where(LedgerEntry.kind == wallet.REFUND, LedgerEntry.reference == refund.id).exists():
        return Outcome.IGNORED  # applied before, from another event: a replay, not a refund that does not fit
    amount = refund.amount
    if pay.status not in (PAID, REFUNDED) or amount <= 0 or pay.amount_refunded + amount > pay.money:
        log.warning("refund %s does not fit pay %s; not applied", refund.id, pay.pay_id)
        return Outcome.MISMATCH
    before, after = pay.amount_refunded, pay.amount_refunded + amount
    # Cumulative rounding: the debits of all refunds of a pay add up to exactly what was credited.
    debit = pay.credited * after // pay.money - pay.credited * before // pay.money
    if not wallet.book(pay.expert_id, -debit, wallet.REFUND, refund.id):
        return Outcome.IGNORED
    pay.amount_refunded = after
    now = now_ms()
    if after == pay.money:
        PAY.move(pay, REFUNDED, now)
    pay.updated_at = now
    pay.save()
    return Outcome.APPLIED


# --- the phone's reports -------------------------------------------------------------------

@transaction
def _record_report(user_id, pay_id, report, audit):
    pay = for_update(Pay.select().where(Pay.pay_id == pay_id)).first()
    if pay is None or pay.user_id != user_id:
        raise ApiError(NOT_FOUND, "支付记录不存在")
    now = now_ms()
    ClientReport.create(
        pay_id=pay_id, user_id=user_id, status=report, created_at=now,
        client_ip=audit.client_ip, platform=audit.platform, store=audit.store,
    )
    pay.client_status = report
    pay.updated_at = now
    if pay.status == PENDING and report in CLOSED_BY_REPORT:
        PAY.move(pay, CLOSED_BY_REPORT[report], now)
    pay.save()
    return pay


def report_client_status(gateway, fee_bps, user_id, pay_id, report, audit):
    """Record what the phone saw; on "success" ask Ping++ and apply its answer, never the phone's."""
    pay = _record_report(user_id, pay_id, report, audit)
    if report == AppReport.SUCCESS and pay.charge_id and PAY.allows(pay, PAID):
        try:
            charge = gateway.retrieve_charge(pay.charge_id)
        except GatewayError:
            return  # recorded; the webhook or the worker will settle it
        apply_charge(charge, fee_bps)


# --- the worker's reconciliation ---------------------------------------------------------------

def _check_pay(gateway, fee_bps, pay_id):
    pay = Pay.get_or_none(Pay.pay_id == pay_id)
    if pay is None or pay.status != PENDING:
        return None
    if pay.charge_id is None:
        _release(pay_id)  # its creator died between reserving and charging
        return None
    try:
        charge = gateway.retrieve_charge(pay.charge_id)
    except GatewayError as exc:
        log.warning("pay %s: charge %s not retrieved: %s", pay_id, pay.charge_id, exc,
                    extra={"fields": {"pay_id": pay_id, "charge_id": pay.charge_id}})
        return "failed"
    now = now_ms()
    if charge.paid:
        return "paid" if apply_charge(charge, fee_bps) == Outcome.APPLIED else None
    expires_at = charge.time_expire * 1000 if charge.time_expire else pay.created_at + DEFAULT_EXPIRY_MS
    if expires_at <= now:
        return "closed" if _move(pay_id, PENDING, CANCEL) else None
    _check_again(pay_id, min(expires_at, now + RECHECK_MS))
    return None


@transaction
def _check_again(pay_id, at_ms):
    Pay.update(check_after=at_ms).where(Pay.pay_id == pay_id).execute()


def _set_aside(pay_id):
    _check_again(pay_id, now_ms() + jobs.backoff_ms(1))


def reconcile_pays(gateway, fee_bps, batch=100):
    """Ask Ping++ about pending pays older than a few minutes; close expired unpaid ones as cancel.

    Every step is idempotent, so several workers may run it at once.
    """
    now = now_ms()
    due = [
        pay_id
        for (pay_id,) in Pay.select(Pay.pay_id)
        .where(Pay.status == PENDING, Pay.created_at < now - RECONCILE_AFTER_MS, Pay.check_after <= now)
        .order_by(Pay.check_after, Pay.created_at)
        .limit(batch)
        .tuples()
    ]
    return jobs.run_pass(
        "pays", due, lambda i: _check_pay(gateway, fee_bps, i), _set_aside, {"paid": 0, "closed": 0, "failed": 0}
    )
