"""Authentication (901) and the one JSON error envelope, for every kind of failure."""

import json
import os
import subprocess
import sys
import time

import jwt
import peewee
import pytest
import webtest

from payapi.app import create_app
from payapi.domain.ids import new_id
from payapi.http.auth import LEEWAY_S, Authenticator
from payapi.users.sms import FileSms
from tests.support.config import AUTH_SECRETS
from tests.support.scenarios import assert_envelope

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK_INFO = "/rest/pay/checkInfo"


def get(app, path, token=None, **headers):
    if token is not None:
        headers["auth"] = token
    return app.get(path, headers=headers, expect_errors=True)


def claims_token(claims, secret=AUTH_SECRETS[0], algorithm="HS256"):
    return jwt.encode(claims, secret, algorithm=algorithm)


def assert_unauthenticated(response):
    assert_envelope(response, 901, 401)


# --- authentication ------------------------------------------------------------------------


def test_valid_token_is_accepted(app, user):
    assert_envelope(user.get(CHECK_INFO), 900, 200)


def test_missing_auth_header_is_901(app):
    assert_unauthenticated(get(app, CHECK_INFO))


def test_empty_auth_header_is_901(app):
    assert_unauthenticated(get(app, CHECK_INFO, token=""))


@pytest.mark.parametrize(
    "token",
    ["not-a-jwt", "a.b.c", "Bearer xxxx", "eyJhbGciOiJIUzI1NiJ9..", "x" * 5000],
    ids=["garbage", "three-parts", "bearer", "empty-parts", "oversized"],
)
def test_malformed_token_is_901(app, token):
    assert_unauthenticated(get(app, CHECK_INFO, token=token))


def test_token_signed_with_an_unknown_secret_is_901(app):
    token = claims_token(
        {"sub": new_id(), "exp": int(time.time()) + 600}, secret="someone-elses-secret-0123456789abcdef"
    )
    assert_unauthenticated(get(app, CHECK_INFO, token=token))


def test_token_with_tampered_payload_is_901(app, user):
    header, _, signature = user.token.split(".")
    forged = jwt.utils.base64url_encode(json.dumps({"sub": new_id(), "exp": int(time.time()) + 600}).encode()).decode()
    assert_unauthenticated(get(app, CHECK_INFO, token=f"{header}.{forged}.{signature}"))


def test_unsigned_token_is_901(app):
    token = claims_token({"sub": new_id(), "exp": int(time.time()) + 600}, secret=None, algorithm="none")
    assert_unauthenticated(get(app, CHECK_INFO, token=token))


@pytest.mark.filterwarnings("ignore")
def test_token_with_another_algorithm_is_901(app):
    token = claims_token({"sub": new_id(), "exp": int(time.time()) + 600}, algorithm="HS512")
    assert_unauthenticated(get(app, CHECK_INFO, token=token))


def test_expired_token_is_901(app):
    # 30 s of clock skew are allowed (LEEWAY_S): expired 31 s ago is expired.
    token = claims_token({"sub": new_id(), "exp": int(time.time()) - 31})
    assert_unauthenticated(get(app, CHECK_INFO, token=token))


def test_token_expired_within_the_clock_skew_leeway_is_accepted(app, time_machine):
    time_machine.move_to(time.time(), tick=False)
    token = claims_token({"sub": new_id(), "exp": int(time.time()) - 29})
    assert_envelope(get(app, CHECK_INFO, token=token), 900, 200)


