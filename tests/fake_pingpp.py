"""A fake Ping++ API on 127.0.0.1 that the real pingpp SDK talks to over HTTP.

It keeps charges and transfers in memory and lets a test script failures: a 500, a hang past
the client's timeout, a charge that becomes paid, a transfer that fails.
"""

import itertools
import json
import re
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class FakePingpp:
    def __init__(self):
        self.lock = threading.Lock()
        self.charges = {}
        self.transfers = {}
        self.requests = []  # (method, path, body or None, headers)
        self.failures = []  # scripted answers for the next requests: (status, body) or ("hang", seconds)
        self.transfer_status = "pending"  # status a new transfer gets
        self.slow = {}  # (method, path) -> seconds every such request takes before it is answered
        self._ids = itertools.count(1)
        self.server = None

    # --- scripting ---------------------------------------------------------------------------

    def fail_next(self, times=1, status=500):
        with self.lock:
            self.failures.extend([(status, {"error": {"type": "api_error", "message": "scripted failure"}})] * times)

    def hang_next(self, seconds, times=1):
        with self.lock:
            self.failures.extend([("hang", seconds)] * times)

    def lose_next_response(self, seconds=0.0, times=1):
        """Carry out the next requests but answer 504 (after seconds): Ping++ did it, we never heard."""
        with self.lock:
            self.failures.extend([("lose", seconds)] * times)

    def mark_paid(self, charge_id):
        with self.lock:
            charge = self.charges[charge_id]
            charge.update(paid=True, time_paid=int(time.time()), transaction_no="2016" + charge_id[-10:])
            return dict(charge)

    def refund(self, charge_id, amount):
        """A succeeded refund of part of a paid charge, as Ping++ puts it in refund.succeeded."""
        with self.lock:
            charge = self.charges[charge_id]
            refund = {
                "id": f"re_{next(self._ids):024d}", "object": "refund", "order_no": charge["order_no"],
                "amount": amount, "created": int(time.time()), "succeed": True, "status": "succeeded",
                "time_succeed": int(time.time()), "description": "退款", "failure_code": None,
                "failure_msg": None, "metadata": {}, "charge": charge_id, "charge_order_no": charge["order_no"],
                "transaction_no": None, "funding_source": None, "extra": {}, "currency": charge["currency"],
            }
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            charge["refunds"]["data"].append(refund)
            return dict(refund)

    def charge_for(self, order_no):
        with self.lock:
            return next((dict(c) for c in self.charges.values() if c["order_no"] == order_no), None)

    def charge_creations(self, order_no=None):
        return [r for r in self.requests if r[0] == "POST" and r[1] == "/v1/charges" and (order_no is None or r[2]["order_no"] == order_no)]

    def transfer_creations(self, order_no=None):
        return [r for r in self.requests if r[0] == "POST" and r[1] == "/v1/transfers" and (order_no is None or r[2]["order_no"] == order_no)]

    def set_transfer(self, transfer_id, status):
        with self.lock:
            self.transfers[transfer_id]["status"] = status
            return dict(self.transfers[transfer_id])

    def reset(self):
        with self.lock:
            self.charges.clear()
            self.transfers.clear()
            self.requests.clear()
            self.failures.clear()
            self.slow.clear()
            self.transfer_status = "pending"

    # --- HTTP --------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        body = json.loads(raw) if raw else None
        headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        with self.lock:
            self.requests.append((method, path, body, headers))
            scripted = self.failures.pop(0) if self.failures else None
            delay = self.slow.get((method, path), 0)
        time.sleep(delay)
        if scripted is not None and scripted[0] == "lose":
            self._route(method, path, body)
            time.sleep(scripted[1])
            return self._answer(start_response, 504, {"error": {"type": "api_error", "message": "lost"}})
        if scripted is not None:
            if scripted[0] == "hang":
                time.sleep(scripted[1])
                return self._answer(start_response, 504, {"error": {"type": "api_error", "message": "hung"}})
            return self._answer(start_response, *scripted)
        if not headers.get("HTTP_AUTHORIZATION", "").startswith("Bearer "):
            return self._answer(start_response, 401, {"error": {"type": "invalid_request_error", "message": "no key"}})
        status, answer = self._route(method, path, body)
        return self._answer(start_response, status, answer)

    def _route(self, method, path, body):
        if method == "POST" and path == "/v1/charges":
            return self._create_charge(body)
        if method == "POST" and path == "/v1/transfers":
            return self._create_transfer(body)
        match = re.fullmatch(r"/v1/(charges|transfers)/([A-Za-z0-9_]+)", path)
        if method == "GET" and match:
            store = self.charges if match.group(1) == "charges" else self.transfers
            with self.lock:
                found = store.get(match.group(2))
            if found is None:
                return 404, {"error": {"type": "invalid_request_error", "message": "No such object", "code": "resource_missing"}}
            return 200, found
        return 404, {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}

    def _create_charge(self, body):
        with self.lock:
            if any(c["order_no"] == body["order_no"] for c in self.charges.values()):
                return 400, {"error": {"type": "invalid_request_error", "message": "order_no used", "code": "order_no_used"}}
            charge_id = f"ch_{next(self._ids):024d}"
            now = int(time.time())
            charge = {
                "id": charge_id, "object": "charge", "created": now, "livemode": False, "paid": False,
                "refunded": False, "reversed": False, "app": body["app"]["id"], "channel": body["channel"],
                "order_no": body["order_no"], "client_ip": body.get("client_ip"), "amount": body["amount"],
                "amount_settle": body["amount"], "currency": body["currency"], "subject": body["subject"],
                "body": body["body"], "extra": body.get("extra", {}), "time_paid": None,
                "time_expire": now + 86400, "time_settle": None, "transaction_no": None,
                "refunds": {"object": "list", "url": f"/v1/charges/{charge_id}/refunds", "has_more": False, "data": []},
                "amount_refunded": 0, "failure_code": None, "failure_msg": None, "metadata": {},
                "credential": {"object": "credential", body["channel"]: {"orderInfo": "fake"}}, "description": None,
            }
            self.charges[charge_id] = charge
            return 200, dict(charge)

    def _create_transfer(self, body):
        with self.lock:
            if any(t["order_no"] == body["order_no"] for t in self.transfers.values()):
                return 400, {"error": {"type": "invalid_request_error", "message": "order_no used", "code": "order_no_used"}}
            transfer_id = f"tr_{next(self._ids):024d}"
            transfer = {
                "id": transfer_id, "object": "transfer", "type": body["type"], "created": int(time.time()),
                "time_transferred": None, "livemode": False, "status": self.transfer_status, "app": body["app"]["id"],
                "channel": body["channel"], "order_no": body["order_no"], "amount": body["amount"],
                "amount_settle": body["amount"], "currency": body["currency"], "recipient": body["recipient"],
                "description": body["description"], "transaction_no": None, "failure_msg": None,
                "extra": body.get("extra", {}),
            }
            self.transfers[transfer_id] = transfer
            return 200, dict(transfer)

    @staticmethod
    def _answer(start_response, status, body):
        payload = json.dumps(body).encode()
        start_response(f"{status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self):
        self.server = make_server("127.0.0.1", 0, self, server_class=_ThreadingServer, handler_class=_QuietHandler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
