"""Refunds: asked for by the order service, made for a duplicate payment, or made elsewhere (the
Ping++ dashboard) and learnt from Ping++'s event. Each is applied once, however it arrives.

A refund payapi asks for is first reserved (a row, so racing requests never ask for more than was
paid), then made at Ping++ (`Charge.refund`, our refund_id in its metadata), then accepted: the
expert's share is debited at once, so it cannot be withdrawn while Ping++ settles the refund.
Ping++ settling it (webhook or the worker's retrieve) moves the money out of `refunds`; Ping++
failing it gives the share back. A refund whose create answer was lost is found again by its
metadata. The books reference a refund by Ping++'s refund id; an unclear refund's share, taken
before Ping++'s id is known, by our refund_id.
"""

import json
import logging

from peewee import fn

from payapi.contract.errors import NOT_ALLOWED, NOT_FOUND, PROVIDER_FAILED, ApiError
from payapi.domain.clock import now_ms
from payapi.domain.ids import is_id, new_id
from payapi.domain.lifecycles import PAY, REFUND, Outcome, PayStatus, RefundStatus
from payapi.infra import jobs, outbox
from payapi.infra.db import Prepared, RowByKey, for_update, locked, row_of, transaction
from payapi.infra.gateway import GatewayError, RefundRequest, call_seconds
from payapi.infra.models import Pay, Refund
from payapi.money import wallet

log = logging.getLogger("payapi.refunds")

ORDER_SERVICE, DUPLICATE, PINGPP = "order_service", "duplicate", "pingpp"
DUPLICATE_REASON = "duplicate payment"
RECHECK_MS = 5 * 60 * 1000  # a refund Ping++ has not settled is asked about again after this


# Sums of a pay's refunds, the SQL built once (a refund request runs both).
_reserved_sum = Prepared(
    lambda pay_id: Refund.select(fn.COALESCE(fn.SUM(Refund.amount), 0)).where(
        Refund.pay_id == pay_id,
        Refund.status == RefundStatus.PENDING,
        Refund.pingpp_refund_id.is_null(),
        Refund.bucket == "",
    )
)
_succeeded_sum = Prepared(
    lambda pay_id, refund_id: Refund.select(fn.COALESCE(fn.SUM(Refund.amount), 0)).where(
        Refund.pay_id == pay_id, Refund.status == RefundStatus.SUCCEEDED, Refund.refund_id != refund_id
    )
)
_charge_of = RowByKey(Pay, Pay.pay_id, columns=(Pay.charge_id,))


def _reserved(pay_id):
    """Fen of refunds asked for that Ping++ has not yet accepted (no Ping++ id yet, no share taken:
    an unclear one's share is taken and stands in pay.amount_refunded)."""
    return int(_reserved_sum(pay_id).fetchone()[0])  # int(): MySQL sums as DECIMAL


def refundable(pay):
    return pay.money - pay.amount_refunded - _reserved(pay.pay_id)


# A request's longest path at Ping++: look its refund up (a keyed retry of an earlier attempt), create it,
# look it up again after an unclear answer. Its reservation is a lease for longer: the worker leaves it alone.
LONGEST_REQUEST_CALLS = 3
# The lease is written by the request's host and read by a worker's, whose clock may be ahead: a
# worker that judged a lease over while the create still ran would fail a refund Ping++ then makes.
# The margin covers a minute of clock skew between hosts (NTP keeps them far closer).
LEASE_MARGIN_S = 60


def lease_ms(gateway_timeout):
    """How long a request owns its reservation: longer than its longest path at Ping++."""
    return int((LONGEST_REQUEST_CALLS * call_seconds(gateway_timeout) + LEASE_MARGIN_S) * 1000)


