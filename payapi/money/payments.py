"""Pay records: creation with their Ping++ charge, the phone's reports, and applying Ping++'s truth."""

import dataclasses
import json
import logging
import time

import peewee
from peewee import fn

from payapi.contract.errors import NOT_ALLOWED, NOT_FOUND, PROVIDER_FAILED, ApiError
from payapi.domain.clock import now_ms
from payapi.domain.ids import new_id
from payapi.domain.lifecycles import PAY, AppReport, Outcome, PayStatus
from payapi.infra import jobs, outbox
from payapi.infra.db import KeyLock, Prepared, RowByKey, for_update, locked, row_of, transaction
from payapi.infra.gateway import ChargeRequest, GatewayError
from payapi.infra.models import PAY_HELD_UNTIL, ClientReport, OrderLock, Pay
from payapi.money import refunds, wallet

log = logging.getLogger("payapi.payments")

PENDING, PAID, CANCEL, FAIL, REFUNDED = (
    PayStatus.PENDING,
    PayStatus.PAID,
    PayStatus.CANCEL,
    PayStatus.FAIL,
    PayStatus.REFUNDED,
)
# What the phone's report does to a pending pay: "fail" leaves it pending (the user may try again).
CLOSED_BY_REPORT = {AppReport.CANCEL: PayStatus.CANCEL, AppReport.INVALID: PayStatus.FAIL}

RECONCILE_AFTER_MS = 10 * 60 * 1000
RECHECK_MS = 5 * 60 * 1000  # a pending pay Ping++ has not settled yet is asked about again after this
DEFAULT_EXPIRY_MS = 24 * 3600 * 1000  # when a charge carries no time_expire


@dataclasses.dataclass(frozen=True)
class PhoneHeaders:
    """The phone's own headers, kept with what it reported."""

    client_ip: str = ""
    platform: str = ""
    store: str = ""


# --- reading -------------------------------------------------------------------------------

# Reads take only the columns they answer with (see Pay.info).
# The payer's own pay, found by id and payer together: someone else's pay is as unknown as a
# missing one (911), and the answer is one column (PyMySQL spends ~25 us of CPU per column).
pay_info_by_id = RowByKey(Pay, Pay.pay_id, columns=(Pay.info,))
pay_order_by_id = RowByKey(Pay, Pay.pay_id, columns=(Pay.type, Pay.o_id, Pay.note_id))
payers_pay_info = RowByKey(Pay, Pay.pay_id, Pay.user_id, columns=(Pay.info,))
payers_pay_status = RowByKey(Pay, Pay.pay_id, Pay.user_id, columns=(Pay.status, Pay.client_status))


def _found(row):
    if row is None:
        raise ApiError(NOT_FOUND, "支付记录不存在")
    return row


def info_of(pay_id, user_id=None):
    """The pay's info JSON text; only its payer may read it unless user_id is None (the order service)."""
    return _found(pay_info_by_id(pay_id) if user_id is None else payers_pay_info(pay_id, user_id)).info


def status_of(pay_id, user_id):
    pay = _found(payers_pay_status(pay_id, user_id))
    return pay.status, pay.client_status


@transaction
def _move(pay_id, expected, to, **changes):
    """Move a pay still in expected to status to; False if it is no longer there or in expected."""
    pay = locked(Pay, pay_id)
    if pay is None or pay.status != expected:
        return False
    for field, value in changes.items():
        setattr(pay, field, value)
    PAY.move(pay, to, now_ms())
    outbox.save(pay)
    return True


# --- one order at a time ----------------------------------------------------------------------

_order_lock = KeyLock(OrderLock, OrderLock.order_key, OrderLock.locks)


