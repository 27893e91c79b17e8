"""The OpenAPI 3.1 document of every route in app.py: request shapes and limits as resources.py checks them.

Built once per process from the same constants the code uses (statuses, channels, purposes,
default money limits); GET /openapi.json serves it.
"""

import functools
import re

from . import events, payments, sms, withdrawals
from .config import Settings
from .errors import (
    INVALID, LOCKED, NOT_ALLOWED, NOT_FOUND, OK, PROVIDER_FAILED, SECRET_REJECTED, UNAUTHENTICATED, UNEXPECTED,
)
from .gateway import CHANNELS
from .validate import MAX_BODY

ID = {"$ref": "#/components/schemas/Id"}
TIME = {"$ref": "#/components/schemas/Time"}


def _ref(kind, name):
    return {"$ref": f"#/components/{kind}/{name}"}


# --- money: what validate.fen accepts --------------------------------------------------------

def _group(pattern):
    atomic = len(pattern) == 1 or re.fullmatch(r"\[[^\]]*\]", pattern)
    return pattern if atomic else f"(?:{pattern})"


def _same_length(low, high):
    """A regex for the decimal strings of len(low) digits between low and high (both strings)."""
    if low == high:
        return low
    if len(low) == 1:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return low[0] + _group(_same_length(low[1:], high[1:]))
    rest = len(low) - 1
    parts, first, last = [], int(low[0]), int(high[0])
    if low[1:] != "0" * rest:
        parts.append(low[0] + _group(_same_length(low[1:], "9" * rest)))
        first += 1
    tail = None
    if high[1:] != "9" * rest:
        tail = high[0] + _group(_same_length("0" * rest, high[1:]))
        last -= 1
    if first <= last:
        parts.append(f"[{first}-{last}][0-9]{{{rest}}}")
    if tail:
        parts.append(tail)
    return "|".join(parts)


def digits_between(low, high):
    """A regex for a string of decimal digits (leading zeros allowed) whose value is in [low, high]."""
    alternatives = []
    for n in range(len(str(low)), len(str(high)) + 1):
        a, b = max(low, 10 ** (n - 1) if n > 1 else 0), min(high, 10**n - 1)
        if a <= b:
            alternatives.append(_same_length(str(a), str(b)))
    return "^0*(?:" + "|".join(alternatives) + ")$"


def fen(low, high, description, nullable=False):
    return {
        "description": f"{description}: fen (分), a JSON integer or a string of decimal digits, {low}–{high}. "
        "Floats, signs, spaces, exponents, empty strings and booleans are 904.",
        "oneOf": [
            {"type": "integer", "minimum": low, "maximum": high},
            {"type": "string", "pattern": digits_between(low, high)},
            *([{"type": "null"}] if nullable else []),
        ],
        "examples": [str(low * 10) if low * 10 <= high else str(low), low],
    }


# --- field helpers -----------------------------------------------------------------------------

# What str.strip() removes (Python's str.isspace), as a regex class body: \s differs (\x1c-\x1f, \ufeff).
SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"


def trimmed_length(min_len, max_len):
    """A regex for strings whose length after str.strip() is within [min_len, max_len] (min_len 0 or 1)."""
    space, visible = f"[{SPACE}]", f"[^{SPACE}]"
    core = visible if max_len == 1 else f"{visible}(?:[\\s\\S]{{0,{max_len - 2}}}{visible})?"
    if min_len == 0:
        core = f"(?:{core})?"
    return f"^{space}*{core}{space}*$"


def text(min_len, max_len, description, trimmed=True, nullable=False):
    schema = {"type": ["string", "null"] if nullable else "string"}
    if trimmed:
        # Surrounding whitespace does not count, so the limits are a pattern, not min/maxLength.
        schema["pattern"] = trimmed_length(min_len, max_len)
        schema["description"] = f"{description}; {min_len}–{max_len} characters after trimming surrounding whitespace."
    else:
        schema.update(minLength=min_len, maxLength=max_len)
        schema["description"] = f"{description}; {min_len}–{max_len} characters."
    return schema


def choice(values, description, default=None):
    if default is None:
        return {"type": "string", "enum": list(values), "description": description}
    return {
        "type": ["string", "null"],
        "enum": [*values, None],
        "default": default,
        "description": f"{description} Absent or null means {default!r}.",
    }


