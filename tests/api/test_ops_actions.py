"""What operators do through /ops/api (and the commands): retry a payout now, fail a withdrawal Ping++
never paid, resend a notification; each one's preconditions and its audit row; the JSON reads."""

import getpass
import json
import os
import subprocess
import sys
import time

import pytest

from payapi.domain.lifecycles import NotificationStatus
from payapi.infra.models import AuditEntry, Notification
from payapi.infra.outbox import resend
from payapi.money import withdrawals as payouts
from tests.support.config import process_env
from tests.support.operators import OPERATOR_PASSWORD
from tests.support.scenarios import balance, set_up_expert, withdraw, withdrawal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def alice(make_operator):
    return make_operator("alice")


def post(app, path, body, headers):
    return app.post(
        path, json.dumps(body).encode(), headers=headers, content_type="application/json", expect_errors=True
    )


def retry(app, withdraw_id, headers, reason="Alipay account fixed"):
    return post(app, f"/ops/api/withdrawals/{withdraw_id}/retry", {"reason": reason}, headers)


def fail(app, withdraw_id, headers, reason="Alipay refuses the account"):
    return post(app, f"/ops/api/withdrawals/{withdraw_id}/fail", {"reason": reason}, headers)


def audit_rows():
    return list(AuditEntry.select().order_by(AuditEntry.created_at))


# --- retry ------------------------------------------------------------------------------------------


def test_retry_sends_a_pending_payout_now_and_audits_it(app, alice, pending, fake_pingpp):
    answer = retry(app, pending, alice)
    assert answer.status_int == 200 and answer.json["code"] == 900, answer.json
    assert answer.json["withdrawal"]["status"] == "processing" and answer.json["withdrawal"]["attempts"] == 1
    (created,) = fake_pingpp.transfer_creations()
    assert created[2]["order_no"] == pending
    (entry,) = audit_rows()
    assert (entry.operator, entry.action, entry.target, entry.reason) == (
        "alice",
        "withdrawal.retry",
        pending,
        "Alipay account fixed",
    )
    assert json.loads(entry.before)["status"] == "pending" and json.loads(entry.after)["status"] == "processing"
    assert answer.json["audit_id"] == entry.audit_id


def test_retry_when_ping_fails_records_the_attempt_and_its_error(app, alice, pending, fake_pingpp):
    fake_pingpp.fail_next()
    answer = retry(app, pending, alice)
    assert answer.json["code"] == 900 and answer.json["withdrawal"]["status"] == "pending"
    assert answer.json["withdrawal"]["last_error"]
    (entry,) = audit_rows()
    assert json.loads(entry.after)["last_error"] == withdrawal(pending).last_error != ""
    row = withdrawal(pending)
    assert row.lease_until == 0 and row.retry_after > time.time() * 1000  # the worker backs off
    assert retry(app, pending, alice).json["withdrawal"]["status"] == "processing"  # an operator need not wait


def test_retry_of_a_processing_withdrawal_is_910_and_calls_nobody(app, alice, processing, fake_pingpp):
    withdraw_id, _ = processing
    calls = len(fake_pingpp.requests)
    answer = retry(app, withdraw_id, alice)
    assert answer.status_int == 403 and answer.json["code"] == 910
    assert len(fake_pingpp.requests) == calls and audit_rows() == []


def test_retry_while_a_worker_holds_the_lease_is_910(app, alice, pending, fake_pingpp):
    assert payouts.claim(pending)  # a worker is sending it right now
    answer = retry(app, pending, alice)
    assert answer.status_int == 403 and answer.json["code"] == 910
    assert fake_pingpp.transfer_creations() == [] and audit_rows() == []


@pytest.mark.parametrize(
    "withdraw_id, status, code",
    [("576b69ae7ce1fd7004cc8281", 404, 911), ("nope", 400, 904), ("576B69AE7CE1FD7004CC8281", 400, 904)],
)
def test_retry_and_fail_of_unknown_or_malformed_ids(app, alice, withdraw_id, status, code):
    for act in (retry, fail):
        answer = act(app, withdraw_id, alice)
        assert (answer.status_int, answer.json["code"]) == (status, code)


# --- fail -----------------------------------------------------------------------------------------------


