"""Operators: their accounts, console sessions and the audit trail of what they did; and the
worker's passes as the metrics read them.

- `operator`: a person with a name and a bcrypt hash of their password; `disabled_at` set ends
  every session and Basic login at once.
- `operator_session`: a console login. Only a SHA-256 of the cookie's random token is stored, so
  a copy of the table logs nobody in; `csrf` is the token every console form must carry.
- `audit_entry`: one row per operator action, written in the same transaction as the change, with
  the record's state before and after as JSON.
- `worker_pass`: per kind of worker pass (payouts, transfers, ...), when it last ran and
  succeeded, how long it took, and its cumulative counts. The worker may run on another host
  than the web app: `/metrics` reads what only the worker knows from here.

Nothing here imports application code.
"""

import peewee as pw
from peewee_migrate import Migrator


class LongTextField(pw.TextField):
    field_type = "LONGTEXT"


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class Operator(pw.Model):
        operator_id = pw.CharField(max_length=24, primary_key=True)
        name = pw.CharField(max_length=64, unique=True)
        passwd_hash = pw.CharField(max_length=100)
        disabled_at = pw.BigIntegerField(null=True)
        created_at = pw.BigIntegerField()
        updated_at = pw.BigIntegerField()

        class Meta:
            table_name = "operator"

    @migrator.create_model
    class OperatorSession(pw.Model):
        token_hash = pw.CharField(max_length=64, primary_key=True)
        operator_id = pw.CharField(max_length=24, index=True)
        csrf = pw.CharField(max_length=64)
        expires_at = pw.BigIntegerField(index=True)
        created_at = pw.BigIntegerField()

        class Meta:
            table_name = "operator_session"

    @migrator.create_model
    class AuditEntry(pw.Model):
        audit_id = pw.CharField(max_length=24, primary_key=True)
        operator = pw.CharField(max_length=80)
        action = pw.CharField(max_length=32)
        target = pw.CharField(max_length=64, index=True)
        reason = pw.CharField(max_length=255, default="")
        before = LongTextField()
        after = LongTextField()
        created_at = pw.BigIntegerField(index=True)

        class Meta:
            table_name = "audit_entry"

    @migrator.create_model
    class WorkerPass(pw.Model):
        name = pw.CharField(max_length=32, primary_key=True)
        runs = pw.BigIntegerField(default=0)
        failures = pw.BigIntegerField(default=0)
        last_started_at = pw.BigIntegerField(default=0)
        last_success_at = pw.BigIntegerField(default=0)
        last_ms = pw.FloatField(default=0)
        counts = LongTextField()
        updated_at = pw.BigIntegerField()

        class Meta:
            table_name = "worker_pass"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    for table in ("worker_pass", "audit_entry", "operator_session", "operator"):
        migrator.remove_model(table)
