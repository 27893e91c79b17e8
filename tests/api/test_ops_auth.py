"""Who may open /ops: operators only, each kind of credential only where it is declared; the console's
session cookie, its CSRF tokens, lockout after wrong passwords, disabled operators, Basic caching."""

import hashlib
import re

import pytest
import time_machine

from payapi.backoffice import operators
from payapi.domain.clock import now_ms
from payapi.infra.db import db, is_mysql
from payapi.infra.models import Lockout, OperatorSession
from payapi.users import security
from tests.support.config import SERVICE_KEY
from tests.support.databases import analyze, explain
from tests.support.operators import HTTPS, OPERATOR_PASSWORD, basic, browser, console, cookie_header, csrf_of, log_in

ID = "576b69ae7ce1fd7004cc8281"
MSG = "msg_576b69ae7ce1fd7004cc8282"
API_ROUTES = [
    ("GET", "/ops/api/withdrawals"),
    ("POST", f"/ops/api/withdrawals/{ID}/retry"),
    ("POST", f"/ops/api/withdrawals/{ID}/fail"),
    ("GET", "/ops/api/pays?q=" + ID),
    ("GET", "/ops/api/notifications"),
    ("POST", f"/ops/api/notifications/{MSG}/resend"),
    ("GET", "/ops/api/audit"),
    ("GET", "/ops/api/trial-balance"),
    ("GET", "/ops/api/reconciliations"),
    ("GET", "/ops/api/stats"),
]
CONSOLE_ROUTES = [
    ("GET", "/ops"),
    ("GET", "/ops/"),
    ("GET", f"/ops/withdrawals/{ID}"),
    ("POST", f"/ops/withdrawals/{ID}/retry"),
    ("POST", f"/ops/withdrawals/{ID}/fail"),
    ("GET", "/ops/pays"),
    ("GET", f"/ops/pays/{ID}"),
    ("GET", "/ops/notifications"),
    ("POST", f"/ops/notifications/{MSG}/resend"),
    ("GET", "/ops/books"),
    ("GET", "/ops/audit"),
    ("GET", "/ops/stats"),
    ("POST", "/ops/logout"),
]


def call(client, method, path, headers=None):
    if method == "GET":
        return client.get(path, headers=headers or {}, expect_errors=True)
    return client.post(path, b"{}", headers=headers or {}, content_type="application/json", expect_errors=True)


@pytest.fixture
def alice(make_operator):
    return make_operator("alice")


@pytest.mark.parametrize("method, path", API_ROUTES)
def test_ops_api_without_operator_credentials_is_401_whatever_else_is_sent(app, user, alice, method, path):
    for headers in (
        {},
        {"auth": user.token},
        {"X-Service-Key": SERVICE_KEY},
        basic("alice", "wrong password"),
        basic("nobody", OPERATOR_PASSWORD),
        {"Authorization": "Bearer " + user.token},
        {"Authorization": "Basic %%%"},
    ):
        answer = call(app, method, path, headers)
        assert answer.status_int == 401 and answer.json["code"] == 901, (headers, answer.text)


def test_ops_api_with_a_console_session_but_no_basic_is_401(app, alice):
    client = console(app)
    answer = client.get("/ops/api/withdrawals", expect_errors=True)
    assert answer.status_int == 401 and answer.json["code"] == 901


@pytest.mark.parametrize("method, path", CONSOLE_ROUTES)
def test_console_without_a_session_redirects_to_the_login_form(app, user, alice, method, path):
    client = browser(app)
    for headers in ({}, {"auth": user.token}, {"X-Service-Key": SERVICE_KEY}, alice):
        answer = call(client, method, path, headers)
        assert answer.status_int == 303, (headers, answer.status)
        assert answer.headers["Location"].endswith("/ops/login")


@pytest.mark.parametrize("path", ["/rest/pay/balance", "/rest/pay/checkInfo", "/internal/pays/" + ID])
def test_operator_credentials_never_open_rest_or_internal(app, alice, path):
    client = console(app)
    for headers in ({}, alice):
        answer = client.get(path, headers=headers, expect_errors=True)
        assert answer.status_int == 401 and answer.json["code"] == 901, (path, headers)


