"""Notifications to the order service: an outbox row in the same transaction as each change,
delivered by the worker per Standard Webhooks and verified here with the reference library."""

import base64
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import time_machine
import webtest

from payapi import worker
from payapi.app import create_app
from payapi.infra import outbox
from payapi.infra import outbox as notifications
from payapi.infra.models import Notification
from payapi.users.sms import FileSms
from tests.support.config import AUTH_SECRETS, SERVICE_KEY
from tests.support.receiver import Flood, Receiver, Trickle
from tests.support.scenarios import set_up_expert, transfer_object, withdraw

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def receiver():
    server = Receiver(SECRET)
    yield server
    server.stop()


@pytest.fixture
def settings(settings, receiver):
    return dataclasses.replace(settings, notify_url=receiver.url, notify_secret=SECRET)


def deliver(settings, gateway):
    return worker.run_once(settings, gateway)["notifications"]["attempted"]


def messages(subject_id=None):
    query = Notification.select().order_by(Notification.created_at, Notification.message_id)
    if subject_id:
        query = query.where(Notification.subject_id == subject_id)
    return [(m.type, m.status) for m in query]


# --- written with the change ---------------------------------------------------------------------


def test_a_paid_pay_is_announced_and_the_receiver_verifies_it(pay_expert, receiver, settings, gateway):
    paid = pay_expert("e" * 24, 10_000)
    assert messages(paid["pay_id"]) == [("pay.paid", "pending")]
    assert deliver(settings, gateway) == 1
    (got,) = receiver.received
    row = Notification.get(Notification.subject_id == paid["pay_id"])
    assert got["id"] == row.message_id and row.status == "delivered" and row.delivered_at
    pay = got["body"]["data"]["pay"]
    assert got["body"]["type"] == "pay.paid"
    assert (pay["pay_id"], pay["status"], pay["money"], pay["charge"]["paid"]) == (paid["pay_id"], "paid", 10_000, True)
    assert got["body"]["timestamp"] == pay["updatedAt"]
    assert receiver.refused == []
    assert deliver(settings, gateway) == 0  # delivered once


def test_with_no_notify_url_no_message_is_written(app, make_user, order_service, pay_expert, settings, gateway):
    unset = dataclasses.replace(settings, notify_url="")
    payer = make_user()
    closed = order_service(userID=payer.id).json["info"]
    with_url = pay_expert("e" * 24, 1_000)
    assert messages(with_url["pay_id"]) == [("pay.paid", "pending")]
    payer.app = webtest.TestApp(create_app(unset, gateway, FileSms(unset.sms_file)))
    try:
        assert payer.post(f"/rest/pay/{closed['pay_id']}/status", {"status": "cancel"}).json["code"] == 900
        assert messages(closed["pay_id"]) == []  # nothing would ever send it
        assert "notifications" not in worker.run_once(unset, gateway)
    finally:
        notifications.configure(settings)  # this process writes the outbox again, as the other tests expect


def test_every_kind_of_change_is_announced(
    app, make_user, order_service, pay_expert, fake_pingpp, send_event, receiver, settings, gateway
):
    payer = make_user()
    closed = order_service(userID=payer.id).json["info"]
    payer.post(f"/rest/pay/{closed['pay_id']}/status", {"status": "cancel"})
    paid = pay_expert("e" * 24, 10_000)
    refunded = app.post(
        f"/internal/pays/{paid['pay_id']}/refunds",
        b'{"amount": 1000, "description": "x"}',
        headers={"X-Service-Key": SERVICE_KEY},
        content_type="application/json",
    ).json["refund"]
    (made_id,) = fake_pingpp.refunds
    send_event("refund.succeeded", fake_pingpp.settle_refund(made_id, "succeeded"))
    expert = set_up_expert(make_user(phone="13900000001"))
    pay_expert(expert.id, 5_000)
    ok = withdraw(expert, 1_000).json["withdraw_id"]
    send_event("transfer.succeeded", transfer_object(ok, 1_000, status="paid"))
    deliver(settings, gateway)
    assert Counter(receiver.types()) == Counter(
        {"pay.closed": 1, "pay.paid": 2, "refund.succeeded": 1, "withdrawal.succeeded": 1}
    )
    refund_message = next(m for m in receiver.received if m["body"]["type"] == "refund.succeeded")
    assert refund_message["body"]["data"]["refund"]["refund_id"] == refunded["refund_id"]
    assert refund_message["body"]["data"]["pay"]["pay_id"] == paid["pay_id"]
    withdrawal = next(m for m in receiver.received if m["body"]["type"] == "withdrawal.succeeded")["body"]["data"]
    assert (withdrawal["user_id"], withdrawal["withdrawal"]["withdraw_id"], withdrawal["withdrawal"]["status"]) == (
        expert.id,
        ok,
        "succeeded",
    )


