"""Hardening after the hostile review (issue 9).

- lockout.failed_at: the times of the recent wrong attempts, for a sliding 3-hour window; the
  fixed window's lockout.window_start goes.

On MySQL new text columns are utf8mb4 with a binary collation, like every table after 003.
Self-contained: no import of live app code.
"""

import peewee as pw
from peewee_migrate import Migrator


def _add_text_column(migrator, database, table, column, max_length):
    """A NOT NULL DEFAULT '' VARCHAR; on MySQL spelled out, since peewee's add_column loses the collation."""
    if isinstance(database, pw.MySQLDatabase):
        migrator.sql(
            f"ALTER TABLE {table} ADD COLUMN {column} VARCHAR({max_length}) "
            "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT ''"
        )
    else:
        migrator.add_fields(table, **{column: pw.CharField(max_length=max_length, default="")})


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    _add_text_column(migrator, database, "lockout", "failed_at", 100)

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


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_fields("lockout", window_start=pw.BigIntegerField(default=0))
    migrator.remove_fields("lockout", "failed_at")
