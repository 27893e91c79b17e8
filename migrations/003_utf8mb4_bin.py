"""Room for 4-byte characters, and text compared byte for byte (MySQL/MariaDB; nothing on SQLite).

Every table of the database becomes utf8mb4 with a binary collation, and so does the database's
default, so a table a later migration creates inherits it (see migrations/README.md). The
collation is the server's best binary one: MariaDB's `utf8mb4_nopad_bin` and MySQL 8's
`utf8mb4_0900_bin` also tell `abc` from `abc ` (NO PAD); MySQL 5.7 only has `utf8mb4_bin`.
Before this, tables followed the database's default: `_ci` (where `ABC` = `abc `), utf8mb3 or
latin1 (where an emoji or, on latin1, any Chinese text fails the INSERT).

Like every migration it uses no application code: payapi/db.py has its own copy of the list.
"""

import peewee as pw
from peewee_migrate import Migrator

BINARY_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    if not isinstance(database, pw.MySQLDatabase):
        return

    def convert():
        available = {
            row[0]
            for row in database.execute_sql(
                "SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE CHARACTER_SET_NAME = 'utf8mb4'"
            ).fetchall()
        }
        collation = next(name for name in BINARY_COLLATIONS if name in available)
        database.execute_sql(f"ALTER DATABASE CHARACTER SET utf8mb4 COLLATE {collation}")
        tables = database.execute_sql(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'"
        ).fetchall()
        for (table,) in tables:
            database.execute_sql(f"ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}")

    migrator.run(convert)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    pass  # narrowing the character set again could only lose text
