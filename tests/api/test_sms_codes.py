"""SMS codes: POST /rest/pay/smscode (rate limits, hashed storage) and their use by withdrawInfo."""

import datetime
import re

import jwt
import pytest

from payapi.infra.models import Profile, SmsCode
from tests.support.config import AUTH_SECRETS

SMSCODE = "/rest/pay/smscode"
WITHDRAW_INFO = "/rest/pay/withdrawInfo"
UTC = datetime.UTC
# 09:00 in Shanghai.
START = datetime.datetime(2026, 3, 10, 1, 0, tzinfo=UTC)
NO_ACCOUNT = {"type": "", "id": "", "name": ""}


def assert_code(response, code, status):
    assert (response.status_int, response.json["code"]) == (status, code), response.json
    return response.json


def assert_limited(response, retry_after):
    body = assert_code(response, 906, 429)
    assert body["retry_after"] == retry_after
    assert response.headers["Retry-After"] == str(retry_after)


def remint(user, phone="keep"):
    """The same user with a token that outlives a test's time travel."""
    return user.remint(phone, ttl=30 * 86400)


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def travelling_user(clock, user):
    return remint(user)


def codes_of(user):
    return list(SmsCode.select().where(SmsCode.user_id == user.id).order_by(SmsCode.created_at))


def account_of(user):
    return user.get(WITHDRAW_INFO).json["info"]


def submit(user, code, account_id="acct-1", name="张三"):
    return user.post(WITHDRAW_INFO, {"smscode": code, "type": "alipay", "id": account_id, "name": name})


def other_code(code):
    return f"{(int(code) + 1) % 10**6:06d}"


# --- sending -------------------------------------------------------------------------------


def test_code_is_sent_to_the_tokens_phone_with_purpose_withdraw_info_by_default(travelling_user):
    assert assert_code(travelling_user.post(SMSCODE, {}), 900, 200) == {"code": 900}
    code = travelling_user.last_sms_code()
    assert re.fullmatch(r"[0-9]{6}", code)
    [row] = codes_of(travelling_user)
    assert (row.purpose, row.phone, row.tries, row.used_at) == ("withdrawInfo", travelling_user.phone, 0, None)
    assert row.expires_at - row.created_at == 5 * 60 * 1000


def test_explicit_withdraw_info_purpose_is_accepted(travelling_user):
    assert_code(travelling_user.post(SMSCODE, {"purpose": "withdrawInfo"}), 900, 200)
    assert len(codes_of(travelling_user)) == 1


@pytest.mark.parametrize("purpose", ["login", "", "WITHDRAWINFO", 1, ["withdrawInfo"]])
def test_other_purpose_is_904_and_sends_nothing(travelling_user, purpose):
    assert_code(travelling_user.post(SMSCODE, {"purpose": purpose}), 904, 400)
    assert codes_of(travelling_user) == []


def test_token_without_phone_claim_is_910_and_sends_nothing(travelling_user):
    remint(travelling_user, phone=None)
    assert_code(travelling_user.post(SMSCODE, {}), 910, 403)
    assert codes_of(travelling_user) == []


def with_phone_claim(user, phone):
    """The user's token with any JSON value as its phone claim, as a buggy account service might mint it."""
    user.token = jwt.encode({"sub": user.id, "exp": int(START.timestamp()) + 86400, "phone": phone}, AUTH_SECRETS[0])
    return user


UNUSABLE_PHONES = [
    "1" * 33,
    "1" * 21,
    "+" + "1" * 21,
    "1" * 1000,
    "1234",
    "+",
    "",
    "++13800138000",
    "138 0013 8000",
    "13800138000\n",
    "+86-138-0013-8000",
    "１３８００１３８０００",
    "١٣٨٠٠١٣٨٠٠٠",
    "电话" * 20,
    "13800138000\u0000",
    13800138000,
    1.5,
    True,
    ["13800138000"],
    {"number": "13800138000"},
]


@pytest.mark.parametrize("phone", UNUSABLE_PHONES, ids=lambda p: repr(p)[:24])
def test_an_unusable_phone_claim_is_no_phone_910_on_both_routes_never_999(travelling_user, phone):
    with_phone_claim(travelling_user, phone)
    assert_code(travelling_user.get("/rest/pay/checkInfo"), 900, 200)  # the token itself is fine
    assert assert_code(travelling_user.post(SMSCODE, {}), 910, 403)["msg"] == "账号未绑定可用的手机号"
    assert codes_of(travelling_user) == []
    assert_code(submit(travelling_user, "123456"), 910, 403)
    assert account_of(travelling_user) == NO_ACCOUNT


