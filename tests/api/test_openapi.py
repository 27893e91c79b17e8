"""GET /openapi.json: a valid OpenAPI 3.1 document of every route, and the live app keeps to it."""

import copy
import json
import sys
import uuid

import falcon.inspect
import falcon.testing
import jsonschema_rs
import openapi_spec_validator
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import ignored_auth
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from payapi.app import create_app
from payapi.backoffice import operators
from payapi.contract.errors import HTTP_STATUS, INVALID, UNEXPECTED
from payapi.contract.shapes import Body
from payapi.http import openapi
from payapi.infra import outbox
from payapi.infra.config import Settings
from payapi.infra.models import Lockout, Pay, Profile
from tests.support.config import AUTH_SECRETS, SERVICE_KEY
from tests.support.operators import basic
from tests.support.pingpp import sign

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# The ids the document's examples use: the seed's user and pay, so the examples phase reaches real rows.
USER_ID = "54f3b5fec08b6f54100c1cbe"
PAY_ID = "576b69ae7ce1fd7004cc8280"
PASSWD = "xxxx"  # the withdraw example's password
WEBHOOK = "/rest/pay/webhook"
OPERATOR = basic("ops")  # an operator's HTTP Basic credentials, for /ops/api


def operations(document):
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def schemas_in(node):
    """Every Schema Object in the document (components, parameters, bodies, responses, headers)."""
    if isinstance(node, dict):
        if "schema" in node and isinstance(node["schema"], dict):
            yield node["schema"]
        for key, value in node.items():
            if key == "schemas":
                yield from value.values()
            elif key != "schema":
                yield from schemas_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from schemas_in(value)


def served_document(settings):
    """The document an app built with these settings serves."""
    return falcon.testing.TestClient(create_app(settings, None, None)).simulate_get("/openapi.json").json


# The test suite's settings keep the defaults for every limit the document states.
DOCUMENT = served_document(Settings(auth_secrets=AUTH_SECRETS, service_key=SERVICE_KEY))


def validator(document, schema):
    """A JSON Schema validator for a schema of the document, with its #/components references."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


# --- the document ------------------------------------------------------------------------------


def test_openapi_json_serves_the_document(app):
    response = app.get("/openapi.json")
    assert response.status_int == 200 and response.content_type == "application/json"
    assert response.json == DOCUMENT


def test_the_document_states_the_limits_the_service_runs_with():
    document = served_document(Settings(auth_secrets=AUTH_SECRETS, withdraw_min=500, withdraw_max=9_000))
    amount = document["components"]["schemas"]["WithdrawRequest"]["properties"]["amount"]
    assert amount["oneOf"][0]["minimum"] == 500 and amount["oneOf"][0]["maximum"] == 9_000


def test_document_passes_openapi_spec_validator():
    openapi_spec_validator.validate(copy.deepcopy(DOCUMENT))


def test_document_validates_as_openapi_3_1(app):
    document = app.get("/openapi.json").json
    assert document["openapi"].startswith("3.1.")
    errors = [f"{list(e.instance_path)}: {e.message}" for e in OPENAPI_31_VALIDATOR.iter_errors(document)]
    assert not errors, errors
    # The OpenAPI meta-schema leaves Schema Objects open; each must be valid JSON Schema 2020-12.
    for schema in schemas_in(document):
        jsonschema_rs.meta.validate({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
    operation_ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(operation_ids) == len(set(operation_ids))


def test_document_examples_fit_their_schemas(app):
    document = app.get("/openapi.json").json
    checked = 0
    for _path, _method, op in operations(document):
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if content and "example" in content:
            validator(document, content["schema"]).validate(content["example"])
            checked += 1
    for parameter in document["components"]["parameters"].values():
        validator(document, parameter["schema"]).validate(parameter["example"])
        checked += 1
    for answer in answers(document):
        for content in answer.get("content", {}).values():
            for example in content.get("examples", {}).values():
                validator(document, content["schema"]).validate(example["value"])
                checked += 1
    assert checked >= 40


def answers(document):
    """Every Response Object: the operations' (a $ref resolved) and the shared ones, with their status."""
    for _, _, op in operations(document):
        for status, answer in op["responses"].items():
            if "$ref" in answer:
                answer = document["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
            yield answer | {"status": int(status)}


def component(document, schema):
    return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]


