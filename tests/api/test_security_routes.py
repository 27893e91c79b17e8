"""Routes 5-9: pay password, security answers, withdraw account, checkInfo; lockouts; hashes only."""

import datetime

import pytest
import webtest

from payapi.app import create_app
from payapi.http.auth import Authenticator
from payapi.infra.db import db
from payapi.infra.models import Lockout, Profile, Withdrawal
from payapi.users.security import secret_matches
from payapi.users.sms import FileSms

PASSWD = "/rest/pay/passwd"
QUESTION = "/rest/pay/question"
WITHDRAW_INFO = "/rest/pay/withdrawInfo"
CHECK_INFO = "/rest/pay/checkInfo"
WITHDRAW = "/rest/pay/withdraw"
ANSWERS = {"answer1": "first pet", "answer2": "mother's city", "answer3": "primary school"}
WRONG_ANSWERS = {"answer1": "first pet", "answer2": "mother's city", "answer3": "high school"}
THREE_HOURS = 3 * 3600
START = datetime.datetime(2026, 3, 10, 2, 0, tzinfo=datetime.UTC)


def code_of(response):
    return response.json["code"]


def assert_code(response, code, status):
    assert (response.status_int, response.json["code"]) == (status, code), response.json
    return response.json


def profile(user):
    return Profile.get_or_none(Profile.user_id == user.id)


def long_lived(user):
    """Re-mint the user's token so it outlives the time travel of a test."""
    return user.remint(ttl=30 * 86400)


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def travelling_user(clock, user):
    """A user whose token survives hours of travel; the clock is frozen at START."""
    return long_lived(user)


def set_passwd(user, passwd="pw-1", **extra):
    return user.post(PASSWD, {"passwd": passwd, **extra})


def set_answers(user, passwd=None, answers=ANSWERS):
    """The security answers, with the pay password when one is set (route 6 asks for it)."""
    body = answers if passwd is None else {**answers, "passwd": passwd}
    return assert_code(user.post(QUESTION, body), 900, 200)


def set_account(user, account_id="alipay-user@example.com", name="张三", **extra):
    assert code_of(user.post("/rest/pay/smscode", {})) == 900
    return user.post(WITHDRAW_INFO, {"smscode": user.last_sms_code(), "id": account_id, "name": name, **extra})


# --- route 5: pay password -----------------------------------------------------------------


def test_first_pay_password_is_set_without_proof(user):
    assert_code(set_passwd(user, "first"), 900, 200)
    assert user.get(CHECK_INFO).json["passwd"] is True


def test_pay_password_is_stored_as_a_bcrypt_hash(user):
    set_passwd(user, "clear-text-pay-passwd")
    stored = profile(user).passwd_hash
    assert stored.startswith("$2b$") and "clear-text-pay-passwd" not in stored
    assert secret_matches("clear-text-pay-passwd", stored) and not secret_matches("clear-text-pay-passwd!", stored)


def test_changing_pay_password_with_neither_proof_is_910(user):
    set_passwd(user, "first")
    before = profile(user).passwd_hash
    assert_code(set_passwd(user, "second"), 910, 403)
    assert profile(user).passwd_hash == before


def test_changing_pay_password_with_the_right_old_one_works_and_the_new_one_is_then_the_password(user):
    set_passwd(user, "first")
    assert_code(set_passwd(user, "second", old_passwd="first"), 900, 200)
    assert_code(set_passwd(user, "third", old_passwd="first"), 905, 403)
    assert_code(set_passwd(user, "third", old_passwd="second"), 900, 200)


def test_changing_pay_password_with_a_wrong_old_one_is_905_and_changes_nothing(user):
    set_passwd(user, "first")
    before = profile(user).passwd_hash
    assert_code(set_passwd(user, "second", old_passwd="First"), 905, 403)
    assert profile(user).passwd_hash == before
    assert_code(set_passwd(user, "third", old_passwd="first"), 900, 200)


def test_changing_pay_password_with_the_right_answers_works(user):
    set_passwd(user, "first")
    assert_code(user.post(QUESTION, {**ANSWERS, "passwd": "first"}), 900, 200)
    assert_code(set_passwd(user, "second", **ANSWERS), 900, 200)
    assert_code(set_passwd(user, "third", old_passwd="second"), 900, 200)


