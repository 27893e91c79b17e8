"""SMS through the providers' official SDKs (alibabacloud-dysmsapi20170525, tencentcloud-sdk-python-sms)
against the SMS sandbox (payapi.sandbox.sms), which verifies every request's signature: route 7's
smscode flow end to end, each provider answer's mapping, fail-over, and production's refusals."""

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import requests
import webtest

from payapi.app import create_app
from payapi.infra.config import Settings
from payapi.infra.models import SmsCode
from payapi.startup import SERVE, problems
from payapi.users.sms import make_backend
from payapi.users.sms_providers import AliyunSms, ProviderChain, TencentSms, aliyun_number, e164, parse_endpoint
from tests.support.config import AUTH_SECRETS, SERVICE_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMSCODE = "/rest/pay/smscode"
WITHDRAW_INFO = "/rest/pay/withdrawInfo"
UTC = datetime.UTC
START = datetime.datetime(2026, 3, 10, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
ALIYUN_KEY = ("LTAI5tTestsOfPayapiSms", "aliyun-secret-of-the-sms-tests-0123456789")
TENCENT_KEY = ("AKIDTestsOfPayapiSms000000000000000", "tencent-secret-of-the-sms-tests-01234")
READ_TIMEOUT = 0.5  # a hang is given up on after this (production: 3 s)


def provider_config(url, aliyun_secret=ALIYUN_KEY[1], tencent_secret=TENCENT_KEY[1]):
    return dict(
        aliyun_access_key_id=ALIYUN_KEY[0],
        aliyun_access_key_secret=aliyun_secret,
        aliyun_sms_sign_name="问诊平台",
        aliyun_sms_template_code="SMS_154950909",
        aliyun_sms_endpoint=url,
        tencent_secret_id=TENCENT_KEY[0],
        tencent_secret_key=tencent_secret,
        tencent_sms_sdk_app_id="1400787878",
        tencent_sms_sign_name="问诊平台",
        tencent_sms_template_id="1110",
        tencent_sms_endpoint=url,
    )


@pytest.fixture
def backend_name():
    return "aliyun"


@pytest.fixture
def sms(fake_pingpp):
    """The SMS sandbox (in the Ping++ sandbox's process), knowing this module's keys."""
    fake_pingpp.sms.add_key("aliyun", *ALIYUN_KEY)
    fake_pingpp.sms.add_key("tencent", *TENCENT_KEY)
    return fake_pingpp.sms


@pytest.fixture
def settings(settings, sms, fake_pingpp, backend_name):
    return dataclasses.replace(settings, sms_backend=backend_name, **provider_config(fake_pingpp.url))


@pytest.fixture
def app(database, settings, gateway):
    return webtest.TestApp(create_app(settings, gateway, make_backend(settings, read_timeout=READ_TIMEOUT)))


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def phone_user(clock, user):
    return user.remint(ttl=30 * 86400)


def assert_code(response, code, status):
    assert (response.status_int, response.json["code"]) == (status, code), response.json
    return response.json


def codes_of(user):
    return list(SmsCode.select().where(SmsCode.user_id == user.id))


def submit(user, code):
    return user.post(WITHDRAW_INFO, {"smscode": code, "type": "alipay", "id": "expert@example.com", "name": "韩梅梅"})


def answers(sms, provider=None):
    return [(r["provider"], r["status"], r["answer"]) for r in sms.requests if provider in (None, r["provider"])]


both = pytest.mark.parametrize("backend_name", ["aliyun", "tencent"])


# --- the real SDKs against the sandbox --------------------------------------------------------------


@both
def test_the_sdks_signed_request_verifies_and_the_code_reaches_the_phone(phone_user, sms, backend_name):
    assert assert_code(phone_user.post(SMSCODE, {}), 900, 200) == {"code": 900}
    [message] = sms.messages_to(phone_user.phone)
    assert message["provider"] == backend_name
    # Each provider gets the number in its own form, the sign name and template as its console issues them.
    if backend_name == "aliyun":
        assert (message["phone"], message["template"], message["params"]) == (
            "13800138000",
            "SMS_154950909",
            {"code": message["code"]},
        )
    else:
        assert (message["phone"], message["template"], message["params"]) == (
            "+8613800138000",
            "1110",
            [message["code"]],
        )
    assert message["sign_name"] == "问诊平台"
    assert len(codes_of(phone_user)) == 1
    assert_code(submit(phone_user, message["code"]), 900, 200)
    assert phone_user.get(WITHDRAW_INFO).json["info"]["id"] == "expert@example.com"


@both
def test_a_wrong_secret_is_refused_by_the_sandbox_920_and_costs_no_quota(phone_user, sms, backend_name):
    key = ALIYUN_KEY if backend_name == "aliyun" else TENCENT_KEY
    sms.add_key(backend_name, key[0], "the-provider-holds-another-secret")
    try:
        assert_code(phone_user.post(SMSCODE, {}), 920, 502)
    finally:
        sms.add_key(backend_name, *key)
    refused = "SignatureDoesNotMatch" if backend_name == "aliyun" else "AuthFailure.SignatureFailure"
    assert [a[2] for a in answers(sms)] == [refused]
    assert sms.messages_to() == [] and codes_of(phone_user) == []
    # The refused send used none of the per-minute quota: another one at once goes through.
    assert_code(phone_user.post(SMSCODE, {}), 900, 200)
    assert len(codes_of(phone_user)) == 1


class Tamperer:
    """Between payapi and the SMS sandbox: forwards each request, changed by `change(path, query, body)`
    -> (query, body), as someone on the wire would; the signed headers (Host included) go as they are."""

    def __init__(self, target, change):
        self.target, self.change = target, change
        self.server = make_server("127.0.0.1", 0, self, handler_class=_Quiet)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        query, body = self.change(environ.get("QUERY_STRING", ""), body)
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        answer = requests.request(
            environ["REQUEST_METHOD"],
            f"{self.target}/?{query}" if query else self.target + "/",
            data=body,
            headers=headers,
            timeout=5,
        )
        start_response(f"{answer.status_code} X", [("Content-Type", answer.headers["Content-Type"])])
        return [answer.content]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.parametrize("provider", ["aliyun", "tencent"])
def test_a_request_changed_after_signing_is_refused_by_the_sandbox(fake_pingpp, sms, provider):
    """Someone on the wire sends the code to another number: the signature no longer verifies."""
    outcome = through(
        fake_pingpp,
        provider,
        lambda query, body: (
            query.replace("13800138000", "13900139000"),
            body.replace(b"+8613800138000", b"+8613900139000"),
        ),
    )
    assert (outcome.status, outcome.code) == (
        "failed",
        "SignatureDoesNotMatch" if provider == "aliyun" else "AuthFailure.SignatureFailure",
    )
    assert [r["phone"][-11:] for r in sms.requests] == ["13900139000"]  # it did arrive, changed
    assert sms.messages_to() == []


@pytest.mark.parametrize("provider", ["aliyun", "tencent"])
def test_the_same_relay_changing_nothing_is_accepted(fake_pingpp, sms, provider):
    assert through(fake_pingpp, provider, lambda query, body: (query, body)).accepted
    assert [m["code"] for m in sms.messages_to("13800138000")] == ["123456"]


def through(fake_pingpp, provider, change):
    """The provider's real SDK sending a code through a Tamperer to the sandbox."""
    tamperer = Tamperer(fake_pingpp.url, change)
    try:
        settings = Settings(**provider_config(tamperer.url))
        backend = AliyunSms(settings) if provider == "aliyun" else TencentSms(settings)
        outcome = backend.send("13800138000", "123456", "withdrawInfo", "")
    finally:
        tamperer.stop()
    return outcome


# --- each answer of the providers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend_name, fault, code, status, retry_after, provider_code",
    [
        ("aliyun", "limit", 906, 429, 60, "isv.BUSINESS_LIMIT_CONTROL"),
        ("tencent", "limit", 906, 429, 30, "LimitExceeded.PhoneNumberThirtySecondLimit"),
        ("aliyun", "illegal", 910, 403, None, "isv.MOBILE_NUMBER_ILLEGAL"),
        ("tencent", "illegal", 910, 403, None, "InvalidParameterValue.IncorrectPhoneNumber"),
        ("aliyun", "fail", 920, 502, None, "InternalError"),
        ("tencent", "fail", 920, 502, None, "InternalError"),
        ("aliyun", "hang", 920, 502, None, None),
        ("tencent", "hang", 920, 502, None, None),
    ],
)
def test_each_provider_answer_maps_and_an_unsent_code_costs_no_quota(
    phone_user, sms, backend_name, fault, code, status, retry_after, provider_code
):
    sms.fault_next(fault, backend_name, seconds=READ_TIMEOUT + 0.5)
    body = assert_code(phone_user.post(SMSCODE, {}), code, status)
    assert body.get("retry_after") == retry_after
    if provider_code:
        assert answers(sms) == [(backend_name, 500 if fault == "fail" else 200, provider_code)]
    else:
        assert answers(sms) == [(backend_name, "hang", f"hung {READ_TIMEOUT + 0.5:g} s")]
    assert codes_of(phone_user) == [] and sms.messages_to() == []
    assert_code(phone_user.post(SMSCODE, {}), 900, 200)  # at once: the per-minute quota is untouched
    assert_code(submit(phone_user, sms.last_code(phone_user.phone)), 900, 200)


