"""The expert's statement (收支明细): every movement of their money, from the books.

Each journal entry that touches an expert's accounts (`expert:<id>:pending|available`) is one line
of their statement: its amount is what the entry's postings did to their balance (pending +
available), and the line carries the balance and the available balance after it. The lines are a
projection of the postings, written by books.record in the same transaction as the postings and
under the wallet's row lock (so an expert's lines follow one another exactly as their balance
changed), and proved by `check()` after every database test and by `python -m payapi books check`:
never a second ledger that could disagree.

Why a projection rather than summing postings when reading: a line's running balance would then
cost a sum over everything before it, and a page deep in a large statement would cost the whole
history. Stored with the line, a page is one range of the primary key (user_id, created_at,
entry_id), newest first, whatever the size of the books.

A line's `bill_id` is its place in that order: 4 bytes of Unix seconds (ObjectId's layout), 2 of
milliseconds, 6 of the journal entry's id. A `before` is read as a place, not looked up: another
user's bill_id gives the asker's own lines older than it, and nothing of theirs.
"""

from peewee import JOIN

from payapi.contract.shapes import BillLine
from payapi.domain.clock import iso, month_range, natural_month, now_ms
from payapi.infra.db import insert_row
from payapi.infra.models import JournalEntry, Pay, Posting, Refund, StatementLine, Wallet
from payapi.money import accounts as books  # the chart of accounts (books.py imports this module)

# The journal's kinds that move an expert's money, and the statement's names for them.
KINDS = {
    "charge": "income",
    "release": "available",
    "refund": "refund",
    "refund_failed": "refund_returned",
    "withdraw": "withdrawal",
    "withdraw_refund": "withdrawal_returned",
}
TITLES = {
    "refund": "退款",
    "refund_returned": "退款失败退回",
    "withdrawal": "提现",
    "withdrawal_returned": "提现退回",
    "available": "收入可提现",
}
INCOME_TITLES = {"order": "预约订单收入", "note": "小纸条收入"}


def bill_id(created_at, entry_id):
    seconds, ms = divmod(created_at, 1000)
    return f"{seconds:08x}{ms:04x}{entry_id:012x}"


def position(bill_id):
    """(created_at, entry_id) of a bill_id (24 hex, already checked), the place a `before` stands for."""
    return int(bill_id[:8], 16) * 1000 + int(bill_id[8:12], 16), int(bill_id[12:], 16)


# --- writing (books.record only) -------------------------------------------------------------------


def write_line(wallet, entry_id, now, amount):
    """The line of an entry that moved this expert's money by amount; wallet is their locked row with
    the entry applied. -> the line's time: now, or the previous line's if the clock went back."""
    at = max(now, wallet.updated_at)
    insert_row(
        StatementLine,
        {
            "user_id": wallet.user_id,
            "created_at": at,
            "entry_id": entry_id,
            "amount": amount,
            "balance_after": wallet.pending + wallet.available,
            "available_after": wallet.available,
        },
    )
    return at


# --- reading ---------------------------------------------------------------------------------------


def page_query(user_id, limit, before=None, month=None, tz=None):
    """The query of a page (limit + 1 rows, to know whether there is more): one range of the primary key."""
    line = StatementLine
    query = line.select().where(line.user_id == user_id)
    if month is not None:
        start, end = month_range(month, tz)
        query = query.where(line.created_at >= start, line.created_at < end)
    if before is not None:
        at, entry_id = position(before)
        query = query.where(line.created_at <= at, (line.created_at < at) | (line.entry_id < entry_id))
    return query.order_by(line.created_at.desc(), line.entry_id.desc()).limit(limit + 1)


def page(user_id, limit, before=None, month=None, tz=None):
    """GET /rest/pay/bills: -> ([BillLine], has_more), newest first."""
    rows = list(page_query(user_id, limit, before, month, tz))
    return describe(rows[:limit]), len(rows) > limit


