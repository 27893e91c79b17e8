"""Payouts: pending withdrawals become Ping++ Alipay transfers; transfer webhooks and reconciliation settle them."""

import json
import os
import subprocess
import sys
import time

import pytest

from payapi.infra import jobs
from payapi.infra.models import Event
from payapi.money import withdrawals
from payapi.money.withdrawals import reconcile_transfers, run_payouts
from tests.support.config import process_env
from tests.support.databases import ledger_of
from tests.support.scenarios import (
    ACCOUNT,
    balance,
    set_account,
    set_up_expert,
    transfer_object,
    withdraw,
    withdrawal,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def transfer_requests(fake, transfer_id):
    return [r for r in fake.requests if r[0] == "GET" and r[1] == f"/v1/transfers/{transfer_id}"]


# --- run_payouts -------------------------------------------------------------------------------


def test_pending_withdrawal_becomes_one_alipay_transfer_and_processing(pending, gateway, fake_pingpp, expert):
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}

    (request,) = fake_pingpp.transfer_creations()
    body = request[2]
    assert {k: body[k] for k in ("order_no", "channel", "type", "amount", "currency", "recipient", "extra")} == {
        "order_no": pending,
        "channel": "alipay",
        "type": "b2c",
        "amount": 3_000,
        "currency": "cny",
        "recipient": ACCOUNT["id"],
        "extra": {"recipient_name": ACCOUNT["name"]},
    }
    assert body["app"] == {"id": "app_test_payapi"}
    (transfer_id,) = fake_pingpp.transfers
    row = withdrawal(pending)
    assert (row.status, row.transfer_id, row.attempts, row.last_error) == ("processing", transfer_id, 1, "")
    assert json.loads(row.transfer)["id"] == transfer_id
    assert balance(expert) == 7_000  # debited once, when the withdrawal was made


def test_payout_with_nothing_pending_sends_nothing(expert, gateway, fake_pingpp):
    assert run_payouts(gateway) == {"sent": 0, "failed": 0}
    assert fake_pingpp.transfer_creations() == []


def test_payouts_send_every_pending_withdrawal(make_user, pay_expert, gateway, fake_pingpp):
    ids = []
    for phone in ("13800000001", "13800000002", "13800000003"):
        user = set_up_expert(make_user(phone=phone))
        pay_expert(user.id, 1_000)
        ids.append(withdraw(user, 1_000).json["withdraw_id"])
    assert run_payouts(gateway) == {"sent": 3, "failed": 0}
    assert sorted(r[2]["order_no"] for r in fake_pingpp.transfer_creations()) == sorted(ids)
    assert {withdrawal(i).status for i in ids} == {"processing"}


def test_running_payouts_twice_creates_one_transfer(pending, gateway, fake_pingpp):
    run_payouts(gateway)
    assert run_payouts(gateway) == {"sent": 0, "failed": 0}
    assert len(fake_pingpp.transfer_creations(pending)) == 1 and len(fake_pingpp.transfers) == 1


def test_the_payout_uses_the_account_snapshot_not_the_current_account(expert, pending, gateway, fake_pingpp, clock):
    clock.shift(61)
    set_account(expert, {"type": "alipay", "id": "changed@example.com", "name": "李四"})
    run_payouts(gateway)
    (request,) = fake_pingpp.transfer_creations()
    assert (request[2]["recipient"], request[2]["extra"]) == (ACCOUNT["id"], {"recipient_name": ACCOUNT["name"]})


def after_the_back_off(clock, failures=1):
    clock.shift(jobs.backoff_ms(failures) / 1000 + 1)


def transfer_lists(fake):
    return [r for r in fake.requests if r[0] == "GET" and r[1] == "/v1/transfers"]


def test_ping_500_leaves_the_withdrawal_pending_and_the_next_run_sends_the_same_order_no(
    pending, gateway, fake_pingpp, expert, clock
):
    fake_pingpp.fail_next(status=500)
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    row = withdrawal(pending)
    assert (row.status, row.attempts, row.transfer_id) == ("pending", 1, None)
    assert row.last_error
    assert fake_pingpp.transfers == {}

    after_the_back_off(clock)
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    assert [r[2]["order_no"] for r in fake_pingpp.transfer_creations()] == [pending, pending]
    row = withdrawal(pending)
    assert (row.status, row.attempts) == ("processing", 2)
    assert len(fake_pingpp.transfers) == 1
    assert balance(expert) == 7_000


