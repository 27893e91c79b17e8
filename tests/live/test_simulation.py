"""A seeded simulation in the spirit of TigerBeetle's: random pays, payments, replays and races,
partial refunds (some with their answers lost, some with Ping++ unreachable afterwards too),
withdrawals and transfer outcomes against the real gunicorn, worker passes on several "hosts" at
once, with Ping++ (the sandbox) settling things in random order. After every step the books
balance, every wallet equals its postings and no paid order has a payable pay; after the run,
reconciling with Ping++ finds nothing different.

A failing seed is printed; run it again with PAYAPI_SIMULATION_SEEDS=<seed>.
"""

import datetime
import json
import os
import random
import time

import pytest
import time_machine

from payapi import worker
from payapi.infra.models import Pay, Refund, Withdrawal
from payapi.money import books, reconciliation, refunds
from tests.support.config import SERVICE_KEY
from tests.support.live_server import parallel
from tests.support.pingpp import event

SEEDS = [int(s) for s in os.environ.get("PAYAPI_SIMULATION_SEEDS", "11,23,41").split(",")]
STEPS = int(os.environ.get("PAYAPI_SIMULATION_STEPS", "45"))
PASSWD = "e10adc3949ba59abbe56e057f20f883e"


LIVE_SERVER = {"workers": 2}


