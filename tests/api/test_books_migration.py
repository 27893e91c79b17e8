"""Migration 006 moves an installed database from the ledger to the books without losing history.

The database is built as the previous version left it: migrations up to 005 applied, then rows
written exactly as that version wrote them (a signed ledger line per expert movement, a wallet
balance, the applied Ping++ events that carry each refund's amount).
"""

import json

from peewee_migrate import Router

from payapi.__main__ import MIGRATIONS
from payapi.domain.ids import new_id
from payapi.infra.db import bind, open_database
from payapi.infra.models import Refund, Wallet
from payapi.money import books
from tests.api.test_database import empty_database_url  # noqa: F401  (a fixture)
from tests.support.databases import ledger_of

FEE_BPS = 250


def insert(database, table, **row):
    columns = ", ".join(row)
    database.execute_sql(
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join([database.param] * len(row))})", tuple(row.values())
    )


def previous_version_history(database):
    """Two experts: paid pays (2.5 % fee), a partial refund, a settled and a failed withdrawal."""
    alice, bob, payer = new_id(), new_id(), new_id()
    t = 1_700_000_000_000
    balances = {alice: 0, bob: 0}

    def ledger(user, amount, kind, reference):
        balances[user] += amount
        insert(
            database,
            "ledger_entry",
            user_id=user,
            amount=amount,
            kind=kind,
            reference=reference,
            balance_after=balances[user],
            created_at=t,
        )

    def paid_pay(expert, money, charge_id):
        pay_id = new_id()
        credited = money - money * FEE_BPS // 10_000
        insert(
            database,
            "pay",
            pay_id=pay_id,
            type="order",
            o_id=new_id(),
            note_id="",
            expert_id=expert,
            user_id=payer,
            amount=money,
            money=money,
            currency="cny",
            channel="alipay",
            subject="预约",
            description="",
            charge=json.dumps({"id": charge_id, "paid": True}),
            charge_id=charge_id,
            status="paid",
            client_status="success",
            credited=credited,
            amount_refunded=0,
            client_ip="",
            platform="",
            store="",
            created_at=t,
            updated_at=t,
            paid_at=t,
            info="{}",
            check_after=0,
        )
        ledger(expert, credited, "charge", pay_id)
        return pay_id, credited

    def withdrawal(expert, amount, status):
        withdraw_id = new_id()
        insert(
            database,
            "withdrawal",
            withdraw_id=withdraw_id,
            user_id=expert,
            amount=amount,
            status=status,
            account_type="alipay",
            account_id="a@example.com",
            account_name="张三",
            month="2023-11",
            active_month=None if status == "failed" else f"{expert}:2023-11:{withdraw_id[-4:]}",
            transfer_id=None,
            transfer=None,
            attempts=1,
            last_error="",
            lease_until=0,
            client_ip="",
            platform="",
            store="",
            created_at=t,
            updated_at=t,
        )
        ledger(expert, -amount, "withdraw", withdraw_id)
        if status == "failed":
            ledger(expert, amount, "withdraw_refund", withdraw_id)
        return withdraw_id

    first, credited = paid_pay(alice, 10_000, "ch_first")
    paid_pay(alice, 4_000, "ch_second")
    paid_pay(bob, 1_001, "ch_third")
    # A partial refund of 4,000 of the first pay: the expert gave back 3,900 of their 9,750.
    refund = {
        "id": "re_one",
        "object": "refund",
        "amount": 4_000,
        "charge": "ch_first",
        "status": "succeeded",
        "description": "退款",
    }
    insert(
        database,
        "event",
        event_id="evt_refund",
        type="refund.succeeded",
        object_id="re_one",
        outcome="applied",
        detail="",
        received_at=t,
        payload=json.dumps({"id": "evt_refund", "type": "refund.succeeded", "data": {"object": refund}}),
    )
    database.execute_sql(f"UPDATE pay SET amount_refunded = 4000 WHERE pay_id = {database.param}", (first,))
    ledger(alice, -3_900, "refund", "re_one")
    settled = withdrawal(alice, 2_000, "succeeded")
    failed = withdrawal(bob, 500, "failed")
    for user, balance in balances.items():
        insert(database, "wallet", user_id=user, balance=balance, updated_at=t)
    return alice, bob, balances, first, settled, failed


def test_the_books_migration_keeps_every_balance_and_movement(empty_database_url):  # noqa: F811
    database = open_database(empty_database_url)
    router = Router(database, migrate_dir=MIGRATIONS)
    router.run("005_worker_schedule")
    alice, bob, balances, first, settled, failed = previous_version_history(database)

    router.run()
    bind(database)
    try:
        assert books.check() == []
        for user, balance in balances.items():
            wallet = Wallet.get_by_id(user)
            assert (wallet.pending, wallet.available) == (0, balance)
        assert [(kind, amount) for kind, _, amount in ledger_of(alice)] == [
            ("charge", 9_750),
            ("charge", 3_900),
            ("refund", -3_900),
            ("withdraw", -2_000),
        ]
        assert [(kind, amount) for kind, _, amount in ledger_of(bob)] == [
            ("charge", 976),
            ("withdraw", -500),
            ("withdraw_refund", 500),
        ]
        totals = {a["account"]: a["credits"] - a["debits"] for a in books.trial_balance()["accounts"]}
        # What Ping++ holds: 15,001 paid, less the 4,000 refunded and the 2,000 paid out.
        assert totals["pingpp"] == -(15_001 - 4_000 - 2_000)
        # The fees: 250 + 100 + 25, less the refund's fee share (4,000 - 3,900).
        assert totals["fees"] == 250 + 100 + 25 - 100
        assert totals.get("payouts", 0) == 0  # both withdrawals settled one way or the other
        migrated = Refund.get(Refund.pingpp_refund_id == "re_one")
        assert (migrated.pay_id, migrated.amount, migrated.share, migrated.status) == (first, 4_000, 3_900, "succeeded")
        assert not database.table_exists("ledger_entry")
    finally:
        database.close()
