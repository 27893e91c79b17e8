"""The Ping++ sandbox, through the real pingpp SDK (payapi's gateway, or the SDK itself where the
gateway has no call yet): Ping++'s objects, rules and paging, fault injection, signed webhooks and
their delivery, the controls over HTTP and the commands."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pingpp
import pytest
import requests
import time_machine

from payapi.domain.ids import new_id
from payapi.infra.gateway import ChargeRequest, GatewayError, PingppGateway, TransferRequest
from payapi.sandbox import Sandbox
from payapi.sandbox.core import ControlError
from payapi.sandbox.webhooks import Signer
from tests.support.live_server import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_KEY, APP_ID = "sk_test_sandbox", "app_sandbox"


@pytest.fixture
def sandbox(fake_pingpp):
    return fake_pingpp


@pytest.fixture
def gateway(sandbox):
    """payapi's own gateway, pointed at the sandbox (it also sets the SDK's api_base and timeouts)."""
    return PingppGateway(API_KEY, APP_ID, api_base=sandbox.url, public_key_path=sandbox.public_key_path, timeout=1.0)


def charge_request(order_no=None, amount=12356):
    return ChargeRequest(
        order_no=order_no or new_id(),
        amount=amount,
        channel="alipay",
        subject="支付预约订单",
        body="预约",
        client_ip="1.2.3.4",
    )


def transfer_request(order_no=None, amount=3000):
    return TransferRequest(
        order_no=order_no or new_id(),
        amount=amount,
        recipient="expert@example.com",
        recipient_name="张三",
        description="payapi withdrawal",
    )


def sdk_error(call, *args, **kwargs):
    """The SDK's exception for a call the sandbox refuses."""
    with pytest.raises(pingpp.error.PingppError) as caught:
        call(*args, api_key=API_KEY, **kwargs)
    return caught.value


def paid_charge(gateway, sandbox, amount=10000):
    charge = gateway.create_charge(charge_request(amount=amount))
    sandbox.mark_paid(charge.id)
    return charge


def test_the_sandbox_keeps_a_connection_alive_for_the_next_call_as_ping_plus_plus_does(sandbox):
    # wsgiref answered one request per connection, so every SDK call connected anew although the
    # gateway keeps a connection per thread. Its own gateway here: the fixture's thread may already
    # hold a connection from an earlier test.
    accepted = []
    server = sandbox.server
    process = server.process_request
    server.process_request = lambda request, address: accepted.append(address) or process(request, address)
    try:
        gateway = PingppGateway(API_KEY, APP_ID, api_base=sandbox.url, timeout=1.0)
        calls = threading.Thread(
            target=lambda: [gateway.retrieve_charge(gateway.create_charge(charge_request()).id) for _ in range(3)]
        )
        calls.start()
        calls.join()
        assert len(sandbox.ledger.snapshot()["charges"]) == 3
        assert len(accepted) == 1  # six calls, one connection
        refused = requests.post(f"{sandbox.url}/v1/charges", data=b"{", headers={"Connection": "keep-alive"})
        assert refused.status_code in (400, 401)
        with requests.Session() as session:  # a body the app refuses unread does not leak into the next request
            first = session.post(f"{sandbox.url}/v1/charges", data=b"x" * 5000, timeout=5)
            second = session.get(f"{sandbox.url}/v1/charges/ch_missing", timeout=5)
            assert first.status_code in (400, 401) and second.status_code in (401, 404)
    finally:
        server.process_request = process


# --- charges ---------------------------------------------------------------------------------------


def test_a_created_charge_is_unpaid_and_retrievable(gateway, sandbox):
    created = gateway.create_charge(charge_request(amount=500))
    assert (created.amount, created.currency, created.paid) == (500, "cny", False)
    assert created.id.startswith("ch_") and created.time_expire > time.time()
    assert created.raw["app"] == APP_ID and created.raw["credential"]["object"] == "credential"
    assert gateway.retrieve_charge(created.id) == created