class Simulation:
    def __init__(self, seed, server, sandbox, key, settings, gateway):
        self.rng = random.Random(seed)
        self.server, self.sandbox, self.key = server, sandbox, key
        self.settings, self.gateway = settings, gateway
        self.experts = [self._expert() for _ in range(3)]
        self.log = []
        self.lost_refunds = 0

    def _expert(self):
        user = self.server.user()
        assert user.post("/rest/pay/passwd", {"passwd": PASSWD}).code == 900
        assert user.post("/rest/pay/smscode", {}).code == 900
        code = self.server.sms_codes(user.phone)[-1]
        account = {"smscode": code, "type": "alipay", "id": f"{user.id}@example.com", "name": "张三"}
        assert user.post("/rest/pay/withdrawInfo", account).code == 900
        return user

    def pick(self, rows):
        return self.rng.choice(rows) if rows else None

    def deliver(self, event_type, obj, times=1):
        evt = event(event_type, obj)
        answers = parallel(times, lambda i: self.server.deliver(self.key, evt if i % 2 else event(event_type, obj)))
        assert all(a.status == 200 for a in answers), answers

    # --- the steps ----------------------------------------------------------------------------

    def create_pay(self):
        expert = self.pick(self.experts)
        answer = self.server.internal_pay(expert_id=expert.id, amount=self.rng.choice([100, 999, 1_001, 10_000]))
        assert answer.code == 900, answer

    def pay(self):
        pay = self.pick(list(Pay.select().where(Pay.status == "pending")))
        if pay is None:
            return
        charge = self.sandbox.mark_paid(pay.charge_id)
        if self.rng.random() < 0.8:  # else its webhook is lost; reconciliation heals it
            self.deliver("charge.succeeded", charge, times=self.rng.choice([1, 1, 4]))

    def pay_while_the_order_is_asked_for_again(self):
        """A payment's webhook racing the order service asking again for the same order, at the same
        price or another (a replacement): the order ends up paid once, with nothing else payable."""
        pay = self.pick(list(Pay.select().where(Pay.status == "pending", Pay.type == "order")))
        if pay is None:
            return
        charge = self.sandbox.mark_paid(pay.charge_id)
        evt = event("charge.succeeded", charge)
        order = {"o_id": pay.o_id, "userID": pay.user_id, "expert_id": pay.expert_id, "amount": pay.amount}
        prices = [pay.money] + [self.rng.choice([pay.money, pay.money + 1]) for _ in range(self.rng.choice([1, 3]))]

        def call(i):
            return self.server.deliver(self.key, evt) if i == 0 else self.server.internal_pay(**order, money=prices[i])

        answers = parallel(len(prices), call)
        assert answers[0].status == 200 and all(a.code in (900, 910) for a in answers[1:]), answers

    def report_cancel(self):
        pay = self.pick(list(Pay.select().where(Pay.status == "pending")))
        if pay is not None:
            payer = self.server.user()
            payer.id = pay.user_id
            from payapi.http.auth import Authenticator
            from tests.support.config import AUTH_SECRETS

            payer.headers["auth"] = Authenticator(AUTH_SECRETS).mint(pay.user_id)
            assert payer.post(f"/rest/pay/{pay.pay_id}/status", {"status": "cancel"}).code == 900

    def refund(self):
        pay = self.pick(list(Pay.select().where(Pay.status == "paid")))
        if pay is None:
            return
        amount = self.rng.randint(1, pay.money)
        racers = self.rng.choice([1, 1, 3])
        answers = parallel(
            racers,
            lambda i: self.server.post(
                f"/internal/pays/{pay.pay_id}/refunds",
                {"amount": amount, "description": f"sim {i}"},
                headers={"X-Service-Key": SERVICE_KEY},
            ),
        )
        assert all(a.code in (900, 910) for a in answers), answers

    def lost_refund(self):
        """A refund whose create answer is lost (and, sometimes, asking Ping++ about it fails too):
        the order service is told 900 and retries with its key; Ping++ makes it once."""
        pay = self.pick(list(Pay.select().where(Pay.status == "paid")))
        if pay is None or refunds.refundable(pay) <= 0:
            return
        amount = self.rng.randint(1, refunds.refundable(pay))
        unreachable = self.rng.random() < 0.5
        key = f"sim-{self.rng.getrandbits(32)}"
        before = len(self.sandbox.refunds)
        self.sandbox.lose_next_response()
        if unreachable:
            self.sandbox.fail_next()

        def ask():
            return self.server.post(
                f"/internal/pays/{pay.pay_id}/refunds",
                {"amount": amount, "description": "sim lost"},
                headers={"X-Service-Key": SERVICE_KEY, "Idempotency-Key": key},
            )

        try:
            first = ask()
        finally:
            with self.sandbox.lock:
                self.sandbox.failures.clear()
        assert first.code == 900 and first.body["refund"]["status"] == "pending", first
        assert ask().body == first.body  # the retry replays; nothing is made twice
        assert len(self.sandbox.refunds) == before + 1
        self.lost_refunds += 1

    def workers_at_once(self):
        """Three hosts' workers passing at the same moment."""

        def one_pass(_):
            try:
                return worker.run_once(self.settings, self.gateway, notify=False)
            finally:
                self.server_db_close()

        parallel(3, one_pass)

    def server_db_close(self):
        from payapi.infra.db import db

        db.close()

    def settle_refund(self):
        refund = self.pick(
            [
                r
                for r in Refund.select().where(Refund.status == "pending", Refund.pingpp_refund_id.is_null(False))
                if self.sandbox.refunds[r.pingpp_refund_id]["status"] == "pending"  # else settled, its event lost
            ]
        )
        if refund is None:
            return
        outcome = self.rng.choice(["succeeded", "succeeded", "failed"])
        settled = self.sandbox.settle_refund(refund.pingpp_refund_id, outcome)
        if outcome == "succeeded" and self.rng.random() < 0.8:
            self.deliver("refund.succeeded", settled, times=self.rng.choice([1, 2]))

    def withdraw(self):
        self._withdraw(self.pick(self.experts))

    def withdraw_from_the_richest(self):
        """Every run withdraws at least once (the random picks may never meet an expert with money)."""
        self._withdraw(max(self.experts, key=lambda e: e.get("/rest/pay/balance").body["info"]["available"]))

    def _withdraw(self, expert):
        available = expert.get("/rest/pay/balance").body["info"]["available"]
        if available >= 100:
            amount = self.rng.randint(100, available)
            for _ in range(3):  # a busy bcrypt is shed (906): the phone asks again after retry_after
                answer = expert.post("/rest/pay/withdraw", {"passwd": PASSWD, "amount": amount})
                if answer.code != 906:
                    break
                time.sleep(min(float(answer.body.get("retry_after") or 1), 2))
            assert answer.code in (900, 910, 906), answer  # once a month

    def worker_pass(self):
        worker.run_once(self.settings, self.gateway, notify=False)

    def settle_transfer(self):
        withdrawal = self.pick(
            [
                w
                for w in Withdrawal.select().where(Withdrawal.status == "processing")
                if self.sandbox.transfers[w.transfer_id]["status"] == "pending"  # else settled, its event lost
            ]
        )
        if withdrawal is None:
            return
        outcome = self.rng.choice(["succeeded", "failed"])
        transfer = self.sandbox.settle_transfer(withdrawal.transfer_id, outcome)
        if self.rng.random() < 0.8:
            self.deliver(f"transfer.{outcome}", transfer, times=self.rng.choice([1, 3]))

    def step(self):
        action = self.rng.choices(
            [
                self.create_pay,
                self.pay,
                self.report_cancel,
                self.refund,
                self.settle_refund,
                self.withdraw,
                self.worker_pass,
                self.settle_transfer,
                self.pay_while_the_order_is_asked_for_again,
                self.lost_refund,
                self.workers_at_once,
            ],
            weights=[5, 5, 1, 3, 3, 3, 2, 2, 2, 2, 1],
        )[0]
        self.log.append(action.__name__)
        action()


