"""GET /rest/pay/bills and /rest/pay/bills/summary: the expert's statement (收支明细), read from the books.

Every movement of an expert's money is a line: income net of the fee, a refund's share, a failed
refund's share given back, a withdrawal, a failed withdrawal given back, held money becoming
available. The lines add up to the wallet after every database test (tests/conftest.py).
"""

import dataclasses
import datetime
import json
import re
import threading
import time

import pytest
import time_machine
from peewee_migrate import Router

from payapi.__main__ import MIGRATIONS
from payapi.domain.clock import iso
from payapi.domain.ids import new_id
from payapi.infra.db import bind, db, is_mysql, open_database, transaction
from payapi.infra.models import JournalEntry, Posting, Refund, StatementLine, Wallet
from payapi.money import books, payments, refunds, statement
from payapi.money.withdrawals import run_payouts
from tests.api.test_database import empty_database_url  # noqa: F401  (a fixture)
from tests.support.config import SERVICE_KEY
from tests.support.databases import analyze, assert_one_index_search
from tests.support.scenarios import set_up_expert, transfer_object, withdraw

FEE_BPS = 250  # 10,000 fen paid: 250 to the platform, 9,750 to the expert
SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, platform_fee_bps=FEE_BPS)


def bills(user, **params):
    response = user.get("/rest/pay/bills", **params)
    assert response.status_int == 200 and response.json["code"] == 900, response.json
    return response.json


def lines(user, **params):
    return bills(user, **params)["list"]


def summary(user, **params):
    response = user.get("/rest/pay/bills/summary", **params)
    assert response.status_int == 200 and response.json["code"] == 900, response.json
    return response.json


def ask_refund(app, pay_id, amount=None):
    body = {"description": "预约取消", **({"amount": amount} if amount is not None else {})}
    response = app.post(
        f"/internal/pays/{pay_id}/refunds",
        json.dumps(body).encode(),
        headers={"X-Service-Key": SERVICE_KEY},
        content_type="application/json",
        expect_errors=True,
    )
    assert response.json["code"] == 900, response.json
    return response.json["refund"]


def brief(line):
    """A line without its id and time: what it says."""
    return {k: v for k, v in line.items() if k not in ("bill_id", "createdAt")}


@pytest.fixture
def pay_note(order_service, fake_pingpp, send_event):
    """A paid question note (小纸条) for the expert."""

    def pay(expert_id, money):
        created = order_service(
            type="note", o_id=None, note_id=new_id(), expert_id=expert_id, amount=money, subject="小纸条提问"
        )
        assert created.json["code"] == 900, created.json
        charge = fake_pingpp.mark_paid(created.json["info"]["charge"]["id"])
        assert send_event("charge.succeeded", charge).json["result"] == "applied"
        return created.json["info"]

    return pay


# --- each kind -----------------------------------------------------------------------------------


def test_a_paid_pay_is_an_income_line_net_of_its_fee(make_user, pay_expert):
    user = make_user()
    paid = pay_expert(user.id, 10_000)
    answer = bills(user)
    assert answer["has_more"] is False
    (line,) = answer["list"]
    assert brief(line) == {
        "kind": "income",
        "title": "预约订单收入",
        "amount": 9_750,
        "fee": 250,
        "balance_after": 9_750,
        "available_after": 9_750,
        "pay_id": paid["pay_id"],
        "type": "order",
        "subject": paid["subject"],
    }
    assert re.fullmatch("[0-9a-f]{24}", line["bill_id"])
    entry = JournalEntry.get(JournalEntry.kind == "charge", JournalEntry.reference == paid["pay_id"])
    assert line["createdAt"] == iso(entry.created_at)
    assert statement.position(line["bill_id"]) == (entry.created_at, entry.entry_id)


def test_a_paid_note_is_a_note_income(make_user, pay_note):
    user = make_user()
    paid = pay_note(user.id, 1_001)
    (line,) = lines(user)
    # 1,001 fen at 2.5 %: the fee rounds down to 25, the odd fen goes to the expert.
    assert (line["kind"], line["title"], line["amount"], line["fee"], line["type"], line["subject"]) == (
        "income",
        "小纸条收入",
        976,
        25,
        "note",
        "小纸条提问",
    )
    assert line["pay_id"] == paid["pay_id"]


