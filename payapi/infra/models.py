"""Tables. Money is integer fen; times are integer milliseconds since the Unix epoch (UTC).

Imports only db: what a record looks like on the wire (Pay.info) and the outbox messages its
lifecycle moves announce are written by outbox.save, the one way a pay, refund or withdrawal is
saved.
"""

import peewee as pw

from payapi.infra.db import db, savable, save_row


class LongTextField(pw.TextField):
    # MySQL's TEXT stops at 65,535 bytes; a webhook body may be 64 KiB of UTF-8.
    field_type = "LONGTEXT"


class BaseModel(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False

    def save(self, force_insert=False, only=None):
        """peewee's save; for a row by a primary key that is not generated, from SQL text built once."""
        if savable(self, only):
            return save_row(self, force_insert, only)
        return super().save(force_insert=force_insert, only=only)


class SavedByOutbox:
    """A record the order service hears of (a pay, a refund, a withdrawal): saved only by
    outbox.save(record), which writes its announced moves into the outbox (and a pay's info) in
    the same transaction. A direct save() would skip both, so it is refused, as Pay.update
    refuses a bulk change of what Pay.info is made of."""

    def save(self, *args, **kwargs):
        raise TypeError(
            f"save a {type(self).__name__} with outbox.save(record), so its announcements and stored JSON follow"
        )


class Profile(BaseModel):
    """A user's pay security settings: pay password, security answers, withdraw account."""

    user_id = pw.CharField(24, primary_key=True)
    passwd_hash = pw.CharField(100, null=True)
    answers_hash = pw.CharField(100, null=True)
    account_type = pw.CharField(16, default="")
    account_id = pw.CharField(64, default="")
    account_name = pw.CharField(32, default="")
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()


class Lockout(BaseModel):
    """Wrong-secret counter per user and secret kind ('passwd', 'answers').

    Operators' kinds (operators.py) are keyed by a digest of the name as typed, known or not:
    'operator' (name and client address: the same counter and lock), 'operator-name' (the name
    from everywhere: `locked_until` holds its rate's theoretical arrival time) and
    'operator-known' (name and an address it logged in from: `locked_until` is when that ends) and
    'operator-addr' (an address, at any names: a rate as 'operator-name').
    """

    user_id = pw.CharField(24)
    kind = pw.CharField(16, index=True)  # the worker's sweep of operators' rows (migration 015)
    # Comma-separated times (ms) of the wrong attempts, and of those still being checked, within
    # the last 3 hours (a sliding window); at most five. `failures` is how many there are.
    failed_at = pw.CharField(100, default="")
    failures = pw.IntegerField(default=0)
    locked_until = pw.BigIntegerField(default=0)

    class Meta:
        indexes = ((("user_id", "kind"), True),)


class HashingTurn(BaseModel):
    """A user's share of the slow hash (bcrypt): one check in flight, and a rate of their own."""

    user_id = pw.CharField(24, primary_key=True)
    busy_until = pw.BigIntegerField(default=0)  # a request of this user is on bcrypt until then (a lease)
    tat = pw.BigIntegerField(default=0)  # GCRA: when the user's next slow operation is "due" (ms)


class SmsCode(BaseModel):
    user_id = pw.CharField(24)
    purpose = pw.CharField(32)
    phone = pw.CharField(32)
    code_hash = pw.CharField(64)
    tries = pw.IntegerField(default=0)
    used_at = pw.BigIntegerField(null=True)
    created_at = pw.BigIntegerField()
    expires_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("user_id", "purpose", "created_at"), False),)


