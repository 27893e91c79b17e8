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
import binascii
import collections
import concurrent.futures
import functools
import hashlib
import heapq
import hmac
import http.client
import itertools
import logging
import os
import socket
import ssl
import threading
import time
import urllib.parse

import certifi
import msgspec

from payapi.contract.render import pay_info, pay_info_json, refund_info, withdrawal_info
from payapi.contract.shapes import PayInfo, PayNotice, PayNoticeData, WithdrawalNotice, WithdrawalNoticeData
from payapi.domain.clock import iso, now_ms
from payapi.domain.ids import new_id
from payapi.domain.lifecycles import NOTIFICATION, NotificationStatus
from payapi.infra.db import Prepared, db, locked, single_statement, transaction
from payapi.infra.models import INFO_COLUMNS, BaseModel, Notification, Pay, Refund, Withdrawal

log = logging.getLogger("payapi.notifications")

FIRST_RETRY_MS = 5_000
MAX_RETRY_MS = 3600_000
GIVE_UP_AFTER_MS = 24 * 3600_000
TIMEOUT_S = 5.0  # the whole attempt: connecting, sending, the answer's head and what is read of its body
ANSWER_BYTES = 4096  # at most this much of an answer is read (its start is logged when it is not a 2xx)
LEASE_MS = 15_000  # longer than an attempt can take (5 s): a dispatcher that died mid-attempt frees it then


# Pay.update refuses a bulk change of these columns: they must be exactly what Pay.info is made of.
if INFO_COLUMNS != frozenset(PayInfo.__struct_fields__):
    raise ImportError(
        f"models.INFO_COLUMNS and shapes.PayInfo disagree: {sorted(INFO_COLUMNS ^ set(PayInfo.__struct_fields__))}"
    )


# --- writing (inside the transaction of the change) ------------------------------------------------

_writing = False  # this process has a NOTIFY_URL (configure)


def configure(settings):
    """Write messages only when NOTIFY_URL is set: with none, nothing would ever send them (they
    would only sit in the outbox, counted `pending` by /metrics). Each process that changes
    records sets this from its settings (create_app, the worker, the commands)."""
    global _writing
    _writing = bool(settings.notify_url)


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
    if not _writing:
        return
    now = now_ms()
    notice, data = _notice(record)
    for notice_type in types:
        body = msgspec.json.encode(notice(type=notice_type, timestamp=iso(record.updated_at), data=data)).decode()
        message = Notification(
            message_id=f"msg_{new_id()}",
            type=notice_type,
            subject_id=record._pk,
            payload=body,
            give_up_at=now + GIVE_UP_AFTER_MS,
        )
        NOTIFICATION.begin(message, now)
        message.save(force_insert=True)


# --- signing ---------------------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64


