"""The database layer: migrations, retried transactions, dropped connections, row lookups."""

import json
import os
import subprocess
import sys
import threading
import time

import peewee
import pymysql
import pytest

from payapi.domain.ids import new_id
from payapi.infra import outbox
from payapi.infra.db import RowByKey, bind, binlog_problem, binlog_refusal, db, is_mysql, lock_row, transaction
from payapi.infra.models import ALL_MODELS, GENERATED_COLUMNS, Pay, Refund, Wallet, Withdrawal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
        table = model._meta.table_name
        # SQLite's table_info leaves a generated column out; MariaDB lists it.
        columns = {c.name for c in db.get_columns(table)} - GENERATED_COLUMNS.get(table, set())
        assert columns == {f.column_name for f in model._meta.sorted_fields}, model.__name__


def all_migrations():
    return sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "migrations")) if name[0].isdigit())


@pytest.fixture
def empty_database_url(db_backend, tmp_path, request):
    """A database with no tables at all, on the backend under test."""
    if db_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    url = request.getfixturevalue("mariadb_url")
    name = "payapi_fresh_" + new_id()[-8:]
    admin = pymysql.connect(unix_socket=request.getfixturevalue("mariadb_proc").unixsocket, user="root")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    admin.close()
    return url.rsplit("/", 1)[0] + "/" + name


def test_migrate_command_builds_an_empty_database_from_nothing(empty_database_url):
    first = run_migrate(empty_database_url)
    assert first.returncode == 0, first.stderr
    names = all_migrations()
    assert f"applied {len(names)} migration(s): {', '.join(names)}" in first.stdout


def test_pay_info_migration_fills_in_pays_written_before_it(empty_database_url):
    from peewee_migrate import Router

    from payapi.__main__ import MIGRATIONS
    from payapi.contract.render import pay_info_json
    from payapi.infra.db import open_database

    database = open_database(empty_database_url)
    router = Router(database, migrate_dir=MIGRATIONS)
    router.run("001_initial")
    pay_id = new_id()
    database.execute_sql(
        "INSERT INTO pay (pay_id, type, o_id, note_id, expert_id, user_id, amount, money, currency, channel, subject, "
        "description, charge, status, client_status, credited, amount_refunded, client_ip, platform, store, "
        "created_at, updated_at) VALUES ({})".format(", ".join([database.param] * 22)),
        (
            pay_id,
            "order",
            new_id(),
            "",
            new_id(),
            new_id(),
            500,
            400,
            "cny",
            "alipay",
            "旧的支付",
            "",
            '{"id": "ch_1"}',
            "pending",
            "pending",
            0,
            0,
            "",
            "",
            "",
            1_466_657_198_190,
            1_466_657_198_190,
        ),
    )
    router.run()
    bind(database)
    try:
        pay = Pay.get(Pay.pay_id == pay_id)
        assert json.loads(pay.info) == json.loads(pay_info_json(pay))
        assert json.loads(pay.info)["createdAt"] == "2016-06-23T04:46:38.190Z"
    finally:
        database.close()


def test_hardening_migration_keeps_failures_as_times_and_old_reports_as_single_ones(empty_database_url):
    from peewee_migrate import Router

    from payapi.__main__ import MIGRATIONS
    from payapi.infra.db import open_database

    database = open_database(empty_database_url)
    router = Router(database, migrate_dir=MIGRATIONS)
    router.run("002_pay_info")
    counting, locked = new_id(), new_id()
    database.execute_sql(
        "INSERT INTO lockout (user_id, kind, failures, window_start, locked_until) VALUES ({0}), ({0})".format(
            ", ".join([database.param] * 5)
        ),
        (counting, "passwd", 3, 1_466_657_198_190, 0, locked, "answers", 5, 1_466_657_000_000, 1_466_667_000_000),
    )
    database.execute_sql(
        "INSERT INTO client_report (pay_id, user_id, status, client_ip, platform, store, created_at) "
        "VALUES ({})".format(", ".join([database.param] * 7)),
        (new_id(), counting, "success", "1.2.3.4", "ios", "AppStore", 1_466_657_198_190),
    )
    router.run()
    try:
        reports = database.execute_sql("SELECT status, times, created_at, last_at FROM client_report").fetchall()
        assert [tuple(r) for r in reports] == [("success", 1, 1_466_657_198_190, 1_466_657_198_190)]
        rows = database.execute_sql("SELECT user_id, failed_at, failures, locked_until FROM lockout").fetchall()
        assert sorted(rows) == sorted(
            [
                (counting, "1466657198190,1466657198190,1466657198190", 3, 0),
                (locked, ",".join(["1466657000000"] * 5), 5, 1_466_667_000_000),
            ]
        )
        if isinstance(database, peewee.MySQLDatabase):
            cursor = database.execute_sql(
                "SELECT COLLATION_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'lockout' AND COLUMN_NAME = 'failed_at'"
            )
            # The table's binary NO PAD collation (003), which the new column inherits.
            assert cursor.fetchone() == ("utf8mb4_nopad_bin",)
    finally:
        database.close()


def test_transaction_runs_again_after_a_deadlock(database):
    calls = []

    @transaction
    def credit_after_one_deadlock(user_id):
        calls.append(1)
        Wallet.insert(user_id=user_id, updated_at=0).execute()
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


def a_note_pay(**fields):
    """A pay of 1 fen for a question note, not saved."""
    return Pay(
        pay_id=new_id(),
        type="note",
        note_id=new_id(),
        expert_id=new_id(),
        user_id=new_id(),
        amount=1,
        money=1,
        channel="wx",
        subject="问题",
        **fields,
    )


