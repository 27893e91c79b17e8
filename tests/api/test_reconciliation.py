"""python -m payapi reconcile: a day's Ping++ charges, refunds and transfers against the books."""

import datetime
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import time_machine

from payapi.infra.gateway import ChargeRequest
from payapi.infra.models import Pay, Reconciliation, Withdrawal
from payapi.money import reconciliation, withdrawals
from tests.support.config import AUTH_SECRETS, SERVICE_KEY
from tests.support.databases import balance_of
from tests.support.scenarios import set_up_expert, withdraw

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))
DAY = datetime.date(2026, 11, 20)
NOON = datetime.datetime(2026, 11, 20, 12, 0, tzinfo=SHANGHAI).timestamp()


@pytest.fixture
def that_day():
    with time_machine.travel(NOON, tick=False) as clock:
        yield clock


def run(settings, gateway):
    return reconciliation.reconcile(settings, gateway, DAY)


def test_a_day_whose_every_event_arrived_is_clean(that_day, pay_expert, settings, gateway):
    pay_expert("e" * 24, 10_000)
    row = run(settings, gateway)
    assert (row.date, row.status, json.loads(row.healed), json.loads(row.differences)) == (
        "2026-11-20",
        "clean",
        [],
        [],
    )


def test_a_charge_paid_without_its_webhook_is_applied_and_reported_healed(
    that_day, order_service, fake_pingpp, settings, gateway
):
    info = order_service(amount=10_000).json["info"]
    fake_pingpp.mark_paid(info["charge"]["id"])  # its webhook never arrived
    row = run(settings, gateway)
    assert row.status == "healed"
    (healed,) = json.loads(row.healed)
    assert (healed["charge"], healed["pay"], healed["amount"]) == (info["charge"]["id"], info["pay_id"], 10_000)
    assert Pay.get_by_id(info["pay_id"]).status == "paid" and balance_of(info["expert_id"]) == 10_000
    assert run(settings, gateway).status == "clean"  # healed once


def test_a_refund_and_a_transfer_whose_events_were_lost_are_healed(
    that_day, make_user, pay_expert, fake_pingpp, settings, gateway
):
    expert = set_up_expert(make_user())
    paid = pay_expert(expert.id, 10_000)
    fake_pingpp.refund(paid["charge"]["id"], 4_000)  # made on the dashboard; its event lost
    withdraw_id = withdraw(expert, 1_000).json["withdraw_id"]
    withdrawals.run_payouts(gateway)
    fake_pingpp.settle_transfer(Withdrawal.get_by_id(withdraw_id).transfer_id, "succeeded")  # event lost
    row = run(settings, gateway)
    assert row.status == "healed", row.differences
    assert sorted(h["what"] for h in json.loads(row.healed)) == [
        "a paid transfer applied",
        "a succeeded refund applied",
    ]
    assert Withdrawal.get_by_id(withdraw_id).status == "succeeded"
    assert balance_of(expert.id) == 10_000 - 4_000 - 1_000


def test_a_charge_payapi_does_not_know_is_a_difference(that_day, pay_expert, gateway, settings):
    pay_expert("e" * 24, 1_000)
    stranger = gateway.create_charge(
        ChargeRequest(order_no="9" * 24, amount=500, channel="alipay", subject="?", body="?", client_ip="1.2.3.4")
    )
    row = run(settings, gateway)
    assert row.status == "different"
    (difference,) = json.loads(row.differences)
    assert (difference["charge"], difference["order_no"]) == (stranger.id, "9" * 24)


def test_only_that_day_in_timezone_is_compared(order_service, fake_pingpp, settings, gateway):
    # 2026-11-20 23:59 in Shanghai is 15:59 UTC; 00:01 the next day belongs to the 21st.
    for moment in ("2026-11-20T23:59:00+08:00", "2026-11-21T00:01:00+08:00"):
        with time_machine.travel(datetime.datetime.fromisoformat(moment), tick=False):
            fake_pingpp.mark_paid(order_service().json["info"]["charge"]["id"])
    with time_machine.travel(NOON + 2 * 86400, tick=False):
        row = run(settings, gateway)
    assert len(json.loads(row.healed)) == 1


