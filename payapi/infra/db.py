"""The database: one proxy bound at start-up, write transactions that survive lock conflicts."""

import collections
import fcntl
import functools
import logging
import os
import random
import ssl
import threading
import time
import urllib.parse

import certifi
import peewee
from playhouse.db_url import connect
from playhouse.shortcuts import ReconnectMixin

log = logging.getLogger("payapi.db")

db = peewee.DatabaseProxy()


class MySQLDatabase(ReconnectMixin, peewee.MySQLDatabase):
    """MySQL/MariaDB that reconnects when the server dropped an idle connection (restart, wait_timeout)."""


# MySQL/MariaDB: deadlock (also how Galera reports a certification conflict at commit),
# lock wait timeout; both mean "nothing was written, run the transaction again".
RETRYABLE_MYSQL_ERRORS = {1213, 1205}
# The connection went away mid-transaction: reconnect and run it again.
LOST_CONNECTION_ERRORS = {2006, 2013, 2014, 2055}


class DatabaseUrlError(ValueError):
    """A database URL payapi cannot use; the message names what is wrong (never the password)."""


MYSQL_SCHEMES = ("mysql", "mysql2", "mysql+pymysql")
# ssl-mode as MySQL's own clients name it (Heroku add-ons and DigitalOcean write it this way).
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")


def _query(parsed):
    params = {}
    for key, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        params[key.lower().replace("_", "-")] = value
    return params


def mysql_params(url):
    """PyMySQL connect arguments for a MySQL URL as Heroku add-ons write it.

    Accepted: `mysql://`, `mysql2://` (ClearDB, Rails style), `mysql+pymysql://`;
    percent-encoded user, password and database; `?ssl-mode=DISABLED|PREFERRED|REQUIRED|
    VERIFY_CA|VERIFY_IDENTITY` (PREFERRED, PyMySQL's own default, when absent), `ssl-ca=PATH`
    (the CA for the VERIFY modes; certifi's bundle otherwise), `reconnect=true|false`
    (ClearDB; ignored: dropped connections are always reopened). Anything else is refused.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() not in MYSQL_SCHEMES:
        raise DatabaseUrlError(f"database URL scheme {parsed.scheme!r} is not supported (use mysql:// or sqlite:///)")
    try:
        port = parsed.port or 3306
    except ValueError:
        raise DatabaseUrlError("database URL has a port that is not a number") from None
    database = urllib.parse.unquote(parsed.path.lstrip("/"))
    if not parsed.hostname or not database or "/" in database:
        raise DatabaseUrlError("database URL needs a host and a database name: mysql://user:password@host:3306/name")
    params = {"host": parsed.hostname, "port": port, "database": database}
    if parsed.username:
        params["user"] = urllib.parse.unquote(parsed.username)
    if parsed.password is not None:
        # Bytes: PyMySQL would encode a str as latin-1 and fail on any other character.
        params["password"] = urllib.parse.unquote(parsed.password).encode("utf-8")
    query = _query(parsed)
    unknown = sorted(set(query) - {"ssl-mode", "ssl-ca", "reconnect"})
    if unknown:
        raise DatabaseUrlError(
            f"database URL has unknown parameter(s) {', '.join(unknown)} (known: ssl-mode, ssl-ca, reconnect)"
        )
    if query.get("reconnect", "true").lower() not in ("true", "false", "1", "0"):
        raise DatabaseUrlError("database URL: reconnect must be true or false")
    mode = query.get("ssl-mode", "PREFERRED").upper().replace("-", "_")
    if mode not in SSL_MODES:
        raise DatabaseUrlError(
            f"database URL: ssl-mode must be one of {', '.join(SSL_MODES)}, not {query['ssl-mode']!r}"
        )
    ca = query.get("ssl-ca") or None
    if ca and mode not in ("VERIFY_CA", "VERIFY_IDENTITY"):
        raise DatabaseUrlError("database URL: ssl-ca is only used with ssl-mode=VERIFY_CA or VERIFY_IDENTITY")
    if ca and not os.path.isfile(ca):
        raise DatabaseUrlError(f"database URL: ssl-ca file {ca!r} does not exist")
    if mode == "DISABLED":
        params["ssl_disabled"] = True
    elif mode == "REQUIRED":
        # TLS or no connection, without checking the certificate (MySQL's own meaning).
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        params["ssl"] = context
    elif mode in ("VERIFY_CA", "VERIFY_IDENTITY"):
        context = ssl.create_default_context(cafile=ca or certifi.where())
        context.check_hostname = mode == "VERIFY_IDENTITY"
        params["ssl"] = context
    # PREFERRED: PyMySQL's default, TLS when the server offers it.
    return params


def open_database(url):
    """A peewee database for a DATABASE_URL; SQLite gets WAL, and its writers take turns (writer_turn)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        if "?" in url:
            raise DatabaseUrlError("a sqlite:/// database URL takes no parameters")
        return connect(
            url,
            pragmas={"journal_mode": "wal", "busy_timeout": 10_000, "synchronous": "normal"},
            # BEGIN IMMEDIATE: a write transaction takes the write lock before it reads, which is
            # what SELECT ... FOR UPDATE gives us on MySQL.
            lock_type="IMMEDIATE",
        )
    params = mysql_params(url)
    # peewee's MySQLDatabase already uses utf8mb4 and autocommit outside transactions.
    return MySQLDatabase(
        params.pop("database"),
        connect_timeout=5,
        read_timeout=30,
        write_timeout=30,
        init_command=READ_COMMITTED,
        **params,
    )


