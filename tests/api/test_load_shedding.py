"""bcrypt capacity is shared fairly: per user one slow operation at a time and a rate of their own;
per worker at most two requests wait on bcrypt. Refusals come before any attempt is counted."""

import dataclasses

import pytest
import time_machine
import webtest

from payapi.app import create_app
from payapi.domain.clock import now_ms
from payapi.infra.config import Settings
from payapi.infra.models import HashingTurn, Lockout, Profile
from payapi.users import security
from payapi.users.sms import FileSms
from tests.support.scenarios import User

DEFAULT_BURST = Settings().password_rate_burst

PASSWORD_ROUTES = [
    ("/rest/pay/passwd", {"passwd": "new", "old_passwd": "wrong"}),
    ("/rest/pay/question", {"answer1": "a", "answer2": "b", "answer3": "c", "passwd": "wrong"}),
    ("/rest/pay/withdraw", {"passwd": "wrong", "amount": "1000"}),
]


@pytest.fixture
def worker_slots_taken():
    """As if two other requests of this worker were waiting on bcrypt."""
    taken = [security.worker_slots.try_take() for _ in range(security.worker_slots.size)]
    assert all(taken)
    yield
    for _ in taken:
        security.worker_slots.give_back()


@pytest.mark.parametrize("path, body", PASSWORD_ROUTES)
def test_a_third_bcrypt_request_in_a_worker_is_busy_and_counts_no_attempt(user, path, body, worker_slots_taken):
    answer = user.post(path, body)
    assert answer.status_int == 429
    assert answer.json == {"code": 906, "msg": "系统繁忙，请稍后再试", "retry_after": 1}
    assert answer.headers["Retry-After"] == "1"
    assert Lockout.select().where(Lockout.user_id == user.id).count() == 0
    assert Profile.select().where(Profile.user_id == user.id).count() == 0
    # Nor does it use up the user's own rate, or keep their turn.
    turn = HashingTurn.get_by_id(user.id)
    assert turn.busy_until == 0 and turn.tat <= now_ms()


def test_a_slot_and_the_turn_are_given_back_after_each_request(user):
    for _ in range(security.MAX_WAITING_ON_BCRYPT + 2):
        assert user.post("/rest/pay/passwd", {"passwd": "x", "old_passwd": "x"}).json["code"] in (900, 910)
    assert all(security.worker_slots.try_take() for _ in range(security.worker_slots.size))
    for _ in range(security.worker_slots.size):
        security.worker_slots.give_back()
    assert HashingTurn.get_by_id(user.id).busy_until == 0


def test_bad_input_is_still_904_when_busy(user, worker_slots_taken):
    assert user.post("/rest/pay/passwd", {"passwd": 5}).json["code"] == 904


@pytest.mark.parametrize("path, body", PASSWORD_ROUTES)
def test_a_users_second_slow_operation_while_the_first_runs_is_906_and_others_are_served(
    make_user, settings, path, body
):
    looping, other = make_user(), make_user()
    with security.hashing_turn(settings, looping.id):  # as if one of their requests were on bcrypt now
        answer = looping.post(path, body)
        assert answer.status_int == 429
        assert answer.json == {"code": 906, "msg": "上一个请求仍在处理中，请稍后再试", "retry_after": 1}
        assert Lockout.select().where(Lockout.user_id == looping.id).count() == 0
        # Another user is not held up by it.
        assert other.post("/rest/pay/passwd", {"passwd": "p"}).json["code"] == 900
    assert looping.post("/rest/pay/passwd", {"passwd": "p"}).json["code"] == 900


@pytest.fixture
def make_rated_user(database, settings, gateway):
    """Users of an app with the default rate of password operations (the suite's own is generous)."""
    rated = dataclasses.replace(settings, password_rate_burst=DEFAULT_BURST, password_rate_interval=60)
    app = webtest.TestApp(create_app(rated, gateway, FileSms(settings.sms_file)))
    return lambda: User(app, rated)


def test_a_user_gets_a_burst_then_one_slow_operation_a_minute(make_rated_user):
    looping, other = make_rated_user(), make_rated_user()
    with time_machine.travel("2026-12-06T10:00:00Z", tick=False) as clock:
        looping.remint()
        other.remint()
        for _ in range(DEFAULT_BURST):
            assert (
                looping.post("/rest/pay/question", {"answer1": "a", "answer2": "b", "answer3": "c"}).json["code"] == 900
            )
        over = looping.post("/rest/pay/question", {"answer1": "a", "answer2": "b", "answer3": "c"})
        assert over.json == {"code": 906, "msg": "操作过于频繁，请稍后再试", "retry_after": 60}
        assert other.post("/rest/pay/passwd", {"passwd": "p"}).json["code"] == 900
        clock.shift(59)
        assert looping.post("/rest/pay/passwd", {"passwd": "p"}).json["retry_after"] == 1
        clock.shift(1)
        assert looping.post("/rest/pay/passwd", {"passwd": "p"}).json["code"] == 900
        assert looping.post("/rest/pay/passwd", {"passwd": "q", "old_passwd": "p"}).json["code"] == 906


def test_question_without_a_pay_password_is_no_free_hasher(make_rated_user):
    user = make_rated_user()
    codes = [
        user.post("/rest/pay/question", {"answer1": "a", "answer2": "b", "answer3": "c"}).json["code"]
        for _ in range(DEFAULT_BURST + 3)
    ]
    assert codes == [900] * DEFAULT_BURST + [906] * 3


def test_a_turn_left_by_a_killed_process_runs_out(user, settings):
    with time_machine.travel("2026-12-06T10:00:00Z", tick=False) as clock:
        user.remint()
        # A request took its turn (its row as hashing_turn writes it), then its process was killed.
        HashingTurn.create(user_id=user.id, busy_until=now_ms() + security.TURN_LEASE_MS, tat=now_ms())
        assert user.post("/rest/pay/passwd", {"passwd": "p"}).json["code"] == 906
        clock.shift(security.TURN_LEASE_MS / 1000)
        assert user.post("/rest/pay/passwd", {"passwd": "p"}).json["code"] == 900


def test_operator_logins_have_their_own_place_and_never_take_the_users(app, user, make_operator):
    headers = make_operator("alice")
    assert security.operator_slots.try_take()  # as if a flood of logins with made-up names filled it
    try:
        refused = app.get("/ops/api/trial-balance", headers=headers, expect_errors=True)
        assert (refused.status_int, refused.json["code"], refused.json["msg"]) == (429, 906, "系统繁忙，请稍后再试")
        assert user.post("/rest/pay/passwd", {"passwd": "p"}).json["code"] == 900
    finally:
        security.operator_slots.give_back()
    assert app.get("/ops/api/trial-balance", headers=headers).json["code"] == 900


def test_a_clock_behind_the_one_that_counted_does_not_lock_a_user_out(make_rated_user):
    user = make_rated_user()
    assert user.post("/rest/pay/passwd", {"passwd": "p"}).json["code"] == 900
    with time_machine.travel("2026-01-01T00:00:00Z", tick=False):  # another host, its clock days behind
        assert user.remint().post("/rest/pay/passwd", {"passwd": "q", "old_passwd": "p"}).json["code"] == 900
