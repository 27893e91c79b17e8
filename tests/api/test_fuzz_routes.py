"""Whatever a phone POSTs, the answer is the JSON envelope with a documented code, never a 5xx."""

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from payapi.domain.ids import new_id

# The contract's table, without the 5xx rows: nothing a client sends may cause one here.
DOCUMENTED = {900: {200}, 901: {401}, 904: {400, 413}, 905: {403}, 906: {429}, 910: {403}, 911: {404}}

FIELDS = [
    "passwd", "old_passwd", "answer1", "answer2", "answer3",
    "smscode", "type", "id", "name", "purpose", "amount", "status",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities included: json.dumps writes them, the service must refuse them
    | st.text(max_size=80)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
plausible = st.sampled_from(
    ["alipay", "withdrawInfo", "success", "fail", "cancel", "invalid", "1000", "100", "0", "-1", "1e3",
     "10.5", " 1000", "", "   ", "x" * 64, "x" * 65, "x" * 128, "x" * 129, "Ａｂc", "名" * 33, 1000, 100, 0]
)  # fmt: skip
field_objects = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), plausible | json_values, max_size=7)
# Strings with lone surrogates: valid JSON escapes, not valid Unicode.
surrogate_text = st.text(st.characters(categories=["Cs", "Ll", "Nd"]), min_size=1, max_size=6)
surrogate_objects = st.dictionaries(st.sampled_from(FIELDS), surrogate_text, min_size=1, max_size=4)

# Bodies close to valid reach the checks behind the shape checks (secrets, locks, codes, rules).
GOOD = {
    "passwd": st.sampled_from(["right", "new-pass"]) | st.text(min_size=1, max_size=130),
    "old_passwd": st.sampled_from(["right", "new-pass", "wrong"]),
    "answer1": st.sampled_from(["a", " A ", "Ａ"]) | st.text(max_size=66),
    "answer2": st.sampled_from(["b", "B"]) | st.text(max_size=66),
    "answer3": st.sampled_from(["c", "C "]) | st.text(max_size=66),
    "smscode": st.from_regex(r"[0-9]{6}", fullmatch=True),
    "type": st.just("alipay"),
    "id": st.text(max_size=66),
    "name": st.text(max_size=34),
    "purpose": st.just("withdrawInfo"),
    "amount": st.sampled_from(["1000", "100", 5_000_000, 5_000_001]) | st.integers(0, 10**8),
    "status": st.sampled_from(["success", "fail", "cancel", "invalid"]),
}
# route -> (fields always sent, fields sometimes sent)
ROUTE_FIELDS = {
    "/rest/pay/passwd": (["passwd"], ["old_passwd"]),
    "/rest/pay/question": (["answer1", "answer2", "answer3"], ["passwd"]),
    "/rest/pay/withdrawInfo": (["smscode", "id", "name"], ["type"]),
    "/rest/pay/smscode": ([], ["purpose"]),
    "/rest/pay/withdraw": (["passwd", "amount"], []),
    "/rest/pay/{id}/status": (["status"], []),
}


def mostly_good(field):
    return st.one_of(GOOD[field], GOOD[field], GOOD[field], plausible, json_values)


def bodies(route):
    required, optional = ROUTE_FIELDS[route]
    near_valid = st.fixed_dictionaries(
        {f: mostly_good(f) for f in required}, optional={f: mostly_good(f) for f in optional}
    )
    if route == "/rest/pay/passwd":
        # Changing the password with the three answers instead of old_passwd.
        answers = st.fixed_dictionaries({f"answer{i}": mostly_good(f"answer{i}") for i in (1, 2, 3)})
        near_valid = st.one_of(near_valid, st.tuples(near_valid, answers).map(lambda t: {**t[0], **t[1]}))
    encoded = near_valid.map(lambda v: json.dumps(v).encode())
    return st.one_of(
        encoded,
        encoded,
        near_valid.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        field_objects.map(lambda v: json.dumps(v).encode()),
        surrogate_objects.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=300),
    )


ROUTES = [
    "/rest/pay/passwd",
    "/rest/pay/question",
    "/rest/pay/withdrawInfo",
    "/rest/pay/smscode",
    "/rest/pay/withdraw",
    "/rest/pay/{id}/status",
]


def assert_documented_envelope(response):
    assert response.content_type == "application/json", response.body
    body = json.loads(response.body)
    assert isinstance(body, dict) and isinstance(body.get("code"), int), body
    assert body["code"] in DOCUMENTED and response.status_int in DOCUMENTED[body["code"]], (response.status, body)
    if body["code"] != 900:
        assert isinstance(body.get("msg"), str) and body["msg"]
    if body["code"] == 906:
        assert isinstance(body["retry_after"], int) and body["retry_after"] >= 1
        assert response.headers["Retry-After"] == str(body["retry_after"])
    assert "Traceback" not in response.text


@pytest.mark.parametrize("route", ROUTES)
def test_any_post_body_gets_a_documented_envelope_and_never_a_5xx(route, make_user, order_service):
    user = make_user()
    # Give the deeper checks something to reach: a pay of this user, a password, answers, and
    # (except where it would leave only the rate limit to fuzz) a withdraw account.
    pay_id = order_service(userID=user.id).json["info"]["pay_id"]
    user.post("/rest/pay/passwd", {"passwd": "right"})
    user.post("/rest/pay/question", {"answer1": "a", "answer2": "b", "answer3": "c", "passwd": "right"})
    if route != "/rest/pay/smscode":
        user.post("/rest/pay/smscode", {})
        user.post("/rest/pay/withdrawInfo", {"smscode": user.last_sms_code(), "id": "acct", "name": "张三"})
        assert user.get("/rest/pay/checkInfo").json == {
            "code": 900,
            "passwd": True,
            "questions": True,
            "withdraw": True,
        }
    pay_ids = st.sampled_from([pay_id] * 4 + [new_id(), "abc", new_id().upper(), "0" * 24])

    @hypothesis_settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(raw=bodies(route), some_id=pay_ids)
    def post_anything(raw, some_id):
        response = user.post(route.format(id=some_id), raw=raw)
        assert_documented_envelope(response)

    post_anything()