def test_token_expires_while_in_use(app, user, time_machine):
    time_machine.move_to(time.time(), tick=False)
    assert_envelope(user.get(CHECK_INFO), 900, 200)  # verified and cached
    time_machine.shift(3600 + LEEWAY_S - 1)
    assert_envelope(user.get(CHECK_INFO), 900, 200)
    time_machine.shift(2)
    assert_unauthenticated(user.get(CHECK_INFO))


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_token_from_a_clock_a_second_ahead_is_accepted(app, claim, time_machine):
    time_machine.move_to(time.time(), tick=False)
    now = int(time.time())
    token = claims_token({"sub": new_id(), "exp": now + 600, claim: now + 1})
    assert_envelope(get(app, CHECK_INFO, token=token), 900, 200)


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_token_not_yet_valid_is_901_and_accepted_once_its_time_comes(app, claim, time_machine):
    time_machine.move_to(time.time(), tick=False)
    now = int(time.time())
    token = claims_token({"sub": new_id(), "exp": now + 600, claim: now + 60})
    assert_unauthenticated(get(app, CHECK_INFO, token=token))
    assert_unauthenticated(get(app, CHECK_INFO, token=token))
    time_machine.shift(60 - LEEWAY_S)  # the rejection was not cached
    assert_envelope(get(app, CHECK_INFO, token=token), 900, 200)


def raw_claims_token(payload_json):
    """A token whose payload is this exact JSON text (Infinity, NaN, 1e999: what json.dumps will not write)."""
    return jwt.api_jws.encode(payload_json.encode(), AUTH_SECRETS[0], algorithm="HS256")


ABSURD_CLAIMS = [
    '"exp": Infinity',
    '"exp": -Infinity',
    '"exp": NaN',
    '"exp": 1e999',
    '"exp": -1e999',
    '"exp": 1' + "0" * 400,
    '"exp": "4102444800"',
    '"exp": true',
    '"exp": null',
    '"exp": [4102444800]',
    '"exp": {"t": 4102444800}',
    '"exp": 4102444800, "iat": Infinity',
    '"exp": 4102444800, "iat": NaN',
    '"exp": 4102444800, "nbf": Infinity',
    '"exp": 4102444800, "nbf": NaN',
    '"exp": 4102444800, "nbf": [1]',
    '"exp": 4102444800, "iat": {"a": 1}',
    '"exp": 4102444800, "nbf": 1e999',
    '"exp": 4102444800, "iat": "soon"',
]


@pytest.mark.parametrize("claims", ABSURD_CLAIMS)
def test_token_with_a_non_finite_or_absurd_time_claim_is_901(app, claims):
    token = raw_claims_token(f'{{"sub": "{new_id()}", {claims}}}')
    assert_unauthenticated(get(app, CHECK_INFO, token=token))
    assert_unauthenticated(get(app, CHECK_INFO, token=token))


@pytest.mark.parametrize("sub", ["1", "123456789012345678901234", "[]", "{}", "null", "true", "NaN"])
def test_token_whose_sub_is_not_a_string_is_901(app, sub):
    token = raw_claims_token(f'{{"sub": {sub}, "exp": 4102444800}}')
    assert_unauthenticated(get(app, CHECK_INFO, token=token))


def test_token_with_a_float_exp_is_accepted_until_then(app, time_machine):
    time_machine.move_to(time.time(), tick=False)
    token = raw_claims_token(f'{{"sub": "{new_id()}", "exp": {time.time() + 60.5}}}')
    assert_envelope(get(app, CHECK_INFO, token=token), 900, 200)
    time_machine.shift(60 + LEEWAY_S + 1)
    assert_unauthenticated(get(app, CHECK_INFO, token=token))


def test_token_without_exp_is_901(app):
    assert_unauthenticated(get(app, CHECK_INFO, token=claims_token({"sub": new_id()})))


def test_token_with_non_numeric_exp_is_901(app):
    token = claims_token({"sub": new_id(), "exp": str(int(time.time()) + 600)})
    assert_unauthenticated(get(app, CHECK_INFO, token=token))


def test_token_without_sub_is_901(app):
    assert_unauthenticated(get(app, CHECK_INFO, token=claims_token({"exp": int(time.time()) + 600})))


@pytest.mark.parametrize(
    "sub",
    ["not-hex-at-all", "zzzzzzzzzzzzzzzzzzzzzzzz", new_id().upper(), new_id()[:23], new_id() + "0", ""],
    ids=["words", "non-hex", "uppercase", "short", "long", "empty"],
)
def test_token_whose_sub_is_not_24_lowercase_hex_is_901(app, sub):
    assert_unauthenticated(get(app, CHECK_INFO, token=claims_token({"sub": sub, "exp": int(time.time()) + 600})))