def test_a_failed_withdrawal_and_a_failed_refund_are_announced(
    app, make_user, pay_expert, fake_pingpp, send_event, receiver, settings, gateway
):
    expert = set_up_expert(make_user())
    paid = pay_expert(expert.id, 5_000)
    withdraw_id = withdraw(expert, 1_000).json["withdraw_id"]
    send_event("transfer.failed", transfer_object(withdraw_id, 1_000, status="failed"))
    app.post(
        f"/internal/pays/{paid['pay_id']}/refunds",
        b'{"description": "x"}',
        headers={"X-Service-Key": SERVICE_KEY},
        content_type="application/json",
    )
    (made_id,) = fake_pingpp.refunds
    fake_pingpp.settle_refund(made_id, "failed")
    with time_machine.travel(time.time() + 301, tick=False):
        worker.run_once(settings, gateway)
    assert {"withdrawal.failed", "refund.failed"} <= set(receiver.types())


# --- delivery ----------------------------------------------------------------------------------------


def test_a_receiver_outage_is_retried_with_back_off_under_the_same_id(pay_expert, receiver, settings, gateway):
    pay_expert("e" * 24, 10_000)
    receiver.script = [500, 503, 500]
    with time_machine.travel(time.time(), tick=False) as clock:
        waits = []
        for _ in range(3):
            assert deliver(settings, gateway) == 1
            (row,) = Notification.select()
            waits.append(row.next_attempt_at - int(time.time() * 1000))
            assert deliver(settings, gateway) == 0  # not before its time
            clock.shift(waits[-1] / 1000)
        assert waits == [5_000, 10_000, 20_000]
        assert deliver(settings, gateway) == 1
    ids = {message_id for message_id, _ in receiver.attempts}
    assert len(ids) == 1 and [status for _, status in receiver.attempts] == [500, 503, 500, 200]
    assert Notification.get().status == "delivered" and Notification.get().attempts == 4


def test_after_24_hours_a_message_fails_and_an_operator_can_resend_it(pay_expert, receiver, settings, gateway):
    pay_expert("e" * 24, 10_000)
    receiver.script = [500] * 100
    with time_machine.travel(time.time(), tick=False) as clock:
        for _ in range(40):
            if Notification.get().status != "pending":
                break
            deliver(settings, gateway)
            clock.shift(3600)
        row = Notification.get()
        assert row.status == "failed" and 10 < row.attempts < 40
        assert row.next_attempt_at - row.created_at <= 24 * 3600 * 1000 + 3600 * 1000
        receiver.script = []
        outbox.resend(row.message_id)
        assert deliver(settings, gateway) == 1
    assert Notification.get().status == "delivered"
    assert receiver.received[-1]["id"] == row.message_id


def test_a_hanging_receiver_does_not_hold_up_the_other_messages(pay_expert, receiver, settings, gateway):
    first = pay_expert("e" * 24, 1_000)
    hung = Notification.get(Notification.subject_id == first["pay_id"]).message_id
    receiver.hang_ids[hung] = outbox.TIMEOUT_S + 1
    for _ in range(5):
        pay_expert("e" * 24, 1_000)
    started = time.monotonic()
    assert deliver(settings, gateway) == 6
    assert time.monotonic() - started < outbox.TIMEOUT_S + 3
    assert len(receiver.received) == 5 and hung not in {m["id"] for m in receiver.received}
    assert Notification.get_by_id(hung).status == "pending"  # timed out: tried again later


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_bound_and_holds_up_no_one(
    pay_expert, receiver, settings, gateway
):
    first = pay_expert("e" * 24, 1_000)
    slow = Notification.get(Notification.subject_id == first["pay_id"]).message_id
    receiver.bodies[slow] = trickle = Trickle()  # 200 at once, then a byte every 0.2 s: each read is quick
    others = [pay_expert("e" * 24, 1_000) for _ in range(5)]
    started = time.monotonic()
    assert deliver(settings, gateway) == 6
    assert time.monotonic() - started < 3 * notifications.TIMEOUT_S  # the attempt as a whole is bounded
    cut = Notification.get_by_id(slow)
    assert (cut.status, cut.attempts, cut.delivered_at) == ("pending", 1, None)  # a failed attempt: tried again
    assert trickle.sent < trickle.length
    for info in others:
        row = Notification.get(Notification.subject_id == info["pay_id"])
        assert row.status == "delivered" and row.delivered_at < cut.updated_at  # not after the slow one


