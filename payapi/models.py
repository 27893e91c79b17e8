"""Tables. Money is integer fen; times are integer milliseconds since the Unix epoch (UTC)."""

import peewee as pw

from .db import db
from .shapes import PayInfo
from .views import pay_info_json


class LongTextField(pw.TextField):
    # MySQL's TEXT stops at 65,535 bytes; a webhook body may be 64 KiB of UTF-8.
    field_type = "LONGTEXT"


class BaseModel(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False


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
    """Wrong-secret counter per user and secret kind ('passwd' or 'answers')."""

    user_id = pw.CharField(24)
    kind = pw.CharField(16)
    failures = pw.IntegerField(default=0)
    window_start = pw.BigIntegerField(default=0)
    locked_until = pw.BigIntegerField(default=0)

    class Meta:
        indexes = ((("user_id", "kind"), True),)


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


class Pay(BaseModel):
    pay_id = pw.CharField(24, primary_key=True)
    type = pw.CharField(8)
    o_id = pw.CharField(24, default="")
    note_id = pw.CharField(24, default="")
    expert_id = pw.CharField(24, index=True)
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
    # The pay as the app sees it (seed route 1's `info`), rewritten by every save(): reading a pay
    # is two columns instead of twenty-seven, and PyMySQL spends most of a read parsing the
    # metadata of each column (measured: see README, Performance). Change pays through save().
    info = LongTextField(null=True)

    class Meta:
        indexes = (
            (("status", "created_at"), False),
            (("type", "o_id", "note_id"), False),
            (("status", "check_after"), False),
        )

    def save(self, *args, **kwargs):
        self.info = pay_info_json(self)
        return super().save(*args, **kwargs)

    @classmethod
    def update(cls, __data=None, **update):
        """An UPDATE of what Pay.info is made of must write info too (save() does): else it would go stale."""
        changed = {getattr(field, "name", field) for field in (__data or {})} | set(update)
        if changed & INFO_COLUMNS and "info" not in changed:
            raise TypeError(f"change {sorted(changed & INFO_COLUMNS)} of a pay through save(), so Pay.info follows")
        return super().update(__data, **update)


# The columns Pay.info is made of: PayInfo's fields carry the names of the columns they come from.
INFO_COLUMNS = frozenset(PayInfo.__struct_fields__)


class ClientReport(BaseModel):
    """What the phone's payment SDK showed, with the audit headers; never trusted for money."""

    pay_id = pw.CharField(24, index=True)
    user_id = pw.CharField(24)
    status = pw.CharField(16)
    client_ip = pw.CharField(64, default="")
    platform = pw.CharField(32, default="")
    store = pw.CharField(64, default="")
    created_at = pw.BigIntegerField()


class Wallet(BaseModel):
    user_id = pw.CharField(24, primary_key=True)
    balance = pw.BigIntegerField(default=0)
    updated_at = pw.BigIntegerField()


class LedgerEntry(BaseModel):
    user_id = pw.CharField(24, index=True)
    amount = pw.BigIntegerField()  # signed fen
    kind = pw.CharField(24)  # charge, refund, withdraw, withdraw_refund
    reference = pw.CharField(64)  # pay_id, refund id or withdraw_id
    balance_after = pw.BigIntegerField()
    created_at = pw.BigIntegerField()

    class Meta:
        # The same money movement can never be booked twice.
        indexes = ((("kind", "reference"), True),)


class Withdrawal(BaseModel):
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


ALL_MODELS = [Profile, Lockout, SmsCode, Pay, ClientReport, Wallet, LedgerEntry, Withdrawal, Event]
