"""The OpenAPI 3.1 document, assembled from the route table, each responder's `@operation` and the shapes.

Nothing about a request or answer body is written here: the schemas are msgspec's rendering of
the Structs in shapes.py, with this service's limits (the running settings). What lives here is
HTTP: authentication schemes, headers and the error answers every route shares. The declarations
it reads are operation.py's; the regular expressions of the text and money rules are
contract/patterns.py's.
"""

import re

import msgspec

from payapi.contract import shapes
from payapi.contract.errors import (
    DEFAULT_MSG,
    INVALID,
    LOCKED,
    NOT_ALLOWED,
    NOT_FOUND,
    PROVIDER_FAILED,
    SECRET_REJECTED,
    UNAUTHENTICATED,
    UNEXPECTED,
)
from payapi.http.body import MAX_BODY

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "user": [{"userToken": []}],
    "service": [{"serviceKey": []}],
    "signed": [{"pingppSignature": []}],
    "operator": [{"operatorBasic": []}],
}
PATH_PARAMETERS = {"pay_id": "PayId", "withdraw_id": "WithdrawId", "message_id": "MessageId"}


# --- the document ----------------------------------------------------------------------------------


def _ref(kind, name):
    return {"$ref": f"#/components/{kind}/{name}"}


def _codes_named(description):
    """The failure codes a response's description names ("905: ... 910: ...")."""
    return [int(code) for code in re.findall(r"(?<![0-9])(9[0-9]{2}):", description)]


def _error(description, *codes, headers=None):
    """A failure answer: always the one Failure schema as it is, with an example per code this response
    can carry (the description names them too). Narrowing `code` per response (allOf with a const) is
    what openapi-python-client could not merge: it dropped those responses from the clients it made."""
    examples = {}
    for code in codes:
        value = {"code": code, "msg": DEFAULT_MSG[code], **({"retry_after": 60} if code == LOCKED else {})}
        examples[str(code)] = {"summary": f"code {code}", "value": value}
    return {
        "description": description,
        "headers": {"X-Request-Id": _ref("headers", "RequestId"), **(headers or {})},
        "content": {"application/json": {"schema": _ref("schemas", "Failure"), "examples": examples}},
    }


SHARED_ERRORS = {
    400: ("Invalid", "904: invalid input (missing or ill-typed field, malformed JSON, bad id, amount out of range)."),
    401: ("Unauthenticated", "901: the credential is missing or does not verify."),
    404: ("NotFound", "911: unknown route or id, or someone else's record."),
    413: ("TooLarge", "904: the body is larger than the route accepts."),
    429: ("Locked", "906: locked or rate-limited; `retry_after` (and Retry-After) say how long in seconds."),
    500: ("Unexpected", "999: unexpected error, logged with `request_id`."),
    502: ("ProviderFailed", "920: the provider failed or timed out; nothing was half-written."),
    503: ("Unavailable", "999: the database is unavailable."),
}


def _shared_responses():
    answers = {}
    for status, (name, description) in SHARED_ERRORS.items():
        code = ERROR_CODES[status]
        retry = {"Retry-After": _ref("headers", "RetryAfter")} if status in (429, 503) else None
        answers[name] = _error(description, code, headers=retry)
    return answers


ERROR_CODES = {
    400: INVALID,
    401: UNAUTHENTICATED,
    404: NOT_FOUND,
    413: INVALID,
    429: LOCKED,
    500: UNEXPECTED,
    502: PROVIDER_FAILED,
    503: UNEXPECTED,
}


def _responses(op, answer_schema, auth, has_path_params):
    own_doc = op.answer.__dict__.get("__doc__") if isinstance(op.answer, type) else None
    answers = {
        "200": {
            "description": (own_doc or "Done.").strip().splitlines()[0],
            "headers": {"X-Request-Id": _ref("headers", "RequestId")},
            "content": {"application/json": {"schema": answer_schema}},
        }
    }
    statuses = set(op.errors) | {500, 503}
    if op.body is not None:
        statuses |= {400, 413}
    if op.query is not None or has_path_params:
        statuses.add(400)
    if auth is not None:
        statuses.add(401)
    if op.idempotent:
        statuses |= {400, 429}
    for status in sorted(statuses):
        if status == 403:
            answers["403"] = _error(op.errors[403], *(_codes_named(op.errors[403]) or (SECRET_REJECTED, NOT_ALLOWED)))
        elif op.errors.get(status):
            answers[str(status)] = _error(op.errors[status], ERROR_CODES[status])
        else:
            answers[str(status)] = _ref("responses", SHARED_ERRORS[status][0])
    return answers