def test_basic_credentials_open_every_ops_api_route(app, alice):
    for method, path in API_ROUTES:
        answer = call(app, method, path, alice)
        assert answer.status_int != 401 and answer.status_int < 500, (path, answer.text)


# --- the login form and the session cookie ---------------------------------------------------------------


def test_login_sets_a_secure_httponly_strict_session_cookie_and_stores_only_its_hash(app, alice):
    client = browser(app)
    answer = log_in(client)
    assert answer.status_int == 303 and answer.headers["Location"].endswith("/ops")
    header = cookie_header(answer, operators.SESSION_COOKIE)
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")[1:]}
    assert {"secure", "httponly", "samesite", "path", "max-age"} <= set(attributes)
    assert attributes["samesite"].lower() == "samesite=strict" and attributes["path"] == "Path=/ops"
    token = header.split(";")[0].split("=", 1)[1]
    (row,) = OperatorSession.select()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and token not in row.token_hash
    page = client.get("/ops")
    assert page.status_int == 200 and '<b id="operator">alice</b>' in page.text


def test_the_login_forms_csrf_cookie_is_secure_httponly_and_strict(app):
    form = browser(app).get("/ops/login")
    header = cookie_header(form, operators.LOGIN_CSRF_COOKIE)
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Strict" in header and "Path=/ops" in header
    assert csrf_of(form) == header.split(";")[0].split("=", 1)[1]


@pytest.mark.parametrize("csrf", [None, "", "forged-token"])
def test_login_without_the_right_csrf_token_rerenders_the_form_and_logs_nobody_in(app, alice, csrf):
    client = browser(app)
    client.get("/ops/login")
    fields = {"name": "alice", "password": OPERATOR_PASSWORD, **({"csrf": csrf} if csrf is not None else {})}
    answer = client.post("/ops/login", fields, expect_errors=True)
    assert answer.status_int == 403 and "CSRF" in answer.text and 'name="password"' in answer.text
    assert OperatorSession.select().count() == 0
    assert client.get("/ops", expect_errors=True).status_int == 303


def test_a_login_csrf_token_from_another_browser_is_refused(app, alice):
    other = csrf_of(browser(app).get("/ops/login"))
    client = browser(app)
    client.get("/ops/login")
    answer = client.post(
        "/ops/login", {"csrf": other, "name": "alice", "password": OPERATOR_PASSWORD}, expect_errors=True
    )
    assert answer.status_int == 403 and OperatorSession.select().count() == 0


def test_wrong_password_rerenders_the_form_without_saying_which_part_was_wrong(app, alice):
    wrong = log_in(browser(app), "alice", "not the password")
    unknown = log_in(browser(app), "mallory", OPERATOR_PASSWORD)
    for answer in (wrong, unknown):
        assert answer.status_int == 403 and "用户名或密码错误" in answer.text and 'name="password"' in answer.text
    assert OperatorSession.select().count() == 0


def test_five_wrong_passwords_in_three_hours_lock_the_operator_for_three_hours(app, alice):
    with time_machine.travel(now_ms() / 1000, tick=False) as traveller:
        for i in range(4):
            assert log_in(browser(app), "alice", f"wrong {i}").status_int == 403
            traveller.shift(40 * 60)  # the window slides: the fifth is still within 3 hours of the first
        fifth = log_in(browser(app), "alice", "wrong 4")
        assert fifth.status_int == 429 and "锁定" in fifth.text
        right = log_in(browser(app))
        assert right.status_int == 429 and "锁定" in right.text and OperatorSession.select().count() == 0
        by_basic = app.get("/ops/api/withdrawals", headers=basic("alice"), expect_errors=True)
        assert by_basic.status_int == 429 and by_basic.json["code"] == 906 and by_basic.json["retry_after"] > 3 * 3500
        traveller.shift(3 * 3600 + 1)
        assert log_in(browser(app)).status_int == 303
    assert Lockout.get(Lockout.kind == security.OPERATOR).failures == 0