class Pay(SavedByOutbox, BaseModel):
    pay_id = pw.CharField(24, primary_key=True)
    type = pw.CharField(8)
    o_id = pw.CharField(24, default="")
    note_id = pw.CharField(24, default="")
    expert_id = pw.CharField(24)  # indexed first in (expert_id, held_until)
    user_id = pw.CharField(24, index=True)
    amount = pw.BigIntegerField()
    money = pw.BigIntegerField()
    currency = pw.CharField(8, default="cny")
    channel = pw.CharField(32)
    subject = pw.CharField(32)
    description = pw.CharField(128, default="")
    charge = LongTextField(null=True)  # the Ping++ charge object as last received, JSON
    charge_id = pw.CharField(64, null=True, unique=True)
    status = pw.CharField(16, default="pending")
    client_status = pw.CharField(16, default="pending")
    # "order:<o_id>" or "note:<note_id>" while the pay is pending, else NULL: the unique index
    # allows one pending pay per order/note, however many requests race to create one.
    open_for = pw.CharField(40, null=True, unique=True)
    credited = pw.BigIntegerField(default=0)  # what the expert was credited for this pay
    amount_refunded = pw.BigIntegerField(default=0)
    time_expire = pw.BigIntegerField(null=True)
    client_ip = pw.CharField(64, default="")
    platform = pw.CharField(32, default="")
    store = pw.CharField(64, default="")
    created_at = pw.BigIntegerField(index=True)
    updated_at = pw.BigIntegerField()
    paid_at = pw.BigIntegerField(null=True)
    check_after = pw.BigIntegerField(default=0)  # when the worker may next ask Ping++ about a pending pay
    # The settlement hold: what of the expert's credit for this pay is still pending, and when it
    # becomes available (paid_at + SETTLEMENT_HOLD_SECONDS).
    held = pw.BigIntegerField(default=0)
    release_at = pw.BigIntegerField(null=True)
    # A closed pay's charge must be closed at Ping++ too; set once Ping++ confirmed it.
    reversed_at = pw.BigIntegerField(null=True)
    # Set while the pay is closed (cancel) for a replacement, this pay id, and the order service has
    # not been told: the replacement may still fail at Ping++ and reopen it (payments.create_pay).
    closing_for = pw.CharField(24, null=True)
    # A phone's "success" report may ask Ping++ about the charge only from then on: claimed with
    # the pay's row lock, so at most one retrieve per pay is in flight, across workers and hosts.
    # Not part of `info`, so it may be changed without save().
    retrieve_after = pw.BigIntegerField(default=0)
    # The pay as the app sees it (seed route 1's `info`), rewritten by every outbox.save(pay):
    # reading a pay is two columns instead of twenty-seven, and PyMySQL spends most of a read
    # parsing the metadata of each column (measured: see docs/performance.md, "What the profile
    # showed"). Change pays through outbox.save.
    info = LongTextField(null=True)

    class Meta:
        indexes = (
            (("status", "created_at"), False),
            (("type", "o_id", "note_id"), False),
            # The worker's due lists (migration 015): pending pays to ask Ping++ about, in the order
            # they are asked; closed pays whose charge Ping++ has not confirmed closed.
            (("status", "check_after", "created_at"), False),
            (("status", "reversed_at", "check_after"), False),
            (("held", "release_at"), False),
            # and (expert_id, held_until), on the column below (migration 016)
        )

    @classmethod
    def update(cls, __data=None, **update):
        """An UPDATE of what Pay.info is made of must write info too (outbox.save does): else it would go stale."""
        changed = {getattr(field, "name", field) for field in (__data or {})} | set(update)
        if changed & INFO_COLUMNS and "info" not in changed:
            raise TypeError(
                f"change {sorted(changed & INFO_COLUMNS)} of a pay through outbox.save, so Pay.info follows"
            )
        return super().update(__data, **update)


# `pay.held_until`: `CASE WHEN held > 0 THEN release_at END`, a virtual column the database computes
# (migration 016), indexed (expert_id, held_until): an expert's next release is one look at the
# index. Not a field: peewee must never write it (a pay's save writes every field); read it
# through this node.
PAY_HELD_UNTIL = pw.Column(Pay, "held_until")
# The columns of each table that the database computes (in the tables, not among the fields).
GENERATED_COLUMNS = {"pay": {"held_until"}}

# The columns Pay.info is made of (shapes.PayInfo's fields carry the names of the columns they come
# from; outbox checks the two agree when it is imported).
INFO_COLUMNS = frozenset(
    {
        "pay_id",
        "o_id",
        "note_id",
        "expert_id",
        "user_id",
        "amount",
        "money",
        "charge",
        "description",
        "client_status",
        "status",
        "subject",
        "currency",
        "channel",
        "type",
        "created_at",
        "updated_at",
    }
)


