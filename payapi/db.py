"""The database: one proxy bound at start-up, write transactions that survive lock conflicts."""

import collections
import functools
import logging
import random
import time

import peewee
from playhouse.db_url import connect, parse, register_database
from playhouse.shortcuts import ReconnectMixin

log = logging.getLogger(__name__)

db = peewee.DatabaseProxy()


class MySQLDatabase(ReconnectMixin, peewee.MySQLDatabase):
    """MySQL/MariaDB that reconnects when the server dropped an idle connection (restart, wait_timeout)."""


for scheme in ("mysql", "mysql+pymysql"):
    register_database(MySQLDatabase, scheme)

# MySQL/MariaDB: deadlock (also how Galera reports a certification conflict at commit),
# lock wait timeout; both mean "nothing was written, run the transaction again".
RETRYABLE_MYSQL_ERRORS = {1213, 1205}
# The connection went away mid-transaction: reconnect and run it again.
LOST_CONNECTION_ERRORS = {2006, 2013, 2014, 2055}


def open_database(url):
    """A peewee database for a DATABASE_URL; SQLite gets WAL and writer serialisation."""
    if url.startswith("sqlite"):
        return connect(
            url,
            pragmas={"journal_mode": "wal", "busy_timeout": 10_000, "synchronous": "normal"},
            # BEGIN IMMEDIATE: a write transaction takes the write lock before it reads, which is
            # what SELECT ... FOR UPDATE gives us on MySQL.
            lock_type="IMMEDIATE",
        )
    if url.startswith("mysql://") or url.startswith("mysql+pymysql://"):
        # peewee's MySQLDatabase already uses utf8mb4 and autocommit outside transactions.
        params = parse(url)
        if "passwd" in params:
            params["password"] = params.pop("passwd")  # PyMySQL's current name
        database = params.pop("database")
        return MySQLDatabase(database, connect_timeout=5, read_timeout=30, write_timeout=30, **params)
    return connect(url)


def bind(database):
    db.initialize(database)
    return database


def is_mysql():
    return isinstance(db.obj, peewee.MySQLDatabase)


def for_update(query):
    """Lock the selected rows until the transaction ends (SQLite's IMMEDIATE transaction already does)."""
    return query.for_update() if is_mysql() else query


def _error_number(exc):
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    orig = getattr(exc, "orig", None)
    if orig is not None and orig.args and isinstance(orig.args[0], int):
        return orig.args[0]
    return None


def is_retryable(exc):
    if not isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)):
        return False
    number = _error_number(exc)
    if number in RETRYABLE_MYSQL_ERRORS or number in LOST_CONNECTION_ERRORS:
        return True
    return "database is locked" in str(exc)


def transaction(func=None, *, attempts=8):
    """Run func in one write transaction; run it again from the start on a deadlock or lost connection.

    Everything func does must be database work (no HTTP calls), so running it again is safe.
    """
    if func is None:
        return functools.partial(transaction, attempts=attempts)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if db.in_transaction():
            return func(*args, **kwargs)
        for attempt in range(1, attempts + 1):
            try:
                with db.atomic():
                    return func(*args, **kwargs)
            except Exception as exc:
                if attempt == attempts or not is_retryable(exc):
                    raise
                if _error_number(exc) in LOST_CONNECTION_ERRORS:
                    db.close()
                log.info("retrying %s after %s (attempt %d)", func.__name__, _error_number(exc) or exc, attempt)
                time.sleep(random.uniform(0.005, 0.02) * attempt)
        raise AssertionError("unreachable")

    return wrapper


def ensure_connection():
    """Open this thread's connection if it is not open; it is kept for the next request."""
    if db.is_closed():
        db.connect(reuse_if_open=True)


def lock_row(model, defaults, **key):
    """The row with this key, created from defaults if missing, locked until the transaction ends.

    SELECT ... FOR UPDATE first: an INSERT IGNORE that hits an existing row takes a shared lock
    on it, and two requests both upgrading that to the exclusive one deadlock (MySQL 1213) on
    every parallel call. Only a missing row is inserted, with INSERT IGNORE, so two requests
    creating the same row do not fail on the unique key.
    """
    query = model.select()
    for name, value in key.items():
        query = query.where(getattr(model, name) == value)
    row = for_update(query).first()
    if row is None:
        model.insert(**key, **defaults).on_conflict_ignore().execute()
        row = for_update(query).get()
    return row


class RowByKey:
    """`Model.select(*columns).where(field == value, ...).first()` for hot paths, the SQL built once.

    peewee builds the SQL text of a query on every execution; for a 20-column SELECT that is
    ~400 µs, about twice the rest of a request. The text only depends on the model and the
    database's dialect, so it is built on first use and reused. Rows come back as read-only
    named tuples of the selected columns: a partial row can never be saved by mistake.
    """

    def __init__(self, model, *fields, columns=None):
        self.model, self.fields = model, fields
        self.selected = columns or model._meta.sorted_fields
        self.row = collections.namedtuple(f"{model.__name__}Row", [f.name for f in self.selected])
        self._sql = {}

    def __call__(self, *values):
        database = db.obj
        sql = self._sql.get(id(database))
        if sql is None:
            where = [field == value for field, value in zip(self.fields, values)]
            sql = self._sql[id(database)] = self.model.select(*self.selected).where(*where).sql()[0]
        row = database.execute_sql(sql, values).fetchone()
        return None if row is None else self.row._make(row)
