"""Double-entry books, the settlement hold, refunds, charge reversals, the notification outbox and
idempotency keys.

The ledger (one signed line per expert movement) becomes journal entries of balanced postings.
History is kept: every ledger entry becomes its entry, with the platform's side the ledger never
recorded rebuilt from the pays, the refund events and the withdrawals (a paid charge debits
`pingpp` by what the user paid and credits the fee; a refund's fee share is what Ping++ refunded
less the expert's debit; a succeeded withdrawal's transfer moves `payouts` to `pingpp`). Credits
written before the hold existed are available. The wallet's balance becomes its `available`
column; then the ledger table goes.

Nothing here imports application code: the rules are written out as they were when this ran.
"""

import json
import os
import struct
import time

import peewee as pw
from peewee_migrate import Migrator


class LongTextField(pw.TextField):
    field_type = "LONGTEXT"


def _new_id():
    return (struct.pack(">I", int(time.time())) + os.urandom(8)).hex()


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class JournalEntry(pw.Model):
        entry_id = pw.AutoField()
        kind = pw.CharField(max_length=24)
        reference = pw.CharField(max_length=64)
        created_at = pw.BigIntegerField(index=True)

        class Meta:
            table_name = "journal_entry"
            indexes = [(("kind", "reference"), True)]

    @migrator.create_model
    class Posting(pw.Model):
        id = pw.AutoField()
        entry_id = pw.IntegerField(index=True)
        account = pw.CharField(max_length=48, index=True)
        debit = pw.BigIntegerField(default=0)
        credit = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "posting"

    @migrator.create_model
    class Refund(pw.Model):
        refund_id = pw.CharField(max_length=24, primary_key=True)
        pay_id = pw.CharField(max_length=24, index=True)
        amount = pw.BigIntegerField()
        share = pw.BigIntegerField(default=0)
        bucket = pw.CharField(max_length=16, default="")
        description = pw.CharField(max_length=255)
        source = pw.CharField(max_length=16)
        status = pw.CharField(max_length=16)
        pingpp_refund_id = pw.CharField(max_length=64, null=True, unique=True)
        refund = LongTextField(null=True)
        attempts = pw.IntegerField(default=0)
        last_error = pw.CharField(max_length=255, default="")
        check_after = pw.BigIntegerField(default=0)
        created_at = pw.BigIntegerField()
        updated_at = pw.BigIntegerField()

        class Meta:
            table_name = "refund"
            indexes = [(("status", "check_after"), False)]

    @migrator.create_model
    class Notification(pw.Model):
        message_id = pw.CharField(max_length=32, primary_key=True)
        type = pw.CharField(max_length=32)
        subject_id = pw.CharField(max_length=24, index=True)
        payload = LongTextField()
        status = pw.CharField(max_length=16)
        attempts = pw.IntegerField(default=0)
        next_attempt_at = pw.BigIntegerField(default=0)
        give_up_at = pw.BigIntegerField()
        last_status = pw.IntegerField(null=True)
        last_error = pw.CharField(max_length=255, default="")
        delivered_at = pw.BigIntegerField(null=True)
        created_at = pw.BigIntegerField()
        updated_at = pw.BigIntegerField()

        class Meta:
            table_name = "notification"
            indexes = [(("status", "next_attempt_at"), False)]

    @migrator.create_model
    class IdempotencyKey(pw.Model):
        id = pw.AutoField()
        scope = pw.CharField(max_length=64)
        key = pw.CharField(max_length=64)
        request_hash = pw.CharField(max_length=64)
        status = pw.CharField(max_length=16)
        answer = LongTextField(null=True)
        lease_until = pw.BigIntegerField()
        created_at = pw.BigIntegerField(index=True)

        class Meta:
            table_name = "idempotency_key"
            indexes = [(("scope", "key"), True)]

    migrator.add_fields(
        "pay",
        held=pw.BigIntegerField(default=0),
        release_at=pw.BigIntegerField(null=True),
        reversed_at=pw.BigIntegerField(null=True),
    )
    migrator.add_index("pay", "held", "release_at")
    migrator.add_fields("wallet", pending=pw.BigIntegerField(default=0), available=pw.BigIntegerField(default=0))

    def move_ledger_into_books():
        q = database.param
        sql = database.execute_sql

        def entry(kind, reference, created_at, *lines):
            cursor = sql(f"INSERT INTO journal_entry (kind, reference, created_at) VALUES ({q}, {q}, {q})",
                         (kind, reference, created_at))
            entry_id = cursor.lastrowid
            for account, debit, credit in lines:
                if debit or credit:
                    sql(f"INSERT INTO posting (entry_id, account, debit, credit) VALUES ({q}, {q}, {q}, {q})",
                        (entry_id, account, debit, credit))

        pays = {row[0]: row for row in sql("SELECT pay_id, money, charge_id FROM pay").fetchall()}
        pay_of_charge = {row[2]: row for row in pays.values() if row[2]}
        refund_events = {}
        for object_id, payload in sql(
            f"SELECT object_id, payload FROM event WHERE type = {q} AND outcome = {q}", ("refund.succeeded", "applied")
        ).fetchall():
            try:
                refund_events[object_id] = json.loads(payload)["data"]["object"]
            except (ValueError, KeyError, TypeError):
                pass
        ledger = sql("SELECT user_id, amount, kind, reference, created_at FROM ledger_entry ORDER BY id").fetchall()
        for user_id, amount, kind, reference, created_at in ledger:
            available = f"expert:{user_id}:available"
            if kind == "charge":
                money = pays[reference][1] if reference in pays else amount
                entry("charge", reference, created_at,
                      ("pingpp", money, 0), ("fees", 0, money - amount), (available, 0, amount))
            elif kind == "refund":
                share = -amount
                refund = refund_events.get(reference, {})
                refunded = refund.get("amount") if isinstance(refund.get("amount"), int) else share
                entry("refund", reference, created_at,
                      (available, share, 0), ("fees", refunded - share, 0), ("pingpp", 0, refunded))
                pay = pay_of_charge.get(refund.get("charge"))
                if pay is not None:
                    sql(
                        "INSERT INTO refund (refund_id, pay_id, amount, share, bucket, description, source, status, "
                        "pingpp_refund_id, refund, attempts, last_error, check_after, created_at, updated_at) "
                        f"VALUES ({', '.join([q] * 15)})",
                        (_new_id(), pay[0], refunded, share, "available", str(refund.get("description") or "")[:255],
                         "pingpp", "succeeded", reference, json.dumps(refund, ensure_ascii=False), 0, "", 0,
                         created_at, created_at),
                    )
            elif kind == "withdraw":
                entry("withdraw", reference, created_at, (available, -amount, 0), ("payouts", 0, -amount))
            elif kind == "withdraw_refund":
                entry("withdraw_refund", reference, created_at, ("payouts", amount, 0), (available, 0, amount))
        for withdraw_id, amount, updated_at in sql(
            f"SELECT withdraw_id, amount, updated_at FROM withdrawal WHERE status = {q}", ("succeeded",)
        ).fetchall():
            entry("transfer", withdraw_id, updated_at, ("payouts", amount, 0), ("pingpp", 0, amount))
        sql("UPDATE wallet SET available = balance, pending = 0")

    migrator.run(move_ledger_into_books)
    migrator.remove_fields("wallet", "balance")
    migrator.remove_model("ledger_entry")


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    raise NotImplementedError("the ledger is rebuilt from the books by no migration: restore a backup instead")
