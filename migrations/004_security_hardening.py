"""Hardening after the hostile review (issue 9).

- lockout.failed_at: the times of the recent wrong attempts, for a sliding 3-hour window; the
  fixed window's lockout.window_start goes.
- pay.retrieve_after: when a phone's "success" report may next ask Ping++ about the charge.
- client_report.times / last_at: one row stands for repeated reports (last_at of existing rows
  is their created_at).

On MySQL the new text column inherits its table's utf8mb4 binary collation (003).
Self-contained: no import of live app code.
"""

import peewee as pw
from peewee_migrate import Migrator


def _add_column(migrator, table, column, definition):
    # Spelled out rather than peewee's add_column, which adds a NULL column, fills it in and then
    # rebuilds the table to make it NOT NULL (on MySQL also losing the column's collation).
    # ADD COLUMN ... NOT NULL DEFAULT is instant on MariaDB >= 10.3 and MySQL >= 8.0.
    migrator.sql(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    # No charset of its own: the column inherits the table's (utf8mb4, binary NO PAD since 003).
    _add_column(migrator, "lockout", "failed_at", "VARCHAR(100) NOT NULL DEFAULT ''")

    def failures_as_times():
        # The fixed window's failures, as if all made when it opened: they leave the sliding
        # window when the fixed one would have ended. Running locks are kept as they are.
        param = database.param
        rows = database.execute_sql("SELECT id, failures, window_start FROM lockout WHERE failures > 0").fetchall()
        for row_id, failures, window_start in rows:
            times = ",".join([str(window_start)] * min(failures, 5))
            database.execute_sql(f"UPDATE lockout SET failed_at = {param} WHERE id = {param}", (times, row_id))

    migrator.run(failures_as_times)
    migrator.remove_fields("lockout", "window_start")

    _add_column(migrator, "pay", "retrieve_after", "BIGINT NOT NULL DEFAULT 0")
    _add_column(migrator, "client_report", "times", "INTEGER NOT NULL DEFAULT 1")
    _add_column(migrator, "client_report", "last_at", "BIGINT NOT NULL DEFAULT 0")
    migrator.sql("UPDATE client_report SET last_at = created_at")


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_fields("client_report", "times", "last_at")
    migrator.remove_fields("pay", "retrieve_after")
    migrator.add_fields("lockout", window_start=pw.BigIntegerField(default=0))
    migrator.remove_fields("lockout", "failed_at")
