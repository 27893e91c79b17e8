"""Ping++ webhook events: stored by id, applied once, however often and wherever they arrive."""

import functools
import json
import logging

import peewee

from payapi.domain.clock import now_ms
from payapi.domain.lifecycles import Outcome
from payapi.infra.db import RowByKey, insert_row, transaction
from payapi.infra.gateway import charge_from, refund_from, transfer_from
from payapi.infra.models import Event
from payapi.money import payments, refunds, withdrawals

log = logging.getLogger("payapi.events")


event_seen = RowByKey(Event, Event.event_id, columns=(Event.event_id,))  # not the payload


def _apply(event_type, obj, settings):
    if event_type == "charge.succeeded":
        return payments.apply_charge(charge_from(obj), settings)
    if event_type == "refund.succeeded":
        return refunds.apply_refund(refund_from(obj))
    if event_type in ("transfer.succeeded", "transfer.failed"):
        return withdrawals.apply_transfer_event(transfer_from(obj))
    return Outcome.IGNORED  # stored and acknowledged; Ping++ would retry a non-2xx forever


def _foreign(settings, event, event_type, obj):
    """Why an event is not for this configuration (another app, live vs test), or None."""
    if event.get("livemode") is not settings.pingpp_live:
        return "livemode"
    # Charges and transfers name their app; refunds carry none.
    if event_type.split(".")[0] in ("charge", "transfer") and obj.get("app") != settings.pingpp_app_id:
        return "app"
    return None


@transaction
def _store_and_apply(event_id, event_type, obj, raw, outcome, apply):
    # Applied, then stored with its outcome, in one transaction. A parallel delivery of the same
    # id applies nothing new (every apply is idempotent under its rows' locks: the worker's
    # look-ups apply the same objects without any event) and then fails on the event's key, which
    # rolls it back whole: it is a replay. (Stored first, the row had to be written twice.)
    if apply is not None:
        outcome = apply()
    insert_row(
        Event,
        {
            "event_id": event_id,
            "type": event_type[:64],
            "object_id": str(obj.get("id", ""))[:64],
            "outcome": outcome,
            "payload": raw,
            "received_at": now_ms(),
        },
    )
    return outcome


def _parse(raw):
    """-> (event dict or None, its id or None, its type or None): a signed body may still be anything."""
    try:
        event = json.loads(raw.decode("utf-8"), parse_constant=lambda name: None)
    except (UnicodeError, ValueError, RecursionError):
        return None, None, None
    if not isinstance(event, dict):
        return None, None, None
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
        event_id = None
    return event, event_id, event_type if isinstance(event_type, str) else None


def handle_event(settings, gateway, raw):
    """raw: a body whose signature verified. -> outcome (applied, ignored, mismatch, unknown, malformed, replay).

    Every event with a usable id is stored, once; only well-formed events for this app and mode
    are applied.
    """
    event, event_id, event_type = _parse(raw)
    data = event.get("data") if event is not None else None
    obj = data.get("object") if isinstance(data, dict) else None
    if event_id is None:
        log.warning("signed webhook without a usable event id; acknowledged, not stored")
        return Outcome.MALFORMED
    if event_seen(event_id) is not None:
        return Outcome.REPLAY
    text = raw.decode("utf-8", errors="replace")
    if event_type is None or not isinstance(obj, dict):
        outcome, apply = Outcome.MALFORMED, None
    elif (why := _foreign(settings, event, event_type, obj)) is not None:
        log.warning(
            "webhook event %s (%s) is for another %s; stored, not applied",
            event_id,
            event_type,
            why,
            extra={"fields": {"event_id": event_id, "foreign": why}},
        )
        outcome, apply = Outcome.MISMATCH, None
    else:
        if event_type == "refund.succeeded":
            payments.settle_charge_before_refund(gateway, refund_from(obj), settings)
        outcome, apply = None, functools.partial(_apply, event_type, obj, settings)
    try:
        outcome = _store_and_apply(
            event_id, event_type or "", obj if isinstance(obj, dict) else {}, text, outcome, apply
        )
    except peewee.IntegrityError:
        if Event.select().where(Event.event_id == event_id).exists():
            return Outcome.REPLAY
        raise  # not a duplicate delivery: answer 5xx so Ping++ delivers it again
    if outcome in (Outcome.MISMATCH, Outcome.UNKNOWN, Outcome.MALFORMED):
        log.warning(
            "webhook event %s (%s) stored but not applied: %s",
            event_id,
            event_type,
            outcome,
            extra={"fields": {"event_id": event_id, "outcome": outcome}},
        )
    return outcome
