"""The serving model under hostile clients: requests that trickle in, and one user hogging bcrypt.

The real gunicorn with the Procfile's settings (2 workers x 4 threads, gunicorn's own 1000
connections per worker) and payapi's worker class (payapi/http/serving.py), as issue 9 found it: with
gunicorn's plain gthread worker, 8 trickling connections stopped every other request.
"""

import json
import socket
import threading
import time

import pytest
import requests

from payapi.http import serving
from tests.support.config import SERVICE_KEY
from tests.support.live_server import Trickler, paid_charge, parallel
from tests.support.pingpp import event
from tests.support.scenarios import pay_request

# The request-framing rules alone are tests/unit/test_framing.py.
GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


# --- the real gunicorn ---------------------------------------------------------------------------

# Tests of the worker's sockets alone (framing, pipelining, clients that do not read): the database
# plays no part beyond /healthz's SELECT 1, so they run on one backend. The tests that read and
# write records (trickling clients beside reads and webhooks, the per-user bcrypt turn) run on both.
TRANSPORT_ONLY = pytest.mark.only_db("sqlite")


# The Procfile's own settings: 2 workers, gunicorn's 1000 connections each; bcrypt slow enough
# (cost 11) that one user's looping requests would fill a worker's places without their turn.
LIVE_SERVER = {"workers": 2, "worker_connections": 1000, "BCRYPT_ROUNDS": "11"}


def test_clients_trickling_headers_and_bodies_do_not_stop_the_service(server, fake_pingpp, pingpp_keys):
    pay, _ = paid_charge(server, fake_pingpp, pingpp_keys[0])
    payer = server.user()
    trickling = [Trickler(server.port, "body" if i % 2 else "headers") for i in range(64)]
    for t in trickling:
        t.start()
    for t in trickling:
        assert t.opened.wait(10)
    # While all 64 are connected and trickling: reads, health checks and Ping++'s webhooks answer.
    started = time.monotonic()
    answers = parallel(8, lambda i: server.get("/healthz", timeout=5))
    answers += [server.get(f"/internal/pays/{pay['pay_id']}", headers={"X-Service-Key": "test-service-key"}, timeout=5)]
    answers += [payer.get(f"/rest/pay/{pay['pay_id']}")]  # another payer's pay: 911, answered all the same
    replay = json.dumps(event("charge.succeeded", fake_pingpp.mark_paid(pay["charge"]["id"]))).encode()
    answers += [server.deliver(pingpp_keys[0], json.loads(replay))]
    assert [a.status for a in answers] == [200] * 9 + [404, 200], answers
    assert time.monotonic() - started < serving.REQUEST_TIMEOUT_S  # answered while the tricklers were still there
    # Each trickler is cut off after the bound, with the envelope.
    for t in trickling:
        t.join(serving.REQUEST_TIMEOUT_S + 10)
        assert not t.is_alive()
        assert t.lasted < serving.REQUEST_TIMEOUT_S + 5
        assert t.answer is not None and t.answer.startswith(b"HTTP/1.1 408 "), t.answer
        assert json.loads(t.answer.split(b"\r\n\r\n", 1)[1]) == {"code": 904, "msg": "请求超时"}


@TRANSPORT_ONLY
def test_a_body_longer_than_any_route_reads_is_refused_without_waiting_for_it(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /internal/pays HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Service-Key: test-service-key\r\nContent-Length: 50000000\r\n\r\n{"
        )
        answer = _read_until_closed(sock)  # closed after the answer: the rest of the body is not drained
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"code": 904, "msg": "请求体过大"}


