"""The daily reconciliation with Ping++: a day's charges (with their refunds) and transfers as
Ping++ lists them, compared with our records.

Something Ping++ reports settled that payapi has not applied is applied now, through the same
path as a webhook, and reported as healed. Amounts or statuses that disagree, and records one
side has and the other does not, are reported as differences. The result is stored; the worker
runs it once a day for the day before.
"""

import datetime
import json
import logging

from payapi.domain.clock import now_ms
from payapi.domain.ids import new_id
from payapi.domain.lifecycles import Outcome, PayStatus, RefundStatus, WithdrawalStatus
from payapi.infra.db import lock_row, transaction
from payapi.infra.gateway import refund_from
from payapi.infra.models import DailyClaim, Pay, Reconciliation, Refund, Withdrawal
from payapi.money import payments, refunds, withdrawals

log = logging.getLogger("payapi.reconciliation")

CLEAN, HEALED, DIFFERENT = "clean", "healed", "different"
PAID_STATUSES = (PayStatus.PAID, PayStatus.REFUNDED)
TRANSFER_STATUS = {
    "paid": WithdrawalStatus.SUCCEEDED,
    "failed": WithdrawalStatus.FAILED,
    "canceled": WithdrawalStatus.FAILED,
    "cancelled": WithdrawalStatus.FAILED,
}


def day_bounds(date, tz):
    """[start, end) of a calendar day in tz, in Unix seconds."""
    start = datetime.datetime.combine(date, datetime.time(), tzinfo=tz)
    end = start + datetime.timedelta(days=1)
    return int(start.timestamp()), int(end.timestamp())


def yesterday(tz):
    return (datetime.datetime.now(tz) - datetime.timedelta(days=1)).date()


class Report:
    def __init__(self):
        self.healed, self.differences = [], []

    def heal(self, what, **ids):
        self.healed.append({"what": what, **ids})

    def differ(self, what, **ids):
        self.differences.append({"what": what, **ids})

    @property
    def status(self):
        return DIFFERENT if self.differences else HEALED if self.healed else CLEAN


def _charges(gateway, settings, start, end, report):
    seen = set()
    for charge in gateway.list_charges(start, end):
        pay = Pay.get_or_none(Pay.pay_id == charge.order_no)
        seen.add(charge.order_no)
        if pay is None:
            report.differ(
                "a charge payapi has no pay for", charge=charge.id, order_no=charge.order_no, amount=charge.amount
            )
            continue
        if charge.amount != pay.money or (pay.charge_id and pay.charge_id != charge.id):
            report.differ(
                "a charge that does not match its pay",
                charge=charge.id,
                pay=pay.pay_id,
                amount=charge.amount,
                money=pay.money,
            )
            continue
        if charge.paid and pay.status not in PAID_STATUSES:
            if payments.apply_charge(charge, settings) == Outcome.APPLIED:
                report.heal("a paid charge applied", charge=charge.id, pay=pay.pay_id, amount=charge.amount)
            else:
                report.differ("a paid charge that could not be applied", charge=charge.id, pay=pay.pay_id)
        elif not charge.paid and pay.status in PAID_STATUSES:
            report.differ(
                "a pay payapi holds paid whose charge Ping++ says is unpaid", charge=charge.id, pay=pay.pay_id
            )
        _refunds(gateway, charge, pay, report)
    # Ours the other way round: pays of the day that are paid, but that Ping++ did not list.
    for pay in Pay.select().where(
        Pay.created_at >= start * 1000, Pay.created_at < end * 1000, Pay.status.in_(PAID_STATUSES)
    ):
        if pay.pay_id not in seen:
            report.differ("a paid pay whose charge Ping++ did not list", pay=pay.pay_id, charge=pay.charge_id)


def _refunds(gateway, charge, pay, report):
    listed = charge.raw.get("refunds") or {}
    made = [refund_from(raw) for raw in listed.get("data") or []]
    if listed.get("has_more"):
        made = gateway.list_refunds(charge.id)
    for refund in made:
        ours = Refund.get_or_none(Refund.pingpp_refund_id == refund.id)
        at_ping = RefundStatus.SUCCEEDED if refund.succeeded else refund.status  # pending, failed
        if ours is not None and ours.amount != refund.amount:
            report.differ(
                "a refund whose amount differs",
                refund=refund.id,
                pay=pay.pay_id,
                amount=refund.amount,
                ours=ours.amount,
            )
        elif at_ping in (RefundStatus.SUCCEEDED, RefundStatus.FAILED) and (
            ours is None or ours.status == RefundStatus.PENDING
        ):
            if refunds.apply_refund(refund) == Outcome.APPLIED:
                report.heal(f"a {at_ping} refund applied", refund=refund.id, pay=pay.pay_id, amount=refund.amount)
            else:
                report.differ("a refund that could not be applied", refund=refund.id, pay=pay.pay_id)
        elif ours is not None and at_ping in (RefundStatus.SUCCEEDED, RefundStatus.FAILED) and ours.status != at_ping:
            report.differ(
                "a refund whose status differs", refund=refund.id, pay=pay.pay_id, status=at_ping, ours=ours.status
            )
    listed_ids = {refund.id for refund in made}
    for ours in Refund.select().where(Refund.pay_id == pay.pay_id, Refund.pingpp_refund_id.is_null(False)):
        if ours.pingpp_refund_id not in listed_ids:
            report.differ("a refund Ping++ did not list", refund=ours.pingpp_refund_id, pay=pay.pay_id)


