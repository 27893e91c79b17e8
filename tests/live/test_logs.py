"""What the real gunicorn and the worker write: only JSON lines, one per request, and never a secret."""

import json
import subprocess
import sys

import pytest

from tests.support.config import SERVICE_KEY, process_env
from tests.support.live_server import ROOT, paid_charge
from tests.support.scenarios import ACCOUNT, set_up_expert, withdraw

PASSWD = "e10adc3949ba59abbe56e057f20f883e-log-test"
NEW_PASSWD = "5f4dcc3b5aa765d61d8327deb882cf99-log-test"
ANSWERS = {"answer1": "红烧肉-log-test", "answer2": "Shanghai-log-test", "answer3": "Lucky-log-test"}


LIVE_SERVER = {"workers": 2}


def json_lines(log):
    """Every line of the log as the JSON object it must be; a line that is not one fails the test."""
    records = []
    for number, line in enumerate(log.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"log line {number} is not JSON: {line[:300]!r}")
        assert isinstance(record, dict) and {"ts", "level", "logger", "msg"} <= set(record), line
        records.append(record)
    return records


def request_lines(log):
    return [r for r in json_lines(log) if r["logger"] == "payapi.request"]


def test_every_line_gunicorn_wrote_since_it_started_is_json(live, database):
    records = json_lines(live.log())
    said = [r["msg"] for r in records if r["logger"] == "gunicorn.error"]
    assert any(m.startswith("Starting gunicorn") for m in said) and any(m.startswith("Booting worker") for m in said)


def test_each_request_is_exactly_one_line(live, database):
    start = live.mark()
    ids = [f"one-line-{i}" for i in range(6)]
    for request_id in ids:
        assert live.get("/healthz", headers={"X-Request-Id": request_id}).status == 200
    assert live.get("/nothing/here", headers={"X-Request-Id": "one-line-404"}).status == 404
    records = json_lines(live.log()[start:])
    assert sorted(r["request_id"] for r in records if r["logger"] == "payapi.request") == sorted([*ids, "one-line-404"])
    assert not [r for r in records if r["logger"] == "gunicorn.access"]


def test_secrets_never_reach_the_log(live, database, fake_pingpp, pingpp_keys):
    user = live.user()
    start = live.mark()
    assert user.post("/rest/pay/passwd", {"passwd": PASSWD}).code == 900
    assert user.post("/rest/pay/question", {**ANSWERS, "passwd": PASSWD}).code == 900
    assert user.post("/rest/pay/passwd", {"passwd": NEW_PASSWD, **ANSWERS}).code == 900
    assert (
        user.post("/rest/pay/passwd", {"passwd": "x", "old_passwd": PASSWD}).code == 905
    )  # a wrong one, logged as 905
    assert user.post("/rest/pay/smscode", {}).code == 900
    (code,) = live.sms_codes(user.phone)
    assert (
        user.post(
            "/rest/pay/withdrawInfo",
            {"smscode": "000000" if code != "000000" else "111111", "id": "a@b.cn", "name": "张三"},
        ).code
        == 905
    )
    assert user.post("/rest/pay/withdrawInfo", {"smscode": code, "id": "a@b.cn", "name": "张三"}).code == 900
    charge = paid_charge(live, fake_pingpp, pingpp_keys[0], expert_id=user.id, money=50_000)
    assert charge is not None
    assert user.post("/rest/pay/withdraw", {"passwd": NEW_PASSWD, "amount": "1000"}).code == 900

    log = live.log()[start:]
    secrets_ = [PASSWD, NEW_PASSWD, *ANSWERS.values(), code, user.headers["auth"], SERVICE_KEY]
    leaked = [s for s in secrets_ if s in log]
    assert not leaked, f"secrets in the log: {leaked}"
    # and the lines are there: one JSON line per request, with the fields operators search by
    lines = request_lines(log)
    assert len(lines) >= 9
    assert {(r["method"], r["route"], r["status"], r["code"]) for r in lines} >= {
        ("POST", "/rest/pay/passwd", 200, 900),
        ("POST", "/rest/pay/passwd", 403, 905),
        ("POST", "/rest/pay/withdrawInfo", 403, 905),
        ("POST", "/rest/pay/withdraw", 200, 900),
    }
    assert all(len(r["request_id"]) == 32 and r["ms"] >= 0 for r in lines)


def test_a_request_id_is_echoed_and_logged(live, database):
    answer = live.get("/healthz", headers={"X-Request-Id": "trace-abc.123"})
    assert answer.status == 200
    assert any(r["request_id"] == "trace-abc.123" and r["route"] == "/healthz" for r in request_lines(live.log()))


def test_the_worker_logs_json_its_pass_and_each_failure_with_ids_and_ping_plus_plus_message(
    make_user, pay_expert, settings, fake_pingpp
):
    expert = set_up_expert(make_user())
    pay_expert(expert.id, 10_000)
    withdraw_id = withdraw(expert, 3_000).json["withdraw_id"]
    fake_pingpp.fail_next(status=400)
    done = subprocess.run(
        [sys.executable, "-m", "payapi", "worker", "--once"],
        cwd=ROOT,
        env=process_env(settings, PINGPP_TIMEOUT="2"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stderr)
    (failure,) = [r for r in records if r["logger"] == "payapi.gateway"]
    assert (failure["call"], failure["order_no"], failure["http_status"]) == ("create transfer", withdraw_id, 400)
    assert (
        failure["ping_message"].endswith("scripted failure") and failure["level"] == "WARNING"
    )  # what the sandbox said
    (summary,) = [r for r in records if r["msg"] == "worker pass"]
    assert summary["payouts"] == {"sent": 0, "failed": 1} and summary["ms"] >= 0
    assert set(summary) >= {"pays", "payouts", "transfers"}
    for secret in (ACCOUNT["id"], ACCOUNT["name"], settings.pingpp_api_key, *settings.auth_secrets):
        assert secret not in done.stderr and secret not in done.stdout
