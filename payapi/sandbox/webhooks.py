"""Ping++'s webhooks, played by the sandbox: its own RSA key pair, signed events, delivery with retries.

Ping++ signs the raw body with RSA-SHA256 (PKCS#1 v1.5) and sends the base64 signature in
`X-Pingplusplus-Signature`; anything but a 2xx within the timeout is delivered again later,
with growing pauses (Ping++ spreads its retries over about a day; the sandbox's default pauses are
seconds, so a developer sees the retry happen).
"""

import base64
import heapq
import itertools
import json
import logging
import os
import secrets
import threading
import time

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

log = logging.getLogger("payapi.sandbox")

# Delivery states of one event.
RECORDED = "recorded"  # made, not sent (no webhook URL, or auto-delivery off)
QUEUED = "queued"  # waiting for its first or next attempt
DELIVERED = "delivered"  # a 2xx came back
GAVE_UP = "failed"  # every attempt failed


class Signer:
    """The sandbox's key pair. With a path, the private key is loaded from it, or made and saved there."""

    def __init__(self, key_file=None, bits=2048):
        if key_file and os.path.exists(key_file):
            with open(key_file, "rb") as f:
                self.key = serialization.load_pem_private_key(f.read(), password=None)
        else:
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
            if key_file:
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(
                        self.key.private_bytes(
                            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                        )
                    )
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, raw):
        return base64.b64encode(self.key.sign(raw, padding.PKCS1v15(), hashes.SHA256())).decode()

    def write_public_key(self, path):
        with open(path, "wb") as f:
            f.write(self.public_pem)
        return path


def make_event(event_type, obj, event_id=None, livemode=False):
    """An event as Ping++ sends it (the shape of tests/conftest.py's `event`, plus Ping++'s
    `pending_webhooks` and `request`)."""
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "livemode": livemode,
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj},
        "pending_webhooks": 0,
        "request": None,
    }


def encode(event):
    return json.dumps(event, ensure_ascii=False).encode("utf-8")


class Deliverer:
    """One background thread POSTing events to the webhook URL, each until a 2xx or max_attempts.

    `records` are the sandbox's event records (dicts): this thread fills in their delivery state.
    """

    def __init__(self, lock, timeout=5.0, backoff=1.0, backoff_max=60.0, max_attempts=8):
        self.lock = lock  # the sandbox's events lock: records are read by the page while we write
        self.timeout, self.backoff, self.backoff_max, self.max_attempts = timeout, backoff, backoff_max, max_attempts
        self._due = []  # heap of (monotonic due time, tie-break, record)
        self._ties = itertools.count()
        self._wake = threading.Condition(threading.Lock())
        self._thread = None
        self._stopping = False
        self._generation = 0  # bumped by clear(): attempts already running for old records are dropped

    def enqueue(self, record, url, delay=0.0):
        record.update(status=QUEUED, url=url, next_attempt_in=delay)
        with self._wake:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._ties), self._generation, record))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
                self._thread.start()
            self._wake.notify()

    def clear(self):
        with self._wake:
            self._due.clear()
            self._generation += 1

    def stop(self):
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(self.timeout + 1)

    def _next(self):
        with self._wake:
            while True:
                if self._stopping:
                    return None
                if self._due:
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._due)
                    self._wake.wait(wait)
                else:
                    self._wake.wait()

    def _run(self):
        session = requests.Session()
        session.trust_env = False  # the webhook URL is local: never through an HTTP_PROXY from the environment
        while True:
            item = self._next()
            if item is None:
                return
            _, _, generation, record = item
            status, answer, error = None, "", ""
            try:
                response = session.post(
                    record["url"],
                    data=record["raw"],
                    timeout=self.timeout,
                    headers={
                        "Content-Type": "application/json; charset=utf-8",
                        "X-Pingplusplus-Signature": record["signature"],
                    },
                )
                status, answer = response.status_code, response.text[:500]
            except requests.RequestException as exc:
                error = type(exc).__name__
            with self.lock, self._wake:
                if generation != self._generation:
                    continue
                record["attempts"] += 1
                record.update(last_status=status, last_answer=answer, last_error=error)
                if status is not None and 200 <= status < 300:
                    record.update(status=DELIVERED, next_attempt_in=None)
                elif record["attempts"] >= self.max_attempts:
                    record.update(status=GAVE_UP, next_attempt_in=None)
                else:
                    delay = min(self.backoff * 2 ** (record["attempts"] - 1), self.backoff_max)
                    record["next_attempt_in"] = delay
                    heapq.heappush(self._due, (time.monotonic() + delay, next(self._ties), generation, record))
            log.info(
                "webhook %s %s -> %s",
                record["type"],
                record["id"],
                status or error,
                extra={
                    "fields": {
                        "event_id": record["id"],
                        "type": record["type"],
                        "attempt": record["attempts"],
                        "status": status,
                        "error": error or None,
                    }
                },
            )
