"""Notifications at their edges: a NOTIFY_SECRET that cannot sign, and what a refused delivery logs."""

import base64
import dataclasses
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine

from payapi import worker
from payapi.infra import outbox as notifications
from payapi.infra.db import db
from payapi.infra.models import Notification

SECRET = "whsec_" + base64.b64encode(b"an order service's secret key 32").decode()


class Stub:
    """An order service that answers every POST with one scripted status, body and headers."""

    def __init__(self, status=200, body=b"", headers=None):
        self.status, self.body, self.headers = status, body, headers or {}
        self.posts = 0
        self.before_answer = lambda: None  # runs as each POST arrives, before the answer
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                stub.before_answer()
                stub.posts += 1
                self.send_response(stub.status)
                for name, value in stub.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(stub.body)))
                self.end_headers()
                self.wfile.write(stub.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    server = Stub()
    yield server
    server.stop()


def attempt(settings, gateway):
    return worker.run_once(settings, gateway)["notifications"]["attempted"]


@pytest.mark.parametrize("secret", ["whsec_%%% not base64 %%%", "whsec_YWJj=x", "not-even-whsec"])
def test_a_secret_that_cannot_sign_makes_a_failed_attempt_counted_and_backed_off(
    pay_expert, settings, gateway, stub, secret, caplog
):
    settings = dataclasses.replace(settings, notify_url=stub.url, notify_secret=secret)
    notifications.configure(settings)  # the outbox is written only with a NOTIFY_URL
    pay_expert("e" * 24, 10_000)
    with time_machine.travel(time.time(), tick=False) as clock:
        assert attempt(settings, gateway) == 1
        (row,) = Notification.select()
        assert (row.status, row.attempts) == ("pending", 1) and "NOTIFY_SECRET" in row.last_error
        assert row.next_attempt_at - int(time.time() * 1000) == 5_000  # the first back-off, not a 15 s lease
        assert attempt(settings, gateway) == 0
        clock.shift(5)
        assert attempt(settings, gateway) == 1 and Notification.get().attempts == 2
    assert stub.posts == 0  # nothing unsigned ever left
    assert secret.removeprefix("whsec_") not in caplog.text


def not_delivered_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("notification not delivered")]


@pytest.mark.parametrize(
    "status, body, headers",
    [
        (500, ("数据库不可用 " + "x" * 400).encode(), {"content-type": "text/plain; charset=utf-8"}),
        (302, b"", {"location": "https://elsewhere.example/"}),
        (404, b"", {}),
    ],
)
def test_a_non_2xx_answer_logs_its_status_and_the_first_bytes_of_the_answer(
    pay_expert, settings, gateway, stub, caplog, status, body, headers
):
    caplog.set_level(logging.INFO, logger="payapi.notifications")
    stub.status, stub.body, stub.headers = status, body, headers
    settings = dataclasses.replace(settings, notify_url=stub.url, notify_secret=SECRET)
    notifications.configure(settings)  # the outbox is written only with a NOTIFY_URL
    pay_expert("e" * 24, 10_000)
    assert attempt(settings, gateway) == 1
    (line,) = not_delivered_lines(caplog)
    assert f"HTTP {status}" in line
    if body:
        text = body.decode()
        assert text[:150] in line and text[:250] not in line  # the first bytes only (200)
    assert Notification.get().last_status == status


def test_a_delivered_message_costs_two_statements_each_its_own_transaction(pay_expert, settings, stub, monkeypatch):
    # The claim and the settlement are one guarded UPDATE each, with no BEGIN and COMMIT around them
    # (on MySQL those are two round trips each); what is sent comes with the list of due messages.
    settings = dataclasses.replace(settings, notify_url=stub.url, notify_secret=SECRET)
    notifications.configure(settings)
    pay_expert("e" * 24, 10_000)
    (message,) = notifications.due(10)
    database = db.obj
    statements, begun = [], []
    run = database.execute_sql
    monkeypatch.setattr(database, "execute_sql", lambda sql, *a, **k: statements.append(sql) or run(sql, *a, **k))
    monkeypatch.setattr(database, "begin", lambda *a, **k: begun.append(a))
    assert notifications.deliver(message, stub.url, SECRET) == "delivered"
    monkeypatch.undo()
    assert begun == [] and len(statements) == 2
    assert all(sql.startswith('UPDATE "notification"') or sql.startswith("UPDATE `notification`") for sql in statements)
    (row,) = Notification.select()
    assert (row.status, row.attempts, row.last_status, row.last_error) == ("delivered", 1, 200, "")
    assert row.delivered_at and row.updated_at == row.delivered_at
    assert stub.posts == 1
    assert notifications.deliver(message, stub.url, SECRET) is None  # delivered: no claim, nothing sent
    assert stub.posts == 1


def test_a_message_an_operator_settled_mid_attempt_is_left_as_the_operator_left_it(pay_expert, settings, stub):
    settings = dataclasses.replace(settings, notify_url=stub.url, notify_secret=SECRET)
    notifications.configure(settings)
    pay_expert("e" * 24, 10_000)
    (message,) = notifications.due(10)
    stub.before_answer = lambda: Notification.update(status="failed").execute()  # an operator, meanwhile
    assert notifications.deliver(message, stub.url, SECRET) == "failed"
    assert Notification.get().status == "failed"


def test_an_attempt_starts_no_thread_of_its_own(stub, monkeypatch):
    # Each attempt's time limit used to be a threading.Timer: a thread started and stopped per
    # message, a seventh of the dispatcher's CPU. One thread now watches every attempt's deadline.
    started = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name) or start(self))
    for _ in range(5):
        assert notifications.post(stub.url, b"{}", {})[0] == 200
    ours = [name for name in started if "process_request_thread" not in name]  # not the stub's own
    assert len(ours) <= 1