# Every connection's transactions read committed rows, not a snapshot, and lock only the rows they
# find. Under InnoDB's default REPEATABLE READ a locking read that finds nothing (a new expert's
# wallet, an order's open pay) locks the gap where the row would go; two transactions making
# different rows in one gap then wait for each other's gap and deadlock (1213: ~4% of applied
# webhooks and pay creations ran twice, the MariaDB tail of issue 21). payapi never relies on gap
# locks (Galera does not carry them between nodes either): what must happen once is decided under
# a lock row (the order's, the wallet's, a claim's) or by a unique key. Reading the latest
# committed rows is also what those decisions need (a snapshot may be older than the lock).
# The binary log must then be ROW or MIXED (startup.check_tables refuses STATEMENT).
READ_COMMITTED = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"


def describe_error(exc, database=None):
    """`OperationalError 1045: Access denied ...`: the class, the server's number and message.

    Servers do not echo passwords, but should one appear (the database's own, plain or
    percent-encoded), it is masked.
    """
    number = _error_number(exc)
    args = getattr(exc, "args", ())
    message = str(args[1]) if len(args) > 1 else str(exc)
    password = getattr(database, "connect_params", {}).get("password") if database is not None else None
    if isinstance(password, bytes):
        password = password.decode("utf-8", "replace")
    if password and len(password) >= 4:
        for form in {password, urllib.parse.quote(password, safe="")}:
            message = message.replace(form, "***")
    return f"{type(exc).__name__} {number}: {message}" if number is not None else f"{type(exc).__name__}: {message}"


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
    return _write(func, attempts, atomic=True)


def single_statement(func=None, *, attempts=8):
    """Run func, which makes one write statement and nothing else, as its own transaction: no BEGIN
    and COMMIT around it (peewee's connections autocommit; on MySQL that is two round trips fewer, a
    third of a short write's cost), in SQLite's writer turn like every write, run again on a
    deadlock or lost connection like a transaction. Inside a caller's transaction it is part of it.

    Only for a statement whose effect is whole alone: one UPDATE guarded by its own WHERE, say.
    Running it again after a lost connection may find its first run done (it must say so itself).
    """
    return _write(func, attempts, atomic=False)


def _write(func, attempts, atomic):
    """transaction's and single_statement's decorator: func run again on a deadlock or a lost
    connection, unless it runs inside a caller's transaction (then it is part of it)."""
    if func is None:
        return functools.partial(_write, attempts=attempts, atomic=atomic)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if db.in_transaction():
            return func(*args, **kwargs)
        return _retried(func, args, kwargs, attempts, atomic)

    return wrapper


def _retried(func, args, kwargs, attempts, atomic):
    for attempt in range(1, attempts + 1):
        try:
            with writer_turn(db.obj):
                if not atomic:
                    return func(*args, **kwargs)
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


