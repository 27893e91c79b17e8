"""Fill a payapi database with history in bulk (not through the API), for bench/run.py --bulk.

    python -m bench.bulk DATABASE_URL PAYS

PAYS paid pays of 10,000 experts and 100,000 payers, each booked as the books book them: a charge
entry of three postings (Ping++ debit, fees and the expert's pending credit) and a release entry of
two (pending to available), so five postings a pay, and the expert's two statement lines. Rows
go in with multi-row INSERTs of a few thousand rows, in one transaction per chunk; the ids are
new (a prefix of their own), so the benchmark's own users, pays and experts do not meet them.
"""

import json
import sys
import time

from payapi.domain.clock import now_ms
from payapi.infra.db import bind, open_database
from payapi.infra.models import JournalEntry, Pay, Posting, StatementLine

CHUNK = 1_000  # rows per INSERT: 25 columns × 1,000 stays under SQLite's 32,766 parameters
EXPERTS, PAYERS = 10_000, 100_000
DAY_MS = 86_400_000


def _insert(database, model, columns, rows):
    q = database.quote
    names = ", ".join(q[0] + c + q[1] for c in columns)
    row = "(" + ", ".join([database.param] * len(columns)) + ")"
    sql = f"INSERT INTO {q[0]}{model._meta.table_name}{q[1]} ({names}) VALUES {', '.join([row] * len(rows))}"
    database.execute_sql(sql, [v for r in rows for v in r])


def fill(url, pays):
    database = bind(open_database(url))
    database.connect()
    start_entry = (database.execute_sql("SELECT MAX(entry_id) FROM journal_entry").fetchone()[0] or 0) + 1_000_000
    t0 = time.monotonic()
    now = now_ms()
    pay_columns = (
        "pay_id", "type", "o_id", "note_id", "expert_id", "user_id", "amount", "money", "currency", "channel",
        "subject", "description", "charge", "charge_id", "status", "client_status", "credited", "amount_refunded",
        "created_at", "updated_at", "paid_at", "check_after", "held", "retrieve_after", "info", "client_ip",
        "platform", "store",
    )  # fmt: skip
    for first in range(0, pays, CHUNK):
        pay_rows, entries, postings, lines = [], [], [], []
        for i in range(first, min(pays, first + CHUNK)):
            pay_id = f"b{i:023d}"
            expert, payer = f"e{i % EXPERTS:023d}", f"u{i % PAYERS:023d}"
            at = now - 400 * DAY_MS + i * (400 * DAY_MS // max(pays, 1))
            money, credited = 1_000 + i % 9_000, (1_000 + i % 9_000) * 9 // 10
            charge = json.dumps({"id": f"ch_b{i:022d}", "object": "charge", "order_no": pay_id, "paid": True})
            info = json.dumps({"pay_id": pay_id, "status": "paid", "money": money})
            pay_rows.append(
                (pay_id, "order", f"o{i:023d}", "", expert, payer, money, money, "cny", "alipay", "bulk", "",
                 charge, f"ch_b{i:022d}", "paid", "paid", credited, 0, at, at, at, 0, 0, 0, info, "", "", "")
            )  # fmt: skip
            charge_entry, release_entry = start_entry + 2 * i, start_entry + 2 * i + 1
            entries += [(charge_entry, "charge", pay_id, at), (release_entry, "release", pay_id, at + DAY_MS)]
            postings += [
                (charge_entry, "pingpp", money, 0),
                (charge_entry, "fees", 0, money - credited),
                (charge_entry, f"expert:{expert}:pending", 0, credited),
                (release_entry, f"expert:{expert}:pending", credited, 0),
                (release_entry, f"expert:{expert}:available", 0, credited),
            ]
            lines += [(expert, at, charge_entry, credited, 0, 0), (expert, at + DAY_MS, release_entry, 0, 0, 0)]
        with database.atomic():
            _insert(database, Pay, pay_columns, pay_rows)
            _insert(database, JournalEntry, ("entry_id", "kind", "reference", "created_at"), entries)
            for j in range(0, len(postings), CHUNK):
                _insert(database, Posting, ("entry_id", "account", "debit", "credit"), postings[j : j + CHUNK])
            _insert(
                database,
                StatementLine,
                ("user_id", "created_at", "entry_id", "amount", "balance_after", "available_after"),
                lines,
            )
    database.close()
    return time.monotonic() - t0


if __name__ == "__main__":
    seconds = fill(sys.argv[1], int(sys.argv[2]))
    print(f"{sys.argv[2]} pays, {5 * int(sys.argv[2])} postings in {seconds:.1f} s")
