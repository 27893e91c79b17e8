"""Idempotency-Key on POST /rest/pay/withdraw, POST /internal/pays and POST /internal/pays/{id}/refunds."""

import json
import threading
import time

import pytest
import time_machine

from payapi.infra.gateway import GatewayError
from payapi.infra.models import IdempotencyKey, Pay, Refund, Withdrawal
from tests.conftest import PASSWD, SERVICE_KEY, Scripted, balance_of, pay_request, set_up_expert


def service_post(app, path, body, key):
    return app.post(path, json.dumps(body).encode(), content_type="application/json", expect_errors=True,
                    headers={"X-Service-Key": SERVICE_KEY, "Idempotency-Key": key})


@pytest.fixture
def expert(make_user, pay_expert):
    user = set_up_expert(make_user())
    pay_expert(user.id, 10_000)
    return user


def user_withdraw(user, amount, key):
    return user.app.post("/rest/pay/withdraw", json.dumps({"passwd": PASSWD, "amount": amount}).encode(),
                         headers={**user.headers, "Idempotency-Key": key}, content_type="application/json",
                         expect_errors=True)


def test_a_withdrawal_retried_with_its_key_gets_the_first_answer_and_withdraws_once(expert):
    first = user_withdraw(expert, 1_000, "w-1")
    assert first.json["code"] == 900
    again = user_withdraw(expert, 1_000, "w-1")
    assert (again.status_int, again.json) == (200, first.json)
    assert Withdrawal.select().count() == 1


def test_the_same_key_with_another_body_is_904(expert):
    assert user_withdraw(expert, 1_000, "w-1").json["code"] == 900
    other = user_withdraw(expert, 2_000, "w-1")
    assert (other.status_int, other.json["code"]) == (400, 904)


def test_a_request_that_did_not_succeed_leaves_its_key_unused(expert):
    refused = user_withdraw(expert, 50_000, "w-1")  # more than the balance: 910
    assert refused.json["code"] == 910
    assert IdempotencyKey.select().count() == 0
    assert user_withdraw(expert, 1_000, "w-1").json["code"] == 900  # the same key, a request that fits


def test_keys_are_scoped_to_the_caller(expert, make_user, pay_expert):
    other = set_up_expert(make_user(phone="13900139000"))
    pay_expert(other.id, 10_000)
    assert user_withdraw(expert, 1_000, "same").json["code"] == 900
    theirs = user_withdraw(other, 1_000, "same")
    assert theirs.json["code"] == 900 and theirs.json["withdraw_id"] != user_withdraw(expert, 1_000, "same").json[
        "withdraw_id"]


def test_a_key_is_forgotten_after_24_hours(app, database):
    body = pay_request()
    first = service_post(app, "/internal/pays", body, "p-1").json
    with time_machine.travel(time.time() + 24 * 3600 + 1, tick=False):
        again = service_post(app, "/internal/pays", body, "p-1").json
    # Not a replay: the call ran again (the same pending pay is found by its order, not by the key).
    assert again["code"] == 900 and again["info"]["pay_id"] == first["info"]["pay_id"]
    assert again["info"]["updatedAt"] == first["info"]["updatedAt"]
    assert IdempotencyKey.select().count() == 1


@pytest.mark.parametrize("key", ["", "x" * 65, "ключ", "a\tb"])
def test_a_malformed_key_is_904(app, database, key):
    answer = service_post(app, "/internal/pays", pay_request(), key)
    assert (answer.status_int, answer.json["code"]) == (400, 904)
    assert Pay.select().count() == 0


def test_a_pay_creation_retried_after_a_lost_answer_gets_the_same_pay(app, database, fake_pingpp):
    body = pay_request()
    first = service_post(app, "/internal/pays", body, "order-1").json
    second = service_post(app, "/internal/pays", {**body}, "order-1").json
    assert first == second and len(fake_pingpp.charge_creations()) == 1


def test_a_refund_retried_with_its_key_is_made_once(app, pay_expert, fake_pingpp):
    paid = pay_expert("e" * 24, 10_000)
    path = f"/internal/pays/{paid['pay_id']}/refunds"
    first = service_post(app, path, {"amount": 1_000, "description": "退"}, "r-1")
    again = service_post(app, path, {"amount": 1_000, "description": "退"}, "r-1")
    assert first.json["code"] == 900 and again.json == first.json
    assert Refund.select().count() == 1 and len(fake_pingpp.refunds) == 1
    # The same key on another pay's refund is another request: 904.
    other = pay_expert("e" * 24, 5_000)
    refused = service_post(app, f"/internal/pays/{other['pay_id']}/refunds", {"amount": 1_000, "description": "退"}, "r-1")
    assert refused.json["code"] == 904


# --- a refund retried after its answer was lost -----------------------------------------------------

REFUND = {"amount": 1_000, "description": "退"}