@pytest.mark.parametrize(
    "backend_name, provider_code, code",
    [
        ("aliyun", "isv.AMOUNT_NOT_ENOUGH", 920),  # the account ran dry: not the user's doing
        ("aliyun", "isv.SMS_TEMPLATE_ILLEGAL", 920),
        ("tencent", "LimitExceeded.AppDailyLimit", 920),  # the whole application's quota, not the number's
        ("tencent", "FailedOperation.InsufficientBalanceInSmsPackage", 920),
        ("tencent", "UnsupportedOperation.UnsupportedRegion", 910),
    ],
)
def test_other_provider_codes(phone_user, sms, backend_name, provider_code, code):
    sms.fault_next("code", backend_name, code=provider_code)
    assert_code(phone_user.post(SMSCODE, {}), code, 403 if code == 910 else 502)
    assert codes_of(phone_user) == []


@pytest.mark.parametrize("backend_name", ["tencent"])
def test_a_daily_per_number_limit_waits_until_midnight_in_shanghai(phone_user, sms):
    sms.fault_next("code", "tencent", code="LimitExceeded.PhoneNumberDailyLimit")
    assert assert_code(phone_user.post(SMSCODE, {}), 906, 429)["retry_after"] == 15 * 3600


@pytest.mark.parametrize("backend_name", ["aliyun"])
@pytest.mark.parametrize(
    "message, retry_after",
    [
        ("触发分钟级流控Permits:1", 60),
        ("触发小时级流控Permits:5", 3600),
        ("触发天级流控Permits:10", 15 * 3600),
    ],
)
def test_aliyuns_limit_level_decides_retry_after(phone_user, sms, message, retry_after):
    sms.fault_next("code", "aliyun", code="isv.BUSINESS_LIMIT_CONTROL", message=message)
    assert assert_code(phone_user.post(SMSCODE, {}), 906, 429)["retry_after"] == retry_after


