"""The sandbox as one object: Ping++'s API over HTTP, webhooks, fault injection and the controls.

    sandbox = Sandbox(webhook_url="http://127.0.0.1:8000/rest/pay/webhook").start()
    pingpp.api_base = sandbox.url        # the real SDK talks to it
    sandbox.mark_paid(charge_id)         # the payer pays; charge.succeeded is signed and delivered

Tests drive the same object: with `auto_deliver=False` (or no webhook URL) events are only
recorded, and `signed_event` gives a test the bytes and signature to send itself.
"""

import io
import json
import logging
import re
import threading
import time
import urllib.parse
from socketserver import ThreadingMixIn
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

from . import page
from .core import Call, ControlError, Ledger, PingppError, refused
from .sms import SmsSandbox, read_request
from .webhooks import QUEUED, RECORDED, Deliverer, Signer, encode, make_event

log = logging.getLogger("payapi.sandbox")

NEW_TRANSFER_STATUSES = ("pending", "paid", "failed")
NEW_REFUND_STATUSES = ("pending", "succeeded")
FAULTS = ("fail", "hang", "lose")
_JSON = [("Content-Type", "application/json; charset=utf-8")]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Http11(ServerHandler):
    http_version = "1.1"
    delimited = False  # the answer said its length (wsgiref forgets its headers once it is sent)

    def cleanup_headers(self):
        super().cleanup_headers()  # sets Content-Length when the app's answer is one piece
        self.delimited = "Content-Length" in self.headers


class _QuietHandler(WSGIRequestHandler):
    """HTTP/1.1 with kept-alive connections, as Ping++'s API (and Alibaba's and Tencent's) answer:
    wsgiref's own handler answers one request per connection, so every SDK call connected anew
    (and the sandbox started a thread for it), though payapi's gateway keeps a connection per
    thread for the next call. A request's body is read before the app runs, so whatever the app
    leaves unread cannot be taken for the next request; an answer with no Content-Length (its end
    is the connection's close) or a chunked request ends the connection, as does 60 s idle."""

    protocol_version = "HTTP/1.1"
    timeout = 60
    # wsgiref sends an answer's head and body in separate writes: on a kept connection Nagle's
    # algorithm held the body back until the client acknowledged the head (a delayed ACK, 40 ms).
    disable_nagle_algorithm = True

    def handle(self):
        self.close_connection = True
        self._one_request()
        while not self.close_connection:
            self._one_request()

    def _one_request(self):
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, ConnectionError):
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            self.close_connection = True
            return
        if not self.parse_request():  # an error was answered (parse_request decides on closing)
            return
        stdin = self.rfile
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # the app reads it as it comes; the connection ends after
        else:
            length = self.headers.get("Content-Length") or "0"
            stdin = io.BytesIO(self.rfile.read(int(length)) if length.isdigit() else b"")
        handler = _Http11(stdin, self.wfile, self.get_stderr(), self.get_environ(), multithread=False)
        handler.request_handler = self  # wsgiref logs through it
        handler.run(self.server.get_app())
        if not handler.delimited:
            self.close_connection = True

    def log_message(self, *args):
        pass


def _answer(start_response, status, body, headers=()):
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    start_response(
        f"{status} {_REASONS.get(status, 'Answer')}", [*_JSON, ("Content-Length", str(len(payload))), *headers]
    )
    return [payload]


_REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    504: "Gateway Timeout",
}