def test_a_paid_charge_says_so_when_retrieved(gateway, sandbox):
    created = gateway.create_charge(charge_request())
    paid = sandbox.mark_paid(created.order_no)  # by order_no (the pay_id) as well as by id
    retrieved = gateway.retrieve_charge(created.id)
    assert retrieved.paid and retrieved.raw == paid and paid["time_paid"] and paid["transaction_no"]


def test_a_second_charge_with_the_same_order_no_is_order_no_used(gateway, sandbox):
    first = gateway.create_charge(charge_request())
    error = sdk_error(
        pingpp.Charge.create,
        order_no=first.order_no,
        app={"id": APP_ID},
        channel="alipay",
        amount=1,
        currency="cny",
        client_ip="1.2.3.4",
        subject="s",
        body="b",
    )
    assert (error.http_status, error.code) == (400, "order_no_used")
    with pytest.raises(GatewayError):
        gateway.create_charge(charge_request(order_no=first.order_no))
    assert len(sandbox.charges) == 1


def test_an_unknown_charge_or_transfer_is_resource_missing(gateway):
    for call in (pingpp.Charge.retrieve, pingpp.Transfer.retrieve):
        error = sdk_error(call, "ch_" + "0" * 24)
        assert (error.http_status, error.code) == (404, "resource_missing")


@pytest.mark.parametrize(
    "change, param",
    [
        ({"amount": 0}, "amount"),
        ({"amount": "100"}, "amount"),
        ({"order_no": ""}, "order_no"),
        ({"app": {}}, "app[id]"),
    ],
)
def test_an_invalid_charge_is_refused_and_names_the_parameter(gateway, sandbox, change, param):
    params = {
        "order_no": new_id(),
        "app": {"id": APP_ID},
        "channel": "alipay",
        "amount": 100,
        "currency": "cny",
        "client_ip": "1.2.3.4",
        "subject": "s",
        "body": "b",
        **change,
    }
    error = sdk_error(pingpp.Charge.create, **params)
    assert (error.http_status, error.param) == (400, param)
    assert sandbox.charges == {}


def test_a_call_without_a_bearer_key_is_401(sandbox):
    answer = requests.get(f"{sandbox.url}/v1/charges/ch_x", timeout=5)
    assert answer.status_code == 401 and answer.json()["error"]["type"] == "invalid_request_error"


# --- listing and paging --------------------------------------------------------------------------


def list_all(resource, **params):
    """Every object, page by page with starting_after, as a reconciliation would."""
    seen, after = [], None
    while True:
        page = resource.list(api_key=API_KEY, limit=3, **({"starting_after": after} if after else {}), **params)
        assert page["object"] == "list" and len(page["data"]) <= 3
        seen += [o["id"] for o in page["data"]]
        if not page["has_more"]:
            return seen
        after = page["data"][-1]["id"]


def test_charges_are_listed_newest_first_and_paged_without_gaps_or_repeats(gateway, sandbox):
    start = time.time()
    ids = []
    with time_machine.travel(start - 100, tick=False) as clock:
        for i in range(8):
            ids.append(gateway.create_charge(charge_request()).id)
            clock.shift(10 if i % 3 == 0 else 0)  # several charges share a second: ties keep creation order
    other_app = PingppGateway(API_KEY, "app_other", api_base=sandbox.url)
    other_app.create_charge(charge_request())
    assert list_all(pingpp.Charge, app={"id": APP_ID}) == ids[::-1]
    first = pingpp.Charge.list(api_key=API_KEY, app={"id": APP_ID}, limit=3)
    assert (first["url"], first["has_more"], [c["id"] for c in first["data"]]) == ("/v1/charges", True, ids[:-4:-1])
    before = pingpp.Charge.list(api_key=API_KEY, app={"id": APP_ID}, limit=2, ending_before=ids[3])
    assert [c["id"] for c in before["data"]] == [ids[5], ids[4]] and before["has_more"] is True