def test_token_signed_with_the_rotated_out_secret_still_verifies(app, settings):
    user_id = new_id()
    token = claims_token({"sub": user_id, "exp": int(time.time()) + 600}, secret=AUTH_SECRETS[1])
    assert_envelope(get(app, CHECK_INFO, token=token), 900, 200)


def test_new_tokens_are_signed_with_the_first_secret(settings):
    token = Authenticator(settings.auth_secrets).mint(new_id())
    jwt.decode(token, AUTH_SECRETS[0], algorithms=["HS256"])  # raises if signed with another key


def test_auth_is_checked_before_the_body(app):
    response = app.post("/rest/pay/passwd", b"[not json", content_type="application/json", expect_errors=True)
    assert_unauthenticated(response)


def _mint_with_cli(user_id, *args, secret=AUTH_SECRETS[0]):
    env = {**os.environ, "AUTH_SECRET": secret}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "payapi", "token", user_id, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cli_token_is_accepted_by_the_app_with_its_phone_and_ttl(app):
    user_id = new_id()
    before = int(time.time())
    token = _mint_with_cli(user_id, "--phone", "13900139000", "--ttl", "120")
    claims = jwt.decode(token, AUTH_SECRETS[0], algorithms=["HS256"])
    assert claims["sub"] == user_id and claims["phone"] == "13900139000"
    assert before + 120 <= claims["exp"] <= int(time.time()) + 120
    assert_envelope(get(app, CHECK_INFO, token=token), 900, 200)
    # The phone claim is what SMS codes need: without it this would be 910.
    sms = app.post(
        "/rest/pay/smscode", b"{}", headers={"auth": token}, content_type="application/json", expect_errors=True
    )
    assert_envelope(sms, 900, 200)