def test_changing_pay_password_with_wrong_answers_is_905(user):
    set_passwd(user, "first")
    set_answers(user, "first")
    before = profile(user).passwd_hash
    assert_code(set_passwd(user, "second", **WRONG_ANSWERS), 905, 403)
    assert profile(user).passwd_hash == before


@pytest.mark.parametrize("given", [("answer1",), ("answer1", "answer3"), ("answer2", "answer3")])
def test_one_or_two_answers_are_904(user, given):
    set_passwd(user, "first")
    set_answers(user, "first")
    assert_code(set_passwd(user, "second", **{k: ANSWERS[k] for k in given}), 904, 400)
    assert_code(set_passwd(user, "third", old_passwd="first"), 900, 200)


def test_answers_when_none_were_ever_set_are_910(user):
    set_passwd(user, "first")
    assert_code(set_passwd(user, "second", **ANSWERS), 910, 403)
    assert_code(set_passwd(user, "third", old_passwd="first"), 900, 200)


def test_old_passwd_is_the_one_checked_when_both_proofs_are_given(user):
    set_passwd(user, "first")
    set_answers(user, "first")
    assert_code(set_passwd(user, "second", old_passwd="wrong", **ANSWERS), 905, 403)
    assert_code(set_passwd(user, "second", old_passwd="first", **WRONG_ANSWERS), 900, 200)


@pytest.mark.parametrize(
    "passwd",
    [123456, 1.5, True, ["pw"], {"pw": 1}, None, "", "x" * 129],
    ids=["number", "float", "bool", "list", "object", "null", "empty", "129-chars"],
)
def test_ill_typed_or_sized_pay_password_is_904(user, passwd):
    assert_code(user.post(PASSWD, {"passwd": passwd}), 904, 400)
    assert profile(user) is None or profile(user).passwd_hash is None


def test_missing_pay_password_is_904(user):
    assert_code(user.post(PASSWD, {"old_passwd": "x"}), 904, 400)


@pytest.mark.parametrize("old", [123, "", ["first"], "y" * 129])
def test_ill_typed_old_passwd_is_904(user, old):
    set_passwd(user, "first")
    assert_code(set_passwd(user, "second", old_passwd=old), 904, 400)


def test_pay_password_of_128_characters_works_and_every_character_counts(user):
    long_one = "a" * 100 + "b" * 28
    assert_code(set_passwd(user, long_one), 900, 200)
    assert_code(set_passwd(user, "next", old_passwd="a" * 100 + "b" * 27 + "c"), 905, 403)
    assert_code(set_passwd(user, "next", old_passwd=long_one), 900, 200)


def test_pay_password_is_opaque_and_not_trimmed(user):
    assert_code(set_passwd(user, "  spaced  "), 900, 200)
    assert_code(set_passwd(user, "next", old_passwd="spaced"), 905, 403)
    assert_code(set_passwd(user, "next", old_passwd="  spaced  "), 900, 200)


# --- route 6: security answers -------------------------------------------------------------


@pytest.mark.parametrize("missing", ["answer1", "answer2", "answer3"])
def test_all_three_answers_are_required(user, missing):
    body = {k: v for k, v in ANSWERS.items() if k != missing}
    assert_code(user.post(QUESTION, body), 904, 400)
    assert user.get(CHECK_INFO).json["questions"] is False


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "\t\n", "x" * 65, 7, ["a"], {"a": "b"}, False],
    ids=["empty", "spaces", "whitespace", "65-chars", "number", "list", "object", "bool"],
)
def test_answer_that_is_empty_after_trimming_too_long_or_not_a_string_is_904(user, bad):
    assert_code(user.post(QUESTION, {**ANSWERS, "answer2": bad}), 904, 400)
    assert user.get(CHECK_INFO).json["questions"] is False


def test_answer_of_64_characters_after_trimming_is_accepted(user):
    assert_code(user.post(QUESTION, {**ANSWERS, "answer3": "  " + "é" * 64 + "  "}), 900, 200)
    assert user.get(CHECK_INFO).json["questions"] is True