def json_object(properties, required=(), **more):
    schema = {"type": "object", "properties": properties, **more}
    if required:
        schema["required"] = list(required)
    return schema


def body(schema, example):
    return {
        "required": True,
        "description": f"A JSON object (UTF-8, at most {MAX_BODY} bytes); unknown fields are ignored.",
        "content": {"application/json": {"schema": schema, "example": example}},
    }


def success(description, schema):
    return {
        "description": description,
        "headers": {"X-Request-Id": _ref("headers", "RequestId")},
        "content": {"application/json": {"schema": schema}},
    }


def envelope(properties=None, required=()):
    """A 900 answer: {"code": 900, ...these fields}."""
    return json_object(
        {"code": {"type": "integer", "const": OK}, **(properties or {})},
        required=("code", *required),
        additionalProperties=False,
    )


def info_envelope(ref):
    return envelope({"info": ref}, required=("info",))


def error_schema(*codes):
    code = {"type": "integer", "const": codes[0]} if len(codes) == 1 else {"type": "integer", "enum": list(codes)}
    return {"allOf": [_ref("schemas", "Error"), {"properties": {"code": code}}]}


def error_response(description, *codes, headers=None, required=()):
    schema = error_schema(*codes)
    if required:
        schema["allOf"][1]["required"] = list(required)
    return {
        "description": description,
        "headers": {"X-Request-Id": _ref("headers", "RequestId"), **(headers or {})},
        "content": {"application/json": {"schema": schema}},
    }


def responses(ok, *statuses, forbidden=None):
    """The 200 answer plus the shared error answers; forbidden: this route's own 403 description."""
    answer = {"200": ok}
    for status in statuses:
        if status == 403:
            answer["403"] = error_response(forbidden, SECRET_REJECTED, NOT_ALLOWED)
        else:
            answer[str(status)] = _ref("responses", ERROR_RESPONSE_NAMES[status])
    # Every route can meet a lost database or a bug; both answer in the envelope.
    answer.setdefault("500", _ref("responses", "Unexpected"))
    answer.setdefault("503", _ref("responses", "Unavailable"))
    return answer


ERROR_RESPONSE_NAMES = {
    400: "Invalid",
    401: "Unauthenticated",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "TooLarge",
    429: "Locked",
    500: "Unexpected",
    502: "ProviderFailed",
    503: "Unavailable",
}


def operation(operation_id, summary, tag, responses_, *, security, parameters=(), request_body=None, description=None):
    op = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    op["security"] = security
    if parameters:
        op["parameters"] = list(parameters)
    if request_body:
        op["requestBody"] = request_body
    op["responses"] = responses_
    return op


# One or two answers (null counts as absent) are 904: a string answer needs the other two.
ALL_THREE_ANSWERS_OR_NONE = [
    {
        "if": {"properties": {f"answer{i}": {"type": "string"}}, "required": [f"answer{i}"]},
        "then": {
            "properties": {f"answer{j}": {"type": "string"} for j in (1, 2, 3) if j != i},
            "required": [f"answer{j}" for j in (1, 2, 3) if j != i],
        },
    }
    for i in (1, 2, 3)
]
USER = [{"userToken": []}]
SERVICE = [{"serviceKey": []}]
SIGNED = [{"pingppSignature": []}]
OPEN = []
APP_HEADERS = [_ref("parameters", name) for name in ("ClientHeader", "PlatformHeader", "ChannelHeader")]
PAY_ID = _ref("parameters", "PayId")
PAY_STATUS = {
    "type": "string",
    "enum": [payments.PENDING, payments.PAID, payments.FAIL, payments.CANCEL, payments.REFUNDED],
}
CLIENT_STATUS = {"type": "string", "enum": [payments.PENDING, *payments.CLIENT_STATUSES]}


# --- the document --------------------------------------------------------------------------------

