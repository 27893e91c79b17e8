"""The gunicorn worker payapi runs under: gthread, but a request reaches a thread only once it has arrived.

gunicorn's gthread worker hands a connection to a thread as soon as its first bytes arrive; the
thread then reads the rest of the request with blocking reads. A client that sends its headers
or its body a byte a second holds that thread for as long as it likes, and a handful of them
(8 with 2 workers x 4 threads) stop the whole service: Heroku's router does not buffer request
bodies, so anyone on the internet can do it.

Here the worker's main loop, which already waits on every idle connection with a selector, also
reads each request until it is complete: the head up to its blank line, then the body by its
Content-Length (or its chunks). Only a complete request goes to a thread, which then never
waits on the client. A request that is not complete REQUEST_TIMEOUT_S after its connection was
accepted (or, on a kept-alive connection, after its first byte) is answered 408 with the error
envelope and the connection is closed; a head larger than MAX_HEAD_BYTES is answered 431. Bodies
are buffered up to MAX_BODY_BYTES (the largest any route reads, the webhook's); a longer one is
handed over as soon as its head is known: the app refuses it (413) by its Content-Length
without reading it, and the connection is then closed instead of drained.

A connection that ends: gunicorn half-closes it and waits up to 2 s for the client's end, in the
main loop (util.close_graceful); here the main loop only watches for that end, so clients that
never close cannot stall the worker past its timeout.

The same worker serves the benchmark's bare falcon app, so ratios compare like with like.
"""

import json
import re
import selectors
import socket
import time
from collections import deque
from functools import partial

from gunicorn.workers.gthread import ThreadWorker

from .errors import INVALID
from .validate import MAX_WEBHOOK_BODY

REQUEST_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = MAX_WEBHOOK_BODY
RECV_BYTES = 256 * 1024
# As gunicorn's graceful close (util.close_graceful): how long and how much of a closing client is read.
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024

PARTIAL, COMPLETE, TOO_LONG, HEAD_TOO_LARGE = "partial", "complete", "too long", "head too large"

_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:([^\r\n]*)", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([0-9]{1,18})[ \t]*(?=\r\n|$)", re.IGNORECASE)


def request_state(buffer, max_head=MAX_HEAD_BYTES, max_body=MAX_BODY_BYTES):
    """Whether buffer holds a whole HTTP/1.x request (head and body).

    PARTIAL: wait for more. COMPLETE: hand it over (also when the head is malformed: gunicorn's
    parser answers that without reading further). TOO_LONG: the body is longer than anyone
    reads; hand over what is here. HEAD_TOO_LARGE: no blank line within max_head bytes.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return HEAD_TOO_LARGE if len(buffer) > max_head else PARTIAL
    if end > max_head:
        return HEAD_TOO_LARGE
    head = bytes(buffer[:end])
    body_start = end + 4
    encoding = _TRANSFER_ENCODING.search(head)
    if encoding is not None:
        return _chunked_state(buffer, body_start, max_body) if b"chunked" in encoding.group(1).lower() else COMPLETE
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) != 1:
        return COMPLETE  # none (no body), or several: gunicorn refuses the latter
    length = int(lengths[0])
    if length > max_body:
        return TOO_LONG
    return COMPLETE if len(buffer) - body_start >= length else PARTIAL


def _chunked_state(buffer, position, max_body):
    """Walk the chunks: COMPLETE once the last chunk and the trailers' blank line are here."""
    start = position
    while True:
        if position - start > max_body:
            return TOO_LONG
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return PARTIAL
        size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return COMPLETE  # malformed: gunicorn's parser says so
        position = line_end + 2
        if size == 0:
            # Trailers (usually none), then a blank line.
            if buffer[position:position + 2] == b"\r\n":
                return COMPLETE
            return COMPLETE if buffer.find(b"\r\n\r\n", position) >= 0 else PARTIAL
        position += size + 2
        if position > len(buffer):
            return TOO_LONG if position - start > max_body else PARTIAL


def _envelope(status, reason, message):
    body = json.dumps({"code": INVALID, "msg": message}, ensure_ascii=False).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


TIMED_OUT = _envelope(408, "Request Timeout", "请求超时")
HEAD_TOO_LARGE_ANSWER = _envelope(431, "Request Header Fields Too Large", "请求头过大")


