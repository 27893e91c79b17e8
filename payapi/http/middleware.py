"""Cross-cutting request handling: request ids and access log, header auth, the error envelope."""

import hmac
import logging
import os
import re
import time

import falcon
import peewee

from payapi.backoffice import operators
from payapi.contract.errors import DEFAULT_MSG, INVALID, UNAUTHENTICATED, UNEXPECTED, ApiError, http_error_answer
from payapi.contract.shapes import Failure
from payapi.infra import metrics

log = logging.getLogger("payapi.request")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
LOGIN_PATH = "/ops/login"


class RequestLog:
    """Accept or make X-Request-Id, echo it, write one JSON line per request, and count it for /metrics."""

    def process_request(self, req, resp):
        incoming = req.get_header("X-Request-Id")
        req.context.request_id = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()
        req.context.started = time.perf_counter()
        # RFC 9112 3.2: an HTTP/1.1 request without a Host, or with several, is 400.
        if req.env.get("SERVER_PROTOCOL") == "HTTP/1.1" and "," in req.env.get("HTTP_HOST", ","):
            raise ApiError(INVALID, "请求格式有误", 400)

    def process_response(self, req, resp, resource, req_succeeded):
        resp.set_header("X-Request-Id", req.context.request_id)
        media = resp.media
        code = media.get("code") if isinstance(media, dict) else getattr(media, "code", None)
        if code is None and resp.status_code == 200 and (resp.content_type or "").startswith(falcon.MEDIA_JSON):
            code = 900  # an answer sent as JSON text (a pay's stored info); HTML and redirects have none
        seconds = time.perf_counter() - req.context.started
        route = req.uri_template or "-"
        metrics.observe_request(route, req.method, resp.status_code, code, seconds)
        log.info(
            "request",
            extra={
                "fields": {
                    "request_id": req.context.request_id,
                    "method": req.method,
                    "route": route,
                    "status": resp.status_code,
                    "code": code,
                    "ms": round(seconds * 1000, 2),
                }
            },
        )


class HeaderAuth:
    """Each resource declares the one kind of credential it takes (`auth`), and only that one works:

    - "user" (the default): the `auth` JWT (the app's routes);
    - "service": X-Service-Key (/internal);
    - "operator": an operator's HTTP Basic credentials (/ops/api, scripts); 401 without;
    - "console": an operator's session cookie (/ops, the console); a redirect to its login form without;
    - "metrics": X-Service-Key, or an operator (Basic or session);
    - None: nothing (the webhook, which is signed; health; the document; the login form).

    So a user token or the service key never opens /ops, and an operator's session or Basic
    credentials never open /rest or /internal.
    """

    def __init__(self, authenticator, service_key, basic_logins):
        self.authenticator = authenticator
        self.service_key = service_key.encode() if service_key else b""
        self.basic_logins = basic_logins

    def process_resource(self, req, resp, resource, params):
        kind = getattr(resource, "auth", "user") if resource is not None else None
        if kind == "user":
            req.context.user_id, req.context.phone = self.authenticator.authenticate(req.get_header("auth"))
        elif kind == "service":
            self._service(req)
        elif kind == "operator":
            req.context.operator = self.basic_logins.authenticate(req.get_header("Authorization"), client_address(req))
        elif kind == "console":
            session = operator_session(req)
            if session is None:
                raise falcon.HTTPSeeOther(LOGIN_PATH)
            req.context.session, req.context.operator = session, session.identity
        elif kind == "metrics":
            if req.get_header("X-Service-Key") is not None:
                self._service(req)
            elif req.get_header("Authorization") is not None:
                req.context.operator = self.basic_logins.authenticate(
                    req.get_header("Authorization"), client_address(req)
                )
            elif operator_session(req) is None:
                raise ApiError(UNAUTHENTICATED, "需要服务密钥或操作员身份")

    def _service(self, req):
        given = (req.get_header("X-Service-Key") or "").encode()
        if not self.service_key or not hmac.compare_digest(given, self.service_key):
            raise ApiError(UNAUTHENTICATED, "服务密钥无效")


def client_address(req):
    """The client's address for counting wrong passwords: the last `X-Forwarded-For` entry (the one
    the platform's router appends; the client can write any before it), else the peer."""
    forwarded = req.get_header("X-Forwarded-For")
    last = forwarded.rpartition(",")[2].strip() if forwarded else ""
    return (last or req.remote_addr or "")[:64]


def session_token(req):
    return (req.get_cookie_values(operators.SESSION_COOKIE) or [""])[0]


def operator_session(req):
    """The live console session the request's cookie names, or None."""
    return operators.session_of(session_token(req))


def _render(resp, status, body, headers=None):
    resp.status = status
    resp.media = Failure(**body)  # every failure has the one declared shape
    for name, value in (headers or {}).items():
        if name.lower() in ("allow", "retry-after"):
            resp.set_header(name, value)


def handle_api_error(req, resp, ex, params):
    retry_after = ex.extra.get("retry_after")
    _render(resp, ex.http_status, ex.body(), {"Retry-After": str(retry_after)} if retry_after else None)


def handle_http_error(req, resp, ex, params):
    """Falcon's own errors (unknown route, wrong method, bad headers) in our envelope."""
    code, msg = http_error_answer(ex.status_code)
    _render(resp, ex.status_code, {"code": code, "msg": msg}, ex.headers)


def handle_database_down(req, resp, ex, params):
    if not isinstance(ex, (peewee.OperationalError, peewee.InterfaceError)):
        return handle_unexpected(req, resp, ex, params)
    log.error("database unavailable (request %s): %s", req.context.get("request_id"), type(ex).__name__)
    _render(resp, 503, {"code": UNEXPECTED, "msg": "服务暂时不可用，请稍后再试"}, {"Retry-After": "5"})


def handle_unexpected(req, resp, ex, params):
    log.exception("unexpected error (request %s)", req.context.get("request_id"))
    _render(
        resp,
        500,
        {"code": UNEXPECTED, "msg": DEFAULT_MSG[UNEXPECTED], "request_id": req.context.get("request_id")},
    )


def install_error_handlers(app):
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(peewee.PeeweeException, handle_database_down)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(ApiError, handle_api_error)
