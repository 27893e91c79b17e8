"""Helpers for the operators' tests: Basic credentials, a console session in webtest, forms with their CSRF token."""

import base64
import re

import webtest

OPERATOR_PASSWORD = "correct horse battery staple"


def basic(name, password=OPERATOR_PASSWORD):
    """An HTTP Basic Authorization header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


# webtest's cookie jar sends a Secure cookie only over https.
HTTPS = {"wsgi.url_scheme": "https", "HTTP_HOST": "payapi.test"}


def browser(app, address=None):
    """A fresh client of the same app (its own cookie jar), over https; with address, from that client
    address (the entry the platform's router appends to X-Forwarded-For, after one the client made up)."""
    environ = dict(HTTPS, HTTP_X_FORWARDED_FOR=f"192.0.2.66, {address}") if address else HTTPS
    return webtest.TestApp(app.app, extra_environ=environ)


def csrf_of(page):
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:2000]
    return match.group(1)


def log_in(client, name="alice", password=OPERATOR_PASSWORD):
    form = client.get("/ops/login")
    answer = client.post("/ops/login", {"csrf": csrf_of(form), "name": name, "password": password}, expect_errors=True)
    return answer


def console(app, name="alice", password=OPERATOR_PASSWORD):
    """A logged-in console client."""
    client = browser(app)
    answer = log_in(client, name, password)
    assert answer.status_int == 303 and answer.headers["Location"].endswith("/ops"), answer.text[:2000]
    return client


def cookie_header(answer, name):
    """The Set-Cookie header of the answer for cookie name."""
    (header,) = [v for k, v in answer.headerlist if k.lower() == "set-cookie" and v.startswith(name + "=")]
    return header
