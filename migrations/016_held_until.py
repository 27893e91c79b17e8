"""`pay.held_until`: when the pay's held credit is released, NULL while nothing of it is held.

A virtual column that the database computes from `held` and `release_at` (`CASE WHEN held > 0
THEN release_at END`), so nothing writes it and it cannot disagree with them, and the index `pay
(expert_id, held_until)` in place of `pay (expert_id, held, release_at)` (015), whose first column
it keeps for the reads by expert.

The balance read's next release was `MIN(release_at) WHERE expert_id = ? AND held > 0`: a range on
`held` that MariaDB planned and read on every request, about a third of the server's time for a
balance. `MIN(held_until) WHERE expert_id = ?` is one look at the index's first non-NULL entry
("No matching min/max row" or one row, decided while planning), on MariaDB and on SQLite.

Adding a virtual column is a change of the table's definition only (no rows rewritten); the index
is built from the rows, once. On SQLite a later migration that rebuilds `pay` must drop the index
and the column first and add them back after (see README.md): SQLite will not copy into a
generated column.
"""

import peewee as pw
from peewee_migrate import Migrator

RULE = "CASE WHEN held > 0 THEN release_at END"


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    if isinstance(database, pw.MySQLDatabase):
        migrator.sql(f"ALTER TABLE pay ADD COLUMN held_until BIGINT AS ({RULE}) VIRTUAL")
    else:
        migrator.sql(f"ALTER TABLE pay ADD COLUMN held_until INTEGER GENERATED ALWAYS AS ({RULE}) VIRTUAL")
    migrator.sql("CREATE INDEX pay_expert_id_held_until ON pay (expert_id, held_until)")
    migrator.drop_index("pay", "expert_id", "held", "release_at")


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_index("pay", "expert_id", "held", "release_at")
    migrator.sql(
        "DROP INDEX pay_expert_id_held_until ON pay"
        if isinstance(database, pw.MySQLDatabase)
        else "DROP INDEX pay_expert_id_held_until"
    )
    migrator.sql("ALTER TABLE pay DROP COLUMN held_until")
