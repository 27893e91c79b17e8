"""SQLite's write transactions take turns (db.writer_turn): one at a time across threads and processes,
the next one let in when the turn is given back, and nothing held after a transaction ends."""

import multiprocessing
import os
import threading
from pathlib import Path

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


def _while_first_holds(first, holding, release, second, order):
    """Run first in a thread until it sets holding, then second in another: second must still be
    waiting 0.3 s later; then release, and both end. -> what order held while second waited."""
    a = threading.Thread(target=first)
    a.start()
    assert holding.wait(5)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.3)
    assert b.is_alive()  # waiting for the turn
    while_waiting = list(order)
    release.set()
    a.join(5)
    b.join(5)
    assert not a.is_alive() and not b.is_alive()
    return while_waiting


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

    assert _while_first_holds(first, inside, release, second, order) == ["first in"]  # second not inside
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


def _waiting_in_the_kernel(lock_file):
    """/proc/locks' lines of flock waiters ("->") on lock_file from this process."""
    inode = os.stat(lock_file).st_ino
    return [
        line
        for line in Path("/proc/locks").read_text().splitlines()
        if "->" in line
        and "FLOCK" in line
        and line.split()[5] == str(os.getpid())
        and line.split()[6].endswith(f":{inode}")
    ]


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="Linux's /proc/locks shows who waits for a flock")
def test_each_thread_waits_for_the_turn_in_the_one_queue_of_every_writer(sqlite_db):
    """A waiting thread waited first behind its own process's lock, and only then in the kernel:
    with 16 writers in four gunicorn workers, one worker's threads all waited behind another's
    turns, whatever their place (the applied webhook's p99 at 3-4× its p50). Now every thread of
    every process waits for the same flock, in the kernel."""
    database, path = sqlite_db
    inside, release = threading.Event(), threading.Event()

    @transaction
    def holds():
        inside.set()
        release.wait(5)

    @transaction
    def waits():
        database.execute_sql("INSERT INTO seen (who) VALUES ('waited')")

    holder = threading.Thread(target=holds)
    holder.start()
    assert inside.wait(5)
    waiter = threading.Thread(target=waits)
    waiter.start()
    try:
        lock_file = f"{path}-writer.lock"
        for _ in range(50):
            if _waiting_in_the_kernel(lock_file):
                break
            threading.Event().wait(0.05)
        assert len(_waiting_in_the_kernel(lock_file)) == 1
    finally:
        release.set()
        holder.join(5)
        waiter.join(5)
    assert [r[0] for r in database.execute_sql("SELECT who FROM seen")] == ["waited"]


def _open_lock_files(lock_file):
    return [
        f for f in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{f}") == os.path.realpath(lock_file)
    ]


def test_a_thread_that_ends_closes_its_file_description_of_the_turn(sqlite_db):
    database, path = sqlite_db

    @transaction
    def write():
        database.execute_sql("INSERT INTO seen (who) VALUES ('thread')")

    threads = [threading.Thread(target=write) for _ in range(20)]
    for t in threads:
        t.start()
        t.join(5)
    assert database.execute_sql("SELECT COUNT(*) FROM seen").fetchone()[0] == 20
    assert _open_lock_files(f"{path}-writer.lock") == []  # each thread's went with it


def test_a_thread_that_enters_its_turn_again_keeps_it_until_it_leaves_the_outer_one(sqlite_db):
    """A transaction inside a single statement's turn: leaving the inner turn gave away the outer
    one (a flock is not counted), and another writer got in while the first was still inside."""
    database, _ = sqlite_db
    left_inner, release, order = threading.Event(), threading.Event(), []

    def holder():
        with writer_turn(database):
            with writer_turn(database):
                pass
            left_inner.set()
            release.wait(5)
            order.append("outer left")

    @transaction
    def other():
        order.append("other in")

    assert _while_first_holds(holder, left_inner, release, other, order) == []  # still the first thread's turn
    assert order == ["outer left", "other in"]