# What openapi-python-client (and other generators) failed on: each error answer was the Failure schema
# narrowed by allOf with a const code, which they cannot merge, so they dropped 149 answers.
def test_every_failure_answer_is_the_failure_schema_with_an_example_per_code():
    failure = DOCUMENT["components"]["schemas"]["Failure"]
    assert failure["properties"]["code"]["type"] == "integer"
    assert failure["properties"]["code"]["enum"] == sorted(HTTP_STATUS)
    assert {"code", "msg"} <= set(failure["required"])
    failures = [answer for answer in answers(DOCUMENT) if answer["status"] >= 400]
    assert len(failures) > 100
    for answer in failures:
        content = answer["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/Failure"}, answer
        codes = [example["value"]["code"] for example in content["examples"].values()]
        assert codes and all(str(code) in answer["description"] for code in codes), answer
        for code in codes:  # 413 and 503 are the contract's two statuses with another's code
            status = {INVALID: 413, UNEXPECTED: 503}.get(code) if answer["status"] in (413, 503) else HTTP_STATUS[code]
            assert status == answer["status"], answer
    assert "allOf" not in json.dumps(DOCUMENT["paths"])


def test_every_answer_requires_its_code_and_every_field_it_always_sends():
    schemas = DOCUMENT["components"]["schemas"]
    successes = [
        answer["content"]["application/json"]["schema"]
        for answer in answers(DOCUMENT)
        if answer["status"] == 200 and "application/json" in answer.get("content", {})
    ]
    assert len(successes) > 25
    for schema in successes:
        if "$ref" in schema:  # not /openapi.json itself
            assert "code" in component(DOCUMENT, schema)["required"], schema
    for name in ("PayInfo", "BalanceInfo", "RefundInfo", "HealthAnswer", "WithdrawalInfo", "OpsPay"):
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]), name
    # Left out at their default (omit_defaults): only a failure's extras and a notice's refund.
    assert schemas["Failure"]["required"] == ["code", "msg"]
    assert schemas["PayNoticeData"]["required"] == ["pay"]