class _WriterTurn:
    """One SQLite write transaction at a time on this machine, waiters woken at once.

    Writers that meet at `BEGIN IMMEDIATE` are left to SQLite's busy handler, which sleeps in
    growing steps (up to 100 ms) and retries: the writer that comes back when the lock is free wins,
    not the one that waited longest, so under 16 concurrent writers a few waited seconds (p99 of an
    applied webhook 1 s against a p50 of 34 ms). Instead a writer first takes an exclusive `flock`
    on `<database>-writer.lock`, and only then `BEGIN IMMEDIATE`; the kernel wakes its waiters as
    soon as the turn is given back at the end of the transaction.

    Each thread waits through a file description of its own: flock excludes those of one process
    from each other as it does processes, so every writer on the machine (the gunicorn workers'
    threads, the worker, the commands) waits on the one flock. (Not first come, first served: the
    kernel wakes the waiters and the first to run takes it.) A lock per process in front of it
    made a thread wait behind every turn its own process's threads had queued for, then for the
    flock: a worker that had taken more of the clients' connections answered them slower, and that
    was the writes' tail (measured: docs/performance.md, "One queue for the writer turn"). A
    thread that holds the turn and enters it again (a transaction inside a single statement's
    turn) keeps it until it leaves the outer one.

    Held only around a `transaction` (database work only, never a provider call), taken before the
    transaction's first statement, so it comes first in the lock order (turn → order lock → pay →
    wallet) and cannot deadlock with them; a process that dies gives its flock back with its file
    descriptors. Writers that do not take it (a `db.atomic()` of their own, another program) still
    meet SQLite's busy handler.
    """

    def __init__(self, path):
        self.path = path
        self.local = threading.local()  # .file: this thread's _LockFile

    def __enter__(self):
        file = getattr(self.local, "file", None)
        if file is None:
            file = self.local.file = _LockFile(self.path)
        if file.depth == 0:  # a thread that holds the turn already keeps it (flock would not count)
            fcntl.flock(file.fd, fcntl.LOCK_EX)
        file.depth += 1
        return self

    def __exit__(self, *exc):
        file = self.local.file
        file.depth -= 1
        if file.depth == 0:
            fcntl.flock(file.fd, fcntl.LOCK_UN)


class _LockFile:
    """A file description of a thread's own, closed when the thread ends (its thread-local goes),
    and how many turns the thread has entered on it and not left."""

    def __init__(self, path):
        self.fd, self.depth = None, 0
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __del__(self):
        if self.fd is not None:
            os.close(self.fd)


class _NoTurn:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


_NO_TURN = _NoTurn()
_turns: dict[str, "_WriterTurn | _NoTurn"] = {}
_turns_lock = threading.Lock()


def _forget_turns():
    """In a forked child (gunicorn's workers): turns of its own. The parent's flock file
    descriptions are shared with the child, so a flock on one of them would not keep the two apart."""
    global _turns_lock
    _turns.clear()
    _turns_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_turns)


def writer_turn(database):
    """The context a write transaction on database runs in: a SQLite file's _WriterTurn, else nothing."""
    if not isinstance(database, peewee.SqliteDatabase):
        return _NO_TURN
    path = database.database
    turn = _turns.get(path)
    if turn is None:
        with _turns_lock:
            turn = _turns.get(path)
            if turn is None:
                memory = not path or path == ":memory:" or path.startswith("file:")
                turn = _turns[path] = _NO_TURN if memory else _WriterTurn(f"{path}-writer.lock")
    return turn


def ensure_connection():
    """Open this thread's connection if it is not open; it is kept for the next request."""
    if db.is_closed():
        db.connect(reuse_if_open=True)


def lock_row(model, defaults, **key):
    """The row with this key, created from defaults if missing, locked until the transaction ends.

    SELECT ... FOR UPDATE first: an INSERT IGNORE that hits an existing row takes a shared lock
    on it, and two requests both upgrading that to the exclusive one deadlock (MySQL 1213) on
    every parallel call. Only a missing row is inserted, with INSERT IGNORE, so two requests
    creating the same row do not fail on the unique key. A read that finds nothing locks nothing
    (READ COMMITTED), so making two different missing rows at once neither waits nor deadlocks.
    """
    if list(key) == [model._meta.primary_key.name]:  # the SQL text built once (locked, insert_row)
        (value,) = key.values()
        row = locked(model, value)
        if row is None:
            _, inserted = insert_row(model, {**key, **defaults}, ignore=True)
            if inserted == 1:  # ours, locked by the insert: the row is what went in (no read back)
                row = model(**key, **defaults)
                row._dirty.clear()
                return row
            row = locked(model, value)  # another transaction made it first: wait for it, then lock it
            if row is None:
                raise model.DoesNotExist(f"{model.__name__} {value!r} neither found nor inserted")
        return row
    query = model.select()
    for name, value in key.items():
        query = query.where(getattr(model, name) == value)
    row = for_update(query).first()
    if row is None:
        model.insert(**key, **defaults).on_conflict_ignore().execute()
        row = for_update(query).get()
    return row


