"""The pinned pingpp SDK as gateway.py adapts it: imports on today's Python, certifi's CA bundle,
request signing with `cryptography`, and failures logged with ids and Ping++'s own message.

A small recording server stands in for Ping++ here: these tests look at the HTTP requests the
SDK sends (headers, signature), which the fake Ping++ of the other tests does not check.
"""

import base64
import dataclasses
import http.server
import json
import logging
import os
import sys
import threading
import wsgiref.simple_server

import certifi
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from payapi.infra import gateway as gateway_module
from payapi.infra.gateway import ChargeRequest, GatewayError, PingppGateway, TransferRequest, pingpp  # after its shims
from tests.support.config import SERVICE_KEY
from tests.support.pingpp import new_rsa_key, private_pem
from tests.support.scenarios import pay_request

ACCOUNT_ID, ACCOUNT_NAME = "alipay-account@example.cn", "张三丰"


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


class RecordingPingpp:
    """Answers every request with the next scripted (status, body), recording what came in."""

    def __init__(self):
        self.requests, self.answers = [], []
        self.server = wsgiref.simple_server.make_server("127.0.0.1", 0, self, handler_class=_QuietHandler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        self.requests.append(
            {"path": environ["PATH_INFO"], "query": environ.get("QUERY_STRING", ""), "body": body, "headers": headers}
        )
        status, answer = self.answers.pop(0) if self.answers else (200, {})
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]


@pytest.fixture
def ping():
    server = RecordingPingpp()
    yield server
    server.server.shutdown()
    server.server.server_close()


def charge_answer(order_no, amount=100):
    return {
        "id": "ch_" + order_no,
        "object": "charge",
        "order_no": order_no,
        "amount": amount,
        "currency": "cny",
        "paid": False,
    }


def charge_request(order_no="order-1"):
    return ChargeRequest(
        order_no=order_no, amount=100, channel="alipay", subject="咨询", body="咨询", client_ip="1.2.3.4"
    )


def test_the_sdk_imports_and_uses_its_moves_on_this_python():
    from pingpp.six.moves.urllib.parse import quote_plus  # what Python 3.12+ broke

    assert quote_plus("a b/c") == "a+b%2Fc"
    assert pingpp.util.parse_qsl("a=1&b=2") == [("a", "1"), ("b", "2")]


def test_the_sdk_verifies_tls_against_certifi_not_its_own_2018_bundle():
    assert pingpp.ca_bundle == certifi.where()
    assert pingpp.util.ca_bundle_path(pingpp.ca_bundle) == os.path.realpath(certifi.where())


@pytest.mark.parametrize("given_as", ["pkcs8 value", "pkcs1 value with escaped newlines", "pkcs8 path"])
def test_requests_are_signed_with_the_private_key_as_ping_plus_plus_verifies_them(ping, tmp_path, given_as):
    key = new_rsa_key()
    if given_as.startswith("pkcs1"):
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        kwargs = {"private_key": pem.replace("\n", "\\n")}  # as a one-line config var
    elif given_as.endswith("path"):
        (tmp_path / "private.pem").write_bytes(private_pem(key))
        kwargs = {"private_key_path": str(tmp_path / "private.pem")}
    else:
        kwargs = {"private_key": private_pem(key).decode()}
    gateway = PingppGateway("sk_test_x", "app_x", api_base=ping.url, timeout=2, **kwargs)
    ping.answers.append((200, charge_answer("order-1")))
    assert gateway.create_charge(charge_request()).id == "ch_order-1"
    ping.answers.append((200, charge_answer("order-1")))
    gateway.retrieve_charge("ch_order-1")

    for sent in ping.requests:
        headers = sent["headers"]
        uri = sent["path"] + (f"?{sent['query']}" if sent["query"] else "")
        # Ping++'s rule: body + request URI + timestamp, RSA-SHA256 PKCS#1 v1.5, base64.
        signed = sent["body"].decode() + uri + headers["pingplusplus-request-timestamp"]
        signature = base64.b64decode(headers["pingplusplus-signature"])
        key.public_key().verify(signature, signed.encode(), padding.PKCS1v15(), hashes.SHA256())  # raises if wrong
    assert "Crypto" not in sys.modules  # pycryptodome is not needed for it


def test_the_private_key_is_loaded_once_not_for_every_signed_call(ping, monkeypatch):
    # Loading a PEM RSA key checks it (~45 ms of CPU for 2048 bits); the SDK hands the PEM text
    # over on every call, and each call loaded it again.
    loads = []
    real = gateway_module.load_private_key
    monkeypatch.setattr(gateway_module, "load_private_key", lambda pem: loads.append(1) or real(pem))
    gateway = PingppGateway(
        "sk_test_x", "app_x", api_base=ping.url, timeout=2, private_key=private_pem(new_rsa_key()).decode()
    )
    for n in range(3):
        ping.answers.append((200, charge_answer(f"order-{n}")))
        gateway.retrieve_charge(f"ch_order-{n}")
    assert all("pingplusplus-signature" in sent["headers"] for sent in ping.requests)
    assert len(loads) <= 2  # checked when the gateway is made, then once for signing


