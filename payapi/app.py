"""create_app: the collaborators come in, the whole route table is here."""

import falcon

from . import resources as r
from .auth import Authenticator
from .middleware import HeaderAuth, RequestLog, install_error_handlers


def create_app(settings, gateway, sms_backend):
    app = falcon.App(
        middleware=[RequestLog(), HeaderAuth(Authenticator(settings.auth_secrets), settings.service_key)],
    )
    app.req_options.strip_url_path_trailing_slash = True
    install_error_handlers(app)

    routes = [
        # The customer's nine routes (seed 1-9).
        ("/rest/pay/{pay_id}", r.Pay()),
        ("/rest/pay/{pay_id}/status", r.PayStatus(gateway, settings)),
        ("/rest/pay/withdraw", r.Withdraw(settings)),
        ("/rest/pay/passwd", r.Passwd(settings)),
        ("/rest/pay/question", r.Question(settings)),
        ("/rest/pay/withdrawInfo", r.WithdrawInfo(settings)),
        ("/rest/pay/checkInfo", r.CheckInfo()),
        # Routes the seed implies.
        ("/rest/pay/smscode", r.SmsCode(settings, sms_backend)),
        ("/rest/pay/balance", r.Balance(settings)),
        ("/rest/pay/withdraws", r.Withdraws()),
        ("/rest/pay/webhook", r.Webhook(gateway, settings)),
        ("/internal/pays", r.InternalPays(gateway, settings)),
        ("/internal/pays/{pay_id}", r.InternalPay()),
        ("/healthz", r.Health()),
        ("/openapi.json", r.OpenApi()),
    ]
    for template, resource in routes:
        app.add_route(template, resource)
    return app