def test_ping_hanging_past_the_timeout_leaves_the_withdrawal_pending(pending, gateway, fake_pingpp, clock):
    fake_pingpp.hang_next(1.3)  # the gateway gives up after 1 s in tests
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    row = withdrawal(pending)
    assert (row.status, row.attempts) == ("pending", 1) and row.last_error
    after_the_back_off(clock)
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    assert withdrawal(pending).status == "processing"
    assert [r[2]["order_no"] for r in fake_pingpp.transfer_creations()] == [pending, pending]


def test_lost_answer_never_creates_a_second_transfer_and_the_next_pass_finds_it(
    pending, gateway, fake_pingpp, send_event, clock
):
    fake_pingpp.lose_next_response()  # Ping++ made the transfer; we got a 504
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    assert withdrawal(pending).status == "pending"
    (transfer_id,) = fake_pingpp.transfers
    # The next pass asks Ping++ for the withdrawal's transfer before sending it again, and finds it.
    after_the_back_off(clock)
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    row = withdrawal(pending)
    assert (row.status, row.transfer_id) == ("processing", transfer_id)
    assert [r[2]["order_no"] for r in fake_pingpp.transfer_creations()] == [pending]
    response = send_event("transfer.succeeded", fake_pingpp.set_transfer(transfer_id, "paid"))
    assert response.json == {"code": 900, "result": "applied"}
    assert withdrawal(pending).status == "succeeded"
    assert run_payouts(gateway) == {"sent": 0, "failed": 0}


def test_lost_answer_and_ping_unable_to_list_stays_pending_and_the_webhook_settles_it(
    pending, gateway, fake_pingpp, send_event, clock
):
    fake_pingpp.lose_next_response()
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    fake_pingpp.fail_next()  # the list call: Ping++ cannot say; nothing is sent again
    after_the_back_off(clock)
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    assert len(fake_pingpp.transfers) == 1 and len(fake_pingpp.transfer_creations()) == 1
    (transfer_id,) = fake_pingpp.transfers
    response = send_event("transfer.succeeded", fake_pingpp.set_transfer(transfer_id, "paid"))
    assert response.json == {"code": 900, "result": "applied"}
    row = withdrawal(pending)
    assert (row.status, row.transfer_id) == ("succeeded", transfer_id)


def test_a_payout_ping_refuses_is_retried_after_a_growing_delay_without_looking_for_a_transfer(
    pending, gateway, fake_pingpp, clock
):
    fake_pingpp.fail_next(times=3, status=400)  # e.g. Alipay's account check says no
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    assert run_payouts(gateway) == {"sent": 0, "failed": 0}  # not on the very next pass
    clock.shift(jobs.backoff_ms(1) / 1000 - 5)
    assert run_payouts(gateway) == {"sent": 0, "failed": 0}
    clock.shift(6)
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    clock.shift(jobs.backoff_ms(1) / 1000 + 1)  # the second refusal waits longer: 2 minutes
    assert run_payouts(gateway) == {"sent": 0, "failed": 0}
    after_the_back_off(clock, 2)
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    assert len(fake_pingpp.transfer_creations()) == 3
    assert transfer_lists(fake_pingpp) == []  # a refusal made nothing: nothing to look for
    after_the_back_off(clock, 3)
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    assert transfer_lists(fake_pingpp) == [] and len(fake_pingpp.transfers) == 1


def test_after_an_unclear_attempt_the_transfer_is_looked_for_from_that_attempt_on(pending, gateway, fake_pingpp, clock):
    fake_pingpp.fail_next(status=400)
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    clock.shift(3 * 3600)  # hours later (Ping++ refused, or the worker was down)
    fake_pingpp.hang_next(1.3)  # this attempt times out: Ping++ may have made it
    unclear_at = int(time.time())
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    after_the_back_off(clock, 2)
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    (listed,) = transfer_lists(fake_pingpp)
    assert int(listed.query["created[gte]"]) == unclear_at - withdrawals.CLOCK_SKEW_S


def test_looking_for_a_lost_transfer_reads_every_page(pending, gateway, fake_pingpp, make_user, pay_expert, clock):
    fake_pingpp.lose_next_response()
    assert run_payouts(gateway) == {"sent": 0, "failed": 1}
    for n in range(3):  # other transfers made after it, listed first (newest first)
        fake_pingpp.ledger.api_create_transfer(
            {
                "order_no": f"{n}" * 24,
                "app": {"id": "app_test_payapi"},
                "channel": "alipay",
                "amount": 100,
                "currency": "cny",
                "recipient": "a",
                "description": "d",
                "type": "b2c",
            }
        )
    fake_pingpp.page_limit = 1
    after_the_back_off(clock)
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    assert len(fake_pingpp.transfer_creations()) == 1 and withdrawal(pending).status == "processing"