class OrderLock(BaseModel):
    """One row per order or note ("order:<o_id>", "note:<note_id>"): whatever makes, pays or reopens
    a pay of it locks this row first (payments.lock_order), so one transaction at a time decides."""

    order_key = pw.CharField(40, primary_key=True)
    locks = pw.BigIntegerField(default=0)  # written by every holder: Galera nodes certify against it


class ClientReport(BaseModel):
    """What the phone's payment SDK showed, with the audit headers; never trusted for money.

    One row stands for `times` reports of the same pay: the first at `created_at`, the last at
    `last_at` (see payments.record_report for which reports are folded into a row).
    """

    pay_id = pw.CharField(24, index=True)
    user_id = pw.CharField(24)
    status = pw.CharField(16)
    client_ip = pw.CharField(64, default="")
    platform = pw.CharField(32, default="")
    store = pw.CharField(64, default="")
    created_at = pw.BigIntegerField()
    times = pw.IntegerField(default=1)
    last_at = pw.BigIntegerField(default=0)


class Wallet(BaseModel):
    """An expert's two accounts, as sums of their postings kept beside the books for fast reads.

    Written only by books.record, in the same transaction as the postings; `books check` proves
    each column equals its postings.
    """

    user_id = pw.CharField(24, primary_key=True)
    pending = pw.BigIntegerField(default=0)  # credits still held (settlement hold)
    available = pw.BigIntegerField(default=0)  # what may be withdrawn (negative only after a refund)
    updated_at = pw.BigIntegerField()

    @property
    def balance(self):
        return self.pending + self.available


class JournalEntry(BaseModel):
    """One money movement: postings whose debits equal their credits. Never edited afterwards."""

    entry_id = pw.AutoField()
    kind = pw.CharField(24)  # charge, release, refund, refund_settled, refund_failed, withdraw, ...
    reference = pw.CharField(64)  # the pay, refund or withdrawal it moves money for
    created_at = pw.BigIntegerField(index=True)

    class Meta:
        # The same money movement can never be booked twice, however many workers race to book it.
        indexes = ((("kind", "reference"), True),)


class Posting(BaseModel):
    entry_id = pw.IntegerField(index=True)
    account = pw.CharField(48, index=True)  # pingpp, fees, payouts, refunds, expert:<user_id>:pending|available
    debit = pw.BigIntegerField(default=0)
    credit = pw.BigIntegerField(default=0)


class StatementLine(BaseModel):
    """An expert's statement (收支明细): one line per journal entry that moves their money, with their
    balances after it (statement.py reads it; GET /rest/pay/bills).

    A projection of the postings, not a second ledger: written only by books.record, in the same
    transaction and under the same wallet lock as the entry's postings, and proved by books.check
    (each line's amount is its entry's postings on the expert's accounts; the balances after each
    line run from 0 to the wallet's). The primary key is the page's order, so a page of the
    statement is one range of the index at any size.
    """

    user_id = pw.CharField(24)
    created_at = pw.BigIntegerField()  # never before the expert's previous line
    entry_id = pw.IntegerField()  # the journal entry
    amount = pw.BigIntegerField()  # the change of balance (pending + available); 0 when held money is released
    balance_after = pw.BigIntegerField()
    available_after = pw.BigIntegerField()

    class Meta:
        primary_key = pw.CompositeKey("user_id", "created_at", "entry_id")