def payable_pays_of_paid_orders():
    paid = Pay.select(Pay.o_id).where(Pay.type == "order", Pay.status.in_(("paid", "refunded")))
    return [
        p.pay_id for p in Pay.select(Pay.pay_id).where(Pay.type == "order", Pay.status == "pending", Pay.o_id.in_(paid))
    ]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_books_balance_after_every_step_and_reconcile_clean(
    seed, live, database, fake_pingpp, pingpp_keys, settings, gateway
):
    simulation = Simulation(seed, live, fake_pingpp, pingpp_keys[0], settings, gateway)
    for number in range(STEPS):
        simulation.step()
        problems = books.check() + [f"pay {p} is payable on a paid order" for p in payable_pays_of_paid_orders()]
        assert problems == [], f"seed {seed}, step {number} ({simulation.log[-1]}): {problems}"
    # every seed has one of each
    for action in (simulation.lost_refund, simulation.workers_at_once, simulation.withdraw_from_the_richest):
        action()
        problems = books.check() + [f"pay {p} is payable on a paid order" for p in payable_pays_of_paid_orders()]
        assert problems == [], f"seed {seed}, {action.__name__} at the end: {problems}"
    # Once no request can still be running, the worker settles every unclear refund.
    unclear = Refund.select().where(Refund.status == "pending", Refund.pingpp_refund_id.is_null())
    leases_over = max([r.check_after / 1000 for r in unclear] + [time.time()]) + 1  # the server's own time-out
    with time_machine.travel(leases_over, tick=False):
        simulation.worker_pass()
    assert not Refund.select().where(Refund.status == "pending", Refund.pingpp_refund_id.is_null()).exists(), [
        str(r.__data__) for r in Refund.select().where(Refund.status == "pending", Refund.pingpp_refund_id.is_null())
    ]
    assert books.check() == []
    today = datetime.datetime.now(settings.tz).date()
    row = reconciliation.reconcile(settings, gateway, today)
    assert json.loads(row.differences) == [], f"seed {seed}: {simulation.log}"
    assert books.check() == []
    assert "Traceback" not in live.log(), live.log()[-3000:]
    # The run did what it set out to: money came in, went back and went out.
    assert Pay.select().where(Pay.status.in_(("paid", "refunded"))).exists()
    assert Refund.select().exists() and Withdrawal.select().exists(), " ".join(simulation.log)
