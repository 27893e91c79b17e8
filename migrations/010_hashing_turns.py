"""Per-user bcrypt fairness: at most one slow hash in flight per user, and a rate of their own.

hashing_turn.busy_until: while a request of this user waits on bcrypt (a lease, so a killed
process frees it); hashing_turn.tat: the GCRA "theoretical arrival time" of the user's next
slow operation (one column is a whole rate limiter with bursts).
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class HashingTurn(pw.Model):
        user_id = pw.CharField(max_length=24, primary_key=True)
        busy_until = pw.BigIntegerField(default=0)
        tat = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "hashing_turn"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_model("hashing_turn")