class KeyLock:
    """A row per key, made on first use and locked until the transaction ends, in one statement.

    `INSERT ... ON DUPLICATE KEY UPDATE counter = counter + 1` (SQLite: `ON CONFLICT DO UPDATE`):
    an existing row is locked exclusively at once, with no shared lock to upgrade (see lock_row),
    and the row is written every time: Galera does not carry row locks from node to node, but two
    transactions that write one row on two nodes conflict when they commit (1213: run again). The
    SQL text is built once per database class (its dialect), by Prepared.
    """

    def __init__(self, model, key_field, counter_field):
        def build(key):
            conflict = {"update": {counter_field: counter_field + 1}}
            if not is_mysql():
                conflict["conflict_target"] = [key_field]
            return model.insert({key_field: key, counter_field: 1}).on_conflict(**conflict)

        self._take = Prepared(build)

    def __call__(self, key):
        assert db.in_transaction(), "a KeyLock is held until the transaction ends: take it inside one"
        self._take(key)


class RowByKey:
    """`Model.select(*columns).where(field == value, ...).first()` for hot paths, the SQL built once.

    peewee builds the SQL text of a query on every execution; for a 20-column SELECT that is
    ~400 µs, about twice the rest of a request. The text only depends on the model and the
    database's dialect, so it is built on first use per database class and reused (by Prepared).
    Rows come back as read-only named tuples of the selected columns: a partial row can never be
    saved by mistake.
    """

    def __init__(self, model, *fields, columns=None):
        selected = columns or model._meta.sorted_fields
        self.row = collections.namedtuple(f"{model.__name__}Row", [f.name for f in selected])
        self._select = Prepared(
            lambda *values: model.select(*selected).where(*[f == v for f, v in zip(fields, values, strict=True)]),
            arity=len(fields),
        )

    def __call__(self, *values):
        row = self._select(*values).fetchone()
        return None if row is None else self.row._make(row)


# --- character sets (MySQL) ----------------------------------------------------------------

# Binary collations, best first: ids, references and event ids compare byte for byte. The NO PAD
# ones (MariaDB's utf8mb4_nopad_bin, MySQL 8's utf8mb4_0900_bin) also tell 'abc' from 'abc ';
# MySQL 5.7 has only utf8mb4_bin, which pads. migrations/003 picks the first the server has.
BINARY_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")


def text_columns(database, tables):
    """(table, column or None for the table's default, charset, collation) of tables' text columns (MySQL)."""
    if not isinstance(database, peewee.MySQLDatabase) or not tables:
        return []
    marks = ", ".join(["%s"] * len(tables))
    rows = database.execute_sql(
        "SELECT TABLE_NAME, NULL, CCSA.CHARACTER_SET_NAME, TABLE_COLLATION FROM information_schema.TABLES T "
        "JOIN information_schema.COLLATION_CHARACTER_SET_APPLICABILITY CCSA ON CCSA.COLLATION_NAME = T.TABLE_COLLATION "
        f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({marks}) "
        "UNION ALL "
        "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({marks}) AND CHARACTER_SET_NAME IS NOT NULL",
        list(tables) * 2,
    ).fetchall()
    return sorted(rows, key=lambda r: (r[0], r[1] or ""))


def binlog_problem(database):
    """Why this server's binary log would refuse payapi's writes, or None (SQLite, no binary log, ROW, MIXED).

    InnoDB refuses to log a READ COMMITTED transaction's writes as statements (error 1665), so a
    server writing a STATEMENT binary log would fail every write (see READ_COMMITTED).
    """
    if not isinstance(database, peewee.MySQLDatabase):
        return None
    log_bin, binlog_format = database.execute_sql("SELECT @@log_bin, @@session.binlog_format").fetchone()
    return binlog_refusal(log_bin, binlog_format)


