"""The gunicorn worker payapi runs under: gthread, but a request reaches a thread only once it has arrived.

gunicorn's gthread worker hands a connection to a thread as soon as its first bytes arrive; the
thread then reads the rest of the request with blocking reads. A client that sends its headers
or its body a byte a second holds that thread for as long as it likes, and a handful of them
(8 with 2 workers x 4 threads) stop the whole service: Heroku's router does not buffer request
bodies, so anyone on the internet can do it.

Here the worker's main loop, which already waits on every idle connection with a selector, also
reads each request until it is complete: the head up to its blank line, then the body by its
Content-Length (or its chunks), looking at each byte once (Arrival). Only a complete request goes
to a thread, and the thread's parser reads from what the main loop buffered, never from the
socket: where the two framings could ever disagree, the request is cut short and its connection
closed, instead of a thread waiting on the client. A request that is not complete
REQUEST_TIMEOUT_S after its connection was accepted (or, on a kept-alive connection, after its
first byte) is answered 408 with the error envelope and the connection is closed; a head larger
than MAX_HEAD_BYTES is answered 431. Bodies are buffered up to MAX_BODY_BYTES (the largest any
route reads, the webhook's); a longer one is handed over as soon as its head is known: the app
refuses it (413) by its Content-Length without reading it, and the connection is then closed
instead of drained. A client that announces `Expect: 100-continue` gets its 100 as soon as its head
has arrived, as gthread gave it.

What else a client could hold, it holds for a bounded time:
- its answer: a thread writes to it for at most REQUEST_TIMEOUT_S per write, then closes it;
- a pipelined request is read from the socket only when the one before it has been handed over, so
  a client that sends faster than it reads is held back by TCP, not buffered in the worker;
- a connection that ends: gunicorn half-closes it and waits up to 2 s for the client's end, in the
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

from gunicorn import util
from gunicorn.http.unreader import Unreader
from gunicorn.workers.gthread import ThreadWorker

from payapi.contract.errors import http_error_answer
from payapi.http.body import MAX_WEBHOOK_BODY

REQUEST_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = REQUEST_TIMEOUT_S
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = MAX_WEBHOOK_BODY
RECV_BYTES = 256 * 1024
# As gunicorn's graceful close (util.close_graceful): how long and how much of a closing client is read.
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024
MAX_CHUNK_LINE = 8190  # gunicorn's limit for a chunk-size line (limit_request_field_size)

PARTIAL, COMPLETE, TOO_LONG, HEAD_TOO_LARGE = "partial", "complete", "too long", "head too large"

_HEX = re.compile(rb"[0-9A-Fa-f]+")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Arrival:
    """How much of the request at the start of a connection's buffer has arrived.

    state: PARTIAL (wait for more), COMPLETE (hand it over; also when its framing is malformed:
    gunicorn's parser refuses that without reading further), TOO_LONG (the body is longer than
    anyone reads: hand over what is here), HEAD_TOO_LARGE (no blank line within max_head bytes).

    Incremental: each add() looks at what is new (and at most the one chunk-size line it stopped
    at), so a request trickled in a million pieces costs the main loop a million small steps, not
    a million walks over everything so far. The framing follows gunicorn's (every Content-Length
    and Transfer-Encoding line; leading zeros; hexadecimal chunk sizes only).
    """

    def __init__(self, data=b"", max_head=MAX_HEAD_BYTES, max_body=MAX_BODY_BYTES):
        self.buffer = bytearray()
        self.max_head, self.max_body = max_head, max_body
        self.state = PARTIAL
        self.searched = 0  # no blank line (head) or trailer end before this
        self.body_start = None
        self.length = None  # Content-Length framing
        self.next_chunk = None  # chunked framing: where the next chunk-size line starts
        self.in_trailers = False
        self.expects_continue = False
        if data:
            self.add(data)

    def add(self, data):
        self.buffer += data
        if self.state == PARTIAL:
            self.state = self._examine()
        return self.state

    def _examine(self):
        if self.body_start is None:
            start = max(0, self.searched - 3)
            end = self.buffer.find(b"\r\n\r\n", start)
            # A line ended by a bare LF: gunicorn's parser refuses it (400), so it is handed over at
            # once; waiting for a CRLF CRLF that such a client never sends would end in a 408.
            if _BARE_LF.search(self.buffer, start, len(self.buffer) if end < 0 else end + 4):
                return COMPLETE
            if end < 0:
                self.searched = len(self.buffer)
                return HEAD_TOO_LARGE if len(self.buffer) > self.max_head else PARTIAL
            if end > self.max_head:
                return HEAD_TOO_LARGE
            self.body_start = self.searched = end + 4
            verdict = self._framing(bytes(self.buffer[:end]))
            if verdict is not None:
                return verdict
        if self.length is not None:
            return COMPLETE if len(self.buffer) - self.body_start >= self.length else PARTIAL
        return self._chunks()

    def _framing(self, head):
        """Content-Length or chunks, from the head; -> a verdict when there is no body to wait for."""
        lines = head.split(b"\r\n")
        request_line = next((line for line in lines if line), b"")
        lengths, codings = [], []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                continue
            # A name with spaces before its colon is none of these: gunicorn refuses it anyway.
            name, value = name.lower(), value.strip(b" \t")
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings += [coding.strip(b" \t").lower() for coding in value.split(b",")]
            elif name == b"expect":
                self.expects_continue = value.lower() == b"100-continue" and not request_line.endswith(b"/1.0")
        if codings:
            if b"chunked" not in codings or lengths:
                return COMPLETE  # no length to read by, or two: gunicorn answers 400
            self.next_chunk = self.body_start
            return None
        if len(lengths) != 1 or not lengths[0].isdigit():
            return COMPLETE  # no body; or several lengths, or not a number: gunicorn answers 400
        digits = lengths[0].lstrip(b"0") or b"0"
        self.length = int(digits) if len(digits) <= 18 else self.max_body + 1
        return TOO_LONG if self.length > self.max_body else None

    def _chunks(self):
        buffer = self.buffer
        while True:
            if self.in_trailers:
                # After the last chunk: its trailers (usually none), then a blank line.
                if len(buffer) - self.next_chunk < 2:
                    return PARTIAL
                if buffer[self.next_chunk : self.next_chunk + 2] == b"\r\n":
                    return COMPLETE
                if buffer.find(b"\r\n\r\n", max(self.next_chunk, self.searched - 3)) >= 0:
                    return COMPLETE
                self.searched = len(buffer)
                return TOO_LONG if len(buffer) - self.body_start > self.max_body else PARTIAL
            line_end = buffer.find(b"\r\n", self.next_chunk, self.next_chunk + MAX_CHUNK_LINE + 2)
            if line_end < 0:
                return COMPLETE if len(buffer) - self.next_chunk > MAX_CHUNK_LINE else PARTIAL
            size, semicolon, _ = bytes(buffer[self.next_chunk : line_end]).partition(b";")
            if semicolon:
                size = size.rstrip(b" \t")
            if not _HEX.fullmatch(size):
                return COMPLETE  # gunicorn answers 400
            size = int(size, 16)
            if size == 0:
                self.in_trailers, self.next_chunk = True, line_end + 2
                self.searched = self.next_chunk
                continue
            data_end = line_end + 2 + size
            if data_end + 2 - self.body_start > self.max_body:
                return TOO_LONG
            if len(buffer) < data_end + 2:
                return PARTIAL  # from this chunk's size line again next time: one line
            if buffer[data_end : data_end + 2] != b"\r\n":
                return COMPLETE  # gunicorn answers 400
            self.next_chunk = data_end + 2


def request_state(buffer, max_head=MAX_HEAD_BYTES, max_body=MAX_BODY_BYTES):
    """Whether buffer holds a whole HTTP/1.x request (head and body): Arrival's state."""
    return Arrival(buffer, max_head, max_body).state


