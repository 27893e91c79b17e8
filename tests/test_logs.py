"""What the real gunicorn writes to its log: one JSON line per request, and never a secret."""

import json

import pytest

from tests.conftest import SERVICE_KEY, _migrated
from tests.live_server import LiveServer, paid_charge

PASSWD = "e10adc3949ba59abbe56e057f20f883e-log-test"
NEW_PASSWD = "5f4dcc3b5aa765d61d8327deb882cf99-log-test"
ANSWERS = {"answer1": "红烧肉-log-test", "answer2": "Shanghai-log-test", "answer3": "Lucky-log-test"}


@pytest.fixture(scope="module")
def live(database_url, fake_pingpp_server, pingpp_keys, tmp_path_factory):
    _migrated(database_url)
    server = LiveServer(tmp_path_factory.mktemp("gunicorn-logs"), database_url, fake_pingpp_server.url, pingpp_keys[1], workers=2)
    server.start()
    yield server
    server.stop()


def request_lines(log):
    lines = []
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("logger") == "payapi.request":
                lines.append(record)
    return lines


def test_secrets_never_reach_the_log(live, database, fake_pingpp, pingpp_keys):
    user = live.user()
    start = live.mark()
    assert user.post("/rest/pay/passwd", {"passwd": PASSWD}).code == 900
    assert user.post("/rest/pay/question", {**ANSWERS, "passwd": PASSWD}).code == 900
    assert user.post("/rest/pay/passwd", {"passwd": NEW_PASSWD, **ANSWERS}).code == 900
    assert user.post("/rest/pay/passwd", {"passwd": "x", "old_passwd": PASSWD}).code == 905  # a wrong one, logged as 905
    assert user.post("/rest/pay/smscode", {}).code == 900
    (code,) = live.sms_codes(user.phone)
    assert user.post("/rest/pay/withdrawInfo", {"smscode": "000000" if code != "000000" else "111111", "id": "a@b.cn", "name": "张三"}).code == 905
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
