"""SQLite's write transactions take turns (db.writer_turn): one at a time across threads and processes,
the next one let in when the turn is given back, and nothing held after a transaction ends."""

import multiprocessing
import os
import threading

import peewee
import pytest

from payapi.infra import db as dbmod
from payapi.infra.db import bind, open_database, transaction, writer_turn


@pytest.fixture
def sqlite_db(tmp_path):
    before = dbmod.db.obj
    database = bind(open_database(f"sqlite:///{tmp_path / 'turns.db'}"))
    database.execute_sql("CREATE TABLE seen (id INTEGER PRIMARY KEY, who TEXT)")
    yield database, tmp_path / "turns.db"
    database.close()
    if before is not None:
        dbmod.db.initialize(before)


def _other_process_writes(path, started, done):
    """In a forked child: a transaction of its own on the same file, through the same code."""
    database = bind(open_database(f"sqlite:///{path}"))
    started.set()

    @transaction
    def write():
        database.execute_sql("INSERT INTO seen (who) VALUES ('child')")

    write()
    done.set()
    os._exit(0)


def test_a_thread_waits_for_the_turn_and_gets_it_when_it_is_given_back(sqlite_db):
    database, _ = sqlite_db
    order, inside, release = [], threading.Event(), threading.Event()

    @transaction
    def first():
        order.append("first in")
        inside.set()
        release.wait(5)
        database.execute_sql("INSERT INTO seen (who) VALUES ('first')")
        order.append("first out")

    @transaction
    def second():
        order.append("second in")
        database.execute_sql("INSERT INTO seen (who) VALUES ('second')")

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(5)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.3)
    assert b.is_alive() and order == ["first in"]  # waiting for the turn, not inside
    release.set()
    a.join(5)
    b.join(5)
    assert order == ["first in", "first out", "second in"]
    assert [r[0] for r in database.execute_sql("SELECT who FROM seen ORDER BY id")] == ["first", "second"]


# Forked as gunicorn forks its workers (the child must get turns of its own); the child only runs
# the transaction below, so the warning about forking a process with threads does not apply.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_another_process_waits_for_the_turn(sqlite_db):
    database, path = sqlite_db
    context = multiprocessing.get_context("fork")
    started, done = context.Event(), context.Event()
    with writer_turn(database):  # this process holds the turn (as a transaction does)
        child = context.Process(target=_other_process_writes, args=(path, started, done))
        child.start()
        assert started.wait(10)
        assert not done.wait(0.5)  # the child's transaction waits for the turn
        assert database.execute_sql("SELECT COUNT(*) FROM seen").fetchone()[0] == 0
    assert done.wait(10)  # given back: the child's transaction runs
    child.join(10)
    assert [r[0] for r in database.execute_sql("SELECT who FROM seen")] == ["child"]


def test_a_failed_transaction_gives_the_turn_back(sqlite_db):
    database, _ = sqlite_db

    @transaction
    def fails():
        database.execute_sql("INSERT INTO seen (who) VALUES ('rolled back')")
        raise ValueError("no")

    with pytest.raises(ValueError):
        fails()

    @transaction
    def works():
        database.execute_sql("INSERT INTO seen (who) VALUES ('after')")

    thread = threading.Thread(target=works)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert [r[0] for r in database.execute_sql("SELECT who FROM seen")] == ["after"]


def test_no_turn_for_an_in_memory_database_or_mysql():
    assert writer_turn(peewee.SqliteDatabase(":memory:")) is writer_turn(peewee.MySQLDatabase("x"))
    assert writer_turn(peewee.SqliteDatabase(":memory:")).__enter__() is not None