def lock_order(pay_type, order_id):
    """Lock the order (or note) until the transaction ends, on every host.

    Making a pay, applying a payment and reopening a pay take it, always before any pay's row lock
    (one order of locks: no deadlock between them): "is the order paid?" and "has it a pending
    pay?" are then answered and acted on by one transaction at a time, so a paid order never gets
    a payable pay. What decides under it is read with locking reads, which read the latest rows
    and keep the ones they find; a missing row locks nothing (READ COMMITTED: db.READ_COMMITTED),
    and no other order's pay could take its place while the order lock is held.
    """
    _order_lock(f"{pay_type}:{order_id}")


def _order_key_of(pay):
    """The pay's order as lock_order and the order's queries name it: its o_id, or its note's note_id."""
    return pay.o_id if pay.type == "order" else pay.note_id


def _lock_order_of(pay):
    lock_order(pay.type, _order_key_of(pay))


def _announce_close(pay):
    """A pay closed for a replacement is closed for good now: the order service hears of it (once)
    when the caller saves it. -> whether there was anything to announce."""
    if pay.status != CANCEL or pay.closing_for is None:
        return False
    PAY.announce_now(pay, CANCEL)
    pay.closing_for = None
    return True


# --- creation ------------------------------------------------------------------------------


def _paid_query(by_order):
    key_column = Pay.o_id if by_order else Pay.note_id
    return Prepared(
        lambda pay_type, key: (
            Pay.select(Pay.info)
            .where(Pay.type == pay_type, key_column == key, Pay.status.in_((PAID, REFUNDED)))
            .limit(1)
        ),
        lock=True,
    )


# An order's paid pay's info, locked, by its o_id (True) or its note_id (False); the SQL built once.
_paid_locked = {by_order: _paid_query(by_order) for by_order in (True, False)}


def _refuse_if_paid(pay_type, order_id):
    """910 with the order's paid pay, if it has one (the order service may be retrying a call whose
    answer it lost: it gets the paid pay too). order_id: the order's o_id or note_id, by pay_type."""
    paid = _paid_locked[pay_type == "order"](pay_type, order_id).fetchone()
    if paid is not None:
        raise ApiError(NOT_ALLOWED, "该订单已支付", info=json.loads(paid[0]))