class BufferOnly(Unreader):
    """A thread's parser reads from here: what the main loop buffered, never the socket.

    starved: the parser wanted more than was buffered (a framing the main loop read differently):
    the request is then cut short and its connection closed, where it would have waited on the client.
    """

    def __init__(self):
        super().__init__()
        self.starved = False

    def chunk(self, size_hint=None):
        self.starved = True
        return b""


def _envelope(status, reason):
    """An answer the server gives itself (no thread, no app), in the API's error envelope."""
    code, message = http_error_answer(status)
    body = json.dumps({"code": code, "msg": message}, ensure_ascii=False).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def write_error(sock, status_int, reason, mesg):
    """gunicorn's own error answers (a malformed request line, header or chunk; a request line or
    head over its limits) in the envelope instead of its HTML page: gunicorn's Worker.handle_error
    has classified and logged the error (mesg, gunicorn's words, is for its log only)."""
    util.write_nonblock(sock, _envelope(status_int, reason))


# Every process that loads this worker class answers gunicorn's errors so (the master loads it
# before forking): handle_error calls util.write_error by name.
util.write_error = write_error

TIMED_OUT = _envelope(408, "Request Timeout")
HEAD_TOO_LARGE_ANSWER = _envelope(431, "Request Header Fields Too Large")
BODY_TOO_LARGE_ANSWER = _envelope(413, "Content Too Large")


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
        conn.arrival = Arrival(conn.parser.unreader.take_buffered() if conn.parser is not None else b"")
        conn.continued = False
        conn.read_deadline = time.monotonic() + REQUEST_TIMEOUT_S
        conn.sock.setblocking(False)
        # Usually the whole request is already here (the poller said readable, a client sent it
        # right after connecting, or it was pipelined): no round through the poller then. The
        # socket is read only for what is missing, so a client that pipelines faster than it is
        # answered is held back by TCP instead of being buffered here.
        if conn.arrival.state == PARTIAL and not self._read(conn):
            self._close(conn)
            return None
        if conn.arrival.state != PARTIAL:
            self._dispatch(conn)
            return None
        self._continue(conn)
        self.reading.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        return None

    def _read(self, conn):
        """Add what the socket has to conn's arrival; -> False if the client went away."""
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        conn.arrival.add(data)
        return bool(data)

    def _on_readable(self, conn, sock):
        if not self._read(conn):
            self._forget(conn)
            self._close(conn)
        elif conn.arrival.state != PARTIAL:
            self._forget(conn)
            self._dispatch(conn)
        else:
            self._continue(conn)

    def _continue(self, conn):
        """A client that waits for 100 Continue before its body gets it once its head has arrived."""
        if conn.arrival.expects_continue and conn.arrival.body_start is not None and not conn.continued:
            conn.continued = True
            try:
                conn.sock.send(_CONTINUE)
            except OSError:
                pass

    def _dispatch(self, conn):
        """A request that has arrived goes to a thread; one whose head is too large is answered here."""
        arrival, conn.arrival = conn.arrival, None
        if arrival.state == HEAD_TOO_LARGE:
            self._answer_and_close(conn, HEAD_TOO_LARGE_ANSWER)
            return
        if arrival.state == TOO_LONG and arrival.next_chunk is not None:
            # Chunks past what any route reads: 413 here. (A Content-Length that long goes to the
            # app, which refuses it by its length without reading; chunks have no length to go by.)
            self._answer_and_close(conn, BODY_TOO_LARGE_ANSWER)
            return
        conn.buffered, conn.truncated = bytes(arrival.buffer), arrival.state == TOO_LONG
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

    # --- in a thread ----------------------------------------------------------------------------

    def handle(self, conn):
        """The parser reads the request from what the main loop buffered, and only from that."""
        buffered, conn.buffered = getattr(conn, "buffered", None), None
        if buffered is not None:
            conn.data_ready = True
            conn.init()
            if not isinstance(conn.parser.unreader, BufferOnly):
                conn.parser.unreader = BufferOnly()
            conn.parser.unreader.starved = False
            conn.parser.unreader.unread(buffered)
        return super().handle(conn)

    def handle_request(self, req, conn):
        if not self.buffering:
            return super().handle_request(req, conn)
        if getattr(conn, "truncated", False):
            req.force_close()  # the answer says so: the rest of its body is not read
        if getattr(conn, "continued", False):
            req._expected_100_continue = False  # pylint: disable=protected-access - the main loop sent it
        # Writing is all a thread does with the socket: to a client that reads nothing, not for ever.
        conn.sock.settimeout(WRITE_TIMEOUT_S)
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.info("%s did not read its answer for %.0f s: connection closed", conn.client, WRITE_TIMEOUT_S)
            return False

    def _keepalive_after(self, conn, keepalive):
        keep = super()._keepalive_after(conn, keepalive)  # drains what is left of the body: from the buffer
        if getattr(conn, "truncated", False) or getattr(conn.parser.unreader, "starved", False):
            # The rest of an over-long body is still on its way, or the request was framed otherwise
            # than the main loop read it: where the next request starts is unknown. Close.
            conn.truncated = False
            return False
        return keep