@TRANSPORT_ONLY
def test_pipelined_requests_are_each_answered(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(GET + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _read_until_closed(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 2, answer


@TRANSPORT_ONLY
def test_a_head_larger_than_the_limit_is_431(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Long: " + b"a" * (serving.MAX_HEAD_BYTES + 10))
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


@TRANSPORT_ONLY
def test_a_chunked_body_is_read_to_its_end(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /rest/pay/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n2\r\n{}\r\n"
        )
        time.sleep(0.5)  # the rest comes later: the request waits in the main loop meanwhile
        sock.sendall(b"0\r\n\r\n")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 401 "), answer  # unsigned: refused, and not a hang or a 5xx


def _read_until_closed(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_one_user_looping_on_their_password_does_not_keep_others_from_theirs(server):
    """Issue 9.2: one account changing its own password in a loop from 6 threads used to fill the
    per-worker bcrypt places, and everyone else got 906 系统繁忙."""
    looping, others = server.user(), [server.user() for _ in range(2)]
    assert looping.post("/rest/pay/passwd", {"passwd": "p"}).code == 900
    stop, looped = threading.Event(), []

    def loop(_):
        while not stop.is_set():
            looped.append(looping.post("/rest/pay/passwd", {"passwd": "p", "old_passwd": "p"}))

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        served = []
        for other in others:  # one after another, as people do
            served.append(other.post("/rest/pay/passwd", {"passwd": "q"}))
            served.append(other.post("/rest/pay/passwd", {"passwd": "r", "old_passwd": "q"}))
            served.append(
                other.post("/rest/pay/question", {"answer1": "a", "answer2": "b", "answer3": "c", "passwd": "r"})
            )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert [a.code for a in served] == [900] * len(served), served
    codes = {(a.code, (a.body or {}).get("msg")) for a in looped}
    assert (906, "上一个请求仍在处理中，请稍后再试") in codes, codes
    assert {code for code, _ in codes} <= {900, 906}, codes


# --- hostile clients, second review ----------------------------------------------------------------


def _health_while(server, n=8, timeout=5):
    """n /healthz requests in parallel, each given `timeout` seconds: -> their statuses (or the error)."""

    def one(_):
        try:
            return server.get("/healthz", timeout=timeout).status
        except requests.RequestException as exc:
            return type(exc).__name__

    return parallel(n, one)


def _connections(server, n, first_bytes):
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(first_bytes)
        socks.append(sock)
    return socks


def _close_all(socks):
    for sock in socks:
        sock.close()


@TRANSPORT_ONLY
def test_clients_that_keep_a_closed_connection_open_do_not_stall_the_worker(server):
    """gunicorn closes a `Connection: close` connection gracefully: it half-closes it, then waits up to
    2 s for the client's end. gthread does that in the worker's main loop, so 40 clients that never
    close stopped accepting and answering for 40 s, and past `timeout` the arbiter killed the worker."""
    held = _connections(server, 40, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        time.sleep(0.5)  # every one of them answered and half-closed by now
        assert _health_while(server) == [200] * 8
        for sock in held:  # each was answered and then closed from the server's side
            assert _read_until_closed(sock).startswith(b"HTTP/1.1 200 OK")
    finally:
        _close_all(held)
    assert "WORKER TIMEOUT" not in server.log()


@TRANSPORT_ONLY
def test_a_content_length_with_leading_zeros_is_waited_for_before_a_thread_sees_it(server):
    """RFC 9110 allows leading zeros, and gunicorn reads the body they announce; a request whose length
    was not recognised went to a thread that then waited on the client for ever."""
    head = b"POST /rest/pay/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 0000000000000000000002\r\n\r\n"
    waiting = _connections(server, 12, head)  # more than the 2 workers' 8 threads
    try:
        assert _health_while(server) == [200] * 8
        for sock in waiting:
            sock.sendall(b"{}")
        for sock in waiting:  # then each is read to its end and answered: unsigned, 401
            assert _read_until_closed(sock).startswith(b"HTTP/1.1 401 ")
    finally:
        _close_all(waiting)


@TRANSPORT_ONLY
@pytest.mark.parametrize("ending", [b"Connection: close\r\n\r\n", b"\r\n"])
def test_a_client_that_waits_for_100_continue_gets_it(server, ending):
    """gthread answered `Expect: 100-continue` as soon as the head was parsed; a client that waits for
    it before sending its body (as curl does for large ones) must not wait for the 408 instead."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /rest/pay/webhook HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n" + ending
        )
        sock.settimeout(5)
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"{}")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 "), answer  # and no second 100 before the answer


@TRANSPORT_ONLY
def test_a_client_that_pipelines_without_reading_is_held_back_not_buffered(server):
    """A pipelining client is read one request at a time: what it sends beyond stays in TCP's
    windows. Reading 256 KB more with every request buffered everything in the worker (hundreds of
    MB in a few seconds)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # it reads nothing anyway
    sock.connect(("127.0.0.1", server.port))
    piece = GET * (1024 * 1024 // len(GET))
    sent = 0
    try:
        sock.settimeout(3)  # for all of one piece (Python >= 3.5)
        while sent < 96 * len(piece):
            sock.sendall(piece)
            sent += len(piece)
    except TimeoutError:
        pass
    finally:
        sock.close()
    assert sent < 48 * len(piece), f"{sent / 2**20:.0f} MB taken from one client that reads nothing"


@TRANSPORT_ONLY
def test_a_client_that_does_not_read_its_answers_gives_its_thread_back(server):
    """A thread writing to a client that reads nothing waited for ever once TCP's buffers were full:
    12 such clients took every thread of both workers. Now a write waits at most WRITE_TIMEOUT_S."""
    clients = []
    for _ in range(12):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(1)
        clients.append(sock)
    piece = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 100
    progress = [time.monotonic()] * len(clients)
    ended = [None] * len(clients)

    def flood(i):
        while True:
            try:
                clients[i].sendall(piece)
                progress[i] = time.monotonic()
            except TimeoutError:
                continue
            except OSError as exc:
                ended[i] = exc
                return

    feeders = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(len(clients))]
    for t in feeders:
        t.start()
    try:
        # Until the server takes nothing more from any of them: its threads are writing to them.
        stuck_by = time.monotonic() + 30
        while time.monotonic() - max(progress) < 2 and time.monotonic() < stuck_by:
            time.sleep(0.2)
        assert time.monotonic() < stuck_by
        # 12 clients, 8 threads: the last ones wait for a thread, then for their own write.
        deadline = time.monotonic() + 2 * serving.WRITE_TIMEOUT_S + 10
        while True:
            statuses = _health_while(server, n=4, timeout=3)
            if statuses == [200] * 4 or time.monotonic() > deadline:
                break
        assert statuses == [200] * 4
        closed_by = deadline + 2 * serving.WRITE_TIMEOUT_S  # a last wave of writes may still be waiting out theirs
        for t in feeders:
            t.join(max(closed_by - time.monotonic(), 1))
        assert all(isinstance(exc, OSError) for exc in ended), ended  # the server closed each
    finally:
        _close_all(clients)


@TRANSPORT_ONLY
def test_clients_trickling_many_small_chunks_do_not_stop_the_worker(server):
    """Each read used to walk every chunk received so far again, in the main loop: 64 clients that
    sent 300 KB of 1-byte chunks and then one more chunk every 50 ms kept it busy for good. Now
    each chunk is looked at once (the first 300 KB cost the main loop a few seconds in all)."""
    head = b"POST /rest/pay/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"1\r\nx\r\n" * 50_000
    tricklers = _connections(server, 64, head + chunks)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for sock in tricklers:
                try:
                    sock.send(b"1\r\nx\r\n")
                except OSError:
                    pass
            time.sleep(0.05)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        # The first 300 KB taken in (a few seconds of the main loop, more on a loaded machine); the
        # health checks end before the tricklers' 408 (REQUEST_TIMEOUT_S after they connected), which
        # would free a loop that walked every chunk again and hide it.
        time.sleep(3)
        assert _health_while(server, timeout=serving.REQUEST_TIMEOUT_S - 4) == [200] * 8
    finally:
        stop.set()
        feeder.join(10)
        _close_all(tricklers)


# --- HTTP as clients speak it (RFC 9110/9112) -----------------------------------------------------


def _exchange(server, raw, pause_after=None):
    """Send raw (in two parts, pause_after bytes first, when asked), read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=serving.REQUEST_TIMEOUT_S + 5) as sock:
        if pause_after:
            sock.sendall(raw[:pause_after])
            time.sleep(0.3)
            raw = raw[pause_after:]
        sock.sendall(raw)
        return _read_until_closed(sock)


def _envelope_of(answer):
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _chunked(body, size):
    return (
        b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size))
        + b"0\r\n\r\n"
    )


def _post_chunked(path, chunks, *headers):
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
        + chunks
    )


@TRANSPORT_ONLY
def test_a_chunked_body_is_read_like_one_with_a_content_length(server):
    body = json.dumps(pay_request()).encode()
    raw = _post_chunked(b"/internal/pays", _chunked(body, 17), b"X-Service-Key: " + SERVICE_KEY.encode())
    status, answer = _envelope_of(_exchange(server, raw, pause_after=len(raw) // 2))
    assert (status, answer["code"]) == (200, 900), answer
    assert answer["info"]["money"] == 12356


@TRANSPORT_ONLY
@pytest.mark.parametrize("size", [64 * 1024 + 1, serving.MAX_BODY_BYTES + 1])
def test_a_chunked_body_past_the_limit_is_413(server, size):
    raw = _post_chunked(
        b"/internal/pays", _chunked(b"{" + b" " * (size - 2) + b"}", 16384), b"X-Service-Key: " + SERVICE_KEY.encode()
    )
    assert _envelope_of(_exchange(server, raw)) == (413, {"code": 904, "msg": "请求体过大"})


@TRANSPORT_ONLY
@pytest.mark.parametrize("path", [b"/healthz", b"/openapi.json", b"/rest/pay/balance", b"/ops/login"])
def test_head_is_answered_on_get_routes_with_the_get_head_and_no_body(server, path):
    get = _exchange(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    # HEAD then a pipelined GET: were a body sent after HEAD's head, the GET's answer would not start right after it.
    both = _exchange(
        server,
        b"HEAD " + path + b" HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    head, _, rest = both.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == get.split(b"\r\n")[0], both[:300]  # the same status as GET
    assert rest.startswith(b"HTTP/1.1 200 "), both[:600]
    lengths = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    assert lengths == [b"content-length: %d" % len(get.partition(b"\r\n\r\n")[2])], head


@TRANSPORT_ONLY
def test_an_http_1_1_request_without_host_is_400(server):
    status, answer = _envelope_of(_exchange(server, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert (status, answer["code"]) == (400, 904), answer
    assert _exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 ")  # 1.0 needs none
    two = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n")
    assert _envelope_of(two)[0] == 400


@TRANSPORT_ONLY
def test_bare_lf_line_endings_are_answered_at_once(server):
    started = time.monotonic()
    answer = _exchange(server, b"GET /healthz HTTP/1.1\nHost: x\n\n")
    assert time.monotonic() - started < serving.REQUEST_TIMEOUT_S / 2  # not the 408 after the bound
    assert _envelope_of(answer) == (400, {"code": 904, "msg": "请求格式有误"})


@TRANSPORT_ONLY
@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
        (_post_chunked(b"/rest/pay/webhook", b"zz\r\n"), 400),  # not a chunk size (the app reads the body)
        (_post_chunked(b"/rest/pay/webhook", b"zz\r\n").replace(b"Connection: close\r\n", b""), 400),  # kept alive
        (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ],
)
def test_errors_the_server_itself_answers_use_the_envelope(server, raw, status):
    got, answer = _envelope_of(_exchange(server, raw))
    assert got == status and answer["code"] == 904 and answer["msg"], answer
