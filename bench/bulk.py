"""Fill a payapi database with history in bulk (not through the API), for bench/run.py --bulk and
bench/worker_pass.py.

    python -m bench.bulk DATABASE_URL PAYS [--stale-pending N]

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

--stale-pending N adds N pending pays their payers walked away from (fill_stale): created between
two and ten days ago, never checked by the worker (check_after 0), each with its charge, unpaid
and expired (stale_charge), which the worker closes when it gets to it.
"""

import argparse
import json
import time

import peewee

from payapi.domain.clock import now_ms
from payapi.infra.db import bind, open_database
from payapi.infra.models import JournalEntry, Pay, Posting, StatementLine, Wallet

PAYS_PER_EXPERT, PAYS_PER_PAYER = 100, 10
STALE_EXPERTS, STALE_PAYERS = 10_000, 100_000  # whose stale pays they are (fill_stale)
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


STALE_COLUMNS = (
    "pay_id", "type", "o_id", "note_id", "expert_id", "user_id", "amount", "money", "currency", "channel",
    "subject", "description", "charge", "charge_id", "status", "client_status", "open_for", "credited",
    "amount_refunded", "time_expire", "created_at", "updated_at", "check_after", "held", "retrieve_after", "info",
    "client_ip", "platform", "store",
)  # fmt: skip
STALE_SPAN_MS = 8 * DAY_MS  # the stale pays' created_at: from ten days ago to two days ago, oldest first


def stale_pay_id(i):
    return f"s{i:023d}"


def stale_created_at(i, stale, now):
    return now - 10 * DAY_MS + i * (STALE_SPAN_MS // max(stale, 1))


def stale_charge(i, stale, now):
    """The i-th stale pay's charge as Ping++ (the sandbox's Ledger) holds it: unpaid, expired two
    hours after its pay was made. The stale pays are due oldest first (check_after 0, then
    created_at), so the i-th is the i-th a worker asks about."""
    created = stale_created_at(i, stale, now) // 1000
    return {
        "id": f"ch_s{i:022d}", "object": "charge", "created": created, "livemode": False, "paid": False,
        "refunded": False, "reversed": False, "app": "app_test_payapi", "channel": "alipay",
        "order_no": stale_pay_id(i), "client_ip": "127.0.0.1", "amount": 1_000 + i % 9_000,
        "amount_settle": 1_000 + i % 9_000, "currency": "cny", "subject": "stale", "body": "stale", "extra": {},
        "time_paid": None, "time_expire": created + 7_200, "time_settle": None, "transaction_no": None,
        "refunds": {"object": "list", "url": f"/v1/charges/ch_s{i:022d}/refunds", "has_more": False, "data": []},
        "amount_refunded": 0, "failure_code": None, "failure_msg": None, "metadata": {}, "credential": {},
        "description": None,
    }  # fmt: skip


def fill_stale(url, stale, now=None):
    """stale pending pays (see the module's doc), in multi-row INSERTs; -> (seconds, now), now being
    the time their charges were made relative to (pass it to stale_charge)."""
    database = bind(open_database(url))
    database.connect()
    t0 = time.monotonic()
    now = now or now_ms()
    filler = Filler(database, stale, not isinstance(database, peewee.MySQLDatabase))
    for first in range(0, stale, filler.chunk):
        rows = []
        for i in range(first, min(stale, first + filler.chunk)):
            pay_id, at, charge = stale_pay_id(i), stale_created_at(i, stale, now), stale_charge(i, stale, now)
            expert, payer, money = expert_id(i % STALE_EXPERTS), f"u{i % STALE_PAYERS:023d}", charge["amount"]
            info = json.dumps({"pay_id": pay_id, "status": "pending", "money": money})
            rows.append(
                (pay_id, "order", f"q{i:023d}", "", expert, payer, money, money, "cny", "alipay", "stale", "",
                 json.dumps(charge), charge["id"], "pending", "pending", f"order:q{i:023d}", 0, 0,
                 charge["time_expire"] * 1000, at, at, 0, 0, 0, info, "127.0.0.1", "", "")
            )  # fmt: skip
        with database.atomic():
            filler.insert(Pay, STALE_COLUMNS, rows)
    database.close()
    return time.monotonic() - t0, now


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", metavar="DATABASE_URL")
    parser.add_argument("pays", type=int, help="paid pays, five postings each")
    parser.add_argument("--stale-pending", type=int, default=0, metavar="N", help="stale pending pays (fill_stale)")
    args = parser.parse_args()
    seconds = fill(args.url, args.pays)
    print(
        f"{args.pays:,} pays, {5 * args.pays:,} postings, {2 * args.pays:,} statement lines of "
        f"{experts_of(args.pays):,} experts ({2 * PAYS_PER_EXPERT} lines each) in {seconds:.1f} s"
    )
    if args.stale_pending:
        seconds, _ = fill_stale(args.url, args.stale_pending)
        print(f"{args.stale_pending:,} stale pending pays in {seconds:.1f} s")
