"""The console's pages: each renders under its strict headers, money and times as people read them, forms
that refuse a missing CSRF token or confirmation (shown again with the error, nothing changed), hostile
input escaped or refused, never a 5xx."""

import re

import pytest

from payapi.http.console import CSP, yuan
from payapi.infra.models import AuditEntry, OperatorSession
from tests.support.operators import browser, console, csrf_of
from tests.support.scenarios import balance, withdrawal

PAGES = ["/ops", "/ops/pays", "/ops/notifications", "/ops/books", "/ops/audit", "/ops/stats"]


@pytest.fixture
def operator_console(app, make_operator):
    make_operator("alice")
    return console(app)


@pytest.mark.parametrize(
    "fen, shown",
    [
        (12356, "¥123.56"),
        (0, "¥0.00"),
        (5, "¥0.05"),
        (-12356, "-¥123.56"),
        (-5, "-¥0.05"),
        (123456789, "¥1,234,567.89"),
        (100, "¥1.00"),
    ],
)
def test_money_is_yuan_with_two_decimals(fen, shown):
    assert yuan(fen) == shown


@pytest.mark.parametrize("path", PAGES + ["/ops/login"])
def test_every_page_is_sent_with_a_strict_content_security_policy(app, operator_console, path):
    page = (browser(app) if path == "/ops/login" else operator_console).get(path)
    assert page.status_int == 200 and page.content_type == "text/html"
    assert page.headers["Content-Security-Policy"] == CSP and "frame-ancestors 'none'" in CSP
    assert "script-src" not in CSP and "'unsafe-inline'" not in CSP and "default-src 'none'" in CSP
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert "<script" not in page.text and "http://" not in page.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page.text.startswith("<!doctype html>") and 'lang="zh-CN"' in page.text


def test_the_stylesheet_is_served_without_a_session(app):
    css = app.get("/ops/static/ops.css")
    assert css.content_type == "text/css" and ".bar.paid" in css.text


def test_withdrawals_in_flight_show_amount_attempts_error_and_age(app, operator_console, pending, gateway, fake_pingpp):
    from payapi.money.withdrawals import pay_out

    fake_pingpp.fail_next()
    pay_out(gateway, pending)
    page = operator_console.get("/ops")
    row = re.search(rf"<tr class=\"stuck\">.*?{pending}.*?</tr>", page.text, re.S).group(0)
    assert "¥30.00" in row and "卡住" in row and "待处理" in row and withdrawal(pending).last_error[:20] in row


def test_failing_a_withdrawal_through_the_form(app, operator_console, expert, pending):
    page = operator_console.get(f"/ops/withdrawals/{pending}")
    assert 'id="fail-form"' in page.text and "¥30.00" in page.text
    answer = operator_console.post(
        f"/ops/withdrawals/{pending}/fail", {"csrf": csrf_of(page), "reason": "账户被支付宝拒绝", "confirm": "yes"}
    )
    assert answer.status_int == 303
    shown = answer.follow()
    (entry,) = AuditEntry.select()
    assert f"审计记录 <code>{entry.audit_id}</code>" in shown.text and "失败" in shown.text
    assert withdrawal(pending).status == "failed" and balance(expert) == 10_000
    assert entry.operator == "alice" and entry.reason == "账户被支付宝拒绝"
    audit = operator_console.get("/ops/audit")
    assert entry.audit_id in audit.text and "提现置为失败" in audit.text and "账户被支付宝拒绝" in audit.text


@pytest.mark.parametrize(
    "fields, status, says",
    [
        ({"reason": "x", "confirm": "yes"}, 403, "CSRF"),
        ({"csrf": "forged", "reason": "x", "confirm": "yes"}, 403, "CSRF"),
        ({"csrf": None, "reason": "x"}, 400, "确认"),
        ({"csrf": None, "reason": "", "confirm": "yes"}, 400, "reason"),
        ({"csrf": None, "reason": "长" * 256, "confirm": "yes"}, 400, "reason"),
    ],
)
def test_a_bad_fail_form_is_shown_again_with_the_error_and_changes_nothing(
    app, operator_console, expert, pending, fields, status, says
):
    page = operator_console.get(f"/ops/withdrawals/{pending}")
    fields = {k: (csrf_of(page) if k == "csrf" and v is None else v) for k, v in fields.items()}
    answer = operator_console.post(f"/ops/withdrawals/{pending}/fail", fields, expect_errors=True)
    assert answer.status_int == status and says in answer.text and 'id="fail-form"' in answer.text
    assert 'class="error"' in answer.text
    assert withdrawal(pending).status == "pending" and balance(expert) == 7_000 and AuditEntry.select().count() == 0


def test_retry_through_the_form_and_its_refusal(app, operator_console, pending, fake_pingpp):
    page = operator_console.get(f"/ops/withdrawals/{pending}")
    answer = operator_console.post(
        f"/ops/withdrawals/{pending}/retry", {"csrf": csrf_of(page), "reason": "", "confirm": "yes"}
    )
    assert answer.status_int == 303 and withdrawal(pending).status == "processing"
    again = operator_console.post(
        f"/ops/withdrawals/{pending}/retry", {"csrf": csrf_of(page), "confirm": "yes"}, expect_errors=True
    )
    assert again.status_int == 403 and "只有待发送" in again.text and len(fake_pingpp.transfer_creations()) == 1