def test_transfer_paid_at_once_is_succeeded(pending, gateway, fake_pingpp, expert):
    fake_pingpp.transfer_status = "paid"
    run_payouts(gateway)
    assert withdrawal(pending).status == "succeeded"
    assert balance(expert) == 7_000


def test_transfer_failed_at_once_is_refunded_and_frees_the_month(pending, gateway, fake_pingpp, expert):
    fake_pingpp.transfer_status = "failed"
    run_payouts(gateway)
    assert withdrawal(pending).status == "failed"
    assert balance(expert) == 10_000
    assert ledger_of(expert.id)[-1] == ("withdraw_refund", pending, 3_000)
    assert withdraw(expert, 1_000).json["code"] == 900


# --- transfer webhooks -----------------------------------------------------------------------


def test_transfer_succeeded_event_marks_the_withdrawal_succeeded(processing, fake_pingpp, send_event, expert):
    withdraw_id, transfer_id = processing
    response = send_event("transfer.succeeded", fake_pingpp.set_transfer(transfer_id, "paid"))
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "applied"})
    assert withdrawal(withdraw_id).status == "succeeded"
    assert balance(expert) == 7_000
    assert [k for k, _, _ in ledger_of(expert.id)] == ["charge", "withdraw"]
    assert withdraw(expert, 1_000).json["code"] == 910  # a succeeded withdrawal uses up the month


def test_transfer_failed_event_refunds_and_frees_the_month(processing, fake_pingpp, send_event, expert):
    withdraw_id, transfer_id = processing
    response = send_event("transfer.failed", fake_pingpp.set_transfer(transfer_id, "failed"))
    assert response.json == {"code": 900, "result": "applied"}
    assert withdrawal(withdraw_id).status == "failed"
    assert balance(expert) == 10_000
    assert ledger_of(expert.id)[-1] == ("withdraw_refund", withdraw_id, 3_000)
    assert withdraw(expert, 10_000).json["code"] == 900


@pytest.mark.parametrize("event_type", ["transfer.succeeded", "transfer.failed"])
@pytest.mark.parametrize(
    "status, settled, wallet_after",
    [
        ("paid", "succeeded", 7_000),
        ("failed", "failed", 10_000),
        ("canceled", "failed", 10_000),
        ("pending", "processing", 7_000),
    ],
)
def test_the_transfer_object_status_decides_not_the_event_type(
    processing, fake_pingpp, send_event, expert, event_type, status, settled, wallet_after
):
    # Ping++ holds the object; an event type that disagrees with it must not pay out (or refund) by itself.
    withdraw_id, transfer_id = processing
    response = send_event(event_type, fake_pingpp.set_transfer(transfer_id, status))
    assert response.json["result"] == ("ignored" if status == "pending" else "applied")
    row = withdrawal(withdraw_id)
    assert (row.status, row.transfer_id) == (settled, transfer_id)
    assert balance(expert) == wallet_after
    refunds = [k for k, _, _ in ledger_of(expert.id)].count("withdraw_refund")
    assert refunds == (1 if settled == "failed" else 0)


def test_a_pending_transfer_in_a_succeeded_event_leaves_a_pending_withdrawal_as_it_was(pending, send_event, expert):
    response = send_event("transfer.succeeded", transfer_object(pending, 3_000, "pending"))
    assert response.json["result"] == "ignored"
    row = withdrawal(pending)
    assert (row.status, row.transfer_id) == ("pending", None)
    assert balance(expert) == 7_000


def test_replayed_transfer_event_is_applied_once(processing, fake_pingpp, send_event, expert):
    withdraw_id, transfer_id = processing
    obj = fake_pingpp.set_transfer(transfer_id, "failed")
    assert send_event("transfer.failed", obj, event_id="evt_failed_once").json["result"] == "applied"
    replay = send_event("transfer.failed", obj, event_id="evt_failed_once")
    assert (replay.status_int, replay.json) == (200, {"code": 900, "result": "replay"})
    assert balance(expert) == 10_000
    assert [k for k, _, _ in ledger_of(expert.id)].count("withdraw_refund") == 1


def test_a_second_failed_event_for_the_same_transfer_refunds_nothing_more(processing, fake_pingpp, send_event, expert):
    withdraw_id, transfer_id = processing
    obj = fake_pingpp.set_transfer(transfer_id, "failed")
    assert send_event("transfer.failed", obj).json["result"] == "applied"
    assert send_event("transfer.failed", obj).json["result"] == "ignored"
    assert balance(expert) == 10_000