def refund_with_key(app, pay, key, body=REFUND):
    return service_post(app, f"/internal/pays/{pay['pay_id']}/refunds", body, key)


def answer_lost_then_unreachable(gateway):
    """Ping++ makes the refund, then the connection goes: its answer, and every call after it, are lost."""
    down = []

    def create_refund(create, request):
        create(request)
        down.append(True)
        raise GatewayError("sandbox: answer lost")

    def list_refunds(listing, charge_id):
        if down:
            raise GatewayError("sandbox: Ping++ cannot be reached")
        return listing(charge_id)

    return Scripted(gateway, create_refund=create_refund, list_refunds=list_refunds)


def made_then_broke_off(create, request):
    create(request)
    raise RuntimeError("the request broke off after Ping++ made the refund")


@pytest.fixture
def paid(pay_expert):
    """A pay of 10,000 fen, paid; its expert credited 10,000."""
    return pay_expert("e" * 24, 10_000)


def test_a_refund_retried_after_a_920_whose_refund_ping_made_is_found_not_made_twice(app_with, gateway, paid,
                                                                                      fake_pingpp):
    first = refund_with_key(app_with(answer_lost_then_unreachable(gateway)), paid, "r-1")
    assert first.json["code"] == 920  # Ping++ made it, but we could not learn that
    again = refund_with_key(app_with(gateway), paid, "r-1")
    assert again.json["code"] == 900, again.json
    (made,) = fake_pingpp.refunds.values()
    assert (made["amount"], made["metadata"]) == (1_000, {"refund_id": again.json["refund"]["refund_id"]})
    assert Refund.select().count() == 1 and balance_of(paid["expert_id"]) == 9_000


def test_a_refund_retried_after_its_first_attempt_broke_off_uses_its_reservation_and_is_made_once(
    app_with, gateway, paid, fake_pingpp
):
    broke_off = refund_with_key(app_with(Scripted(gateway, create_refund=made_then_broke_off)), paid, "r-1")
    assert broke_off.json["code"] == 999
    again = refund_with_key(app_with(gateway), paid, "r-1")
    assert again.json["code"] == 900, again.json
    (made,) = fake_pingpp.refunds.values()
    assert made["metadata"] == {"refund_id": again.json["refund"]["refund_id"]}
    (row,) = Refund.select()
    assert (row.refund_id, row.pingpp_refund_id, row.amount) == (again.json["refund"]["refund_id"], made["id"], 1_000)
    assert balance_of(paid["expert_id"]) == 9_000


def test_a_refund_retried_after_its_refund_succeeded_event_gets_that_refund(app_with, gateway, paid, fake_pingpp,
                                                                           send_event):
    assert refund_with_key(app_with(answer_lost_then_unreachable(gateway)), paid, "r-1").json["code"] == 920
    (made_id,) = fake_pingpp.refunds
    assert send_event("refund.succeeded", fake_pingpp.settle_refund(made_id, "succeeded")).json["result"] == "applied"
    again = refund_with_key(app_with(gateway), paid, "r-1")
    assert again.json["code"] == 900, again.json
    assert (again.json["refund"]["amount"], again.json["refund"]["status"]) == (1_000, "succeeded")
    assert list(fake_pingpp.refunds) == [made_id]
    assert Refund.get().pingpp_refund_id == made_id and balance_of(paid["expert_id"]) == 9_000


def test_a_refund_key_used_again_after_24_hours_on_another_pay_refunds_that_pay(app, pay_expert, fake_pingpp):
    first, second = pay_expert("e" * 24, 10_000), pay_expert("e" * 24, 5_000)
    assert refund_with_key(app, first, "r-1").json["code"] == 900
    with time_machine.travel(time.time() + 24 * 3600 + 1, tick=False):
        answer = refund_with_key(app, second, "r-1").json
    assert answer["code"] == 900 and answer["refund"]["pay_id"] == second["pay_id"]
    assert sorted(r["charge"] for r in fake_pingpp.refunds.values()) == sorted(
        p["charge"]["id"] for p in (first, second))
    assert balance_of("e" * 24) == 15_000 - 2_000


def test_a_repeat_while_the_first_still_runs_is_906(app, database, fake_pingpp, settings):
    body = pay_request()
    fake_pingpp.slow[("POST", "/v1/charges")] = 0.6  # Ping++ takes its time with the first
    first = {}
    running = threading.Thread(target=lambda: first.update(answer=service_post(app, "/internal/pays", body, "k")))
    running.start()
    deadline = time.monotonic() + 5
    while not fake_pingpp.charge_creations() and time.monotonic() < deadline:
        time.sleep(0.01)
    during = service_post(app, "/internal/pays", body, "k")
    running.join(timeout=10)
    assert (during.status_int, during.json["code"], during.json["retry_after"]) == (429, 906, 1)
    assert first["answer"].json["code"] == 900
    assert service_post(app, "/internal/pays", body, "k").json == first["answer"].json
