"""An operator on call (issue 23): health at a glance (/ops/api/health, the console, /metrics), any
withdrawal findable, an expert's page, notifications failing now, refunds as they stand, accounts named
for people, refused actions in the audit trail."""

import dataclasses
import json
import re
import time

import pytest
import time_machine

from payapi import worker
from payapi.infra.models import Notification, Refund, WorkerPass
from payapi.money import payments, refunds
from payapi.money import withdrawals as payouts
from tests.api.test_notifications import SECRET
from tests.support.config import SERVICE_KEY
from tests.support.operators import console
from tests.support.receiver import Receiver
from tests.support.scenarios import set_up_expert, withdraw


@pytest.fixture
def alice(make_operator):
    return make_operator("alice")


@pytest.fixture
def operator_console(app, alice):
    return console(app)


@pytest.fixture
def receiver():
    server = Receiver(SECRET)
    yield server
    server.stop()


@pytest.fixture
def settings(settings, receiver):
    return dataclasses.replace(settings, notify_url=receiver.url, notify_secret=SECRET)


def health(app, alice):
    answer = app.get("/ops/api/health", headers=alice)
    assert answer.json["code"] == 900, answer.json
    return answer.json


def metric(text, name, **labels):
    shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + (f"{{{shown}}}" if labels else "")) + r" (\S+)"
    found = re.search(r"^" + pattern + "$", text, re.M)
    assert found, f"{name} {labels} not in /metrics"
    return float(found.group(1))


# --- 1. health -------------------------------------------------------------------------------------


def test_health_before_anything_ran(app, alice):
    assert health(app, alice) == {
        "code": 900,
        "database": "ok",
        "passes": [],
        "outbox": {"waiting": 0, "failing": 0, "oldest_waiting_s": None},
        "reconciliation": None,
        "pingpp": None,
    }


def test_a_failing_pass_counts_its_failures_in_a_row_until_it_succeeds(app, alice, settings, gateway, monkeypatch):
    def broken(*args):
        raise RuntimeError("database away")

    real = payments.release_holds
    monkeypatch.setattr(payments, "release_holds", broken)
    worker.run_once(settings, gateway, notify=False)
    worker.run_once(settings, gateway, notify=False)
    passes = {p["pass"]: p for p in health(app, alice)["passes"]}
    assert passes["holds"]["failures_in_a_row"] == 2 and passes["holds"]["last_success_at"] is None
    assert passes["holds"]["last_run_at"].endswith("Z")
    assert passes["payouts"]["failures_in_a_row"] == 0 and passes["payouts"]["last_success_at"] is not None
    text = app.get("/metrics", headers={"X-Service-Key": SERVICE_KEY}).text
    assert metric(text, "payapi_worker_pass_failures_in_a_row", **{"pass": "holds"}) == 2
    assert metric(text, "payapi_worker_pass_failures_in_a_row", **{"pass": "payouts"}) == 0
    assert metric(text, "payapi_worker_pass_last_success_timestamp_seconds", **{"pass": "holds"}) == 0
    assert metric(text, "payapi_worker_pass_last_run_timestamp_seconds", **{"pass": "holds"}) > 1.7e9
    monkeypatch.setattr(payments, "release_holds", real)
    worker.run_once(settings, gateway, notify=False)
    (row,) = WorkerPass.select().where(WorkerPass.name == "holds")
    assert row.failures_in_a_row == 0 and row.failures == 2 and row.last_success_at > 0


def test_the_health_page_is_red_and_says_what_is_wrong(app, operator_console, settings, gateway, monkeypatch):
    worker.run_once(settings, gateway, notify=False)
    page = operator_console.get("/ops/health")
    assert "一切正常" in page.text and 'class="health well' in page.text
    monkeypatch.setattr(payments, "release_holds", lambda: 1 / 0)
    worker.run_once(settings, gateway, notify=False)
    for path in ("/ops/health", "/ops", "/ops/books", "/ops/audit", "/ops/notifications"):
        shown = operator_console.get(path)
        assert 'href="/ops/health"' in shown.text and 'class="health unwell' in shown.text, path
    assert "后台任务 holds 已连续失败 1 次" in operator_console.get("/ops/health").text