def test_a_partial_and_then_a_full_refund_are_negative_lines_of_the_pay(app, make_user, pay_expert, fake_pingpp):
    user = make_user()
    paid = pay_expert(user.id, 10_000)
    first = ask_refund(app, paid["pay_id"], 4_000)
    rest = ask_refund(app, paid["pay_id"])
    newest, older, income = lines(user)
    assert income["kind"] == "income"
    assert brief(older) == {
        "kind": "refund",
        "title": "退款",
        "amount": -3_900,
        "balance_after": 5_850,
        "available_after": 5_850,
        "pay_id": paid["pay_id"],
        "refund_id": first["refund_id"],
        "type": "order",
        "subject": paid["subject"],
    }
    assert (newest["kind"], newest["amount"], newest["refund_id"], newest["balance_after"]) == (
        "refund",
        -5_850,
        rest["refund_id"],
        0,
    )
    assert "fee" not in newest and "withdraw_id" not in newest


def test_a_refund_ping_fails_gives_its_share_back_as_a_line(app, make_user, pay_expert, fake_pingpp, gateway):
    user = make_user()
    paid = pay_expert(user.id, 10_000)
    refund = ask_refund(app, paid["pay_id"], 4_000)
    fake_pingpp.settle_refund(Refund.get_by_id(refund["refund_id"]).pingpp_refund_id, "failed")
    with time_machine.travel(time.time() + 5 * 60 + 1, tick=False):
        assert refunds.reconcile_refunds(gateway)["settled"] == 1
        returned, taken, _ = lines(user.remint())
    assert (taken["kind"], taken["amount"]) == ("refund", -3_900)
    assert brief(returned) == {
        "kind": "refund_returned",
        "title": "退款失败退回",
        "amount": 3_900,
        "balance_after": 9_750,
        "available_after": 9_750,
        "pay_id": paid["pay_id"],
        "refund_id": refund["refund_id"],
        "type": "order",
        "subject": paid["subject"],
    }


def test_a_succeeded_withdrawal_is_one_negative_line(expert, pending, gateway, fake_pingpp):
    fake_pingpp.transfer_status = "paid"
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    newest, income = lines(expert)  # Ping++ paying it out moves nothing of the expert's
    assert income["kind"] == "income"
    assert brief(newest) == {
        "kind": "withdrawal",
        "title": "提现",
        "amount": -3_000,
        "balance_after": 6_750,
        "available_after": 6_750,
        "withdraw_id": pending,
    }


def test_a_failed_withdrawal_is_given_back_in_a_line_of_its_own(expert, pending, send_event):
    assert send_event("transfer.failed", transfer_object(pending, 3_000, "failed")).json["result"] == "applied"
    returned, taken, _ = lines(expert)
    assert (taken["kind"], taken["amount"], taken["withdraw_id"]) == ("withdrawal", -3_000, pending)
    assert brief(returned) == {
        "kind": "withdrawal_returned",
        "title": "提现退回",
        "amount": 3_000,
        "balance_after": 9_750,
        "available_after": 9_750,
        "withdraw_id": pending,
    }


class TestSettlementHold:
    HOLD_S = 3

    @pytest.fixture
    def settings(self, settings):
        return dataclasses.replace(settings, settlement_hold_seconds=self.HOLD_S)

    def test_held_income_is_in_the_balance_but_not_available_until_its_line_says_so(self, make_user, pay_expert, clock):
        user = make_user()
        paid = pay_expert(user.id, 10_000)
        (income,) = lines(user)
        assert (income["kind"], income["amount"], income["balance_after"], income["available_after"]) == (
            "income",
            9_750,
            9_750,
            0,
        )
        clock.shift(self.HOLD_S)
        assert payments.release_holds()["released"] == 1
        released, _ = lines(user)
        assert brief(released) == {
            "kind": "available",
            "title": "收入可提现",
            "amount": 0,
            "balance_after": 9_750,
            "available_after": 9_750,
            "pay_id": paid["pay_id"],
            "type": "order",
            "subject": paid["subject"],
        }

    def test_a_refund_while_held_takes_from_pending(self, app, make_user, pay_expert, clock):
        user = make_user()
        paid = pay_expert(user.id, 10_000)
        ask_refund(app, paid["pay_id"], 4_000)
        clock.shift(self.HOLD_S)
        assert payments.release_holds()["released"] == 1
        released, refund, _ = lines(user)
        assert (refund["amount"], refund["balance_after"], refund["available_after"]) == (-3_900, 5_850, 0)
        assert (released["amount"], released["balance_after"], released["available_after"]) == (0, 5_850, 5_850)