def _components(defaults):
    answer_text = text(1, 64, "A security answer; compared after NFKC normalisation, trimming and case folding")
    return {
        "securitySchemes": {
            "userToken": {
                "type": "apiKey",
                "in": "header",
                "name": "auth",
                "description": "An HS256 JWT from the account service: `sub` = user id (24 hex), `exp`, "
                "optional `phone` (needed for SMS codes: 5-20 ASCII digits, optional leading `+`; any other "
                "value counts as no phone). 30 s of clock skew are allowed on `iat`, `nbf` and `exp`. Missing, "
                "malformed, badly signed, expired or a non-finite `exp`: 901/401.",
            },
            "serviceKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Service-Key",
                "description": "SERVICE_KEY, for the order service. Missing or wrong: 901/401.",
            },
            "pingppSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Pingplusplus-Signature",
                "description": "Base64 RSA-SHA256 (PKCS#1 v1.5) signature of the raw body by Ping++'s key. "
                "Missing or bad: 901/401, nothing changes.",
            },
        },
        "headers": {
            "RequestId": {
                "description": "The request's id: the caller's X-Request-Id when it matches [A-Za-z0-9._-]{1,64}, "
                "else a new one. Logged with the request.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
            },
            "RetryAfter": {
                "description": "Seconds until the request may succeed.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            },
            "Allow": {
                "description": "The methods the route supports.",
                "required": True,
                "schema": {"type": "string"},
            },
        },
        "parameters": {
            "PayId": {
                "name": "pay_id",
                "in": "path",
                "required": True,
                "description": "The pay record's id; anything but 24 lowercase hex characters is 904.",
                "schema": ID,
                "example": "576b69ae7ce1fd7004cc8280",
            },
            "ClientHeader": {
                "name": "client",
                "in": "header",
                "required": False,
                "description": "The device's IP as the app sees it; stored for audit (first 64 characters), "
                "never an error.",
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
                "description": "The app store the app came from (not the payment channel); stored for audit "
                "(first 64 characters), never an error.",
                "schema": {"type": "string"},
                "example": "TencentAPP",
            },
        },
        "schemas": {
            "Id": {
                "type": "string",
                "pattern": "^[0-9a-f]{24}$",
                "description": "24 lowercase hex characters (ObjectId-compatible).",
                "examples": ["576b69ae7ce1fd7004cc8280"],
            },
            "Time": {
                "type": "string",
                "format": "date-time",
                "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$",
                "description": "ISO-8601 UTC with milliseconds.",
                "examples": ["2016-06-23T04:46:38.190Z"],
            },
            "Error": {
                "type": "object",
                "description": "Every failure: a machine code and one short Chinese sentence fit to show to the user.",
                "required": ["code", "msg"],
                "properties": {
                    "code": {"type": "integer", "enum": [
                        UNAUTHENTICATED, INVALID, SECRET_REJECTED, LOCKED, NOT_ALLOWED, NOT_FOUND,
                        PROVIDER_FAILED, UNEXPECTED,
                    ]},
                    "msg": {"type": "string", "minLength": 1},
                    "retry_after": {"type": "integer", "minimum": 1, "description": "906: seconds to wait."},
                    "request_id": {"type": "string", "description": "999: the id the error was logged with."},
                    "db": {"type": "string", "enum": ["down"], "description": "GET /healthz only."},
                },
            },
            "PayInfo": {
                "type": "object",
                "description": "A pay record with the seed's field names.",
                "additionalProperties": False,
                "required": [
                    "pay_id", "o_id", "note_id", "expert_id", "userID", "amount", "money", "charge", "desc",
                    "client_status", "status", "subject", "currency", "channel", "type", "createdAt", "updatedAt",
                ],
                "properties": {
                    "pay_id": ID,
                    "o_id": {"type": "string", "pattern": "^(?:[0-9a-f]{24})?$",
                             "description": "The appointment order (type order), else empty."},
                    "note_id": {"type": "string", "pattern": "^(?:[0-9a-f]{24})?$",
                                "description": "The paid question note (type note), else empty."},
                    "expert_id": ID,
                    "userID": ID,
                    "amount": {"type": "integer", "minimum": 1, "maximum": defaults.pay_money_max,
                               "description": "The order's price, fen."},
                    "money": {"type": "integer", "minimum": 1, "maximum": defaults.pay_money_max,
                              "description": "What the user pays, fen."},
                    "charge": {"type": "object", "description": "The Ping++ charge object as last received."},
                    "desc": {"type": "string", "maxLength": 128},
                    "client_status": {**CLIENT_STATUS, "description": "What the app last reported."},
                    "status": {**PAY_STATUS, "description": "The server's status; only Ping++ makes a pay paid."},
                    "subject": {"type": "string", "minLength": 1, "maxLength": 32},
                    "currency": {"type": "string", "examples": ["cny"]},
                    "channel": {"type": "string", "enum": sorted(CHANNELS), "description": "The Ping++ channel."},
                    "type": {"type": "string", "enum": ["order", "note"]},
                    "createdAt": TIME,
                    "updatedAt": TIME,
                },
            },
            "WithdrawAccount": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "id", "name"],
                "properties": {
                    "type": {"type": "string", "enum": ["", "alipay"]},
                    "id": {"type": "string", "maxLength": 64},
                    "name": {"type": "string", "maxLength": 32},
                },
            },
            "Withdrawal": {
                "type": "object",
                "additionalProperties": False,
                "required": ["withdraw_id", "amount", "status", "account", "createdAt", "updatedAt"],
                "properties": {
                    "withdraw_id": ID,
                    "amount": {"type": "integer", "minimum": 1},
                    "status": {"type": "string", "enum": [
                        withdrawals.PENDING, withdrawals.PROCESSING, withdrawals.SUCCEEDED, withdrawals.FAILED,
                    ]},
                    "account": _ref("schemas", "WithdrawAccount"),
                    "createdAt": TIME,
                    "updatedAt": TIME,
                },
            },
            "Balance": {
                "type": "object",
                "additionalProperties": False,
                "required": ["balance", "currency", "can_withdraw", "next_withdraw_at"],
                "properties": {
                    "balance": {"type": "integer", "description": "Fen; negative only after a refund."},
                    "currency": {"type": "string", "const": "cny"},
                    "can_withdraw": {"type": "boolean"},
                    "next_withdraw_at": {"oneOf": [TIME, {"type": "null"}],
                                         "description": "When this month's withdrawal blocks: the next natural month."},
                },
            },
            "SecurityAnswers": json_object(
                {f"answer{i}": answer_text for i in (1, 2, 3)}, required=("answer1", "answer2", "answer3")
            ),
        },
        "responses": {
            "Invalid": error_response(
                "904: invalid input (missing or ill-typed field, malformed JSON, bad id, amount out of range).", INVALID
            ),
            "Unauthenticated": error_response("901: the credential is missing or does not verify.", UNAUTHENTICATED),
            "NotFound": error_response("911: unknown route or id, or someone else's record.", NOT_FOUND),
            "MethodNotAllowed": error_response(
                "904: the route does not support this method.", INVALID, headers={"Allow": _ref("headers", "Allow")}
            ),
            "TooLarge": error_response(f"904: the body is larger than {MAX_BODY} bytes.", INVALID),
            "Locked": error_response(
                "906: locked or rate-limited; `retry_after` (and Retry-After) say how long in seconds.",
                LOCKED,
                headers={"Retry-After": _ref("headers", "RetryAfter")},
                required=("retry_after",),
            ),
            "Unexpected": error_response("999: unexpected error, logged with `request_id`.", UNEXPECTED),
            "ProviderFailed": error_response("920: the provider failed or timed out; nothing was half-written.",
                                             PROVIDER_FAILED),
            "Unavailable": error_response(
                "999: the database is unavailable.", UNEXPECTED, headers={"Retry-After": _ref("headers", "RetryAfter")}
            ),
        },
    }


