"""Notifications to the order service: a transactional outbox delivered per Standard Webhooks.

A lifecycle move the order service must hear of (lifecycles: `announce`) writes its message here
when the moved record is saved with `save(record)`, in the same transaction as the change: every
pay, refund and withdrawal is saved that way (their own save() refuses). The worker's dispatcher
delivers each message: POST NOTIFY_URL with `webhook-id` (the same on every attempt),
`webhook-timestamp` and `webhook-signature` (`v1,` + base64 HMAC-SHA256 over
"{id}.{timestamp}.{body}" under the `whsec_` secret). Any non-2xx or a timeout is retried with
exponential back-off (5 s doubling, at most an hour apart) until 24 hours have passed; then the
message is `failed` and an operator may resend it. Delivery is at least once: several
dispatchers (processes, hosts) claim messages in the database, so each attempt is made by one.
"""

import base64
import concurrent.futures
import hashlib
import hmac
import logging
import threading
import time

import msgspec
import requests

from payapi.contract.render import pay_info, pay_info_json, refund_info, withdrawal_info
from payapi.contract.shapes import PayInfo, PayNotice, PayNoticeData, WithdrawalNotice, WithdrawalNoticeData
from payapi.domain.clock import iso, now_ms
from payapi.domain.ids import new_id
from payapi.domain.lifecycles import NOTIFICATION, NotificationStatus
from payapi.infra.db import db, transaction
from payapi.infra.models import INFO_COLUMNS, BaseModel, Notification, Pay, Refund, Withdrawal

log = logging.getLogger("payapi.notifications")

FIRST_RETRY_MS = 5_000
MAX_RETRY_MS = 3600_000
GIVE_UP_AFTER_MS = 24 * 3600_000
TIMEOUT_S = 5.0
LEASE_MS = 15_000  # longer than an attempt can take (5 s): a dispatcher that died mid-attempt frees it then


# Pay.update refuses a bulk change of these columns: they must be exactly what Pay.info is made of.
if INFO_COLUMNS != frozenset(PayInfo.__struct_fields__):
    raise ImportError(f"models.INFO_COLUMNS and shapes.PayInfo disagree: {sorted(INFO_COLUMNS ^ set(PayInfo.__struct_fields__))}")


# --- writing (inside the transaction of the change) ------------------------------------------------

def save(record, force_insert=False):
    """Save a pay, refund or withdrawal, in the caller's transaction: a pay's info (the wire JSON
    its readers answer with) follows its columns, and each move its lifecycle announced since the
    last save (lifecycles.Lifecycle.move) becomes an outbox message."""
    if isinstance(record, Pay):
        record.info = pay_info_json(record)
    saved = BaseModel.save(record, force_insert=force_insert)  # past SavedByOutbox's refusal
    announcements = record.__dict__.pop("announcements", None)
    if announcements:
        write(record, announcements)
    return saved


def _notice(record):
    """(the notice shape, its data) for a record."""
    if isinstance(record, Pay):
        return PayNotice, PayNoticeData(pay=pay_info(record))
    if isinstance(record, Refund):
        return PayNotice, PayNoticeData(pay=pay_info(Pay.get_by_id(record.pay_id)), refund=refund_info(record))
    if isinstance(record, Withdrawal):
        return WithdrawalNotice, WithdrawalNoticeData(withdrawal=withdrawal_info(record), user_id=record.user_id)
    raise TypeError(f"no notification for {type(record).__name__}")


def write(record, types):
    """Put one message per type into the outbox; the caller's transaction commits them with the change."""
    now = now_ms()
    notice, data = _notice(record)
    for notice_type in types:
        body = msgspec.json.encode(notice(type=notice_type, timestamp=iso(record.updated_at), data=data)).decode()
        message = Notification(
            message_id=f"msg_{new_id()}", type=notice_type, subject_id=record._pk, payload=body,
            give_up_at=now + GIVE_UP_AFTER_MS,
        )
        NOTIFICATION.begin(message, now)
        message.save(force_insert=True)


# --- signing ---------------------------------------------------------------------------------------

