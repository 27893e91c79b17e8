"""The books: every money movement is one journal entry of postings whose debits equal its credits.

The accounts are accounts.py's.

An entry is written in the same database transaction as the change it records and never edited:
a correction is a new entry. Each (kind, reference) is booked at most once, which is what makes
applying the same event twice change nothing. The expert accounts' balances are also kept in the
wallet table, in the same transaction, for fast reads, and each movement of an expert's money as a
line of their statement (statement.py); `check()` proves both.
"""

import dataclasses

from payapi.domain.clock import now_ms
from payapi.infra.db import RowByKey, db, insert_row, insert_rows, lock_row
from payapi.infra.models import JournalEntry, Posting, Wallet
from payapi.money import statement
from payapi.money.accounts import (  # noqa: F401  (the chart of accounts, read as books.X too)
    AVAILABLE,
    DEBIT_NORMAL,
    FEES,
    PAYOUTS,
    PENDING,
    PINGPP,
    REFUNDS,
    db_sum,
    expert,
    expert_of,
)


@dataclasses.dataclass(frozen=True)
class Line:
    account: str
    debit: int = 0
    credit: int = 0


def debit(account, amount):
    return Line(account, debit=amount)


def credit(account, amount):
    return Line(account, credit=amount)


# The statements of a booking, their SQL text built once (db.py): an entry by its (kind, reference).
entry_of = RowByKey(JournalEntry, JournalEntry.kind, JournalEntry.reference, columns=(JournalEntry.entry_id,))
POSTING_COLUMNS = ("entry_id", "account", "debit", "credit")


class Unbalanced(Exception):
    """A bug: an entry whose debits and credits differ, or a negative or empty line."""


def record(kind, reference, *lines):
    """Book one movement; False if (kind, reference) was booked before. Must run in a transaction."""
    assert db.in_transaction(), "books.record must run inside a transaction"
    lines = [line for line in lines if line.debit or line.credit]
    if any(line.debit < 0 or line.credit < 0 or (line.debit and line.credit) for line in lines):
        raise Unbalanced(f"{kind} {reference}: a line is negative or both debit and credit")
    if sum(line.debit for line in lines) != sum(line.credit for line in lines):
        raise Unbalanced(f"{kind} {reference}: debits differ from credits")
    if recorded(kind, reference):
        return False
    now = now_ms()
    # The experts' wallets are locked before the entry takes its id: an expert's entries then get
    # their ids (and statement lines) in the order their balances change.
    wallets, moved = {}, {}
    for line in lines:
        owner = expert_of(line.account)
        if owner is not None and owner[0] not in wallets:
            wallets[owner[0]] = lock_row(Wallet, {"updated_at": now}, user_id=owner[0])
    # The unique (kind, reference) key stops a racing second booking even past the check above.
    entry_id, _ = insert_row(JournalEntry, {"kind": kind, "reference": reference, "created_at": now})
    if lines:
        insert_rows(Posting, POSTING_COLUMNS, [(entry_id, line.account, line.debit, line.credit) for line in lines])
    for line in lines:
        owner = expert_of(line.account)
        if owner is not None:
            user_id, bucket = owner
            wallet = wallets[user_id]
            setattr(wallet, bucket, getattr(wallet, bucket) + line.credit - line.debit)
            moved[user_id] = moved.get(user_id, 0) + line.credit - line.debit
    for user_id, wallet in wallets.items():
        wallet.updated_at = statement.write_line(wallet, entry_id, now, moved[user_id])
        wallet.save()
    return True


def recorded(kind, reference):
    return entry_of(kind, reference) is not None


# --- reading -------------------------------------------------------------------------------------


def trial_balance():
    """{"accounts": [{"account", "debits", "credits"}], "debits", "credits"}: the two totals are always equal."""
    rows = (
        Posting.select(Posting.account, db_sum(Posting.debit).alias("debits"), db_sum(Posting.credit).alias("credits"))
        .group_by(Posting.account)
        .order_by(Posting.account)
        .tuples()
    )
    accounts = [{"account": account, "debits": int(d or 0), "credits": int(c or 0)} for account, d, c in rows]
    return {
        "accounts": accounts,
        "debits": sum(a["debits"] for a in accounts),
        "credits": sum(a["credits"] for a in accounts),
    }


def check():
    """Every problem with the books, as sentences; an empty list means they balance."""
    problems = []
    unbalanced = (
        Posting.select(Posting.entry_id)
        .group_by(Posting.entry_id)
        .having(db_sum(Posting.debit) != db_sum(Posting.credit))
        .tuples()
    )
    for (entry_id,) in unbalanced:
        entry = JournalEntry.get_or_none(JournalEntry.entry_id == entry_id)
        what = f"{entry.kind} {entry.reference}" if entry else "an entry that does not exist"
        problems.append(f"journal entry {entry_id} ({what}) is unbalanced")
    totals = trial_balance()
    if totals["debits"] != totals["credits"]:
        problems.append(f"the book is unbalanced: debits {totals['debits']} ≠ credits {totals['credits']}")
    sums = {a["account"]: a["credits"] - a["debits"] for a in totals["accounts"]}
    seen = set()
    for wallet in Wallet.select():
        for bucket in (PENDING, AVAILABLE):
            account = expert(wallet.user_id, bucket)
            seen.add(account)
            if getattr(wallet, bucket) != sums.get(account, 0):
                problems.append(
                    f"wallet {wallet.user_id} {bucket} is {getattr(wallet, bucket)} but its postings say "
                    f"{sums.get(account, 0)}"
                )
    for account, total in sums.items():
        if expert_of(account) and account not in seen and total != 0:
            problems.append(f"{account} has postings ({total}) but no wallet")
    return problems + statement.check()
