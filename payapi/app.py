"""create_app: the collaborators come in, the whole route table is here."""

import falcon
import falcon.media
import msgspec

from payapi.backoffice import actions
from payapi.backoffice.operators import BasicLogins
from payapi.contract.shapes import Codec
from payapi.http import console as c
from payapi.http import oncall_web as oc
from payapi.http import openapi
from payapi.http.auth import Authenticator
from payapi.http.middleware import HeaderAuth, RequestLog, install_error_handlers
from payapi.http.resources import internal, ops, phone, service, webhooks
from payapi.infra import outbox as notifications


def routes(settings, gateway, sms_backend, codec, console):
    """Every route and its resource: one screen shows the whole service."""
    return [
        # The customer's nine routes (seed 1-9).
        ("/rest/pay/{pay_id}", phone.PayResource()),
        ("/rest/pay/{pay_id}/status", phone.PayStatusResource(codec, settings, gateway)),
        ("/rest/pay/withdraw", phone.Withdraw(codec, settings)),
        ("/rest/pay/passwd", phone.Passwd(codec, settings)),
        ("/rest/pay/question", phone.Question(codec, settings)),
        ("/rest/pay/withdrawInfo", phone.WithdrawInfo(codec, settings)),
        ("/rest/pay/checkInfo", phone.CheckInfo()),
        # Routes the seed implies.
        ("/rest/pay/smscode", phone.SmsCodeResource(codec, settings, sms_backend)),
        ("/rest/pay/balance", phone.Balance(settings)),
        ("/rest/pay/withdraws", phone.Withdraws(codec)),
        ("/rest/pay/bills", phone.Bills(codec, settings)),
        ("/rest/pay/bills/summary", phone.BillsSummary(codec, settings)),
        ("/rest/pay/webhook", webhooks.Webhook(settings, gateway)),
        ("/internal/pays", internal.InternalPays(codec, settings, gateway)),
        ("/internal/pays/{pay_id}", internal.InternalPay()),
        ("/internal/pays/{pay_id}/refunds", internal.InternalRefunds(codec, settings, gateway)),
        ("/healthz", service.Health()),
        ("/metrics", service.Metrics()),
        # Operators: JSON for scripts (HTTP Basic) ...
        ("/ops/api/health", oc.OpsHealth()),
        ("/ops/api/withdrawals", oc.OpsWithdrawals(codec)),
        ("/ops/api/withdrawals/{withdraw_id}/retry", ops.OpsWithdrawalRetry(codec, gateway)),
        ("/ops/api/withdrawals/{withdraw_id}/fail", ops.OpsWithdrawalFail(codec, gateway)),
        ("/ops/api/pays", ops.OpsPays(codec)),
        ("/ops/api/notifications", oc.OpsNotifications(codec, settings=settings)),
        ("/ops/api/notifications/{message_id}/resend", ops.OpsNotificationResend(codec)),
        ("/ops/api/audit", ops.OpsAudit(codec)),
        ("/ops/api/trial-balance", ops.OpsTrialBalance()),
        ("/ops/api/reconciliations", ops.OpsReconciliations(codec)),
        ("/ops/api/stats", ops.OpsVolumes(settings=settings)),
        # ... and the console (HTML, a session cookie; not in the OpenAPI document).
        ("/ops", oc.Withdrawals(console)),
        ("/ops/health", oc.HealthPage(console)),
        ("/ops/experts/{user_id}", oc.Expert(console)),
        ("/ops/login", c.LoginPage(console)),
        ("/ops/logout", c.LogoutPage(console)),
        ("/ops/withdrawals/{withdraw_id}", c.WithdrawalPage(console)),
        ("/ops/withdrawals/{withdraw_id}/retry", c.WithdrawalActionPage(console, gateway, actions.RETRY)),
        ("/ops/withdrawals/{withdraw_id}/fail", c.WithdrawalActionPage(console, gateway, actions.FAIL)),
        ("/ops/pays", c.PaysPage(console)),
        ("/ops/pays/{pay_id}", c.PayPage(console)),
        ("/ops/notifications", c.NotificationsPage(console)),
        ("/ops/notifications/{message_id}/resend", c.NotificationResendPage(console)),
        ("/ops/books", c.BooksPage(console)),
        ("/ops/audit", c.AuditPage(console)),
        ("/ops/stats", c.VolumesPage(console)),
        ("/ops/static/ops.css", c.Static()),
    ]


class MsgspecJSON(falcon.media.BaseHandler):
    """Answers (Structs, dicts) encoded by msgspec; request bodies are decoded by shapes.Codec instead."""

    def __init__(self):
        self._encode = msgspec.json.Encoder().encode

    def serialize(self, media, content_type):
        return self._encode(media)

    def deserialize(self, stream, content_type, content_length):
        return msgspec.json.decode(stream.read())


def create_app(settings, gateway, sms_backend):
    notifications.configure(settings)
    operators = BasicLogins(settings.bcrypt_rounds)
    app = falcon.App(
        middleware=[RequestLog(), HeaderAuth(Authenticator(settings.auth_secrets), settings.service_key, operators)],
    )
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = MsgspecJSON()
    install_error_handlers(app)

    codec = Codec(settings)
    table = routes(settings, gateway, sms_backend, codec, c.Console(settings, codec))
    document = openapi.document(settings, codec, [*table, ("/openapi.json", service.OpenApi(None))])
    table.append(("/openapi.json", service.OpenApi(document)))
    for template, resource in table:
        if hasattr(resource, "on_get") and not hasattr(resource, "on_head"):
            # HEAD on every GET route (RFC 9110 9.3.2): the GET's answer; falcon sends its head only,
            # with the Content-Length of the body it drops.
            resource.on_head = resource.on_get
        app.add_route(template, resource)
    return app
