"""Fill a payapi database with history in bulk (not through the API), for bench/run.py --bulk and
bench/worker_pass.py.

    python -m bench.bulk DATABASE_URL PAYS [--stale-pending N]

PAYS paid pays of 10,000 experts and 100,000 payers, each booked as the books book them: a charge
entry of three postings (Ping++ debit, fees and the expert's pending credit) and a release entry of
two (pending to available), so five postings a pay, and the expert's two statement lines. Rows
go in with multi-row INSERTs of a few thousand rows, in one transaction per chunk; the ids are
new (a prefix of their own), so the benchmark's own users, pays and experts do not meet them.

--stale-pending N adds N pending pays their payers walked away from (fill_stale): created between
two and ten days ago, never checked by the worker (check_after 0), each with its charge, unpaid
and expired (stale_charge), which the worker closes when it gets to it.
"""

import argparse
import json
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
    for first in range(0, stale, CHUNK):
        rows = []
        for i in range(first, min(stale, first + CHUNK)):
            pay_id, at, charge = stale_pay_id(i), stale_created_at(i, stale, now), stale_charge(i, stale, now)
            expert, payer, money = f"e{i % EXPERTS:023d}", f"u{i % PAYERS:023d}", charge["amount"]
            info = json.dumps({"pay_id": pay_id, "status": "pending", "money": money})
            rows.append(
                (pay_id, "order", f"q{i:023d}", "", expert, payer, money, money, "cny", "alipay", "stale", "",
                 json.dumps(charge), charge["id"], "pending", "pending", f"order:q{i:023d}", 0, 0,
                 charge["time_expire"] * 1000, at, at, 0, 0, 0, info, "127.0.0.1", "", "")
            )  # fmt: skip
        with database.atomic():
            _insert(database, Pay, STALE_COLUMNS, rows)
    database.close()
    return time.monotonic() - t0, now


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", metavar="DATABASE_URL")
    parser.add_argument("pays", type=int, help="paid pays, five postings each")
    parser.add_argument("--stale-pending", type=int, default=0, metavar="N", help="stale pending pays (fill_stale)")
    args = parser.parse_args()
    seconds = fill(args.url, args.pays)
    print(f"{args.pays} pays, {5 * args.pays} postings in {seconds:.1f} s")
    if args.stale_pending:
        seconds, _ = fill_stale(args.url, args.stale_pending)
        print(f"{args.stale_pending} stale pending pays in {seconds:.1f} s")
