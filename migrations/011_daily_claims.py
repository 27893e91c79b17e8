"""A daily job's day, claimed in the database: several workers (one per host) start the daily
reconciliation together, and exactly one of them runs it."""

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


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_model("daily_claim")
