"""When a request has arrived (payapi/serving.py): the worker's main loop hands a connection to a
thread only once its head and body are in, judged the same however the bytes are split.
The real gunicorn with these rules is tests/live/test_serving.py."""

import pytest

from payapi.http import serving
from payapi.http.serving import COMPLETE, HEAD_TOO_LARGE, PARTIAL, TOO_LONG, request_state

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def post(body, *headers):
    return b"POST /rest/pay/webhook HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


@pytest.mark.parametrize(
    "raw, state",
    [
        (b"", PARTIAL),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", PARTIAL),  # the blank line has not come yet
        (GET, COMPLETE),
        (GET + b"GET /healthz HTTP/1.1\r\n", COMPLETE),  # a pipelined next request is not waited for
        (post(b"12345", b"Content-Length: 10"), PARTIAL),
        (post(b"1234567890", b"Content-Length: 10"), COMPLETE),
        (post(b"1234567890", b"content-length:10"), COMPLETE),  # header names are case-insensitive
        (post(b"", b"Content-Length: 1048577"), TOO_LONG),  # longer than any route reads: hand over now
        (post(b"", b"Content-Length: 1048576"), PARTIAL),
        (post(b"", b"Content-Length: abc"), COMPLETE),  # malformed: gunicorn's parser answers 400
        (post(b"", b"Content-Length: 5", b"Content-Length: 6"), COMPLETE),  # two lengths: gunicorn refuses
        (post(b"5\r\nhello\r\n", b"Transfer-Encoding: chunked"), PARTIAL),
        (post(b"5\r\nhel", b"Transfer-Encoding: chunked"), PARTIAL),
        (post(b"5\r\nhello\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"), COMPLETE),
        (post(b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n", b"Transfer-Encoding: chunked"), PARTIAL),
        (post(b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", b"Transfer-Encoding: chunked"), COMPLETE),
        (post(b"zz\r\n", b"Transfer-Encoding: chunked"), COMPLETE),  # malformed chunk size
        (post(b"100000\r\n", b"Transfer-Encoding: chunked"), TOO_LONG),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * (serving.MAX_HEAD_BYTES + 1), HEAD_TOO_LARGE),
        (b"\r\n" + GET, COMPLETE),  # one empty line before the request line is allowed
        (post(b"1", b"Content-Length: 0000000000000000000002"), PARTIAL),  # leading zeros are allowed
        (post(b"12", b"Content-Length: 0000000000000000000002"), COMPLETE),
        (post(b"", b"Content-Length: " + b"9" * 19), TOO_LONG),
        (
            post(b"5\r\nhello\r\n", b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"),
            PARTIAL,
        ),  # every line counts
        (post(b"", b"Transfer-Encoding: gzip"), COMPLETE),  # no length to read by: gunicorn answers 400
        (post(b"0x10\r\n", b"Transfer-Encoding: chunked"), COMPLETE),  # not hexadecimal to gunicorn: 400
        (post(b"5\r\nhelloXY", b"Transfer-Encoding: chunked"), COMPLETE),  # no CRLF after the data: 400
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", COMPLETE),  # bare LF: gunicorn answers 400, at once
        (b"GET /healthz HTTP/1.1\r\nHost: x\n", COMPLETE),  # one bare LF is enough to know
        (b"GET /healthz HTTP/1.1\r", PARTIAL),  # its LF may come next
        (post(b"a\nb", b"Content-Length: 3"), COMPLETE),  # a body may hold any byte
    ],
)
def test_a_request_is_handed_to_a_thread_only_once_it_has_arrived(raw, state):
    assert request_state(bytearray(raw)) == state


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_a_request_arriving_in_pieces_is_judged_as_if_it_came_at_once(split):
    """The main loop looks at each piece once (it keeps where it got to); the verdict is the same."""
    chunked = post(
        b"".join(b"1;e=1\r\nx\r\n" for _ in range(300)) + b"0\r\nX-T: 1\r\n\r\n", b"Transfer-Encoding: gzip, chunked"
    )
    for raw in [GET, post(b"1234567890", b"content-length: 10"), chunked, post(b"", b"Content-Length: 1048577")]:
        arrival = serving.Arrival()
        states = [arrival.add(raw[i : i + split]) for i in range(0, len(raw), split)]
        assert states[-1] == request_state(bytearray(raw)) != PARTIAL
        assert PARTIAL not in states[:-1] or states[:-1] == [PARTIAL] * (len(states) - 1)