def test_answers_compare_after_nfkc_trimming_and_case_folding(user):
    set_passwd(user, "first")
    assert_code(
        user.post(QUESTION, {"answer1": "  Ａｂc ", "answer2": "STRASSE", "answer3": "ﬁsh", "passwd": "first"}),
        900,
        200,
    )
    assert_code(set_passwd(user, "second", answer1="abc", answer2="straße", answer3=" FISH"), 900, 200)


def test_answers_are_stored_as_a_hash(user):
    user.post(QUESTION, ANSWERS)
    stored = profile(user).answers_hash
    assert stored.startswith("$2b$")
    assert not any(answer in stored for answer in ANSWERS.values())


def test_first_answers_need_the_pay_password_when_one_is_set(user):
    # API.md route 6 (changed): also the first answers need the pay password once one is set.
    set_passwd(user, "first")
    assert_code(user.post(QUESTION, ANSWERS), 910, 403)
    assert_code(user.post(QUESTION, {**ANSWERS, "passwd": "wrong"}), 905, 403)
    assert user.get(CHECK_INFO).json["questions"] is False
    assert_code(user.post(QUESTION, {**ANSWERS, "passwd": "first"}), 900, 200)
    assert user.get(CHECK_INFO).json["questions"] is True


def test_a_stolen_token_cannot_replace_the_pay_password_through_first_answers(make_user, pay_expert):
    victim = make_user()
    assert_code(set_passwd(victim, "victims-secret"), 900, 200)
    assert_code(set_account(victim), 900, 200)
    pay_expert(victim.id, 50_000)
    thief = victim  # the same token, in other hands; the thief does not know the pay password

    assert_code(thief.post(QUESTION, ANSWERS), 910, 403)
    assert_code(set_passwd(thief, "thiefs-secret", **ANSWERS), 910, 403)
    assert_code(thief.post(WITHDRAW, {"passwd": "thiefs-secret", "amount": "50000"}), 905, 403)

    assert profile(victim).answers_hash is None
    assert secret_matches("victims-secret", profile(victim).passwd_hash)
    assert victim.get("/rest/pay/balance").json["info"]["balance"] == 50_000
    assert Withdrawal.select().count() == 0


def test_replacing_answers_without_the_pay_password_is_910(user):
    set_passwd(user, "first")
    set_answers(user, "first")
    before = profile(user).answers_hash
    assert_code(user.post(QUESTION, WRONG_ANSWERS), 910, 403)
    assert profile(user).answers_hash == before


def test_replacing_answers_with_a_wrong_pay_password_is_905(user):
    set_passwd(user, "first")
    set_answers(user, "first")
    before = profile(user).answers_hash
    assert_code(user.post(QUESTION, {**WRONG_ANSWERS, "passwd": "second"}), 905, 403)
    assert profile(user).answers_hash == before


def test_replacing_answers_with_the_right_pay_password_makes_the_new_answers_count(user):
    set_passwd(user, "first")
    set_answers(user, "first")
    new = {"answer1": "one", "answer2": "two", "answer3": "three"}
    assert_code(user.post(QUESTION, {**new, "passwd": "first"}), 900, 200)
    assert_code(set_passwd(user, "second", **ANSWERS), 905, 403)
    assert_code(set_passwd(user, "second", **new), 900, 200)


def test_replacing_answers_without_a_pay_password_set_needs_nothing(user):
    user.post(QUESTION, ANSWERS)
    assert_code(user.post(QUESTION, {"answer1": "one", "answer2": "two", "answer3": "three"}), 900, 200)
    set_passwd(user, "first")
    assert_code(set_passwd(user, "second", answer1="one", answer2="two", answer3="three"), 900, 200)


# --- routes 7 and 8: withdraw account ------------------------------------------------------


def test_withdraw_account_is_empty_strings_when_none_is_set(user):
    assert user.get(WITHDRAW_INFO).json == {"code": 900, "info": {"type": "", "id": "", "name": ""}}


def test_withdraw_account_is_set_with_the_sms_code_and_read_back_trimmed(user):
    assert_code(set_account(user, account_id="  13800138000 ", name=" 张三 ", type="alipay"), 900, 200)
    assert user.get(WITHDRAW_INFO).json == {
        "code": 900,
        "info": {"type": "alipay", "id": "13800138000", "name": "张三"},
    }