def test_without_a_private_key_requests_are_not_signed(ping):
    gateway = PingppGateway("sk_test_x", "app_x", api_base=ping.url, timeout=2)
    ping.answers.append((200, charge_answer("order-2")))
    gateway.create_charge(charge_request("order-2"))
    assert "pingplusplus-signature" not in ping.requests[0]["headers"]


def test_a_broken_private_key_fails_when_the_gateway_is_built():
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        PingppGateway("sk_test_x", "app_x", private_key="-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----")


def failures(caplog):
    return [r for r in caplog.records if r.name == "payapi.gateway" and "call" in getattr(r, "fields", {})]


def test_a_refused_call_is_logged_with_its_ids_and_ping_plus_plus_message(ping, caplog):
    gateway = PingppGateway("sk_test_x", "app_x", api_base=ping.url, timeout=2)
    ping.answers.append(
        (400, {"error": {"type": "invalid_request_error", "message": "订单号 order-3 已存在", "code": "order_no_used"}})
    )
    with pytest.raises(GatewayError):
        gateway.create_charge(charge_request("order-3"))
    (line,) = failures(caplog)
    assert (line.fields["call"], line.fields["order_no"], line.fields["http_status"]) == (
        "create charge",
        "order-3",
        400,
    )
    assert line.fields["ping_message"] == "订单号 order-3 已存在" and "订单号 order-3 已存在" in line.getMessage()


def test_a_failed_transfer_is_logged_without_the_account_or_the_key(ping, caplog):
    gateway = PingppGateway("sk_live_secret_key", "app_x", api_base=ping.url, timeout=2)
    ping.answers.append((500, {"error": {"type": "api_error", "message": "系统繁忙"}}))
    request = TransferRequest(
        order_no="w-1", amount=1000, recipient=ACCOUNT_ID, recipient_name=ACCOUNT_NAME, description="提现"
    )
    with pytest.raises(GatewayError):
        gateway.create_transfer(request)
    (line,) = failures(caplog)
    assert (line.fields["order_no"], line.fields["ping_message"]) == ("w-1", "系统繁忙")
    assert ACCOUNT_ID not in caplog.text and ACCOUNT_NAME not in caplog.text and "sk_live_secret_key" not in caplog.text


def test_an_unreachable_ping_plus_plus_is_logged_with_the_ids(caplog):
    gateway = PingppGateway("sk_test_x", "app_x", api_base="http://127.0.0.1:9", timeout=1)
    with pytest.raises(GatewayError):
        gateway.retrieve_transfer("tr_123")
    (line,) = failures(caplog)
    assert line.fields["transfer_id"] == "tr_123" and line.fields["error"] == "APIConnectionError"
    assert line.fields["ping_message"].startswith("(Network error: ConnectionError")


def test_without_an_api_key_every_call_says_why_it_failed(app, settings, database, caplog):
    """Development may run without PINGPP_API_KEY; each 920 then has a log line that says why."""
    import webtest

    from payapi.app import create_app
    from payapi.users.sms import FileSms
    from payapi.wsgi import gateway_from

    no_key = dataclasses.replace(settings, env="development", pingpp_api_key="")
    app = webtest.TestApp(create_app(no_key, gateway_from(no_key), FileSms(settings.sms_file)))
    for _ in range(2):
        answer = app.post(
            "/internal/pays",
            json.dumps(pay_request()).encode(),
            headers={"X-Service-Key": SERVICE_KEY},
            content_type="application/json",
            expect_errors=True,
        )
        assert answer.status_int == 502 and answer.json["code"] == 920
    said = [r for r in caplog.records if "PINGPP_API_KEY is not set" in r.getMessage()]
    assert len(said) == 2 and all(r.levelno == logging.ERROR and r.fields["order_no"] for r in said)


def test_calls_from_one_thread_reuse_one_kept_alive_connection_to_ping_plus_plus():
    # The SDK made a new requests.Session for every call: a new TCP (and, at Ping++, TLS) handshake
    # each time. Each thread keeps one client now; another thread has its own.
    connections = []

    class KeepAlive(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            connections.append(self.client_address)
            super().setup()

        def do_GET(self):
            body = json.dumps(charge_answer(self.path.rsplit("_", 1)[-1])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gateway = PingppGateway("sk_test_x", "app_x", api_base=f"http://127.0.0.1:{server.server_port}")
        assert [gateway.retrieve_charge(f"ch_{n}").id for n in range(3)] == ["ch_0", "ch_1", "ch_2"]
        assert len(connections) == 1
        other = threading.Thread(target=gateway.retrieve_charge, args=("ch_3",))
        other.start()
        other.join()
        assert len(connections) == 2
    finally:
        server.shutdown()
        server.server_close()
