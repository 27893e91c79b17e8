"""The runtime side of `@operation`: a responder declares its operation (body, query, answer,
errors); the decorator reads and decodes the body and query with the resource's codec, and runs an
idempotent responder through the idempotency store. The OpenAPI document (openapi.py) reads the
same declarations.
"""

import dataclasses
import functools

import falcon
import msgspec

from payapi.contract import shapes
from payapi.http.body import MAX_BODY, read_body
from payapi.infra import idempotency

# --- what a responder declares -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Operation:
    id: str
    summary: str
    tag: str
    answer: type = shapes.Done
    body: type | None = None  # a request Struct: decoded and passed to the responder as `body`
    query: type | None = None  # a query-string Struct: decoded and passed as `query`
    raw_body: bool = False  # the responder reads the body itself (body is then documentation only)
    max_body: int = MAX_BODY
    errors: dict = dataclasses.field(default_factory=dict)  # status -> description (403) or None
    idempotent: bool = False  # accepts an Idempotency-Key header (see idempotency.py)
    description: str | None = None
    example: dict | None = None
    links: dict | None = None


def operation(**spec):
    """Declare a responder's operation; its body and query are decoded by the resource's codec."""
    op = Operation(**spec)

    def decorate(responder):
        @functools.wraps(responder)
        def decoded(resource, req, resp, **params):
            raw = b""
            if op.body is not None and not op.raw_body:
                raw = read_body(req, op.max_body)
                params["body"] = resource.codec.decode(raw, op.body)
            if op.query is not None:
                params["query"] = resource.codec.convert(dict(req.params), op.query)
            key = req.get_header("Idempotency-Key") if op.idempotent else None
            if key is None:
                return responder(resource, req, resp, **params)
            return _idempotently(responder, resource, req, resp, params, idempotency.valid_key(key), raw)

        decoded.operation = op
        return decoded

    return decorate


def _idempotently(responder, resource, req, resp, params, key, raw):
    user_id = req.context.get("user_id")
    scope = f"{'user:' + user_id if user_id else 'service'} {req.method} {req.uri_template}"
    candidates = idempotency.fingerprints(resource.codec.settings.auth_secrets, req.method, req.path, raw)
    replay, request_hash, first_at = idempotency.begin(scope, key, candidates)
    # A responder may derive the id of what it creates (idempotency.derived_id).
    req.context.idempotency = (scope, key, request_hash, first_at)
    if replay is not None:
        resp.text, resp.content_type = replay, falcon.MEDIA_JSON
        return None
    try:
        responder(resource, req, resp, **params)
    except BaseException:
        idempotency.abandon(scope, key)  # a request that did not succeed leaves the key unused
        raise
    answer = resp.text if resp.text is not None else msgspec.json.encode(resp.media).decode()
    idempotency.finish(scope, key, answer)
    return None