def test_wrong_basic_passwords_count_toward_the_same_lock(app, alice):
    for i in range(4):
        answer = app.get("/ops/api/withdrawals", headers=basic("alice", f"wrong {i}"), expect_errors=True)
        assert answer.status_int == 401 and answer.json["code"] == 901
    answer = app.get("/ops/api/withdrawals", headers=basic("alice", "wrong 4"), expect_errors=True)
    assert answer.status_int == 429 and answer.json["code"] == 906
    assert log_in(browser(app)).status_int == 429


def test_logout_needs_the_csrf_token_and_ends_the_session(app, alice):
    client = console(app)
    page = client.get("/ops")
    refused = client.post("/ops/logout", {"csrf": "forged"}, expect_errors=True)
    assert refused.status_int == 403 and "CSRF" in refused.text
    assert client.get("/ops").status_int == 200  # still logged in
    answer = client.post("/ops/logout", {"csrf": csrf_of(page)})
    assert answer.status_int == 303 and answer.headers["Location"].endswith("/ops/login")
    assert OperatorSession.select().count() == 0
    assert client.get("/ops", expect_errors=True).status_int == 303


def test_a_stolen_cookie_stops_working_after_logout(app, alice):
    client = console(app)
    token = client.cookies[operators.SESSION_COOKIE]
    client.post("/ops/logout", {"csrf": csrf_of(client.get("/ops"))})
    thief = browser(app)
    thief.set_cookie(operators.SESSION_COOKIE, token)
    assert thief.get("/ops", expect_errors=True).status_int == 303


def test_a_session_ends_after_twelve_hours(app, alice):
    with time_machine.travel(now_ms() / 1000, tick=False) as traveller:
        client = console(app)
        traveller.shift(11 * 3600)
        assert client.get("/ops").status_int == 200
        traveller.shift(3600 + 1)
        assert client.get("/ops", expect_errors=True).status_int == 303


def test_a_logged_in_operator_opening_the_login_form_goes_to_the_console(app, alice):
    client = console(app)
    answer = client.get("/ops/login", expect_errors=True)
    assert answer.status_int == 303 and answer.headers["Location"].endswith("/ops")


# --- disabled operators, changed passwords, the Basic cache -------------------------------------------------


def test_disabling_an_operator_ends_its_sessions_and_basic_logins_at_once(app, alice, make_operator):
    bob = make_operator("bob")
    client = console(app)
    assert app.get("/ops/api/withdrawals", headers=alice).status_int == 200  # now cached
    assert operators.disable("alice")
    assert client.get("/ops", expect_errors=True).status_int == 303
    assert app.get("/ops/api/withdrawals", headers=alice, expect_errors=True).status_int == 401
    assert log_in(browser(app)).status_int == 403
    assert app.get("/ops/api/withdrawals", headers=bob).status_int == 200  # the others are untouched


def test_a_new_password_ends_the_old_ones_cached_basic_login(app, alice, settings):
    assert app.get("/ops/api/withdrawals", headers=alice).status_int == 200
    operators.add("alice", "a brand new password", settings.bcrypt_rounds, reset=True)
    assert app.get("/ops/api/withdrawals", headers=alice, expect_errors=True).status_int == 401
    assert app.get("/ops/api/withdrawals", headers=basic("alice", "a brand new password")).status_int == 200


def test_a_script_making_many_calls_costs_one_bcrypt(app, alice, monkeypatch):
    checks = []
    real = security.secret_matches
    monkeypatch.setattr(security, "secret_matches", lambda *a: checks.append(1) or real(*a))  # a spy only
    for _ in range(20):
        assert app.get("/ops/api/trial-balance", headers=alice).status_int == 200
    assert len(checks) == 1
    # A wrong password is never cached: each one is checked (and counted toward the lock).
    for _ in range(2):
        app.get("/ops/api/trial-balance", headers=basic("alice", "nope nope"), expect_errors=True)
    assert len(checks) == 3