@pytest.mark.parametrize("phone", ["13800138000", "+8613800138000", "12345", "1" * 20, "+" + "9" * 20])
def test_a_usable_phone_claim_gets_its_code(travelling_user, phone):
    travelling_user.phone = phone
    with_phone_claim(travelling_user, phone)
    assert_code(travelling_user.post(SMSCODE, {}), 900, 200)
    assert [row.phone for row in codes_of(travelling_user)] == [phone]
    assert_code(submit(travelling_user, travelling_user.last_sms_code()), 900, 200)


def test_code_is_stored_only_as_a_hash(travelling_user):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    [row] = codes_of(travelling_user)
    assert row.code_hash != code and code not in row.code_hash
    assert re.fullmatch(r"[0-9a-f]{64}", row.code_hash)


def test_second_code_within_a_minute_is_906_with_retry_after(travelling_user, clock):
    assert_code(travelling_user.post(SMSCODE, {}), 900, 200)
    clock.shift(30)
    assert_limited(travelling_user.post(SMSCODE, {}), 30)
    clock.shift(29)
    assert_limited(travelling_user.post(SMSCODE, {}), 1)
    clock.shift(1)
    assert_code(travelling_user.post(SMSCODE, {}), 900, 200)
    assert len(codes_of(travelling_user)) == 2


def test_refused_request_does_not_count(travelling_user, clock):
    assert_code(travelling_user.post(SMSCODE, {}), 900, 200)
    clock.shift(50)
    assert_limited(travelling_user.post(SMSCODE, {}), 10)
    clock.shift(10)  # a minute after the first; 10 s after the refused one
    assert_code(travelling_user.post(SMSCODE, {}), 900, 200)
    assert len(codes_of(travelling_user)) == 2


def test_eleventh_code_in_a_day_is_906_until_midnight_in_shanghai(travelling_user, clock):
    for _ in range(10):
        assert_code(travelling_user.post(SMSCODE, {}), 900, 200)
        clock.shift(3600)
    # 19:00 in Shanghai: five hours to midnight.
    assert_limited(travelling_user.post(SMSCODE, {}), 5 * 3600)
    clock.shift(4 * 3600)
    assert_limited(travelling_user.post(SMSCODE, {}), 3600)
    assert len(codes_of(travelling_user)) == 10
    clock.shift(3600)
    assert_code(travelling_user.post(SMSCODE, {}), 900, 200)


def test_the_day_is_the_calendar_day_in_shanghai_not_in_utc(time_machine, user):
    # 23:00 in Shanghai, still 15:00 on the same UTC day as the next attempts.
    time_machine.move_to(datetime.datetime(2026, 3, 10, 15, 0, tzinfo=UTC), tick=False)
    remint(user)
    for _ in range(10):
        assert_code(user.post(SMSCODE, {}), 900, 200)
        time_machine.shift(61)
    time_machine.move_to(datetime.datetime(2026, 3, 10, 15, 50, tzinfo=UTC), tick=False)
    assert_limited(user.post(SMSCODE, {}), 600)
    time_machine.move_to(datetime.datetime(2026, 3, 10, 16, 0, tzinfo=UTC), tick=False)
    assert_code(user.post(SMSCODE, {}), 900, 200)


def test_rate_limits_are_per_user(travelling_user, make_user):
    other = remint(make_user(phone="13900000001"))
    assert_code(travelling_user.post(SMSCODE, {}), 900, 200)
    assert_code(other.post(SMSCODE, {}), 900, 200)


# --- using a code (route 7) ----------------------------------------------------------------


def test_right_code_sets_the_account_and_is_used_up(travelling_user):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    assert_code(submit(travelling_user, code), 900, 200)
    assert account_of(travelling_user) == {"type": "alipay", "id": "acct-1", "name": "张三"}
    assert codes_of(travelling_user)[0].used_at is not None
    assert_code(submit(travelling_user, code, account_id="acct-2"), 905, 403)
    assert account_of(travelling_user)["id"] == "acct-1"


def test_no_code_ever_sent_is_905(travelling_user):
    assert_code(submit(travelling_user, "123456"), 905, 403)
    assert account_of(travelling_user) == NO_ACCOUNT


