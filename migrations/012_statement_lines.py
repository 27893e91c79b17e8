"""The experts' statements (收支明细): one line per journal entry that moves an expert's money, with
their balance and available balance after it, keyed (user_id, created_at, entry_id) so a page of a
statement is one range of the primary key however large the books grow.

The history is kept: every entry that touched an expert's accounts before this ran becomes a line,
in the order of the entries, with the balances running from 0 over the postings (a line is never
dated before the expert's line before it). A wallet's updated_at is moved up to its last line, as
books.record keeps it from now on.

Nothing here imports application code: the rules are written out as they were when this ran.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class StatementLine(pw.Model):
        user_id = pw.CharField(max_length=24)
        created_at = pw.BigIntegerField()
        entry_id = pw.IntegerField()
        amount = pw.BigIntegerField()
        balance_after = pw.BigIntegerField()
        available_after = pw.BigIntegerField()

        class Meta:
            table_name = "statement_line"
            primary_key = pw.CompositeKey("user_id", "created_at", "entry_id")

    def write_the_history():
        # In pages of entries (a range of entry ids at a time) and batches of rows: a history of
        # millions of postings is never held in memory, nor written one statement per line.
        q = database.param
        sql = database.execute_sql
        page_entries, batch_rows = 20_000, 500
        after = {}  # user_id -> (created_at, balance, available) after their last line
        pending = []

        def flush():
            if pending:
                values = ", ".join([f"({q}, {q}, {q}, {q}, {q}, {q})"] * len(pending))
                sql(
                    "INSERT INTO statement_line (user_id, created_at, entry_id, amount, balance_after, available_after) "
                    f"VALUES {values}",
                    [value for row in pending for value in row],
                )
                pending.clear()

        (last_entry,) = sql("SELECT COALESCE(MAX(entry_id), 0) FROM journal_entry").fetchone()
        low = 0
        while low < last_entry:
            high = low + page_entries
            rows = sql(
                "SELECT p.entry_id, e.created_at, p.account, p.credit - p.debit FROM posting p "
                "JOIN journal_entry e ON e.entry_id = p.entry_id "
                f"WHERE p.entry_id > {q} AND p.entry_id <= {q} AND p.account LIKE {q} ORDER BY p.entry_id, p.id",
                (low, high, "expert:%"),
            ).fetchall()
            lines = {}  # (entry_id, user_id) -> [created_at, change of balance, change of available], entry order
            for entry_id, created_at, account, net in rows:
                parts = account.split(":")
                if len(parts) != 3:
                    continue
                line = lines.setdefault((entry_id, parts[1]), [created_at, 0, 0])
                line[1] += int(net)
                if parts[2] == "available":
                    line[2] += int(net)
            for (entry_id, user_id), (created_at, change, available_change) in lines.items():
                at, balance, available = after.get(user_id, (created_at, 0, 0))
                at = max(at, created_at)
                balance, available = balance + change, available + available_change
                pending.append((user_id, at, entry_id, change, balance, available))
                if len(pending) >= batch_rows:
                    flush()
                after[user_id] = (at, balance, available)
            low = high
        flush()
        for user_id, (at, _, _) in after.items():
            sql(f"UPDATE wallet SET updated_at = {q} WHERE user_id = {q} AND updated_at < {q}", (at, user_id, at))

    migrator.run(write_the_history)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_model("statement_line")
