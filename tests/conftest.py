"""The fixtures every tier shares; the helpers they use are plain functions in tests/support/.

Each database test runs on SQLite and on a real MariaDB server: `--db sqlite,mariadb` (or
PAYAPI_TEST_DBS) picks the backends; MariaDB is started by pytest-mysql from Debian's mariadb-server
in a temporary data directory on 127.0.0.1.
"""

import os
import shutil

import pytest
import webtest

from payapi.app import create_app
from payapi.infra.db import bind, db
from payapi.sandbox import Sandbox
from payapi.users.sms import FileSms
from payapi.wsgi import gateway_from
from tests.support import databases, mariadb
from tests.support.config import settings_for
from tests.support.databases import mariadb_server as _mariadb_server  # noqa: F401  (pytest-mysql's fixture)
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
        databases.assert_statements_add_up()
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


def pytest_collection_modifyitems(config, items):
    """The tier a test's folder names is its marker: `-m "not live and not browser"` is the quick loop."""
    tests = config.rootpath / "tests"
    for item in items:
        for tier in ("live", "browser"):
            if (tests / tier) in item.path.parents:
                item.add_marker(tier)