# --- paging, months, users ----------------------------------------------------------------------


def test_pages_follow_one_another_by_before_newest_first(make_user, pay_expert):
    user = make_user()
    for money in (1_000, 2_000, 3_000, 4_000, 5_000):
        pay_expert(user.id, money)
    everything = lines(user)
    assert [line["amount"] for line in everything] == [4_875, 3_900, 2_925, 1_950, 975]
    assert [line["balance_after"] for line in everything] == [14_625, 9_750, 5_850, 2_925, 975]
    first = bills(user, limit=2)
    second = bills(user, limit=2, before=first["list"][-1]["bill_id"])
    third = bills(user, limit=2, before=second["list"][-1]["bill_id"])
    assert (first["has_more"], second["has_more"], third["has_more"]) == (True, True, False)
    assert first["list"] + second["list"] + third["list"] == everything
    assert bills(user, before=everything[-1]["bill_id"]) == {"code": 900, "list": [], "has_more": False}
    assert len(lines(user, limit="100")) == 5 and len(lines(user, limit=1)) == 1


def test_another_users_bill_id_as_before_gives_nothing_of_theirs(make_user, pay_expert):
    alice, bob = make_user(), make_user()
    pay_expert(bob.id, 1_000)
    pay_expert(alice.id, 2_000)
    pay_expert(bob.id, 3_000)
    (alices,) = lines(alice)
    assert [line["amount"] for line in lines(bob)] == [2_925, 975]
    # Bob asks for what is older than Alice's line: his own older line, none of hers.
    assert [line["amount"] for line in lines(bob, before=alices["bill_id"])] == [975]
    assert lines(make_user()) == []
    assert summary(make_user())["closing"] == 0


def test_lines_on_the_first_instant_of_a_month_belong_to_it_in_timezone(make_user, pay_expert, clock):
    # 2026-11-01 00:00 in Shanghai is 2026-10-31T16:00:00Z.
    start = datetime.datetime(2026, 11, 1, tzinfo=SHANGHAI)
    clock.move_to(start - datetime.timedelta(microseconds=500))
    user = make_user()
    pay_expert(user.id, 1_000)  # the last instant of October
    clock.move_to(start)
    pay_expert(user.id, 2_000)  # the first of November
    november, october = lines(user.remint())
    assert (october["createdAt"], november["createdAt"]) == ("2026-10-31T15:59:59.999Z", "2026-10-31T16:00:00.000Z")
    assert lines(user, month="2026-10") == [october]
    assert lines(user, month="2026-11") == [november]
    assert lines(user, month="2026-12") == []
    assert lines(user, month="2026-11", before=november["bill_id"]) == []


def test_month_and_before_together_page_within_the_month(make_user, pay_expert, clock):
    clock.move_to(datetime.datetime(2026, 9, 20, 12, tzinfo=SHANGHAI))
    user = make_user()
    pay_expert(user.id, 1_000)
    clock.move_to(datetime.datetime(2026, 10, 2, 12, tzinfo=SHANGHAI))
    for money in (2_000, 3_000, 4_000):
        pay_expert(user.id, money)
        clock.shift(60)
    clock.move_to(datetime.datetime(2026, 11, 2, 12, tzinfo=SHANGHAI))
    pay_expert(user.id, 5_000)
    user.remint()
    first = bills(user, month="2026-10", limit=2)
    assert [line["amount"] for line in first["list"]] == [3_900, 2_925] and first["has_more"] is True
    rest = bills(user, month="2026-10", limit=2, before=first["list"][-1]["bill_id"])
    assert [line["amount"] for line in rest["list"]] == [1_950] and rest["has_more"] is False


