"""Database URLs exactly as Heroku's add-ons write them, against the test MariaDB (which speaks TLS).

The user here has a name and a password that only work percent-encoded; every form must log
in as that user. /healthz says why the database is unreachable, once per cause, never the password.
"""

import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import urllib.parse

import peewee
import pymysql
import pytest
import webtest

from payapi.app import create_app
from payapi.infra.config import Settings
from payapi.infra.db import DatabaseUrlError, bind, db, open_database
from payapi.users.sms import FileSms
from payapi.wsgi import gateway_from
from tests.support.config import AUTH_SECRETS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER = "pay@pi"
PASSWORD = "p@ss/w:rd?#%&+ 密"  # every character a URL must encode, and one PyMySQL would send as latin-1
DATABASE = "payapi_urls"


@pytest.fixture(scope="module")
def server(request):
    if "mariadb" not in request.config.getoption("--db"):
        pytest.skip("--db does not include mariadb")
    proc = request.getfixturevalue("mariadb_proc")
    root = pymysql.connect(unix_socket=proc.unixsocket, user="root", charset="utf8mb4")
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4")
        cur.execute("DROP USER IF EXISTS %s@'127.0.0.1'", (USER,))
        cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (USER, PASSWORD))
        cur.execute(f"GRANT ALL ON {DATABASE}.* TO %s@'127.0.0.1'", (USER,))
    root.close()
    return proc


def url(server, scheme="mysql", host="127.0.0.1", query="", password=PASSWORD):
    quote = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
    return f"{scheme}://{quote(USER)}:{quote(password)}@{host}:{server.port}/{DATABASE}" + (
        f"?{query}" if query else ""
    )


def logged_in_as(database_url):
    """(CURRENT_USER(), the TLS cipher or '') of a real connection made from the URL."""
    database = open_database(database_url)
    database.connect()
    try:
        user = database.execute_sql("SELECT CURRENT_USER()").fetchone()[0]
        cipher = database.execute_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").fetchone()[1]
        return user, cipher
    finally:
        database.close()


@pytest.mark.parametrize(
    "scheme, query",
    [
        ("mysql", ""),  # JawsDB
        ("mysql", "reconnect=true"),  # ClearDB
        ("mysql2", "reconnect=true"),  # ClearDB for Rails
        ("mysql+pymysql", ""),  # SQLAlchemy style
        ("mysql", "ssl-mode=REQUIRED"),
        ("mysql", "ssl-mode=REQUIRED&reconnect=false"),
    ],
)
def test_a_heroku_style_url_with_a_percent_encoded_password_connects(server, scheme, query):
    user, _ = logged_in_as(url(server, scheme, query=query))
    assert user == f"{USER}@127.0.0.1"


@pytest.mark.parametrize("variable", ["DATABASE_URL", "JAWSDB_URL", "CLEARDB_DATABASE_URL"])
def test_each_add_on_variable_is_read_and_connects(server, variable):
    settings = Settings.from_env({variable: url(server), "PAYAPI_ENV": "production"})
    assert settings.database_url_source == variable
    assert logged_in_as(settings.database_url)[0] == f"{USER}@127.0.0.1"


def test_database_url_wins_over_an_add_on_variable():
    settings = Settings.from_env({"DATABASE_URL": "sqlite:///a.db", "JAWSDB_URL": "mysql://u:p@h/db"})
    assert (settings.database_url, settings.database_url_source) == ("sqlite:///a.db", "DATABASE_URL")


@pytest.mark.parametrize(
    "host, query, tls",
    [
        ("127.0.0.1", "ssl-mode=DISABLED", False),
        ("127.0.0.1", "", True),  # PREFERRED: TLS because the server offers it
        ("127.0.0.1", "ssl-mode=PREFERRED", True),
        ("127.0.0.1", "ssl-mode=REQUIRED", True),
        ("localhost", "ssl-mode=REQUIRED", True),  # not verified: any name will do
        ("127.0.0.1", "ssl-mode=VERIFY_CA&ssl-ca={ca}", True),
        ("localhost", "ssl-mode=VERIFY_CA&ssl-ca={ca}", True),  # the CA is checked, the name is not
        ("127.0.0.1", "ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}", True),
        ("127.0.0.1", "ssl_mode=verify_identity&ssl_ca={ca}", True),  # the other spelling
    ],
)
def test_ssl_modes_connect_as_mysql_clients_define_them(server, mariadb_tls, host, query, tls):
    user, cipher = logged_in_as(url(server, host=host, query=query.format(ca=mariadb_tls / "ca.pem")))
    assert user == f"{USER}@127.0.0.1"
    assert bool(cipher) is tls, cipher


@pytest.mark.parametrize(
    "host, query, why",
    [
        # certifi's bundle does not hold the test CA
        ("127.0.0.1", "ssl-mode=VERIFY_CA", "CERTIFICATE_VERIFY_FAILED"),
        # the certificate names 127.0.0.1 only
        ("localhost", "ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}", "match"),
    ],
)
def test_verifying_ssl_modes_refuse_a_certificate_they_cannot_trust(server, mariadb_tls, host, query, why):
    with pytest.raises(peewee.OperationalError) as refused:
        logged_in_as(url(server, host=host, query=query.format(ca=mariadb_tls / "ca.pem")))
    assert why in str(refused.value)