@both
def test_a_number_the_provider_finds_invalid_is_910(clock, make_user, sms):
    user = make_user(phone="12345").remint(ttl=30 * 86400)  # a usable claim for payapi, not for a provider
    assert assert_code(user.post(SMSCODE, {}), 910, 403)["msg"] == "该手机号无法接收短信"
    assert codes_of(user) == []


@both
def test_a_previous_code_stays_usable_when_a_new_one_is_not_sent(phone_user, sms, clock):
    assert_code(phone_user.post(SMSCODE, {}), 900, 200)
    first = sms.last_code(phone_user.phone)
    clock.shift(60)
    sms.fault_next("fail")
    assert_code(phone_user.post(SMSCODE, {}), 920, 502)
    assert_code(submit(phone_user, first), 900, 200)


# --- fail-over ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", ["aliyun,tencent"])
@pytest.mark.parametrize("fault", ["fail", "hang"])
def test_a_failing_aliyun_fails_over_to_tencent(phone_user, sms, fault):
    sms.fault_next(fault, "aliyun", seconds=READ_TIMEOUT + 0.5)
    assert_code(phone_user.post(SMSCODE, {}), 900, 200)
    [message] = sms.messages_to(phone_user.phone)
    assert message["provider"] == "tencent"
    assert [a[:2] for a in answers(sms)] == [("aliyun", 500 if fault == "fail" else "hang"), ("tencent", 200)]
    assert_code(submit(phone_user, message["code"]), 900, 200)