def test_charges_are_filtered_by_created_as_the_sdk_encodes_it(gateway, sandbox):
    base = int(time.time()) - 1000
    made = {}
    for offset in (0, 100, 200, 300):
        with time_machine.travel(base + offset, tick=False):
            made[offset] = gateway.create_charge(charge_request()).id
    page = pingpp.Charge.list(api_key=API_KEY, app={"id": APP_ID}, created={"gte": base + 100, "lt": base + 300})
    assert [c["id"] for c in page["data"]] == [made[200], made[100]]
    assert sandbox.requests[-1].query == {
        "app[id]": APP_ID,
        "created[gte]": str(base + 100),
        "created[lt]": str(base + 300),
    }
    page = pingpp.Charge.list(api_key=API_KEY, **{"app[id]": APP_ID, "created[gt]": base + 200})
    assert [c["id"] for c in page["data"]] == [made[300]]


def test_charges_are_filtered_by_paid(gateway, sandbox):
    unpaid, paid = gateway.create_charge(charge_request()), paid_charge(gateway, sandbox)
    assert [c["id"] for c in pingpp.Charge.list(api_key=API_KEY, app={"id": APP_ID}, paid=True)["data"]] == [paid.id]
    assert [c["id"] for c in pingpp.Charge.list(api_key=API_KEY, app={"id": APP_ID}, paid=False)["data"]] == [unpaid.id]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"starting_after": "ch_unknown"}])
def test_bad_paging_parameters_are_refused(gateway, params):
    error = sdk_error(pingpp.Charge.list, app={"id": APP_ID}, **params)
    assert error.http_status == 400


def test_listing_transfers_needs_the_app(gateway):
    assert sdk_error(pingpp.Transfer.list).http_status == 400


def test_transfers_are_listed_and_paged(gateway, sandbox):
    ids = [gateway.create_transfer(transfer_request()).id for _ in range(5)]
    assert list_all(pingpp.Transfer, app={"id": APP_ID}) == ids[::-1]
    page = pingpp.Transfer.list(api_key=API_KEY, app={"id": APP_ID}, limit=10)
    assert page["url"] == "/v1/transfers" and page["has_more"] is False


# --- reverse ---------------------------------------------------------------------------------------


def test_a_reversed_charge_cannot_be_paid_unless_asked_to_pay_it_anyway(gateway, sandbox):
    charge = gateway.create_charge(charge_request())
    reversed_ = pingpp.Charge.reverse(charge.id, api_key=API_KEY)
    assert reversed_["reversed"] is True and reversed_["paid"] is False
    with pytest.raises(ControlError, match="reversed"):
        sandbox.mark_paid(charge.id)
    assert gateway.retrieve_charge(charge.id).paid is False
    paid = sandbox.mark_paid(charge.id, even_if_reversed=True)
    assert paid["paid"] and paid["reversed"]
    assert [e["type"] for e in sandbox.events] == ["charge.succeeded"]


def test_a_paid_charge_cannot_be_reversed(gateway, sandbox):
    charge = paid_charge(gateway, sandbox)
    error = sdk_error(pingpp.Charge.reverse, charge.id)
    assert error.http_status == 400
    assert gateway.retrieve_charge(charge.id).raw["reversed"] is False


def test_an_expired_charge_cannot_be_paid(gateway, sandbox):
    charge = gateway.create_charge(charge_request())
    with time_machine.travel(charge.time_expire + 1):
        with pytest.raises(ControlError, match="expired"):
            sandbox.mark_paid(charge.id)
    assert sandbox.mark_paid(charge.id)["paid"]


# --- refunds ---------------------------------------------------------------------------------------


