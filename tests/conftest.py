"""Shared fixtures: each database test runs on SQLite and on a real MariaDB server.

`--db sqlite,mariadb` (or PAYAPI_TEST_DBS) picks the backends; MariaDB is started by
pytest-mysql from Debian's mariadb-server in a temporary data directory on 127.0.0.1.
"""

import base64
import functools
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import time_machine
import webtest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from peewee_migrate import Router
from pytest_mysql import factories

from payapi.__main__ import MIGRATIONS
from payapi.app import create_app
from payapi.contract.render import pay_info_json
from payapi.domain.ids import new_id
from payapi.http.auth import Authenticator
from payapi.infra.config import Settings
from payapi.infra.db import bind, db, open_database
from payapi.infra.models import ALL_MODELS, JournalEntry, Pay, Posting, Wallet, Withdrawal
from payapi.money import books
from payapi.money.withdrawals import run_payouts
from payapi.sandbox import Sandbox
from payapi.users.sms import FileSms
from payapi.wsgi import gateway_from
from tests import mariadb
from tests.tls import make_certificates

AUTH_SECRETS = ("test-auth-secret-0123456789abcdef0123456789", "test-auth-secret-before-rotation-0123456789")
SERVICE_KEY = "test-service-key"
MARIADB_DB = "payapi_test"  # not "test": MariaDB creates that one itself

# The server also speaks TLS, with a certificate for 127.0.0.1 from a CA the tests make
# (mariadb_tls), so the ssl-mode forms of a database URL are tried against a real server.
MARIADB_TLS_DIR = Path(tempfile.gettempdir()) / f"payapi-tests-mariadb-tls-{os.getpid()}"

_mariadb_server = factories.mysql_proc(
    host="127.0.0.1",
    # Root may start the server here; fsync-free settings keep the suite fast (the data is thrown away).
    params="--user=root --skip-log-bin --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 "
    "--innodb-lock-wait-timeout=10 --max-connections=500 "
    f"--ssl-ca={MARIADB_TLS_DIR}/ca.pem --ssl-cert={MARIADB_TLS_DIR}/server.pem --ssl-key={MARIADB_TLS_DIR}/server-key.pem",
)


@pytest.fixture(scope="session")
def mariadb_tls():
    """The certificates the MariaDB server starts with; `ca.pem` is what a VERIFY ssl-mode trusts."""
    directory = make_certificates(MARIADB_TLS_DIR)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb_proc(mariadb_tls, request):
    return request.getfixturevalue("_mariadb_server")


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
def mariadb_url(mariadb_proc):
    return mariadb.create_database(mariadb_proc, MARIADB_DB)


_databases = {}


@pytest.fixture(scope="session")
def database_url(request, db_backend, tmp_path_factory):
    if db_backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'payapi.db'}"
    if db_backend == "mariadb":
        return request.getfixturevalue("mariadb_url")
    raise pytest.UsageError(f"unknown database backend {db_backend!r}")


def _migrated(url):
    """One database per URL for the session, with the real migrations applied."""
    if url not in _databases:
        database = open_database(url)
        bind(database)
        Router(database, migrate_dir=MIGRATIONS).run()
        _databases[url] = database
    return _databases[url]


@pytest.fixture(scope="module")
def live(request, database_url, fake_pingpp_server, pingpp_keys, tmp_path_factory):
    """The test module's own real gunicorn on the test database, as tests/live_server.py starts it;
    LIVE_SERVER in the module gives its options (workers, worker_connections, environment)."""
    from tests.live_server import LiveServer

    _migrated(database_url)  # the real migrations, before any worker opens the database
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


def assert_envelope(answer, code, status):
    """answer (a webtest response, or a live server's Answer) is the contract's envelope: this code
    and HTTP status, a message on failures, nothing of a traceback or the driver. -> its body."""
    http_status = getattr(answer, "status_int", None) or answer.status
    body = answer.json if hasattr(answer, "json") else answer.body
    assert http_status == status and isinstance(body, dict) and body.get("code") == code, (http_status, answer.text[:500])
    if hasattr(answer, "content_type"):
        assert answer.content_type == "application/json"
    if code != 900:
        assert isinstance(body.get("msg"), str) and body["msg"], body
    assert "Traceback" not in answer.text and "pymysql" not in answer.text.lower(), answer.text[:500]
    return body