def test_a_basic_login_is_verified_again_after_a_minute(app, alice, monkeypatch):
    checks = []
    real = security.secret_matches
    monkeypatch.setattr(security, "secret_matches", lambda *a: checks.append(1) or real(*a))
    import time

    clock = [time.monotonic()]
    monkeypatch.setattr(operators.time, "monotonic", lambda: clock[0])
    app.get("/ops/api/trial-balance", headers=alice)
    clock[0] += operators.BASIC_CACHE_S - 1
    app.get("/ops/api/trial-balance", headers=alice)
    assert len(checks) == 1
    clock[0] += 2
    app.get("/ops/api/trial-balance", headers=alice)
    assert len(checks) == 2


def test_the_console_works_only_over_https_cookies(app, alice):
    """Over plain http the Secure cookie is not sent back: the console asks to log in again."""
    client = browser(app)
    log_in(client)
    plain = client.get("/ops", extra_environ={**HTTPS, "wsgi.url_scheme": "http"}, expect_errors=True)
    assert plain.status_int == 303


# --- lockout by client address; guessing a name from everywhere; unknown names ----------------------------

HOME, STRANGER = "198.51.100.7", "203.0.113.9"


def from_address(address):
    return {"X-Forwarded-For": f"192.0.2.66, {address}"}


def test_wrong_passwords_lock_a_name_only_from_the_address_they_came_from(app, alice):
    for i in range(4):
        assert log_in(browser(app, STRANGER), "alice", f"wrong {i}").status_int == 403
    assert log_in(browser(app, STRANGER), "alice", "wrong 4").status_int == 429
    assert log_in(browser(app, STRANGER)).status_int == 429  # the right password too, from there
    stranger_basic = app.get("/ops/api/withdrawals", headers={**alice, **from_address(STRANGER)}, expect_errors=True)
    assert stranger_basic.status_int == 429 and stranger_basic.json["code"] == 906
    # The real operator, elsewhere, is not locked out: by the console or by Basic.
    assert log_in(browser(app, HOME)).status_int == 303
    assert app.get("/ops/api/withdrawals", headers={**alice, **from_address(HOME)}).status_int == 200


def test_the_address_is_the_last_x_forwarded_for_entry_else_the_peer(app, alice):
    # A client can write any first entries; the router appends the one it saw, and only that one counts.
    for i in range(5):
        app.get(
            "/ops/api/withdrawals",
            headers={**basic("alice", f"wrong {i}"), "X-Forwarded-For": f"{HOME}, {STRANGER}"},
            expect_errors=True,
        )
    assert app.get("/ops/api/withdrawals", headers={**alice, "X-Forwarded-For": HOME}).status_int == 200
    assert (
        app.get(
            "/ops/api/withdrawals", headers={**alice, "X-Forwarded-For": f"{HOME}, {STRANGER}"}, expect_errors=True
        ).status_int
        == 429
    )
    # Without the header: the peer's address.
    for i in range(5):
        app.get(
            "/ops/api/withdrawals",
            headers=basic("alice", f"wrong {i}"),
            extra_environ={"REMOTE_ADDR": "10.1.1.1"},
            expect_errors=True,
        )
    assert (
        app.get(
            "/ops/api/withdrawals", headers=alice, extra_environ={"REMOTE_ADDR": "10.1.1.1"}, expect_errors=True
        ).status_int
        == 429
    )
    assert app.get("/ops/api/withdrawals", headers=alice, extra_environ={"REMOTE_ADDR": "10.1.1.2"}).status_int == 200


@pytest.mark.parametrize("name", ["alice", "mallory", "disabled-dan", "not a valid name!"])
def test_unknown_names_are_answered_and_locked_exactly_like_known_ones(app, alice, make_operator, monkeypatch, name):
    make_operator("disabled-dan")
    operators.disable("disabled-dan")
    checks = []
    real = security.secret_matches
    monkeypatch.setattr(security, "secret_matches", lambda *a: checks.append(1) or real(*a))  # a spy only
    answers = [log_in(browser(app, STRANGER), name, f"wrong {i}") for i in range(4)]
    answers += [
        app.get(
            "/ops/api/withdrawals", headers={**basic(name, "wrong 4"), **from_address(STRANGER)}, expect_errors=True
        )
    ]
    answers += [log_in(browser(app, STRANGER), name, "wrong 5")]
    assert [a.status_int for a in answers] == [403, 403, 403, 403, 429, 429]
    assert "用户名或密码错误" in answers[0].text and "锁定" in answers[5].text
    assert answers[4].json["code"] == 906 and answers[4].json["retry_after"] > 3 * 3500
    assert len(checks) == 5  # one bcrypt per attempt until the lock, none after: the same time for every name


