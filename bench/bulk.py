"""Fill a payapi database with history in bulk (not through the API), for bench/run.py --bulk.

    python -m bench.bulk DATABASE_URL PAYS

PAYS paid pays, a hundred to an expert (PAYS / 100 experts, PAYS / 10 payers), each booked as the
books book them: a charge entry of three postings (Ping++ debit, fees and the expert's pending
credit) and a release entry of two (pending to available), so five postings a pay; the expert's
two statement lines with their running balances, and their wallet. Every expert has the same
history whatever PAYS is (100 pays, 200 statement lines), so a small and a large database differ
only in how much else is around it. The ids are new (a prefix of their own), so the benchmark's
own users, pays and experts do not meet them; `expert_id(0)` is an expert with that history.

Rows go in with multi-row INSERTs, each table in the order of its primary key (the statement lines
expert by expert), so InnoDB appends instead of splitting pages all over a clustered index larger
than its buffer pool; MariaDB without unique checks for this session (the ids are new by
construction), SQLite without syncing to disk. Neither is how payapi writes: only the seed's.
"""

import json
import sys
import time

from payapi.domain.clock import now_ms
from payapi.infra.db import bind, open_database
from payapi.infra.models import JournalEntry, Pay, Posting, StatementLine, Wallet

PAYS_PER_EXPERT, PAYS_PER_PAYER = 100, 10
DAY_MS = 86_400_000
PAY_COLUMNS = (
    "pay_id", "type", "o_id", "note_id", "expert_id", "user_id", "amount", "money", "currency", "channel",
    "subject", "description", "charge", "charge_id", "status", "client_status", "credited", "amount_refunded",
    "created_at", "updated_at", "paid_at", "check_after", "held", "retrieve_after", "info", "client_ip",
    "platform", "store",
)  # fmt: skip
LINE_COLUMNS = ("user_id", "created_at", "entry_id", "amount", "balance_after", "available_after")


def expert_id(n):
    return f"e{n:023d}"


def experts_of(pays):
    return max(1, pays // PAYS_PER_EXPERT)


class Filler:
    def __init__(self, database, pays, sqlite):
        self.database, self.pays = database, pays
        self.experts, self.payers = experts_of(pays), max(1, pays // PAYS_PER_PAYER)
        self.now = now_ms()
        # Rows per INSERT: SQLite binds at most 32,766 parameters (28 columns × 1,000); a MariaDB
        # statement may be up to max_allowed_packet (16 MB by default; a pay row is ~500 bytes).
        self.chunk = 1_000 if sqlite else 5_000
        first = database.execute_sql("SELECT MAX(entry_id) FROM journal_entry").fetchone()[0] or 0
        self.start_entry = first + 1_000_000

    def at(self, i):
        return self.now - 400 * DAY_MS + i * (400 * DAY_MS // max(self.pays, 1))

    def money(self, i):
        money = 1_000 + i % 9_000
        return money, money * 9 // 10

    def insert(self, model, columns, rows):
        q = self.database.quote
        names = ", ".join(q[0] + c + q[1] for c in columns)
        row = "(" + ", ".join([self.database.param] * len(columns)) + ")"
        for j in range(0, len(rows), self.chunk):
            part = rows[j : j + self.chunk]
            sql = f"INSERT INTO {q[0]}{model._meta.table_name}{q[1]} ({names}) VALUES {', '.join([row] * len(part))}"
            self.database.execute_sql(sql, [v for r in part for v in r])

    def pays_and_postings(self, first, last):
        pay_rows, entries, postings = [], [], []
        for i in range(first, last):
            pay_id = f"b{i:023d}"
            expert, payer = expert_id(i % self.experts), f"u{i % self.payers:023d}"
            at, (money, credited) = self.at(i), self.money(i)
            charge = json.dumps({"id": f"ch_b{i:022d}", "object": "charge", "order_no": pay_id, "paid": True})
            info = json.dumps({"pay_id": pay_id, "status": "paid", "money": money})
            pay_rows.append(
                (pay_id, "order", f"o{i:023d}", "", expert, payer, money, money, "cny", "alipay", "bulk", "",
                 charge, f"ch_b{i:022d}", "paid", "paid", credited, 0, at, at, at, 0, 0, 0, info, "", "", "")
            )  # fmt: skip
            charge_entry, release_entry = self.start_entry + 2 * i, self.start_entry + 2 * i + 1
            entries += [(charge_entry, "charge", pay_id, at), (release_entry, "release", pay_id, at + DAY_MS)]
            postings += [
                (charge_entry, "pingpp", money, 0),
                (charge_entry, "fees", 0, money - credited),
                (charge_entry, f"expert:{expert}:pending", 0, credited),
                (release_entry, f"expert:{expert}:pending", credited, 0),
                (release_entry, f"expert:{expert}:available", 0, credited),
            ]
        self.insert(Pay, PAY_COLUMNS, pay_rows)
        self.insert(JournalEntry, ("entry_id", "kind", "reference", "created_at"), entries)
        self.insert(Posting, ("entry_id", "account", "debit", "credit"), postings)

    def statements(self, first_expert, last_expert):
        """Each expert's lines in order (the charge, then its release a day later), and their wallet."""
        lines, wallets = [], []
        for n in range(first_expert, last_expert):
            expert, available, pending, pay_ids = expert_id(n), 0, 0, range(n, self.pays, self.experts)
            # A release comes a day after its charge, so a later charge may come before it: the
            # lines follow time, as books.record writes them.
            moves = []
            for i in pay_ids:
                credited = self.money(i)[1]
                charge_entry, at = self.start_entry + 2 * i, self.at(i)
                moves += [(at, charge_entry, credited, 0), (at + DAY_MS, charge_entry + 1, -credited, credited)]
            for at, entry, to_pending, to_available in sorted(moves):
                pending, available = pending + to_pending, available + to_available
                lines.append((expert, at, entry, to_pending + to_available, pending + available, available))
            wallets.append((expert, pending, available, lines[-1][1]))
        self.insert(StatementLine, LINE_COLUMNS, lines)
        self.insert(Wallet, ("user_id", "pending", "available", "updated_at"), wallets)


def fill(url, pays):
    database = bind(open_database(url))
    database.connect()
    sqlite = "sqlite" in type(database).__name__.lower()
    if sqlite:
        database.execute_sql("PRAGMA synchronous = OFF")
    else:
        database.execute_sql("SET SESSION unique_checks = 0")
    filler = Filler(database, pays, sqlite)
    t0 = time.monotonic()
    per_transaction = 50_000  # pays (250,000 postings)
    for first in range(0, pays, per_transaction):
        with database.atomic():
            filler.pays_and_postings(first, min(pays, first + per_transaction))
    experts_per_transaction = per_transaction // PAYS_PER_EXPERT
    for first in range(0, filler.experts, experts_per_transaction):
        with database.atomic():
            filler.statements(first, min(filler.experts, first + experts_per_transaction))
    seconds = time.monotonic() - t0
    if sqlite:
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    database.close()
    return seconds


if __name__ == "__main__":
    pays = int(sys.argv[2])
    seconds = fill(sys.argv[1], pays)
    print(
        f"{pays:,} pays, {5 * pays:,} postings, {2 * pays:,} statement lines of {experts_of(pays):,} experts "
        f"({2 * PAYS_PER_EXPERT} lines each) in {seconds:.1f} s"
    )