def test_a_worker_that_stopped_running_is_red(app, operator_console, settings, gateway):
    worker.run_once(settings, gateway, notify=False)
    with time_machine.travel(time.time() + 6 * 60):
        assert "已超过 5 分钟没有运行" in operator_console.get("/ops/health").text


def test_pingpp_s_last_error_is_recorded_with_its_time(app, alice, expert, pending, gateway, fake_pingpp):
    fake_pingpp.fail_next()
    assert payouts.run_payouts(gateway) == {"sent": 0, "failed": 1}
    shown = health(app, alice)["pingpp"]
    assert shown["last_error"].startswith("create transfer") and shown["at"].endswith("Z"), shown
    text = app.get("/metrics", headers={"X-Service-Key": SERVICE_KEY}).text
    assert metric(text, "payapi_pingpp_last_error_timestamp_seconds") > 1.7e9


def test_the_outbox_and_the_last_reconciliation(app, alice, operator_console, pay_expert, receiver, settings, gateway):
    pay_expert("e" * 24, 10_000)
    receiver.script = [503]
    with time_machine.travel(time.time() + 120, tick=False):
        worker.run_once(settings, gateway)
        shown = health(app, alice)
        text = app.get("/metrics", headers={"X-Service-Key": SERVICE_KEY}).text
    assert shown["outbox"]["waiting"] == 1 and shown["outbox"]["failing"] == 1
    assert 119 <= shown["outbox"]["oldest_waiting_s"] <= 125
    assert metric(text, "payapi_outbox_oldest_waiting_seconds") >= 119
    assert metric(text, "payapi_notifications_failing") == 1
    # The worker's reconciliation pass reconciled yesterday.
    assert shown["reconciliation"]["status"] in ("clean", "healed", "different")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", shown["reconciliation"]["date"])


# --- 2. find anything --------------------------------------------------------------------------------


@pytest.fixture
def finished(make_user, pay_expert, gateway, fake_pingpp):
    """An expert with a succeeded withdrawal (of 1,000) and a pending one (of 2,000) the next month."""
    expert = set_up_expert(make_user())
    pay_expert(expert.id, 10_000)
    done_id = withdraw(expert, 1_000).json["withdraw_id"]
    payouts.run_payouts(gateway)
    (transfer_id,) = fake_pingpp.transfers
    fake_pingpp.settle_transfer(transfer_id, "succeeded")
    with time_machine.travel(time.time() + 31 * 86400):
        payouts.reconcile_transfers(gateway)
        expert.remint()
        pending_id = withdraw(expert, 2_000).json["withdraw_id"]
    return expert, done_id, pending_id


def test_any_withdrawal_by_id_or_expert_finished_ones_too(app, alice, finished):
    expert, done_id, pending_id = finished
    listed = app.get("/ops/api/withdrawals", {"q": done_id}, headers=alice).json["list"]
    assert [(w["withdraw_id"], w["status"]) for w in listed] == [(done_id, "succeeded")]
    by_expert = app.get("/ops/api/withdrawals", {"q": expert.id}, headers=alice).json["list"]
    assert [w["withdraw_id"] for w in by_expert] == [pending_id, done_id]  # newest first
    by_status = app.get("/ops/api/withdrawals", {"status": "succeeded"}, headers=alice).json["list"]
    assert [w["withdraw_id"] for w in by_status] == [done_id]
    page = app.get("/ops/api/withdrawals", {"q": expert.id, "limit": 1}, headers=alice).json["list"]
    assert [w["withdraw_id"] for w in page] == [pending_id]
    rest = app.get("/ops/api/withdrawals", {"q": expert.id, "before": pending_id}, headers=alice).json["list"]
    assert [w["withdraw_id"] for w in rest] == [done_id]
    # Without q and status: those in flight, as before.
    assert [w["withdraw_id"] for w in app.get("/ops/api/withdrawals", headers=alice).json["list"]] == [pending_id]


