"""A worker pass is one process among others: payments commit while it pays out, and bad items
are set aside without stopping the pass (issue 14, and issue 9's "one bad item")."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import time_machine

from payapi import worker
from payapi.domain.clock import now_ms
from payapi.infra.models import Pay, Withdrawal
from payapi.money import payments, withdrawals
from tests.support.config import AUTH_SECRETS, SERVICE_KEY
from tests.support.scenarios import set_up_expert, withdraw

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def worker_process(settings, fake_pingpp):
    """`python -m payapi worker --once` as the Procfile's worker runs it, started in the background."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "PINGPP_API_BASE": fake_pingpp.url,
        "PINGPP_API_KEY": settings.pingpp_api_key,
        "PINGPP_APP_ID": settings.pingpp_app_id,
        "PINGPP_PUBLIC_KEY_PATH": settings.pingpp_public_key_path,
        "PINGPP_TIMEOUT": "5",
        "AUTH_SECRET": ",".join(AUTH_SECRETS),
        "SERVICE_KEY": SERVICE_KEY,
        "SMS_BACKEND": "file",
        "SMS_FILE": settings.sms_file,
    }

    def start():
        return subprocess.Popen(
            [sys.executable, "-m", "payapi", "worker", "--once"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start


@pytest.fixture
def experts_with_pending_withdrawals(make_user, pay_expert):
    def make(n):
        ids = []
        for i in range(n):
            expert = set_up_expert(make_user(phone=f"1380013{i:04d}"))
            pay_expert(expert.id, 5_000)
            response = withdraw(expert, 1_000)
            assert response.json["code"] == 900, response.json
            ids.append(response.json["withdraw_id"])
        return ids

    return make


def test_a_worker_pass_pays_everyone_out_while_payments_commit(
    experts_with_pending_withdrawals, worker_process, fake_pingpp, pay_expert
):
    pending = experts_with_pending_withdrawals(4)
    # Ping++ takes a second to create each transfer: payments commit in the meantime.
    fake_pingpp.slow[("POST", "/v1/transfers")] = 1.0
    process = worker_process()

    paid, errors, done = [], [], threading.Event()

    def take_payments():
        while not done.is_set():
            try:
                paid.append(pay_expert("5" * 24, 100)["pay_id"])
            except Exception as exc:  # an assertion in pay_expert: surfaced below
                errors.append(exc)
                return

    threads = [threading.Thread(target=take_payments) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=30)

    assert process.returncode == 0, stderr[-3000:]
    assert not errors, errors
    assert len(paid) >= 4, "no payments committed while the pass ran"
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["payouts"] == {"sent": 4, "failed": 0}
    assert {w.withdraw_id: w.status for w in Withdrawal.select()} == {w: "processing" for w in pending}
    assert sorted(r[2]["order_no"] for r in fake_pingpp.transfer_creations()) == sorted(pending)
    assert all(Pay.get_by_id(p).status == "paid" for p in paid)


# --- one bad item ----------------------------------------------------------------------------------


class _Poisoned:
    """A gateway whose retrieve_charge raises an unexpected error for one charge, like a bug would."""

    def __init__(self, gateway, bad_charge_id):
        self._gateway, self.bad_charge_id = gateway, bad_charge_id

    def retrieve_charge(self, charge_id):
        if charge_id == self.bad_charge_id:
            raise KeyError("unexpected shape")
        return self._gateway.retrieve_charge(charge_id)

    def __getattr__(self, name):
        return getattr(self._gateway, name)


def test_one_bad_pay_is_set_aside_and_the_pass_goes_on_to_payouts(
    experts_with_pending_withdrawals, order_service, fake_pingpp, gateway, settings, caplog
):
    (withdraw_id,) = experts_with_pending_withdrawals(1)
    bad, good = (order_service().json["info"] for _ in range(2))
    fake_pingpp.mark_paid(good["charge"]["id"])
    poisoned = _Poisoned(gateway, bad["charge"]["id"])

    with time_machine.travel(time.time() + 11 * 60, tick=False) as clock:
        summary = worker.run_once(settings, poisoned)
        assert summary["pays"] == {"paid": 1, "closed": 0, "failed": 1}
        assert summary["payouts"] == {"sent": 1, "failed": 0}
        assert Withdrawal.get_by_id(withdraw_id).status == "processing"
        assert Pay.get_by_id(good["pay_id"]).status == "paid"
        assert Pay.get_by_id(bad["pay_id"]).status == "pending"
        logged = [r for r in caplog.records if getattr(r, "fields", {}).get("id") == bad["pay_id"]]
        assert logged and logged[0].fields["pass"] == "pays"

        # Set aside: not looked at again on the next pass, but after the back-off.
        assert worker.run_once(settings, poisoned)["pays"] == {"paid": 0, "closed": 0, "failed": 0}
        clock.shift(61)
        fake_pingpp.mark_paid(bad["charge"]["id"])
        assert payments.reconcile_pays(gateway, settings) == {"paid": 1, "closed": 0, "failed": 0}
        assert Pay.get_by_id(bad["pay_id"]).status == "paid"


def test_a_pass_that_fails_outright_does_not_keep_the_others_from_their_turn(
    experts_with_pending_withdrawals, gateway, settings, database
):
    (withdraw_id,) = experts_with_pending_withdrawals(1)
    # The pays pass cannot even read its list (as with a half-applied schema change); payouts still run.
    database.execute_sql("ALTER TABLE pay RENAME TO pay_away")
    try:
        summary = worker.run_once(settings, gateway)
    finally:
        database.execute_sql("ALTER TABLE pay_away RENAME TO pay")
    assert summary["pays"] == {"error": "OperationalError"} or summary["pays"] == {"error": "ProgrammingError"}
    assert summary["payouts"] == {"sent": 1, "failed": 0}
    assert Withdrawal.get_by_id(withdraw_id).status == "processing"


def test_a_withdrawal_whose_payout_raises_is_set_aside_with_a_back_off(
    experts_with_pending_withdrawals, gateway, fake_pingpp
):
    first, second = experts_with_pending_withdrawals(2)

    class Poisoned:
        def create_transfer(self, request):
            if request.order_no == first:
                raise ValueError("bad account data")
            return gateway.create_transfer(request)

    with time_machine.travel(time.time(), tick=False) as clock:
        assert withdrawals.run_payouts(Poisoned()) == {"sent": 1, "failed": 1}
        assert Withdrawal.get_by_id(second).status == "processing"
        row = Withdrawal.get_by_id(first)
        assert row.status == "pending" and row.retry_after > now_ms()
        assert withdrawals.run_payouts(gateway) == {"sent": 0, "failed": 0}  # still set aside
        clock.shift(61)
        assert withdrawals.run_payouts(gateway) == {"sent": 1, "failed": 0}
        assert Withdrawal.get_by_id(first).status == "processing"
        # What the raising attempt did at Ping++ was unknown: the next one looked for a transfer first.
        assert [r for r in fake_pingpp.requests if r[0] == "GET" and r[1] == "/v1/transfers"]