def test_transfer_event_for_an_unknown_withdrawal_is_stored_and_acknowledged(expert, send_event):
    obj = transfer_object("0123456789abcdef01234567", 3_000, "paid")
    response = send_event("transfer.succeeded", obj, event_id="evt_unknown_withdrawal")
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "unknown"})
    stored = Event.get(Event.event_id == "evt_unknown_withdrawal")
    assert (stored.type, stored.object_id, stored.outcome) == ("transfer.succeeded", obj["id"], "unknown")
    assert balance(expert) == 10_000


@pytest.mark.parametrize(
    "change", [{"amount": 3_001}, {"amount": 2_999}, {"currency": "usd"}, {"id": "tr_someone_else"}]
)
def test_transfer_event_that_does_not_match_is_stored_and_not_applied(
    processing, fake_pingpp, send_event, expert, change
):
    withdraw_id, transfer_id = processing
    obj = {**fake_pingpp.set_transfer(transfer_id, "failed"), **change}
    response = send_event("transfer.failed", obj, event_id="evt_mismatch")
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "mismatch"})
    assert Event.get(Event.event_id == "evt_mismatch").outcome == "mismatch"
    assert withdrawal(withdraw_id).status == "processing"
    assert balance(expert) == 7_000


def test_failed_event_after_succeeded_is_a_mismatch_and_refunds_nothing(processing, fake_pingpp, send_event, expert):
    withdraw_id, transfer_id = processing
    assert send_event("transfer.succeeded", fake_pingpp.set_transfer(transfer_id, "paid")).json["result"] == "applied"
    response = send_event("transfer.failed", fake_pingpp.set_transfer(transfer_id, "failed"))
    assert (response.status_int, response.json) == (200, {"code": 900, "result": "mismatch"})
    assert withdrawal(withdraw_id).status == "succeeded"
    assert balance(expert) == 7_000
    assert "withdraw_refund" not in [k for k, _, _ in ledger_of(expert.id)]


def test_succeeded_event_after_failed_is_a_mismatch_and_keeps_the_refund(processing, fake_pingpp, send_event, expert):
    withdraw_id, transfer_id = processing
    assert send_event("transfer.failed", fake_pingpp.set_transfer(transfer_id, "failed")).json["result"] == "applied"
    response = send_event("transfer.succeeded", fake_pingpp.set_transfer(transfer_id, "paid"))
    assert response.json["result"] == "mismatch"
    assert withdrawal(withdraw_id).status == "failed"
    assert balance(expert) == 10_000


def test_failed_event_before_the_worker_heard_back_is_applied(pending, send_event, expert):
    response = send_event("transfer.failed", transfer_object(pending, 3_000, "failed"))
    assert response.json["result"] == "applied"
    assert withdrawal(pending).status == "failed"
    assert balance(expert) == 10_000


def test_transfer_event_with_a_bad_signature_is_401_and_changes_nothing(processing, app, fake_pingpp, expert):
    withdraw_id, transfer_id = processing
    raw = json.dumps(
        {
            "id": "evt_forged",
            "type": "transfer.failed",
            "data": {"object": fake_pingpp.set_transfer(transfer_id, "failed")},
        }
    ).encode()
    response = app.post(
        "/rest/pay/webhook",
        raw,
        headers={"X-Pingplusplus-Signature": "Zm9yZ2Vk"},
        content_type="application/json",
        expect_errors=True,
    )
    assert (response.status_int, response.json["code"]) == (401, 901)
    assert withdrawal(withdraw_id).status == "processing"
    assert balance(expert) == 7_000
    assert Event.get_or_none(Event.event_id == "evt_forged") is None


# --- reconcile_transfers -----------------------------------------------------------------------


@pytest.fixture
def processing_since_now(pending, gateway, fake_pingpp, clock):
    run_payouts(gateway)
    (transfer_id,) = fake_pingpp.transfers
    return pending, transfer_id


def test_fresh_processing_transfers_are_not_retrieved(processing_since_now, gateway, fake_pingpp, clock):
    _, transfer_id = processing_since_now
    clock.shift(5 * 60 - 1)
    assert reconcile_transfers(gateway) == {"settled": 0, "failed": 0}
    assert transfer_requests(fake_pingpp, transfer_id) == []


@pytest.mark.parametrize(
    "status, settled, refunded",
    [("paid", "succeeded", False), ("failed", "failed", True), ("canceled", "failed", True)],
)
def test_processing_transfer_older_than_five_minutes_is_settled_from_ping(
    processing_since_now, gateway, fake_pingpp, clock, expert, status, settled, refunded
):
    withdraw_id, transfer_id = processing_since_now
    fake_pingpp.set_transfer(transfer_id, status)
    clock.shift(5 * 60 + 1)
    assert reconcile_transfers(gateway) == {"settled": 1, "failed": 0}
    assert len(transfer_requests(fake_pingpp, transfer_id)) == 1
    assert withdrawal(withdraw_id).status == settled
    assert balance(expert) == (10_000 if refunded else 7_000)
    assert reconcile_transfers(gateway) == {"settled": 0, "failed": 0}  # settled rows are not asked about again