@pytest.mark.parametrize("query", [{"q": "nope"}, {"status": "lost"}, {"limit": "0"}, {"before": "x" * 24}])
def test_a_bad_withdrawal_search_is_904(app, alice, query):
    answer = app.get("/ops/api/withdrawals", query, headers=alice, expect_errors=True)
    assert answer.status_int == 400 and answer.json["code"] == 904


def test_an_unknown_before_is_911(app, alice):
    answer = app.get("/ops/api/withdrawals", {"before": "a" * 24}, headers=alice, expect_errors=True)
    assert answer.status_int == 404 and answer.json["code"] == 911


def test_the_console_finds_a_finished_withdrawal_and_shows_the_experts_page(app, operator_console, finished):
    expert, done_id, pending_id = finished
    found = operator_console.get("/ops", {"q": done_id})
    assert done_id in found.text and pending_id not in found.text and "成功" in found.text
    by_status = operator_console.get("/ops", {"q": expert.id, "status": "pending"})
    assert pending_id in by_status.text and done_id not in by_status.text
    assert f'href="/ops/experts/{expert.id}"' in by_status.text
    bad = operator_console.get("/ops", {"q": "<script>"}, expect_errors=True)
    assert bad.status_int == 400 and "<script>" not in bad.text
    page = operator_console.get(f"/ops/experts/{expert.id}")
    assert "张三" in page.text and done_id in page.text and pending_id in page.text
    # 10,000 paid, 1,000 and 2,000 withdrawn; all of it available (no settlement hold in the tests).
    assert re.search(r'id="available">¥70\.00<', page.text) and re.search(r'id="pending">¥0\.00<', page.text)
    assert "/ops/pays/" in page.text
    missing = operator_console.get("/ops/experts/" + "f" * 24, expect_errors=True)
    assert missing.status_int == 404


def test_the_experts_page_shows_their_statement_as_the_books_hold_it(operator_console, finished):
    expert, done_id, pending_id = finished
    page = operator_console.get(f"/ops/experts/{expert.id}")
    statement = page.text.split('id="expert-statement"')[1].split("</table>")[0]
    rows = re.findall(r'<td data-label="金额" class="num key amount">(.*?)</td>', statement)
    # Newest first: the two withdrawals (2,000 then 1,000), then the income (no fee in the tests' settings).
    assert rows == ["-¥20.00", "-¥10.00", "¥100.00"], rows
    assert done_id in statement and pending_id in statement and "提现" in statement


def test_trial_balance_accounts_are_named_for_people(app, operator_console, expert):
    page = operator_console.get("/ops/books")
    assert f'<a href="/ops/experts/{expert.id}">专家 张三（{expert.id[:8]}…） · 可提现</a>' in page.text
    assert "平台手续费收入" in page.text or "Ping++ 代收" in page.text


# --- 3. notifications failing now ----------------------------------------------------------------------


def test_a_notification_is_listed_as_soon_as_an_attempt_fails(
    app, alice, operator_console, pay_expert, receiver, settings, gateway
):
    pay_expert("e" * 24, 10_000)
    assert app.get("/ops/api/notifications", {"state": "failing"}, headers=alice).json["list"] == []
    receiver.script = [503]
    worker.run_once(settings, gateway)
    (listed,) = app.get("/ops/api/notifications", {"state": "failing"}, headers=alice).json["list"]
    (message,) = Notification.select()
    assert (listed["message_id"], listed["status"], listed["attempts"], listed["last_status"]) == (
        message.message_id,
        "pending",
        1,
        503,
    )
    assert listed["target"] == "127.0.0.1" and listed["next_attempt_at"].endswith("Z")
    assert app.get("/ops/api/notifications", {"state": "failed"}, headers=alice).json["list"] == []
    assert app.get("/ops/api/notifications", headers=alice).json["list"] == []  # failed, as before
    page = operator_console.get("/ops/notifications")
    assert message.message_id in page.text and "503" in page.text
    home = operator_console.get("/ops")
    assert "1 条通知发送失败，正在重试" in home.text and 'id="failing-count">1 条失败中' in home.text
    bad = app.get("/ops/api/notifications", {"state": "lost"}, headers=alice, expect_errors=True)
    assert bad.status_int == 400 and bad.json["code"] == 904


