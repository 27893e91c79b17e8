"""When the worker next looks at an item: Pay.check_after, and indexes for the worker's due lists.

A pending pay the worker could not settle, or whose check raised, waits until check_after
instead of being first again on the next pass.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_fields("pay", check_after=pw.BigIntegerField(default=0))
    migrator.add_index("pay", "status", "check_after")
    migrator.add_index("withdrawal", "status", "lease_until")


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.drop_index("withdrawal", "status", "lease_until")
    migrator.drop_index("pay", "status", "check_after")
    migrator.remove_fields("pay", "check_after")