def secret_bytes(secret):
    """The key of a `whsec_<base64>` secret."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def signature(secret, message_id, timestamp, body):
    digest = hmac.new(secret_bytes(secret), f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# --- delivering --------------------------------------------------------------------------------------

@transaction
def _claim(message_id, now):
    """Take the message for one attempt; only one dispatcher anywhere makes it."""
    return (
        Notification.update(next_attempt_at=now + LEASE_MS)
        .where(Notification.message_id == message_id, Notification.status == NotificationStatus.PENDING,
               Notification.next_attempt_at <= now)
        .execute()
        == 1
    )


@transaction
def _settle(message_id, delivered, http_status, error):
    message = Notification.get_by_id(message_id)
    if message.status != NotificationStatus.PENDING:
        return message.status  # resent or settled meanwhile (an operator): leave it
    now = now_ms()
    message.attempts += 1
    message.last_status, message.last_error = http_status, (error or "")[:255]
    if delivered:
        message.delivered_at = now
        NOTIFICATION.move(message, NotificationStatus.DELIVERED, now)
    else:
        wait = min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** min(message.attempts - 1, 20))
        if now + wait > message.give_up_at:
            NOTIFICATION.move(message, NotificationStatus.FAILED, now)
        else:
            message.next_attempt_at = now + wait
            message.updated_at = now
    message.save()
    return message.status


def _send(session, url, secret, message):
    timestamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "webhook-id": message.message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature(secret, message.message_id, timestamp, message.payload),
    }
    try:
        answer = session.post(url, data=message.payload.encode(), headers=headers, timeout=TIMEOUT_S,
                              allow_redirects=False)
    except requests.RequestException as exc:
        return False, None, type(exc).__name__
    return 200 <= answer.status_code < 300, answer.status_code, "" if answer.ok else answer.text[:200]


def deliver(message_id, url, secret, session=None):
    """One attempt at one message, if this dispatcher can claim it; -> its status after, or None."""
    if not _claim(message_id, now_ms()):
        return None
    message = Notification.get_by_id(message_id)
    delivered, http_status, error = _send(session or requests, url, secret, message)
    status = _settle(message_id, delivered, http_status, error)
    fields = {"message_id": message_id, "type": message.type, "subject_id": message.subject_id,
              "http_status": http_status, "status": status}
    if delivered:
        log.info("notification delivered", extra={"fields": fields})
    else:
        log.warning("notification not delivered: %s", error, extra={"fields": fields})
    return status


def due(limit):
    return [
        message_id
        for (message_id,) in Notification.select(Notification.message_id)
        .where(Notification.status == NotificationStatus.PENDING, Notification.next_attempt_at <= now_ms())
        .order_by(Notification.next_attempt_at)
        .limit(limit)
        .tuples()
    ]


class Dispatcher:
    """Delivers due messages with a bounded pool, so a receiver that hangs cannot hold up the rest."""

    def __init__(self, url, secret, concurrency=8, poll_s=1.0):
        self.url, self.secret, self.poll_s = url, secret, poll_s
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="notify")
        self.concurrency = concurrency
        self.session = requests.Session()
        self.session.trust_env = False  # the order service is called directly, never through a proxy

    def run_once(self):
        """Send every message due now (at most a pool's worth at a time); -> how many were attempted."""
        futures = [self.pool.submit(self._attempt, message_id) for message_id in due(self.concurrency * 4)]
        return sum(1 for f in futures if f.result() is not None)

    def _attempt(self, message_id):
        # Each pool thread keeps its database connection from one attempt to the next: opening one
        # takes peewee's process-wide lock, which made the threads claim messages one at a time.
        try:
            return deliver(message_id, self.url, self.secret, self.session)
        except Exception:
            log.exception("notification %s: delivery raised", message_id, extra={"fields": {"message_id": message_id}})
            db.close()  # perhaps the connection is what broke: the next attempt opens a new one
            return None

    def run_forever(self, stop: threading.Event):
        while not stop.is_set():
            try:
                if not self.run_once():
                    stop.wait(self.poll_s)
            except Exception:
                log.exception("notification dispatcher pass failed")
                stop.wait(self.poll_s)
        self.close()

    def close(self):
        self.pool.shutdown(wait=True)
        self.session.close()


@transaction
def resend(message_id):
    """An operator sends a message again (a failed one, usually): new attempts for another 24 hours."""
    message = Notification.get_or_none(Notification.message_id == message_id)
    if message is None:
        return None
    now = now_ms()
    if message.status != NotificationStatus.PENDING:
        NOTIFICATION.move(message, NotificationStatus.PENDING, now)
    message.next_attempt_at, message.give_up_at = 0, now + GIVE_UP_AFTER_MS
    message.save()
    return message