def test_fail_a_pending_withdrawal_ping_never_heard_of_gives_the_money_back(app, alice, expert, pending, fake_pingpp):
    assert balance(expert) == 7_000
    answer = fail(app, pending, alice)
    assert answer.status_int == 200 and answer.json["withdrawal"]["status"] == "failed", answer.json
    assert any(r[0] == "GET" and r[1] == "/v1/transfers" for r in fake_pingpp.requests)  # Ping++ was asked
    assert balance(expert) == 10_000
    (entry,) = audit_rows()
    assert (entry.action, entry.target, entry.reason) == ("withdrawal.fail", pending, "Alipay refuses the account")
    assert json.loads(entry.before)["status"] == "pending" and json.loads(entry.after)["status"] == "failed"
    assert Notification.get(Notification.subject_id == pending).type == "withdrawal.failed"
    # The month is free again.
    assert withdraw(expert, 1_000).json["code"] == 900


def test_fail_is_refused_while_the_transfer_is_in_flight_at_ping(app, alice, expert, processing):
    withdraw_id, _ = processing
    answer = fail(app, withdraw_id, alice)
    assert answer.status_int == 403 and answer.json["code"] == 910 and "处理中" in answer.json["msg"]
    assert withdrawal(withdraw_id).status == "processing" and balance(expert) == 7_000
    assert [(a.outcome, "处理中" in a.refusal) for a in audit_rows()] == [("refused", True)]  # audited as refused


def test_fail_after_ping_says_the_transfer_failed(app, alice, expert, processing, fake_pingpp):
    withdraw_id, transfer_id = processing
    fake_pingpp.settle_transfer(transfer_id, "failed")  # its webhook never arrived
    answer = fail(app, withdraw_id, alice)
    assert answer.status_int == 200 and answer.json["withdrawal"]["status"] == "failed"
    assert balance(expert) == 10_000
    (entry,) = audit_rows()
    assert json.loads(entry.before)["status"] == "processing" and json.loads(entry.after)["status"] == "failed"


def test_fail_of_a_pending_withdrawal_whose_transfer_ping_paid_applies_it_and_refuses(
    app, alice, expert, pending, gateway, fake_pingpp
):
    fake_pingpp.lose_next_response()  # Ping++ made the transfer; the worker never heard
    assert payouts.run_payouts(gateway) == {"sent": 0, "failed": 1}
    (transfer_id,) = fake_pingpp.transfers
    fake_pingpp.settle_transfer(transfer_id, "succeeded")
    answer = fail(app, pending, alice)
    assert answer.status_int == 403 and answer.json["code"] == 910 and "已支付" in answer.json["msg"]
    assert withdrawal(pending).status == "succeeded" and balance(expert) == 7_000
    assert [(a.outcome, "已支付" in a.refusal) for a in audit_rows()] == [("refused", True)]  # audited as refused


def test_fail_of_a_pending_withdrawal_whose_lost_transfer_failed(app, alice, expert, pending, gateway, fake_pingpp):
    fake_pingpp.lose_next_response()
    payouts.run_payouts(gateway)
    (transfer_id,) = fake_pingpp.transfers
    fake_pingpp.set_transfer(transfer_id, "canceled")
    answer = fail(app, pending, alice)
    assert answer.status_int == 200 and answer.json["withdrawal"]["status"] == "failed"
    assert balance(expert) == 10_000 and len(audit_rows()) == 1


def test_fail_while_ping_is_unreachable_is_920_and_changes_nothing(app, alice, expert, pending, fake_pingpp):
    before = withdrawal(pending)
    fake_pingpp.fail_next(times=2)
    answer = fail(app, pending, alice)
    assert answer.status_int == 502 and answer.json["code"] == 920
    after = withdrawal(pending)
    assert (after.status, after.attempts, after.lease_until, after.last_error) == (
        before.status,
        before.attempts,
        before.lease_until,
        before.last_error,
    )
    assert balance(expert) == 7_000 and audit_rows() == []


def test_a_worker_cannot_send_a_payout_while_an_operator_checks_it(pending, gateway):
    lease = payouts.claim(pending, attempt=False)  # what fail holds while asking Ping++
    assert lease and payouts.run_payouts(gateway) == {"sent": 0, "failed": 0}
    payouts.release(pending, lease)
    assert payouts.run_payouts(gateway) == {"sent": 1, "failed": 0}


def test_fail_of_a_settled_withdrawal_is_910(app, alice, pending):
    assert fail(app, pending, alice).json["code"] == 900
    again = fail(app, pending, alice)
    assert again.status_int == 403 and again.json["code"] == 910 and len(audit_rows()) == 1