@transaction
def _reserve(pay_id, amount, description, source, settle_after_ms, refund_id=None):
    pay = locked(Pay, pay_id)
    if pay is None:
        raise ApiError(NOT_FOUND, "支付记录不存在")
    if refund_id is not None:
        # A keyed request again after Ping++ was found to have made nothing under this id: try anew
        # (unless its share was booked and given back under this id: the books keep each once).
        Refund.delete().where(
            Refund.refund_id == refund_id,
            Refund.status == RefundStatus.FAILED,
            Refund.pingpp_refund_id.is_null(),
            Refund.bucket == "",
        ).execute()
        if Refund.select().where(Refund.refund_id == refund_id).exists():
            raise ApiError(NOT_ALLOWED, "该退款已失败，请用新的 Idempotency-Key 重新申请")
    if pay.status not in (PayStatus.PAID, PayStatus.REFUNDED):
        raise ApiError(NOT_ALLOWED, "该支付未完成，不能退款")
    left = refundable(pay)
    if left <= 0:
        raise ApiError(NOT_ALLOWED, "该支付已全额退款")
    amount = left if amount is None else amount
    if amount > left:
        raise ApiError(NOT_ALLOWED, f"退款金额超过可退金额 {left}")
    refund = Refund(
        refund_id=refund_id or new_id(),
        pay_id=pay_id,
        amount=amount,
        description=description,
        source=source,
        check_after=now_ms() + settle_after_ms,
    )
    REFUND.begin(refund, now_ms())
    outbox.save(refund, force_insert=True)
    return refund, pay.charge_id


@transaction
def _renew(refund_id, lease):
    """Take the lease of a reservation an earlier attempt of this request left; False if it is not
    one any more (accepted, or failed, meanwhile)."""
    mine = (Refund.refund_id == refund_id) & (Refund.status == RefundStatus.PENDING) & Refund.pingpp_refund_id.is_null()
    if for_update(Refund.select(Refund.refund_id).where(mine)).first() is None:
        return False
    # (MySQL counts changed rows, not matched ones: the lease may end when it already did.)
    Refund.update(check_after=now_ms() + lease).where(mine).execute()
    return True


@transaction
def _drop(refund_id):
    """Ping++ certainly did not make it: the reservation goes, nothing was debited. One whose share
    an earlier, unclear attempt took (and announced pending) fails instead: the share comes back."""
    refund = for_update(
        Refund.select().where(
            Refund.refund_id == refund_id, Refund.pingpp_refund_id.is_null(), Refund.status == RefundStatus.PENDING
        )
    ).first()
    if refund is not None and _share_taken(refund):
        _fail_unmade(refund)
    elif refund is not None:
        refund.delete_instance()


def _made_already(gateway, charge_id, refund_id):
    """Our refund as Ping++ knows it (found by its metadata), or None; GatewayError if Ping++ cannot say."""
    return next((r for r in gateway.list_refunds(charge_id) if r.metadata_refund_id == refund_id), None)


class _Unclear(Exception):
    """Ping++ may have made the refund, and cannot say now."""


class _Certain(Exception):
    """Ping++ certainly made nothing under this refund id."""


