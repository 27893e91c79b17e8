"""Exactly-once under real concurrency: a real gunicorn (4 worker processes x threads) on the
test database, hit by many client threads released together.

Each test runs on every backend of `--db` (MariaDB is the one production uses; SQLite in WAL mode
with several processes must give the same answers). After each: no 5xx anywhere, and every
books balance and every wallet equals its postings (also checked by the `database` fixture's teardown).
"""

import secrets
import time
from collections import Counter

import pytest

from payapi.domain.ids import new_id
from payapi.infra.models import ClientReport, Event, Lockout, Pay, SmsCode, Wallet, Withdrawal
from payapi.money import payments
from payapi.money.payments import RETRIEVE_INTERVAL_MS
from tests.support.config import SERVICE_KEY
from tests.support.databases import assert_books_balance, ledger_of
from tests.support.live_server import expert, paid_charge, parallel
from tests.support.pingpp import event
from tests.support.scenarios import PASSWD

# One connection at a time per worker: a worker busy with one request takes no other, so a burst
# reaches several processes even when the machine is loaded and one of them runs first.
LIVE_SERVER = {"workers": 4, "worker_connections": 1}


def burst(server, n, call):
    """n requests released together; -> their answers. Several worker processes must have served them."""
    mark = server.mark()
    answers = parallel(n, call)
    deadline = time.monotonic() + 3  # a worker writes its access line just after the answer
    while sum((served := server.served_by(mark)).values()) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(served.values()) >= n and len(served) >= 2, f"one worker served the whole burst: {served}"
    return answers


def no_5xx(answers):
    assert not [a for a in answers if a.status >= 500], answers


def balance_of(user_id):
    wallet = Wallet.get_or_none(Wallet.user_id == user_id)
    return wallet.balance if wallet else 0


def withdrawer(server, fake, private_key, balance):
    """A user with a pay password, a withdraw account (set through an SMS code) and a balance."""
    user = expert(server, fake, private_key, balance)
    assert balance_of(user.id) == balance
    return user


def test_parallel_deliveries_of_one_event_credit_once(server, fake_pingpp, pingpp_keys):
    info, charge = paid_charge(server, fake_pingpp, money=8800, amount=9900)
    evt = event("charge.succeeded", charge)

    answers = burst(server, 30, lambda i: server.deliver(pingpp_keys[0], evt))

    assert all(200 <= a.status < 300 for a in answers), answers
    assert Counter(a.body["result"] for a in answers) == {"applied": 1, "replay": 29}
    assert balance_of(info["expert_id"]) == 8800
    assert len(ledger_of(info["expert_id"])) == 1
    assert Event.select().count() == 1
    assert Pay.get_by_id(info["pay_id"]).status == "paid"
    assert_books_balance()


def test_parallel_events_with_different_ids_for_one_charge_credit_once(server, fake_pingpp, pingpp_keys):
    info, charge = paid_charge(server, fake_pingpp, money=8800, amount=9900)

    answers = burst(server, 30, lambda i: server.deliver(pingpp_keys[0], event("charge.succeeded", charge)))

    assert all(200 <= a.status < 300 for a in answers), answers
    assert Counter(a.body["result"] for a in answers) == {"applied": 1, "ignored": 29}
    assert balance_of(info["expert_id"]) == 8800
    assert len(ledger_of(info["expert_id"])) == 1
    assert Event.select().count() == 30
    assert Pay.get_by_id(info["pay_id"]).status == "paid"
    assert_books_balance()


@pytest.mark.parametrize("n", [2, 10])
def test_parallel_pay_creation_for_one_order_makes_one_charge(server, fake_pingpp, n):
    order = {"o_id": "5" + secrets.token_hex(11) + "a", "userID": "6" * 24, "expert_id": "7" * 24}

    create = lambda i: server.internal_pay(**order, money=5000, amount=6000, channel="alipay")  # noqa: E731
    answers = burst(server, n, create) if n > 2 else parallel(n, create)

    no_5xx(answers)
    assert [a.code for a in answers] == [900] * n, answers
    pay_ids = {a.body["info"]["pay_id"] for a in answers}
    assert len(pay_ids) == 1, pay_ids
    (pay_id,) = pay_ids
    assert len(fake_pingpp.charge_creations(pay_id)) == 1
    assert len(fake_pingpp.charge_creations()) == 1  # no charge for a pay that was then dropped
    assert Pay.select().count() == 1 and Pay.get_by_id(pay_id).charge_id
    assert_books_balance()


