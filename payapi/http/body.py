"""Reading request bodies: at most so many bytes, whatever Content-Length claims.

What a body must contain is declared in shapes.py.
"""

from payapi.contract.errors import INVALID, ApiError

MAX_BODY = 64 * 1024
# Ping++'s events: a charge with many refunds is large, and a 413 would be delivered again forever.
MAX_WEBHOOK_BODY = 1024 * 1024


def read_body(stream, content_length, limit=MAX_BODY):
    """Read at most limit bytes; a larger body is 413 whatever Content-Length claims."""
    if content_length is not None and content_length > limit:
        raise ApiError(INVALID, "请求体过大", 413)
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(INVALID, "请求体过大", 413)
    return raw