def test_guessing_a_name_from_many_addresses_is_slowed_but_its_owner_still_logs_in(app, alice, monkeypatch):
    assert log_in(browser(app, HOME)).status_int == 303  # the operator's own address: it has logged in before
    with time_machine.travel(now_ms() / 1000, tick=False):
        for i in range(operators.NAME_BURST):
            assert log_in(browser(app, f"203.0.113.{i}"), "alice", "guess").status_int == 403
        checks = []
        real = security.secret_matches
        monkeypatch.setattr(security, "secret_matches", lambda *a: checks.append(1) or real(*a))
        for address in ("198.18.0.1", "198.18.0.2"):
            slowed = app.get(
                "/ops/api/withdrawals", headers={**basic("alice", "guess"), **from_address(address)}, expect_errors=True
            )
            assert slowed.status_int == 429 and slowed.json["code"] == 906
            assert 0 < slowed.json["retry_after"] <= operators.NAME_INTERVAL_MS // 1000
        assert checks == []  # refused before any hashing
        assert log_in(browser(app, HOME)).status_int == 303
        assert app.get("/ops/api/withdrawals", headers={**alice, **from_address(HOME)}).status_int == 200
        # Another name is not slowed by guesses at alice's.
        assert log_in(browser(app, "198.18.0.3"), "bob", "guess").status_int == 403


def test_guessing_many_names_from_one_address_is_slowed_before_any_hashing_and_operators_still_log_in(
    app, alice, monkeypatch
):
    """Each made-up name is locked from an address only after five guesses, so a flood of new names
    from one address would keep this process's one place for operator logins (a bcrypt each) busy
    for good and every new operator login would be refused as busy. An address's wrong guesses at any
    names are counted too: past a burst it is refused before any hashing."""
    burst = getattr(operators, "ADDRESS_BURST", 100)
    assert log_in(browser(app, HOME)).status_int == 303  # alice has logged in from HOME before
    with time_machine.travel(now_ms() / 1000, tick=False):
        for address in (STRANGER, HOME):  # a stranger, and one behind alice's own address
            for i in range(burst):
                guess = app.get(
                    "/ops/api/withdrawals",
                    headers={**basic(f"nobody{i}", "guess"), **from_address(address)},
                    expect_errors=True,
                )
                assert guess.status_int == 401, (i, guess.json)
        checks = []
        real = security.secret_matches
        monkeypatch.setattr(security, "secret_matches", lambda *a: checks.append(1) or real(*a))
        slowed = app.get(
            "/ops/api/withdrawals", headers={**basic("somebody", "guess"), **from_address(STRANGER)}, expect_errors=True
        )
        assert slowed.status_int == 429 and slowed.json["code"] == 906, slowed.json
        assert 0 < slowed.json["retry_after"] <= operators.ADDRESS_INTERVAL_MS // 1000
        assert checks == []  # refused before any hashing
        # The operators: from another address, and from an address they logged in from before.
        assert log_in(browser(app, "198.18.0.9")).status_int == 303
        assert log_in(browser(app, HOME)).status_int == 303
        # An address past its burst is slowed for every name it has not logged in with, alice's too.
        assert log_in(browser(app, STRANGER)).status_int == 429


# --- a lock, a disabled operator or a new password reach cached Basic logins -----------------------------


