"""Every record's statuses and the moves between them, in one place.

A status changes only through `Lifecycle.move`, which refuses a move its table does not allow
and keeps the keys derived from the status in step: a pay's `open_for` (set exactly while it is
pending: the unique key that allows one pending pay per order or note), a withdrawal's
`active_month` (set unless it failed: the unique key that allows one withdrawal a natural month).
"""

import enum
from collections.abc import Callable, Mapping
from typing import Any


class PayStatus(enum.StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FAIL = "fail"
    CANCEL = "cancel"
    REFUNDED = "refunded"


class AppReport(enum.StrEnum):
    """What the app's payment SDK showed (stored as the pay's client_status; "pending" before any)."""

    SUCCESS = "success"
    FAIL = "fail"
    CANCEL = "cancel"
    INVALID = "invalid"


class WithdrawalStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RefundStatus(enum.StrEnum):
    PENDING = "pending"  # asked for; Ping++ has not settled it (or not yet even answered)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"  # to be sent, or sent again after a failed attempt
    DELIVERED = "delivered"
    FAILED = "failed"  # no 2xx for 24 hours; an operator may resend it


class Outcome(enum.StrEnum):
    """What became of something Ping++ told us (an event or a retrieve), stored with the event."""

    APPLIED = "applied"  # it changed our records
    IGNORED = "ignored"  # nothing to change: already applied, or not a settled state
    MISMATCH = "mismatch"  # it contradicts our records or configuration: logged, not applied
    UNKNOWN = "unknown"  # it names no record of ours
    REPLAY = "replay"  # this event id was stored before
    MALFORMED = "malformed"  # signed, but not an event we can read


class IllegalMove(Exception):
    """A bug: code asked for a move the lifecycle's table does not allow."""


class Lifecycle:
    """moves: status -> the statuses it may move to. announce: status -> the notification type a
    move into it sends the order service (written when the record is saved, in the same transaction)."""

    def __init__(
        self,
        name: str,
        initial: str,
        moves: Mapping[str, set[str]],
        keep_in_step: Callable[[Any, int], None] | None = None,
        announce: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.initial, self.moves = name, initial, moves
        self._keep_in_step = keep_in_step or (lambda record, now: None)
        self.announce = announce or {}

    def begin(self, record: Any, now: int) -> Any:
        """A new record: the initial status and its derived keys."""
        record.status = self.initial
        record.created_at = record.updated_at = now
        self._keep_in_step(record, now)
        return record

    def allows(self, record: Any, to: str) -> bool:
        return to in self.moves[record.status]

    def move(self, record: Any, to: str, now: int, announce: bool = True) -> Any:
        """Change record's status (the caller saves it, in the same transaction as what caused it).

        announce=False: the caller announces it later itself (see payments.create_pay).
        """
        if not self.allows(record, to):
            raise IllegalMove(f"{self.name}: {record.status} -> {to} is not a move")
        record.status = to
        record.updated_at = now
        self._keep_in_step(record, now)
        if announce and to in self.announce:
            self.announce_now(record, to)
        return record

    def announce_now(self, record: Any, status: str) -> None:
        """The order service hears of record being in status, when it is next saved."""
        record.__dict__.setdefault("announcements", []).append(self.announce[status])


def _pay_keys(pay: Any, now: int) -> None:
    pay.open_for = f"{pay.type}:{pay.o_id or pay.note_id}" if pay.status == PayStatus.PENDING else None
    if pay.status != PayStatus.CANCEL:
        pay.closing_for = None  # only a cancelled pay waits for its close to be announced
    if pay.status == PayStatus.PAID and pay.paid_at is None:
        pay.paid_at = now


def active_month_key(user_id: str, month: str) -> str:
    """A withdrawal's active_month while it is not failed: one withdrawal per user and natural month."""
    return f"{user_id}:{month}"


def _withdrawal_keys(withdrawal: Any, now: int) -> None:
    active = withdrawal.status != WithdrawalStatus.FAILED
    withdrawal.active_month = active_month_key(withdrawal.user_id, withdrawal.month) if active else None


P, W, R, N = PayStatus, WithdrawalStatus, RefundStatus, NotificationStatus

PAY = Lifecycle(
    "pay",
    P.PENDING,
    {
        P.PENDING: {P.PAID, P.CANCEL, P.FAIL},  # Ping++ says paid; the app or the worker closes it
        # Ping++ is the truth: a closed pay can still turn out paid. A replacement that failed at
        # Ping++ reopens the pay it was to close, as if nothing had happened.
        P.CANCEL: {P.PAID, P.PENDING},
        P.FAIL: {P.PAID},
        P.PAID: {P.REFUNDED},  # fully refunded; a partial refund leaves it paid
        P.REFUNDED: set(),
    },
    _pay_keys,
    announce={P.PAID: "pay.paid", P.CANCEL: "pay.closed", P.FAIL: "pay.closed"},
)

WITHDRAWAL = Lifecycle(
    "withdrawal",
    W.PENDING,
    {
        W.PENDING: {W.PROCESSING, W.SUCCEEDED, W.FAILED},  # Ping++ accepted, paid or refused the transfer
        W.PROCESSING: {W.SUCCEEDED, W.FAILED},
        W.SUCCEEDED: set(),
        W.FAILED: set(),  # refunded to the wallet; the month is free again
    },
    _withdrawal_keys,
    announce={W.SUCCEEDED: "withdrawal.succeeded", W.FAILED: "withdrawal.failed"},
)

REFUND = Lifecycle(
    "refund",
    R.PENDING,
    {R.PENDING: {R.SUCCEEDED, R.FAILED}, R.SUCCEEDED: set(), R.FAILED: set()},
    announce={R.SUCCEEDED: "refund.succeeded", R.FAILED: "refund.failed"},
)

NOTIFICATION = Lifecycle(
    "notification",
    N.PENDING,
    {N.PENDING: {N.DELIVERED, N.FAILED}, N.DELIVERED: {N.PENDING}, N.FAILED: {N.PENDING}},  # PENDING again: resent
)
