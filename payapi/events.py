"""Ping++ webhook events: stored by id, applied once, however often and wherever they arrive."""

import logging

import peewee

from . import payments, withdrawals
from .clock import now_ms
from .db import RowByKey, transaction
from .gateway import charge_from, transfer_from
from .models import Event

log = logging.getLogger(__name__)

REPLAY = "replay"

event_seen = RowByKey(Event, Event.event_id, columns=(Event.event_id,))  # not the payload


def _apply(event_type, obj, fee_bps):
    if event_type == "charge.succeeded":
        return payments.apply_charge(charge_from(obj), fee_bps)
    if event_type == "refund.succeeded":
        return payments.apply_refund(obj)
    if event_type == "transfer.succeeded":
        return withdrawals.apply_transfer(transfer_from(obj), withdrawals.SUCCEEDED)
    if event_type == "transfer.failed":
        return withdrawals.apply_transfer(transfer_from(obj), withdrawals.FAILED)
    return payments.IGNORED  # stored and acknowledged; Ping++ would retry a non-2xx forever


@transaction
def _store_and_apply(event_id, event_type, obj, raw, fee_bps):
    # The event row goes in first: a parallel delivery of the same id waits on its key and then
    # fails as a duplicate, after this transaction has committed or rolled back.
    event = Event.create(
        event_id=event_id,
        type=event_type[:64],
        object_id=str(obj.get("id", ""))[:64],
        outcome="",
        payload=raw,
        received_at=now_ms(),
    )
    event.outcome = _apply(event_type, obj, fee_bps)
    event.save()
    return event.outcome


def handle_event(event, raw, fee_bps, gateway):
    """event: the verified, parsed body. -> outcome (applied, ignored, mismatch, unknown, replay)."""
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64 or not isinstance(event_type, str):
        return None
    if not isinstance(obj, dict):
        obj = {}
    if event_seen(event_id) is not None:
        return REPLAY
    if event_type == "refund.succeeded":
        payments.settle_charge_before_refund(gateway, obj, fee_bps)
    try:
        outcome = _store_and_apply(event_id, event_type, obj, raw.decode("utf-8"), fee_bps)
    except peewee.IntegrityError:
        if Event.select().where(Event.event_id == event_id).exists():
            return REPLAY
        raise  # not a duplicate delivery: answer 5xx so Ping++ delivers it again
    if outcome in (payments.MISMATCH, payments.UNKNOWN):
        log.warning("webhook event %s (%s) stored but not applied: %s", event_id, event_type, outcome)
    return outcome