def test_the_summary_of_a_month_adds_up(app, make_user, pay_expert, clock, gateway, fake_pingpp, send_event):
    clock.move_to(datetime.datetime(2026, 9, 28, 12, tzinfo=SHANGHAI))
    user = set_up_expert(make_user())
    pay_expert(user.id, 4_000)  # September: 3,900
    clock.move_to(datetime.datetime(2026, 10, 3, 12, tzinfo=SHANGHAI))
    user.remint()
    paid = pay_expert(user.id, 10_000)  # 9,750, fee 250
    pay_expert(user.id, 1_001)  # 976, fee 25
    ask_refund(app, paid["pay_id"], 4_000)  # -3,900
    failed = withdraw(user, 2_000).json["withdraw_id"]
    assert send_event("transfer.failed", transfer_object(failed, 2_000, "failed")).json["result"] == "applied"
    assert withdraw(user, 5_000).json["code"] == 900  # the failed one did not use up the month
    clock.move_to(datetime.datetime(2026, 11, 5, 12, tzinfo=SHANGHAI))
    user.remint()
    pay_expert(user.id, 2_000)  # November: 1,950

    october = summary(user, month="2026-10")
    assert october == {
        "code": 900,
        "month": "2026-10",
        "income": 9_750 + 976,
        "fees": 250 + 25,
        "refunds": -3_900,
        "withdrawn": -7_000,
        "returned": 2_000,
        "opening": 3_900,
        "closing": 3_900 + 9_750 + 976 - 3_900 - 7_000 + 2_000,
    }
    assert october["closing"] == sum(line["amount"] for line in lines(user, month="2026-10")) + october["opening"]
    assert summary(user, month="2026-09")["closing"] == october["opening"]
    november = summary(user)  # the current month
    assert (november["month"], november["opening"], november["income"], november["closing"]) == (
        "2026-11",
        october["closing"],
        1_950,
        october["closing"] + 1_950,
    )
    assert november["closing"] == Wallet.get_by_id(user.id).balance
    assert summary(user, month="2027-01")["opening"] == november["closing"]


# --- the contract's edges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"limit": "1.5"},
        {"limit": "-1"},
        {"limit": ""},
        {"before": "xyz"},
        {"before": "5" * 23},
        {"before": "A" * 24},
        {"before": "g" * 24},
        {"month": "2026-13"},
        {"month": "2026-00"},
        {"month": "2026-1"},
        {"month": "26-11"},
        {"month": "2026/11"},
        {"month": "1969-12"},
        {"month": "2026-11-01"},
        {"month": ""},
    ],
)
def test_bad_input_is_904(user, params):
    response = user.get("/rest/pay/bills", **params)
    assert (response.status_int, response.json["code"]) == (400, 904), response.json
    assert response.json["msg"]
    if "month" in params:
        response = user.get("/rest/pay/bills/summary", **params)
        assert (response.status_int, response.json["code"]) == (400, 904), response.json


def test_a_repeated_parameter_is_904(user):
    response = user.app.get("/rest/pay/bills?month=2026-10&month=2026-11", headers=user.headers, expect_errors=True)
    assert (response.status_int, response.json["code"]) == (400, 904)


def test_without_a_token_it_is_901(app):
    for path in ("/rest/pay/bills", "/rest/pay/bills/summary"):
        response = app.get(path, expect_errors=True)
        assert (response.status_int, response.json["code"]) == (401, 901)


def test_any_well_formed_bill_id_is_a_place_in_the_statement(make_user, pay_expert):
    user = make_user()
    pay_expert(user.id, 1_000)
    assert len(lines(user, before="f" * 24)) == 1  # after everything
    assert lines(user, before="0" * 24) == []  # before everything


# --- one truth -------------------------------------------------------------------------------------