def test_a_refund_is_pending_until_it_settles_and_the_charge_keeps_count(gateway, sandbox):
    charge = paid_charge(gateway, sandbox)
    refund = pingpp.Charge.refund(charge.id, api_key=API_KEY, amount=4000, description="duplicate payment")
    assert (refund["status"], refund["succeed"], refund["amount"], refund["charge"]) == (
        "pending",
        False,
        4000,
        charge.id,
    )
    assert sandbox.events[-1]["type"] == "charge.succeeded"  # nothing announced yet
    listed = pingpp.Charge.list_refunds(charge.id, api_key=API_KEY)
    assert [r["id"] for r in listed["data"]] == [refund["id"]] and listed["url"] == f"/v1/charges/{charge.id}/refunds"

    settled = sandbox.settle_refund(refund["id"], "succeeded")
    assert settled["status"] == "succeeded" and settled["time_succeed"]
    assert pingpp.Charge.retrieve_refund(charge.id, refund["id"], api_key=API_KEY)["status"] == "succeeded"
    raw = gateway.retrieve_charge(charge.id).raw
    assert (raw["amount_refunded"], raw["refunded"], raw["refunds"]["data"][0]["status"]) == (4000, False, "succeeded")
    assert (sandbox.events[-1]["type"], sandbox.events[-1]["object_id"]) == ("refund.succeeded", refund["id"])

    rest = pingpp.Charge.refund(charge.id, api_key=API_KEY, description="the rest")  # amount: what is left
    sandbox.settle_refund(rest["id"], "succeeded")
    raw = gateway.retrieve_charge(charge.id).raw
    assert (rest["amount"], raw["amount_refunded"], raw["refunded"]) == (6000, 10000, True)


def test_refunds_never_exceed_the_payment_counting_pending_ones(gateway, sandbox):
    charge = paid_charge(gateway, sandbox)
    pingpp.Charge.refund(charge.id, api_key=API_KEY, amount=7000, description="part")
    assert sdk_error(pingpp.Charge.refund, charge.id, amount=3001, description="too much").http_status == 400
    assert (
        pingpp.Charge.refund(charge.id, api_key=API_KEY, amount=3000, description="exactly the rest")["amount"] == 3000
    )
    assert sdk_error(pingpp.Charge.refund, charge.id, description="nothing left").http_status == 400


def test_a_failed_refund_is_failed_when_retrieved_announces_nothing_and_frees_its_amount(gateway, sandbox):
    charge = paid_charge(gateway, sandbox)
    refund = pingpp.Charge.refund(charge.id, api_key=API_KEY, amount=10000, description="all")
    events = len(sandbox.events)
    failed = sandbox.settle_refund(refund["id"], "failed")
    assert failed["status"] == "failed" and failed["failure_msg"]
    assert pingpp.Charge.retrieve_refund(charge.id, refund["id"], api_key=API_KEY)["status"] == "failed"
    assert len(sandbox.events) == events  # Ping++ has no event for a failed refund
    assert gateway.retrieve_charge(charge.id).raw["amount_refunded"] == 0
    assert pingpp.Charge.refund(charge.id, api_key=API_KEY, amount=10000, description="again")["status"] == "pending"
    with pytest.raises(ControlError, match="already failed"):
        sandbox.settle_refund(refund["id"], "succeeded")


def test_refunds_can_succeed_at_once(gateway, sandbox):
    sandbox.refund_status = "succeeded"
    charge = paid_charge(gateway, sandbox)
    refund = pingpp.Charge.refund(charge.id, api_key=API_KEY, amount=100, description="at once")
    assert refund["status"] == "succeeded" and sandbox.events[-1]["type"] == "refund.succeeded"


def test_an_unpaid_charge_cannot_be_refunded(gateway, sandbox):
    charge = gateway.create_charge(charge_request())
    assert sdk_error(pingpp.Charge.refund, charge.id, amount=1, description="d").http_status == 400


def test_a_refund_is_retrieved_only_through_its_own_charge(gateway, sandbox):
    one, two = paid_charge(gateway, sandbox), paid_charge(gateway, sandbox)
    refund = pingpp.Charge.refund(one.id, api_key=API_KEY, amount=1, description="d")
    error = sdk_error(pingpp.Charge.retrieve_refund, two.id, refund["id"])
    assert (error.http_status, error.code) == (404, "resource_missing")