class Refund(SavedByOutbox, BaseModel):
    """A refund of (part of) a paid pay: asked for by the order service, made for a duplicate
    payment, or made elsewhere (the Ping++ dashboard) and learnt from its event."""

    refund_id = pw.CharField(24, primary_key=True)
    pay_id = pw.CharField(24, index=True)
    amount = pw.BigIntegerField()  # fen given back to the payer
    share = pw.BigIntegerField(default=0)  # of which the expert's (pro rata, cumulative rounding)
    bucket = pw.CharField(16, default="")  # the expert account the share was taken from
    description = pw.CharField(255)
    source = pw.CharField(16)  # order_service, duplicate, pingpp
    status = pw.CharField(16)
    pingpp_refund_id = pw.CharField(64, null=True, unique=True)
    refund = LongTextField(null=True)  # the Ping++ refund object as last received
    attempts = pw.IntegerField(default=0)
    last_error = pw.CharField(255, default="")
    check_after = pw.BigIntegerField(default=0)  # when the worker may next ask Ping++ about it
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("status", "check_after"), False),)


class Notification(BaseModel):
    """A message to the order service (the transactional outbox): written in the same transaction
    as the change it reports, delivered by the worker's dispatcher (Standard Webhooks)."""

    message_id = pw.CharField(32, primary_key=True)  # webhook-id: the same on every attempt
    type = pw.CharField(32)
    subject_id = pw.CharField(24, index=True)  # the pay, refund or withdrawal it is about
    payload = LongTextField()  # the exact body sent: {"type","timestamp","data"}
    status = pw.CharField(16)
    attempts = pw.IntegerField(default=0)
    next_attempt_at = pw.BigIntegerField(default=0)  # also the claim: a dispatcher owns it until then
    give_up_at = pw.BigIntegerField()  # 24 hours after it was written (or resent): then it fails
    last_status = pw.IntegerField(null=True)  # the receiver's last HTTP status
    last_error = pw.CharField(255, default="")
    delivered_at = pw.BigIntegerField(null=True)
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("status", "next_attempt_at"), False),)


class IdempotencyKey(BaseModel):
    """A caller's Idempotency-Key and the answer its first successful request got (24 hours)."""

    scope = pw.CharField(64)  # who and where: "user:<id> POST /rest/pay/withdraw", "service POST /internal/pays"
    key = pw.CharField(64)
    request_hash = pw.CharField(
        64
    )  # HMAC of the body (and path), see idempotency.py: the same key with another body is 904
    status = pw.CharField(16)  # running, done
    answer = LongTextField(null=True)  # the 900 answer's body
    lease_until = pw.BigIntegerField()  # a running request owns the key until then
    created_at = pw.BigIntegerField(index=True)

    class Meta:
        indexes = ((("scope", "key"), True),)


class Reconciliation(BaseModel):
    """One comparison of a day's records with Ping++'s: what was healed, what still differs."""

    reconciliation_id = pw.CharField(24, primary_key=True)
    date = pw.CharField(10, index=True)  # YYYY-MM-DD in TIMEZONE
    status = pw.CharField(16)  # clean, healed, different
    healed = LongTextField()  # JSON list
    differences = LongTextField()  # JSON list
    created_at = pw.BigIntegerField()


class DailyClaim(BaseModel):
    """A daily job's day (e.g. the reconciliation of 2026-11-20): one worker on one host runs it."""

    job = pw.CharField(32)
    day = pw.CharField(10)  # YYYY-MM-DD in TIMEZONE
    lease_until = pw.BigIntegerField(default=0)  # the claimer runs it until then; after, another may
    done_at = pw.BigIntegerField(null=True)

    class Meta:
        primary_key = pw.CompositeKey("job", "day")


class Withdrawal(SavedByOutbox, BaseModel):
    withdraw_id = pw.CharField(24, primary_key=True)
    user_id = pw.CharField(24, index=True)
    amount = pw.BigIntegerField()
    status = pw.CharField(16, default="pending")  # pending, processing, succeeded, failed
    account_type = pw.CharField(16)
    account_id = pw.CharField(64)
    account_name = pw.CharField(32)
    month = pw.CharField(7)  # natural month in TIMEZONE, "2026-11"
    # "<user_id>:<month>" unless failed: the unique index allows one withdrawal per natural month.
    active_month = pw.CharField(40, null=True, unique=True)
    transfer_id = pw.CharField(64, null=True)
    transfer = LongTextField(null=True)
    attempts = pw.IntegerField(default=0)
    last_error = pw.CharField(255, default="")
    # pending, after an attempt whose outcome is unclear (ms): the next one first looks for a
    # transfer Ping++ made from then on; NULL when no attempt may have made one.
    lookup_from = pw.BigIntegerField(null=True)
    retry_after = pw.BigIntegerField(default=0)  # pending, after a failed attempt: the worker waits until then
    # pending: a worker owns the payout until then (or, after an error, it waits until then);
    # processing: when the worker next asks Ping++ about the transfer.
    lease_until = pw.BigIntegerField(default=0)
    client_ip = pw.CharField(64, default="")
    platform = pw.CharField(32, default="")
    store = pw.CharField(64, default="")
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("status", "updated_at"), False), (("status", "lease_until"), False))


