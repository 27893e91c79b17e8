"""GET /metrics: who may scrape it, numbers that move with requests, the worker's passes read from the
database, and under the real gunicorn the sum over its workers (prometheus-client's multiprocess mode)."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from payapi import worker
from payapi.backoffice import operators
from payapi.infra.models import Notification
from tests.support.config import SERVICE_KEY
from tests.support.live_server import LiveServer, parallel
from tests.support.operators import basic, console


def samples(text):
    """{(sample name, frozenset(labels)): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text, name, **labels):
    return samples(text).get((name, frozenset(labels.items())), 0)


def scrape(app):
    answer = app.get("/metrics", headers={"X-Service-Key": SERVICE_KEY})
    assert answer.status_int == 200 and answer.content_type == "text/plain"
    return answer.text


def test_metrics_needs_the_service_key_or_an_operator(app, user, make_operator):
    alice = make_operator("alice")
    for headers in ({}, {"auth": user.token}, {"X-Service-Key": "wrong"}, basic("alice", "wrong password")):
        answer = app.get("/metrics", headers=headers, expect_errors=True)
        assert answer.status_int == 401 and answer.json["code"] == 901, headers
    assert app.get("/metrics", headers={"X-Service-Key": SERVICE_KEY}).status_int == 200
    assert app.get("/metrics", headers=alice).status_int == 200
    # The console's session too, from a client that sends its cookie (a browser does not: Path=/ops).
    token = console(app).cookies[operators.SESSION_COOKIE]
    cookie = {"Cookie": f"{operators.SESSION_COOKIE}={token}"}
    assert app.get("/metrics", headers=cookie).status_int == 200
    assert (
        app.get("/metrics", headers={"Cookie": f"{operators.SESSION_COOKIE}=forged"}, expect_errors=True).status_int
        == 401
    )


def test_requests_are_counted_by_route_template_and_code_with_their_latency(app, user):
    before = scrape(app)
    for _ in range(3):
        user.get("/rest/pay/balance")
    user.get("/rest/pay/576b69ae7ce1fd7004cc8280")  # someone else's pay: 911
    app.get("/no/such/route", expect_errors=True)
    after = scrape(app)
    labels = {"route": "/rest/pay/balance", "method": "GET", "status": "200", "code": "900"}
    assert value(after, "payapi_requests_total", **labels) - value(before, "payapi_requests_total", **labels) == 3
    missing = {"route": "/rest/pay/{pay_id}", "method": "GET", "status": "404", "code": "911"}
    assert value(after, "payapi_requests_total", **missing) - value(before, "payapi_requests_total", **missing) == 1
    unknown = {"route": "-", "method": "GET", "status": "404", "code": "911"}
    assert value(after, "payapi_requests_total", **unknown) - value(before, "payapi_requests_total", **unknown) == 1
    count = "payapi_request_duration_seconds_count"
    assert value(after, count, route="/rest/pay/balance") - value(before, count, route="/rest/pay/balance") == 3
    assert value(after, "payapi_request_duration_seconds_bucket", route="/rest/pay/balance", le="+Inf") >= 3


@pytest.mark.filterwarnings("ignore::webtest.lint.WSGIWarning")
def test_a_made_up_method_does_not_make_a_new_series(app):
    from payapi.infra import metrics

    app.request("/healthz", method="BREW", expect_errors=True)
    scrape(app)
    cached = len(metrics._request_children)
    for i in range(200):
        app.request("/healthz", method=f"BREW{i}", expect_errors=True)
    assert 'method="BREW' not in scrape(app)
    assert len(metrics._request_children) == cached  # every made-up method shares the one cache entry


def test_console_answers_are_counted_without_a_made_up_code(app):
    before = scrape(app)
    assert app.get("/ops", expect_errors=True).status_int == 303  # to the login form
    assert app.get("/ops/login").status_int == 200  # HTML
    after = scrape(app)
    assert 'code="None"' not in after
    for route, status in (("/ops", "303"), ("/ops/login", "200")):
        labels = {"route": route, "method": "GET", "status": status, "code": "-"}
        assert value(after, "payapi_requests_total", **labels) - value(before, "payapi_requests_total", **labels) == 1


def test_webhook_outcomes_are_counted(app, pay_expert, make_user, send_event, fake_pingpp):
    before = scrape(app)
    info = pay_expert(make_user().id, 1_000)  # one charge.succeeded, applied
    charge = fake_pingpp.mark_paid(info["charge"]["id"])  # already paid: the same charge again
    send_event("charge.succeeded", charge, event_id="evt_replayed")
    send_event("charge.succeeded", charge, event_id="evt_replayed")
    after = scrape(app)
    for outcome, more in (("applied", 1), ("ignored", 1), ("replay", 1)):
        name = "payapi_webhook_events_total"
        assert value(after, name, outcome=outcome) - value(before, name, outcome=outcome) == more, outcome


def test_worker_passes_payouts_and_the_outbox_come_from_the_database(app, settings, gateway, make_user, pay_expert):
    from tests.support.scenarios import set_up_expert, withdraw

    expert = set_up_expert(make_user())
    pay_expert(expert.id, 5_000)
    assert withdraw(expert, 2_000).json["code"] == 900
    worker.run_once(settings, gateway)
    text = scrape(app)
    assert value(text, "payapi_worker_passes_total", **{"pass": "payouts"}) == 1
    assert value(text, "payapi_worker_items_total", **{"pass": "payouts", "outcome": "sent"}) == 1
    assert value(text, "payapi_worker_pass_last_success_timestamp_seconds", **{"pass": "payouts"}) > 1.7e9
    assert ("payapi_worker_pass_duration_seconds", frozenset({("pass", "payouts")})) in samples(text)
    assert value(text, "payapi_withdrawals", status="processing") == 1
    # The outbox as the database holds it (the tests' NOTIFY_URL answers nothing: the messages wait).
    waiting = Notification.select().where(Notification.status == "pending").count()
    assert waiting > 0 and value(text, "payapi_notifications", status="pending") == waiting
    assert value(text, "payapi_notifications", status="failed") == 0
    assert value(text, "payapi_metrics_database_up") == 1
    worker.run_once(settings, gateway)
    again = scrape(app)
    assert value(again, "payapi_worker_passes_total", **{"pass": "payouts"}) == 2
    assert value(again, "payapi_worker_items_total", **{"pass": "payouts", "outcome": "sent"}) == 1


@pytest.mark.only_db("sqlite")
def test_under_gunicorn_metrics_are_summed_over_its_workers(tmp_path, database_url, fake_pingpp, pingpp_keys, database):
    server = LiveServer(tmp_path, database_url, fake_pingpp.url, pingpp_keys[1], workers=2).start()
    try:
        key = {"X-Service-Key": SERVICE_KEY}

        def healthz_count():
            answer = server.get("/metrics", headers=key)
            assert answer.status == 200, answer
            return value(answer.text, "payapi_requests_total", route="/healthz", method="GET", status="200", code="900")

        mark = server.mark()
        first = healthz_count()
        parallel(8, lambda i: [server.get("/healthz") for _ in range(5)])
        assert len(server.served_by(mark)) == 2  # both workers answered some of them
        # Whichever worker answers the scrape, it counts what both did.
        counts = {healthz_count() for _ in range(6)}
        assert counts == {first + 40}, counts
        assert server.get("/metrics").status == 401
    finally:
        server.stop()