@transaction
def _reserve(new, stale_before):
    """-> ("existing", pay, None) | ("reserved", pay, replaced pay_id or None) | ("wait", None, None)."""
    lock_order(new.type, new.order_id)
    _refuse_if_paid(new.type, new.order_id)
    now = now_ms()
    pay_id = new_id()
    replaced = None
    current = locked(Pay, new.open_for, by=Pay.open_for)
    if current is not None:
        if current.charge_id is None:
            if current.created_at > stale_before:
                return "wait", None, None  # another request is creating it
            current.delete_instance()  # its creator died between reserving and charging
        elif (current.money, current.channel, current.user_id, current.expert_id) == (
            new.money,
            new.channel,
            new.user_id,
            new.expert_id,
        ):
            return "existing", current, None
        else:
            # Announced once the close is for good (the new pay has its charge, or the old charge
            # was closed at Ping++): a replacement Ping++ refuses reopens it.
            replaced = current.pay_id
            PAY.move(current, CANCEL, now, announce=False)
            current.closing_for = pay_id
            outbox.save(current)
    pay = Pay(
        pay_id=pay_id,
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
    outbox.save(pay, force_insert=True)
    return "reserved", pay, replaced


@transaction
def _attach_charge(reserved, charge, replaced):
    _lock_order_of(reserved)
    pay = locked(Pay, reserved.pay_id, required=True)
    _take_charge(pay, charge)
    pay.updated_at = now_ms()
    outbox.save(pay)
    old = locked(Pay, replaced) if replaced else None
    if old is not None and _announce_close(old):  # the replacement stands: the old pay is closed for good
        outbox.save(old)
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


@transaction
def _reopen(pay_id):
    """A failed replacement leaves the pay it was to close pending, as if nothing had happened,
    unless it was closed for good meanwhile: its charge closed at Ping++ (the worker's
    reversals), the order paid, or another pending pay made for it. Then it stays closed and the
    order service hears of the close now (its charge is closed by the worker if it is not yet)."""
    found = pay_order_by_id(pay_id) if pay_id is not None else None
    if found is None:
        return
    _lock_order_of(found)
    pay = locked(Pay, pay_id)
    if pay is None or pay.status != CANCEL:
        return
    order = Pay.type == pay.type, _order_filter_of(pay)
    taken = for_update(Pay.select(Pay.pay_id).where(*order, Pay.status.in_((PENDING, PAID, REFUNDED)))).first()
    if pay.reversed_at is not None or taken is not None:
        if _announce_close(pay):
            outbox.save(pay)
        return
    PAY.move(pay, PENDING, now_ms())
    outbox.save(pay)


def create_pay(gateway, settings, new):
    """One pending pay (and one Ping++ charge) per order/note, money and channel, even when calls race.

    new: a shapes.NewPay. A pending pay it replaces (other money or channel) is closed, and so is
    its charge at Ping++.
    """
    gateway_timeout = settings.pingpp_timeout
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
        return _give_up(pay, replaced)
    if charge.order_no != pay.pay_id or charge.amount != new.money or not charge.id:
        log.error("Ping++ answered charge creation for %s with a different charge", pay.pay_id)
        return _give_up(pay, replaced)
    _attach_charge(pay, charge, replaced)
    if replaced is not None:
        reverse_charge(gateway, settings, replaced)  # best effort now; the worker retries
    return _unless_paid_meanwhile(gateway, settings, pay.pay_id)


def _unless_paid_meanwhile(gateway, settings, pay_id):
    """The new pay, unless another pay of its order turned out paid while it was being made (the
    pay it replaced, found paid when its charge was closed, or any older one whose webhook came):
    applying that closed the new pay, so its charge is closed too and the caller gets 910 with
    the paid pay, as a call made a moment later would."""
    pay = row_of(Pay, pay_id)
    if pay.status == CANCEL:
        reverse_charge(gateway, settings, pay_id)
        _refuse_if_paid(pay.type, _order_key_of(pay))
    return pay


def _give_up(reserved, replaced):
    """No usable answer from Ping++: remove the reservation, unless Ping++ reported it paid meanwhile."""
    paid = _undo_reservation(reserved, replaced)
    if paid is not None:
        return paid  # the charge was made and paid; its answer was lost, its webhook was not
    raise ApiError(PROVIDER_FAILED)


@transaction
def _undo_reservation(reserved, replaced):
    """Remove the reservation and reopen the pay it was to replace, in one transaction under the
    order's lock (no other request makes a pay for the order in between). -> the reserved pay if
    Ping++ reported it paid meanwhile (then the pay it replaced stays closed), else None."""
    _lock_order_of(reserved)
    paid = None
    if not _release(reserved.pay_id):
        pay = locked(Pay, reserved.pay_id)
        paid = pay if pay is not None and pay.status in (PAID, REFUNDED) else None
    _reopen(replaced)
    return paid


# --- applying Ping++'s truth -----------------------------------------------------------------


@transaction
def apply_charge(charge, settings):
    """Apply a charge object (from a webhook or a retrieve). Idempotent; -> Outcome."""
    found = pay_order_by_id(charge.order_no)
    if found is None:
        return Outcome.UNKNOWN
    _lock_order_of(found)  # before the pay's lock, as creation takes them
    pay = locked(Pay, charge.order_no)
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
        outbox.save(pay)
        return Outcome.IGNORED
    PAY.move(pay, PAID, now)
    wallet.pay_paid(pay, settings.platform_fee_bps, settings.settlement_hold_seconds * 1000, now)
    outbox.save(pay)
    # The order's other pending or paid pays, locked (one statement; usually none).
    others = _others_locked[pay.type == "order"](pay.type, _order_key_of(pay), pay.pay_id)
    others = others.fetchall()
    # A pay closed by a newer one may turn out paid after all: then the order is paid, and the
    # newer pending pay must not take the user's money a second time.
    for pay_id, status in others:
        if status == PENDING:
            newer = locked(Pay, pay_id, required=True)
            PAY.move(newer, CANCEL, now)
            outbox.save(newer)
    # Two paid pays for one order (a closed charge paid before Ping++ closed it): the user pays once.
    if any(status in (PAID, REFUNDED) for _, status in others):
        refunds.refund_duplicate(pay, now)
    return Outcome.APPLIED


# An applied charge's order's other pays that matter (pending: cancelled; paid: refunded), locked,
# by its o_id (type "order", True) or its note_id (False); the SQL text built once.
def _others_query(by_order):
    key_column = Pay.o_id if by_order else Pay.note_id
    return Prepared(
        lambda pay_type, key, pay_id: Pay.select(Pay.pay_id, Pay.status).where(
            Pay.type == pay_type, key_column == key, Pay.pay_id != pay_id, Pay.status.in_((PENDING, PAID, REFUNDED))
        ),
        lock=True,
    )


_others_locked = {by_order: _others_query(by_order) for by_order in (True, False)}


def _order_filter_of(pay):
    return Pay.o_id == pay.o_id if pay.type == "order" else Pay.note_id == pay.note_id


def settle_charge_before_refund(gateway, refund, settings):
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
    apply_charge(charge, settings)


# --- the phone's reports -------------------------------------------------------------------

# A phone's "success" asks Ping++ about the charge at most once per pay in this time, and never
# while another retrieve for the pay may still be in flight: a phone (or a script with its
# token) repeating "success" must not turn into a stream of Charge.retrieve on the merchant key.
RETRIEVE_INTERVAL_MS = 5_000
# A report identical to the pay's latest row (status and headers) within this time of that
# row's last report is counted in it (times, last_at) instead of adding a row.
REPORT_REPEAT_MS = 60_000
# Beyond this many rows for a pay within an hour, a report is counted in the pay's latest row of
# the same status (its headers are not kept); only a status not reported before gets a row.
REPORT_ROWS_PER_HOUR = 20


def _store_report(user_id, pay_id, report, headers, now):
    """Keep the report; repeated reports are counted in an existing row, not stored without bound."""
    reports = ClientReport.select().where(ClientReport.pay_id == pay_id)
    latest = reports.order_by(ClientReport.id.desc()).first()
    seen = (report, headers.client_ip, headers.platform, headers.store)
    row = None
    if (
        latest is not None
        and now - latest.last_at < REPORT_REPEAT_MS
        and seen == (latest.status, latest.client_ip, latest.platform, latest.store)
    ):
        row = latest
    elif reports.where(ClientReport.created_at > now - 3600_000).count() >= REPORT_ROWS_PER_HOUR:
        row = reports.where(ClientReport.status == report).order_by(ClientReport.id.desc()).first()
    if row is None:
        ClientReport.create(
            pay_id=pay_id,
            user_id=user_id,
            status=report,
            created_at=now,
            last_at=now,
            client_ip=headers.client_ip,
            platform=headers.platform,
            store=headers.store,
        )
    else:
        ClientReport.update(times=ClientReport.times + 1, last_at=now).where(ClientReport.id == row.id).execute()


@transaction
def _record_report(user_id, pay_id, report, headers, retrieve_hold_ms):
    """-> (pay, None or until when this report holds the pay's retrieve claim)."""
    pay = locked(Pay, pay_id)
    if pay is None or pay.user_id != user_id:
        raise ApiError(NOT_FOUND, "支付记录不存在")
    now = now_ms()
    _store_report(user_id, pay_id, report, headers, now)
    pay.client_status = report
    pay.updated_at = now
    if pay.status == PENDING and report in CLOSED_BY_REPORT:
        PAY.move(pay, CLOSED_BY_REPORT[report], now)
    claimed = None
    if report == AppReport.SUCCESS and pay.charge_id and PAY.allows(pay, PAID) and pay.retrieve_after <= now:
        # Claimed under the pay's row lock: no other report (worker, host) asks until then.
        claimed = pay.retrieve_after = now + retrieve_hold_ms
    outbox.save(pay)
    return pay, claimed


def _release_retrieve(pay_id, claimed):
    """The retrieve is over: the next one may come RETRIEVE_INTERVAL_MS from now, not from the claim's end."""
    Pay.update(retrieve_after=now_ms() + RETRIEVE_INTERVAL_MS).where(
        Pay.pay_id == pay_id, Pay.retrieve_after == claimed
    ).execute()


def report_client_status(gateway, settings, user_id, pay_id, report, headers):
    """Record what the phone saw; on "success" ask Ping++ and apply its answer, never the phone's."""
    # A retrieve takes at most a connect and a read timeout; the claim outlasts it.
    hold_ms = int(2 * settings.pingpp_timeout * 1000) + RETRIEVE_INTERVAL_MS
    pay, claimed = _record_report(user_id, pay_id, report, headers, hold_ms)
    if report in CLOSED_BY_REPORT and pay.status in (CANCEL, FAIL):
        reverse_charge(gateway, settings, pay.pay_id)  # best effort now; the worker retries
    if claimed is None:
        return
    try:
        charge = gateway.retrieve_charge(pay.charge_id)
    except GatewayError:
        return  # recorded; the webhook, the worker or a later report settles it
    finally:
        _release_retrieve(pay_id, claimed)
    apply_charge(charge, settings)


# --- the worker's reconciliation ---------------------------------------------------------------

# The worker's first look at a pay, before it asks Ping++: the few columns that decide whether to
# ask, the SQL text built once (a pass reads a hundred pays; the whole row, its charge JSON and
# twenty-seven columns, cost MariaDB ~1.5 ms each on a busy machine). What it then decides is
# decided again on the row, locked (_move, apply_charge, _mark_reversed).
pay_to_check = RowByKey(Pay, Pay.pay_id, columns=(Pay.status, Pay.charge_id, Pay.created_at))
pay_to_reverse = RowByKey(Pay, Pay.pay_id, columns=(Pay.status, Pay.charge_id, Pay.created_at, Pay.reversed_at))


def _check_pay(gateway, settings, pay_id):
    pay = pay_to_check(pay_id)
    if pay is None or pay.status != PENDING:
        return None
    if pay.charge_id is None:
        _release(pay_id)  # its creator died between reserving and charging
        return None
    try:
        charge = gateway.retrieve_charge(pay.charge_id)
    except GatewayError as exc:
        log.warning(
            "pay %s: charge %s not retrieved: %s",
            pay_id,
            pay.charge_id,
            exc,
            extra={"fields": {"pay_id": pay_id, "charge_id": pay.charge_id}},
        )
        return "failed"
    now = now_ms()
    if charge.paid:
        return "paid" if apply_charge(charge, settings) == Outcome.APPLIED else None
    if _expires_at(pay, charge) <= now or charge.reversed:
        # Expired, or closed at Ping++ already: it can no longer be paid (a fact that stays true
        # however late it is closed). Closed with the pass's other such pays (reconcile_pays).
        return EXPIRED
    _check_again(pay_id, min(_expires_at(pay, charge), now + RECHECK_MS))
    return None


EXPIRED = "expired"

# A pass closes its expired pays CLOSE_BATCH to a transaction, and marks their charges' reversals
# likewise: a backlog of stale pays costs a few COMMITs a pass instead of two a pay. A durable
# COMMIT waits for the disk (1-10 ms on MariaDB on a busy machine: most of such a pass's database
# time, docs/performance.md). A transaction of 25 lasts milliseconds: the pays' row locks (MySQL)
# and SQLite's write lock are held no longer than the web's own writes hold them.
CLOSE_BATCH = 25


@transaction
def _close_expired(pay_ids):
    """-> the pays of pay_ids closed now (those still pending under their lock)."""
    return [pay_id for pay_id in pay_ids if _move(pay_id, PENDING, CANCEL)]


@transaction
def _mark_all_reversed(pay_ids):
    for pay_id in pay_ids:
        _mark_reversed(pay_id)
    return pay_ids


def _in_batches(name, ids, together, alone, counts):
    """together(chunk) -> the ids it did, one transaction per CLOSE_BATCH ids; -> every id done. A
    chunk whose transaction fails is done again id by id (alone(id) -> whether it did it), so a bad
    pay is counted failed and set aside as jobs.run_pass does, and holds no other back."""
    done = []
    for first in range(0, len(ids), CLOSE_BATCH):
        chunk = ids[first : first + CLOSE_BATCH]
        try:
            done.extend(together(chunk))
        except Exception as exc:
            log.warning("%s: %d together failed (%s); one by one", name, len(chunk), exc)
            jobs.run_pass(name, chunk, lambda i: done.append(i) if alone(i) else None, _set_aside, counts)
    return done


def _expires_at(pay, charge):
    return charge.time_expire * 1000 if charge.time_expire else pay.created_at + DEFAULT_EXPIRY_MS


_set_check_after = Prepared(lambda at_ms, pay_id: Pay.update(check_after=at_ms).where(Pay.pay_id == pay_id))


@transaction
def _check_again(pay_id, at_ms):
    _set_check_after(at_ms, pay_id)


def _set_aside(pay_id):
    _check_again(pay_id, now_ms() + jobs.backoff_ms(1))


def pays_to_check(now, batch):
    """The pending pays due to be asked about, in the order they are asked: the index (status,
    check_after, created_at) answers it alone and stops after batch, however many are due."""
    return (
        Pay.select(Pay.pay_id)
        .where(Pay.status == PENDING, Pay.created_at < now - RECONCILE_AFTER_MS, Pay.check_after <= now)
        .order_by(Pay.check_after, Pay.created_at)
        .limit(batch)
    )


def reconcile_pays(gateway, settings, batch=100):
    """Ask Ping++ about pending pays older than a few minutes; close expired unpaid ones as cancel
    (CLOSE_BATCH to a transaction), then their charges at Ping++.

    Every step is idempotent, so several workers may run it at once.
    """
    due = [pay_id for (pay_id,) in pays_to_check(now_ms(), batch).tuples()]
    counts, expired = {"paid": 0, "closed": 0, "failed": 0}, []

    def check(pay_id):
        outcome = _check_pay(gateway, settings, pay_id)
        if outcome == EXPIRED:
            expired.append(pay_id)
            return None
        return outcome

    jobs.run_pass("pays", due, check, _set_aside, counts)
    closed = _in_batches("pays", expired, _close_expired, lambda i: _move(i, PENDING, CANCEL), counts)
    counts["closed"] += len(closed)
    confirmed = []  # closed at Ping++ too: marked together

    def reverse(pay_id):
        if _reverse_at_pingpp(gateway, settings, pay_id) == "reversed":
            confirmed.append(pay_id)

    jobs.run_pass("pays", closed, reverse, _set_aside, counts)
    _in_batches("pays", confirmed, _mark_all_reversed, lambda i: _mark_reversed(i) or True, counts)
    return counts


# --- closing charges at Ping++ ---------------------------------------------------------------------


def reverse_charge(gateway, settings, pay_id):
    """A pay payapi closed must not stay payable: close its charge at Ping++ (Charge.reverse).

    Ping++ stays the truth: if the charge turns out paid, the pay becomes paid. -> "reversed",
    "paid", "failed" (Ping++ did not confirm: the worker tries again later) or None (nothing to do).
    """
    outcome = _reverse_at_pingpp(gateway, settings, pay_id)
    if outcome == "reversed":
        _mark_reversed(pay_id)
    return outcome


def _reverse_at_pingpp(gateway, settings, pay_id):
    """reverse_charge's talk with Ping++, the pay not yet marked reversed when Ping++ confirms (the
    worker's pass marks its pays together: _mark_all_reversed); until it is, reverse_closed_pays
    would find it."""
    pay = pay_to_reverse(pay_id)
    if pay is None or pay.status not in (CANCEL, FAIL) or pay.charge_id is None or pay.reversed_at is not None:
        return None
    try:
        charge = gateway.reverse_charge(pay.charge_id)
    except GatewayError as refused:
        # Refused (paid meanwhile, already expired) or unreachable: Ping++'s charge says which.
        try:
            charge = gateway.retrieve_charge(pay.charge_id)
        except GatewayError:
            charge = None
        if charge is None or not (charge.paid or charge.reversed or _expires_at(pay, charge) <= now_ms()):
            log.warning(
                "pay %s: charge %s not reversed: %s",
                pay_id,
                pay.charge_id,
                refused,
                extra={"fields": {"pay_id": pay_id, "charge_id": pay.charge_id}},
            )
            _check_again(pay_id, now_ms() + jobs.backoff_ms(1))
            return "failed"
    if charge.paid:
        apply_charge(charge, settings)
        return "paid"
    return "reversed"


@transaction
def _mark_reversed(pay_id):
    """Ping++ closed the charge: the pay is closed for good. One closed for a replacement that never
    got its charge (its request died, or Ping++ refused it) is announced now, if it was not yet."""
    pay = locked(Pay, pay_id)
    if pay is None:
        return
    pay.reversed_at = now_ms()
    _announce_close(pay)
    outbox.save(pay)


def pays_to_reverse(now, batch):
    """The closed pays whose charge Ping++ has not confirmed closed, due now: the index (status,
    reversed_at, check_after) finds them among every closed pay there ever was."""
    return (
        Pay.select(Pay.pay_id)
        .where(
            Pay.status.in_((CANCEL, FAIL)),
            Pay.charge_id.is_null(False),
            Pay.reversed_at.is_null(),
            Pay.check_after <= now,
        )
        .order_by(Pay.check_after, Pay.updated_at)
        .limit(batch)
    )


def reverse_closed_pays(gateway, settings, batch=100):
    """Close at Ping++ the charges of pays payapi closed, until Ping++ confirms each."""
    due = [pay_id for (pay_id,) in pays_to_reverse(now_ms(), batch).tuples()]
    return jobs.run_pass(
        "reversals",
        due,
        lambda i: reverse_charge(gateway, settings, i),
        _set_aside,
        {"reversed": 0, "paid": 0, "failed": 0},
    )


# --- the settlement hold ----------------------------------------------------------------------------


def next_release_query(expert_id):
    """The balance read asks this too (withdrawals.balance_info, built from this query): held_until
    is release_at while some of the pay's credit is held, else NULL, and the index (expert_id,
    held_until) answers the MIN with one look at the expert's first held pay."""
    return Pay.select(fn.MIN(PAY_HELD_UNTIL)).where(Pay.expert_id == expert_id)


def next_release(expert_id):
    """When the expert's next held credit becomes available (ms), or None."""
    return next_release_query(expert_id).scalar()


@transaction
def _release_hold(pay_id):
    pay = locked(Pay, pay_id)
    if pay is None or pay.held <= 0 or pay.release_at > now_ms():
        return None
    wallet.release_hold(pay)
    outbox.save(pay)
    return "released"


def release_holds(batch=500):
    """Credits whose settlement hold is over become available."""
    due = [
        pay_id
        for (pay_id,) in Pay.select(Pay.pay_id)
        .where(Pay.held > 0, Pay.release_at <= now_ms())
        .order_by(Pay.release_at)
        .limit(batch)
        .tuples()
    ]
    return jobs.run_pass("holds", due, _release_hold, lambda i: None, {"released": 0, "failed": 0})