class Event(BaseModel):
    """Every verified Ping++ event, by its id: a replay finds its row and changes nothing."""

    event_id = pw.CharField(64, primary_key=True)
    type = pw.CharField(64)
    object_id = pw.CharField(64, default="")
    outcome = pw.CharField(16)  # applied, ignored, mismatch, unknown
    detail = pw.CharField(255, default="")
    payload = LongTextField()
    received_at = pw.BigIntegerField()


class Operator(BaseModel):
    """A person who runs payapi: the console at /ops/ and the JSON at /ops/api/ (operators.py)."""

    operator_id = pw.CharField(24, primary_key=True)
    name = pw.CharField(64, unique=True)
    passwd_hash = pw.CharField(100)
    disabled_at = pw.BigIntegerField(null=True)  # set: no session or Basic login works any more
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()


class OperatorSession(BaseModel):
    """A console login. The cookie holds a random token; only its SHA-256 is stored here."""

    token_hash = pw.CharField(64, primary_key=True)
    operator_id = pw.CharField(24, index=True)
    csrf = pw.CharField(64)  # every console form carries it
    expires_at = pw.BigIntegerField(index=True)
    created_at = pw.BigIntegerField()


class AuditEntry(BaseModel):
    """What an operator did, written in the same transaction as the change it made."""

    audit_id = pw.CharField(24, primary_key=True)
    operator = pw.CharField(80)  # the operator's name, or cli:<login user> for commands
    action = pw.CharField(32)  # withdrawal.retry, withdrawal.fail, notification.resend
    target = pw.CharField(64, index=True)  # the withdrawal or notification acted on
    reason = pw.CharField(255, default="")
    before = LongTextField()  # the record's state before, JSON
    after = LongTextField()  # and after
    created_at = pw.BigIntegerField(index=True)
    outcome = pw.CharField(16, default="performed")  # or refused: Ping++'s answer refused it (nothing done)
    refusal = pw.CharField(255, default="")  # why it was refused


class WorkerPass(BaseModel):
    """One kind of worker pass as /metrics reads it: the worker may be on another host than the web app."""

    name = pw.CharField(32, primary_key=True)  # payouts, transfers, pays, ...
    runs = pw.BigIntegerField(default=0)
    failures = pw.BigIntegerField(default=0)  # passes that raised outright
    last_started_at = pw.BigIntegerField(default=0)
    last_success_at = pw.BigIntegerField(default=0)
    last_ms = pw.FloatField(default=0)
    counts = LongTextField()  # cumulative counts by outcome, JSON {"sent": 12, "failed": 1}
    updated_at = pw.BigIntegerField()
    failures_in_a_row = pw.IntegerField(default=0)  # since its last success


class HealthNote(BaseModel):
    """The last trouble of something worth showing on the health page (`pingpp`: Ping++'s last error)."""

    name = pw.CharField(32, primary_key=True)
    detail = pw.CharField(255, default="")
    at = pw.BigIntegerField()


ALL_MODELS = [
    Profile,
    Lockout,
    HashingTurn,
    SmsCode,
    Pay,
    OrderLock,
    ClientReport,
    Wallet,
    JournalEntry,
    Posting,
    StatementLine,
    Refund,
    Notification,
    IdempotencyKey,
    Withdrawal,
    Event,
    Reconciliation,
    Operator,
    OperatorSession,
    AuditEntry,
    WorkerPass,
    DailyClaim,
    HealthNote,
]