def _request_body(op, shape_schema):
    return {
        "required": True,
        "description": f"A JSON object (UTF-8, at most {op.max_body} bytes); unknown fields are ignored, "
        "null means absent.",
        "content": {
            "application/json": {"schema": shape_schema, **({"example": op.example} if op.example is not None else {})}
        },
    }


def _as_query_value(prop):
    """A query string has no JSON null and no JSON string-or-integer choice: a whole number there is an
    integer parameter (its decimal text), everything else the text it is."""
    prop = dict(prop)
    alternatives = [p for p in prop.pop("anyOf", [prop]) if p != {"type": "null"}]
    (value,) = alternatives
    value = {**value, **{k: v for k, v in prop.items() if k == "default" and v is not None}}
    if "oneOf" in value:  # a Whole: a JSON integer or a string of digits in a body
        (integer,) = [p for p in value.pop("oneOf") if p.get("type") == "integer"]
        value.pop("x-integer-literal", None)
        value.update(integer)
        value["description"] = (
            value["description"].split(":", 1)[0]
            + f": an integer, {integer['minimum']}–{integer['maximum']} (anything else is 904)."
        )
        value["examples"] = sorted({int(e) for e in value.get("examples", [])})
    return value


def _query_parameters(shape_schema, components):
    schema = components[shape_schema["$ref"].rsplit("/", 1)[1]]
    return [
        {"name": name, "in": "query", "required": name in schema.get("required", ()), "schema": _as_query_value(prop)}
        for name, prop in schema["properties"].items()
    ]


def _null_means_absent(schema):
    """A request field that may be absent may also be null (the decoder drops nulls)."""
    required = schema.get("required", ())
    for name, prop in schema.get("properties", {}).items():
        if name in required or {"type": "null"} in prop.get("anyOf", ()):
            continue
        schema["properties"][name] = {"anyOf": [prop, {"type": "null"}]}
        if "default" in prop:
            schema["properties"][name]["default"] = prop["default"]


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _operations(routes):
    for template, resource in routes:
        if not getattr(resource, "documented", True):
            continue  # not JSON: the operators' console (HTML) and /metrics (Prometheus text)
        for method in HTTP_METHODS:
            responder = getattr(resource, f"on_{method}", None)
            if responder is not None:
                yield template, method, resource, responder.operation


def _always_sent(struct):
    """The wire names of an answer's fields that every answer carries: all of them (`code` too, which
    has a default), except those a Struct with omit_defaults leaves out at their default."""
    omitted = struct.__struct_config__.omit_defaults
    return [
        f.encode_name
        for f in msgspec.structs.fields(struct)
        if not (omitted and (f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT))
    ]


def _schemas(codec, ops):
    """-> ({shape: its schema (a $ref or an inline union)}, components)."""
    shapes_used = {shapes.Failure, shapes.PayNotice, shapes.WithdrawalNotice}
    for op in ops:
        shapes_used |= {s for s in (op.answer, op.body, op.query) if s is not None}
    ordered = sorted(shapes_used, key=repr)
    refs, components = msgspec.json.schema_components(
        ordered, schema_hook=codec.schema_hook, ref_template="#/components/schemas/{name}"
    )
    requests = {cls.__name__: cls for cls in _subclasses(shapes.Body)}
    answers = {
        cls.__name__: cls
        for cls in _subclasses(msgspec.Struct)
        if cls.__module__ == shapes.__name__ and not issubclass(cls, shapes.Body)
    }
    for name, schema in components.items():
        if name in requests:  # unknown fields stay allowed: they are ignored
            if requests[name].nulls_mean_absent:
                _null_means_absent(schema)
            schema.update(getattr(requests[name], "extra_json_schema", {}))  # rules across fields
        elif schema.get("type") == "object":
            schema.setdefault("additionalProperties", False)  # an answer has exactly its fields
            if name in answers:
                schema["required"] = _always_sent(answers[name])
    return dict(zip(ordered, refs, strict=True)), components


