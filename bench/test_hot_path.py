"""`GET /rest/pay/{pay_id}` in-process, whole and step by step: the "in-process" table of docs/performance.md.

    pytest bench/test_hot_path.py [--db sqlite,mariadb]

pytest-benchmark times each; not part of the default `pytest` run (pytest.ini's testpaths is
tests). Each group sets what a naive version does on every request beside what payapi does
instead, on each database; the pay is made and paid the way the tests make one.
"""

import json

import falcon
import jwt
import pytest
from falcon import testing

from bench import bare_app
from payapi.domain.ids import new_id
from payapi.http.auth import Authenticator
from payapi.http.resources.common import with_info
from payapi.infra.db import db, ensure_connection
from payapi.infra.models import Pay
from payapi.money import payments
from tests.support.config import AUTH_SECRETS


@pytest.fixture
def pay_id(order_service, user, fake_pingpp, send_event):
    """A pay the user made and paid, stored as every pay is (its answer's JSON kept with it)."""
    created = order_service(userID=user.id).json["info"]
    assert send_event("charge.succeeded", fake_pingpp.mark_paid(created["charge"]["id"])).json["result"] == "applied"
    return created["pay_id"]


def wsgi_call(app, path, headers=None):
    """What gunicorn's worker does with a request that has arrived: one WSGI call, the body joined."""
    environ = testing.create_environ(path, headers=headers)
    statuses = []

    def call():
        body = b"".join(app(dict(environ), lambda status, headers, exc_info=None: statuses.append(status)))
        return statuses.pop(), body

    return call


# --- the whole request ------------------------------------------------------------------------------


def test_bare_falcon_request(benchmark):
    benchmark.group = "whole request"
    status, body = benchmark(wsgi_call(bare_app.app, "/rest/pay/" + "0" * 24))
    assert status == "200 OK" and json.loads(body) == {"code": 900}


def test_get_pay_request(benchmark, app, user, pay_id):
    benchmark.group = "whole request"
    status, body = benchmark(wsgi_call(app.app, f"/rest/pay/{pay_id}", user.headers))
    assert status == "200 OK" and json.loads(body)["info"]["pay_id"] == pay_id


# --- the token -------------------------------------------------------------------------------------

USER_ID = new_id()
TOKEN = Authenticator(AUTH_SECRETS).mint(USER_ID, phone="13800138000")


def test_token_pyjwt_decode_every_request(benchmark):
    benchmark.group = "token"
    assert benchmark(jwt.decode, TOKEN, AUTH_SECRETS[0], algorithms=["HS256"])["sub"] == USER_ID


def test_token_verified_once_per_process(benchmark):
    """payapi: Authenticator keeps the tokens it verified (their expiry is checked every time)."""
    benchmark.group = "token"
    authenticator = Authenticator(AUTH_SECRETS)
    assert benchmark(authenticator.authenticate, TOKEN)[0] == USER_ID


# --- reading the pay -------------------------------------------------------------------------------


def test_pay_peewee_builds_the_select(benchmark, database, pay_id, db_backend):
    benchmark.group = f"pay read ({db_backend})"
    sql, params = benchmark(lambda: Pay.select().where(Pay.pay_id == pay_id).sql())
    assert params == [pay_id]


def test_pay_peewee_query_every_column(benchmark, database, pay_id, db_backend):
    benchmark.group = f"pay read ({db_backend})"
    assert benchmark(lambda: Pay.get_or_none(Pay.pay_id == pay_id)).pay_id == pay_id


def test_pay_sql_built_once_every_column(benchmark, database, pay_id, db_backend):
    benchmark.group = f"pay read ({db_backend})"
    sql, params = Pay.select().where(Pay.pay_id == pay_id).sql()
    assert benchmark(lambda: db.execute_sql(sql, params).fetchone())[0] == pay_id


def test_pay_sql_built_once_two_columns(benchmark, database, user, pay_id, db_backend):
    """payapi: db.RowByKey, the user and the stored answer JSON."""
    benchmark.group = f"pay read ({db_backend})"
    assert json.loads(benchmark(payments.info_of, pay_id, user.id))["pay_id"] == pay_id


# --- the answer ------------------------------------------------------------------------------------


def test_answer_decode_and_encode_the_stored_charge(benchmark, database, user, pay_id):
    benchmark.group = "answer"
    info = payments.info_of(pay_id, user.id)
    assert benchmark(lambda: json.dumps({"code": 900, "info": json.loads(info)}, ensure_ascii=False))


def test_answer_sends_the_stored_json_as_it_is(benchmark, database, user, pay_id):
    benchmark.group = "answer"
    info, resp = payments.info_of(pay_id, user.id), falcon.Response()
    benchmark(with_info, resp, info)
    assert json.loads(resp.text)["info"]["pay_id"] == pay_id


# --- the connection --------------------------------------------------------------------------------


def test_connection_opened_every_request(benchmark, database, db_backend):
    """SQLite: the file opened and its pragmas set; MariaDB: TCP, authentication, and TLS, which the
    tests' server offers (PyMySQL's default ssl-mode PREFERRED takes it)."""
    benchmark.group = f"connection ({db_backend})"

    def reconnect():
        db.close()
        db.connect()

    benchmark(reconnect)
    ensure_connection()


def test_connection_kept(benchmark, database, db_backend):
    benchmark.group = f"connection ({db_backend})"
    benchmark(ensure_connection)