def request_refund(gateway, pay_id, amount, description, gateway_timeout, refund_id=None):
    """POST /internal/pays/{pay_id}/refunds: -> the Refund, accepted by Ping++ or (unclear) pending.

    refund_id: derived from the caller's Idempotency-Key when it sent one. A repeat of a request
    whose answer was lost then finds what its first attempt reserved or made, and asks Ping++ for
    the refund only if Ping++ has none with that id: a retried refund is never made twice.

    920 only when Ping++ certainly made nothing. When it may have (the create's answer was lost and
    Ping++ cannot be asked either), the reservation stays and the answer is the refund `pending`:
    the worker asks Ping++ once this request's lease is over.
    """
    lease = lease_ms(gateway_timeout)
    refund = Refund.get_or_none(Refund.refund_id == refund_id) if refund_id else None
    if refund is not None and refund.pingpp_refund_id is not None:
        return refund  # accepted by an earlier attempt whose answer never arrived
    fresh = refund is None or refund.status != RefundStatus.PENDING or not _renew(refund.refund_id, lease)
    if fresh and refund is not None:
        refund = Refund.get_or_none(Refund.refund_id == refund_id)  # accepted or failed meanwhile
        if refund is not None and refund.pingpp_refund_id is not None:
            return refund
    if fresh:
        refund, charge_id = _reserve(pay_id, amount, description, ORDER_SERVICE, lease, refund_id)
    else:
        charge_id = _charge_of(refund.pay_id).charge_id
    # Only while the lease surely outlasts the call may Ping++ be asked to make it (the worker,
    # once the lease is over, takes "not listed" for "never made").
    create_by = now_ms() + lease - int(call_seconds(gateway_timeout) * 1000)
    made, asked = None, False
    try:
        try:
            # Under a new reservation nothing was made yet (an id is freed only when Ping++ certainly
            # made nothing under it); under an earlier attempt's, Ping++ may hold it already.
            made = None if fresh else _made_already(gateway, charge_id, refund.refund_id)
            if made is None:
                if now_ms() > create_by:
                    raise (_Certain if fresh else _Unclear)("the look-up took the time the create needed")
                asked = True
                made = gateway.create_refund(
                    RefundRequest(refund.refund_id, charge_id, refund.amount, refund.description)
                )
        except GatewayError as failed:
            if not asked and fresh:
                raise _Certain(failed) from None  # nothing asked for under this new id
            if asked and failed.certain and fresh:
                raise _Certain(failed) from None  # Ping++ refused it
            # No answer does not mean nothing was made: ask whether it was, before saying 920.
            try:
                made = _made_already(gateway, charge_id, refund.refund_id)
            except GatewayError as unanswered:
                raise _Unclear(f"{failed}; then {unanswered}") from None
            if made is None:
                raise _Certain(failed) from None
    except _Certain as certain:
        log.warning(
            "refund %s of pay %s not made: %s",
            refund.refund_id,
            pay_id,
            certain,
            extra={"fields": {"refund_id": refund.refund_id, "pay_id": pay_id}},
        )
        _drop(refund.refund_id)
        raise ApiError(PROVIDER_FAILED) from None
    except _Unclear as unclear:
        log.warning(
            "refund %s of pay %s: Ping++ may have made it (%s); pending until it says",
            refund.refund_id,
            pay_id,
            unclear,
            extra={"fields": {"refund_id": refund.refund_id, "pay_id": pay_id}},
        )
        _hold_unclear(refund.refund_id, str(unclear))
        return Refund.get_by_id(refund.refund_id)
    _accept(refund.refund_id, made, reserved=refund)
    return row_of(Refund, refund.refund_id)


@transaction
def _hold_unclear(refund_id, error):
    """A refund Ping++ may have made: its share is taken now, as for an accepted one (booked under
    our refund_id, Ping++'s being unknown), so it cannot be withdrawn while the worker finds out."""
    refund = locked(Refund, refund_id)
    if refund is None or refund.status != RefundStatus.PENDING or refund.pingpp_refund_id is not None:
        return
    pay = locked(Pay, refund.pay_id, required=True)
    refund.attempts += 1
    refund.last_error = error[:255]
    if not _share_taken(refund):
        wallet.take_refund(refund, pay, settled=False)
        outbox.save(pay)
    outbox.save(refund)


def _share_taken(refund):
    return refund.bucket != ""  # take_refund sets it


@transaction
def _accept(refund_id, made, reserved=None):
    """Apply what Ping++ made for one of our refunds. reserved: the request's own reservation, which
    stands again if the worker dropped it as stale while Ping++ was making it."""
    refund = locked(Refund, refund_id)
    if refund is None and reserved is None:
        return Outcome.UNKNOWN
    if refund is None:
        log.warning(
            "refund %s: its reservation was dropped while Ping++ made it; booked again",
            refund_id,
            extra={"fields": {"refund_id": refund_id}},
        )
        refund = Refund(**reserved.__data__)
        outbox.save(refund, force_insert=True)
    pay = locked(Pay, refund.pay_id, required=True)
    return _apply(refund, pay, made)


