"""Idempotency-Key on POST /rest/pay/withdraw, POST /internal/pays and POST /internal/pays/{id}/refunds."""

import dataclasses
import hashlib
import json
import threading
import time

import pytest
import time_machine
import webtest

from payapi.app import create_app
from payapi.domain.clock import now_ms
from payapi.domain.ids import is_id
from payapi.infra import idempotency
from payapi.infra.gateway import GatewayError
from payapi.infra.models import IdempotencyKey, Pay, Refund, Withdrawal
from payapi.users.sms import FileSms
from tests.support.config import SERVICE_KEY
from tests.support.databases import balance_of
from tests.support.pingpp import Scripted
from tests.support.scenarios import PASSWD, pay_request, set_up_expert


def service_post(app, path, body, key):
    return app.post(
        path,
        json.dumps(body).encode(),
        content_type="application/json",
        expect_errors=True,
        headers={"X-Service-Key": SERVICE_KEY, "Idempotency-Key": key},
    )


@pytest.fixture
def expert(make_user, pay_expert):
    user = set_up_expert(make_user())
    pay_expert(user.id, 10_000)
    return user


def user_withdraw(user, amount, key):
    return user.app.post(
        "/rest/pay/withdraw",
        json.dumps({"passwd": PASSWD, "amount": amount}).encode(),
        headers={**user.headers, "Idempotency-Key": key},
        content_type="application/json",
        expect_errors=True,
    )


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
    assert user_withdraw(expert, 50_000, "w-1").json["code"] == 910  # not replayed: it ran again
    assert user_withdraw(expert, 1_000, "w-1").json["code"] == 900  # the same key, a request that fits


def test_keys_are_scoped_to_the_caller(expert, make_user, pay_expert):
    other = set_up_expert(make_user(phone="13900139000"))
    pay_expert(other.id, 10_000)
    assert user_withdraw(expert, 1_000, "same").json["code"] == 900
    theirs = user_withdraw(other, 1_000, "same")
    assert (
        theirs.json["code"] == 900
        and theirs.json["withdraw_id"] != user_withdraw(expert, 1_000, "same").json["withdraw_id"]
    )


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
    refused = service_post(
        app, f"/internal/pays/{other['pay_id']}/refunds", {"amount": 1_000, "description": "退"}, "r-1"
    )
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


def test_a_refund_whose_answer_and_look_up_were_lost_is_pending_and_its_retry_makes_nothing_more(
    app_with, gateway, paid, fake_pingpp
):
    first = refund_with_key(app_with(answer_lost_then_unreachable(gateway)), paid, "r-1")
    assert (first.json["code"], first.json["refund"]["status"]) == (900, "pending")  # not 920: Ping++ may have made it
    again = refund_with_key(app_with(gateway), paid, "r-1")
    assert again.json == first.json
    (made,) = fake_pingpp.refunds.values()
    assert (made["amount"], made["metadata"]) == (1_000, {"refund_id": first.json["refund"]["refund_id"]})
    assert Refund.select().count() == 1


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


def test_an_unclear_refund_settled_by_its_event_is_made_once_and_its_retry_replays_the_answer(
    app_with, gateway, paid, fake_pingpp, send_event
):
    first = refund_with_key(app_with(answer_lost_then_unreachable(gateway)), paid, "r-1")
    assert first.json["code"] == 900
    (made_id,) = fake_pingpp.refunds
    assert send_event("refund.succeeded", fake_pingpp.settle_refund(made_id, "succeeded")).json["result"] == "applied"
    assert refund_with_key(app_with(gateway), paid, "r-1").json == first.json
    assert list(fake_pingpp.refunds) == [made_id]
    row = Refund.get()
    assert (row.refund_id, row.pingpp_refund_id, row.status) == (
        first.json["refund"]["refund_id"],
        made_id,
        "succeeded",
    )
    assert balance_of(paid["expert_id"]) == 9_000


def test_a_refund_key_used_again_after_24_hours_on_another_pay_refunds_that_pay(app, pay_expert, fake_pingpp):
    first, second = pay_expert("e" * 24, 10_000), pay_expert("e" * 24, 5_000)
    assert refund_with_key(app, first, "r-1").json["code"] == 900
    with time_machine.travel(time.time() + 24 * 3600 + 1, tick=False):
        answer = refund_with_key(app, second, "r-1").json
    assert answer["code"] == 900 and answer["refund"]["pay_id"] == second["pay_id"]
    assert sorted(r["charge"] for r in fake_pingpp.refunds.values()) == sorted(
        p["charge"]["id"] for p in (first, second)
    )
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


# --- the stored fingerprint: an HMAC under a server key ---------------------------------------------------


def plain_sha256(path, body):
    return hashlib.sha256(b"POST %s\n%s" % (path.encode(), json.dumps(body).encode())).hexdigest()