class ServerWithoutTls:
    """Sends a MySQL 5.7 handshake that offers no TLS, then hangs up: what a plain server looks like."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        capabilities = 0x0008_8200  # PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH, and no SSL (0x800)
        payload = (
            b"\x0a5.7.99-plain\0"
            + struct.pack("<I", 1)
            + b"12345678\0"
            + struct.pack("<HBHHB", capabilities & 0xFFFF, 45, 2, capabilities >> 16, 21)
            + b"\0" * 10
            + b"123456789012\0"
            + b"mysql_native_password\0"
        )
        with self.listener:
            connection, _ = self.listener.accept()
            with connection:
                connection.sendall(len(payload).to_bytes(3, "little") + b"\0" + payload)
                connection.recv(1024)


def test_ssl_mode_required_refuses_a_server_without_tls():
    plain = ServerWithoutTls()
    with pytest.raises(peewee.OperationalError) as refused:
        open_database(f"mysql://u:p@127.0.0.1:{plain.port}/db?ssl-mode=REQUIRED").connect()
    assert "SSL is required" in str(refused.value)


@pytest.mark.parametrize(
    "bad, says",
    [
        ("mysql://u:p@h:3306/db?timeout=5", "unknown parameter(s) timeout"),
        ("mysql://u:p@h/db?sslmode=require", "unknown parameter(s) sslmode"),
        ("mysql://u:p@h/db?ssl-mode=SOMETIMES", "ssl-mode must be one of"),
        ("mysql://u:p@h/db?reconnect=maybe", "reconnect must be true or false"),
        ("mysql://u:p@h/db?ssl-mode=REQUIRED&ssl-ca=/ca.pem", "ssl-ca is only used with"),
        ("mysql://u:p@h/db?ssl-mode=VERIFY_CA&ssl-ca=/nowhere/ca.pem", "does not exist"),
        ("mysql://u:p@h:port/db", "port that is not a number"),
        ("mysql://u:p@h/", "needs a host and a database name"),
        ("postgres://u:p@h/db", "scheme 'postgres' is not supported"),
        ("sqlite:///payapi.infra.db?timeout=5", "takes no parameters"),
    ],
)
def test_a_url_payapi_cannot_use_is_a_clear_error(bad, says):
    with pytest.raises(DatabaseUrlError) as error:
        open_database(bad)
    assert says in str(error.value)
    assert ":p@" not in str(error.value)


def test_migrate_refuses_an_unknown_url_parameter_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("JAWSDB_URL", "CLEARDB_DATABASE_URL", "PAYAPI_ENV")}
    env["DATABASE_URL"] = "mysql://u:secret-pw@127.0.0.1:1/db?reconnect=true&timeout=5"
    done = subprocess.run(
        [sys.executable, "-m", "payapi", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and done.stdout == ""
    (line,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert line["level"] == "CRITICAL" and "unknown parameter(s) timeout" in line["msg"]
    assert "secret-pw" not in done.stderr


# --- /healthz says why ----------------------------------------------------------------------------


@pytest.fixture
def health_app(tmp_path):
    """A webtest app whose database is chosen by the test; the previous binding comes back after."""
    before = db.obj

    def make(database_url):
        settings = Settings(
            database_url=database_url, auth_secrets=AUTH_SECRETS, sms_backend="file", sms_file=str(tmp_path / "sms")
        )
        bind(open_database(database_url))
        return webtest.TestApp(create_app(settings, gateway_from(settings), FileSms(settings.sms_file)))

    yield make
    if not db.is_closed():
        db.close()
    db.initialize(before)


def unreachable_lines(caplog):
    return [r for r in caplog.records if r.name == "payapi.resources" and "database unreachable" in r.getMessage()]


def test_healthz_logs_why_the_database_is_unreachable_once_per_cause_without_the_password(server, health_app, caplog):
    caplog.set_level(logging.INFO, logger="payapi.resources")
    wrong = "wr0ng/p@ss"
    app = health_app(url(server, password=wrong))
    for _ in range(3):
        answer = app.get("/healthz", expect_errors=True)
        assert answer.status_int == 503 and answer.json["code"] == 999
    (line,) = unreachable_lines(caplog)
    message = line.getMessage()
    assert "OperationalError 1045" in message and "Access denied for user 'pay@pi'" in message, message
    assert wrong not in caplog.text and urllib.parse.quote(wrong, safe="") not in caplog.text

    # Another cause is another line; the database answering again is said once too.
    caplog.clear()
    app = health_app(f"mysql://x:y@127.0.0.1:{server.port + 1}/{DATABASE}")  # nothing listens there
    for _ in range(2):
        assert app.get("/healthz", expect_errors=True).status_int == 503
    (line,) = unreachable_lines(caplog)
    assert "OperationalError 2003" in line.getMessage()


def test_healthz_says_when_the_database_answers_again(server, health_app, caplog):
    caplog.set_level(logging.INFO, logger="payapi.resources")
    app = health_app(url(server))
    # The same resource first fails (its database is swapped for an unreachable one), then answers.
    good = db.obj
    db.initialize(open_database(f"mysql://x:y@127.0.0.1:{server.port + 1}/{DATABASE}"))
    assert app.get("/healthz", expect_errors=True).status_int == 503
    db.initialize(good)
    assert app.get("/healthz").json == {"code": 900, "db": "ok"}
    assert app.get("/healthz").json == {"code": 900, "db": "ok"}
    said = [r.getMessage() for r in caplog.records if r.name == "payapi.resources"]
    assert len(said) == 2 and said[1] == "database reachable again", said