def test_transfer_still_pending_at_ping_stays_processing_and_is_asked_again_later(
    processing_since_now, gateway, fake_pingpp, clock
):
    withdraw_id, transfer_id = processing_since_now
    clock.shift(5 * 60 + 1)
    assert reconcile_transfers(gateway) == {"settled": 0, "failed": 0}
    assert withdrawal(withdraw_id).status == "processing"
    assert reconcile_transfers(gateway) == {"settled": 0, "failed": 0}
    assert len(transfer_requests(fake_pingpp, transfer_id)) == 1  # not again right away
    clock.shift(5 * 60 + 1)
    fake_pingpp.set_transfer(transfer_id, "paid")
    assert reconcile_transfers(gateway) == {"settled": 1, "failed": 0}
    assert withdrawal(withdraw_id).status == "succeeded"


def test_ping_failing_during_reconcile_changes_nothing(processing_since_now, gateway, fake_pingpp, clock, expert):
    withdraw_id, transfer_id = processing_since_now
    fake_pingpp.set_transfer(transfer_id, "failed")
    clock.shift(5 * 60 + 1)
    fake_pingpp.fail_next()
    assert reconcile_transfers(gateway) == {"settled": 0, "failed": 1}
    assert withdrawal(withdraw_id).status == "processing"
    assert balance(expert) == 7_000
    assert reconcile_transfers(gateway) == {"settled": 1, "failed": 0}
    assert balance(expert) == 10_000


# --- the commands --------------------------------------------------------------------------------


@pytest.fixture
def command(settings, fake_pingpp):
    env = process_env(settings, PINGPP_TIMEOUT="2")

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "payapi", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    return run


def test_worker_once_pays_out_pending_withdrawals_once(pending, command, fake_pingpp):
    first = command("worker", "--once")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.strip().splitlines()[-1])["payouts"] == {"sent": 1, "failed": 0}
    assert withdrawal(pending).status == "processing"
    (request,) = fake_pingpp.transfer_creations()
    assert (request[2]["order_no"], request[2]["recipient"], request[2]["amount"]) == (pending, ACCOUNT["id"], 3_000)

    second = command("worker", "--once")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["payouts"] == {"sent": 0, "failed": 0}
    assert len(fake_pingpp.transfer_creations()) == 1


def test_withdrawals_list_shows_the_ones_in_flight(make_user, pay_expert, processing, send_event, fake_pingpp, command):
    withdraw_id, transfer_id = processing
    others = []
    for phone in ("13800000001", "13800000002"):
        user = set_up_expert(make_user(phone=phone))
        pay_expert(user.id, 1_000)
        others.append(withdraw(user, 1_000).json["withdraw_id"])
    send_event("transfer.failed", transfer_object(others[1], 1_000))

    listed = command("withdrawals", "list")
    assert listed.returncode == 0, listed.stderr
    assert withdraw_id in listed.stdout and others[0] in listed.stdout
    assert others[1] not in listed.stdout  # failed: not in flight
    line = next(line for line in listed.stdout.splitlines() if withdraw_id in line)
    assert "processing" in line and "3000" in line

    send_event("transfer.succeeded", fake_pingpp.set_transfer(transfer_id, "paid"))
    assert withdraw_id not in command("withdrawals", "list").stdout


def test_withdrawals_show_prints_one_as_json(processing, command):
    withdraw_id, transfer_id = processing
    shown = command("withdrawals", "show", withdraw_id)
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert {
        k: row[k]
        for k in (
            "withdraw_id",
            "amount",
            "status",
            "account_type",
            "account_id",
            "account_name",
            "transfer_id",
            "attempts",
        )
    } == {
        "withdraw_id": withdraw_id,
        "amount": 3_000,
        "status": "processing",
        "account_type": "alipay",
        "account_id": ACCOUNT["id"],
        "account_name": ACCOUNT["name"],
        "transfer_id": transfer_id,
        "attempts": 1,
    }
    assert row["transfer"]["id"] == transfer_id
    assert row["created_at"].endswith("Z")


def test_withdrawals_show_of_an_unknown_id_fails(database, command):
    shown = command("withdrawals", "show", "0123456789abcdef01234567")
    assert shown.returncode != 0
    assert "0123456789abcdef01234567" in shown.stderr