# --- 4. truthful money ---------------------------------------------------------------------------------


def refund(app, pay_id, amount):
    answer = app.post(
        f"/internal/pays/{pay_id}/refunds",
        json.dumps({"amount": amount, "description": "退"}).encode(),
        headers={"X-Service-Key": SERVICE_KEY},
        content_type="application/json",
    )
    return answer.json["refund"]["refund_id"]


def test_refunds_are_shown_settled_pending_and_failed(app, operator_console, pay_expert, fake_pingpp, gateway):
    pay = pay_expert("e" * 24, 10_000)
    settled, failed, waiting = (refund(app, pay["pay_id"], amount) for amount in (1_000, 2_000, 3_000))
    fake_pingpp.settle_refund(Refund.get_by_id(settled).pingpp_refund_id, "succeeded")
    fake_pingpp.settle_refund(Refund.get_by_id(failed).pingpp_refund_id, "failed")
    with time_machine.travel(time.time() + 5 * 60 + 1, tick=False):
        refunds.reconcile_refunds(gateway)
    assert Refund.get_by_id(waiting).status == "pending"  # the sandbox settles it neither way
    page = operator_console.get(f"/ops/pays/{pay['pay_id']}")
    assert re.search(r'id="refunded-settled">¥10\.00<', page.text), page.text
    assert re.search(r'id="refunded-pending">¥30\.00<', page.text)
    assert re.search(r'id="refunded-failed">¥20\.00<', page.text)
    assert "未退" in page.text


# --- 6. refused actions audited --------------------------------------------------------------------------


def test_a_fail_ping_refuses_is_in_the_audit_trail_with_its_reason(app, alice, operator_console, expert, processing):
    withdraw_id, transfer_id = processing
    answer = app.post(
        f"/ops/api/withdrawals/{withdraw_id}/fail",
        json.dumps({"reason": "stuck"}).encode(),
        headers=alice,
        content_type="application/json",
        expect_errors=True,
    )
    assert answer.status_int == 403 and answer.json["code"] == 910
    (entry,) = app.get("/ops/api/audit", headers=alice).json["list"]
    assert (entry["operator"], entry["action"], entry["target"], entry["reason"], entry["outcome"]) == (
        "alice",
        "withdrawal.fail",
        withdraw_id,
        "stuck",
        "refused",
    )
    assert transfer_id in entry["refusal"] and "处理中" in entry["refusal"]
    assert entry["before"]["status"] == entry["after"]["status"] == "processing"
    page = operator_console.get("/ops/audit")
    assert "被拒绝" in page.text and "处理中" in page.text


def test_a_performed_action_says_so(app, alice, expert, pending):
    app.post(
        f"/ops/api/withdrawals/{pending}/fail",
        json.dumps({"reason": "bad account"}).encode(),
        headers=alice,
        content_type="application/json",
    )
    (entry,) = app.get("/ops/api/audit", headers=alice).json["list"]
    assert (entry["outcome"], entry["refusal"]) == ("performed", "")


def test_a_notifications_pass_of_worker_once_going_old_is_no_alarm(app, operator_console, receiver, settings, gateway):
    worker.run_once(settings, gateway)  # `worker --once` delivers notifications as a pass of its own
    assert WorkerPass.get_by_id("notifications").runs == 1
    with time_machine.travel(time.time() + 6 * 60):
        worker.run_once(settings, gateway, notify=False)  # the running worker: its dispatcher is a thread
        page = operator_console.get("/ops/health")
    assert "一切正常" in page.text, re.findall(r"<li>(.*?)</li>", page.text)