def assert_books_balance():
    """The books' invariant: every entry balanced, the whole book balanced, every wallet equal to its postings."""
    assert books.check() == [], books.check()


def assert_pay_info_current():
    """The fast path's guard: every pay's stored info is what its columns make now."""
    stale = [p.pay_id for p in Pay.select() if p.info is None or json.loads(p.info) != json.loads(pay_info_json(p))]
    assert not stale, f"Pay.info is stale for {stale}"


@pytest.fixture
def database(database_url):
    bind(_migrated(database_url))
    db.connect(reuse_if_open=True)
    yield db
    try:
        assert_books_balance()
        assert_pay_info_current()
    finally:
        for model in ALL_MODELS:
            model.delete().execute()


@pytest.fixture(scope="session")
def pingpp_keys(fake_pingpp_server):
    """The key pair Ping++ signs webhooks with: the sandbox's; the service gets only the public half."""
    return fake_pingpp_server.private_key, fake_pingpp_server.public_key_path


@pytest.fixture(scope="session")
def fake_pingpp_server(tmp_path_factory):
    """The Ping++ sandbox (payapi.sandbox) on a free port, for the whole session; webhooks are sent by
    the tests themselves (no webhook URL: events are only recorded)."""
    public_key = tmp_path_factory.mktemp("pingpp") / "pingpp_public.pem"
    server = Sandbox(public_key_path=str(public_key)).start()
    yield server
    server.stop()


@pytest.fixture
def fake_pingpp(fake_pingpp_server):
    fake_pingpp_server.reset()
    yield fake_pingpp_server
    fake_pingpp_server.reset()


@pytest.fixture
def settings(database_url, fake_pingpp, pingpp_keys, tmp_path):
    return Settings(
        database_url=database_url,
        auth_secrets=AUTH_SECRETS,
        service_key=SERVICE_KEY,
        pingpp_api_key="sk_test_payapi",
        pingpp_app_id="app_test_payapi",
        pingpp_api_base=fake_pingpp.url,
        pingpp_public_key_path=pingpp_keys[1],
        pingpp_timeout=1.0,
        sms_backend="file",
        sms_file=str(tmp_path / "sms.jsonl"),
        bcrypt_rounds=4,
        settlement_hold_seconds=0,  # tests of the hold set their own
        password_rate_burst=1000,  # tests of the rate set their own (tests/test_load_shedding.py)
    )


def process_env(settings, **extra):
    """The environment a payapi process (command, worker, gunicorn) gets for these settings: production mode, complete."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYAPI_", "PINGPP_", "JAWSDB_", "CLEARDB_"))}
    env.update(
        PAYAPI_ENV="production",
        DATABASE_URL=settings.database_url,
        AUTH_SECRET=",".join(settings.auth_secrets),
        SERVICE_KEY=settings.service_key,
        PINGPP_API_KEY=settings.pingpp_api_key,
        PINGPP_APP_ID=settings.pingpp_app_id,
        PINGPP_API_BASE=settings.pingpp_api_base,
        PINGPP_PUBLIC_KEY_PATH=settings.pingpp_public_key_path,
        PINGPP_TIMEOUT=str(settings.pingpp_timeout),
        SMS_BACKEND=settings.sms_backend,
        SMS_FILE=settings.sms_file,
        BCRYPT_ROUNDS=str(settings.bcrypt_rounds),
        PASSWORD_RATE_BURST=str(settings.password_rate_burst),
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def gateway(settings):
    return gateway_from(settings)


@pytest.fixture
def app(database, settings, gateway):
    return webtest.TestApp(create_app(settings, gateway, FileSms(settings.sms_file)))


class Scripted:
    """The real gateway (speaking to the sandbox), except the calls a test scripts: scripts[name](real
    call, *args) runs instead, e.g. makes the call at Ping++ and then loses its answer, or lets
    something else happen at Ping++ while the call is in flight."""

    def __init__(self, real, **scripts):
        self._real, self._scripts = real, scripts

    def __getattr__(self, name):
        call = getattr(self._real, name)
        script = self._scripts.get(name)
        return call if script is None else functools.partial(script, call)


@pytest.fixture
def app_with(database, settings):
    """The app with another gateway (a Scripted one)."""

    def make(gateway):
        return webtest.TestApp(create_app(settings, gateway, FileSms(settings.sms_file)))

    return make


class User:
    """A phone user: every call carries the seed's headers and this user's token."""

    def __init__(self, app, settings, phone="13800138000", user_id=None):
        self.app, self.settings = app, settings
        self.id = user_id or new_id()
        self.phone = phone
        self.token = Authenticator(settings.auth_secrets).mint(self.id, phone=phone)

    def remint(self, phone="keep", ttl=3600):
        """A fresh token for the same user (after time travel), optionally with another or no phone."""
        if phone != "keep":
            self.phone = phone
        self.token = Authenticator(self.settings.auth_secrets).mint(self.id, phone=self.phone, ttl=ttl)
        return self

    @property
    def headers(self):
        return {"auth": self.token, "client": "1.2.3.4", "platform": "android", "channel": "TencentAPP"}

    def get(self, path, **params):
        return self.app.get(path, params=params or None, headers=self.headers, expect_errors=True)

    def post(self, path, body=None, raw=None):
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        return self.app.post(path, data, headers=self.headers, content_type="application/json", expect_errors=True)

    def last_sms_code(self):
        with open(self.settings.sms_file, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        return [m for m in lines if m["phone"] == self.phone][-1]["code"]


@pytest.fixture
def make_user(app, settings):
    def make(phone="13800138000", user_id=None):
        return User(app, settings, phone=phone, user_id=user_id)

    return make


@pytest.fixture
def user(make_user):
    return make_user()


def new_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def sign(private_key, raw):
    """Ping++'s webhook signature: RSA-SHA256, PKCS#1 v1.5, base64."""
    return base64.b64encode(private_key.sign(raw, padding.PKCS1v15(), hashes.SHA256())).decode()