def test_an_endless_answer_is_read_only_a_few_kilobytes_of(pay_expert, receiver, settings, gateway):
    paid = pay_expert("e" * 24, 1_000)
    message_id = Notification.get(Notification.subject_id == paid["pay_id"]).message_id
    receiver.bodies[message_id] = flood = Flood()
    assert deliver(settings, gateway) == 1
    assert Notification.get_by_id(message_id).status == "delivered"  # its 2xx acknowledged it
    assert flood.sent < flood.length // 10  # the rest was never read (what was sent sits in socket buffers)


def test_a_slow_delivery_does_not_delay_messages_written_meanwhile(pay_expert, receiver, settings):
    first = pay_expert("e" * 24, 1_000)
    slow = Notification.get(Notification.subject_id == first["pay_id"]).message_id
    receiver.bodies[slow] = Trickle()
    dispatcher = notifications.Dispatcher(settings.notify_url, settings.notify_secret, poll_s=0.05)
    stop = threading.Event()
    running = threading.Thread(target=dispatcher.run_forever, args=(stop,))
    running.start()
    try:
        deadline = time.monotonic() + 10
        while slow not in receiver.arrived and time.monotonic() < deadline:
            time.sleep(0.02)
        later = pay_expert("e" * 24, 2_000)  # written while the slow one is being answered
        message = Notification.get(Notification.subject_id == later["pay_id"])
        deadline = time.monotonic() + 3 * notifications.TIMEOUT_S
        while time.monotonic() < deadline and Notification.get_by_id(slow).attempts == 0:
            time.sleep(0.05)
    finally:
        stop.set()
        running.join(3 * notifications.TIMEOUT_S)
    assert not running.is_alive()
    cut, sent = Notification.get_by_id(slow), Notification.get_by_id(message.message_id)
    assert (cut.status, cut.attempts) == ("pending", 1)
    assert sent.status == "delivered" and sent.delivered_at < cut.updated_at


def test_the_running_dispatcher_delivers_a_backlog_larger_than_its_list_once_each(pay_expert, receiver, settings):
    # run_forever hands out due messages from a list of a few pools' worth (four here): a backlog of
    # twelve takes several lists, each message delivered once, none left behind.
    paid = [pay_expert("e" * 24, 1_000 + n)["pay_id"] for n in range(12)]
    backlog = {m.message_id for m in Notification.select().where(Notification.status == "pending")}
    assert len(backlog) >= 12 and {m.subject_id for m in Notification.select()} >= set(paid)
    dispatcher = notifications.Dispatcher(settings.notify_url, settings.notify_secret, concurrency=1, poll_s=0.05)
    stop = threading.Event()
    running = threading.Thread(target=dispatcher.run_forever, args=(stop,))
    running.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Notification.select().where(Notification.status == "pending").exists():
            time.sleep(0.05)
    finally:
        stop.set()
        running.join(3 * notifications.TIMEOUT_S)
    assert not running.is_alive()
    delivered = [m["id"] for m in receiver.received]
    assert sorted(delivered) == sorted(backlog)  # every one, once
    assert all(m.status == "delivered" and m.attempts == 1 for m in Notification.select())


# --- one connection per dispatcher thread, kept open -----------------------------------------------


def three_due(pay_expert):
    for n in range(3):
        pay_expert("e" * 24, 1_000 + n)
    due = notifications.due(10)
    assert len(due) == 3
    return due


def sent_one_by_one(messages, receiver, timeout_s=notifications.TIMEOUT_S):
    """Each message's status after one attempt, all made by this thread (as one of a dispatcher's)."""
    return [notifications.deliver(m, receiver.url, SECRET, timeout_s) for m in messages]


def test_a_thread_sends_message_after_message_on_one_connection(pay_expert, receiver, settings):
    messages = three_due(pay_expert)
    assert sent_one_by_one(messages, receiver) == ["delivered"] * 3
    assert [m["id"] for m in receiver.received] == [m.message_id for m in messages]
    assert receiver.connections == 1


def test_a_connection_the_receiver_closed_while_idle_is_replaced_and_the_message_sent_once(
    pay_expert, receiver, settings
):
    first, second, third = three_due(pay_expert)
    receiver.close_after.add(second.message_id)  # its keep-alive timeout runs out after this answer
    assert sent_one_by_one([first, second, third], receiver) == ["delivered"] * 3
    assert [m["id"] for m in receiver.received] == [first.message_id, second.message_id, third.message_id]
    assert [message_id for message_id, _ in receiver.attempts].count(third.message_id) == 1
    assert receiver.connections == 2  # the third found the kept one closed: sent again on a new one


def test_a_receiver_gone_for_good_fails_the_attempt_after_one_new_connection(pay_expert, receiver, settings):
    first, second, _ = three_due(pay_expert)
    assert sent_one_by_one([first], receiver) == ["delivered"]
    receiver.stop()  # closes the kept connection too: the retry on a new one is refused
    assert sent_one_by_one([second], receiver) == ["pending"]
    assert Notification.get_by_id(second.message_id).last_error == "ConnectionRefusedError"