def test_the_books_check_finds_a_line_that_disagrees_with_its_postings(make_user, pay_expert):
    user = make_user()
    pay_expert(user.id, 1_000)
    pay_expert(user.id, 2_000)
    (first, second) = StatementLine.select().where(StatementLine.user_id == user.id).order_by(StatementLine.entry_id)
    StatementLine.update(amount=first.amount + 1).where(StatementLine.entry_id == first.entry_id).execute()
    problems = books.check()
    assert any("says 976 but its postings say 975" in p for p in problems), problems
    StatementLine.update(amount=first.amount).where(StatementLine.entry_id == first.entry_id).execute()
    StatementLine.update(balance_after=second.balance_after - 1).where(
        StatementLine.entry_id == second.entry_id
    ).execute()
    problems = books.check()
    assert any("does not run" in p for p in problems) and any("ends at (2924" in p for p in problems), problems
    StatementLine.delete().where(StatementLine.entry_id == second.entry_id).execute()
    assert any("has no line for it" in p for p in books.check())
    StatementLine.insert(
        user_id=second.user_id,
        created_at=second.created_at,
        entry_id=second.entry_id,
        amount=second.amount,
        balance_after=second.balance_after,
        available_after=second.available_after,
    ).execute()
    assert books.check() == []


def test_a_line_is_never_dated_before_the_experts_line_before_it(make_user, pay_expert, clock):
    user = make_user()
    pay_expert(user.id, 1_000)
    clock.shift(-3600)  # the host's clock stepped back
    pay_expert(user.id, 2_000)
    newest, older = lines(user.remint())
    assert newest["createdAt"] == older["createdAt"] and newest["amount"] == 1_950
    assert statement.position(newest["bill_id"]) > statement.position(older["bill_id"])


# --- fast at any size: the page is one range of the primary key -------------------------------------


@pytest.fixture
def many_lines(database):
    """2,000 lines of 20 experts (as books.record writes them), so the planner sees a real table."""
    rows = []
    for n in range(20):
        user_id = f"{n:024x}"
        for i in range(100):
            rows.append(
                {
                    "user_id": user_id,
                    "created_at": 1_790_000_000_000 + i * 60_000,
                    "entry_id": n * 1000 + i,
                    "amount": 0,
                    "balance_after": 0,
                    "available_after": 0,
                }
            )
    with db.atomic():
        StatementLine.insert_many(rows).execute()
    analyze("statement_line")
    yield f"{7:024x}"
    StatementLine.delete().execute()


MIDDLE = statement.bill_id(1_790_000_000_000 + 50 * 60_000, 7 * 1000 + 50)  # expert 7's 51st line


@pytest.mark.parametrize("before, month", [(None, None), (MIDDLE, None), (None, "2026-09"), (MIDDLE, "2026-09")])
def test_a_page_is_read_by_the_primary_key_without_sorting(many_lines, settings, before, month):
    query = statement.page_query(many_lines, 20, before, month, settings.tz)
    # One search of the primary key's index, no scan and no sort of its own.
    assert_one_index_search(
        query, "PRIMARY", r"SEARCH \w+ USING INDEX sqlite_autoindex_statement_line_1 \(user_id=\?.*\)"
    )
    page = list(query)
    assert 0 < len(page) <= 21 and {row.user_id for row in page} == {many_lines}
    assert [(r.created_at, r.entry_id) for r in page] == sorted(
        ((r.created_at, r.entry_id) for r in page), reverse=True
    )


@pytest.fixture
def many_charges(database):
    """An expert's 30 income lines among 2,000 charges booked as books.record books them (a fee
    posting each), not analysed: the planner knows only the indexes, as a database nobody ANALYZEd."""
    expert_id, entries, postings, lines = f"{7:024x}", [], [], []
    for i in range(2_000):
        owner = expert_id if i % 50 == 0 or i < 10 else f"{i:024x}"
        entries.append(
            {"entry_id": 1_000_000 + i, "kind": "charge", "reference": new_id(), "created_at": 1_790_000_000_000 + i}
        )
        postings += [
            {"entry_id": 1_000_000 + i, "account": "pingpp", "debit": 1_000, "credit": 0},
            {"entry_id": 1_000_000 + i, "account": books.FEES, "debit": 0, "credit": 25},
            {"entry_id": 1_000_000 + i, "account": f"expert:{owner}:available", "debit": 0, "credit": 975},
        ]
        lines.append(
            {"user_id": owner, "created_at": 1_790_000_000_000 + i, "entry_id": 1_000_000 + i, "amount": 975,
             "balance_after": 0, "available_after": 0}
        )  # fmt: skip
    with db.atomic():
        JournalEntry.insert_many(entries).execute()
        Posting.insert_many(postings).execute()
        StatementLine.insert_many(lines).execute()
    yield expert_id
    with db.atomic():
        StatementLine.delete().execute()
        Posting.delete().where(Posting.entry_id >= 1_000_000).execute()
        JournalEntry.delete().where(JournalEntry.entry_id >= 1_000_000).execute()