@functools.lru_cache(maxsize=4)
def secret_bytes(secret):
    """The key of a `whsec_<base64>` secret; ValueError (never quoting it) if it is not one. Decoded
    once: every message is checked and signed with it (a ValueError is not kept: asked again)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("NOTIFY_SECRET is not whsec_<base64>")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("NOTIFY_SECRET: what follows whsec_ is not standard base64") from None


def secret_problem(secret):
    """Why a NOTIFY_SECRET is not safe to sign with (start-up's check), or None. An empty or short
    key signs, but anyone could forge (or guess the key of) messages to the order service."""
    try:
        key = secret_bytes(secret)
    except ValueError as exc:
        return str(exc)
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return f"NOTIFY_SECRET: its key is {len(key)} bytes, not {MIN_KEY_BYTES}-{MAX_KEY_BYTES}"
    return None


def signature(secret, message_id, timestamp, body):
    digest = hmac.new(secret_bytes(secret), f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# --- delivering --------------------------------------------------------------------------------------


# The dispatcher's statements, their SQL text built once (db.Prepared, db.locked). Per delivered
# message: the claim and the settlement, one statement each, each its own transaction; what is sent
# (the payload, never changed once written) comes with the list of due messages.
_claiming = Prepared(
    lambda message_id, now, until: Notification.update(next_attempt_at=until).where(
        Notification.message_id == message_id,
        Notification.status == NotificationStatus.PENDING,
        Notification.next_attempt_at <= now,
    )
)
_due = Prepared(
    lambda now, limit: (
        Notification.select(Notification.message_id, Notification.type, Notification.subject_id, Notification.payload)
        .where(Notification.status == NotificationStatus.PENDING, Notification.next_attempt_at <= now)
        .order_by(Notification.next_attempt_at)
        .limit(limit)
    )
)
DueMessage = collections.namedtuple("DueMessage", "message_id type subject_id payload")

if NotificationStatus.DELIVERED not in NOTIFICATION.moves[NotificationStatus.PENDING]:
    raise ImportError("_delivering moves a notification from pending to delivered: lifecycles must allow it")
_delivering = Prepared(
    lambda message_id, http_status, now: Notification.update(
        status=NotificationStatus.DELIVERED,
        attempts=Notification.attempts + 1,
        last_status=http_status,
        last_error="",
        delivered_at=now,
        updated_at=now,
    ).where(Notification.message_id == message_id, Notification.status == NotificationStatus.PENDING)
)
_status = Prepared(
    lambda message_id: Notification.select(Notification.status).where(Notification.message_id == message_id)
)


@single_statement
def _claim(message_id, now):
    """Take the message for one attempt; only one dispatcher anywhere makes it."""
    return _claiming(message_id, now, now + LEASE_MS).rowcount == 1


@single_statement
def _settle_delivered(message_id, http_status):
    """pending -> delivered (NOTIFICATION's move, checked above) in one statement; -> the status after."""
    if _delivering(message_id, http_status, now_ms()).rowcount == 1:
        return NotificationStatus.DELIVERED
    (status,) = _status(message_id).fetchone()  # resent or settled meanwhile (an operator): left as it is
    return status


@transaction
def _settle_failed(message_id, http_status, error):
    message = locked(Notification, message_id, required=True)
    if message.status != NotificationStatus.PENDING:
        return message.status  # resent or settled meanwhile (an operator): leave it
    now = now_ms()
    message.attempts += 1
    message.last_status, message.last_error = http_status, (error or "")[:255]
    wait = min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** min(message.attempts - 1, 20))
    if now + wait > message.give_up_at:
        NOTIFICATION.move(message, NotificationStatus.FAILED, now)
    else:
        message.next_attempt_at = now + wait
        message.updated_at = now
    message.save()
    return message.status


@functools.cache
def _tls():
    return ssl.create_default_context(cafile=certifi.where())  # the CAs requests would trust


class _Deadline:
    """Shuts the attempt's socket when the time is up, ending whatever it is blocked in."""

    def __init__(self, seconds):
        self.lock, self.sock, self.expired, self.cancelled = threading.Lock(), None, False, False
        _WATCHDOG.add(time.monotonic() + seconds, self)

    def watch(self, sock):
        with self.lock:
            if self.expired:  # connected only as the time ran out
                raise TimeoutError
            self.sock = sock  # held here: http.client lets go of it once an answer says it will close

    def cut(self):
        with self.lock:
            if self.cancelled:
                return
            self.expired = True
            if self.sock is not None:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cancel(self):
        with self.lock:
            self.cancelled = True


class _Watchdog:
    """One thread that cuts every attempt whose deadline has passed. A timer thread per attempt
    (threading.Timer) cost a thread's start and stop each time, about a seventh of the dispatcher's
    CPU. A cancelled deadline is dropped when its time comes."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.deadlines: list[tuple[float, int, _Deadline]] = []  # a heap: (when, order, deadline)
        self.order = itertools.count()
        self.thread: threading.Thread | None = None

    def add(self, when, deadline):
        with self.condition:
            heapq.heappush(self.deadlines, (when, next(self.order), deadline))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="notify-deadlines", daemon=True)
                self.thread.start()
            if self.deadlines[0][2] is deadline:  # sooner than the one the thread sleeps for
                self.condition.notify()

    def _run(self):
        while True:
            with self.condition:
                while not self.deadlines or self.deadlines[0][0] > time.monotonic():
                    self.condition.wait(self.deadlines[0][0] - time.monotonic() if self.deadlines else None)
                _, _, deadline = heapq.heappop(self.deadlines)
            deadline.cut()


_WATCHDOG = _Watchdog()


def _forget_watchdog():
    global _WATCHDOG
    _WATCHDOG = _Watchdog()  # a forked child has none of its parent's threads, and perhaps a held lock


os.register_at_fork(after_in_child=_forget_watchdog)


class _Kept:
    """A dispatcher thread's connection to the order service, left open for the thread's next
    message to the same (scheme, host, port): a new connection per message cost a TCP handshake
    (in production a TLS one too) and a socket's setup and teardown each time."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.conn: http.client.HTTPConnection | None = None

    def take(self, key):
        """The connection kept for key, now the caller's (None if there is none)."""
        conn, self.conn = self.conn, None
        if conn is not None and self.key != key:  # NOTIFY_URL changed: one connection per thread
            conn.close()
            conn = None
        return conn

    def keep(self, key, conn):
        self.key, self.conn = key, conn

    def __del__(self):
        # The thread ended (a dispatcher's pool shut down): its connection is closed with it, not
        # left for the garbage collector to close with a ResourceWarning.
        if self.conn is not None:
            self.conn.close()


_THREADS = threading.local()  # .kept: each thread's _Kept


def _kept():
    try:
        return _THREADS.kept
    except AttributeError:
        _THREADS.kept = kept = _Kept()
        return kept


def _forget_kept_connections():
    global _THREADS
    _THREADS = threading.local()  # a forked child would share its parent's sockets: it opens its own


os.register_at_fork(after_in_child=_forget_kept_connections)


class _ClosedWhileIdle(Exception):
    """A kept connection failed before any answer came: the server closed it while it sat idle."""


# How a server's close of an idle connection shows on the next request sent over it: the request is
# written into a connection the server has left (BrokenPipeError, ConnectionResetError), or reading
# the answer finds the end of the connection (RemoteDisconnected) or its reset.
_IDLE_CLOSE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def post(url, body, headers, timeout_s=TIMEOUT_S):
    """POST body; -> (status, the answer's first ANSWER_BYTES). Raises OSError or
    http.client.HTTPException (ValueError for a URL it cannot use); TimeoutError when the whole of it
    took longer than timeout_s.

    timeout_s bounds the attempt as a whole, not each read: a receiver that answers at once and
    then sends its body a byte at a time is cut off all the same (a watchdog shuts the socket).
    Direct, never through a proxy; redirects are not followed (a 3xx is not delivered).

    The connection is kept open for this thread's next POST, as an HTTP/1.1 client would, when the
    whole answer was read within ANSWER_BYTES and the server did not say it would close it; after
    anything else (a longer answer, a timeout, an error) it is closed, never used again."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("NOTIFY_URL is not an http(s) URL")
    key = (parts.scheme, parts.hostname, parts.port)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {**headers, "user-agent": "payapi"}
    conn = _kept().take(key)
    if conn is not None:
        started = time.monotonic()
        try:
            return _exchange(conn, key, target, body, headers, timeout_s, reused=True)
        except _ClosedWhileIdle:
            # The server closed the kept connection while it was idle (its keep-alive timeout ran
            # out): the attempt is made once more on a new connection, within what is left of
            # timeout_s. The server may have read the request before it closed, so the receiver
            # may get this message twice: delivery is at least once anyway, and the webhook-id is
            # the same, so a receiver that did get it dedupes. A new connection's failure is the
            # attempt's failure (retried later with back-off), never retried here.
            timeout_s -= time.monotonic() - started
            if timeout_s <= 0:
                raise TimeoutError from None
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout_s, context=_tls())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    return _exchange(conn, key, target, body, headers, timeout_s, reused=False)


def _exchange(conn, key, target, body, headers, timeout_s, reused):
    """One request and its answer on conn (a new one is connected here), within a _Deadline of
    timeout_s; conn is kept for the thread's next request, or closed. Raises _ClosedWhileIdle when a
    reused conn failed the way a server's close of an idle connection shows, before any answer."""
    deadline, answer, keep = _Deadline(timeout_s), None, False
    try:
        if reused:
            if conn.timeout != timeout_s:
                conn.timeout = timeout_s
                conn.sock.settimeout(timeout_s)
        else:
            conn.connect()
        deadline.watch(conn.sock)  # each attempt's own deadline, a reused connection's too
        conn.request("POST", target, body, headers)
        answer = conn.getresponse()
        first = answer.read(ANSWER_BYTES)  # a body cut short by the deadline reads as a short one:
        deadline.cancel()  # from here on the watchdog leaves the socket alone, so
        if deadline.expired:  # the deadline says which it was, once and for all
            raise TimeoutError
        # Kept only when the whole body was read (http.client closes an answer once it has its
        # Content-Length, or its last chunk; a length left over is a body the server cut short)
        # and the server did not say it will close the connection.
        keep = answer.isclosed() and not answer.will_close and not answer.length
        return answer.status, first
    except (OSError, http.client.HTTPException) as exc:
        if deadline.expired:
            raise TimeoutError from None
        if reused and answer is None and isinstance(exc, _IDLE_CLOSE):
            raise _ClosedWhileIdle from exc
        raise
    finally:
        deadline.cancel()
        if keep:
            _kept().keep(key, conn)
        else:
            if answer is not None:
                answer.close()  # the rest of it is never read
            conn.close()


def _send(url, secret, message, timeout_s):
    timestamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "webhook-id": message.message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature(secret, message.message_id, timestamp, message.payload),
    }
    try:
        status, first = post(url, message.payload.encode(), headers, timeout_s)
    except TimeoutError:
        return False, None, f"no whole answer within {timeout_s:g} s"
    except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: a bad URL or port
        return False, None, type(exc).__name__
    delivered = 200 <= status < 300
    return delivered, status, "" if delivered else first[:200].decode("utf-8", "replace")