@pytest.mark.parametrize("backend_name", ["aliyun,tencent"])
def test_a_wrong_aliyun_secret_fails_over_to_tencent(phone_user, sms):
    sms.add_key("aliyun", ALIYUN_KEY[0], "rotated-at-the-console")
    try:
        assert_code(phone_user.post(SMSCODE, {}), 900, 200)
    finally:
        sms.add_key("aliyun", *ALIYUN_KEY)
    assert answers(sms) == [("aliyun", 400, "SignatureDoesNotMatch"), ("tencent", 200, "Ok")]


@pytest.mark.parametrize("backend_name", ["aliyun,tencent"])
def test_when_every_provider_fails_it_is_920_and_nothing_is_kept(phone_user, sms):
    sms.fault_next("fail", "any", times=2)
    assert_code(phone_user.post(SMSCODE, {}), 920, 502)
    assert [a[0] for a in answers(sms)] == ["aliyun", "tencent"]
    assert codes_of(phone_user) == []


@pytest.mark.parametrize("backend_name", ["aliyun,tencent"])
@pytest.mark.parametrize("fault, code", [("limit", 906), ("illegal", 910)])
def test_a_limit_or_refused_number_is_the_answer_no_other_provider_is_asked(phone_user, sms, fault, code):
    sms.fault_next(fault, "aliyun")
    assert_code(phone_user.post(SMSCODE, {}), code, 429 if code == 906 else 403)
    assert [a[0] for a in answers(sms)] == ["aliyun"]


# --- the log ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", ["aliyun,tencent"])
def test_the_outcome_is_logged_with_the_providers_request_id_never_the_code_or_a_secret(phone_user, sms, caplog):
    sms.fault_next("fail", "aliyun")
    with caplog.at_level("INFO", logger="payapi"):
        assert_code(phone_user.post(SMSCODE, {}), 900, 200)
    code = sms.last_code(phone_user.phone)
    ours = [r for r in caplog.records if r.name == "payapi.sms"]
    assert [(r.fields["provider"], r.fields["outcome"]) for r in ours] == [
        ("aliyun", "failed"),
        ("tencent", "accepted"),
    ]
    assert ours[1].fields["provider_request_id"] == sms.requests[-1]["request_id"]
    assert ours[1].fields["phone"] == "138****8000"
    service_lines = [r for r in caplog.records if not r.name.startswith("payapi.sandbox")]
    text = " ".join(
        f"{r.getMessage()} {json.dumps(getattr(r, 'fields', {}), ensure_ascii=False)}" for r in service_lines
    )
    assert code not in text
    assert ALIYUN_KEY[1] not in text and TENCENT_KEY[1] not in text


# --- the sandbox's command -----------------------------------------------------------------------------