def event(event_type, obj, event_id=None):
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "livemode": False,
        "type": event_type,
        "created": 1466652398,
        "data": {"object": obj},
    }


@pytest.fixture
def send_event(app, pingpp_keys):
    """POST a signed Ping++ event to the webhook; returns the webtest response."""

    def send(event_type, obj, event_id=None, body=None):
        raw = json.dumps(body if body is not None else event(event_type, obj, event_id)).encode()
        return app.post(
            "/rest/pay/webhook",
            raw,
            headers={"X-Pingplusplus-Signature": sign(pingpp_keys[0], raw)},
            content_type="application/json",
            expect_errors=True,
        )

    return send


def pay_request(**fields):
    """A valid POST /internal/pays body for a new order; fields override it."""
    return {
        "type": "order",
        "o_id": new_id(),
        "userID": new_id(),
        "expert_id": new_id(),
        "amount": 12356,
        "channel": "alipay",
        "subject": "支付预约订单_2016-06-23",
        **fields,
    }


def ledger_of(user_id):
    """The expert's side of the books as (kind, reference, amount), oldest first: each entry's net
    change of the expert's two accounts (credits positive), entries that touch them only."""
    accounts = (books.expert(user_id, books.PENDING), books.expert(user_id, books.AVAILABLE))
    rows = (
        Posting.select(JournalEntry.kind, JournalEntry.reference, Posting.credit, Posting.debit, Posting.account)
        .join(JournalEntry, on=(Posting.entry_id == JournalEntry.entry_id))
        .where(Posting.account.in_(accounts))
        .order_by(JournalEntry.entry_id, Posting.id)
        .tuples()
    )
    moved = {}
    for kind, reference, credit, debit, _ in rows:
        moved[(kind, reference)] = moved.get((kind, reference), 0) + credit - debit
    # A release moves money between the expert's own accounts: no change to what they are owed.
    return [(kind, reference, amount) for (kind, reference), amount in moved.items() if kind != "release"]


def balance_of(user_id):
    """The expert's balance (pending + available), or None when the user has no wallet."""
    wallet = Wallet.get_or_none(Wallet.user_id == user_id)
    return None if wallet is None else wallet.balance


def money_moved():
    """Whether any money movement was booked at all."""
    return JournalEntry.select().exists()


@pytest.fixture
def order_service(app):
    """The app's order service: creates pays through /internal/pays (of another app with via=)."""

    def create(via=None, **fields):
        body = pay_request(**{"desc": "", **fields})
        body = {k: v for k, v in body.items() if v is not None}
        return (via or app).post(
            "/internal/pays",
            json.dumps(body).encode(),
            headers={"X-Service-Key": SERVICE_KEY, "client": "1.2.3.4"},
            content_type="application/json",
            expect_errors=True,
        )

    return create


