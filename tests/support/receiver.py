"""The order service's side of notifications: a receiver on 127.0.0.1 that verifies every message
with the Standard Webhooks reference library (someone else's code, not ours), and can be told to
fail or hang for a while. It speaks HTTP/1.1, as an order service behind any web server would: a
connection stays open for the next message until the client closes it (or `close_after`)."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


class Receiver:
    def __init__(self, secret):
        self.webhook = Webhook(secret)
        self.lock = threading.Lock()
        self.received = []  # verified: {"id", "timestamp", "body"}
        self.attempts = []  # every POST: (webhook-id, answered status)
        self.refused = []  # bodies whose signature did not verify
        self.script = []  # next answers: an HTTP status, or ("hang", seconds)
        self.hang_ids = {}  # webhook-id -> seconds to hang on that message
        self.arrived = set()  # webhook-ids of every POST, as soon as it arrives
        self.bodies = {}  # webhook-id -> an Answer body (Trickle, Flood) sent after the status line
        self.close_after = set()  # webhook-ids after whose answer the connection is closed, unannounced
        self.connections = 0  # TCP connections accepted
        self.open = set()  # the sockets of connections not closed yet
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a connection serves request after request

            def setup(self):
                super().setup()
                with receiver.lock:
                    receiver.connections += 1
                    receiver.open.add(self.connection)

            def finish(self):
                with receiver.lock:
                    receiver.open.discard(self.connection)
                super().finish()

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._answer(raw, headers)
                body = receiver.bodies.get(headers.get("webhook-id"))
                self.send_response(status)
                self.send_header("Content-Length", str(body.length if body else 0))
                self.end_headers()
                if body:
                    body.send(self.wfile)
                if headers.get("webhook-id") in receiver.close_after:
                    # As a server whose keep-alive timeout runs out: closed without a
                    # `Connection: close`, so the client finds out only when it sends the next one.
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_port}/payapi-notifications"

    def _answer(self, raw, headers):
        message_id = headers.get("webhook-id")
        with self.lock:
            self.arrived.add(message_id)
            scripted = self.script.pop(0) if self.script else 200
            hang = self.hang_ids.get(message_id)
        if hang:
            time.sleep(hang)
        if isinstance(scripted, tuple):
            time.sleep(scripted[1])
            scripted = 200
        try:
            self.webhook.verify(raw, headers)
        except Exception:
            with self.lock:
                self.refused.append(raw)
                self.attempts.append((message_id, 400))
            return 400
        with self.lock:
            self.attempts.append((message_id, scripted))
            if scripted < 300:
                self.received.append(
                    {"id": message_id, "timestamp": headers["webhook-timestamp"], "body": json.loads(raw)}
                )
        return scripted

    def types(self):
        with self.lock:
            return [m["body"]["type"] for m in self.received]

    def wait_for(self, count, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received)} of {count} notifications arrived in {timeout}s")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        with self.lock:  # and the connections clients kept open: a stopped service answers no one
            for sock in self.open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Trickle:
    """An answer's body sent a byte every `interval` seconds (for at most `lasting` seconds)."""

    def __init__(self, interval=0.2, lasting=20.0, length=100_000):
        self.interval, self.lasting, self.length = interval, lasting, length
        self.sent = 0

    def send(self, wfile):
        deadline = time.monotonic() + self.lasting
        try:
            while self.sent < self.length and time.monotonic() < deadline:
                wfile.write(b" ")
                wfile.flush()
                self.sent += 1
                time.sleep(self.interval)
        except OSError:
            pass  # the client went away


class Flood:
    """An answer's body of `length` bytes, sent as fast as the client takes them."""

    def __init__(self, length=200 * 1024 * 1024):
        self.length = length
        self.sent = 0

    def send(self, wfile):
        block = b" " * 65536
        try:
            while self.sent < self.length:  # exactly `length`: more would read as the next answer
                self.sent += wfile.write(block[: self.length - self.sent])
        except OSError:
            pass