def test_html_in_a_reason_is_escaped_on_every_page(app, operator_console, pending):
    page = operator_console.get(f"/ops/withdrawals/{pending}")
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    operator_console.post(
        f"/ops/withdrawals/{pending}/fail", {"csrf": csrf_of(page), "reason": hostile, "confirm": "yes"}
    )
    for path in ("/ops/audit", f"/ops/withdrawals/{pending}"):
        text = operator_console.get(path).text
        assert "<script>" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text


def test_resend_through_the_form(app, operator_console, pending):
    from payapi.domain.lifecycles import NotificationStatus
    from payapi.infra.models import Notification

    message = Notification.create(
        message_id="msg_576b69ae7ce1fd7004cc8282",
        type="withdrawal.failed",
        subject_id=pending,
        payload="{}",
        status=NotificationStatus.FAILED,
        attempts=12,
        last_status=503,
        give_up_at=0,
        created_at=1,
        updated_at=1,
    )
    page = operator_console.get("/ops/notifications")
    assert message.message_id in page.text and "503" in page.text
    missing = operator_console.post(
        f"/ops/notifications/{message.message_id}/resend", {"csrf": csrf_of(page)}, expect_errors=True
    )
    assert missing.status_int == 400 and "确认" in missing.text
    answer = operator_console.post(
        f"/ops/notifications/{message.message_id}/resend",
        {"csrf": csrf_of(page), "confirm": "yes", "reason": "对方恢复"},
    )
    assert answer.status_int == 303 and "已重新发送" in answer.follow().text
    assert Notification.get_by_id(message.message_id).status == "pending"
    unknown = operator_console.post(
        "/ops/notifications/msg_576b69ae7ce1fd7004cc8283/resend",
        {"csrf": csrf_of(page), "confirm": "yes"},
        expect_errors=True,
    )
    assert unknown.status_int == 404 and "通知不存在" in unknown.text


def test_pay_search_and_the_pay_page_show_its_history(
    app, operator_console, expert, user, order_service, fake_pingpp, send_event
):
    created = order_service(expert_id=expert.id, userID=user.id, amount=12356).json["info"]
    user.post(f"/rest/pay/{created['pay_id']}/status", {"status": "fail"})
    send_event("charge.succeeded", fake_pingpp.mark_paid(created["charge"]["id"]))
    found = operator_console.get("/ops/pays", params={"q": created["o_id"]})
    assert created["pay_id"] in found.text and "¥123.56" in found.text
    page = operator_console.get(f"/ops/pays/{created['pay_id']}")
    assert "charge.succeeded" in page.text and "已应用" in page.text  # its Ping++ event
    assert "1.2.3.4" in page.text and "android" in page.text  # the phone's report
    assert "pay.paid" in page.text  # the notification to the order service
    assert "已支付" in page.text


@pytest.mark.parametrize("query", ["q=nothex", "q=" + "a" * 5000, "q=%ff%fe", "q=%00", "q=<script>", "q="])
def test_hostile_searches_are_answered_as_pages(app, operator_console, query):
    answer = operator_console.get("/ops/pays?" + query, expect_errors=True)
    assert answer.status_int in (200, 400) and answer.content_type == "text/html"
    assert "<script>" not in answer.text.split("<main>")[1]


@pytest.mark.parametrize(
    "path",
    [
        "/ops/pays/576b69ae7ce1fd7004cc8280",
        "/ops/pays/nope",
        "/ops/withdrawals/576b69ae7ce1fd7004cc8280",
        "/ops/withdrawals/%E5%8F%B0",
        "/ops/audit?before=nope",
        "/ops/audit?before=576b69ae7ce1fd7004cc8280",
    ],
)
def test_unknown_or_malformed_ids_are_error_pages(app, operator_console, path):
    answer = operator_console.get(path, expect_errors=True)
    assert answer.status_int in (400, 404) and answer.content_type == "text/html" and 'class="error"' in answer.text


@pytest.mark.parametrize(
    "body", [b"\xff\xfe=\xff", b"a=" + b"x" * 70_000, b"&".join(b"f%d=1" % i for i in range(30)), b"csrf=%ff"]
)
def test_broken_form_bodies_are_refused_as_pages(app, operator_console, pending, body):
    answer = operator_console.post(
        f"/ops/withdrawals/{pending}/fail", body, content_type="application/x-www-form-urlencoded", expect_errors=True
    )
    assert answer.status_int in (400, 403, 413) and answer.content_type == "text/html"
    assert withdrawal(pending).status == "pending"


def test_broken_login_bodies_rerender_the_login_form(app, make_operator):
    client = browser(app)
    client.get("/ops/login")
    answer = client.post(
        "/ops/login", b"\xff\xfe", content_type="application/x-www-form-urlencoded", expect_errors=True
    )
    assert answer.status_int == 400 and 'name="password"' in answer.text
    assert OperatorSession.select().count() == 0


def test_books_page_shows_the_trial_balance(app, operator_console, expert):
    page = operator_console.get("/ops/books")
    assert "pingpp" in page.text and "¥100.00" in page.text and "（平衡）" in page.text


def test_the_chart_is_an_inline_svg_with_a_table_of_the_same_numbers(app, operator_console, expert):
    page = operator_console.get("/ops/stats")
    svg = re.search(r"<svg id=\"chart\".*?</svg>", page.text, re.S).group(0)
    assert svg.count('class="bar ') == 90  # 30 days, three series
    tallest = [float(h) for h in re.findall(r'class="bar paid"[^>]*height="([0-9.]+)"', svg)]
    assert max(tallest) > 0 and sorted(tallest)[-2] == 0  # only today had a pay
    assert "¥100.00" in svg and "¥100.00" in page.text.split('id="volumes"')[1]