@pytest.fixture
def pay_expert(order_service, fake_pingpp, send_event):
    """Credit an expert the honest way: a pay for them, paid at Ping++, its signed charge.succeeded."""

    def pay(expert_id, money):
        created = order_service(expert_id=expert_id, amount=money)
        assert created.json["code"] == 900, created.json
        charge = fake_pingpp.mark_paid(created.json["info"]["charge"]["id"])
        assert send_event("charge.succeeded", charge).json["result"] == "applied"
        return created.json["info"]

    return pay


# --- operators -------------------------------------------------------------------------------------

OPERATOR_PASSWORD = "correct horse battery staple"


def basic(name, password=OPERATOR_PASSWORD):
    """An HTTP Basic Authorization header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


@pytest.fixture
def make_operator(database, settings):
    """An operator account (bcrypt at the tests' cost); -> its Basic headers."""
    from payapi.backoffice import operators

    def make(name="alice", password=OPERATOR_PASSWORD):
        operators.add(name, password, settings.bcrypt_rounds)
        return basic(name, password)

    return make


# --- experts and withdrawals, set up through the public routes ------------------------------------

PASSWD = "e10adc3949ba59abbe56e057f20f883e"  # the app sends its own hash of the pay password
ACCOUNT = {"type": "alipay", "id": "expert@example.com", "name": "张三"}


def set_passwd(user, passwd=PASSWD):
    response = user.post("/rest/pay/passwd", {"passwd": passwd})
    assert response.json["code"] == 900, response.json


def set_account(user, account=ACCOUNT):
    """An SMS code to the token's phone, then the account; at most one code a minute per user."""
    sent = user.post("/rest/pay/smscode", {"purpose": "withdrawInfo"})
    assert sent.json["code"] == 900, sent.json
    response = user.post("/rest/pay/withdrawInfo", {"smscode": user.last_sms_code(), **account})
    assert response.json["code"] == 900, response.json


def set_up_expert(user, passwd=PASSWD, account=ACCOUNT):
    set_passwd(user, passwd)
    set_account(user, account)
    return user


def refresh_token(user):
    """A fresh token after travelling in time (tokens live an hour)."""
    return user.remint()


def withdraw(user, amount, passwd=PASSWD):
    return user.post("/rest/pay/withdraw", {"passwd": passwd, "amount": amount})


def balance(user):
    response = user.get("/rest/pay/balance")
    assert response.json["code"] == 900, response.json
    return response.json["info"]["balance"]


def withdrawal(withdraw_id):
    return Withdrawal.get(Withdrawal.withdraw_id == withdraw_id)


def withdrawals_of(user):
    return list(Withdrawal.select().where(Withdrawal.user_id == user.id).order_by(Withdrawal.created_at))


def transfer_object(withdraw_id, amount, status="failed", transfer_id=None, currency="cny"):
    """A Ping++ transfer as its webhook carries it, for a withdrawal that never reached the fake."""
    return {
        "id": transfer_id or "tr_" + secrets.token_hex(12),
        "object": "transfer",
        "app": "app_test_payapi",
        "type": "b2c",
        "channel": "alipay",
        "order_no": withdraw_id,
        "amount": amount,
        "currency": currency,
        "status": status,
        "recipient": ACCOUNT["id"],
        "extra": {"recipient_name": ACCOUNT["name"]},
    }


# What happens to a withdrawal: an expert with money, their pending withdrawal, Ping++'s transfer.

@pytest.fixture
def expert(make_user, pay_expert):
    """An expert with a pay password, an account and 10,000 fen available."""
    user = set_up_expert(make_user())
    pay_expert(user.id, 10_000)
    return user


@pytest.fixture
def pending(expert):
    """The id of the expert's pending withdrawal of 3,000 fen."""
    response = withdraw(expert, 3_000)
    assert response.json["code"] == 900, response.json
    return response.json["withdraw_id"]


@pytest.fixture
def processing(pending, gateway, fake_pingpp):
    """(withdraw_id, transfer_id) of a withdrawal Ping++ accepted."""
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    (transfer_id,) = fake_pingpp.transfers
    return pending, transfer_id