def test_a_pages_fees_are_read_by_its_entries_not_by_the_fees_account(many_charges):
    """The fee of each income line: a search of the page's entries, not of every fee ever booked."""
    queries = []
    hooks = db.obj.query_hooks  # peewee calls each with every query it ran
    hooks.append(lambda event: queries.append((event.sql, event.params)))
    try:
        page, more = statement.page(many_charges, 20)
    finally:
        hooks.pop()
    assert len(page) == 20 and more and {line.fee for line in page} == {25}
    on_postings = [(sql, params) for sql, params in queries if re.search(r"FROM [`\"]posting[`\"]", sql)]
    assert on_postings, queries
    for sql, params in on_postings:
        if is_mysql():
            cursor = db.execute_sql("EXPLAIN " + sql, params)
            names = [c[0] for c in cursor.description]
            plan = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            assert [step["key"] for step in plan] == ["posting_entry_id"], plan
        else:
            plan = [row[-1] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()]
            assert [p for p in plan if "posting" in p and "posting_entry_id (entry_id=?)" not in p] == [], plan


# --- the history before the statement (migration 012) --------------------------------------------------


def test_the_migration_writes_every_experts_history_as_their_statement(empty_database_url):  # noqa: F811
    database = open_database(empty_database_url)
    router = Router(database, migrate_dir=MIGRATIONS)
    router.run("010_hashing_turns")
    alice, bob, t = new_id(), new_id(), 1_790_000_000_000
    q = database.param

    def entry(kind, reference, created_at, *lines):
        cursor = database.execute_sql(
            f"INSERT INTO journal_entry (kind, reference, created_at) VALUES ({q}, {q}, {q})",
            (kind, reference, created_at),
        )
        for account, debit, credit in lines:
            database.execute_sql(
                f"INSERT INTO posting (entry_id, account, debit, credit) VALUES ({q}, {q}, {q}, {q})",
                (cursor.lastrowid, account, debit, credit),
            )

    pay, withdrawal = new_id(), new_id()
    entry("charge", pay, t, ("pingpp", 10_000, 0), ("fees", 0, 250), (f"expert:{alice}:pending", 0, 9_750))
    entry("charge", new_id(), t + 1, ("pingpp", 1_000, 0), (f"expert:{bob}:available", 0, 1_000))
    entry("release", pay, t + 2, (f"expert:{alice}:pending", 9_750, 0), (f"expert:{alice}:available", 0, 9_750))
    entry("withdraw", withdrawal, t + 3, (f"expert:{alice}:available", 3_000, 0), ("payouts", 0, 3_000))
    # Written by a host whose clock was behind: the line keeps the statement's order.
    entry("withdraw_refund", withdrawal, t - 60_000, ("payouts", 3_000, 0), (f"expert:{alice}:available", 0, 3_000))
    for user_id, available in ((alice, 9_750), (bob, 1_000)):
        database.execute_sql(
            f"INSERT INTO wallet (user_id, pending, available, updated_at) VALUES ({q}, {q}, {q}, {q})",
            (user_id, 0, available, t - 60_000),
        )
    router.run()
    bind(database)
    try:
        assert books.check() == []
        assert [
            (line.kind, line.amount, line.balance_after, line.available_after, line.created_at)
            for line in statement.lines_of(alice)
        ] == [
            ("withdrawal_returned", 3_000, 9_750, 9_750, iso(t + 3)),
            ("withdrawal", -3_000, 6_750, 6_750, iso(t + 3)),
            ("available", 0, 9_750, 9_750, iso(t + 2)),
            ("income", 9_750, 9_750, 0, iso(t)),
        ]
        assert [(line.kind, line.amount, line.balance_after) for line in statement.lines_of(bob)] == [
            ("income", 1_000, 1_000)
        ]
        # What books.record writes next comes after the history.
        assert Wallet.get_by_id(alice).updated_at == t + 3
    finally:
        database.close()


