"""Reading request bodies: at most so many bytes, whatever Content-Length claims.

What a body must contain is declared in shapes.py.
"""

from payapi.contract.errors import INVALID, ApiError

MAX_BODY = 64 * 1024
# Ping++'s events: a charge with many refunds is large, and a 413 would be delivered again forever.
MAX_WEBHOOK_BODY = 1024 * 1024


def read_body(req, limit=MAX_BODY):
    """Read at most limit bytes of a falcon request's body; a larger body is 413 whatever Content-Length claims.

    A body without Content-Length (Transfer-Encoding: chunked) is read to its end from the server's
    own stream when the server says that stream ends with the body (`wsgi.input_terminated`, as
    gunicorn does); falcon's bounded_stream would read it as empty.
    """
    content_length = req.content_length
    if content_length is not None and content_length > limit:
        raise ApiError(INVALID, "请求体过大", 413)
    terminated = content_length is None and req.env.get("wsgi.input_terminated")
    try:
        raw = (req.stream if terminated else req.bounded_stream).read(limit + 1)
    except Exception:  # noqa: BLE001 - the server's own error for a body it cannot read (a bad chunk size)
        raise ApiError(INVALID, "请求格式有误", 400) from None
    if len(raw) > limit:
        raise ApiError(INVALID, "请求体过大", 413)
    return raw
