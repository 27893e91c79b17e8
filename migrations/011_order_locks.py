"""One lock per order or note, and a pay's unannounced close.

- `order_lock`: a row per order or note (`order:<o_id>`, `note:<note_id>`), made on first use.
  Whatever may make, pay or reopen a pay of that order takes this row's lock first, so "is the
  order paid?" and "is there a pending pay?" are answered and acted on by one transaction at a
  time. `locks` is written by every holder: on Galera, where a row lock on one node does not
  stop another node, two holders on different nodes then conflict when they commit.
- `pay.closing_for`: set while a pay is closed for a replacement (that pay's id) and its close
  is not yet announced: the replacement may still fail at Ping++ and reopen it.

Nothing here imports application code.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class OrderLock(pw.Model):
        order_key = pw.CharField(max_length=40, primary_key=True)
        locks = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "order_lock"

    migrator.add_fields("pay", closing_for=pw.CharField(max_length=24, null=True))


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_fields("pay", "closing_for")
    migrator.remove_model("order_lock")