def test_wrong_code_is_905_counts_a_try_and_changes_nothing(travelling_user):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    assert_code(submit(travelling_user, other_code(code)), 905, 403)
    assert account_of(travelling_user) == NO_ACCOUNT
    assert not Profile.select().where(Profile.user_id == travelling_user.id, Profile.account_id != "").exists()
    assert codes_of(travelling_user)[0].tries == 1
    assert_code(submit(travelling_user, code), 900, 200)


def test_four_wrong_tries_still_leave_the_right_code_usable(travelling_user):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    for _ in range(4):
        assert_code(submit(travelling_user, other_code(code)), 905, 403)
    assert_code(submit(travelling_user, code), 900, 200)


def test_five_wrong_tries_kill_the_code(travelling_user):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    for _ in range(5):
        assert_code(submit(travelling_user, other_code(code)), 905, 403)
    assert_code(submit(travelling_user, code), 905, 403)
    assert account_of(travelling_user) == NO_ACCOUNT
    assert codes_of(travelling_user)[0].tries == 5


def test_a_new_code_works_after_the_old_one_was_killed(travelling_user, clock):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    for _ in range(5):
        submit(travelling_user, other_code(code))
    clock.shift(60)
    travelling_user.post(SMSCODE, {})
    assert_code(submit(travelling_user, travelling_user.last_sms_code()), 900, 200)


def test_code_expires_after_five_minutes(travelling_user, clock):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    clock.shift(5 * 60)
    assert_code(submit(travelling_user, code), 905, 403)
    assert account_of(travelling_user) == NO_ACCOUNT


def test_code_is_valid_just_before_five_minutes(travelling_user, clock):
    travelling_user.post(SMSCODE, {})
    clock.shift(5 * 60 - 1)
    assert_code(submit(travelling_user, travelling_user.last_sms_code()), 900, 200)


def test_code_sent_to_another_phone_is_905(travelling_user):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    remint(travelling_user, phone="13900139999")  # the user's number changed since the code was sent
    assert_code(submit(travelling_user, code), 905, 403)
    assert account_of(travelling_user) == NO_ACCOUNT


def test_older_code_is_905_once_a_newer_one_was_sent(travelling_user, clock):
    travelling_user.post(SMSCODE, {})
    older = travelling_user.last_sms_code()
    clock.shift(60)
    travelling_user.post(SMSCODE, {})
    newer = travelling_user.last_sms_code()
    if older != newer:  # one chance in a million they are equal
        assert_code(submit(travelling_user, older), 905, 403)
        assert account_of(travelling_user) == NO_ACCOUNT
    assert_code(submit(travelling_user, newer), 900, 200)


def test_another_users_code_is_905(travelling_user, make_user):
    other = remint(make_user(phone=travelling_user.phone))
    other.post(SMSCODE, {})
    code = other.last_sms_code()
    assert_code(submit(travelling_user, code), 905, 403)
    assert_code(submit(other, code), 900, 200)
    assert account_of(travelling_user) == NO_ACCOUNT


@pytest.mark.parametrize(
    "body",
    [
        {"type": "wx", "id": "acct", "name": "张三"},
        {"id": "", "name": "张三"},
        {"id": "acct"},
        {"id": "acct", "name": "名" * 33},
    ],
    ids=["type", "empty-id", "no-name", "long-name"],
)
def test_body_is_validated_before_the_code_so_a_bad_body_burns_no_try(travelling_user, body):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    for _ in range(6):
        assert_code(travelling_user.post(WITHDRAW_INFO, {"smscode": code, **body}), 904, 400)
        assert_code(travelling_user.post(WITHDRAW_INFO, {"smscode": other_code(code), **body}), 904, 400)
    assert codes_of(travelling_user)[0].tries == 0
    assert_code(submit(travelling_user, code), 900, 200)


def test_token_without_phone_is_910_and_burns_no_try(travelling_user):
    travelling_user.post(SMSCODE, {})
    code = travelling_user.last_sms_code()
    phone = travelling_user.phone
    remint(travelling_user, phone=None)
    for _ in range(6):
        assert_code(submit(travelling_user, other_code(code)), 910, 403)
    assert codes_of(travelling_user)[0].tries == 0
    remint(travelling_user, phone=phone)
    assert_code(submit(travelling_user, code), 900, 200)