def _paths(defaults):
    from .resources import SECRET_MAX  # here: resources imports this module

    secret = functools.partial(text, 1, SECRET_MAX, trimmed=False)
    status = envelope(
        {"status": PAY_STATUS, "client_status": CLIENT_STATUS}, required=("status", "client_status")
    )
    pay = success("The pay record.", info_envelope(_ref("schemas", "PayInfo")))
    ok = success("Done.", envelope())
    return {
        "/rest/pay/{pay_id}": {
            "parameters": [PAY_ID],
            "get": operation(
                "getPay", "A pay record (seed 1); only its payer may read it.", "mobile",
                responses(pay, 400, 401, 404),
                security=USER, parameters=APP_HEADERS,
            ),
        },
        "/rest/pay/{pay_id}/status": {
            "parameters": [PAY_ID],
            "get": operation(
                "getPayStatus", "A pay's status and the app's last report (seed 2).", "mobile",
                responses(success("The statuses.", status), 400, 401, 404),
                security=USER, parameters=APP_HEADERS,
            ),
            "post": operation(
                "reportPayStatus", "Record what the app's payment SDK showed (seed 3).", "mobile",
                responses(ok, 400, 401, 404, 413),
                security=USER, parameters=APP_HEADERS,
                description="Never marks a pay paid by itself: on `success` the server asks Ping++ and applies "
                "its answer (at most once per pay every few seconds; a report meanwhile is recorded and "
                "answered 900). While pending, `cancel` → cancel, `invalid` → fail, `fail` leaves it pending.",
                request_body=body(
                    json_object({"status": choice(payments.CLIENT_STATUSES, "What the SDK showed.")},
                                required=("status",)),
                    {"status": "success"},
                ),
            ),
        },
        "/rest/pay/withdraw": {
            "post": operation(
                "withdraw", "Withdraw to the Alipay account (seed 4); once per natural month.", "mobile",
                responses(success("The withdrawal was recorded as pending.",
                                  envelope({"withdraw_id": ID}, required=("withdraw_id",))),
                          400, 401, 403, 413, 429,
                          forbidden="905: wrong pay password. 910: pay password or withdraw account not set, "
                          "already withdrawn this month, or insufficient balance."),
                security=USER, parameters=APP_HEADERS,
                description="Checks in order: amount (904), pay password and account set (910), lock (906), "
                "password (905), one per natural month (910), balance (910). Five wrong pay passwords within "
                "3 hours (routes withdraw, passwd, question together) lock for 3 hours (906).",
                request_body=body(
                    json_object({
                        "passwd": secret("The pay password as the app hashed it"),
                        "amount": fen(defaults.withdraw_min, defaults.withdraw_max,
                                      "Amount (WITHDRAW_MIN..WITHDRAW_MAX; the defaults shown)"),
                    }, required=("passwd", "amount")),
                    {"passwd": "xxxx", "amount": "1000"},
                ),
            ),
        },
        "/rest/pay/passwd": {
            "post": operation(
                "setPayPassword", "Set or change the pay password (seed 5).", "mobile",
                responses(ok, 400, 401, 403, 413, 429,
                          forbidden="905: wrong old password or answers. 910: a change without `old_passwd` or "
                          "answers, or answers when none were set."),
                security=USER, parameters=APP_HEADERS,
                description="A change needs `old_passwd` (checked when present) or all three answers; one or "
                "two answers are 904.",
                request_body=body(
                    json_object({
                        "passwd": secret("The new pay password as the app hashed it (opaque)"),
                        "old_passwd": secret("The current pay password", nullable=True),
                        **{f"answer{i}": text(1, 64, "A security answer", nullable=True) for i in (1, 2, 3)},
                    }, required=("passwd",), allOf=ALL_THREE_ANSWERS_OR_NONE),
                    {"passwd": "xxxx"},
                ),
            ),
        },
        "/rest/pay/question": {
            "post": operation(
                "setSecurityAnswers", "Set or replace the three security answers (seed 6).", "mobile",
                responses(ok, 400, 401, 403, 413, 429,
                          forbidden="905: wrong pay password. 910: a pay password is set and `passwd` is "
                          "absent."),
                security=USER, parameters=APP_HEADERS,
                description="Whenever a pay password is set, setting or replacing answers needs the correct "
                "`passwd` in the same body, also the first time (else a stolen token could set answers and "
                "use them to reset the pay password). Without a pay password nothing is asked.",
                request_body=body(
                    {"allOf": [_ref("schemas", "SecurityAnswers"), json_object({
                        "passwd": secret("The pay password; required whenever one is set", nullable=True),
                    })]},
                    {"answer1": "a", "answer2": "b", "answer3": "c"},
                ),
            ),
        },
        "/rest/pay/withdrawInfo": {
            "get": operation(
                "getWithdrawAccount", "The withdraw account (seed 8); empty strings when none is set.", "mobile",
                responses(success("The account.", info_envelope(_ref("schemas", "WithdrawAccount"))), 401),
                security=USER, parameters=APP_HEADERS,
            ),
            "post": operation(
                "setWithdrawAccount", "Set the withdraw account with an SMS code (seed 7).", "mobile",
                responses(ok, 400, 401, 403, 413,
                          forbidden="905: the SMS code is wrong, expired, used, or tried 5 times. 910: the token "
                          "has no usable phone."),
                security=USER, parameters=APP_HEADERS,
                description="The body is checked before the code; the code is used up only by a successful change.",
                request_body=body(
                    json_object({
                        "smscode": text(1, 16, "The latest code from POST /rest/pay/smscode"),
                        "type": choice(("alipay",), "The account type.", default="alipay"),
                        "id": text(1, 64, "The Alipay account"),
                        "name": text(1, 32, "The account holder's name"),
                    }, required=("smscode", "id", "name")),
                    {"smscode": "123123", "type": "alipay", "id": "xxxx", "name": "xxxx"},
                ),
            ),
        },
        "/rest/pay/checkInfo": {
            "get": operation(
                "getCheckInfo", "Which security settings are set (seed 9).", "mobile",
                responses(success("What is set.", envelope(
                    {name: {"type": "boolean"} for name in ("passwd", "questions", "withdraw")},
                    required=("passwd", "questions", "withdraw"),
                )), 401),
                security=USER, parameters=APP_HEADERS,
            ),
        },
        "/rest/pay/smscode": {
            "post": operation(
                "sendSmsCode", "Send a 6-digit code to the token's phone.", "mobile",
                responses(ok, 400, 401, 403, 413, 429, 502, forbidden="910: the token has no usable phone."),
                security=USER, parameters=APP_HEADERS,
                description=f"At most 1 per {sms.MIN_INTERVAL_MS // 1000} s and {sms.MAX_PER_DAY} per calendar "
                "day (TIMEZONE) per user, else 906; the code lives 5 minutes.",
                request_body=body(
                    json_object({"purpose": choice(sms.PURPOSES, "What the code is for.", default=sms.WITHDRAW_INFO)}),
                    {"purpose": sms.WITHDRAW_INFO},
                ),
            ),
        },
        "/rest/pay/balance": {
            "get": operation(
                "getBalance", "The wallet balance and whether a withdrawal is possible now.", "mobile",
                responses(success("The balance.", info_envelope(_ref("schemas", "Balance"))), 401),
                security=USER, parameters=APP_HEADERS,
            ),
        },
        "/rest/pay/withdraws": {
            "get": operation(
                "listWithdrawals", "The user's withdrawals, newest first.", "mobile",
                responses(success("A page of withdrawals.", envelope(
                    {"list": {"type": "array", "items": _ref("schemas", "Withdrawal")},
                     "has_more": {"type": "boolean"}},
                    required=("list", "has_more"),
                )), 400, 401, 404),
                security=USER,
                parameters=[
                    *APP_HEADERS,
                    {"name": "limit", "in": "query", "required": False, "description": "Page size.",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                    {"name": "before", "in": "query", "required": False,
                     "description": "A withdraw_id of this user: the page starts after it (exclusive); unknown: 911.",
                     "schema": ID},
                ],
            ),
        },
        "/rest/pay/webhook": {
            "post": operation(
                "pingppWebhook", "Ping++ events, verified by signature and applied once per event id.", "provider",
                responses(success("Stored (and applied when it fits our records).", envelope(
                    {"result": {"type": "string", "enum": [
                        payments.APPLIED, payments.IGNORED, payments.MISMATCH, payments.UNKNOWN, events.REPLAY,
                        events.MALFORMED,
                    ]}},
                    required=("result",),
                )), 400, 401, 413, 502),
                security=SIGNED,
                description="Handled: charge.succeeded, refund.succeeded, transfer.succeeded, transfer.failed; "
                "other types are stored and acknowledged. A refund whose charge we have not seen paid makes the "
                "server ask Ping++ first; if Ping++ cannot be reached the answer is 502 and nothing is stored.",
                request_body=body(
                    json_object({
                        "id": {"type": "string", "minLength": 1, "maxLength": 64},
                        "type": {"type": "string", "examples": [
                            "charge.succeeded", "refund.succeeded", "transfer.succeeded", "transfer.failed",
                        ]},
                        "data": {
                            "description": "`data.object` is the charge, refund or transfer; an event of "
                            "another shape is stored and acknowledged, not applied.",
                            "properties": {"object": {"type": "object"}},
                        },
                    }, required=("id", "type")),
                    {"id": "evt_401160623091616471", "object": "event", "type": "charge.succeeded",
                     "data": {"object": {"id": "ch_Hm5uTSifDOuTy9iLeLPSurrD", "object": "charge"}}},
                ),
            ),
        },
        "/internal/pays": {
            "post": operation(
                "createPay", "Create a pay and its Ping++ charge (order service).", "internal",
                responses(pay, 400, 401, 403, 413, 502, forbidden="910: the order or note is already paid."),
                security=SERVICE,
                parameters=[APP_HEADERS[0]],
                description="A second call for the same order/note, money and channel while pending returns the "
                "same pay; other money or channel closes it and makes a new one.",
                request_body=body(
                    {
                        **json_object({
                            "type": {"type": "string", "enum": ["order", "note"]},
                            "userID": ID,
                            "expert_id": ID,
                            "amount": fen(1, defaults.pay_money_max, "The order's price"),
                            "money": fen(1, defaults.pay_money_max, "What the user pays (absent or null: amount)",
                                         nullable=True),
                            "channel": {"type": "string", "enum": sorted(CHANNELS),
                                        "description": "The Ping++ channel."},
                            "subject": text(1, 32, "The charge's subject"),
                            "desc": text(0, 128, "The charge's body (subject when empty)", nullable=True),
                            "extra": {"type": ["object", "null"],
                                      "description": "Passed to Ping++ for channels that need it."},
                            "client_ip": text(0, 64, "The phone's `client` header (else this request's)",
                                              nullable=True),
                            "platform": text(0, 32, "The phone's `platform` header", nullable=True),
                            "store": text(0, 64, "The phone's `channel` header (app store)", nullable=True),
                        }, required=("type", "userID", "expert_id", "amount", "channel", "subject")),
                        "oneOf": [
                            json_object({"type": {"const": "order"}, "o_id": ID}, required=("type", "o_id")),
                            json_object({"type": {"const": "note"}, "note_id": ID}, required=("type", "note_id")),
                        ],
                    },
                    {"type": "order", "o_id": "57691bba8789ff202b5968fb", "userID": "54f3b5fec08b6f54100c1cbe",
                     "expert_id": "54f3b5fec08b6f54100c1cbf", "amount": 12356, "channel": "alipay",
                     "subject": "支付预约订单_2016-06-23", "desc": ""},
                ),
            ),
        },
        "/internal/pays/{pay_id}": {
            "parameters": [PAY_ID],
            "get": operation(
                "getPayInternal", "Any pay record (order service).", "internal",
                responses(pay, 400, 401, 404),
                security=SERVICE,
            ),
        },
        "/healthz": {
            "get": operation(
                "health", "Whether the database answers.", "operations",
                {
                    "200": success("The database answers.", envelope({"db": {"const": "ok"}}, required=("db",))),
                    "503": error_response("999: the database is down.", UNEXPECTED, required=("db",)),
                },
                security=OPEN,
            ),
        },
        "/openapi.json": {
            "get": operation(
                "openapi", "This document.", "operations",
                {"200": success("The OpenAPI 3.1 document.", {"type": "object", "required": ["openapi", "paths"]})},
                security=OPEN,
            ),
        },
    }


@functools.cache
def document():
    """The OpenAPI document as a dict; built once, shared: do not modify it."""
    defaults = Settings()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "payapi",
            "version": "1.0.0",
            "summary": "Payments, wallet and withdrawals for the consultation app (Ping++).",
            "description": "Every answer is JSON `{\"code\": <int>, ...}`; 900 is success, failures add `msg`. "
            "Codes: 901/401 not authenticated, 904/400 invalid input, 905/403 a secret did not verify, "
            "906/429 locked or rate-limited (`retry_after`), 910/403 not allowed by a business rule, "
            "911/404 not found, 920/502 the provider failed, 999/500 unexpected, 999/503 database down. "
            "A wrong method is 405 and a body over 64 KB is 413, both in the envelope with code 904. "
            "Money is integer fen; ids are 24 lowercase hex characters; times are ISO-8601 UTC with "
            "milliseconds. Limits shown for money are the defaults (WITHDRAW_MIN, WITHDRAW_MAX).",
        },
        "tags": [
            {"name": "mobile", "description": "The app's routes (the seed's nine and those it implies)."},
            {"name": "provider", "description": "Called by Ping++."},
            {"name": "internal", "description": "Called by the app's order service."},
            {"name": "operations", "description": "For load balancers and tooling."},
        ],
        "paths": _paths(defaults),
        "components": _components(defaults),
    }