def app_with_secrets(settings, gateway, *auth_secrets):
    return webtest.TestApp(
        create_app(dataclasses.replace(settings, auth_secrets=auth_secrets), gateway, FileSms(settings.sms_file))
    )


def test_the_stored_fingerprint_is_keyed_so_the_row_does_not_give_the_body_away(database, settings, gateway):
    # A withdraw body holds the app's hash of a 6-digit pay password: a plain hash of the body
    # stored beside it is undone by trying the million bodies.
    body = pay_request()
    assert (
        service_post(
            app_with_secrets(settings, gateway, "one-server-secret-" + "a" * 32), "/internal/pays", body, "k-1"
        ).json["code"]
        == 900
    )
    assert (
        service_post(
            app_with_secrets(settings, gateway, "another-server-secret-" + "b" * 32), "/internal/pays", body, "k-2"
        ).json["code"]
        == 900
    )
    first, second = [row.request_hash for row in IdempotencyKey.select().order_by(IdempotencyKey.key)]
    assert plain_sha256("/internal/pays", body) not in (first, second)
    assert first != second  # the same request under another server key: another fingerprint


def test_a_retry_across_an_auth_secret_rotation_still_gets_its_answer(database, settings, gateway):
    body = pay_request()
    old, new = "the-secret-before-rotation-" + "c" * 32, "the-secret-after-rotation-" + "d" * 32
    first = service_post(app_with_secrets(settings, gateway, old), "/internal/pays", body, "k-1").json
    rotated = app_with_secrets(settings, gateway, new, old)
    assert service_post(rotated, "/internal/pays", body, "k-1").json == first
    assert service_post(rotated, "/internal/pays", {**body, "amount": 1}, "k-1").json["code"] == 904


def test_a_retry_of_a_request_fingerprinted_before_the_upgrade_still_gets_its_answer(app, database):
    # Rows written by the previous version hold a plain SHA-256; they live at most 24 hours.
    body = pay_request()
    stored = '{"code":900,"info":{"pay_id":"from-before-the-upgrade"}}'
    IdempotencyKey.create(
        scope="service POST /internal/pays",
        key="k-old",
        request_hash=plain_sha256("/internal/pays", body),
        status="done",
        answer=stored,
        lease_until=0,
        created_at=now_ms(),
    )
    again = service_post(app, "/internal/pays", body, "k-old")
    assert again.text == stored
    other = service_post(app, "/internal/pays", {**body, "amount": 1}, "k-old")
    assert (other.status_int, other.json["code"]) == (400, 904)


def test_a_refund_whose_first_attempt_broke_off_before_the_upgrade_keeps_its_refund_id(app, pay_expert, fake_pingpp):
    # The retry must find what the first attempt made at Ping++ by the id derived from its fingerprint.
    paid = pay_expert("e" * 24, 10_000)
    path, scope = f"/internal/pays/{paid['pay_id']}/refunds", "service POST /internal/pays/{pay_id}/refunds"
    legacy = plain_sha256(path, REFUND)
    first_at = now_ms()
    IdempotencyKey.create(
        scope=scope, key="r-old", request_hash=legacy, status="running", lease_until=0, created_at=first_at
    )
    answer = service_post(app, path, REFUND, "r-old")
    assert answer.json["code"] == 900
    assert answer.json["refund"]["refund_id"] == idempotency.derived_id(scope, "r-old", legacy, first_at)


def _seconds_of(object_id):
    return int(object_id[:8], 16)


def test_an_id_derived_from_a_key_is_an_object_id_of_the_first_attempts_time_on_every_retry(
    app_with, gateway, paid, fake_pingpp
):
    first_at = int(time.time())
    with time_machine.travel(first_at, tick=False):
        assert (
            refund_with_key(app_with(Scripted(gateway, create_refund=made_then_broke_off)), paid, "r-1").json["code"]
            == 999
        )
    with time_machine.travel(first_at + 120, tick=False):  # the order service asks again two minutes later
        again = refund_with_key(app_with(gateway), paid, "r-1").json
    refund_id = again["refund"]["refund_id"]
    assert is_id(refund_id) and _seconds_of(refund_id) == first_at
    (made,) = fake_pingpp.refunds.values()
    assert made["metadata"] == {"refund_id": refund_id}


def test_an_id_derived_from_a_key_reads_as_now(app, paid):
    refund_id = refund_with_key(app, paid, "r-1").json["refund"]["refund_id"]
    assert is_id(refund_id) and abs(_seconds_of(refund_id) - time.time()) < 60
    other = refund_with_key(app, paid, "r-2").json["refund"]["refund_id"]
    assert other[8:] != refund_id[8:]  # the rest comes from the key