def test_times_are_date_times_and_days_dates():
    times = 0
    for name, schema in DOCUMENT["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            prop = next((p for p in prop.get("anyOf", [prop]) if p.get("type") == "string"), prop)
            if field.endswith(("At", "_at")) or field == "timestamp":
                assert (prop["type"], prop.get("format")) == ("string", "date-time"), (name, field)
                times += 1
            elif field == "date":
                assert (prop["type"], prop.get("format")) == ("string", "date"), (name, field)
    assert times >= 15


def test_page_sizes_are_integer_query_parameters():
    limits = [
        (path, parameter["schema"])
        for path, _, op in operations(DOCUMENT)
        for parameter in op.get("parameters", ())
        if parameter.get("name") == "limit"
    ]
    assert {path for path, _ in limits} == {
        "/rest/pay/withdraws",
        "/rest/pay/bills",
        "/ops/api/audit",
        "/ops/api/reconciliations",
        "/ops/api/withdrawals",
    }
    for path, schema in limits:
        assert schema["type"] == "integer" and schema["minimum"] == 1 and isinstance(schema["default"], int), path
        assert "oneOf" not in schema and "pattern" not in schema, path
        assert schema["maximum"] == (100 if path.startswith("/rest/") else 200)


def test_every_route_and_method_is_documented_with_its_authentication(app):
    document = DOCUMENT
    all_routes = {
        (route.path, method.method.lower()): route
        for route in falcon.inspect.inspect_routes(app.app)
        for method in route.methods
        if not method.internal  # falcon's own OPTIONS and 405 responders
    }
    # HEAD is GET's answer without its body (RFC 9110), on every GET route: not documented apart.
    assert {key for key in all_routes if key[1] == "head"} == {(path, "head") for path, m in all_routes if m == "get"}
    all_routes = {key: route for key, route in all_routes.items() if key[1] != "head"}
    # Not JSON, so not in the document: the operators' console (HTML) and /metrics (Prometheus text).
    routes = {key: route for key, route in all_routes.items() if getattr(resource_class(route), "documented", True)}
    assert {path for path, _ in set(all_routes) - set(routes)} == {
        path
        for path, _ in all_routes
        if (path.startswith("/ops") and not path.startswith("/ops/api")) or path == "/metrics"
    }
    documented = {(path, method): op for path, method, op in operations(document)}
    assert set(documented) == set(routes)
    schemes = {"user": [{"userToken": []}], "service": [{"serviceKey": []}], "operator": [{"operatorBasic": []}]}
    for (path, method), op in documented.items():
        kind = getattr(resource_class(routes[path, method]), "auth", "user")
        expected = [{"pingppSignature": []}] if path == WEBHOOK else schemes.get(kind, [])
        assert op["security"] == expected, (method, path)
        codes = set(op["responses"])
        if expected:
            assert "401" in codes, (method, path)
        if "requestBody" in op:
            assert {"400", "413"} <= codes, (method, path)


def resource_class(route):
    """The resource's own class, by the file falcon found it in (the console and the resources both have pages)."""
    modules = [m for m in sys.modules.values() if getattr(m, "__name__", "").startswith("payapi.http")]
    (module,) = [m for m in modules if getattr(m, "__file__", None) and route.source_info.startswith(m.__file__ + ":")]
    return getattr(module, route.class_name)


def test_rate_limited_and_locked_routes_document_906():
    paths = DOCUMENT["paths"]
    for path in ("/rest/pay/smscode", "/rest/pay/withdraw", "/rest/pay/passwd", "/rest/pay/question"):
        assert paths[path]["post"]["responses"]["429"] == {"$ref": "#/components/responses/Locked"}


def test_a_refund_request_documents_that_its_amount_may_be_absent_but_not_null():
    refund_request = validator(DOCUMENT, DOCUMENT["components"]["schemas"]["RefundRequest"])
    assert refund_request.is_valid({"description": "预约取消"})  # absent: everything still refundable
    assert not refund_request.is_valid({"description": "预约取消", "amount": None})


def test_request_bodies_document_that_unknown_fields_are_ignored():
    schemas = DOCUMENT["components"]["schemas"]
    requests = {cls.__name__ for cls in openapi._subclasses(Body)} & set(schemas)
    assert {"RefundRequest", "WithdrawRequest"} <= requests
    refused = [name for name in requests if schemas[name].get("additionalProperties") is False]
    assert refused == []


# --- the live app against its document (schemathesis) ----------------------------------------------


def any_float(value):
    if isinstance(value, dict):
        return any(any_float(v) for v in value.values())
    if isinstance(value, list):
        return any(any_float(v) for v in value)
    return isinstance(value, float)


class CurrentApp:
    """The WSGI app schemathesis calls: the running test's own (each test has its own database)."""

    app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


# One test per operation, generated at collection from the document (the first test shows it is
# what the app serves), so the schema exists before any app does.
current_app = CurrentApp()
live = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
live.app = current_app
# The test sends a valid `auth` and service key itself; the `ignored_auth` check probes without them.
live.config.generation.update(with_security_parameters=False)


@pytest.fixture
def seeded_user(app, make_user, order_service, pay_expert, make_operator):
    """The token's user, with the rows the document's examples name: a pay, a balance, a password, an account."""
    user = make_user(user_id=USER_ID)
    pay_expert(USER_ID, 100_000)
    created = Pay.get_by_id(order_service(userID=USER_ID).json["info"]["pay_id"])
    created.delete_instance()
    created.pay_id = PAY_ID  # the id the document's examples name
    outbox.save(created, force_insert=True)
    assert user.post("/rest/pay/passwd", {"passwd": PASSWD}).json["code"] == 900
    Profile.update(account_type="alipay", account_id="expert@example.com", account_name="张三").where(
        Profile.user_id == USER_ID
    ).execute()
    make_operator("ops")  # the operators' routes get its Basic credentials
    return user


def unique_idempotency_key(case):
    """Generated keys repeat across generated bodies, which the contract refuses (904) by design:
    each generated request gets a key of its own (the header's rules have their own tests)."""
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex


# Every check schemathesis has (no 5xx, status codes, content types, headers and bodies as
# documented, schema-valid requests accepted and invalid ones refused, auth enforced, 405 for
# undocumented methods) over its examples, coverage and fuzzing phases, positive and negative data.
@live.parametrize()
@hypothesis_settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_app_keeps_to_its_document(case, app, seeded_user, pingpp_keys):
    current_app.app = app.app
    unique_idempotency_key(case)
    # The auth check's wrong operator credentials lock their name from this address after five (an
    # unknown name too, by contract): each example starts with no guesses counted.
    Lockout.delete().where(Lockout.kind.in_((operators.BY_ADDRESS, operators.BY_NAME))).execute()
    headers = {"auth": seeded_user.token, "X-Service-Key": SERVICE_KEY, **OPERATOR}
    # The contract refuses 1000.0 as money although JSON Schema calls it an integer; the document
    # says so in words, and every other schema-valid body must be accepted.
    excluded = [positive_data_acceptance] if any_float(case.body) else []
    if case.path == WEBHOOK and not isinstance(case.body, NotSet):
        # Sign what is sent, so the events get past the signature to the handling behind it.
        raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
        headers.update({"X-Pingplusplus-Signature": sign(pingpp_keys[0], raw), "Content-Type": "application/json"})
        case.call_and_validate(headers=headers, data=raw, excluded_checks=excluded)
    else:
        case.call_and_validate(headers=headers, excluded_checks=excluded)


# The stateful phase: chains the document's links (create a pay, then read it, ask its status,
# report on it) with the answers of the calls before, under every check.
def test_linked_operations_keep_to_the_document(app, seeded_user):
    from hypothesis.stateful import run_state_machine_as_test

    current_app.app = app.app
    headers = {"auth": seeded_user.token, "X-Service-Key": SERVICE_KEY, **OPERATOR}

    created, followed = set(), set()

    # The chains start at a created pay; the operators' operations link to nothing and only dilute them.
    class Chained(live.exclude(tag="operators").as_state_machine()):
        def get_call_kwargs(self, case):
            unique_idempotency_key(case)
            return {"headers": headers}

        def after_call(self, response, case):
            super().after_call(response, case)
            if case.operation.label == "POST /internal/pays" and response.status_code == 200:
                created.add(response.json()["info"]["pay_id"])
            elif (case.path_parameters or {}).get("pay_id") in created:
                followed.add(case.operation.label)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            # Auth is probed per operation above; here every call carries the test's valid credentials.
            excluded = [ignored_auth, *([positive_data_acceptance] if any_float(case.body) else [])]
            case.validate_response(response, excluded_checks=excluded, transport_kwargs=kwargs or None)

    run_state_machine_as_test(
        Chained,
        settings=hypothesis_settings(
            max_examples=15,
            stateful_step_count=4,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert created and followed, "no call followed a link from a created pay"
    linked = DOCUMENT["paths"]["/internal/pays"]["post"]["responses"]["200"]["links"]
    assert {"getPayInternal", "getPay", "getPayStatus", "reportPayStatus"} <= set(linked)
