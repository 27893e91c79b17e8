"""The test databases: a real MariaDB (pytest-mysql, speaking TLS), one migrated database per URL
for the session, the invariants every database test ends on, and the books as a test reads them."""

import json
import os
import re
import tempfile
from pathlib import Path

from peewee_migrate import Router
from pytest_mysql import factories

from payapi.__main__ import MIGRATIONS
from payapi.contract.render import pay_info_json
from payapi.infra.db import bind, db, is_mysql, open_database
from payapi.infra.models import ALL_MODELS, JournalEntry, Pay, Posting, Wallet
from payapi.money import books, statement

MARIADB_DB = "payapi_test"  # not "test": MariaDB creates that one itself

# The server also speaks TLS, with a certificate for 127.0.0.1 from a CA the tests make
# (mariadb_tls), so the ssl-mode forms of a database URL are tried against a real server.
MARIADB_TLS_DIR = Path(tempfile.gettempdir()) / f"payapi-tests-mariadb-tls-{os.getpid()}"

# pytest-mysql's process fixture (a conftest names it): the server the MariaDB tests share.
mariadb_server = factories.mysql_proc(
    host="127.0.0.1",
    # Root may start the server here; fsync-free settings keep the suite fast (the data is thrown away).
    params="--user=root --skip-log-bin --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 "
    "--innodb-lock-wait-timeout=10 --max-connections=500 "
    f"--ssl-ca={MARIADB_TLS_DIR}/ca.pem --ssl-cert={MARIADB_TLS_DIR}/server.pem --ssl-key={MARIADB_TLS_DIR}/server-key.pem",
)

_databases = {}


def migrated(url):
    """One database per URL for the session, with the real migrations applied."""
    if url not in _databases:
        database = open_database(url)
        bind(database)
        Router(database, migrate_dir=MIGRATIONS).run()
        _databases[url] = database
    return _databases[url]


def empty():
    """Every row of every table gone (the schema stays)."""
    for model in ALL_MODELS:
        model.delete().execute()


def assert_books_balance():
    """The books' invariant: every entry balanced, the whole book balanced, every wallet equal to its postings."""
    assert books.check() == [], books.check()


def assert_statements_add_up():
    """Each expert's statement, read page by page as GET /rest/pay/bills reads it, adds up to their
    wallet: the lines' amounts sum to the balance, and the newest line's balances are the wallet's."""
    for wallet in Wallet.select():
        lines = statement.lines_of(wallet.user_id)
        assert sum(line.amount for line in lines) == wallet.balance, (wallet.user_id, lines)
        newest = (lines[0].balance_after, lines[0].available_after) if lines else (0, 0)
        assert newest == (wallet.balance, wallet.available), (wallet.user_id, lines[:3])


def assert_pay_info_current():
    """The fast path's guard: every pay's stored info is what its columns make now."""
    stale = [p.pay_id for p in Pay.select() if p.info is None or json.loads(p.info) != json.loads(pay_info_json(p))]
    assert not stale, f"Pay.info is stale for {stale}"


def explain(query):
    """The plan the bound database would run query with: MySQL's EXPLAIN rows as dicts, or SQLite's
    EXPLAIN QUERY PLAN lines."""
    sql, params = query.sql()
    if is_mysql():
        cursor = db.execute_sql("EXPLAIN " + sql, params)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return [row[-1] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()]


def assert_one_index_search(query, mysql_key, sqlite_search, unsorted=True):
    """query is one search of one index on the bound database: MySQL's single EXPLAIN step uses
    mysql_key; SQLite's plan begins with a line matching sqlite_search (a regular expression).
    unsorted: the index gives the order too (no filesort or temporary table; SQLite's plan has no
    "USE TEMP B-TREE" line after the search)."""
    plan = explain(query)
    if is_mysql():
        (step,) = plan
        assert step["key"] == mysql_key and step["type"] in ("range", "ref"), plan
        if unsorted:
            assert "filesort" not in (step["Extra"] or "") and "temporary" not in (step["Extra"] or ""), plan
    else:
        assert re.fullmatch(sqlite_search, plan[0]) and (len(plan) == 1 or not unsorted), plan


def analyze(*tables):
    """Fresh statistics for the planner, as a database that has lived a while has them."""
    if is_mysql():
        db.execute_sql(f"ANALYZE TABLE {', '.join(tables)}")
    else:
        db.execute_sql("ANALYZE")


def ledger_of(user_id):
    """The expert's side of the books as (kind, reference, amount), oldest first: each entry's net
    change of the expert's two accounts (credits positive), entries that touch them only."""
    accounts = (books.expert(user_id, books.PENDING), books.expert(user_id, books.AVAILABLE))
    rows = (
        Posting.select(JournalEntry.kind, JournalEntry.reference, Posting.credit, Posting.debit, Posting.account)
        .join(JournalEntry, on=(Posting.entry_id == JournalEntry.entry_id))
        .where(Posting.account.in_(accounts))
        .order_by(JournalEntry.entry_id, Posting.id)
        .tuples()
    )
    moved = {}
    for kind, reference, credit, debit, _ in rows:
        moved[(kind, reference)] = moved.get((kind, reference), 0) + credit - debit
    # A release moves money between the expert's own accounts: no change to what they are owed.
    return [(kind, reference, amount) for (kind, reference), amount in moved.items() if kind != "release"]


def balance_of(user_id):
    """The expert's balance (pending + available), or None when the user has no wallet."""
    wallet = Wallet.get_or_none(Wallet.user_id == user_id)
    return None if wallet is None else wallet.balance


def money_moved():
    """Whether any money movement was booked at all."""
    return JournalEntry.select().exists()
