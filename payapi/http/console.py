"""The operators' console at /ops/: server-rendered HTML (Jinja2, autoescaped), no JavaScript.

The pages show what actions.py reads and do what it does, as /ops/api does in JSON. Every page needs a
session (HeaderAuth, `auth = "console"`; without one: a redirect to the login form) and is sent
with a strict Content-Security-Policy: nothing but this origin's stylesheet and forms, no script
at all, never inside a frame. Every form carries a CSRF token (the session's; the login form's is
a double-submit cookie, as there is no session yet); a form whose token is missing or wrong, or
whose fields are bad, is shown again with the error and nothing is done. Actions also need their
confirmation box ticked. Money is shown as ¥ with two decimals, times in TIMEZONE.
"""

import datetime
import os
import secrets
import urllib.parse

import falcon
import jinja2

from payapi.backoffice import actions, oncall, operators
from payapi.contract.errors import INVALID, LOCKED, ApiError, invalid
from payapi.contract.render import audit_info, reconciliation_info
from payapi.contract.shapes import FailRequest, ReasonRequest
from payapi.domain.ids import is_id
from payapi.http.body import read_body
from payapi.http.middleware import LOGIN_PATH, client_address, operator_session, session_token
from payapi.infra import health
from payapi.infra.models import AuditEntry, Reconciliation
from payapi.money import books

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
STATIC = os.path.join(TEMPLATES, "static")
HOME = "/ops"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LABELS = {
    "pending": "待处理",
    "processing": "处理中",
    "succeeded": "成功",
    "failed": "失败",
    "paid": "已支付",
    "fail": "失败",
    "cancel": "已取消",
    "refunded": "已退款",
    "delivered": "已送达",
    "success": "成功",
    "invalid": "无效",
    "clean": "一致",
    "healed": "已修复",
    "different": "有差异",
    "applied": "已应用",
    "ignored": "已忽略",
    "mismatch": "不匹配",
    "unknown": "未知",
    "replay": "重复",
    "malformed": "格式错误",
    "withdrawal.retry": "重试提现",
    "withdrawal.fail": "提现置为失败",
    "notification.resend": "重发通知",
}


def yuan(fen):
    """12356 -> ¥123.56; -5 -> -¥0.05."""
    if fen is None:
        return ""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def duration(seconds):
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} 天 {hours} 小时"
    if hours:
        return f"{hours} 小时 {minutes} 分"
    return f"{minutes} 分钟" if minutes else f"{seconds} 秒"


class Console:
    """The templates and what every page shares."""

    def __init__(self, settings, codec):
        self.settings, self.codec = settings, codec
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(os.path.join(TEMPLATES, "ops")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            yuan=yuan, when=self.when, duration=duration, label=lambda value: LABELS.get(str(value), str(value))
        )

    def when(self, value):
        """ms since the epoch, or an ISO-8601 UTC string -> `2026-12-06 18:30:05` in TIMEZONE."""
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        else:
            moment = datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
        return moment.astimezone(self.settings.tz).strftime("%Y-%m-%d %H:%M:%S")

    def render(self, req, resp, template, status=200, **context):
        session = req.context.get("session")
        resp.status = status
        resp.content_type = "text/html; charset=utf-8"
        for name, value in SECURITY_HEADERS.items():
            resp.set_header(name, value)
        if session and "health_problems" not in context:
            # every page's header: red when something is wrong, failing notifications counted
            context = {**header_status(), **context}
        resp.text = self.env.get_template(template).render(
            operator=session.identity.name if session else None,
            csrf=session.csrf if session else "",
            timezone=self.settings.timezone,
            **context,
        )

    def form(self, req):
        """The posted form's fields (first value of each), its CSRF token checked against the session's."""
        fields = read_form(req)
        if not operators.same_token(fields.get("csrf"), req.context.session.csrf):
            raise ApiError(INVALID, "表单已过期或来源不明（CSRF 校验失败），请刷新页面后重试", 403)
        return fields

    def action_form(self, req, shape):
        """A confirmed action's form: CSRF, the confirmation box, then its fields by the JSON route's shape."""
        fields = self.form(req)
        if fields.get("confirm") != "yes":
            raise invalid("请勾选确认框后再提交")
        return self.codec.convert({"reason": fields.get("reason", "")}, shape)

    def cookie(self, resp, name, value, max_age):
        resp.set_cookie(name, value, max_age=max_age, path=HOME, secure=True, http_only=True, same_site="Strict")

    def drop_cookie(self, resp, name):
        resp.unset_cookie(name, path=HOME, same_site="Strict")


def read_form(req):
    raw = read_body(req)
    try:
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise invalid("表单格式有误") from None
    fields = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def redirect(to):
    raise falcon.HTTPSeeOther(to)


def page_id(value, what="id"):
    if not is_id(value):
        raise invalid(f"{what} 格式错误")
    return value


class Page:
    """A console page: its errors (unknown id, bad query) are a page too, never JSON."""

    auth: str | None = "console"
    documented = False

    def __init__(self, console):
        self.console = console

    def failed(self, req, resp, error):
        self.console.render(req, resp, "error.html", status=error.http_status, error=error.msg)