def test_withdraw_account_type_defaults_to_alipay(user):
    assert_code(set_account(user), 900, 200)
    assert user.get(WITHDRAW_INFO).json["info"]["type"] == "alipay"


@pytest.mark.parametrize(
    "field, value",
    [
        ("type", "wx"),
        ("type", "ALIPAY"),
        ("type", ""),
        ("type", 1),
        ("id", ""),
        ("id", "   "),
        ("id", "i" * 65),
        ("id", 13800138000),
        ("id", None),
        ("name", ""),
        ("name", "  "),
        ("name", "名" * 33),
        ("name", ["张三"]),
        ("name", None),
        ("smscode", None),
        ("smscode", 123456),
        ("smscode", ""),
    ],
)
def test_ill_formed_withdraw_account_is_904_and_changes_nothing(user, field, value):
    assert code_of(user.post("/rest/pay/smscode", {})) == 900
    body = {"smscode": user.last_sms_code(), "type": "alipay", "id": "acct", "name": "张三"}
    body[field] = value
    if value is None:
        del body[field]
    assert_code(user.post(WITHDRAW_INFO, body), 904, 400)
    assert user.get(WITHDRAW_INFO).json["info"] == {"type": "", "id": "", "name": ""}


def test_withdraw_account_limits_are_64_and_32_characters_after_trimming(user):
    assert_code(set_account(user, account_id=" " + "i" * 64 + " ", name=" " + "名" * 32 + " "), 900, 200)
    assert user.get(WITHDRAW_INFO).json["info"] == {"type": "alipay", "id": "i" * 64, "name": "名" * 32}


def test_withdraw_account_with_a_token_without_phone_is_910(user, settings):
    user.post("/rest/pay/smscode", {})
    code = user.last_sms_code()
    user.token = Authenticator(settings.auth_secrets).mint(user.id)
    assert_code(user.post(WITHDRAW_INFO, {"smscode": code, "id": "acct", "name": "张三"}), 910, 403)
    assert user.get(WITHDRAW_INFO).json["info"]["id"] == ""


def test_replacing_the_withdraw_account_needs_a_new_code(travelling_user, clock):
    assert_code(set_account(travelling_user, account_id="old"), 900, 200)
    used = travelling_user.last_sms_code()
    assert_code(travelling_user.post(WITHDRAW_INFO, {"smscode": used, "id": "new", "name": "李四"}), 905, 403)
    clock.shift(61)
    assert_code(set_account(travelling_user, account_id="new", name="李四"), 900, 200)
    assert travelling_user.get(WITHDRAW_INFO).json["info"] == {"type": "alipay", "id": "new", "name": "李四"}


def test_withdraw_account_is_per_user(make_user):
    alice, bob = make_user(phone="13800000001"), make_user(phone="13800000002")
    set_account(alice, account_id="alice-acct")
    assert bob.get(WITHDRAW_INFO).json["info"]["id"] == ""
    assert bob.get(CHECK_INFO).json["withdraw"] is False


# --- route 9: checkInfo --------------------------------------------------------------------


def test_check_info_reflects_each_setting_as_it_is_made(user):
    assert user.get(CHECK_INFO).json == {"code": 900, "passwd": False, "questions": False, "withdraw": False}
    set_passwd(user, "first")
    assert user.get(CHECK_INFO).json == {"code": 900, "passwd": True, "questions": False, "withdraw": False}
    set_answers(user, "first")
    assert user.get(CHECK_INFO).json == {"code": 900, "passwd": True, "questions": True, "withdraw": False}
    set_account(user)
    assert user.get(CHECK_INFO).json == {"code": 900, "passwd": True, "questions": True, "withdraw": True}


def test_check_info_shows_answers_and_account_without_a_password(user):
    user.post(QUESTION, ANSWERS)
    set_account(user)
    assert user.get(CHECK_INFO).json == {"code": 900, "passwd": False, "questions": True, "withdraw": True}


# --- lockouts ------------------------------------------------------------------------------


def wrong_passwd(user, n, route=PASSWD):
    bodies = {
        PASSWD: {"passwd": "new", "old_passwd": "wrong"},
        QUESTION: {**ANSWERS, "passwd": "wrong"},
        WITHDRAW: {"passwd": "wrong", "amount": "1000"},
    }
    return [user.post(route, bodies[route]) for _ in range(n)]