@pytest.fixture
def paid_out_after_midnight(make_user, pay_expert, gateway):
    """A withdrawal made at 23:59 on DAY in Shanghai whose transfer Ping++ made at 00:01 the next day."""
    with time_machine.travel(datetime.datetime(2026, 11, 20, 23, 59, tzinfo=SHANGHAI), tick=False):
        expert = set_up_expert(make_user())
        pay_expert(expert.id, 10_000)
        withdraw_id = withdraw(expert, 1_000).json["withdraw_id"]
    with time_machine.travel(datetime.datetime(2026, 11, 21, 0, 1, tzinfo=SHANGHAI), tick=False):
        withdrawals.run_payouts(gateway)
    return Withdrawal.get_by_id(withdraw_id)


def test_a_withdrawal_paid_out_after_midnight_is_not_missing_from_the_day_it_was_made(
    paid_out_after_midnight, settings, gateway
):
    with time_machine.travel(NOON + 2 * 86400, tick=False):
        for date in (DAY, DAY + datetime.timedelta(days=1)):
            row = reconciliation.reconcile(settings, gateway, date)
            assert (row.status, json.loads(row.differences)) == ("clean", []), date


def test_a_transfer_ping_does_not_list_is_reported_on_the_day_ping_made_it(
    paid_out_after_midnight, fake_pingpp, settings, gateway
):
    del fake_pingpp.transfers[paid_out_after_midnight.transfer_id]  # Ping++ has lost it
    with time_machine.travel(NOON + 2 * 86400, tick=False):
        assert reconciliation.reconcile(settings, gateway, DAY).status == "clean"
        row = reconciliation.reconcile(settings, gateway, DAY + datetime.timedelta(days=1))
    (difference,) = json.loads(row.differences)
    assert (difference["what"], difference["withdrawal"], difference["transfer"]) == (
        "a withdrawal whose transfer Ping++ did not list",
        paid_out_after_midnight.withdraw_id,
        paid_out_after_midnight.transfer_id,
    )


def test_paging_through_more_than_one_page(that_day, order_service, fake_pingpp, settings, gateway):
    for _ in range(103):
        fake_pingpp.mark_paid(order_service(amount=100).json["info"]["charge"]["id"])
    row = run(settings, gateway)
    assert len(json.loads(row.healed)) == 103
    pages = [r for r in fake_pingpp.requests if r[0] == "GET" and r[1] == "/v1/charges"]
    assert len(pages) == 2


def test_the_worker_runs_it_once_a_day_for_the_day_before(that_day, database, settings, gateway):
    from payapi import worker

    assert worker.run_once(settings, gateway)["reconciliation"] == {"ran": 1, "status": "clean"}
    assert worker.run_once(settings, gateway)["reconciliation"] == {"ran": 0}
    assert [r.date for r in Reconciliation.select()] == ["2026-11-19"]


def test_three_workers_at_once_reconcile_yesterday_once(database, settings, fake_pingpp, command_env):
    """One `worker --once` per host, all started together: the day is claimed in the database."""
    fake_pingpp.slow[("GET", "/v1/charges")] = 0.5  # a reconciliation takes a while
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "payapi", "worker", "--once"],
            cwd=ROOT,
            env=command_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in workers:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
    assert [r.date for r in Reconciliation.select()] == [reconciliation.yesterday(settings.tz).isoformat()]
    assert len([r for r in fake_pingpp.requests if r[0] == "GET" and r[1] == "/v1/charges"]) == 1


def test_passes_racing_in_threads_claim_the_day_once(that_day, database, settings, gateway, fake_pingpp):
    fake_pingpp.slow[("GET", "/v1/charges")] = 0.3
    barrier = threading.Barrier(3)

    def one_pass():
        barrier.wait()
        try:
            return reconciliation.daily(settings, gateway)
        finally:
            database.close()

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda _: one_pass(), range(3)))
    assert sorted(o["ran"] for o in outcomes) == [0, 0, 1]
    assert [r.date for r in Reconciliation.select()] == ["2026-11-19"]


