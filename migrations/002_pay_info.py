"""Pay.info: the pay as the app sees it, stored beside the row so a read takes two columns.

Existing rows are filled in here; from now on Pay.save() keeps it current.

(It first imported payapi.views.pay_info; a migration must not follow live code that may change
later, so the function is frozen below as it was when this migration was written.)
"""

import datetime
import json

import peewee as pw
from peewee_migrate import Migrator


def _iso(ms):
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def pay_info(row):
    return {
        "pay_id": row["pay_id"],
        "o_id": row["o_id"],
        "note_id": row["note_id"],
        "expert_id": row["expert_id"],
        "userID": row["user_id"],
        "amount": row["amount"],
        "money": row["money"],
        "charge": json.loads(row["charge"]) if row["charge"] else {},
        "desc": row["description"],
        "client_status": row["client_status"],
        "status": row["status"],
        "subject": row["subject"],
        "currency": row["currency"],
        "channel": row["channel"],
        "type": row["type"],
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
    }


class LongTextField(pw.TextField):
    field_type = "LONGTEXT"


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_fields("pay", info=LongTextField(null=True))

    def fill_in():
        columns = [
            "pay_id", "o_id", "note_id", "expert_id", "user_id", "amount", "money", "charge", "description",
            "client_status", "status", "subject", "currency", "channel", "type", "created_at", "updated_at",
        ]
        cursor = database.execute_sql(f"SELECT {', '.join(columns)} FROM pay")
        for values in cursor.fetchall():
            row = dict(zip(columns, values))
            info = json.dumps(pay_info(row), ensure_ascii=False)
            database.execute_sql("UPDATE pay SET info = %s WHERE pay_id = %s".replace("%s", database.param), (info, row["pay_id"]))

    migrator.run(fill_in)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_fields("pay", "info")