def test_a_lock_reaches_a_basic_login_this_process_already_verified(app, alice):
    assert app.get("/ops/api/withdrawals", headers={**alice, **from_address(STRANGER)}).status_int == 200  # cached
    assert app.get("/ops/api/withdrawals", headers={**alice, **from_address(HOME)}).status_int == 200
    for i in range(5):
        app.get(
            "/ops/api/withdrawals",
            headers={**basic("alice", f"wrong {i}"), **from_address(STRANGER)},
            expect_errors=True,
        )
    locked = app.get("/ops/api/withdrawals", headers={**alice, **from_address(STRANGER)}, expect_errors=True)
    assert locked.status_int == 429 and locked.json["code"] == 906
    assert app.get("/ops/api/withdrawals", headers={**alice, **from_address(HOME)}).status_int == 200


def test_a_new_password_set_within_the_same_millisecond_ends_the_cached_login(app, database, settings):
    with time_machine.travel(now_ms() / 1000, tick=False):
        operators.add("carol", OPERATOR_PASSWORD, settings.bcrypt_rounds)
        assert app.get("/ops/api/withdrawals", headers=basic("carol")).status_int == 200
        operators.add("carol", "a brand new password", settings.bcrypt_rounds, reset=True)
        assert app.get("/ops/api/withdrawals", headers=basic("carol"), expect_errors=True).status_int == 401


def test_the_worker_forgets_guesses_at_operator_names_once_they_no_longer_count(app, alice, settings, gateway):
    from payapi import worker

    with time_machine.travel(now_ms() / 1000, tick=False) as traveller:
        assert log_in(browser(app, HOME)).status_int == 303  # remembered: alice from HOME
        for i in range(30):  # made-up names: a row per name and per name and address
            log_in(browser(app, STRANGER), f"made-up-{i}", "guess")
        for i in range(5):
            log_in(browser(app, STRANGER), "alice", f"wrong {i}")  # alice locked from STRANGER
        before = Lockout.select().count()
        # Only what counts nothing: the empty count of alice's login from HOME.
        assert worker.run_once(settings, gateway)["operator_guesses"] == {"forgotten": 1}
        assert log_in(browser(app, STRANGER)).status_int == 429
        traveller.shift(3 * 3600 + 1)  # the guesses' window, the lock and the name's rate are over
        assert worker.run_once(settings, gateway)["operator_guesses"] == {"forgotten": before - 2}
        assert [row.kind for row in Lockout.select()] == [operators.KNOWN]
        assert log_in(browser(app, HOME)).status_int == 303


@pytest.fixture
def many_lockouts(database):
    """3,000 users' rows (a row per user who ever mistyped a secret: they stay) and 100 rows of
    operators' guesses of each kind the worker forgets; the planner sees a real table."""
    now = now_ms()
    rows = [
        {"user_id": f"{i:024x}", "kind": ("passwd", "answers")[i % 2], "failed_at": "", "failures": 0,
         "locked_until": 0}
        for i in range(3_000)
    ]  # fmt: skip
    for kind in (operators.BY_NAME, operators.KNOWN, operators.FROM_ADDRESS, operators.BY_ADDRESS):
        rows += [
            {"user_id": f"{kind}{i}", "kind": kind, "failed_at": "", "failures": 0, "locked_until": now - 1}
            for i in range(25)
        ]
    with db.atomic():
        for first in range(0, len(rows), 500):
            Lockout.insert_many(rows[first : first + 500]).execute()
    analyze("lockout")
    yield now
    Lockout.delete().execute()


def _uses_the_kind_index(plan):
    if is_mysql():
        (step,) = plan
        return step["key"] == "lockout_kind"
    return len(plan) == 1 and re.fullmatch(r"SEARCH \w+ USING (COVERING )?INDEX lockout_kind \(kind=\?.*\)", plan[0])


def test_the_worker_reads_only_operators_rows_to_forget_their_guesses(many_lockouts):
    now = many_lockouts
    run_down, addresses = operators.run_down_guesses(now), operators.address_counts(now, 0)
    assert _uses_the_kind_index(explain(run_down)), explain(run_down)
    assert _uses_the_kind_index(explain(addresses)), explain(addresses)
    assert len(list(addresses)) == 25
    assert run_down.execute() == 75
    assert Lockout.select().count() == 3_025