class BufferingThreadWorker(ThreadWorker):
    """gthread whose main loop reads every request completely before a thread sees it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reading = deque()  # connections whose request is still arriving, oldest deadline first
        self.lingering = deque()  # answered connections closing, oldest first
        # Plain HTTP/1.x only: TLS or HTTP/2 start in the thread (conn.init); gunicorn as it is then.
        self.buffering = not self.cfg.is_ssl and getattr(self.cfg, "http2_cleartext", None) in (None, "", "off")

    # Every path that gives a connection to a thread goes through here (a new connection, a
    # kept-alive one with data, a pipelined request): the request is read to its end first.
    def enqueue_req(self, conn):
        if not self.buffering or getattr(conn, "buffered", None) is not None:
            return super().enqueue_req(conn)
        conn.inbox = bytearray(conn.parser.unreader.take_buffered() if conn.parser is not None else b"")
        conn.read_deadline = time.monotonic() + REQUEST_TIMEOUT_S
        conn.sock.setblocking(False)
        # Usually the whole request is already here (the poller said readable, or a client sent
        # it right after connecting): no round through the poller then.
        if not self._read(conn):
            self._close(conn)
            return None
        state = request_state(conn.inbox)
        if state != PARTIAL:
            self._dispatch(conn, state)
            return None
        self.reading.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        return None

    def _read(self, conn):
        """Add what the socket has to conn.inbox; -> False if the client went away."""
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        conn.inbox += data
        return bool(data)

    def _on_readable(self, conn, sock):
        if not self._read(conn):
            self._forget(conn)
            self._close(conn)
            return
        state = request_state(conn.inbox)
        if state != PARTIAL:
            self._forget(conn)
            self._dispatch(conn, state)

    def _dispatch(self, conn, state):
        """A request that has arrived goes to a thread; one whose head is too large is answered here."""
        if state == HEAD_TOO_LARGE:
            self._answer_and_close(conn, HEAD_TOO_LARGE_ANSWER)
            return
        conn.buffered, conn.truncated, conn.inbox = bytes(conn.inbox), state == TOO_LONG, None
        super().enqueue_req(conn)

    def _forget(self, conn):
        """conn no longer waits in the poller for the rest of its request (or for its end)."""
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        for waiting in (self.reading, self.lingering):
            try:
                waiting.remove(conn)
            except ValueError:
                pass

    def _answer_and_close(self, conn, answer):
        try:
            conn.sock.send(answer)  # non-blocking, best effort: a client this slow may not read it
        except OSError:
            pass
        self._linger(conn)

    def _close(self, conn):
        self.nr_conns -= 1
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()

    # --- closing without waiting in the main loop -------------------------------------------------

    def finish_request(self, conn, fs):
        """A connection that is not kept alive is closed as gunicorn would, without waiting here."""
        if self.buffering and not fs.cancelled() and fs.exception() is None and not fs.result():
            self._linger(conn)
            return
        super().finish_request(conn, fs)

    def _linger(self, conn):
        """Half-close (the client reads the whole answer, no reset) and read what the client still
        sends until it closes its end, LINGER_BYTES or LINGER_S, whichever comes first."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.linger_until, conn.drained = time.monotonic() + LINGER_S, 0
        self.lingering.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_closing_readable, conn))

    def _on_closing_readable(self, conn, sock):
        try:
            data = conn.sock.recv(LINGER_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained >= LINGER_BYTES:
            self._forget(conn)
            self._close(conn)

    def murder_pending(self):
        """gunicorn's own pending connections, requests still arriving past their deadline, and
        closing connections whose client has not closed its end in time."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading and self.reading[0].read_deadline <= now:
            conn = self.reading[0]
            self._forget(conn)
            self.log.info("request from %s not complete after %.0f s: answered 408", conn.client, REQUEST_TIMEOUT_S)
            self._answer_and_close(conn, TIMED_OUT)
        while self.lingering and self.lingering[0].linger_until <= now:
            conn = self.lingering[0]
            self._forget(conn)
            self._close(conn)

    def handle(self, conn):
        """In a thread: the parser reads the request from what the main loop buffered."""
        buffered, conn.buffered = getattr(conn, "buffered", None), None
        if buffered is not None:
            conn.data_ready = True
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(buffered)
        return super().handle(conn)

    def _keepalive_after(self, conn, keepalive):
        if getattr(conn, "truncated", False):
            # The rest of an over-long body is still on its way: close rather than drain it.
            conn.truncated = False
            return False
        return super()._keepalive_after(conn, keepalive)