BUSY = "系统繁忙，请稍后再试"  # this worker's bcrypt places are taken
IN_FLIGHT = "上一个请求仍在处理中，请稍后再试"  # this user's previous slow operation still runs
SHED = {BUSY, IN_FLIGHT}  # refused before any check


def test_parallel_withdrawals_for_one_user_make_one(server, fake_pingpp, pingpp_keys):
    user = withdrawer(server, fake_pingpp, pingpp_keys[0], balance=100_000)

    answers = burst(server, 24, lambda i: user.post("/rest/pay/withdraw", {"passwd": PASSWD, "amount": "10000"}))

    no_5xx(answers)
    codes = Counter(a.code for a in answers)
    # Exactly one withdrawal; the rest are "month used" (910) or shed before any check (906, retry
    # in a second): the user's previous one still runs, or past two bcrypt requests per worker.
    assert codes[900] == 1 and set(codes) <= {900, 910, 906}, answers
    assert all(a.body["msg"] in SHED and a.body["retry_after"] == 1 for a in answers if a.code == 906), answers
    assert Withdrawal.select().where(Withdrawal.user_id == user.id).count() == 1
    debits = [amount for kind, _, amount in ledger_of(user.id) if kind == "withdraw"]
    assert debits == [-10000]
    assert balance_of(user.id) == 90_000
    assert_books_balance()


def test_parallel_wrong_passwords_cannot_outrun_the_lockout(server):
    user = server.user()
    assert user.post("/rest/pay/passwd", {"passwd": PASSWD}).code == 900

    answers = burst(
        server, 12, lambda i: user.post("/rest/pay/passwd", {"passwd": "new-" + str(i), "old_passwd": "wrong"})
    )

    no_5xx(answers)
    # Guesses shed (the user's previous guess still being checked, or more than two bcrypt
    # requests in one worker) were never checked; go on guessing one at a time until the lock answers.
    for i in range(6):
        if any(a.code == 906 and a.body["msg"] not in SHED for a in answers):
            break
        answers.append(user.post("/rest/pay/passwd", {"passwd": f"again-{i}", "old_passwd": "wrong"}))
    codes = Counter(a.code for a in answers)
    # At most five guesses are checked; the one that reaches the limit is already answered 906.
    assert set(codes) <= {905, 906} and codes[905] <= 5, answers
    assert all(a.status == 429 and a.body["retry_after"] >= 1 for a in answers if a.code == 906)
    # The lock is in the database: whichever worker answers, the right password is refused too.
    for _ in range(4):
        answer = user.post("/rest/pay/passwd", {"passwd": "new", "old_passwd": PASSWD})
        assert answer.code == 906 and answer.body["retry_after"] > 3 * 3600 - 60, answer
    assert Lockout.get(Lockout.user_id == user.id, Lockout.kind == "passwd").failures == 5
    assert_books_balance()


def test_parallel_sms_requests_send_one_code(server):
    user = server.user()

    answers = burst(server, 10, lambda i: user.post("/rest/pay/smscode", {"purpose": "withdrawInfo"}))

    no_5xx(answers)
    assert Counter(a.code for a in answers) == {900: 1, 906: 9}, answers
    assert len(server.sms_codes(user.phone)) == 1
    assert SmsCode.select().where(SmsCode.user_id == user.id).count() == 1
    assert_books_balance()


def test_parallel_refund_replays_debit_once(server, fake_pingpp, pingpp_keys):
    info, charge = paid_charge(server, fake_pingpp, pingpp_keys[0], money=8800, amount=8800)
    refund = {
        "id": "re_" + secrets.token_hex(12),
        "object": "refund",
        "amount": 3000,
        "succeed": True,
        "status": "succeeded",
        "currency": "cny",
        "charge": charge["id"],
        "charge_order_no": info["pay_id"],
    }
    same = event("refund.succeeded", refund)
    # Half the deliveries replay one event id, half are new ids for the same refund.
    answers = burst(
        server, 30, lambda i: server.deliver(pingpp_keys[0], same if i % 2 else event("refund.succeeded", refund))
    )

    assert all(200 <= a.status < 300 for a in answers), answers
    results = Counter(a.body["result"] for a in answers)
    assert results["applied"] == 1 and results["applied"] + results["replay"] + results["ignored"] == 30, results
    assert balance_of(info["expert_id"]) == 8800 - 3000
    refunds = [amount for kind, _, amount in ledger_of(info["expert_id"]) if kind == "refund"]
    assert refunds == [-3000]
    pay = Pay.get_by_id(info["pay_id"])
    assert (pay.status, pay.amount_refunded) == ("paid", 3000)
    assert_books_balance()


