"""Pay.info: the pay as the app sees it, stored beside the row so a read takes two columns.

Existing rows are filled in here; from then on Pay.save() keeps it current. The view is frozen
here as it was when this migration was written: a migration never imports live application
code, so applying it gives the same result whatever the application later becomes.
"""

import datetime
import json

import peewee as pw
from peewee_migrate import Migrator

COLUMNS = [
    "pay_id", "o_id", "note_id", "expert_id", "user_id", "amount", "money", "charge", "description",
    "client_status", "status", "subject", "currency", "channel", "type", "created_at", "updated_at",
]


class LongTextField(pw.TextField):
    field_type = "LONGTEXT"


def _iso(ms):
    dt = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _info(row):
    return {
        "pay_id": row["pay_id"], "o_id": row["o_id"], "note_id": row["note_id"], "expert_id": row["expert_id"],
        "userID": row["user_id"], "amount": row["amount"], "money": row["money"],
        "charge": json.loads(row["charge"]) if row["charge"] else {}, "desc": row["description"],
        "client_status": row["client_status"], "status": row["status"], "subject": row["subject"],
        "currency": row["currency"], "channel": row["channel"], "type": row["type"],
        "createdAt": _iso(row["created_at"]), "updatedAt": _iso(row["updated_at"]),
    }


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_fields("pay", info=LongTextField(null=True))

    def fill_in():
        cursor = database.execute_sql(f"SELECT {', '.join(COLUMNS)} FROM pay")
        update = "UPDATE pay SET info = %s WHERE pay_id = %s".replace("%s", database.param)
        for values in cursor.fetchall():
            row = dict(zip(COLUMNS, values))
            database.execute_sql(update, (json.dumps(_info(row), ensure_ascii=False, separators=(",", ":")), row["pay_id"]))

    migrator.run(fill_in)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_fields("pay", "info")
