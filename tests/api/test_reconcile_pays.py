"""The worker's reconciliation of pays: Ping++ is asked about pending pays older than ten minutes."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest
import time_machine

from payapi.domain.clock import now_ms
from payapi.domain.ids import new_id
from payapi.infra import outbox
from payapi.infra.db import db, is_mysql
from payapi.infra.models import JournalEntry, Notification, Pay, Wallet
from payapi.money import payments
from tests.support.config import process_env
from tests.support.databases import analyze, assert_one_index_search, explain, ledger_of, money_moved

FEE_BPS = 250
MINUTE = 60
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def at(seconds_from_now):
    """Move the clock (this process, and so the fake Ping++ too) by seconds_from_now."""
    return time_machine.travel(time.time() + seconds_from_now)


def reconcile(gateway, settings):
    return payments.reconcile_pays(gateway, settings)


def retrievals(fake_pingpp):
    return [r[1] for r in fake_pingpp.requests if r[0] == "GET" and r[1].startswith("/v1/charges/")]


def state():
    """Everything reconciliation may change: pays, ledger, balances."""
    pays = sorted((p.pay_id, p.status, p.open_for, p.credited) for p in Pay.select())
    entries = sorted((e.kind, e.reference) for e in JournalEntry.select())
    return pays, entries, sorted((w.user_id, w.balance) for w in Wallet.select())


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, pingpp_timeout=0.5, platform_fee_bps=FEE_BPS)


@pytest.fixture
def new_pay(order_service):
    def make(**fields):
        response = order_service(amount=10000, **fields)
        assert response.json["code"] == 900, response.json
        return response.json["info"]

    return make


def status(info):
    return Pay.get_by_id(info["pay_id"]).status


# --- payments.reconcile_pays ------------------------------------------------------------------


def test_a_pending_pay_paid_at_ping_plus_plus_is_settled_after_ten_minutes(new_pay, fake_pingpp, gateway, settings):
    info = new_pay()
    charge = fake_pingpp.mark_paid(info["charge"]["id"])
    with at(11 * MINUTE):
        assert reconcile(gateway, settings) == {"paid": 1, "closed": 0, "failed": 0}
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.credited) == ("paid", 9750)
    assert json.loads(pay.charge) == charge
    assert ledger_of(info["expert_id"]) == [("charge", info["pay_id"], 9750)]
    assert Wallet.get_by_id(info["expert_id"]).balance == 9750


def test_a_pay_younger_than_ten_minutes_is_left_alone(new_pay, fake_pingpp, gateway, settings):
    info = new_pay()
    fake_pingpp.mark_paid(info["charge"]["id"])
    fake_pingpp.requests.clear()
    with at(9 * MINUTE):
        assert reconcile(gateway, settings) == {"paid": 0, "closed": 0, "failed": 0}
    assert status(info) == "pending" and retrievals(fake_pingpp) == []
    assert not money_moved()


def test_an_expired_unpaid_pay_is_closed_as_cancel(new_pay, fake_pingpp, gateway, order_service, settings):
    fields = {"o_id": new_id(), "userID": new_id(), "expert_id": new_id()}
    info = new_pay(**fields)
    expires = fake_pingpp.charge_for(info["pay_id"])["time_expire"]
    with at(expires - time.time() + MINUTE):
        assert reconcile(gateway, settings) == {"paid": 0, "closed": 1, "failed": 0}
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.open_for) == ("cancel", None)
    assert not money_moved()
    # The order is free for a new pay.
    assert order_service(amount=10000, **fields).json["info"]["pay_id"] != info["pay_id"]


def test_a_pending_pay_whose_charge_ping_plus_plus_reports_reversed_is_closed(new_pay, fake_pingpp, gateway, settings):
    info = new_pay()
    gateway.reverse_charge(info["charge"]["id"])  # closed at Ping++ (e.g. on its dashboard): it cannot be paid
    with at(11 * MINUTE):
        assert reconcile(gateway, settings) == {"paid": 0, "closed": 1, "failed": 0}
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.open_for) == ("cancel", None) and pay.reversed_at is not None
    assert [m.type for m in Notification.select().where(Notification.subject_id == info["pay_id"])] == ["pay.closed"]
    assert not money_moved()


def test_a_pass_closes_its_expired_pays_a_batch_to_a_transaction(new_pay, fake_pingpp, gateway, settings, monkeypatch):
    pays = [new_pay()["pay_id"] for _ in range(30)]
    commits = []
    commit = db.obj.commit
    monkeypatch.setattr(db.obj, "commit", lambda: commits.append(1) or commit())
    with at(2 * 86400):
        assert reconcile(gateway, settings) == {"paid": 0, "closed": 30, "failed": 0}
    assert {(p.status, p.reversed_at is not None) for p in Pay.select().where(Pay.pay_id.in_(pays))} == {
        ("cancel", True)
    }
    assert all(fake_pingpp.charges[p.charge_id]["reversed"] for p in Pay.select().where(Pay.pay_id.in_(pays)))
    # Closed in two transactions (25 and 5 pays) and marked closed at Ping++ in two: not two a pay.
    assert len(commits) == 4
    assert Notification.select().where(Notification.subject_id.in_(pays)).count() == 30


def test_a_pay_that_cannot_be_closed_holds_back_no_other_of_its_batch(
    new_pay, fake_pingpp, gateway, settings, monkeypatch
):
    pays = [new_pay()["pay_id"] for _ in range(5)]
    save = outbox.save

    def save_but_one(record, *args, **kwargs):
        if getattr(record, "pay_id", None) == pays[2] and record.status == "cancel":
            raise RuntimeError("a bad pay")
        return save(record, *args, **kwargs)

    monkeypatch.setattr(outbox, "save", save_but_one)
    with at(2 * 86400):
        assert reconcile(gateway, settings) == {"paid": 0, "closed": 4, "failed": 1}
    assert [Pay.get_by_id(p).status for p in pays] == ["cancel", "cancel", "pending", "cancel", "cancel"]
    assert Pay.get_by_id(pays[2]).check_after > now_ms() + 2 * 86400 * 1000  # set aside (the clock is back)


def test_an_old_unpaid_pay_that_has_not_expired_stays_pending(new_pay, fake_pingpp, gateway, settings):
    info = new_pay()
    with at(3 * 3600):
        assert reconcile(gateway, settings) == {"paid": 0, "closed": 0, "failed": 0}
    assert status(info) == "pending"
    assert retrievals(fake_pingpp) == [f"/v1/charges/{info['charge']['id']}"]


def test_an_expired_pay_paid_at_ping_plus_plus_is_paid_not_cancelled(new_pay, fake_pingpp, gateway, settings):
    info = new_pay()
    fake_pingpp.mark_paid(info["charge"]["id"])
    with at(2 * 86400):
        assert reconcile(gateway, settings) == {"paid": 1, "closed": 0, "failed": 0}
    assert status(info) == "paid"


@pytest.mark.parametrize("failure", ["500", "hang"])
def test_ping_plus_plus_failing_leaves_the_pay_pending(new_pay, fake_pingpp, gateway, settings, failure):
    info = new_pay()
    fake_pingpp.mark_paid(info["charge"]["id"])
    if failure == "hang":
        fake_pingpp.hang_next(settings.pingpp_timeout + 2)
    else:
        fake_pingpp.fail_next(status=500)
    with at(2 * 86400):  # old and expired: only Ping++'s answer could close it
        assert reconcile(gateway, settings) == {"paid": 0, "closed": 0, "failed": 1}
        assert status(info) == "pending" and not money_moved()
        assert reconcile(gateway, settings) == {"paid": 1, "closed": 0, "failed": 0}
    assert status(info) == "paid"


def test_a_pay_whose_charge_ping_plus_plus_cannot_find_stays_pending(new_pay, fake_pingpp, gateway, settings):
    info = new_pay()
    fake_pingpp.charges.clear()  # Ping++ answers 404 for the charge
    with at(2 * 86400):
        assert reconcile(gateway, settings)["failed"] == 1
    assert status(info) == "pending"


def test_a_reservation_left_without_a_charge_is_removed(order_service, fake_pingpp, gateway, settings):
    fields = {"o_id": new_id(), "userID": new_id(), "expert_id": new_id()}
    now = int(time.time() * 1000)
    outbox.save(
        Pay(
            pay_id=new_id(),
            type="order",
            o_id=fields["o_id"],
            expert_id=fields["expert_id"],
            user_id=fields["userID"],
            amount=10000,
            money=10000,
            channel="alipay",
            subject="s",
            open_for=f"order:{fields['o_id']}",
            created_at=now,
            updated_at=now,
        ),
        force_insert=True,
    )
    with at(11 * MINUTE):
        reconcile(gateway, settings)
    assert Pay.select().count() == 0 and retrievals(fake_pingpp) == []
    assert order_service(amount=10000, **fields).json["code"] == 900


def test_reconciling_twice_changes_nothing_more(new_pay, fake_pingpp, gateway, settings):
    paid, expired, waiting = new_pay(), new_pay(), new_pay()
    fake_pingpp.mark_paid(paid["charge"]["id"])
    expires = fake_pingpp.charge_for(expired["pay_id"])["time_expire"]
    fake_pingpp.charges[waiting["charge"]["id"]]["time_expire"] = expires + 3600
    with at(expires - time.time() + MINUTE):
        young = new_pay()
        assert reconcile(gateway, settings) == {"paid": 1, "closed": 1, "failed": 0}
        after_first = state()
        assert reconcile(gateway, settings) == {"paid": 0, "closed": 0, "failed": 0}
        assert state() == after_first
    assert [status(p) for p in (paid, expired, waiting, young)] == ["paid", "cancel", "pending", "pending"]
    assert Wallet.get_by_id(paid["expert_id"]).balance == 9750


# --- python -m payapi worker --once -----------------------------------------------------------


def run_worker(settings, fake_pingpp):
    env = process_env(settings, PINGPP_TIMEOUT="2", PLATFORM_FEE_BPS=FEE_BPS)
    done = subprocess.run(
        [sys.executable, "-m", "payapi", "worker", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_worker_command_settles_paid_pays_and_closes_expired_ones(new_pay, fake_pingpp, settings):
    with at(-3600):
        paid = new_pay()
    with at(-2 * 86400):
        expired = new_pay()
    with at(-3600):
        waiting = new_pay()
    young = new_pay()
    fake_pingpp.mark_paid(paid["charge"]["id"])
    fake_pingpp.mark_paid(young["charge"]["id"])

    summary = run_worker(settings, fake_pingpp)

    assert summary["pays"] == {"paid": 1, "closed": 1, "failed": 0}
    assert [status(p) for p in (paid, expired, waiting, young)] == ["paid", "cancel", "pending", "pending"]
    assert Wallet.get_by_id(paid["expert_id"]).balance == 9750
    assert ledger_of(paid["expert_id"]) == [("charge", paid["pay_id"], 9750)]
    asked = retrievals(fake_pingpp)
    assert f"/v1/charges/{young['charge']['id']}" not in asked

    before = state()
    assert run_worker(settings, fake_pingpp)["pays"] == {"paid": 0, "closed": 0, "failed": 0}
    assert state() == before


def test_the_worker_command_leaves_pays_pending_when_ping_plus_plus_fails(new_pay, fake_pingpp, settings):
    with at(-3600):
        info = new_pay()
    fake_pingpp.mark_paid(info["charge"]["id"])
    # Ping++ fails for the whole pass: between 00:00 and 01:00 in TIMEZONE the pay was made
    # "yesterday", and a daily reconciliation that reached Ping++ would rightly settle it.
    fake_pingpp.fail_next(times=50, status=500)
    assert run_worker(settings, fake_pingpp)["pays"] == {"paid": 0, "closed": 0, "failed": 1}
    assert status(info) == "pending" and not money_moved()


# --- fast at any size: the due lists are read from an index, not sorted (migration 015) ---------------


@pytest.fixture
def many_pays(database):
    """3,000 pays as a worker meets them after a while: paid ones, closed ones whose charges Ping++
    closed, pending ones due and not yet due, and a few closed ones still to close at Ping++; the
    planner sees a real table. -> (now, the due pending pays' ids oldest first, the unreversed ones')."""
    now = now_ms()
    rows, due, unreversed = [], [], []

    def pay(i, status, **fields):
        pay_id = f"{i:024x}"
        created_at = now - 3 * 86_400_000 + i * 60_000
        rows.append(
            {"pay_id": pay_id, "type": "order", "o_id": pay_id, "expert_id": "e", "user_id": "u", "amount": 100,
             "money": 100, "channel": "alipay",
             "subject": "s", "charge_id": f"ch_{pay_id}", "status": status, "created_at": created_at,
             "updated_at": created_at, "paid_at": None, "reversed_at": None, "open_for": None,
             "check_after": 0, **fields}
        )  # fmt: skip
        return pay_id

    for i in range(3_000):
        if i % 3 == 0:
            pay(i, "paid", paid_at=now)
        elif i % 3 == 1:
            pay(i, "cancel", reversed_at=now)
        elif i % 6 == 2:
            due.append(pay(i, "pending", open_for=f"order:{i}", check_after=0))
        elif i % 30 == 5:
            unreversed.append(pay(i, "fail", check_after=now - 1))
        else:
            pay(i, "pending", open_for=f"order:{i}", check_after=now + 300_000)
    with db.atomic():
        for first in range(0, len(rows), 500):
            Pay.insert_many(rows[first : first + 500]).execute()
    analyze("pay")
    yield now, due, unreversed
    Pay.delete().execute()


def test_the_pending_pays_due_are_read_in_order_from_one_index(many_pays):
    now, due, _ = many_pays
    query = payments.pays_to_check(now, 100)
    # One search of the index, in its order: no sort of every due pay.
    assert_one_index_search(
        query,
        "pay_status_check_after_created_at",
        r"SEARCH \w+ USING (COVERING )?INDEX pay_status_check_after_created_at \(status=\? AND check_after<\?\)",
    )
    assert [pay_id for (pay_id,) in query.tuples()] == due[:100]


def test_the_closed_pays_to_close_at_ping_plus_plus_are_found_by_an_index_of_their_own(many_pays):
    now, _, unreversed = many_pays
    query = payments.pays_to_reverse(now, 100)
    # Only the unreversed closed pays are read (the few of them then sorted), not every closed one.
    assert_one_index_search(
        query,
        "pay_status_reversed_at_check_after",
        r"SEARCH \w+ USING (COVERING )?INDEX pay_status_reversed_at_check_after "
        r"\(status=\? AND reversed_at=\? AND check_after<\?\)",
        unsorted=False,
    )
    assert sorted(pay_id for (pay_id,) in query.tuples()) == unreversed


def test_an_experts_next_release_is_one_look_at_the_index(many_pays):
    # The balance read asks it on every request: a read of every pay the expert was ever paid (here
    # 3,000, all theirs) made the balance 0.82 of a small database's rate at 1,000,000 pays; a range
    # over their pays still held was a third of MariaDB's time for a balance.
    now = many_pays[0]
    assert payments.next_release("e") is None  # none held
    held = {0: (500, now + 7_000), 3: (0, now + 1_000), 6: (200, now + 5_000)}  # three paid pays
    for i, (amount, release_at) in held.items():  # the second's credit was released, or refunded
        pay_id = f"{i:024x}"
        assert Pay.update(held=amount, release_at=release_at).where(Pay.pay_id == pay_id).execute() == 1
    analyze("pay")
    assert payments.next_release("e") == now + 5_000
    query = payments.next_release_query("e")
    if is_mysql():
        # MIN/MAX answered while planning, from the index (no table read when the query runs).
        (step,) = explain(query)
        assert step["Extra"] == "Select tables optimized away", step
    else:
        assert_one_index_search(
            query,
            "",
            r"SEARCH \w+ USING (COVERING )?INDEX pay_expert_id_held_until \(expert_id=\?\)",  # MIN seeks past NULLs
        )