def _transfers(gateway, start, end, report):
    seen = set()
    for transfer in gateway.list_transfers(start, end):
        seen.add(transfer.order_no)
        withdrawal = Withdrawal.get_or_none(Withdrawal.withdraw_id == transfer.order_no)
        if withdrawal is None:
            report.differ(
                "a transfer payapi has no withdrawal for",
                transfer=transfer.id,
                order_no=transfer.order_no,
                amount=transfer.amount,
            )
            continue
        if transfer.amount != withdrawal.amount:
            report.differ(
                "a transfer that does not match its withdrawal",
                transfer=transfer.id,
                withdrawal=withdrawal.withdraw_id,
                amount=transfer.amount,
                ours=withdrawal.amount,
            )
            continue
        settled = TRANSFER_STATUS.get(transfer.status)
        if settled is not None and withdrawal.status in (WithdrawalStatus.PENDING, WithdrawalStatus.PROCESSING):
            if withdrawals.apply_transfer(transfer) == Outcome.APPLIED:
                report.heal(
                    f"a {transfer.status} transfer applied",
                    transfer=transfer.id,
                    withdrawal=withdrawal.withdraw_id,
                    amount=transfer.amount,
                )
            else:
                report.differ(
                    "a transfer that could not be applied", transfer=transfer.id, withdrawal=withdrawal.withdraw_id
                )
        elif settled is not None and settled != withdrawal.status:
            report.differ(
                "a transfer whose status differs",
                transfer=transfer.id,
                withdrawal=withdrawal.withdraw_id,
                status=transfer.status,
                ours=withdrawal.status,
            )
    # Transfers of the day as we recorded them (Ping++'s own `created`: a withdrawal made before
    # midnight may be paid out after it) that Ping++ did not list.
    candidates = Withdrawal.select().where(
        Withdrawal.transfer_id.is_null(False), Withdrawal.created_at < end * 1000, Withdrawal.updated_at >= start * 1000
    )
    for withdrawal in candidates:
        created = json.loads(withdrawal.transfer or "{}").get("created")
        if isinstance(created, int) and start <= created < end and withdrawal.withdraw_id not in seen:
            report.differ(
                "a withdrawal whose transfer Ping++ did not list",
                withdrawal=withdrawal.withdraw_id,
                transfer=withdrawal.transfer_id,
            )


def reconcile(settings, gateway, date):
    """Compare one day (a datetime.date in TIMEZONE) with Ping++, heal what can be healed, store the result."""
    start, end = day_bounds(date, settings.tz)
    report = Report()
    _charges(gateway, settings, start, end, report)
    _transfers(gateway, start, end, report)
    row = Reconciliation.create(
        reconciliation_id=new_id(),
        date=date.isoformat(),
        status=report.status,
        healed=json.dumps(report.healed, ensure_ascii=False),
        differences=json.dumps(report.differences, ensure_ascii=False),
        created_at=now_ms(),
    )
    log.info(
        "reconciliation of %s: %s",
        row.date,
        row.status,
        extra={
            "fields": {
                "date": row.date,
                "status": row.status,
                "healed": len(report.healed),
                "differences": len(report.differences),
            }
        },
    )
    return row


CLAIM_LEASE_MS = 60 * 60 * 1000  # a day's run that died is taken again by a worker after this
DAILY = "reconciliation"


@transaction
def claim_day(job, day):
    """Claim one day of a daily job for this process: True for exactly one of several racing
    workers (several hosts, one database). The claim is a row locked while it is decided; a run
    that died leaves it leased, and another worker takes it once the lease is over."""
    now = now_ms()
    row = lock_row(DailyClaim, {"lease_until": 0}, job=job, day=day)
    if row.done_at is not None or row.lease_until > now:
        return False
    DailyClaim.update(lease_until=now + CLAIM_LEASE_MS).where(DailyClaim.job == job, DailyClaim.day == day).execute()
    return True


@transaction
def _done(job, day):
    DailyClaim.update(done_at=now_ms()).where(DailyClaim.job == job, DailyClaim.day == day).execute()


def daily(settings, gateway):
    """The worker's daily run: yesterday, once across every worker and host."""
    day = yesterday(settings.tz).isoformat()
    if not claim_day(DAILY, day):
        return {"ran": 0}
    if Reconciliation.select().where(Reconciliation.date == day).exists():  # an operator ran it already
        _done(DAILY, day)
        return {"ran": 0}
    row = reconcile(settings, gateway, datetime.date.fromisoformat(day))
    _done(DAILY, day)
    return {"ran": 1, "status": row.status}