def assert_locked(response, retry_after):
    body = assert_code(response, 906, 429)
    assert body["retry_after"] == retry_after
    assert response.headers["Retry-After"] == str(retry_after)


def test_four_wrong_pay_passwords_are_905_and_the_fifth_locks_for_three_hours(travelling_user):
    set_passwd(travelling_user, "right")
    for response in wrong_passwd(travelling_user, 4):
        assert_code(response, 905, 403)
    assert_locked(wrong_passwd(travelling_user, 1)[0], THREE_HOURS)
    row = Lockout.get(Lockout.user_id == travelling_user.id, Lockout.kind == "passwd")
    assert row.failures == 5
    assert row.locked_until == int(START.timestamp() * 1000) + THREE_HOURS * 1000


def test_locked_user_gets_906_even_with_the_right_password(travelling_user, clock):
    set_passwd(travelling_user, "right")
    wrong_passwd(travelling_user, 5)
    clock.shift(3600)
    assert_locked(set_passwd(travelling_user, "new", old_passwd="right"), 2 * 3600)
    clock.shift(2 * 3600 - 1)
    assert_locked(set_passwd(travelling_user, "new", old_passwd="right"), 1)
    assert secret_matches("right", profile(travelling_user).passwd_hash)


def test_lock_ends_three_hours_after_the_fifth_wrong_password(travelling_user, clock):
    set_passwd(travelling_user, "right")
    wrong_passwd(travelling_user, 4)
    clock.shift(600)
    wrong_passwd(travelling_user, 1)  # the fifth: the lock runs from here
    clock.shift(THREE_HOURS)
    assert_code(set_passwd(travelling_user, "new", old_passwd="right"), 900, 200)
    # The count starts again from zero.
    for response in wrong_passwd(travelling_user, 4):
        assert_code(response, 905, 403)


def test_right_password_before_the_fifth_resets_the_count(travelling_user):
    set_passwd(travelling_user, "right")
    wrong_passwd(travelling_user, 4)
    assert_code(set_passwd(travelling_user, "right2", old_passwd="right"), 900, 200)
    for response in wrong_passwd(travelling_user, 4):
        assert_code(response, 905, 403)
    assert_locked(wrong_passwd(travelling_user, 1)[0], THREE_HOURS)


def test_wrong_passwords_more_than_three_hours_apart_do_not_lock(travelling_user, clock):
    set_passwd(travelling_user, "right")
    wrong_passwd(travelling_user, 4)
    clock.shift(THREE_HOURS + 1)
    assert_code(wrong_passwd(travelling_user, 1)[0], 905, 403)


def test_five_wrong_passwords_within_three_hours_lock_however_long_ago_the_last_success_was(travelling_user, clock):
    set_passwd(travelling_user, "right")
    assert_code(set_passwd(travelling_user, "right", old_passwd="right"), 900, 200)
    clock.shift(THREE_HOURS - 60)
    for response in wrong_passwd(travelling_user, 4):
        assert_code(response, 905, 403)
    clock.shift(120)  # two minutes after the first wrong one, over three hours after the success
    assert_locked(wrong_passwd(travelling_user, 1)[0], THREE_HOURS)


def wrong_answers(user, n):
    return [set_passwd(user, "new", **WRONG_ANSWERS) for _ in range(n)]


WRONG = {"passwd": wrong_passwd, "answers": wrong_answers}


@pytest.mark.parametrize("kind", ["passwd", "answers"])
def test_five_wrong_across_the_old_fixed_window_edge_lock(travelling_user, clock, kind):
    # The old window opened at the first wrong attempt and started again 3 hours later, so three
    # wrong ones just before that edge and four just after (seven in two seconds) never locked.
    set_passwd(travelling_user, "right")
    set_answers(travelling_user, "right")
    assert_code(WRONG[kind](travelling_user, 1)[0], 905, 403)
    clock.shift(THREE_HOURS - 1)
    for response in WRONG[kind](travelling_user, 3):
        assert_code(response, 905, 403)
    clock.shift(2)  # the first one has left the last 3 hours; the other three have not
    assert_code(WRONG[kind](travelling_user, 1)[0], 905, 403)
    assert_locked(WRONG[kind](travelling_user, 1)[0], THREE_HOURS)