def binlog_refusal(log_bin, binlog_format):
    if str(log_bin) in ("1", "ON") and str(binlog_format).upper() == "STATEMENT":
        return (
            "the server writes a STATEMENT binary log, which refuses READ COMMITTED writes: "
            "set binlog_format=ROW (or MIXED) on the server"
        )
    return None


# --- the write path's statements, their SQL text built once --------------------------------------

# peewee builds the SQL text of every query it runs; for a 27-column pay that is ~0.5 ms of Python
# per statement, most of an applied charge's time in Python (docs/performance.md). The statements
# below depend only on the model, the columns and the dialect, so their text is built once per
# database class (a dialect: quoting, the parameter mark, FOR UPDATE) and reused; the values go in
# as parameters, converted by each field's db_value as peewee converts them.
_texts: dict[tuple, str] = {}


def sql_text(database, key, build):
    """The SQL text of key for database's dialect: build(quote, param mark, is_mysql), called once."""
    cache_key = (type(database), *key)
    sql = _texts.get(cache_key)
    if sql is None:
        left, right = database.quote[0], database.quote[1]
        sql = _texts[cache_key] = build(
            lambda name: left + name + right, database.param, isinstance(database, peewee.MySQLDatabase)
        )
    return sql


def _instance(model, fields, row):
    """A model instance from a row of fields, as peewee's own cursor makes one (nothing dirty)."""
    instance = model(__no_default__=1, **{f.name: f.python_value(v) for f, v in zip(fields, row, strict=True)})
    instance._dirty.clear()
    return instance


def _by_key(model, value, by, lock):
    database = db.obj
    meta = model._meta
    fields = meta.sorted_fields
    key = by or meta.primary_key

    def build(q, param, mysql):
        columns = ", ".join(q(f.column_name) for f in fields)
        suffix = " FOR UPDATE" if lock and mysql else ""
        return f"SELECT {columns} FROM {q(meta.table_name)} WHERE {q(key.column_name)} = {param}{suffix}"

    sql = sql_text(database, (model, "by_key", key.name, lock), build)
    row = database.execute_sql(sql, (key.db_value(value),)).fetchone()
    return None if row is None else _instance(model, fields, row)


def locked(model, value, required=False, by=None):
    """`for_update(model.select().where(pk == value)).first()`: the row of model with this primary key
    (or this value of the unique field by), locked until the transaction ends (FOR UPDATE on MySQL;
    SQLite's IMMEDIATE transaction already holds the database), as a model instance; None if there is
    none (required: `.get()`, which raises model.DoesNotExist)."""
    row = _by_key(model, value, by, lock=True)
    if row is None and required:
        raise model.DoesNotExist(f"{model.__name__} {value!r} does not exist")
    return row


def row_of(model, value):
    """`model.get_by_id(value)` (a read, no lock) as a model instance, the SQL text built once;
    model.DoesNotExist if there is none."""
    row = _by_key(model, value, None, lock=False)
    if row is None:
        raise model.DoesNotExist(f"{model.__name__} {value!r} does not exist")
    return row


def insert_row(model, values, ignore=False):
    """`model.insert(**values).execute()` (`.on_conflict_ignore()` with ignore) -> the cursor's
    lastrowid (an AutoField's new id) and rowcount; values by field name, with the model's defaults
    for the columns missing (as peewee's insert fills them in)."""
    database = db.obj
    meta = model._meta
    missing = [f for f in meta.defaults if f.name not in values]
    if missing:
        values = {**values, **{f.name: f.default() if callable(f.default) else f.default for f in missing}}
    names = tuple(values)
    fields = [meta.fields[name] for name in names]

    def build(q, param, mysql):
        verb = ("INSERT IGNORE" if mysql else "INSERT OR IGNORE") if ignore else "INSERT"
        return (
            f"{verb} INTO {q(meta.table_name)} ({', '.join(q(f.column_name) for f in fields)}) "
            f"VALUES ({', '.join([param] * len(fields))})"
        )

    sql = sql_text(database, (model, "insert", ignore, names), build)
    cursor = database.execute_sql(sql, [f.db_value(values[f.name]) for f in fields])
    return cursor.lastrowid, cursor.rowcount


