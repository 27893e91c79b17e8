"""Pay.info: the pay as the app sees it, stored beside the row so a read takes two columns.

Existing rows are filled in here; from now on Pay.save() keeps it current.
"""

import json
import types

import peewee as pw
from peewee_migrate import Migrator

from payapi.views import pay_info


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
        for row in cursor.fetchall():
            pay = types.SimpleNamespace(**dict(zip(columns, row)))
            info = json.dumps(pay_info(pay), ensure_ascii=False)
            database.execute_sql("UPDATE pay SET info = %s WHERE pay_id = %s".replace("%s", database.param), (info, pay.pay_id))

    migrator.run(fill_in)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_fields("pay", "info")