class Sandbox:
    def __init__(
        self,
        webhook_url=None,
        auto_deliver=True,
        key_file=None,
        public_key_path=None,
        host="127.0.0.1",
        port=0,
        delivery_timeout=5.0,
        backoff=1.0,
        backoff_max=60.0,
        max_attempts=8,
        aliyun_keys=None,
        tencent_keys=None,
    ):
        self.host, self.port = host, port
        self.sms = SmsSandbox(aliyun_keys, tencent_keys)  # Alibaba Cloud and Tencent Cloud SMS (sms.py)
        self.ledger = Ledger(emit=self._emit)
        self.signer = Signer(key_file)
        self.public_key_path = self.signer.write_public_key(public_key_path) if public_key_path else None
        self._defaults = (webhook_url, auto_deliver)
        self.webhook_url, self.auto_deliver = webhook_url, auto_deliver
        self.lock = threading.RLock()  # events, requests, faults
        self.events = []  # records: {"id", "type", "object_id", "raw", "signature", "status", "attempts", ...}
        self.requests = []  # every Ping++ API call: Call(method, path, body, headers, query)
        self.failures = []  # faults for the next API calls: {"kind": "fail"|"hang"|"lose", ...}
        self.slow = {}  # (method, path) -> seconds every such call takes before it is answered (a slow Ping++)
        self.deliverer = Deliverer(self.lock, delivery_timeout, backoff, backoff_max, max_attempts)
        self.server = None

    # --- objects (the same dicts the API serves; tests may read and poke them) -------------------

    charges = property(lambda self: self.ledger.charges)
    transfers = property(lambda self: self.ledger.transfers)
    refunds = property(lambda self: self.ledger.refunds)

    @property
    def transfer_status(self):
        """The status a new transfer gets: pending (default), paid or failed (announced at once)."""
        return self.ledger.transfer_status

    @transfer_status.setter
    def transfer_status(self, status):
        if status not in NEW_TRANSFER_STATUSES:
            raise ValueError(f"transfer_status must be one of {NEW_TRANSFER_STATUSES}")
        self.ledger.transfer_status = status

    @property
    def refund_status(self):
        """The status a new refund gets: pending (default: Alipay settles later) or succeeded."""
        return self.ledger.refund_status

    @refund_status.setter
    def refund_status(self, status):
        if status not in NEW_REFUND_STATUSES:
            raise ValueError(f"refund_status must be one of {NEW_REFUND_STATUSES}")
        self.ledger.refund_status = status

    @property
    def page_limit(self):
        """At most this many objects per list page, whatever `limit` asks (None: Ping++'s 1-100)."""
        return self.ledger.page_limit

    @page_limit.setter
    def page_limit(self, limit):
        self.ledger.page_limit = limit

    @property
    def private_key(self):
        return self.signer.key

    @property
    def public_key_pem(self):
        return self.signer.public_pem

    # --- controls ----------------------------------------------------------------------------

    def mark_paid(self, charge_id, even_if_reversed=False):
        """The payer pays: the charge (by id or order_no) as Ping++ then returns it."""
        return self.ledger.mark_paid(charge_id, even_if_reversed)

    def refund(self, charge_id, amount):
        return self.ledger.refund(charge_id, amount)

    def settle_refund(self, refund_id, outcome):
        return self.ledger.settle_refund(refund_id, outcome)

    def settle_transfer(self, transfer_id, outcome):
        return self.ledger.settle_transfer(transfer_id, outcome)

    def set_transfer(self, transfer_id, status):
        return self.ledger.set_transfer(transfer_id, status)

    def charge_for(self, order_no):
        with self.ledger.lock:
            found = [c for c in self.charges.values() if c["order_no"] == order_no]
            return self.ledger.api_retrieve_charge(found[-1]["id"]) if found else None

    def charge_creations(self, order_no=None):
        return self._creations("/v1/charges", order_no)

    def transfer_creations(self, order_no=None):
        return self._creations("/v1/transfers", order_no)

    def _creations(self, path, order_no):
        with self.lock:
            return [
                r
                for r in self.requests
                if r.method == "POST"
                and r.path == path
                and isinstance(r.body, dict)
                and (order_no is None or r.body.get("order_no") == order_no)
            ]

    def fail_next(self, times=1, status=500):
        """The next API calls answer `status` with Ping++'s api_error and do nothing."""
        self._add_faults(times, kind="fail", status=status)

    def hang_next(self, seconds, times=1):
        """The next API calls do nothing and answer 504 only after `seconds` (past the client's timeout)."""
        self._add_faults(times, kind="hang", seconds=seconds)

    def lose_next_response(self, seconds=0.0, times=1, after=0):
        """The next API calls are carried out, but answered 504 (after `seconds`): Ping++ did it, we never heard.

        after: let this many calls through untouched first.
        """
        self._add_faults(times, kind="lose", seconds=seconds, after=after)

    def _add_faults(self, times, after=0, **fault):
        with self.lock:
            self.failures.extend([{"kind": "none"}] * after)
            self.failures.extend(dict(fault) for _ in range(times))

    def reset(self):
        """Forget every object, call, fault and event; back to the settings given at construction."""
        self.ledger.clear()  # not under self.lock: a change announced holds the ledger's lock, then ours
        self.sms.reset()
        with self.lock:
            self.requests.clear()
            self.failures.clear()
            self.slow.clear()
            self.events.clear()
            self.deliverer.clear()
            self.webhook_url, self.auto_deliver = self._defaults

    # --- events --------------------------------------------------------------------------------

    def signed_event(self, event_type, obj, event_id=None):
        """(raw body, X-Pingplusplus-Signature) of an event as Ping++ would send it; not recorded."""
        raw = encode(make_event(event_type, obj, event_id))
        return raw, self.signer.sign(raw)

    def _emit(self, event_type, obj):
        event = make_event(event_type, obj)
        raw = encode(event)
        record = {
            "id": event["id"],
            "type": event_type,
            "object_id": obj.get("id"),
            "created": event["created"],
            "raw": raw,
            "signature": self.signer.sign(raw),
            "status": RECORDED,
            "attempts": 0,
            "last_status": None,
            "last_answer": "",
            "last_error": "",
            "url": None,
            "next_attempt_in": None,
        }
        with self.lock:
            self.events.append(record)
            if self.auto_deliver and self.webhook_url:
                self.deliverer.enqueue(record, self.webhook_url)

    def event(self, event_id):
        with self.lock:
            for record in self.events:
                if record["id"] == event_id:
                    return record
        raise ControlError(f"no event {event_id} in the sandbox", status=404)

    def deliver(self, event_id, url=None):
        """Send an event (again) now, e.g. after the web app was down for all of its attempts."""
        with self.lock:
            record = self.event(event_id)
            target = url or self.webhook_url
            if not target:
                raise ControlError("no webhook URL to deliver to", status=400)
            if record["status"] == QUEUED:
                raise ControlError(f"event {event_id} is already waiting for its next attempt")
            record["attempts"] = 0
            self.deliverer.enqueue(record, target)
            return record

    @staticmethod
    def event_view(record):
        """An event record as JSON: the event itself and how its delivery went."""
        view = {k: v for k, v in record.items() if k not in ("raw", "signature")}
        view["event"] = json.loads(record["raw"])
        return view

    def wait_for_delivery(self, event_id, timeout=10.0):
        """Poll until the event is delivered or given up; returns its record."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.event(event_id)
            if record["status"] != QUEUED or time.monotonic() > deadline:
                return record
            time.sleep(0.02)

    # --- the HTTP side -------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if self.sms.handles(environ):
            return self.sms(environ, start_response)
        if path.startswith("/v1/"):
            return self._api(environ, start_response)
        if path == "/" or path == "/_sandbox" or path.startswith("/_sandbox/"):
            return self._control(environ, start_response)
        return _answer(
            start_response, 404, {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}
        )

    def _api(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        raw = read_request(environ)
        query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self.lock:
            self.requests.append(Call(method, path, body, headers, query))
            fault = self.failures.pop(0) if self.failures else None
            if fault is not None and fault["kind"] == "none":
                fault = None
            delay = self.slow.get((method, path), 0)
        time.sleep(delay)
        if fault is not None and fault["kind"] == "fail":
            return _answer(
                start_response,
                fault["status"],
                {"error": {"type": "api_error", "message": "sandbox: scripted failure"}},
            )
        if fault is not None and fault["kind"] == "hang":
            time.sleep(fault["seconds"])
            return _answer(start_response, 504, {"error": {"type": "api_error", "message": "sandbox: hung"}})
        if (
            not headers.get("HTTP_AUTHORIZATION", "").startswith("Bearer ")
            or not headers["HTTP_AUTHORIZATION"][7:].strip()
        ):
            return _answer(
                start_response, 401, {"error": {"type": "invalid_request_error", "message": "No API key provided"}}
            )
        try:
            if isinstance(body, str) or (body is not None and not isinstance(body, dict)):
                raise refused("The request body must be a JSON object")
            status, answer = 200, self._route(method, path, body or {}, query)
        except PingppError as exc:
            status, answer = exc.status, exc.body()
        log.info(
            "Ping++ API %s %s -> %s",
            method,
            path,
            status,
            extra={"fields": {"method": method, "path": path, "status": status, "lost": fault is not None}},
        )
        if fault is not None:  # "lose": done, but the answer never arrives
            time.sleep(fault["seconds"])
            return _answer(start_response, 504, {"error": {"type": "api_error", "message": "sandbox: answer lost"}})
        return _answer(start_response, status, answer)

    def _route(self, method, path, body, query):
        ledger = self.ledger
        parts = path.strip("/").split("/")[1:]  # after "v1"
        if parts == ["charges"]:
            if method == "POST":
                return ledger.api_create_charge(body)
            if method == "GET":
                return ledger.api_list_charges(query)
        elif len(parts) >= 2 and parts[0] == "charges":
            charge_id, rest = parts[1], parts[2:]
            if rest == [] and method == "GET":
                return ledger.api_retrieve_charge(charge_id)
            if rest == ["reverse"] and method == "POST":
                return ledger.api_reverse_charge(charge_id)
            if rest == ["refunds"] and method == "POST":
                return ledger.api_create_refund(charge_id, body)
            if rest == ["refunds"] and method == "GET":
                return ledger.api_list_refunds(charge_id, query)
            if len(rest) == 2 and rest[0] == "refunds" and method == "GET":
                return ledger.api_retrieve_refund(charge_id, rest[1])
        elif parts == ["transfers"]:
            if method == "POST":
                return ledger.api_create_transfer(body)
            if method == "GET":
                return ledger.api_list_transfers(query)
        elif len(parts) == 2 and parts[0] == "transfers" and method == "GET":
            return ledger.api_retrieve_transfer(parts[1])
        raise PingppError(404, f"Unrecognized request URL ({method}: {path})")

    # --- controls over HTTP: JSON for scripts and commands, forms for the page -------------------

    _CONTROLS = [
        ("POST", re.compile(r"/_sandbox/charges/([^/]+)/pay"), "pay"),
        ("POST", re.compile(r"/_sandbox/transfers/([^/]+)/(succeeded|failed)"), "transfer"),
        ("POST", re.compile(r"/_sandbox/refunds/([^/]+)/(succeeded|failed)"), "refund"),
        ("POST", re.compile(r"/_sandbox/events/([^/]+)/deliver"), "deliver"),
        ("GET", re.compile(r"/_sandbox/events/([^/]+)"), "event"),
        ("POST", re.compile(r"/_sandbox/settings"), "settings"),
        ("POST", re.compile(r"/_sandbox/faults"), "faults"),
        ("POST", re.compile(r"/_sandbox/reset"), "reset"),
        ("GET", re.compile(r"/_sandbox/state"), "state"),
    ]

    def _control(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        if path in ("/", "/_sandbox"):
            start_response("303 See Other", [("Location", "/_sandbox/"), ("Content-Length", "0")])
            return [b""]
        if path == "/_sandbox/" and method == "GET":
            query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
            html = page.render(self, query.get("msg", "")).encode("utf-8")
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(html)))])
            return [html]
        if path == "/_sandbox/public_key.pem" and method == "GET":
            pem = self.public_key_pem
            start_response("200 OK", [("Content-Type", "application/x-pem-file"), ("Content-Length", str(len(pem)))])
            return [pem]
        raw = read_request(environ)
        form = environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded")
        try:
            if form:
                params = dict(urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            else:
                params = json.loads(raw) if raw else {}
                if not isinstance(params, dict):
                    raise ControlError("the body must be a JSON object", status=400)
            for verb, pattern, name in self._CONTROLS:
                match = pattern.fullmatch(path)
                if match and verb == method:
                    status, answer = 200, getattr(self, f"_control_{name}")(params, *match.groups())
                    break
            else:
                raise ControlError(f"no sandbox control {method} {path}", status=404)
        except ControlError as exc:
            status, answer = exc.status, {"error": {"message": str(exc)}}
        except PingppError as exc:
            status, answer = exc.status, exc.body()
        except (ValueError, TypeError) as exc:
            status, answer = 400, {"error": {"message": str(exc)}}
        if form:  # the page's buttons: back to the page, with what happened
            message = answer.get("message") or answer.get("error", {}).get("message", "")
            location = "/_sandbox/?" + urllib.parse.urlencode({"msg": message})
            start_response("303 See Other", [("Location", location), ("Content-Length", "0")])
            return [b""]
        return _answer(start_response, status, answer)

    def _events_since(self, count):
        with self.lock:
            return [self.event_view(r) for r in self.events[count:]]

    def _control_pay(self, params, ref):
        before = len(self.events)
        charge = self.mark_paid(ref, even_if_reversed=_truthy(params.get("even_if_reversed")))
        return {"charge": charge, "events": self._events_since(before), "message": f"charge {charge['id']} paid"}

    def _control_transfer(self, params, ref, outcome):
        before = len(self.events)
        transfer = self.settle_transfer(ref, outcome)
        return {
            "transfer": transfer,
            "events": self._events_since(before),
            "message": f"transfer {transfer['id']} {transfer['status']}",
        }

    def _control_refund(self, params, ref, outcome):
        before = len(self.events)
        refund = self.settle_refund(ref, outcome)
        return {
            "refund": refund,
            "events": self._events_since(before),
            "message": f"refund {refund['id']} {refund['status']}",
        }

    def _control_deliver(self, params, event_id):
        record = self.deliver(event_id, params.get("url") or None)
        return {"event": self.event_view(record), "message": f"event {event_id} queued for delivery"}

    def _control_event(self, params, event_id):
        with self.lock:
            return {"event": self.event_view(self.event(event_id))}

    def _control_settings(self, params):
        if params.get("transfer_status"):
            if params["transfer_status"] not in NEW_TRANSFER_STATUSES:
                raise ControlError(f"transfer_status must be one of {', '.join(NEW_TRANSFER_STATUSES)}", 400)
            self.transfer_status = params["transfer_status"]
        if params.get("refund_status"):
            if params["refund_status"] not in NEW_REFUND_STATUSES:
                raise ControlError(f"refund_status must be one of {', '.join(NEW_REFUND_STATUSES)}", 400)
            self.refund_status = params["refund_status"]
        if "auto_deliver" in params:
            self.auto_deliver = _truthy(params["auto_deliver"])
        if "webhook_url" in params:
            self.webhook_url = params["webhook_url"] or None
        return {"settings": self.settings(), "message": "settings saved"}

    def _control_faults(self, params):
        kind = params.get("kind")
        if kind not in FAULTS:
            raise ControlError(f"kind must be one of {', '.join(FAULTS)}", 400)
        times = int(params.get("times") or 1)
        if not 1 <= times <= 1000:
            raise ControlError("times must be 1 to 1000", 400)
        if kind == "fail":
            self.fail_next(times, status=int(params.get("status") or 500))
        elif kind == "hang":
            self.hang_next(float(params.get("seconds") or 10), times)
        else:
            self.lose_next_response(float(params.get("seconds") or 0), times)
        with self.lock:
            faults = list(self.failures)
        return {"faults": faults, "message": f"the next {times} API call(s): {kind}"}

    def _control_reset(self, params):
        self.reset()
        return {"message": "sandbox emptied"}

    def _control_state(self, params):
        with self.lock:
            events = [self.event_view(r) for r in reversed(self.events)]
            faults = list(self.failures)
        return {
            **self.ledger.snapshot(),
            "events": events,
            "faults": faults,
            "settings": self.settings(),
            "sms": self.sms.messages_to(),
        }

    def settings(self):
        return {
            "transfer_status": self.transfer_status,
            "refund_status": self.refund_status,
            "auto_deliver": self.auto_deliver,
            "webhook_url": self.webhook_url,
        }

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self):
        self.server = make_server(
            self.host, self.port, self, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, name="sandbox-http", daemon=True).start()
        return self

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.deliverer.stop()


def _truthy(value):
    return value is True or str(value).lower() in ("1", "true", "yes", "on")