# --- transfers -------------------------------------------------------------------------------------


def test_a_transfer_is_pending_until_it_succeeds_or_fails(gateway, sandbox):
    created = gateway.create_transfer(transfer_request())
    assert created.status == "pending" and created.raw["extra"] == {"recipient_name": "张三"}
    paid = sandbox.settle_transfer(created.order_no, "succeeded")  # by order_no (the withdraw_id)
    assert gateway.retrieve_transfer(created.id).status == "paid" and paid["time_transferred"]
    assert (sandbox.events[-1]["type"], sandbox.events[-1]["object_id"]) == ("transfer.succeeded", created.id)
    with pytest.raises(ControlError, match="already paid"):
        sandbox.settle_transfer(created.id, "failed")

    other = gateway.create_transfer(transfer_request())
    sandbox.settle_transfer(other.id, "failed")
    assert gateway.retrieve_transfer(other.id).status == "failed" and sandbox.events[-1]["type"] == "transfer.failed"


def test_a_second_transfer_with_the_same_order_no_is_order_no_used(gateway, sandbox):
    first = gateway.create_transfer(transfer_request())
    with pytest.raises(GatewayError):
        gateway.create_transfer(transfer_request(order_no=first.order_no))
    assert sandbox.requests[-1].method == "POST" and len(sandbox.transfers) == 1


@pytest.mark.parametrize("status, event", [("paid", "transfer.succeeded"), ("failed", "transfer.failed")])
def test_new_transfers_can_settle_at_once(gateway, sandbox, status, event):
    sandbox.transfer_status = status
    assert gateway.create_transfer(transfer_request()).status == status
    assert sandbox.events[-1]["type"] == event


# --- fault injection ------------------------------------------------------------------------------


def test_a_failing_call_changes_nothing(gateway, sandbox):
    sandbox.fail_next(times=2)
    for _ in range(2):
        with pytest.raises(GatewayError):
            gateway.create_charge(charge_request())
    assert sandbox.charges == {}
    gateway.create_charge(charge_request())  # the third call is served
    assert len(sandbox.charges) == 1


def test_a_hanging_call_times_out_in_the_client_and_changes_nothing(gateway, sandbox):
    sandbox.hang_next(3)
    started = time.monotonic()
    with pytest.raises(GatewayError):
        gateway.create_transfer(transfer_request())
    assert time.monotonic() - started < 2.5  # the gateway's 1 s timeout, not the 3 s hang
    assert sandbox.transfers == {}


def test_a_lost_answer_leaves_the_object_made_and_its_order_no_used(gateway, sandbox):
    request = charge_request()
    sandbox.lose_next_response()
    with pytest.raises(GatewayError):
        gateway.create_charge(request)
    assert sandbox.charge_for(request.order_no)["amount"] == request.amount
    error = sdk_error(
        pingpp.Charge.create,
        order_no=request.order_no,
        app={"id": APP_ID},
        channel="alipay",
        amount=1,
        currency="cny",
        client_ip="1.2.3.4",
        subject="s",
        body="b",
    )
    assert error.code == "order_no_used"


def test_faults_are_for_api_calls_only_and_every_call_is_recorded(gateway, sandbox):
    sandbox.fail_next()
    assert requests.get(f"{sandbox.url}/_sandbox/state", timeout=5).status_code == 200
    with pytest.raises(GatewayError):
        gateway.create_charge(charge_request(order_no="o" * 24))
    (call,) = sandbox.requests
    assert (call.method, call.path, call.body["order_no"]) == ("POST", "/v1/charges", "o" * 24)
    assert call.headers["HTTP_AUTHORIZATION"] == f"Bearer {API_KEY}"
    assert sandbox.charge_creations("o" * 24) == [call]


# --- webhooks ----------------------------------------------------------------------------------------