def deliver(message, url, secret, timeout_s=TIMEOUT_S):
    """One attempt at one due message (a DueMessage), if this dispatcher can claim it; -> its status
    after, or None."""
    message_id = message.message_id
    if not _claim(message_id, now_ms()):
        return None
    try:
        secret_bytes(secret)
    except ValueError as exc:
        # A failed attempt like any other (counted, backed off, failed after 24 hours): raising
        # here would leave the claim to run out and the message claimed again forever, uncounted.
        delivered, http_status, error = False, None, f"cannot sign: {exc}"
    else:
        delivered, http_status, error = _send(url, secret, message, timeout_s)
    if delivered:
        status = _settle_delivered(message_id, http_status)
    else:
        status = _settle_failed(message_id, http_status, error)
    fields = {
        "message_id": message_id,
        "type": message.type,
        "subject_id": message.subject_id,
        "http_status": http_status,
        "status": status,
    }
    if delivered:
        log.info("notification delivered", extra={"fields": fields})
    else:
        # The status, and the first bytes of the receiver's answer (_send keeps 200 of them).
        reason = error if http_status is None else f"HTTP {http_status}: {error}"
        log.warning("notification not delivered: %s", reason, extra={"fields": fields})
    return status


def due(limit):
    """The messages due now, the longest due first (at most limit)."""
    return [DueMessage._make(row) for row in _due(now_ms(), limit).fetchall()]