def insert_rows(model, names, rows):
    """`model.insert_many(rows).execute()` for rows of values in names' order, in one statement."""
    database = db.obj
    meta = model._meta
    fields = [meta.fields[name] for name in names]

    def build(q, param, mysql):
        row = "(" + ", ".join([param] * len(fields)) + ")"
        columns = ", ".join(q(f.column_name) for f in fields)
        return f"INSERT INTO {q(meta.table_name)} ({columns}) VALUES {', '.join([row] * len(rows))}"

    sql = sql_text(database, (model, "insert_many", tuple(names), len(rows)), build)
    database.execute_sql(sql, [f.db_value(value) for row in rows for f, value in zip(fields, row, strict=True)])


def savable(instance, only):
    """save_row does what peewee's Model.save would: a single-column primary key that is not
    generated (pays, wallets, events, ...), and set."""
    meta = instance._meta
    return (
        (only is None or all(isinstance(f, peewee.Field) for f in only))
        and not meta.only_save_dirty
        and not meta.auto_increment
        and not meta.composite_key
        and isinstance(meta.primary_key, peewee.Field)
        and instance._pk is not None
    )


def save_row(instance, force_insert=False, only=None):
    """peewee's Model.save() for a savable instance: INSERT of the columns it holds (force_insert),
    or UPDATE by its primary key of the columns changed since it was read or last saved (or of
    only; peewee's only_save_dirty: every write path changes a row it holds locked, and a column
    nobody changed is not sent again, the pay's charge JSON for one); -> rows changed (1 for an
    insert; 0 and no statement when nothing changed), the saved columns no longer dirty."""
    database = db.obj
    meta = instance._meta
    model, data, pk = type(instance), instance.__data__, meta.primary_key
    if only is not None:
        wanted = {f.name for f in only}
        names = tuple(f.name for f in meta.sorted_fields if f.name in wanted and f.name in data)
    elif force_insert:
        names = tuple(f.name for f in meta.sorted_fields if f.name in data)
    else:
        dirty = instance._dirty
        names = tuple(f.name for f in meta.sorted_fields if f.name in dirty and f.name in data)
        if not names:
            return 0
    if force_insert:
        insert_row(model, {name: data[name] for name in names})
        rows = 1
    else:
        fields = [meta.fields[name] for name in names if name != pk.name]
        if not fields:
            raise ValueError("no data to save!")

        def build(q, param, mysql):
            columns = ", ".join(f"{q(f.column_name)} = {param}" for f in fields)
            return f"UPDATE {q(meta.table_name)} SET {columns} WHERE {q(pk.column_name)} = {param}"

        sql = sql_text(database, (model, "update", names), build)
        values = [f.db_value(data[f.name]) for f in fields]
        values.append(pk.db_value(instance._pk))
        rows = database.execute_sql(sql, values).rowcount
    instance._dirty -= set(names)
    return rows


class Prepared:
    """A hot query whose SQL text is built once per database class: build(*marks) makes the peewee
    query with a mark in place of each value that changes, and each call runs it with the values in
    their places, as they are (a mark is not converted by its field: pass what the column stores,
    a str or an int); lock: FOR UPDATE on MySQL (SQLite's IMMEDIATE transaction already holds the
    database). -> the cursor."""

    def __init__(self, build, lock=False, arity=None):
        self.build, self.lock = build, lock
        self.arity = build.__code__.co_argcount if arity is None else arity  # given when build takes *values
        self._sql = {}

    def __call__(self, *values):
        database = db.obj
        built = self._sql.get(type(database))
        if built is None:
            marks = [f"\x00mark{i}\x00" for i in range(self.arity)]
            query = self.build(*[peewee.Value(mark, converter=False, unpack=False) for mark in marks])
            if self.lock and isinstance(database, peewee.MySQLDatabase):
                query = query.for_update()
            sql, params = query.sql()
            places = [marks.index(p) if p in marks else None for p in params]
            direct = places == list(range(self.arity))  # the values are the parameters, in order
            built = self._sql[type(database)] = (sql, None if direct else places, params)
        sql, places, params = built
        if places is None:
            return database.execute_sql(sql, values)
        return database.execute_sql(
            sql, [values[place] if place is not None else param for place, param in zip(places, params, strict=True)]
        )
