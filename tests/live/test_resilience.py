"""The production issue's resilience items, against a real gunicorn (4 worker processes).

(a) MariaDB restarted under a running gunicorn: during the outage every answer is a prompt
    503/999 JSON envelope; afterwards the same workers answer again, nobody restarts gunicorn.
    It stops its own dedicated MariaDB server, so the suite's shared one is never disturbed.
(b) Ping++ hanging: /internal/pays answers 920 within the gateway timeout and a success report
    answers 900; no worker is killed for it.
"""

import os
import subprocess
import sys
import time

import pymysql
import pytest
from pytest_mysql import factories

from payapi.domain.ids import new_id
from payapi.infra.models import Pay
from tests.support.databases import assert_books_balance
from tests.support.databases import migrated as _migrated
from tests.support.live_server import ROOT, LiveServer, paid_charge, parallel
from tests.support.pingpp import event
from tests.support.scenarios import assert_envelope

GATEWAY_TIMEOUT = 2  # PINGPP_TIMEOUT for these servers, seconds
HANG = 40  # how long the fake Ping++ hangs: past gunicorn's 30 s worker timeout

restartable_mariadb = factories.mysql_proc(
    host="127.0.0.1",
    params="--user=root --skip-log-bin --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 "
    "--innodb-lock-wait-timeout=10 --max-connections=200",
)


def assert_no_worker_was_killed(server, pids):
    log = server.log()
    assert "WORKER TIMEOUT" not in log and "Worker exiting" not in log, log[-4000:]
    assert server.worker_pids() == pids, "a worker was replaced"


# --- (a) MariaDB restart --------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_mariadb(request):
    if "mariadb" not in request.config.getoption("--db"):
        pytest.skip("--db does not include mariadb")
    proc = request.getfixturevalue("restartable_mariadb")
    root = pymysql.connect(unix_socket=proc.unixsocket, user="root")
    with root.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS payapi_restart CHARACTER SET utf8mb4")
        cur.execute("CREATE USER IF NOT EXISTS 'payapi'@'127.0.0.1' IDENTIFIED BY 'payapi'")
        cur.execute("GRANT ALL ON *.* TO 'payapi'@'127.0.0.1'")
    root.close()
    url = f"mysql://payapi:payapi@127.0.0.1:{proc.port}/payapi_restart"
    # The release phase's command, as production runs it.
    subprocess.run(
        [sys.executable, "-m", "payapi", "migrate"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        timeout=60,
        capture_output=True,
    )
    return proc, url


def test_mariadb_restart_answers_503_then_recovers_without_restarting_gunicorn(
    own_mariadb, fake_pingpp_server, pingpp_keys, tmp_path
):
    proc, url = own_mariadb
    fake_pingpp_server.reset()
    server = LiveServer(tmp_path, url, fake_pingpp_server.url, pingpp_keys[1], workers=4).start()
    try:
        pids = server.worker_pids()
        info, _ = paid_charge(server, fake_pingpp_server, pingpp_keys[0], expert_id=new_id())
        expert = server.user()
        reads = [
            ("/healthz", {}),
            (f"/internal/pays/{info['pay_id']}", {"X-Service-Key": "test-service-key"}),
            ("/rest/pay/balance", expert.headers),
            ("/rest/pay/checkInfo", expert.headers),
        ]
        # Every worker thread holds a pooled connection to the server that is about to go away.
        before = parallel(16, lambda i: server.get(reads[i % 4][0], headers=reads[i % 4][1]))
        assert [a.status for a in before] == [200] * 16, before

        proc.stop()
        try:
            during = parallel(16, lambda i: server.get(reads[i % 4][0], headers=reads[i % 4][1], timeout=15))
            writes = parallel(
                8,
                lambda i: (
                    server.internal_pay(timeout=15)
                    if i % 2
                    else server.deliver(pingpp_keys[0], event("charge.succeeded", {"id": "ch_x", "order_no": "x"}))
                ),
            )
            passwd = expert.post("/rest/pay/passwd", {"passwd": "secret"})
        finally:
            proc.start()

        for answer in during + writes + [passwd]:
            assert_envelope(answer, 999, 503)
            assert answer.seconds < 10, answer  # refused at once, not a hang
        assert all(a.body.get("db") == "down" for a in during[::4])

        # Back: the same workers reconnect on their own.
        deadline = time.monotonic() + 30
        while server.get("/healthz", timeout=5).status != 200:
            assert time.monotonic() < deadline, "gunicorn never reached the restarted database"
            time.sleep(0.2)
        after = parallel(16, lambda i: server.get(reads[i % 4][0], headers=reads[i % 4][1]))
        assert [a.status for a in after] == [200] * 16, after
        assert after[1].body["info"]["status"] == "paid"
        created = server.internal_pay()
        assert created.status == 200 and created.code == 900, created
        assert expert.post("/rest/pay/passwd", {"passwd": "secret"}).code == 900
        assert_no_worker_was_killed(server, pids)
        assert "unexpected error" not in server.log(), server.log()[-4000:]  # no 500 anywhere
    finally:
        server.stop()


# --- (b) Ping++ hanging ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hanging_live(database_url, fake_pingpp_server, pingpp_keys, tmp_path_factory):
    _migrated(database_url)
    server = LiveServer(
        tmp_path_factory.mktemp("gunicorn"),
        database_url,
        fake_pingpp_server.url,
        pingpp_keys[1],
        workers=4,
        PINGPP_TIMEOUT=GATEWAY_TIMEOUT,
    ).start()
    yield server
    server.stop()


def test_hanging_pingpp_answers_920_and_900_in_time_without_killing_workers(
    hanging_live, database, fake_pingpp, pingpp_keys
):
    server = hanging_live
    pids = server.worker_pids()
    payer = server.user()
    pending = server.internal_pay(userID=payer.id)
    assert pending.code == 900, pending

    # Several at once, so every worker has a thread stuck on Ping++ at the same time.
    fake_pingpp.hang_next(HANG, times=8)
    orders = [new_id() for _ in range(8)]
    answers = parallel(8, lambda i: server.internal_pay(o_id=orders[i], timeout=HANG))
    for answer in answers:
        assert_envelope(answer, 920, 502)
        assert answer.seconds < GATEWAY_TIMEOUT + 2, answer
    # Nothing half-written: no pay record for any of them.
    assert not Pay.select().where(Pay.o_id.in_(orders)).exists()

    fake_pingpp.hang_next(HANG)
    report = payer.post(f"/rest/pay/{pending.body['info']['pay_id']}/status", {"status": "success"})
    assert report.status == 200 and report.code == 900, report
    assert report.seconds < GATEWAY_TIMEOUT + 2, report
    status = payer.get(f"/rest/pay/{pending.body['info']['pay_id']}/status")
    assert status.body == {"code": 900, "status": "pending", "client_status": "success"}

    # The workers are all still there and answer at once.
    again = parallel(16, lambda i: server.get("/healthz"))
    assert [a.status for a in again] == [200] * 16
    assert_no_worker_was_killed(server, pids)
    assert_books_balance()