def _apply(refund, pay, made):
    """What Ping++ says of one of our refunds (made: gateway.ProviderRefund), in the caller's transaction."""
    now = now_ms()
    if refund.status == RefundStatus.FAILED and refund.pingpp_refund_id is None:
        log.error("Ping++ made refund %s, which payapi holds failed (never made)", refund.refund_id)
        return Outcome.MISMATCH
    if made.amount != refund.amount or made.charge_id != pay.charge_id:
        log.error("Ping++ refund %s does not match refund %s", made.id, refund.refund_id)
        return Outcome.MISMATCH
    if refund.pingpp_refund_id is None:  # accepted: the share is taken now (if it was not while unclear)
        refund.pingpp_refund_id = made.id
        if not _share_taken(refund):
            wallet.take_refund(refund, pay, settled=False)
    elif refund.pingpp_refund_id != made.id:
        return Outcome.MISMATCH
    refund.refund = json.dumps(made.raw, ensure_ascii=False)
    outcome = Outcome.IGNORED
    if refund.status == RefundStatus.PENDING and made.status == "failed":
        wallet.give_refund_back(refund, pay)
        REFUND.move(refund, RefundStatus.FAILED, now)
        outcome = Outcome.APPLIED
    elif refund.status == RefundStatus.PENDING and made.succeeded:
        wallet.refund_settled(refund)
        REFUND.move(refund, RefundStatus.SUCCEEDED, now)
        outcome = Outcome.APPLIED
    refund.check_after = now + RECHECK_MS
    refund.updated_at = now
    _close_if_refunded(pay, refund, now)
    outbox.save(pay)
    outbox.save(refund)
    return outcome


def _close_if_refunded(pay, refund, now):
    succeeded = int(_succeeded_sum(pay.pay_id, refund.refund_id).fetchone()[0]) + (
        refund.amount if refund.status == RefundStatus.SUCCEEDED else 0
    )
    if succeeded >= pay.money and PAY.allows(pay, PayStatus.REFUNDED):
        PAY.move(pay, PayStatus.REFUNDED, now)


@transaction
def apply_refund(made):
    """A refund object from Ping++ (webhook or retrieve; gateway.ProviderRefund) -> Outcome. Idempotent."""
    if not made.id:
        return Outcome.MISMATCH
    pay = for_update(Pay.select().where(Pay.charge_id == made.charge_id)).first() if made.charge_id else None
    if pay is None:
        return Outcome.UNKNOWN
    if made.charge_order_no not in (None, pay.pay_id) or made.currency not in (None, pay.currency):
        return Outcome.MISMATCH
    ours = Refund.select().where(Refund.pingpp_refund_id == made.id)
    if made.metadata_refund_id:
        ours = Refund.select().where(
            (Refund.pingpp_refund_id == made.id)
            | ((Refund.refund_id == made.metadata_refund_id) & (Refund.pay_id == pay.pay_id))
        )
    refund = for_update(ours).first()
    if refund is not None:
        return _apply(refund, pay, made)
    return _made_elsewhere(pay, made)


def _made_elsewhere(pay, made):
    """A refund payapi has no row for: made on the Ping++ dashboard, or asked for by a request that
    never learnt Ping++ made it (920, its reservation dropped). Applied once it succeeded."""
    if not made.succeeded:
        return Outcome.IGNORED
    if (
        pay.status not in (PayStatus.PAID, PayStatus.REFUNDED)
        or made.amount <= 0
        or pay.amount_refunded + made.amount > pay.money
    ):
        log.warning("refund %s does not fit pay %s; not applied", made.id, pay.pay_id)
        return Outcome.MISMATCH
    now = now_ms()
    refund = Refund(
        refund_id=_id_of(made),
        pay_id=pay.pay_id,
        amount=made.amount,
        source=PINGPP,
        description=str(made.raw.get("description") or "")[:255],
        pingpp_refund_id=made.id,
        refund=json.dumps(made.raw, ensure_ascii=False),
    )
    REFUND.begin(refund, now)
    wallet.take_refund(refund, pay, settled=True)
    REFUND.move(refund, RefundStatus.SUCCEEDED, now)
    _close_if_refunded(pay, refund, now)
    pay.updated_at = now
    outbox.save(pay)
    outbox.save(refund, force_insert=True)
    return Outcome.APPLIED


def _id_of(made):
    """Our refund_id for a refund Ping++ made: the one its request asked with, while free (a retry of
    that request, which derives the same id from its Idempotency-Key, then finds it), else a new one."""
    ours = made.metadata_refund_id
    if ours and is_id(ours) and not Refund.select().where(Refund.refund_id == ours).exists():
        return ours
    return new_id()


# --- duplicate payments ----------------------------------------------------------------------------