def describe(rows):
    """StatementLine rows -> BillLines, with what each belongs to (a handful of lookups by key per page)."""
    if not rows:
        return []
    entries = {
        entry_id: (kind, reference)
        for entry_id, kind, reference in JournalEntry.select(
            JournalEntry.entry_id, JournalEntry.kind, JournalEntry.reference
        )
        .where(JournalEntry.entry_id.in_([r.entry_id for r in rows]))
        .tuples()
    }
    incomes = [r.entry_id for r in rows if entries[r.entry_id][0] == "charge"]
    # Every posting of the page's charges (three each), the fees picked out here: with the account
    # in the WHERE, SQLite without statistics searched the account's index, i.e. the fee of every
    # charge ever booked (measured: bench/run.py --bulk, docs/performance.md, "A larger database").
    fees = {}
    for entry_id, account, credit in (
        Posting.select(Posting.entry_id, Posting.account, Posting.credit).where(Posting.entry_id.in_(incomes)).tuples()
        if incomes
        else ()
    ):
        if account == books.FEES:
            fees[entry_id] = fees.get(entry_id, 0) + credit
    refund_refs = [ref for kind, ref in entries.values() if kind in ("refund", "refund_failed")]
    # A refund's entries are booked under Ping++'s refund id, or under ours when its share was taken
    # while Ping++'s answer was unclear (and stay so once Ping++'s id is known): look up both.
    refunds = {}
    for refund_id, pay_id, pingpp_id in (
        Refund.select(Refund.refund_id, Refund.pay_id, Refund.pingpp_refund_id)
        .where(Refund.pingpp_refund_id.in_(refund_refs) | Refund.refund_id.in_(refund_refs))
        .tuples()
        if refund_refs
        else ()
    ):
        refunds[refund_id] = (refund_id, pay_id)
        if pingpp_id:
            refunds[pingpp_id] = (refund_id, pay_id)
    pay_ids = {ref for kind, ref in entries.values() if kind in ("charge", "release")}
    pay_ids |= {pay_id for _, pay_id in refunds.values()}
    pays = (
        {
            pay_id: (type_, subject)
            for pay_id, type_, subject in Pay.select(Pay.pay_id, Pay.type, Pay.subject)
            .where(Pay.pay_id.in_(list(pay_ids)))
            .tuples()
        }
        if pay_ids
        else {}
    )
    lines = []
    for row in rows:
        journal_kind, reference = entries[row.entry_id]
        kind = KINDS[journal_kind]
        ids = {}
        if journal_kind in ("charge", "release"):
            ids["pay_id"] = reference
        elif journal_kind in ("refund", "refund_failed"):
            refund_id, pay_id = refunds.get(reference, (None, None))
            ids.update(refund_id=refund_id, pay_id=pay_id)
        else:
            ids["withdraw_id"] = reference
        type_, subject = pays.get(ids.get("pay_id"), (None, None))
        lines.append(
            BillLine(
                bill_id=bill_id(row.created_at, row.entry_id),
                kind=kind,
                title=INCOME_TITLES.get(type_, "收入") if kind == "income" else TITLES[kind],
                amount=row.amount,
                balance_after=row.balance_after,
                available_after=row.available_after,
                fee=int(fees.get(row.entry_id, 0)) if kind == "income" else None,
                type=type_,
                subject=subject,
                created_at=iso(row.created_at),
                **ids,
            )
        )
    return lines


def _balance_before(user_id, at):
    """The balance after the expert's last line before at (0 before their first)."""
    line = StatementLine
    value = (
        line.select(line.balance_after)
        .where(line.user_id == user_id, line.created_at < at)
        .order_by(line.created_at.desc(), line.entry_id.desc())
        .limit(1)
        .scalar()
    )
    return int(value or 0)


