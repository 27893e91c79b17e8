"""The books: every money movement is one journal entry of postings whose debits equal its credits.

Accounts (debit-normal: what is owed to us; credit-normal: what we owe or earned):

- `pingpp` (debit-normal): what Ping++ holds for the platform. Debited by paid charges, credited
  by refunds and transfers that Ping++ settled.
- `fees` (credit-normal): the platform's revenue.
- `payouts` (credit-normal): withdrawals debited from experts and not yet settled by Ping++.
- `refunds` (credit-normal): refunds accepted by Ping++ and not yet settled by it.
- `expert:<user_id>:pending` and `expert:<user_id>:available` (credit-normal): what the platform
  owes the expert, still held or withdrawable.

An entry is written in the same database transaction as the change it records and never edited:
a correction is a new entry. Each (kind, reference) is booked at most once, which is what makes
applying the same event twice change nothing. The expert accounts' balances are also kept in the
wallet table, in the same transaction, for fast reads; `check()` proves them.
"""

import dataclasses

from peewee import fn

from payapi.domain.clock import now_ms
from payapi.infra.db import db, lock_row
from payapi.infra.models import JournalEntry, Posting, Wallet

PINGPP, FEES, PAYOUTS, REFUNDS = "pingpp", "fees", "payouts", "refunds"
PENDING, AVAILABLE = "pending", "available"
DEBIT_NORMAL = {PINGPP}


def expert(user_id, bucket):
    return f"expert:{user_id}:{bucket}"


def _expert_of(account):
    """(user_id, bucket) of an expert account, else None."""
    parts = account.split(":")
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "expert" else None


@dataclasses.dataclass(frozen=True)
class Line:
    account: str
    debit: int = 0
    credit: int = 0


def debit(account, amount):
    return Line(account, debit=amount)


def credit(account, amount):
    return Line(account, credit=amount)


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
    if JournalEntry.select().where(JournalEntry.kind == kind, JournalEntry.reference == reference).exists():
        return False
    now = now_ms()
    # The unique (kind, reference) key stops a racing second booking even past the check above.
    entry = JournalEntry.create(kind=kind, reference=reference, created_at=now)
    if lines:
        Posting.insert_many(
            [{"entry_id": entry.entry_id, "account": line.account, "debit": line.debit, "credit": line.credit}
             for line in lines]
        ).execute()
    for line in lines:
        owner = _expert_of(line.account)
        if owner is not None:
            user_id, bucket = owner
            wallet = lock_row(Wallet, {"updated_at": now}, user_id=user_id)
            setattr(wallet, bucket, getattr(wallet, bucket) + line.credit - line.debit)
            wallet.updated_at = now
            wallet.save()
    return True


def recorded(kind, reference):
    return JournalEntry.select().where(JournalEntry.kind == kind, JournalEntry.reference == reference).exists()


# --- reading -------------------------------------------------------------------------------------

def db_sum(field):
    return fn.COALESCE(fn.SUM(field), 0)


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
        if _expert_of(account) and account not in seen and total != 0:
            problems.append(f"{account} has postings ({total}) but no wallet")
    return problems