def refund_duplicate(pay, now):
    """In the transaction that made pay paid while another pay of its order was already paid: a full
    refund of this one, made at Ping++ by the worker (never inside a transaction)."""
    refund = Refund(
        refund_id=new_id(),
        pay_id=pay.pay_id,
        amount=pay.money,
        description=DUPLICATE_REASON,
        source=DUPLICATE,
        check_after=0,
    )
    REFUND.begin(refund, now)
    outbox.save(refund, force_insert=True)
    log.warning(
        "pay %s paid an order that was already paid: refunding it in full",
        pay.pay_id,
        extra={"fields": {"pay_id": pay.pay_id, "refund_id": refund.refund_id}},
    )
    return refund


# --- the worker ----------------------------------------------------------------------------------------


def _check(gateway, refund_id):
    refund = Refund.get_or_none(Refund.refund_id == refund_id)
    if refund is None or refund.status != RefundStatus.PENDING:
        return None
    pay = Pay.get_by_id(refund.pay_id)
    try:
        if refund.pingpp_refund_id is not None:
            made = gateway.retrieve_refund(pay.charge_id, refund.pingpp_refund_id)
        else:
            # Ping++ may have made it and lost the answer: look for our id in the charge's refunds first.
            made = _made_already(gateway, pay.charge_id, refund_id)
            if made is None and refund.source == ORDER_SERVICE:
                # Its request's lease is over, so nothing can make it any more: certainly not made.
                return "not_made" if _not_made(refund_id, refund.check_after) else None
            if made is None:
                made = gateway.create_refund(RefundRequest(refund_id, pay.charge_id, refund.amount, refund.description))
    except GatewayError as exc:
        log.warning("refund %s: Ping++ did not answer: %s", refund_id, exc, extra={"fields": {"refund_id": refund_id}})
        _check_again(refund_id, now_ms() + jobs.backoff_ms(refund.attempts + 1), str(exc))
        return "failed"
    outcome = _accept(refund_id, made)
    if outcome != Outcome.APPLIED:
        _check_again(refund_id, now_ms() + RECHECK_MS)
    return "settled" if outcome == Outcome.APPLIED else None


@transaction
def _not_made(refund_id, lease_end):
    """An order service's refund Ping++ never made: `failed` (refund.failed is sent), its share
    given back, its amount refundable again. Not if a retry of its request took the lease meanwhile (lease_end changed)."""
    refund = for_update(
        Refund.select().where(
            Refund.refund_id == refund_id,
            Refund.status == RefundStatus.PENDING,
            Refund.pingpp_refund_id.is_null(),
            Refund.check_after == lease_end,
        )
    ).first()
    if refund is None:
        return False
    log.warning("refund %s: Ping++ never made it; failed", refund_id, extra={"fields": {"refund_id": refund_id}})
    _fail_unmade(refund)
    return True


def _fail_unmade(refund):
    """In the caller's transaction, the refund locked: `failed`, its share (if taken) given back."""
    if _share_taken(refund):
        pay = locked(Pay, refund.pay_id, required=True)
        wallet.give_refund_back(refund, pay)
        outbox.save(pay)
    REFUND.move(refund, RefundStatus.FAILED, now_ms())
    outbox.save(refund)


@transaction
def _check_again(refund_id, at_ms, error=None):
    """at_ms None: leave when it is due as it is."""
    changes = {Refund.check_after: at_ms} if at_ms is not None else {}
    if error is not None:
        changes.update({Refund.attempts: Refund.attempts + 1, Refund.last_error: error[:255]})
    Refund.update(changes).where(Refund.refund_id == refund_id).execute()


def reconcile_refunds(gateway, batch=50):
    """Make the duplicate-payment refunds, find lost answers, and ask Ping++ about refunds still pending."""
    due = [
        refund_id
        for (refund_id,) in Refund.select(Refund.refund_id)
        .where(Refund.status == RefundStatus.PENDING, Refund.check_after <= now_ms())
        .order_by(Refund.check_after)
        .limit(batch)
        .tuples()
    ]
    return jobs.run_pass(
        "refunds",
        due,
        lambda i: _check(gateway, i),
        lambda i: _check_again(i, now_ms() + jobs.backoff_ms(1)),
        {"settled": 0, "not_made": 0, "failed": 0},
    )


def refunds_of(pay_id):
    return list(Refund.select().where(Refund.pay_id == pay_id).order_by(Refund.created_at, Refund.refund_id))