def test_a_claimed_day_whose_run_died_is_taken_again_after_its_lease(that_day, database, settings, gateway):
    assert reconciliation.claim_day("reconciliation", "2026-11-19")  # its process then died
    assert reconciliation.daily(settings, gateway) == {"ran": 0}
    that_day.shift(reconciliation.CLAIM_LEASE_MS / 1000 + 1)
    assert reconciliation.daily(settings, gateway)["ran"] == 1
    assert reconciliation.daily(settings, gateway) == {"ran": 0}


# --- the command -----------------------------------------------------------------------------------


@pytest.fixture
def command_env(settings, fake_pingpp):
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "PINGPP_API_BASE": fake_pingpp.url,
        "PINGPP_API_KEY": settings.pingpp_api_key,
        "PINGPP_APP_ID": settings.pingpp_app_id,
        "PINGPP_PUBLIC_KEY_PATH": settings.pingpp_public_key_path,
        "AUTH_SECRET": ",".join(AUTH_SECRETS),
        "SERVICE_KEY": SERVICE_KEY,
        "SMS_BACKEND": "file",
        "SMS_FILE": settings.sms_file,
    }


@pytest.fixture
def command(command_env):
    def run_command(*args):
        return subprocess.run(
            [sys.executable, "-m", "payapi", *args],
            cwd=ROOT,
            env=command_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run_command


def test_the_command_exits_1_on_differences_and_0_when_clean(order_service, fake_pingpp, gateway, command):
    today = datetime.datetime.now(SHANGHAI).date().isoformat()
    fake_pingpp.mark_paid(order_service().json["info"]["charge"]["id"])
    healed = command("reconcile", "--date", today)
    assert healed.returncode == 0, healed.stderr
    assert "healed (1 healed, 0 different)" in healed.stdout
    gateway.create_charge(
        ChargeRequest(order_no="9" * 24, amount=500, channel="alipay", subject="?", body="?", client_ip="1.2.3.4")
    )
    different = command("reconcile", "--date", today)
    assert different.returncode == 1 and "different:" in different.stdout
    assert [(r.date, r.status) for r in Reconciliation.select().order_by(Reconciliation.created_at)] == [
        (today, "healed"),
        (today, "different"),
    ]


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "2026/11/20", ""])
def test_a_bad_date_is_a_usage_error_and_writes_nothing(command, database, bad):
    done = command("reconcile", "--date", bad)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert Reconciliation.select().count() == 0


def test_books_check_exits_0_when_the_books_balance(pay_expert, command):
    pay_expert("e" * 24, 1_000)
    done = command("books", "check")
    assert done.returncode == 0, done.stderr
    assert "pingpp" in done.stdout and "total" in done.stdout


def test_books_check_exits_1_when_a_wallet_disagrees_with_its_postings(pay_expert, command, database):
    from payapi.infra.models import Wallet

    pay_expert("e" * 24, 1_000)
    Wallet.update(available=Wallet.available + 1).execute()
    done = command("books", "check")
    assert done.returncode == 1 and "wallet" in done.stderr
    Wallet.update(available=Wallet.available - 1).execute()  # the fixture's own check must pass again


def test_every_refund_of_a_charge_is_read_when_ping_pages_small(that_day, pay_expert, fake_pingpp, settings, gateway):
    paid = pay_expert("e" * 24, 10_000)
    made = [fake_pingpp.refund(paid["charge"]["id"], 1_000)["id"] for _ in range(5)]  # events lost, all of them
    fake_pingpp.page_limit = 2  # Ping++ embeds and lists refunds two at a time
    assert sorted(r.id for r in gateway.list_refunds(paid["charge"]["id"])) == sorted(made)
    row = run(settings, gateway)
    assert sorted(h["refund"] for h in json.loads(row.healed)) == sorted(made), row.differences
    assert balance_of("e" * 24) == 10_000 - 5_000


def test_every_charge_is_read_when_ping_pages_small(that_day, order_service, fake_pingpp, settings, gateway):
    fake_pingpp.page_limit = 2
    for _ in range(5):
        fake_pingpp.mark_paid(order_service(amount=100).json["info"]["charge"]["id"])
    assert len(json.loads(run(settings, gateway).healed)) == 5
    start, end = reconciliation.day_bounds(DAY, settings.tz)
    assert len(list(gateway.list_charges(start, end))) == 5