@pytest.mark.parametrize("kind", ["passwd", "answers"])
def test_the_window_slides_over_spread_out_wrong_attempts(travelling_user, clock, kind):
    set_passwd(travelling_user, "right")
    set_answers(travelling_user, "right")
    for _ in range(4):  # at 0:00, 0:50, 1:40, 2:30
        assert_code(WRONG[kind](travelling_user, 1)[0], 905, 403)
        clock.shift(50 * 60)
    # 3:20: the one at 0:00 has left the window, four remain.
    assert_code(WRONG[kind](travelling_user, 1)[0], 905, 403)
    clock.shift(10 * 60)
    # 3:30: 0:50, 1:40, 2:30, 3:20 and this one are five within 3 hours.
    assert_locked(WRONG[kind](travelling_user, 1)[0], THREE_HOURS)


def test_wrong_passwords_an_hour_apart_forever_never_lock(travelling_user, clock):
    set_passwd(travelling_user, "right")
    for _ in range(12):  # never more than three within any 3 hours
        assert_code(wrong_passwd(travelling_user, 1)[0], 905, 403)
        clock.shift(3600)
    assert_code(set_passwd(travelling_user, "right2", old_passwd="right"), 900, 200)


def test_a_right_password_forgets_the_wrong_ones_in_the_window(travelling_user, clock):
    set_passwd(travelling_user, "right")
    wrong_passwd(travelling_user, 4)
    clock.shift(60)
    assert_code(set_passwd(travelling_user, "right", old_passwd="right"), 900, 200)
    clock.shift(60)
    for response in wrong_passwd(travelling_user, 4):
        assert_code(response, 905, 403)
    assert_locked(wrong_passwd(travelling_user, 1)[0], THREE_HOURS)


def test_wrong_passwords_on_routes_4_5_and_6_count_together(travelling_user):
    set_passwd(travelling_user, "right")
    set_answers(travelling_user, "right")
    assert_code(set_account(travelling_user), 900, 200)
    for response in wrong_passwd(travelling_user, 2, PASSWD) + wrong_passwd(travelling_user, 1, QUESTION):
        assert_code(response, 905, 403)
    assert_code(wrong_passwd(travelling_user, 1, WITHDRAW)[0], 905, 403)
    assert_locked(wrong_passwd(travelling_user, 1, QUESTION)[0], THREE_HOURS)
    assert_locked(travelling_user.post(WITHDRAW, {"passwd": "right", "amount": "1000"}), THREE_HOURS)
    assert_locked(travelling_user.post(QUESTION, {**ANSWERS, "passwd": "right"}), THREE_HOURS)
    assert_locked(set_passwd(travelling_user, "new", old_passwd="right"), THREE_HOURS)


def test_withdraw_checks_the_lock_only_after_password_and_account_are_set(travelling_user):
    set_passwd(travelling_user, "right")
    wrong_passwd(travelling_user, 5)
    assert_code(travelling_user.post(WITHDRAW, {"passwd": "right", "amount": "1000"}), 910, 403)  # no account yet
    assert_code(travelling_user.post(WITHDRAW, {"passwd": "right", "amount": "1.5"}), 904, 400)


def test_right_password_on_withdraw_resets_the_count(travelling_user):
    set_passwd(travelling_user, "right")
    set_account(travelling_user)
    wrong_passwd(travelling_user, 4, WITHDRAW)
    # The password is right; the empty wallet is what refuses.
    assert_code(travelling_user.post(WITHDRAW, {"passwd": "right", "amount": "1000"}), 910, 403)
    for response in wrong_passwd(travelling_user, 4, WITHDRAW):
        assert_code(response, 905, 403)


def test_wrong_answers_have_their_own_counter(travelling_user):
    set_passwd(travelling_user, "right")
    set_answers(travelling_user, "right")
    for _ in range(4):
        assert_code(set_passwd(travelling_user, "new", **WRONG_ANSWERS), 905, 403)
    assert_locked(set_passwd(travelling_user, "new", **WRONG_ANSWERS), THREE_HOURS)
    assert_locked(set_passwd(travelling_user, "new", **ANSWERS), THREE_HOURS)
    # The pay password is not locked by wrong answers.
    assert_code(set_passwd(travelling_user, "right2", old_passwd="right"), 900, 200)