def test_sandbox_sms_last_prints_the_code_for_any_form_of_the_number(phone_user, sms, fake_pingpp):
    assert_code(phone_user.post(SMSCODE, {}), 900, 200)
    env = {**os.environ, "PINGPP_API_BASE": fake_pingpp.url, "PYTHONPATH": ROOT}
    for phone in ("13800138000", "+8613800138000"):
        done = subprocess.run(
            [sys.executable, "-m", "payapi", "sandbox", "sms", "--last", phone],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stdout) == (0, sms.last_code(phone_user.phone) + "\n"), done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "payapi", "sandbox", "sms", "--last", "13900000000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "no SMS to 13900000000" in done.stderr
    page = webtest.TestApp(fake_pingpp).get("/_sandbox/")
    assert sms.last_code(phone_user.phone) in page.text and "13800138000" in page.text


def test_sandbox_sms_fault_and_list_commands_and_the_pages_form(phone_user, sms, fake_pingpp, clock):
    env = {**os.environ, "PINGPP_API_BASE": fake_pingpp.url, "PYTHONPATH": ROOT}

    def command(*args):
        return subprocess.run(
            [sys.executable, "-m", "payapi", "sandbox", "sms", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = command("--fault", "limit", "--provider", "aliyun")
    assert done.returncode == 0 and "limit" in done.stdout, done.stderr
    assert assert_code(phone_user.post(SMSCODE, {}), 906, 429)["retry_after"] == 60
    page = webtest.TestApp(fake_pingpp)
    answer = page.post("/_sandbox/sms/faults", {"provider": "aliyun", "kind": "illegal", "times": "1"})
    assert answer.status_int == 303 and "illegal" in answer.headers["Location"]
    assert_code(phone_user.post(SMSCODE, {}), 910, 403)
    assert_code(phone_user.post(SMSCODE, {}), 900, 200)
    done = command("--list")
    assert done.returncode == 0 and f"code {sms.last_code(phone_user.phone)}" in done.stdout
    assert "aliyun   13800138000" in done.stdout


# --- numbers, endpoints, settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone, aliyun, tencent",
    [
        ("13800138000", "13800138000", "+8613800138000"),
        ("+8613800138000", "13800138000", "+8613800138000"),
        ("008613800138000", "13800138000", "+8613800138000"),
        ("+85291234567", "85291234567", "+85291234567"),
    ],
)
def test_each_provider_gets_the_number_in_its_form(phone, aliyun, tencent):
    assert (aliyun_number(phone), e164(phone)) == (aliyun, tencent)


@pytest.mark.parametrize(
    "value, parsed",
    [
        ("dysmsapi.aliyuncs.com", ("https", "dysmsapi.aliyuncs.com")),
        ("http://127.0.0.1:8001", ("http", "127.0.0.1:8001")),
        ("https://sms.tencentcloudapi.com/", ("https", "sms.tencentcloudapi.com")),
    ],
)
def test_endpoints(value, parsed):
    assert parse_endpoint(value) == parsed


def test_make_backend_keeps_the_order_of_sms_backend():
    chain = make_backend(Settings(sms_backend="tencent, aliyun"))
    assert isinstance(chain, ProviderChain)
    assert [type(p) for p in chain.providers] == [TencentSms, AliyunSms]


@pytest.fixture
def production(tmp_path):
    public = tmp_path / "public.pem"
    from tests.support.pingpp import new_rsa_key, public_pem

    public.write_bytes(public_pem(new_rsa_key()))
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'payapi.db'}",
        "AUTH_SECRET": ",".join(AUTH_SECRETS),
        "SERVICE_KEY": SERVICE_KEY,
        "PINGPP_API_KEY": "sk_live_abc",
        "PINGPP_APP_ID": "app_abc",
        "PINGPP_PUBLIC_KEY_PATH": str(public),
        "SMS_BACKEND": "aliyun,tencent",
        "ALIYUN_ACCESS_KEY_ID": "LTAI5tProduction",
        "ALIYUN_ACCESS_KEY_SECRET": "secret",
        "ALIYUN_SMS_SIGN_NAME": "问诊平台",
        "ALIYUN_SMS_TEMPLATE_CODE": "SMS_154950909",
        "TENCENT_SECRET_ID": "AKIDProduction",
        "TENCENT_SECRET_KEY": "secret",
        "TENCENT_SMS_SDK_APP_ID": "1400787878",
        "TENCENT_SMS_SIGN_NAME": "问诊平台",
        "TENCENT_SMS_TEMPLATE_ID": "1110",
    }