class Dispatcher:
    """Delivers due messages with a bounded pool. Each attempt ends within timeout_s, and a slow one
    holds only its own thread: the others keep taking messages (run_forever refills the pool as
    threads come free, instead of waiting for a whole batch)."""

    def __init__(self, url, secret, concurrency=8, poll_s=1.0, timeout_s=TIMEOUT_S):
        self.url, self.secret, self.poll_s, self.timeout_s = url, secret, poll_s, timeout_s
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="notify")
        self.concurrency = concurrency

    def run_once(self):
        """Send every message due now (up to four pools' worth; the pool's threads take them in
        turn); -> how many were attempted. Returns once those attempts have ended, each within
        timeout_s."""
        futures = [self.pool.submit(self._attempt, message) for message in due(self.concurrency * 4)]
        return sum(1 for f in futures if f.result() is not None)

    def _attempt(self, message):
        # Each pool thread keeps its database connection from one attempt to the next: opening one
        # takes peewee's process-wide lock, which made the threads claim messages one at a time.
        try:
            return deliver(message, self.url, self.secret, self.timeout_s)
        except Exception:
            message_id = message.message_id
            log.exception("notification %s: delivery raised", message_id, extra={"fields": {"message_id": message_id}})
            db.close()  # perhaps the connection is what broke: the next attempt opens a new one
            return None

    def run_forever(self, stop: threading.Event):
        """Keep every thread busy while messages are due: a free thread takes the next due message
        at once, whatever the others are waiting for.

        Due messages are asked for a few pools' worth at a time and handed out from that list, not
        asked for again each time an attempt ends: this loop is one thread, and a query per
        delivered message made it the dispatcher's limit (~5 ms each on MariaDB with eight threads
        sending). A message in the list that another dispatcher took meanwhile is only a claim
        that fails (deliver returns None)."""
        in_flight: dict[str, concurrent.futures.Future] = {}  # message_id -> future
        queued: collections.deque[DueMessage] = collections.deque()  # due, not handed to a thread yet
        while not stop.is_set():
            try:
                for message_id in [m for m, f in in_flight.items() if f.done()]:
                    del in_flight[message_id]
                room = self.concurrency - len(in_flight)
                if room and not queued:
                    queued.extend(
                        m for m in due(self.concurrency * 4 + len(in_flight)) if m.message_id not in in_flight
                    )
                fresh = False
                while room and queued:
                    message = queued.popleft()
                    if message.message_id not in in_flight:
                        in_flight[message.message_id] = self.pool.submit(self._attempt, message)
                        room, fresh = room - 1, True
                if fresh:
                    continue
                if in_flight:  # nothing more due: until an attempt ends, or the next poll
                    concurrent.futures.wait(in_flight.values(), self.poll_s, concurrent.futures.FIRST_COMPLETED)
                else:
                    stop.wait(self.poll_s)
            except Exception:
                log.exception("notification dispatcher pass failed")
                stop.wait(self.poll_s)
        self.close()

    def close(self):
        self.pool.shutdown(wait=True)


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