def test_cli_refuses_a_user_id_that_is_not_24_hex():
    env = {**os.environ, "AUTH_SECRET": AUTH_SECRETS[0]}
    done = subprocess.run(
        [sys.executable, "-m", "payapi", "token", "alice"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and done.stdout == ""


def test_cli_refuses_a_phone_the_service_would_not_use():
    env = {**os.environ, "AUTH_SECRET": AUTH_SECRETS[0]}
    done = subprocess.run(
        [sys.executable, "-m", "payapi", "token", new_id(), "--phone", "138 0013 8000"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and done.stdout == ""


# --- the envelope for routing and body errors ----------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nothing", "/rest", "/rest/pay", "/rest/pay/withdraw/extra", f"/rest/pay/{new_id()}/status/x"]
)
def test_unknown_route_is_911_with_404(app, user, path):
    body = assert_envelope(user.get(path), 911, 404)
    assert set(body) == {"code", "msg"}


def test_unknown_route_needs_no_token(app):
    assert_envelope(get(app, "/no/such/route"), 911, 404)


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("GET", "/rest/pay/passwd", "POST"),
        ("PUT", "/rest/pay/question", "POST"),
        ("DELETE", "/rest/pay/withdrawInfo", "GET"),
        ("POST", "/rest/pay/checkInfo", "GET"),
        ("POST", f"/rest/pay/{new_id()}", "GET"),
        ("PATCH", f"/rest/pay/{new_id()}/status", "POST"),
    ],
)
def test_wrong_method_is_405_with_code_904_and_allow_header(app, user, method, path, allowed):
    response = app.request(path, method=method, headers=user.headers, expect_errors=True)
    assert_envelope(response, 904, 405)
    allow = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed in allow and method not in allow


@pytest.mark.parametrize(
    "raw",
    [
        b"{broken",
        b"",
        b'{"passwd": "abc"',
        b'{"passwd": "\xff\xfe"}',
        b"\xef\xbb\xbf\xff",
        b'["passwd", "abc"]',
        b"null",
        b'"passwd"',
        b"12",
        b"true",
        b'{"passwd": NaN}',
        b'{"passwd": Infinity}',
        b"NaN",
        b"[" * 100_00 + b"]" * 100_00,
    ],
    ids=[
        "broken",
        "empty",
        "truncated",
        "invalid-utf8-in-string",
        "invalid-utf8",
        "array",
        "null",
        "bare-string",
        "number",
        "boolean",
        "nan-field",
        "infinity-field",
        "bare-nan",
        "deeply-nested",
    ],
)
def test_body_that_is_not_a_utf8_json_object_is_904(app, user, raw):
    assert_envelope(user.post("/rest/pay/passwd", raw=raw), 904, 400)
    assert user.get(CHECK_INFO).json["passwd"] is False


@pytest.mark.parametrize(
    "path, raw",
    [
        ("/rest/pay/passwd", b'{"passwd": "\\ud800"}'),
        ("/rest/pay/question", b'{"answer1": "a\\udfff", "answer2": "b", "answer3": "c"}'),
        ("/rest/pay/withdrawInfo", b'{"smscode": "123456", "id": "\\udc00", "name": "n"}'),
        ("/rest/pay/passwd", b'{"\\ud800": 1, "passwd": "p"}'),
    ],
    ids=["passwd", "answer", "account-id", "key"],
)
def test_lone_surrogate_escape_is_904_not_a_crash(app, user, path, raw):
    assert_envelope(user.post(path, raw=raw), 904, 400)
    assert user.get(CHECK_INFO).json == {"code": 900, "passwd": False, "questions": False, "withdraw": False}


def test_escaped_surrogate_pair_is_ordinary_text(app, user):
    assert_envelope(user.post("/rest/pay/passwd", raw=b'{"passwd": "\\ud83d\\ude00 \\u00e9"}'), 900, 200)
    assert_envelope(user.post("/rest/pay/passwd", {"passwd": "next", "old_passwd": "\U0001f600 \u00e9"}), 900, 200)


def test_body_over_64_kb_is_413_in_the_envelope(app, user):
    raw = json.dumps({"passwd": "p", "pad": "x" * (64 * 1024)}).encode()
    assert_envelope(user.post("/rest/pay/passwd", raw=raw), 904, 413)
    assert user.get(CHECK_INFO).json["passwd"] is False


def test_body_of_exactly_64_kb_is_accepted(app, user):
    head = json.dumps({"passwd": "p", "pad": ""}).encode()
    raw = head[:-2] + b"x" * (64 * 1024 - len(head)) + b'"}'
    assert len(raw) == 64 * 1024
    assert_envelope(user.post("/rest/pay/passwd", raw=raw), 900, 200)


@pytest.mark.parametrize(
    "bad_id",
    ["123", "zzzzzzzzzzzzzzzzzzzzzzzz", new_id().upper(), new_id() + "a", new_id()[:-1], "%20" * 24],
    ids=["short", "non-hex", "uppercase", "25-chars", "23-chars", "spaces"],
)
def test_path_id_that_is_not_24_hex_is_904(app, user, bad_id):
    assert_envelope(user.get(f"/rest/pay/{bad_id}"), 904, 400)
    assert_envelope(user.get(f"/rest/pay/{bad_id}/status"), 904, 400)
    assert_envelope(user.post(f"/rest/pay/{bad_id}/status", {"status": "success"}), 904, 400)


def test_unknown_pay_id_of_the_right_shape_is_911(app, user):
    assert_envelope(user.get(f"/rest/pay/{new_id()}"), 911, 404)


def test_missing_or_ill_typed_field_is_904(app, user):
    assert_envelope(user.post("/rest/pay/passwd", {}), 904, 400)
    assert_envelope(user.post("/rest/pay/passwd", {"passwd": {"a": 1}}), 904, 400)


def test_unknown_fields_are_ignored(app, user):
    assert_envelope(user.post("/rest/pay/passwd", {"passwd": "p1", "extra": [1, {"x": None}]}), 900, 200)


# --- unexpected failures -------------------------------------------------------------------


class Exploding:
    def on_get(self, req, resp):
        raise RuntimeError("Traceback: password=hunter2 at /srv/payapi/secret.py line 7")


class BrokenSql:
    def on_get(self, req, resp):
        raise peewee.IntegrityError("Duplicate entry 'hunter2' for key 'PRIMARY' in INSERT INTO profile")


@pytest.fixture
def exploding_app(database, settings, gateway):
    falcon_app = create_app(settings, gateway, FileSms(settings.sms_file))
    falcon_app.add_route("/rest/pay/test-explodes", Exploding())
    falcon_app.add_route("/rest/pay/test-broken-sql", BrokenSql())
    return webtest.TestApp(falcon_app)


@pytest.mark.parametrize("path", ["/rest/pay/test-explodes", "/rest/pay/test-broken-sql"])
def test_unexpected_exception_is_999_without_details(exploding_app, settings, path):
    token = Authenticator(settings.auth_secrets).mint(new_id())
    response = exploding_app.get(path, headers={"auth": token, "X-Request-Id": "req-boom-1"}, expect_errors=True)
    body = assert_envelope(response, 999, 500)
    assert body == {"code": 999, "msg": body["msg"], "request_id": "req-boom-1"}
    text = response.body.decode("utf-8")
    for leak in ("Traceback", "hunter2", "secret.py", "INSERT", "RuntimeError", "IntegrityError"):
        assert leak not in text


class RaisingSms:
    def __init__(self):
        self.calls = 0

    def send(self, phone, code, purpose, text):
        self.calls += 1
        raise ConnectionError(f"sms gateway down while sending {code} to {phone}")


def test_sms_backend_failure_is_920_without_details(database, settings, gateway):
    backend = RaisingSms()
    app = webtest.TestApp(create_app(settings, gateway, backend))
    token = Authenticator(settings.auth_secrets).mint(new_id(), phone="13800138000")
    response = app.post(
        "/rest/pay/smscode", b"{}", headers={"auth": token}, content_type="application/json", expect_errors=True
    )
    body = assert_envelope(response, 920, 502)
    assert backend.calls == 1
    assert set(body) == {"code", "msg"}
    assert "13800138000" not in response.body.decode("utf-8") and "ConnectionError" not in response.body.decode("utf-8")


# --- request ids ---------------------------------------------------------------------------


def test_request_id_is_echoed_when_sent(app, user):
    response = app.get(CHECK_INFO, headers={**user.headers, "X-Request-Id": "abc-123.XYZ_9"})
    assert response.headers["X-Request-Id"] == "abc-123.XYZ_9"


def test_request_id_is_echoed_on_errors_too(app):
    response = get(app, CHECK_INFO, **{"X-Request-Id": "err-42"})
    assert_unauthenticated(response)
    assert response.headers["X-Request-Id"] == "err-42"
    response = get(app, "/nowhere", **{"X-Request-Id": "err-43"})
    assert response.headers["X-Request-Id"] == "err-43"


def test_request_id_is_generated_when_absent_and_differs_per_request(app, user):
    first = user.get(CHECK_INFO).headers["X-Request-Id"]
    second = user.get(CHECK_INFO).headers["X-Request-Id"]
    assert first and second and first != second


def test_unsafe_request_id_is_replaced(app, user):
    unsafe = "bad id <script>"
    response = app.get(CHECK_INFO, headers={**user.headers, "X-Request-Id": unsafe})
    generated = response.headers["X-Request-Id"]
    assert generated != unsafe and generated.isalnum()


def test_head_answers_every_get_route_as_get_does_without_a_body(app, user):
    """RFC 9110: HEAD is GET without the body (health checkers send it); it was 405 everywhere."""
    import falcon.inspect

    gets = [
        route.path
        for route in falcon.inspect.inspect_routes(app.app)
        if any(m.method == "GET" and not m.internal for m in route.methods)
    ]
    assert "/healthz" in gets and "/rest/pay/{pay_id}" in gets
    for template in gets:
        path = template.replace("{pay_id}", "576b69ae7ce1fd7004cc8280").replace("{withdraw_id}", new_id())
        path = path.replace("{message_id}", "msg_" + new_id())
        got = app.get(path, headers=user.headers, expect_errors=True)
        head = app.head(path, headers=user.headers, expect_errors=True)
        assert head.status_int == got.status_int != 405, template
        assert head.body == b"" and head.headers.get("Content-Length") == str(len(got.body)), template
