"""What an operator on call needs (issue 23).

- `worker_pass.failures_in_a_row`: passes of that kind that failed outright since its last success
  (0 after a success), for the health page and an alert.
- `health_note`: one row per thing whose last trouble is worth showing, upserted when it happens
  (`pingpp`: Ping++'s last error, with when).
- `audit_entry.outcome` (`performed`, or `refused` when Ping++'s answer refused the action) and
  `audit_entry.refusal` (why it was refused).

Numbered 014, not 011: other branches in flight already add 011-013.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_fields("worker_pass", failures_in_a_row=pw.IntegerField(default=0))
    migrator.add_fields("audit_entry", outcome=pw.CharField(max_length=16, default="performed"),
                        refusal=pw.CharField(max_length=255, default=""))

    @migrator.create_model
    class HealthNote(pw.Model):
        name = pw.CharField(max_length=32, primary_key=True)
        detail = pw.CharField(max_length=255, default="")
        at = pw.BigIntegerField()

        class Meta:
            table_name = "health_note"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_model("health_note")
    migrator.remove_fields("audit_entry", "outcome", "refusal")
    migrator.remove_fields("worker_pass", "failures_in_a_row")
