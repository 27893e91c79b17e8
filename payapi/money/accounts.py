"""The chart of accounts: the books' account names, and how an amount column is summed.

Accounts (debit-normal: what is owed to us; credit-normal: what we owe or earned):

- `pingpp` (debit-normal): what Ping++ holds for the platform. Debited by paid charges, credited
  by refunds and transfers that Ping++ settled.
- `fees` (credit-normal): the platform's revenue.
- `payouts` (credit-normal): withdrawals debited from experts and not yet settled by Ping++.
- `refunds` (credit-normal): refunds accepted by Ping++ and not yet settled by it.
- `expert:<user_id>:pending` and `expert:<user_id>:available` (credit-normal): what the platform
  owes the expert, still held or withdrawable.
"""

from peewee import fn

PINGPP, FEES, PAYOUTS, REFUNDS = "pingpp", "fees", "payouts", "refunds"
PENDING, AVAILABLE = "pending", "available"
DEBIT_NORMAL = {PINGPP}


def expert(user_id, bucket):
    return f"expert:{user_id}:{bucket}"


def expert_of(account):
    """(user_id, bucket) of an expert account, else None."""
    parts = account.split(":")
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "expert" else None


def db_sum(field):
    return fn.COALESCE(fn.SUM(field), 0)