def test_locked_pay_password_can_be_replaced_with_the_answers_but_the_lock_stays(travelling_user, clock):
    set_passwd(travelling_user, "right")
    set_answers(travelling_user, "right")
    wrong_passwd(travelling_user, 5)
    assert_code(set_passwd(travelling_user, "fresh", **ANSWERS), 900, 200)
    assert secret_matches("fresh", profile(travelling_user).passwd_hash)
    # The lock is the user's, not the old password's: it runs its three hours.
    assert_locked(set_passwd(travelling_user, "x", old_passwd="fresh"), THREE_HOURS)
    clock.shift(THREE_HOURS)
    assert_code(set_passwd(travelling_user, "x", old_passwd="fresh"), 900, 200)


def test_right_answers_reset_their_count(travelling_user):
    set_passwd(travelling_user, "right")
    set_answers(travelling_user, "right")
    for _ in range(4):
        set_passwd(travelling_user, "new", **WRONG_ANSWERS)
    assert_code(set_passwd(travelling_user, "p2", **ANSWERS), 900, 200)
    for _ in range(4):
        assert_code(set_passwd(travelling_user, "new", **WRONG_ANSWERS), 905, 403)


def test_lockout_holds_across_app_instances_sharing_the_database(travelling_user, settings, gateway):
    set_passwd(travelling_user, "right")
    wrong_passwd(travelling_user, 5)
    other_worker = webtest.TestApp(create_app(settings, gateway, FileSms(settings.sms_file)))
    response = other_worker.post_json(
        PASSWD, {"passwd": "n", "old_passwd": "right"}, headers=travelling_user.headers, expect_errors=True
    )
    assert_locked(response, THREE_HOURS)


def test_lockout_is_per_user(travelling_user, make_user):
    other = long_lived(make_user(phone="13900000009"))
    set_passwd(travelling_user, "right")
    set_passwd(other, "right")
    wrong_passwd(travelling_user, 5)
    assert_code(set_passwd(other, "new", old_passwd="right"), 900, 200)


# --- secrets never stored in clear ---------------------------------------------------------


def all_stored_values():
    values = []
    for table in db.get_tables():
        cursor = db.execute_sql(f"SELECT * FROM {table}")
        for row in cursor.fetchall():
            values.extend(row)
    return values


def test_no_secret_is_stored_in_clear_anywhere_in_the_database(travelling_user, clock):
    passwd, new_passwd = "Clear-Pay-Passwd-1f9e", "Clear-Pay-Passwd-2b7c"
    answers = {"answer1": "Zebra Crossing 42", "answer2": "Quokka Island", "answer3": "Narwhal Tusk"}
    assert_code(set_passwd(travelling_user, passwd), 900, 200)
    assert_code(travelling_user.post(QUESTION, {**answers, "passwd": passwd}), 900, 200)
    assert_code(set_passwd(travelling_user, new_passwd, old_passwd=passwd), 900, 200)
    assert_code(travelling_user.post("/rest/pay/smscode", {}), 900, 200)
    code = travelling_user.last_sms_code()
    assert_code(
        travelling_user.post(
            WITHDRAW_INFO, {"smscode": "000000" if code != "000000" else "111111", "id": "a", "name": "n"}
        ),
        905,
        403,
    )
    clock.shift(61)
    assert_code(travelling_user.post("/rest/pay/smscode", {}), 900, 200)
    unused = travelling_user.last_sms_code()
    clock.shift(61)
    assert_code(set_account(travelling_user), 900, 200)
    used = travelling_user.last_sms_code()

    secrets = [passwd, new_passwd, *answers.values(), *(a.casefold() for a in answers.values())]
    texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in all_stored_values()]
    strings = [v for v in texts if isinstance(v, str)]
    assert any(v.startswith("$2b$") for v in strings)  # the hashes are there
    for secret in secrets:
        assert not any(secret in v for v in strings), secret
    for sms_code in {code, unused, used}:
        assert not any(sms_code in v for v in strings), sms_code
