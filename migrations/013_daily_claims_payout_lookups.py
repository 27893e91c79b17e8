"""A daily job's day, claimed in the database: several workers (one per host) start the daily
reconciliation together, and exactly one of them runs it. Withdrawal.lookup_from: after a payout
attempt whose outcome is unclear (time-out, 5xx, lost answer), when the next attempt first looks
for the transfer Ping++ may have made; Withdrawal.retry_after: when the worker may try a failed
payout again (a growing delay; an operator's retry need not wait)."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class DailyClaim(pw.Model):
        job = pw.CharField(max_length=32)
        day = pw.CharField(max_length=10)
        lease_until = pw.BigIntegerField(default=0)
        done_at = pw.BigIntegerField(null=True)

        class Meta:
            table_name = "daily_claim"
            primary_key = pw.CompositeKey("job", "day")

    migrator.add_fields("withdrawal", lookup_from=pw.BigIntegerField(null=True),
                        retry_after=pw.BigIntegerField(default=0))


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_fields("withdrawal", "lookup_from", "retry_after")
    migrator.remove_model("daily_claim")