def summary(user_id, month, tz):
    """GET /rest/pay/bills/summary: a natural month's totals by kind, and the balances around it.

    opening and closing are the balances after the last lines before and within the month, as the
    lines hold them: closing = opening + income + refunds + withdrawn + returned is what the lines
    guarantee (check()), not a sum made to fit.
    """
    month = month or natural_month(now_ms(), tz)
    start, end = month_range(month, tz)
    line = StatementLine
    in_month = (line.user_id == user_id) & (line.created_at >= start) & (line.created_at < end)
    by_kind = dict(
        line.select(JournalEntry.kind, books.db_sum(line.amount))
        .join(JournalEntry, on=(JournalEntry.entry_id == line.entry_id))
        .where(in_month)
        .group_by(JournalEntry.kind)
        .tuples()
    )
    fees = (
        line.select(books.db_sum(Posting.credit))
        .join(JournalEntry, on=(JournalEntry.entry_id == line.entry_id))
        .join(Posting, JOIN.INNER, on=(Posting.entry_id == line.entry_id))
        .where(in_month, JournalEntry.kind == "charge", Posting.account == books.FEES)
        .scalar()
    )
    total = {
        kind: sum(int(amount) for journal_kind, amount in by_kind.items() if KINDS.get(journal_kind) in kinds)
        for kind, kinds in {
            "income": ("income",),
            "refunds": ("refund", "refund_returned"),
            "withdrawn": ("withdrawal",),
            "returned": ("withdrawal_returned",),
        }.items()
    }
    return {
        "month": month,
        **total,
        "fees": int(fees or 0),
        "opening": _balance_before(user_id, start),
        "closing": _balance_before(user_id, end),
    }


# --- proving it ------------------------------------------------------------------------------------


def check():
    """Every way the statements disagree with the books, as sentences; empty when they agree.

    Each line's amount is what its entry's postings did to the expert's balance, each entry that
    touches an expert's accounts has their line, and walking each expert's lines in order, the
    balances after each line run from 0 to what their wallet holds now.
    """
    problems = []
    expected, kinds = {}, {}  # (entry_id, user_id) -> (change of balance, change of available)
    rows = (
        Posting.select(
            Posting.entry_id,
            JournalEntry.kind,
            Posting.account,
            books.db_sum(Posting.credit) - books.db_sum(Posting.debit),
        )
        .join(JournalEntry, on=(JournalEntry.entry_id == Posting.entry_id))
        .where(Posting.account.startswith("expert:"))
        .group_by(Posting.entry_id, JournalEntry.kind, Posting.account)
        .tuples()
    )
    for entry_id, kind, account, net in rows:
        owner = books.expert_of(account)
        if owner is None:
            continue
        user_id, bucket = owner
        change, available = expected.get((entry_id, user_id), (0, 0))
        expected[entry_id, user_id] = (change + int(net), available + (int(net) if bucket == books.AVAILABLE else 0))
        kinds[entry_id] = kind
    after = {}
    lines = StatementLine.select().order_by(StatementLine.user_id, StatementLine.created_at, StatementLine.entry_id)
    for line in lines.iterator():
        balance, available = after.get(line.user_id, (0, 0))
        moved = expected.pop((line.entry_id, line.user_id), None)
        if moved is None:
            problems.append(
                f"statement line of entry {line.entry_id} for {line.user_id} has no postings on their accounts"
            )
            moved = (line.amount, line.available_after - available)
        elif line.amount != moved[0]:
            problems.append(
                f"statement line of entry {line.entry_id} for {line.user_id} says {line.amount} but its "
                f"postings say {moved[0]}"
            )
        elif kinds[line.entry_id] not in KINDS:
            problems.append(
                f"entry {line.entry_id} of kind {kinds[line.entry_id]} moves an expert's money but the "
                "statement has no name for it"
            )
        if (line.balance_after, line.available_after) != (balance + moved[0], available + moved[1]):
            problems.append(
                f"statement of {line.user_id} does not run at entry {line.entry_id}: after it "
                f"{line.balance_after}/{line.available_after}, but {balance + moved[0]}/{available + moved[1]} by "
                "the lines before it and its postings"
            )
        after[line.user_id] = (line.balance_after, line.available_after)
    for entry_id, user_id in expected:
        problems.append(f"entry {entry_id} moves the money of {user_id} but their statement has no line for it")
    for wallet in Wallet.select():
        if after.get(wallet.user_id, (0, 0)) != (wallet.balance, wallet.available):
            problems.append(
                f"statement of {wallet.user_id} ends at {after.get(wallet.user_id, (0, 0))} "
                f"(balance, available) but the wallet holds ({wallet.balance}, {wallet.available})"
            )
    return problems


def lines_of(user_id):
    """Every line of the expert's statement, newest first, read page by page as the app reads them."""
    lines, before = [], None
    while True:
        chunk, more = page(user_id, 100, before)
        lines += chunk
        if not more:
            return lines
        before = chunk[-1].bill_id