def test_parallel_refund_requests_never_refund_more_than_was_paid(server, fake_pingpp, pingpp_keys):
    info, _ = paid_charge(server, fake_pingpp, pingpp_keys[0], money=10_000, amount=10_000)
    # Twenty requests of 3,000 each for a pay of 10,000: at most three fit.
    answers = burst(
        server,
        20,
        lambda i: server.post(
            f"/internal/pays/{info['pay_id']}/refunds",
            {"amount": 3000, "description": f"退款 {i}"},
            headers={"X-Service-Key": SERVICE_KEY},
        ),
    )
    no_5xx(answers)
    codes = Counter(a.code for a in answers)
    assert codes[900] == 3 and set(codes) <= {900, 910}, answers
    made = [r for r in fake_pingpp.refunds.values() if r["charge"] == info["charge"]["id"]]
    assert sorted(r["amount"] for r in made) == [3000, 3000, 3000]
    assert sum(a.body["refund"]["amount"] for a in answers if a.code == 900) == 9000
    assert balance_of(info["expert_id"]) == 10_000 - 9_000
    assert Pay.get_by_id(info["pay_id"]).amount_refunded == 9000
    assert_books_balance()


def test_parallel_success_reports_ask_ping_plus_plus_once_and_keep_one_row(server, fake_pingpp):
    payer = server.user()
    created = server.internal_pay(userID=payer.id)
    assert created.code == 900, created
    pay_id, charge_id = created.body["info"]["pay_id"], created.body["info"]["charge"]["id"]

    started = time.monotonic()
    answers = burst(server, 40, lambda i: payer.post(f"/rest/pay/{pay_id}/status", {"status": "success"}))
    took = time.monotonic() - started

    no_5xx(answers)
    assert [a.code for a in answers] == [900] * 40, answers
    retrieves = [r for r in fake_pingpp.requests if r[:2] == ("GET", f"/v1/charges/{charge_id}")]
    # One per pay and per RETRIEVE_INTERVAL_MS (a burst on a loaded machine may outlast one).
    assert 1 <= len(retrieves) <= 1 + int(took * 1000 // RETRIEVE_INTERVAL_MS), (len(retrieves), took)
    rows = list(ClientReport.select().where(ClientReport.pay_id == pay_id))
    assert [(r.status, r.times) for r in rows] == [("success", 40)]
    assert Pay.get_by_id(pay_id).status == "pending"
    assert_books_balance()


def test_a_payment_racing_creations_for_its_order_leaves_no_payable_pay(
    server, fake_pingpp, pingpp_keys, gateway, settings
):
    """charge.succeeded for an order's pay, applied while four POST /internal/pays for the same order
    (two the same, two replacing it) arrive: whatever the order of events, once the dust settles the
    order has its paid pay and nothing else a payer could still pay (issue 17: on MariaDB a creation
    that waited on the paying transaction's lock found no open pay and made a second payable one)."""
    expert_id, payer_id = new_id(), new_id()
    deadline = time.monotonic() + 20
    rounds = 0
    while rounds < 40 and time.monotonic() < deadline:
        rounds += 1
        o_id = new_id()
        order = {"o_id": o_id, "userID": payer_id, "expert_id": expert_id, "amount": 6000, "channel": "alipay"}
        info, charge = paid_charge(server, fake_pingpp, money=5000, **order)  # paid at Ping++, not yet told
        paid_event = event("charge.succeeded", charge)

        def call(i, order=order, paid_event=paid_event):
            if i == 0:
                return server.deliver(pingpp_keys[0], paid_event)
            return server.internal_pay(money=5000 if i % 2 else 5100, **order)

        answers = parallel(5, call)

        no_5xx(answers)
        # A replacement asks Ping++ about the pay it closes and may apply the payment first.
        assert answers[0].body["result"] in ("applied", "ignored"), answers
        assert {a.code for a in answers[1:]} <= {900, 910}, answers
        assert all(a.body["info"]["pay_id"] == info["pay_id"] for a in answers[1:] if a.code == 910), answers
        pays = list(Pay.select().where(Pay.o_id == o_id))
        assert [p.pay_id for p in pays if p.status == "paid"] == [info["pay_id"]]
        # Nothing else of the order stays payable: every other pay is closed, and its charge with it
        # (in the request, or by the worker's reversal pass).
        assert [(p.pay_id, p.status) for p in pays if p.status == "pending"] == [], (rounds, answers)
        payments.reverse_closed_pays(gateway, settings)
        for pay in pays:
            if pay.pay_id != info["pay_id"] and pay.charge_id:
                assert fake_pingpp.charges[pay.charge_id]["reversed"], (rounds, pay.pay_id, answers)
    assert_books_balance()
