"""The results of the daily reconciliation with Ping++ (`python -m payapi reconcile`)."""

import peewee as pw
from peewee_migrate import Migrator


class LongTextField(pw.TextField):
    field_type = "LONGTEXT"


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class Reconciliation(pw.Model):
        reconciliation_id = pw.CharField(max_length=24, primary_key=True)
        date = pw.CharField(max_length=10, index=True)
        status = pw.CharField(max_length=16)
        healed = LongTextField()
        differences = LongTextField()
        created_at = pw.BigIntegerField()

        class Meta:
            table_name = "reconciliation"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_model("reconciliation")
