"""The fixtures every tier shares; the helpers they use are plain functions in tests/support/.

Each database test runs on SQLite and on a real MariaDB server: `--db sqlite,mariadb` (or
PAYAPI_TEST_DBS) picks the backends; MariaDB is started by pytest-mysql from Debian's mariadb-server
in a temporary data directory on 127.0.0.1.
"""

import os
import shutil
import time

import pytest
import time_machine
import webtest

from payapi.app import create_app
from payapi.db import bind, db
from payapi.sandbox import Sandbox
from payapi.sms import FileSms
from payapi.withdrawals import run_payouts
from payapi.wsgi import gateway_from
from tests.support import databases, mariadb, scenarios
from tests.support.config import settings_for
from tests.support.databases import mariadb_server as _mariadb_server  # noqa: F401  (pytest-mysql's fixture)
from tests.support.operators import basic, OPERATOR_PASSWORD
from tests.support.tls import make_certificates


def pytest_addoption(parser):
    parser.addoption(
        "--db",
        default=os.environ.get("PAYAPI_TEST_DBS", "sqlite,mariadb"),
        help="comma-separated database backends for database tests: sqlite, mariadb",
    )


def pytest_generate_tests(metafunc):
    if "db_backend" in metafunc.fixturenames:
        backends = [b.strip() for b in metafunc.config.getoption("--db").split(",") if b.strip()]
        only = metafunc.definition.get_closest_marker("only_db")
        if only:  # a test about one backend's own behaviour (e.g. a server dropping connections)
            backends = [b for b in backends if b in only.args]
        metafunc.parametrize("db_backend", backends, scope="session")


@pytest.fixture(scope="session")
def mariadb_tls():
    """The certificates the MariaDB server starts with; `ca.pem` is what a VERIFY ssl-mode trusts."""
    directory = make_certificates(databases.MARIADB_TLS_DIR)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb_proc(mariadb_tls, request):
    return request.getfixturevalue("_mariadb_server")


@pytest.fixture(scope="session")
def mariadb_url(mariadb_proc):
    return mariadb.create_database(mariadb_proc, databases.MARIADB_DB)


@pytest.fixture(scope="session")
def database_url(request, db_backend, tmp_path_factory):
    if db_backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'payapi.db'}"
    if db_backend == "mariadb":
        return request.getfixturevalue("mariadb_url")
    raise pytest.UsageError(f"unknown database backend {db_backend!r}")


@pytest.fixture
def database(database_url):
    """The test database, migrated and bound; afterwards the books balance and it is emptied."""
    bind(databases.migrated(database_url))
    db.connect(reuse_if_open=True)
    yield db
    try:
        databases.assert_books_balance()
        databases.assert_pay_info_current()
    finally:
        databases.empty()


@pytest.fixture(scope="session")
def fake_pingpp_server(tmp_path_factory):
    """The Ping++ sandbox (payapi.sandbox) on a free port, for the whole session; webhooks are sent by
    the tests themselves (no webhook URL: events are only recorded)."""
    public_key = tmp_path_factory.mktemp("pingpp") / "pingpp_public.pem"
    server = Sandbox(public_key_path=str(public_key)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pingpp_keys(fake_pingpp_server):
    """The key pair Ping++ signs webhooks with: the sandbox's; the service gets only the public half."""
    return fake_pingpp_server.private_key, fake_pingpp_server.public_key_path


@pytest.fixture
def fake_pingpp(fake_pingpp_server):
    fake_pingpp_server.reset()
    yield fake_pingpp_server
    fake_pingpp_server.reset()


@pytest.fixture
def settings(database_url, fake_pingpp, pingpp_keys, tmp_path):
    return settings_for(database_url, fake_pingpp.url, pingpp_keys[1], str(tmp_path / "sms.jsonl"))


@pytest.fixture
def gateway(settings):
    return gateway_from(settings)


@pytest.fixture
def app(database, settings, gateway):
    return webtest.TestApp(create_app(settings, gateway, FileSms(settings.sms_file)))


@pytest.fixture
def app_with(database, settings):
    """The app with another gateway (a Scripted one)."""
    return lambda gateway: webtest.TestApp(create_app(settings, gateway, FileSms(settings.sms_file)))


@pytest.fixture
def make_user(app, settings):
    return lambda phone="13800138000", user_id=None: scenarios.User(app, settings, phone=phone, user_id=user_id)


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def send_event(app, pingpp_keys):
    """POST a signed Ping++ event to the webhook: send(event_type, obj, event_id=None, body=None)."""
    return lambda *args, **kwargs: scenarios.send_event(app, pingpp_keys[0], *args, **kwargs)


@pytest.fixture
def order_service(app):
    """The app's order service: creates pays through /internal/pays (of another app with via=)."""
    return lambda via=None, **fields: scenarios.create_pay(via or app, **fields)


@pytest.fixture
def pay_expert(app, fake_pingpp, pingpp_keys):
    """Credit an expert: pay(expert_id, money) -> the pay's info."""
    return lambda expert_id, money: scenarios.pay_expert(app, fake_pingpp, pingpp_keys[0], expert_id, money)


@pytest.fixture
def make_operator(database, settings):
    """An operator account (bcrypt at the tests' cost); -> its Basic headers."""
    from payapi import operators

    def make(name="alice", password=OPERATOR_PASSWORD):
        operators.add(name, password, settings.bcrypt_rounds)
        return basic(name, password)

    return make


# What happens to a withdrawal: an expert with money, their pending withdrawal, Ping++'s transfer.

@pytest.fixture
def expert(make_user, pay_expert):
    """An expert with a pay password, an account and 10,000 fen available."""
    user = scenarios.set_up_expert(make_user())
    pay_expert(user.id, 10_000)
    return user


@pytest.fixture
def pending(expert):
    """The id of the expert's pending withdrawal of 3,000 fen."""
    response = scenarios.withdraw(expert, 3_000)
    assert response.json["code"] == 900, response.json
    return response.json["withdraw_id"]


@pytest.fixture
def processing(pending, gateway, fake_pingpp):
    """(withdraw_id, transfer_id) of a withdrawal Ping++ accepted."""
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    (transfer_id,) = fake_pingpp.transfers
    return pending, transfer_id


@pytest.fixture(scope="module")
def live(request, database_url, fake_pingpp_server, pingpp_keys, tmp_path_factory):
    """The test module's own real gunicorn on the test database, as tests/support/live_server.py starts
    it; LIVE_SERVER in the module gives its options (workers, worker_connections, environment)."""
    from tests.support.live_server import LiveServer

    databases.migrated(database_url)  # the real migrations, before any worker opens the database
    options = getattr(request.module, "LIVE_SERVER", {})
    server = LiveServer(tmp_path_factory.mktemp("gunicorn"), database_url, fake_pingpp_server.url, pingpp_keys[1],
                        **options)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(live, database, fake_pingpp):
    """The running gunicorn, a clean database bound in this process too, a reset Ping++ sandbox;
    afterwards, nothing it logged was a traceback."""
    yield live
    assert "Traceback" not in live.log(), live.log()[-4000:]


@pytest.fixture
def clock():
    """Time stopped where the test starts (time-machine): .shift(seconds) and .move_to(when) move it."""
    with time_machine.travel(time.time(), tick=False) as traveller:
        yield traveller