def document(settings, codec, routes):
    """The OpenAPI document of routes [(template, resource)] as this service runs them."""
    ops = list(_operations(routes))
    shape_schemas, schemas = _schemas(codec, [op for *_, op in ops])
    paths = {}
    for template, method, resource, op in ops:
        auth = "signed" if op.raw_body else getattr(resource, "auth", "user")
        path_params = re.findall(r"{(\w+)}", template)
        item = paths.setdefault(template, {})
        if path_params:
            item["parameters"] = [_ref("parameters", PATH_PARAMETERS[p]) for p in path_params]
        entry = {"operationId": op.id, "summary": op.summary, "tags": [op.tag]}
        if op.description:
            entry["description"] = op.description
        entry["security"] = SECURITY.get(auth, [])
        parameters = _query_parameters(shape_schemas[op.query], schemas) if op.query is not None else []
        if op.idempotent:
            parameters.append(_ref("parameters", "IdempotencyKey"))
        if auth == "user":
            parameters += [_ref("parameters", name) for name in ("ClientHeader", "PlatformHeader", "ChannelHeader")]
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = _request_body(op, shape_schemas[op.body])
        entry["responses"] = _responses(
            op, shape_schemas[op.answer], auth if auth in SECURITY else None, bool(path_params)
        )
        if op.links:
            entry["responses"]["200"]["links"] = op.links
        item[method] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "payapi",
            "version": "1.0.0",
            "summary": "Payments, wallet and withdrawals for the consultation app (Ping++).",
            "description": 'Every answer is JSON `{"code": <int>, ...}`; 900 is success, failures add `msg`. '
            "Codes: 901/401 not authenticated, 904/400 invalid input, 905/403 a secret did not verify, "
            "906/429 locked or rate-limited (`retry_after`), 910/403 not allowed by a business rule, "
            "911/404 not found, 920/502 the provider failed, 999/500 unexpected, 999/503 database down. "
            f"A wrong method is 405 and a body over {MAX_BODY // 1024} KB is 413, both in the envelope with "
            "code 904. Money is integer fen (a JSON integer literal, never 1000.0, or a string of digits); "
            "ids are 24 lowercase hex characters; times are ISO-8601 UTC with milliseconds. The limits shown "
            "are this service's configuration.",
        },
        "tags": [
            {"name": "mobile", "description": "The app's routes (the seed's nine and those it implies)."},
            {"name": "provider", "description": "Called by Ping++."},
            {"name": "internal", "description": "Called by the app's order service."},
            {"name": "operations", "description": "For load balancers and tooling."},
            {
                "name": "operators",
                "description": "For the people who run payapi: what the console at /ops/ shows "
                "and does, as JSON for scripts (HTTP Basic). Each action is recorded in the audit trail.",
            },
        ],
        "paths": paths,
        "webhooks": WEBHOOKS,
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "headers": HEADERS,
            "parameters": PARAMETERS,
            "schemas": schemas,
            "responses": _shared_responses(),
        },
    }