def test_a_signed_event_is_authentic_to_payapi_and_a_changed_one_is_not(gateway, sandbox, tmp_path):
    charge = paid_charge(gateway, sandbox)
    raw, signature = sandbox.signed_event("charge.succeeded", gateway.retrieve_charge(charge.id).raw, event_id="evt_1")
    event = json.loads(raw)
    assert (event["id"], event["object"], event["type"], event["livemode"]) == (
        "evt_1",
        "event",
        "charge.succeeded",
        False,
    )
    assert event["data"]["object"]["id"] == charge.id
    assert gateway.webhook_is_authentic(raw, signature)
    assert not gateway.webhook_is_authentic(raw.replace(b'"paid": true', b'"paid": false'), signature)
    another_sandbox = Signer(bits=1024).write_public_key(str(tmp_path / "other.pem"))
    assert not PingppGateway(API_KEY, APP_ID, public_key_path=another_sandbox).webhook_is_authentic(raw, signature)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers scripted statuses (then 200) and keeps what came."""

    def __init__(self, statuses=(), delay=0.0):
        self.statuses, self.delay, self.received = list(statuses), delay, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((raw, self.headers.get("X-Pingplusplus-Signature")))
                time.sleep(receiver.delay if len(receiver.received) == 1 else 0)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                body = json.dumps({"code": 900 if status == 200 else 999}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/rest/pay/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def delivering(tmp_path):
    """A sandbox of its own with a webhook receiver and quick retries; yields (sandbox, receiver, gateway)."""
    made = []

    def make(statuses=(), delay=0.0, **options):
        receiver = Receiver(statuses, delay)
        sandbox = Sandbox(
            webhook_url=receiver.url,
            public_key_path=str(tmp_path / "public.pem"),
            backoff=0.05,
            backoff_max=0.2,
            **options,
        ).start()
        made.append((sandbox, receiver))
        return (
            sandbox,
            receiver,
            PingppGateway(API_KEY, APP_ID, api_base=sandbox.url, public_key_path=sandbox.public_key_path, timeout=2.0),
        )

    yield make
    for sandbox, receiver in made:
        sandbox.stop()
        receiver.close()


def test_events_are_delivered_signed_and_again_after_a_non_2xx(delivering):
    sandbox, receiver, gateway = delivering(statuses=[500, 502])
    charge = gateway.create_charge(charge_request())
    sandbox.mark_paid(charge.id)
    record = sandbox.wait_for_delivery(sandbox.events[-1]["id"])
    assert (record["status"], record["attempts"], record["last_status"]) == ("delivered", 3, 200)
    assert len(receiver.received) == 3 and len(set(receiver.received)) == 1  # the same bytes each time
    raw, signature = receiver.received[0]
    assert gateway.webhook_is_authentic(raw, signature)
    event = json.loads(raw)
    assert (event["type"], event["data"]["object"]["id"], event["data"]["object"]["paid"]) == (
        "charge.succeeded",
        charge.id,
        True,
    )


def test_a_delivery_that_times_out_is_tried_again(delivering):
    sandbox, receiver, gateway = delivering(delay=1.5, delivery_timeout=0.5)
    sandbox.set_transfer(gateway.create_transfer(transfer_request()).id, "failed")
    record = sandbox.wait_for_delivery(sandbox.events[-1]["id"])
    assert (record["status"], record["attempts"], record["last_error"]) == ("delivered", 2, "")
    assert json.loads(receiver.received[-1][0])["type"] == "transfer.failed"


def test_delivery_gives_up_after_max_attempts_and_can_be_sent_again(delivering):
    sandbox, receiver, gateway = delivering(statuses=[500] * 3, max_attempts=3)
    sandbox.mark_paid(gateway.create_charge(charge_request()).id)
    event_id = sandbox.events[-1]["id"]
    record = sandbox.wait_for_delivery(event_id)
    assert (record["status"], record["attempts"], record["last_status"]) == ("failed", 3, 500)
    sandbox.deliver(event_id)
    assert sandbox.wait_for_delivery(event_id)["status"] == "delivered" and len(receiver.received) == 4


def test_without_auto_delivery_events_are_only_recorded(delivering):
    sandbox, receiver, gateway = delivering(auto_deliver=False)
    sandbox.mark_paid(gateway.create_charge(charge_request()).id)
    assert sandbox.events[-1]["status"] == "recorded"
    time.sleep(0.3)  # nothing to poll for: the absence of a delivery
    assert receiver.received == []


@pytest.fixture
def live_app(database, settings, pingpp_keys):
    """payapi (with the suite's own gateway and app id) served on 127.0.0.1, for the sandbox to deliver to."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from payapi.app import create_app
    from payapi.users.sms import FileSms
    from payapi.wsgi import gateway_from

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server(
        "127.0.0.1", 0, create_app(settings, gateway_from(settings), FileSms(settings.sms_file)), handler_class=Quiet
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_the_sandbox_delivers_charge_succeeded_to_payapi_which_credits_the_expert(fake_pingpp, settings, live_app):
    from tests.support.config import SERVICE_KEY
    from tests.support.scenarios import pay_request

    created = requests.post(
        live_app + "/internal/pays", json=pay_request(amount=8000), headers={"X-Service-Key": SERVICE_KEY}, timeout=10
    )
    assert created.json()["code"] == 900
    info = created.json()["info"]
    fake_pingpp.webhook_url = live_app + "/rest/pay/webhook"
    fake_pingpp.mark_paid(info["charge"]["id"])
    record = fake_pingpp.wait_for_delivery(fake_pingpp.events[-1]["id"])
    assert (record["status"], json.loads(record["last_answer"])) == ("delivered", {"code": 900, "result": "applied"})
    from tests.support.databases import balance_of

    assert balance_of(info["expert_id"]) == 8000


# --- the controls over HTTP ------------------------------------------------------------------------


def test_the_json_controls_pay_settle_and_report_events(gateway, sandbox):
    charge = gateway.create_charge(charge_request())
    answer = requests.post(f"{sandbox.url}/_sandbox/charges/{charge.order_no}/pay", json={}, timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert body["charge"]["paid"] and [e["type"] for e in body["events"]] == ["charge.succeeded"]
    assert body["events"][0]["status"] == "recorded"  # the session's sandbox has no webhook URL
    event = requests.get(f"{sandbox.url}/_sandbox/events/{body['events'][0]['id']}", timeout=5).json()["event"]
    assert event["event"]["data"]["object"]["id"] == charge.id

    transfer = gateway.create_transfer(transfer_request())
    answer = requests.post(f"{sandbox.url}/_sandbox/transfers/{transfer.id}/failed", timeout=5)
    assert answer.json()["transfer"]["status"] == "failed"
    again = requests.post(f"{sandbox.url}/_sandbox/transfers/{transfer.id}/succeeded", timeout=5)
    assert again.status_code == 409 and "already failed" in again.json()["error"]["message"]
    assert requests.post(f"{sandbox.url}/_sandbox/charges/ch_nope/pay", timeout=5).status_code == 404


def test_the_json_controls_inject_faults_and_change_settings(gateway, sandbox):
    answer = requests.post(f"{sandbox.url}/_sandbox/faults", json={"kind": "fail", "times": 1}, timeout=5)
    assert answer.json()["faults"] == [{"kind": "fail", "status": 500}]
    with pytest.raises(GatewayError):
        gateway.create_transfer(transfer_request())
    requests.post(
        f"{sandbox.url}/_sandbox/settings", json={"transfer_status": "paid", "refund_status": "succeeded"}, timeout=5
    )
    assert gateway.create_transfer(transfer_request()).status == "paid"
    assert (
        requests.post(f"{sandbox.url}/_sandbox/settings", json={"transfer_status": "x"}, timeout=5).status_code == 400
    )
    state = requests.get(f"{sandbox.url}/_sandbox/state", timeout=5).json()
    assert state["settings"]["refund_status"] == "succeeded" and len(state["transfers"]) == 1


def test_the_page_lists_objects_and_its_buttons_work_without_javascript(gateway, sandbox):
    charge = gateway.create_charge(
        ChargeRequest(
            order_no=new_id(), amount=100, channel="alipay", subject="<script>x</script>", body="b", client_ip="1.2.3.4"
        )
    )
    page = requests.get(f"{sandbox.url}/_sandbox/", timeout=5)
    assert page.headers["Content-Type"].startswith("text/html")
    assert charge.id in page.text and "<script>x" not in page.text and "&lt;script&gt;" in page.text
    assert f'action="/_sandbox/charges/{charge.id}/pay"' in page.text
    pressed = requests.post(
        f"{sandbox.url}/_sandbox/charges/{charge.id}/pay",
        data="",
        allow_redirects=False,
        timeout=5,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # as a browser sends it
    assert pressed.status_code == 303 and pressed.headers["Location"].startswith("/_sandbox/?msg=")
    assert sandbox.charges[charge.id]["paid"]
    assert "paid" in requests.get(f"{sandbox.url}{pressed.headers['Location']}", timeout=5).text


def test_the_public_key_is_served_and_written(sandbox):
    served = requests.get(f"{sandbox.url}/_sandbox/public_key.pem", timeout=5)
    with open(sandbox.public_key_path, "rb") as f:
        assert served.content == f.read() == sandbox.public_key_pem
    assert served.content.startswith(b"-----BEGIN PUBLIC KEY-----")


# --- the commands ----------------------------------------------------------------------------------


def command(sandbox_url, *args):
    env = {**os.environ, "PINGPP_API_BASE": sandbox_url, "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-m", "payapi", "sandbox", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_commands_pay_and_settle_through_a_running_sandbox(gateway, sandbox):
    charge = gateway.create_charge(charge_request())
    done = command(sandbox.url, "pay", charge.id)
    assert done.returncode == 0, done.stderr
    assert f"charge {charge.id}" in done.stdout and "charge.succeeded" in done.stdout and "recorded" in done.stdout
    assert sandbox.charges[charge.id]["paid"]

    transfer = gateway.create_transfer(transfer_request())
    done = command(sandbox.url, "transfer", transfer.order_no, "failed")
    assert done.returncode == 0 and "failed" in done.stdout and sandbox.transfers[transfer.id]["status"] == "failed"

    refund = pingpp.Charge.refund(charge.id, api_key=API_KEY, amount=100, description="d")
    done = command(sandbox.url, "refund", refund["id"], "failed")
    assert done.returncode == 0 and "no webhook for a failed refund" in done.stdout

    done = command(sandbox.url, "transfer", transfer.id, "succeeded")
    assert done.returncode == 1 and "already failed" in done.stderr


def test_a_command_without_a_running_sandbox_says_how_to_start_one():
    done = command(f"http://127.0.0.1:{free_port()}", "pay", "ch_x")
    assert done.returncode == 1 and "python -m payapi sandbox" in done.stderr and "Traceback" not in done.stderr


def test_the_serve_command_keeps_its_key_in_the_key_file(tmp_path):
    key_file, public = tmp_path / "key.pem", tmp_path / "public.pem"
    keys = []
    for _ in range(2):
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "payapi",
                "sandbox",
                "--port",
                str(port),
                "--key-file",
                str(key_file),
                "--public-key-file",
                str(public),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    proc.stderr.read() if proc.poll() else "slow"
                )
                try:
                    keys.append(requests.get(f"http://127.0.0.1:{port}/_sandbox/public_key.pem", timeout=2).content)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    assert keys[0] == keys[1] == public.read_bytes()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_the_service_never_imports_the_sandbox(tmp_path):
    code = (
        "import sys, payapi.wsgi, payapi.worker, payapi.__main__\n"
        "payapi.wsgi.get_app()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('payapi.sandbox') or m == 'payapi.dev')\n"
        "assert not loaded, loaded\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "PAYAPI_ENV": "development",
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