@pytest.mark.parametrize("length, connections", [(outbox.ANSWER_BYTES, 1), (outbox.ANSWER_BYTES + 1, 2)])
def test_a_connection_is_used_again_only_after_an_answer_read_whole(
    pay_expert, receiver, settings, length, connections
):
    first, second, third = three_due(pay_expert)
    receiver.bodies[second.message_id] = Flood(length)
    assert sent_one_by_one([first, second, third], receiver) == ["delivered"] * 3
    assert receiver.connections == connections  # the rest of a longer answer is never read: a new one


@pytest.mark.parametrize("slow", ["trickled answer", "no answer"])
def test_an_attempt_on_a_kept_connection_is_cut_at_its_deadline_and_the_connection_dropped(
    pay_expert, receiver, settings, slow
):
    first, second, third = three_due(pay_expert)
    if slow == "trickled answer":
        receiver.bodies[second.message_id] = Trickle(interval=0.05)
    else:
        receiver.hang_ids[second.message_id] = 2
    statuses = sent_one_by_one([first, second, third], receiver, timeout_s=0.5)
    assert statuses == ["delivered", "pending", "delivered"]
    assert Notification.get_by_id(second.message_id).last_error == "no whole answer within 0.5 s"
    assert receiver.connections == 2  # the second's (the first's, reused) was cut, not sent again, not kept


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_opens_its_own_connection(receiver):
    # The parent's kept socket is the child's too: a request from both on it would mix their answers.
    assert notifications.post(receiver.url, b"{}", {})[0] == 400  # unsigned: refused, the connection kept
    child = os.fork()
    if child == 0:
        try:
            os._exit(0 if notifications.post(receiver.url, b"{}", {})[0] == 400 else 1)
        finally:
            os._exit(2)
    assert os.waitpid(child, 0)[1] == 0
    assert notifications.post(receiver.url, b"{}", {})[0] == 400
    assert receiver.connections == 2  # the parent's, kept, and the child's own


def test_a_dispatcher_closes_its_threads_connections_with_it(pay_expert, receiver, settings):
    three_due(pay_expert)
    dispatcher = notifications.Dispatcher(receiver.url, SECRET, concurrency=1)
    assert dispatcher.run_once() == 3
    assert receiver.connections == 1 and len(receiver.open) == 1
    dispatcher.close()
    deadline = time.monotonic() + 10
    while receiver.open and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not receiver.open


# --- several workers, killed workers --------------------------------------------------------------------


@pytest.fixture
def worker_command(settings, fake_pingpp):
    env = {
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
        "NOTIFY_URL": settings.notify_url,
        "NOTIFY_SECRET": settings.notify_secret,
        "SETTLEMENT_HOLD_SECONDS": "0",
    }

    def start(*args):
        return subprocess.Popen(
            [sys.executable, "-m", "payapi", "worker", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    return start


def test_two_workers_deliver_each_message_once(pay_expert, receiver, worker_command):
    for _ in range(12):
        pay_expert("e" * 24, 1_000)
    workers = [worker_command("--once") for _ in range(2)]
    for process in workers:
        assert process.wait(timeout=60) == 0, process.stderr.read()[-2000:]
    per_message = Counter(message_id for message_id, _ in receiver.attempts)
    assert len(per_message) == 12 and set(per_message.values()) == {1}
    assert {m.status for m in Notification.select()} == {"delivered"}


def test_the_running_worker_sends_within_seconds_and_a_killed_one_loses_nothing(pay_expert, receiver, worker_command):
    running = worker_command("--interval", "60")
    try:
        pay_expert("e" * 24, 1_000)
        receiver.wait_for(1, timeout=10)  # the dispatcher, not the minute pass
        paid = pay_expert("e" * 24, 2_000)
        stuck = Notification.get(Notification.subject_id == paid["pay_id"]).message_id
        receiver.hang_ids[stuck] = 30  # the receiver hangs on it: the worker is killed mid-delivery
        deadline = time.monotonic() + 10
        while stuck not in receiver.arrived and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stuck in receiver.arrived
        os.killpg(running.pid, signal.SIGKILL)
        running.wait(timeout=10)
    finally:
        if running.poll() is None:
            os.killpg(running.pid, signal.SIGKILL)
    receiver.hang_ids.clear()
    restarted = worker_command("--interval", "60")
    try:
        messages_seen = receiver.wait_for(2, timeout=outbox.LEASE_MS / 1000 + 15)
        assert stuck in {m["id"] for m in messages_seen}
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=20) == 0
    assert Notification.get_by_id(stuck).status == "delivered"