@pytest.mark.parametrize(
    "body", [{}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 256}, {"reason": 5}, {"reason": None}]
)
def test_fail_needs_a_reason(app, alice, pending, body):
    answer = post(app, f"/ops/api/withdrawals/{pending}/fail", body, alice)
    assert answer.status_int == 400 and answer.json["code"] == 904
    assert withdrawal(pending).status == "pending"


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b"\xff\xfe", b'{"reason": "\\ud800"}'])
def test_bad_bodies_to_action_routes_are_904(app, alice, pending, raw):
    for path in (f"/ops/api/withdrawals/{pending}/fail", f"/ops/api/withdrawals/{pending}/retry"):
        answer = app.post(path, raw, headers=alice, content_type="application/json", expect_errors=True)
        assert answer.status_int == 400 and answer.json["code"] == 904, (path, raw, answer.text)


# --- resend ---------------------------------------------------------------------------------------------


@pytest.fixture
def failed_notification(pending, app, alice):
    """A withdrawal.failed notification that the order service never took."""
    fail(app, pending, alice)
    message = Notification.get(Notification.subject_id == pending)
    message.status, message.attempts, message.last_status = NotificationStatus.FAILED, 9, 503
    message.save()
    return message.message_id


def test_resend_puts_a_failed_notification_back_in_the_outbox_and_audits_it(app, alice, failed_notification):
    listed = app.get("/ops/api/notifications", headers=alice).json["list"]
    assert [n["message_id"] for n in listed] == [failed_notification]
    answer = post(app, f"/ops/api/notifications/{failed_notification}/resend", {"reason": "order service back"}, alice)
    assert answer.status_int == 200 and answer.json["notification"]["status"] == "pending"
    message = Notification.get_by_id(failed_notification)
    assert message.status == "pending" and message.next_attempt_at == 0
    entry = AuditEntry.get(AuditEntry.action == "notification.resend")
    assert entry.target == failed_notification and json.loads(entry.before)["status"] == "failed"
    assert app.get("/ops/api/notifications", headers=alice).json["list"] == []


@pytest.mark.parametrize(
    "message_id, status", [("msg_576b69ae7ce1fd7004cc8282", 404), ("msg_nope", 400), ("576b69ae7ce1fd7004cc8282", 400)]
)
def test_resend_of_unknown_or_malformed_ids(app, alice, message_id, status):
    answer = post(app, f"/ops/api/notifications/{message_id}/resend", {}, alice)
    assert answer.status_int == status and answer.json["code"] == {404: 911, 400: 904}[status]


# --- reads ----------------------------------------------------------------------------------------------


def test_audit_lists_every_action_newest_first_with_before_and_after(app, alice, failed_notification):
    answer = app.get("/ops/api/audit", headers=alice)
    entries = answer.json["list"]
    assert [e["action"] for e in entries] == ["withdrawal.fail"]
    assert {"audit_id", "operator", "action", "target", "reason", "createdAt", "before", "after"} <= set(entries[0])
    post(app, f"/ops/api/notifications/{failed_notification}/resend", {}, alice)
    entries = app.get("/ops/api/audit", headers=alice).json["list"]
    assert [e["action"] for e in entries] == ["notification.resend", "withdrawal.fail"]
    older = app.get("/ops/api/audit", params={"limit": 1, "before": entries[0]["audit_id"]}, headers=alice)
    assert [e["action"] for e in older.json["list"]] == ["withdrawal.fail"]
    bad = app.get("/ops/api/audit", params={"limit": "0"}, headers=alice, expect_errors=True)
    assert bad.status_int == 400 and bad.json["code"] == 904


def test_trial_balance_has_the_contracts_shape_and_balances(app, alice, pending):
    answer = app.get("/ops/api/trial-balance", headers=alice).json
    assert set(answer) == {"code", "accounts", "debits", "credits"} and answer["debits"] == answer["credits"] > 0
    assert {"account", "debits", "credits"} == set(answer["accounts"][0])
    assert "payouts" in {a["account"] for a in answer["accounts"]}


def test_reconciliations_have_the_contracts_shape(app, alice, settings, gateway):
    from payapi.money import reconciliation

    reconciliation.reconcile(settings, gateway, reconciliation.yesterday(settings.tz))
    (row,) = app.get("/ops/api/reconciliations", headers=alice).json["list"]
    assert set(row) == {"reconciliation_id", "date", "status", "healed", "differences", "createdAt"}
    assert row["status"] == "clean"