# --- login --------------------------------------------------------------------------------------------


class LoginPage(Page):
    auth = None

    def on_get(self, req, resp):
        if operator_session(req) is not None:
            redirect(HOME)
        self.show(req, resp)

    def show(self, req, resp, status=200, error=None, name=""):
        token = secrets.token_urlsafe(24)
        self.console.cookie(resp, operators.LOGIN_CSRF_COOKIE, token, 3600)
        self.console.render(req, resp, "login.html", status=status, login_csrf=token, error=error, name=name)

    def on_post(self, req, resp):
        try:
            fields = read_form(req)
        except ApiError as error:
            return self.show(req, resp, error.http_status, error.msg)
        name = fields.get("name", "")[:64]
        expected = (req.get_cookie_values(operators.LOGIN_CSRF_COOKIE) or [""])[0]
        if not operators.same_token(fields.get("csrf"), expected):
            return self.show(req, resp, 403, "登录表单已过期（CSRF 校验失败），请重新输入", name)
        try:
            identity = operators.verify(
                fields.get("name", ""),
                fields.get("password", ""),
                self.console.settings.bcrypt_rounds,
                client_address(req),
            )
        except ApiError as error:
            if error.code == LOCKED:
                minutes = -(-error.extra.get("retry_after", 60) // 60)
                return self.show(req, resp, 429, f"尝试次数过多，账号已锁定，请 {minutes} 分钟后再试", name)
            return self.show(req, resp, error.http_status, error.msg, name)
        token, _ = operators.open_session(identity)
        self.console.cookie(resp, operators.SESSION_COOKIE, token, operators.SESSION_MS // 1000)
        self.console.drop_cookie(resp, operators.LOGIN_CSRF_COOKIE)
        redirect(HOME)


class LogoutPage(Page):
    def on_post(self, req, resp):
        try:
            self.console.form(req)
        except ApiError as error:
            return self.failed(req, resp, error)
        operators.close_session(session_token(req))
        self.console.drop_cookie(resp, operators.SESSION_COOKIE)
        redirect(LOGIN_PATH)


# --- withdrawals ----------------------------------------------------------------------------------------


class WithdrawalPage(Page):
    def on_get(self, req, resp, withdraw_id):
        try:
            self.show(req, resp, page_id(withdraw_id, "提现 id"), done=req.get_param("done"))
        except ApiError as error:
            self.failed(req, resp, error)

    def show(self, req, resp, withdraw_id, status=200, error=None, reason="", action=None, done=None):
        w = actions.withdrawal(withdraw_id)
        history = [
            audit_info(a)
            for a in AuditEntry.select().where(AuditEntry.target == withdraw_id).order_by(AuditEntry.created_at.desc())
        ]
        self.console.render(
            req,
            resp,
            "withdrawal.html",
            status=status,
            w=actions.withdrawal_view(w),
            error=error,
            reason=reason,
            action=action,
            done=done if done and is_id(done) else None,
            history=history,
            tab="withdrawals",
        )


class WithdrawalActionPage(Page):
    """POST /ops/withdrawals/{id}/retry or /fail: the form on the withdrawal's page."""

    def __init__(self, console, gateway, action):
        super().__init__(console)
        self.gateway, self.action = gateway, action

    def on_post(self, req, resp, withdraw_id):
        page = WithdrawalPage(self.console)
        try:
            page_id(withdraw_id, "提现 id")
        except ApiError as error:
            return self.failed(req, resp, error)
        reason = ""
        try:
            fields = self.console.action_form(req, FailRequest if self.action == actions.FAIL else ReasonRequest)
            reason = fields.reason
            act = actions.fail_withdrawal if self.action == actions.FAIL else actions.retry_withdrawal
            _, entry = act(self.gateway, withdraw_id, req.context.operator, reason)
        except ApiError as error:
            try:
                return page.show(req, resp, withdraw_id, error.http_status, error.msg, reason, self.action)
            except ApiError as missing:
                return self.failed(req, resp, missing)
        redirect(f"{HOME}/withdrawals/{withdraw_id}?done={entry.audit_id}")


# --- pays -------------------------------------------------------------------------------------------


class PaysPage(Page):
    def on_get(self, req, resp):
        q = (req.get_param("q") or "").strip()
        found, error = None, None
        if q:
            try:
                found = actions.search_pays(q[:64])
            except ApiError as exc:
                error = exc.msg
        self.console.render(
            req, resp, "pays.html", status=400 if error else 200, q=q[:64], pays=found, error=error, tab="pays"
        )


class PayPage(Page):
    def on_get(self, req, resp, pay_id):
        try:
            history = actions.pay_history(page_id(pay_id, "支付 id"))
        except ApiError as error:
            return self.failed(req, resp, error)

        self.console.render(req, resp, "pay.html", tab="pays", refunded=oncall.refunded(history["refunds"]), **history)


# --- notifications ----------------------------------------------------------------------------------


class NotificationsPage(Page):
    def on_get(self, req, resp):
        self.show(req, resp, done=req.get_param("done"))

    def show(self, req, resp, status=200, error=None, target=None, done=None):

        url = self.console.settings.notify_url
        self.console.render(
            req,
            resp,
            "notifications.html",
            status=status,
            error=error,
            target=target,
            done=done if done and is_id(done) else None,
            target_host=oncall.target_host(url),
            failing=[oncall.notification_now(n, url) for n in oncall.failing_notifications()],
            notifications=oncall.failed_notifications(),
            tab="notifications",
        )


class NotificationResendPage(Page):
    def on_post(self, req, resp, message_id):
        page = NotificationsPage(self.console)
        try:
            if not (message_id.startswith("msg_") and is_id(message_id[4:])):
                raise invalid("通知 id 格式错误")
            fields = self.console.action_form(req, ReasonRequest)
            _, entry = actions.resend_notification(message_id, req.context.operator, fields.reason)
        except ApiError as error:
            return page.show(req, resp, error.http_status, error.msg, message_id)
        redirect(f"{HOME}/notifications?done={entry.audit_id}")


# --- the books, the audit trail, volumes ----------------------------------------------------------------


class BooksPage(Page):
    def on_get(self, req, resp):
        rows = Reconciliation.select().order_by(Reconciliation.created_at.desc()).limit(30)

        totals = books.trial_balance()
        totals["accounts"] = oncall.name_accounts(totals["accounts"])
        self.console.render(
            req, resp, "books.html", totals=totals, reconciliations=[reconciliation_info(r) for r in rows], tab="books"
        )


class AuditPage(Page):
    PAGE = 100

    def on_get(self, req, resp):
        before = req.get_param("before")
        try:
            entries = operators.audit_entries(self.PAGE + 1, page_id(before, "before") if before else None)
        except ApiError as error:
            return self.failed(req, resp, error)
        self.console.render(
            req,
            resp,
            "audit.html",
            entries=[audit_info(a) for a in entries[: self.PAGE]],
            more=entries[self.PAGE - 1].audit_id if len(entries) > self.PAGE else None,
            tab="audit",
        )


class VolumesPage(Page):
    """A 30-day chart drawn as inline SVG on the server (no script), and the same numbers as a table."""

    WIDTH, HEIGHT, TOP, LEFT, BOTTOM = 960, 320, 20, 90, 40
    SERIES = (("paid", "支付"), ("refunded", "退款"), ("withdrawn", "提现"))

    def on_get(self, req, resp):
        days = actions.daily_volumes(self.console.settings.tz)
        self.console.render(req, resp, "stats.html", days=days, chart=self.chart(days), series=self.SERIES, tab="stats")

    def chart(self, days):
        peak = max([1] + [totals[key] for _, totals in days for key, _ in self.SERIES])
        plot_w, plot_h = self.WIDTH - self.LEFT - 10, self.HEIGHT - self.TOP - self.BOTTOM
        slot = plot_w / len(days)
        bar = slot / (len(self.SERIES) + 1)
        bars, labels = [], []
        for i, (date, totals) in enumerate(days):
            x0 = self.LEFT + i * slot + bar / 2
            for j, (key, name) in enumerate(self.SERIES):
                h = plot_h * totals[key] / peak
                bars.append(
                    {
                        "x": round(x0 + j * bar, 1),
                        "y": round(self.TOP + plot_h - h, 1),
                        "w": round(bar, 1),
                        "h": round(h, 1),
                        "series": key,
                        "title": f"{date} {name} {yuan(totals[key])}",
                    }
                )
            if i % 5 == 0 or i == len(days) - 1:
                labels.append({"x": round(x0 + slot / 2 - bar / 2, 1), "text": date.strftime("%m-%d")})
        ticks = [{"y": round(self.TOP + plot_h * (1 - f), 1), "text": yuan(int(peak * f))} for f in (0, 0.5, 1)]
        return {
            "width": self.WIDTH,
            "height": self.HEIGHT,
            "left": self.LEFT,
            "right": self.WIDTH - 10,
            "base": self.TOP + plot_h,
            "bars": bars,
            "labels": labels,
            "ticks": ticks,
            "label_y": self.TOP + plot_h + 20,
        }


class Static:
    """The console's stylesheet: the one thing its Content-Security-Policy lets pages load."""

    auth = None
    documented = False

    def __init__(self):
        with open(os.path.join(STATIC, "ops.css"), "rb") as f:
            self.css = f.read()

    def on_get(self, req, resp):
        resp.data = self.css
        resp.content_type = "text/css; charset=utf-8"
        resp.set_header("Cache-Control", "max-age=3600")
        resp.set_header("X-Content-Type-Options", "nosniff")


def header_status(snapshot=None):
    """What every page's header shows: whether anything is wrong, and how many notifications fail now
    (from the health page's own snapshot when it has one, else read now)."""
    if snapshot is None:
        snapshot = health.snapshot()
    return {"health_problems": health.problems(snapshot), "failing_notifications": snapshot.outbox.failing}