def check(env, mode="production"):
    return problems(Settings.from_env({**env, "PAYAPI_ENV": mode}), SERVE)


def test_production_accepts_complete_provider_settings(production):
    assert check(production) == ([], [])
    assert check({**production, "SMS_BACKEND": "tencent"}) == ([], [])


@pytest.mark.parametrize(
    "missing",
    [
        "ALIYUN_ACCESS_KEY_ID",
        "ALIYUN_ACCESS_KEY_SECRET",
        "ALIYUN_SMS_SIGN_NAME",
        "ALIYUN_SMS_TEMPLATE_CODE",
        "TENCENT_SECRET_ID",
        "TENCENT_SECRET_KEY",
        "TENCENT_SMS_SDK_APP_ID",
        "TENCENT_SMS_SIGN_NAME",
        "TENCENT_SMS_TEMPLATE_ID",
    ],
)
def test_production_refuses_a_provider_with_a_missing_setting_in_one_line_naming_it(production, missing):
    refusals, warnings = check({k: v for k, v in production.items() if k != missing})
    assert len(refusals) == 1 and missing in refusals[0], refusals
    # Development runs with it, and says so.
    refusals, warnings = check({k: v for k, v in production.items() if k != missing}, "development")
    assert refusals == [] and any(missing in w for w in warnings)


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"ALIYUN_SMS_ENDPOINT": "http://sms.example.com"}, "ALIYUN_SMS_ENDPOINT: plain http"),
        ({"TENCENT_SMS_ENDPOINT": "ftp://x"}, "TENCENT_SMS_ENDPOINT"),
        ({"SMS_BACKEND": "aliyun,aliyun"}, "SMS_BACKEND must be"),
        ({"SMS_BACKEND": "aliyun,file"}, "SMS_BACKEND must be"),
        ({"SMS_BACKEND": "console"}, "SMS_BACKEND is console"),
    ],
)
def test_production_refuses_unsafe_sms_settings(production, changes, says):
    refusals, _ = check({**production, **changes})
    assert len(refusals) == 1 and says in refusals[0], refusals


def test_production_takes_a_local_sandbox_endpoint_and_warns_that_file_reaches_no_phone(production):
    assert check({**production, "ALIYUN_SMS_ENDPOINT": "http://127.0.0.1:8001"}) == ([], [])
    refusals, warnings = check({**production, "SMS_BACKEND": "file"})
    assert refusals == [] and any("reach no phone" in w for w in warnings)


@pytest.mark.parametrize("backend_name", ["tencent"])
def test_a_provider_without_its_settings_builds_in_development_and_every_send_is_920(
    database, settings, gateway, clock, caplog
):
    from tests.support.scenarios import User

    incomplete = dataclasses.replace(settings, env="development", tencent_secret_id="")
    app = webtest.TestApp(create_app(incomplete, gateway, make_backend(incomplete)))
    user = User(app, incomplete).remint(ttl=30 * 86400)
    with caplog.at_level("INFO", logger="payapi"):
        assert_code(user.post(SMSCODE, {}), 920, 502)
    [line] = [r for r in caplog.records if r.name == "payapi.sms"]
    assert (line.fields["outcome"], line.fields["provider_code"]) == ("failed", "InvalidCredential")
    assert codes_of(user) == []