# What payapi sends the order service (NOTIFY_URL), per the Standard Webhooks specification.
WEBHOOKS = {
    "orderServiceNotification": {
        "post": {
            "operationId": "notifyOrderService",
            "summary": "A pay was paid or closed, a refund succeeded or failed, a withdrawal succeeded or failed.",
            "description": "Sent to NOTIFY_URL, at least once (dedupe by `webhook-id`, keep the newest `updatedAt`). "
            "Verify it with any Standard Webhooks library and NOTIFY_SECRET. Any non-2xx or no answer within 5 s "
            "is retried (5 s doubling, at most an hour apart) for 24 hours.",
            "parameters": [
                {
                    "name": "webhook-id",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The message's id: the same on every attempt.",
                },
                {
                    "name": "webhook-timestamp",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    "description": "Unix seconds of this attempt.",
                },
                {
                    "name": "webhook-signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "`v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the whsec_ secret.",
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [_ref("schemas", "PayNotice"), _ref("schemas", "WithdrawalNotice")]}
                    }
                },
            },
            "responses": {"200": {"description": "Any 2xx acknowledges the message."}},
        }
    }
}

SECURITY_SCHEMES = {
    "userToken": {
        "type": "apiKey",
        "in": "header",
        "name": "auth",
        "description": "An HS256 JWT from the account service: `sub` = user id (24 hex), `exp`, optional `phone` "
        "(needed for SMS codes: 5-20 ASCII digits, optional leading `+`; any other value counts as no phone). "
        "30 s of clock skew are allowed on `iat`, `nbf` and `exp`. Missing, malformed, badly signed, expired or "
        "a non-finite `exp`: 901/401.",
    },
    "serviceKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Service-Key",
        "description": "SERVICE_KEY, for the order service. Missing or wrong: 901/401.",
    },
    "operatorBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "An operator's name and password (`python -m payapi operator add NAME`). Missing or wrong: "
        "901/401; five wrong passwords within 3 hours lock that name from that client address for 3 hours "
        "(906/429), and guessing a name from many addresses is slowed; unknown names are answered alike. A lock, "
        "a disabled operator or a changed password takes effect on the next request.",
    },
    "pingppSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Pingplusplus-Signature",
        "description": "Base64 RSA-SHA256 (PKCS#1 v1.5) signature of the raw body by Ping++'s key. Missing or bad: "
        "901/401, nothing changes.",
    },
}

HEADERS = {
    "RequestId": {
        "description": "The request's id: the caller's X-Request-Id when it matches [A-Za-z0-9._-]{1,64}, else a new "
        "one. Logged with the request.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
    },
    "RetryAfter": {
        "description": "Seconds until the request may succeed.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}

PARAMETERS = {
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "1–64 printable ASCII characters, scoped to the caller and the route. For 24 hours a repeat "
        "of a request that succeeded gets its first answer without acting twice; the same key with another body is "
        "904; a repeat while the first still runs is 906 (retry_after 1).",
        "schema": {"type": "string", "pattern": "^[\\x20-\\x7e]{1,64}$"},
        "example": "order-57691bba-refund-1",
    },
    "PayId": {
        "name": "pay_id",
        "in": "path",
        "required": True,
        "description": "The pay record's id; anything but 24 lowercase hex characters is 904.",
        "schema": {"type": "string", "pattern": shapes.ID_PATTERN},
        "example": "576b69ae7ce1fd7004cc8280",
    },
    "WithdrawId": {
        "name": "withdraw_id",
        "in": "path",
        "required": True,
        "description": "The withdrawal's id; anything but 24 lowercase hex characters is 904.",
        "schema": {"type": "string", "pattern": shapes.ID_PATTERN},
        "example": "576b69ae7ce1fd7004cc8281",
    },
    "MessageId": {
        "name": "message_id",
        "in": "path",
        "required": True,
        "description": "The notification's id (its `webhook-id`): `msg_` and 24 lowercase hex characters, else 904.",
        "schema": {"type": "string", "pattern": "^msg_[0-9a-f]{24}$"},
        "example": "msg_576b69ae7ce1fd7004cc8282",
    },
    "ClientHeader": {
        "name": "client",
        "in": "header",
        "required": False,
        "description": "The device's IP as the app sees it; stored for audit (first 64 characters), never an error.",
        "schema": {"type": "string"},
        "example": "1.2.3.4",
    },
    "PlatformHeader": {
        "name": "platform",
        "in": "header",
        "required": False,
        "description": "android, ios, ...; stored for audit (first 32 characters), never an error.",
        "schema": {"type": "string"},
        "example": "android",
    },
    "ChannelHeader": {
        "name": "channel",
        "in": "header",
        "required": False,
        "description": "The app store the app came from (not the payment channel); stored for audit (first 64 "
        "characters), never an error.",
        "schema": {"type": "string"},
        "example": "TencentAPP",
    },
}
