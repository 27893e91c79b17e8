"""Password routes shed load past two bcrypt requests per worker, before counting any attempt."""

import pytest

from payapi import security
from payapi.models import Lockout, Profile


@pytest.fixture
def bcrypt_slots_taken():
    """As if two other requests of this worker were waiting on bcrypt."""
    taken = [security._bcrypt_slots.acquire(blocking=False) for _ in range(security.MAX_WAITING_ON_BCRYPT)]
    assert all(taken)
    yield
    for _ in taken:
        security._bcrypt_slots.release()


@pytest.mark.parametrize(
    "path, body",
    [
        ("/rest/pay/passwd", {"passwd": "new", "old_passwd": "wrong"}),
        ("/rest/pay/question", {"answer1": "a", "answer2": "b", "answer3": "c", "passwd": "wrong"}),
        ("/rest/pay/withdraw", {"passwd": "wrong", "amount": "1000"}),
    ],
)
def test_a_third_bcrypt_request_in_a_worker_is_busy_and_counts_no_attempt(user, path, body, bcrypt_slots_taken):
    answer = user.post(path, body)
    assert answer.status_int == 429
    assert answer.json == {"code": 906, "msg": "系统繁忙，请稍后再试", "retry_after": 1}
    assert answer.headers["Retry-After"] == "1"
    assert Lockout.select().where(Lockout.user_id == user.id).count() == 0
    assert Profile.select().where(Profile.user_id == user.id).count() == 0


def test_a_slot_is_given_back_after_each_request(user):
    for _ in range(security.MAX_WAITING_ON_BCRYPT + 2):
        assert user.post("/rest/pay/passwd", {"passwd": "x"}).json["code"] in (900, 910)
    assert all(security._bcrypt_slots.acquire(blocking=False) for _ in range(security.MAX_WAITING_ON_BCRYPT))
    for _ in range(security.MAX_WAITING_ON_BCRYPT):
        security._bcrypt_slots.release()


def test_bad_input_is_still_904_when_busy(user, bcrypt_slots_taken):
    assert user.post("/rest/pay/passwd", {"passwd": 5}).json["code"] == 904
