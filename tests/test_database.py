"""The database layer: migrations, retried transactions, dropped connections, row lookups."""

import os
import subprocess
import sys

import peewee
import pymysql
import pytest

from payapi.db import RowByKey, db, is_mysql, transaction
from payapi.ids import new_id
from payapi.models import ALL_MODELS, Pay, Wallet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_migrate(url):
    env = dict(os.environ, DATABASE_URL=url)
    return subprocess.run(
        [sys.executable, "-m", "payapi", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_migrate_command_is_safe_to_run_twice(database, database_url):
    # The session database was migrated by the fixtures; a release phase running again applies nothing.
    again = run_migrate(database_url)
    assert again.returncode == 0, again.stderr
    assert "applied 0 migration(s)" in again.stdout


def test_migrations_create_every_column_the_models_use(database):
    for model in ALL_MODELS:
        columns = {c.name for c in db.get_columns(model._meta.table_name)}
        assert columns == {f.column_name for f in model._meta.sorted_fields}, model.__name__


def test_migrate_command_builds_an_empty_sqlite_database_from_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = run_migrate(url)
    assert first.returncode == 0, first.stderr
    assert "applied 1 migration(s): 001_initial" in first.stdout


def test_transaction_runs_again_after_a_deadlock(database):
    calls = []

    @transaction
    def credit_after_one_deadlock(user_id):
        calls.append(1)
        Wallet.insert(user_id=user_id, balance=0, updated_at=0).execute()
        if len(calls) == 1:
            raise peewee.OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
        return "done"

    user_id = new_id()
    assert credit_after_one_deadlock(user_id) == "done"
    assert len(calls) == 2
    # The first attempt's insert was rolled back, so exactly one row exists.
    assert Wallet.select().where(Wallet.user_id == user_id).count() == 1


def test_transaction_does_not_retry_other_errors(database):
    calls = []

    @transaction
    def broken():
        calls.append(1)
        raise peewee.IntegrityError(1062, "Duplicate entry")

    with pytest.raises(peewee.IntegrityError):
        broken()
    assert len(calls) == 1


def test_row_by_key_reads_the_same_row_as_peewee(database):
    pay_id = new_id()
    Pay.create(
        pay_id=pay_id, type="note", note_id=new_id(), expert_id=new_id(), user_id=new_id(), amount=1, money=1,
        channel="wx", subject="问题", created_at=1_700_000_000_123, updated_at=1_700_000_000_456,
    )
    by_key = RowByKey(Pay, Pay.pay_id)
    assert by_key(pay_id).__data__ == Pay.get(Pay.pay_id == pay_id).__data__
    assert by_key(new_id()) is None


@pytest.mark.only_db("mariadb")  # only a server can drop a connection
def test_a_connection_the_server_dropped_does_not_fail_the_next_request(app, database, mariadb_proc):
    connection_id = db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
    admin = pymysql.connect(unix_socket=mariadb_proc.unixsocket, user="root")
    with admin.cursor() as cur:
        cur.execute(f"KILL {int(connection_id)}")
    admin.close()
    assert app.get("/healthz").json == {"code": 900, "db": "ok"}
    assert db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0] != connection_id
    assert is_mysql()