def stored_note_pay(**fields):
    """-> the id of a_note_pay(**fields), inserted through the outbox."""
    pay = a_note_pay(**fields)
    outbox.save(pay, force_insert=True)
    return pay.pay_id


def test_row_by_key_reads_the_same_row_as_peewee(database):
    pay_id = stored_note_pay(created_at=1_700_000_000_123, updated_at=1_700_000_000_456)
    by_key = RowByKey(Pay, Pay.pay_id)
    assert by_key(pay_id)._asdict() == Pay.get(Pay.pay_id == pay_id).__data__
    assert by_key(new_id()) is None


def test_a_row_by_key_is_read_only_and_cannot_be_saved(database):
    pay_id = stored_note_pay(created_at=1, updated_at=1)
    row = RowByKey(Pay, Pay.pay_id, columns=(Pay.user_id, Pay.info))(pay_id)
    assert not hasattr(row, "save")
    with pytest.raises(AttributeError):
        row.user_id = new_id()


def test_a_bulk_update_of_what_pay_info_is_made_of_is_refused(database):
    pay_id = stored_note_pay(created_at=1, updated_at=1)
    with pytest.raises(TypeError):
        Pay.update(status="paid").where(Pay.pay_id == pay_id).execute()
    assert Pay.update(check_after=5).where(Pay.pay_id == pay_id).execute() == 1  # not part of the info


@pytest.mark.parametrize("model", [Pay, Refund, Withdrawal])
def test_a_record_the_order_service_hears_of_is_saved_only_through_the_outbox(database, model):
    with pytest.raises(TypeError, match="outbox.save"):
        model().save()
    with pytest.raises(TypeError, match="outbox.save"):
        model.create()
    assert model.select().count() == 0


def test_saving_a_pay_writes_its_info_and_its_announced_moves_in_one_go(database, settings):
    from payapi.contract.render import pay_info_json
    from payapi.domain.lifecycles import PAY, PayStatus
    from payapi.infra.models import Notification

    outbox.configure(settings)  # a NOTIFY_URL: messages are written (create_app does this; no app here)

    pay = PAY.begin(a_note_pay(), 1)
    outbox.save(pay, force_insert=True)
    assert Notification.select().count() == 0
    PAY.move(pay, PayStatus.PAID, 2)
    with db.atomic():
        outbox.save(pay)
    stored = Pay.get_by_id(pay.pay_id)
    assert json.loads(stored.info)["status"] == "paid" and json.loads(stored.info) == json.loads(pay_info_json(stored))
    (message,) = Notification.select()
    assert message.subject_id == pay.pay_id and json.loads(message.payload)["data"]["pay"]["status"] == "paid"
    outbox.save(pay)  # nothing new announced: nothing more written
    assert Notification.select().count() == 1


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


@pytest.mark.only_db("mariadb")  # SQLite's writers take turns: there a second writer waits by design
def test_making_a_missing_row_does_not_wait_for_another_transaction_making_a_different_one(database):
    """An expert's first credit makes their wallet row (lock_row: a locking read that finds nothing,
    then an insert). Under REPEATABLE READ the read locked the gap where the row would go, so two
    new experts' credits waited for each other and deadlocked (1213, retried: the applied webhook's
    tail on MariaDB). Under READ COMMITTED a locking read that finds nothing locks nothing."""
    first_holds, release = threading.Event(), threading.Event()

    def first():
        try:
            with db.atomic():
                lock_row(Wallet, {"updated_at": 1}, user_id="expert-b")
                first_holds.set()
                release.wait(10)
        finally:
            db.close()

    holder = threading.Thread(target=first)
    holder.start()
    timer = threading.Timer(3, release.set)  # under gap locks the second waits until the first ends
    try:
        assert first_holds.wait(10)
        timer.start()
        started = time.monotonic()
        with db.atomic():
            lock_row(Wallet, {"updated_at": 2}, user_id="expert-c")
        waited = time.monotonic() - started
    finally:
        release.set()
        timer.cancel()
        holder.join()
    assert waited < 1.5, f"making expert-c's wallet waited {waited:.1f} s for expert-b's transaction"
    assert {w.user_id for w in Wallet.select()} == {"expert-b", "expert-c"}
    Wallet.delete().execute()  # no postings behind them: the books' check would call them wrong


def test_a_statement_binary_log_is_named_as_the_reason_writes_would_fail(database):
    # READ COMMITTED writes cannot be logged as statements (InnoDB error 1665): start-up refuses.
    assert binlog_problem(db.obj) is None  # SQLite; the test MariaDB runs without a binary log
    assert "binlog_format=ROW" in binlog_refusal("1", "STATEMENT")
    assert "binlog_format=ROW" in binlog_refusal(1, "statement")
    assert binlog_refusal("1", "ROW") is None and binlog_refusal("1", "MIXED") is None
    assert binlog_refusal("0", "STATEMENT") is None  # no binary log, nothing refused


def test_a_row_lock_row_makes_is_the_row_stored(database):
    # A new row is not read back after its insert: what lock_row returns must be what went in.
    with db.atomic():
        made = lock_row(Wallet, {"updated_at": 7}, user_id="expert-new")
        assert (made.user_id, made.pending, made.available, made.updated_at) == ("expert-new", 0, 0, 7)
        made.available = 5
        made.save()  # only what changed is written, as for a row read under the lock
    stored = Wallet.get_by_id("expert-new")
    assert (stored.pending, stored.available, stored.updated_at) == (0, 5, 7)
    with db.atomic():
        again = lock_row(Wallet, {"updated_at": 9}, user_id="expert-new")  # found: the defaults are not used
        assert (again.available, again.updated_at) == (5, 7)
    Wallet.delete().execute()  # no postings behind it: the books' check would call it wrong