@pytest.mark.only_db("mariadb")
def test_racing_bookings_for_one_expert_leave_lines_that_run_in_order(database):
    """Several connections booking for one expert at once: each line's balances are those after the
    line before it (books.check walks them), because the wallet is locked before the entry's id is taken."""
    user_id = new_id()

    @transaction
    def book(n):
        books.record(
            "charge",
            f"race-{user_id}-{n}",
            books.debit(books.PINGPP, n),
            books.credit(books.expert(user_id, books.AVAILABLE), n),
        )

    def run(first):
        db.connect(reuse_if_open=True)
        try:
            for n in range(first, first + 15):
                book(n)
        finally:
            db.close()

    threads = [threading.Thread(target=run, args=(1 + 15 * i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert books.check() == []
    assert Wallet.get_by_id(user_id).balance == sum(range(1, 91))
    assert StatementLine.select().where(StatementLine.user_id == user_id).count() == 90


# --- refunds whose share was taken while Ping++'s answer was unclear --------------------------------


def unclear_refund(app, user, pay_expert, fake_pingpp, amount):
    """A paid pay and a refund of it whose create answer and look-up were both lost: pending, its share
    taken at once and booked under our refund_id (Ping++'s being unknown)."""
    paid = pay_expert(user.id, 10_000)
    fake_pingpp.lose_next_response()  # Ping++ makes it; its answer is lost
    fake_pingpp.fail_next()  # and the look-up fails too
    refund = ask_refund(app, paid["pay_id"], amount)
    assert refund["status"] == "pending" and Refund.get_by_id(refund["refund_id"]).pingpp_refund_id is None
    return paid, refund


def test_an_unclear_refunds_line_names_its_refund_and_pay_before_and_after_ping_answers(
    app, make_user, pay_expert, fake_pingpp, gateway, settings
):
    user = make_user()
    paid, refund = unclear_refund(app, user, pay_expert, fake_pingpp, 4_000)
    expected = {
        "kind": "refund",
        "title": "退款",
        "amount": -3_900,
        "balance_after": 5_850,
        "available_after": 5_850,
        "pay_id": paid["pay_id"],
        "refund_id": refund["refund_id"],
        "type": "order",
        "subject": paid["subject"],
    }
    taken, _ = lines(user)
    assert brief(taken) == expected
    with time_machine.travel(time.time() + refunds.lease_ms(settings.pingpp_timeout) / 1000 + 1, tick=False):
        refunds.reconcile_refunds(gateway)  # the worker finds it at Ping++: it gets Ping++'s id
        assert Refund.get_by_id(refund["refund_id"]).pingpp_refund_id is not None
        taken, _ = lines(user.remint())
    assert brief(taken) == expected


def test_an_unclear_refund_ping_never_made_is_given_back_in_lines_naming_it(
    app, make_user, pay_expert, fake_pingpp, gateway, settings
):
    user = make_user()
    paid = pay_expert(user.id, 10_000)
    fake_pingpp.fail_next(times=2)  # a 500 to the create, then to the look-up: unclear, never made
    refund = ask_refund(app, paid["pay_id"], 4_000)
    with time_machine.travel(time.time() + refunds.lease_ms(settings.pingpp_timeout) / 1000 + 1, tick=False):
        assert refunds.reconcile_refunds(gateway)["not_made"] == 1
        returned, taken, _ = lines(user.remint())
    assert [
        (line["kind"], line["amount"], line.get("refund_id"), line.get("pay_id")) for line in (returned, taken)
    ] == [
        ("refund_returned", 3_900, refund["refund_id"], paid["pay_id"]),
        ("refund", -3_900, refund["refund_id"], paid["pay_id"]),
    ]