def test_withdrawals_in_flight_list_stuck_ones_first(app, alice, pending, make_user, pay_expert, gateway, fake_pingpp):
    other = set_up_expert(make_user(phone="13700137000"))
    pay_expert(other.id, 5_000)
    second = withdraw(other, 2_000).json["withdraw_id"]
    fake_pingpp.fail_next()
    payouts.pay_out(gateway, second)  # its attempt failed: it needs someone to look
    listed = app.get("/ops/api/withdrawals", headers=alice).json["list"]
    assert [(w["withdraw_id"], w["stuck"]) for w in listed] == [(second, True), (pending, False)]
    assert listed[0]["attempts"] == 1 and listed[0]["last_error"] and listed[1]["age_s"] >= 0


def test_pay_search_by_each_id(app, alice, expert, pay_expert):
    info = pay_expert(expert.id, 12_356)
    for q in (info["pay_id"], info["o_id"], info["userID"], info["expert_id"]):
        found = app.get("/ops/api/pays", params={"q": q}, headers=alice).json["list"]
        assert info["pay_id"] in [p["pay_id"] for p in found], q
    for q in ("", "x" * 65, "not-an-id"):
        answer = app.get("/ops/api/pays", params={"q": q}, headers=alice, expect_errors=True)
        assert answer.status_int == 400 and answer.json["code"] == 904


def test_daily_volumes_count_paid_refunded_and_withdrawn(app, alice, expert, processing, fake_pingpp, send_event):
    withdraw_id, transfer_id = processing
    send_event("transfer.succeeded", fake_pingpp.settle_transfer(transfer_id, "succeeded"))
    answer = app.get("/ops/api/stats", headers=alice).json
    assert answer["timezone"] == "Asia/Shanghai" and len(answer["days"]) == 30
    today = answer["days"][-1]
    assert (today["paid"], today["refunded"], today["withdrawn"]) == (10_000, 0, 3_000)


# --- the same actions as commands --------------------------------------------------------------------------


def command(settings, *args, stdin=""):
    done = subprocess.run(
        [sys.executable, "-m", "payapi", *args],
        cwd=ROOT,
        env=process_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def test_withdrawals_fail_command_is_audited_as_the_login_user(settings, expert, pending):
    status, out, err = command(settings, "withdrawals", "fail", pending, "--reason", "bad account")
    assert status == 0, err
    assert json.loads(out.splitlines()[-1])["after"]["status"] == "failed"
    (entry,) = audit_rows()
    assert (entry.operator, entry.action, entry.reason) == (
        f"cli:{getpass.getuser()}",
        "withdrawal.fail",
        "bad account",
    )
    status, _, err = command(settings, "withdrawals", "fail", pending, "--reason", "again")
    assert status == 1 and "不能再置为失败" in err
    status, _, err = command(settings, "withdrawals", "fail", pending)
    assert status != 0 and "--reason" in err


def test_withdrawals_retry_and_notifications_commands(settings, pending, fake_pingpp):
    status, out, err = command(settings, "withdrawals", "retry", pending, "--reason", "now")
    assert status == 0 and json.loads(out.splitlines()[-1])["after"]["status"] == "processing", err
    message = resend(
        Notification.create(
            message_id="msg_576b69ae7ce1fd7004cc8282",
            type="withdrawal.failed",
            subject_id=pending,
            payload="{}",
            status=NotificationStatus.FAILED,
            give_up_at=0,
            created_at=0,
            updated_at=0,
        ).message_id
    )
    message.status = NotificationStatus.FAILED
    message.save()
    status, out, _ = command(settings, "notifications")
    assert status == 0 and message.message_id in out
    status, out, err = command(settings, "notifications", "resend", message.message_id, "--reason", "back")
    assert status == 0 and json.loads(out)["after"]["status"] == "pending", err
    assert [e.action for e in audit_rows()] == ["withdrawal.retry", "notification.resend"]


def test_operator_commands(settings, database):
    status, out, err = command(settings, "operator", "add", "carol", stdin=OPERATOR_PASSWORD + "\n")
    assert status == 0 and "carol added" in out, err
    status, _, err = command(settings, "operator", "add", "carol", stdin=OPERATOR_PASSWORD + "\n")
    assert status == 1 and "已存在" in err
    for bad_name, password in (("dave", "short\n"), ("dave", "\n"), ("dave", ""), ("bad name", OPERATOR_PASSWORD)):
        status, _, err = command(settings, "operator", "add", bad_name, stdin=password)
        assert status == 1, (bad_name, password)
    status, out, _ = command(settings, "operator", "list")
    assert "carol" in out and "active" in out and "dave" not in out
    status, out, _ = command(settings, "operator", "disable", "carol")
    assert status == 0
    status, out, _ = command(settings, "operator", "list")
    assert "disabled" in out
    status, _, err = command(settings, "operator", "disable", "nobody")
    assert status != 0 and "no operator" in err
