"""The sandbox's Ping++: charges, refunds and transfers in memory, kept by Ping++'s rules.

Two kinds of callers change this state. The Ping++ API (`api_*` methods, reached over HTTP by
the real SDK) validates like Ping++ and answers its errors. The controls (`mark_paid`,
`settle_transfer`, `settle_refund`, ... reached from tests, the page and the commands) play the
part of the payer, Alipay and Ping++'s back office. Every change Ping++ would announce becomes a
signed event (`payapi.sandbox.webhooks`).
"""

import collections
import copy
import secrets
import string
import threading
import time

# Ping++'s own vocabulary.
TRANSFER_PENDING, TRANSFER_PAID, TRANSFER_FAILED = "pending", "paid", "failed"
TRANSFER_STATUSES = ("scheduled", TRANSFER_PENDING, TRANSFER_PAID, TRANSFER_FAILED, "canceled")
REFUND_PENDING, REFUND_SUCCEEDED, REFUND_FAILED = "pending", "succeeded", "failed"
# What a control says happened, in words a person types: `sandbox transfer ID succeeded`.
OUTCOMES = ("succeeded", "failed")

DEFAULT_EXPIRY = 86400  # seconds a charge may be paid when the request names no time_expire
_ALPHABET = string.ascii_letters + string.digits

Call = collections.namedtuple("Call", "method path body headers query")
Call.__doc__ = "One Ping++ API request as the sandbox received it (body: parsed JSON, or None)."


def new_id(prefix):
    """Ping++-looking ids: a prefix and 24 random letters and digits."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


class PingppError(Exception):
    """An error answer in Ping++'s shape: {"error": {"type", "message", "code"?, "param"?}}."""

    def __init__(self, status, message, code=None, param=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def body(self):
        error = {"type": self.kind, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}


def missing(kind, object_id, param="id"):
    return PingppError(404, f"No such {kind}: {object_id}", code="resource_missing", param=param)


def refused(message, code=None, param=None):
    return PingppError(400, message, code=code, param=param)


class ControlError(Exception):
    """A control that cannot be carried out (paying a reversed charge, settling a settled transfer)."""

    def __init__(self, message, status=409):
        super().__init__(message)
        self.status = status


def _int_param(params, key, low=None, high=None, default=None):
    value = params.get(key)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise refused(f"Invalid {key}: must be an integer", param=key) from None
    if isinstance(value, bool) or (low is not None and number < low) or (high is not None and number > high):
        raise refused(f"Invalid {key}: {value}", param=key)
    return number


def _bool_param(params, key):
    value = params.get(key)
    if value is None:
        return None
    text = str(value).lower()
    if text not in ("true", "false", "1", "0"):
        raise refused(f"Invalid {key}: must be true or false", param=key)
    return text in ("true", "1")


def _required(body, *keys):
    for key in keys:
        if body.get(key) in (None, ""):
            raise refused(f"Missing required parameter: {key}", param=key)


def _amount(body, key="amount"):
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise refused(f"Invalid {key}: must be a positive integer", param=key)
    return value


def _app_id(body):
    app = body.get("app")
    app_id = app.get("id") if isinstance(app, dict) else None
    if not isinstance(app_id, str) or not app_id:
        raise refused("Missing required parameter: app[id]", param="app[id]")
    return app_id


class Ledger:
    """Ping++'s objects and rules; `emit(event_type, obj)` hears of every change to announce."""

    def __init__(self, emit=lambda event_type, obj: None):
        self.lock = threading.RLock()
        self.emit = emit
        self.charges = {}  # id -> charge object, as Ping++ would return it
        self.transfers = {}  # id -> transfer object
        self.refunds = {}  # id -> refund object (the same dicts as in their charge's refunds list)
        self._order = {}  # id -> creation sequence: the tie-break of equal `created` seconds in lists
        self._sequence = 0
        self.transfer_status = TRANSFER_PENDING  # the status a new transfer gets
        self.refund_status = REFUND_PENDING  # the status a new refund gets (Alipay settles later)
        self.page_limit = None  # a cap on every list's page (tests of paging: a Ping++ that pages small)

    def clear(self):
        with self.lock:
            self.charges.clear()
            self.transfers.clear()
            self.refunds.clear()
            self._order.clear()
            self.transfer_status = TRANSFER_PENDING
            self.refund_status = REFUND_PENDING
            self.page_limit = None

    def _remember(self, obj):
        self._sequence += 1
        self._order[obj["id"]] = self._sequence

    # --- lookups ---------------------------------------------------------------------------------

    def charge(self, charge_id):
        with self.lock:
            found = self.charges.get(charge_id)
            if found is None:
                raise missing("charge", charge_id)
            return found

    def transfer(self, transfer_id):
        with self.lock:
            found = self.transfers.get(transfer_id)
            if found is None:
                raise missing("transfer", transfer_id)
            return found

    def find(self, kind, ref):
        """A charge or transfer by its id or by its order_no (a pay_id / withdraw_id); a refund by id."""
        with self.lock:
            store = {"charge": self.charges, "transfer": self.transfers, "refund": self.refunds}[kind]
            if ref in store:
                return store[ref]
            by_order = [o for o in store.values() if o.get("order_no") == ref]
            if by_order:
                return max(by_order, key=lambda o: self._order.get(o["id"], 0))
            raise ControlError(f"no {kind} {ref} in the sandbox", status=404)

    # --- the Ping++ API: charges ---------------------------------------------------------------

    def api_create_charge(self, body):
        _required(body, "order_no", "channel", "currency", "subject", "body")
        app_id, amount = _app_id(body), _amount(body)
        now = int(time.time())
        time_expire = body.get("time_expire")
        if time_expire is not None and (not isinstance(time_expire, int) or time_expire <= now):
            raise refused("Invalid time_expire: must be a future Unix time", param="time_expire")
        with self.lock:
            if any(c["order_no"] == body["order_no"] and c["app"] == app_id for c in self.charges.values()):
                raise refused(
                    "order_no has been used: " + str(body["order_no"]), code="order_no_used", param="order_no"
                )
            charge_id = new_id("ch_")
            channel = body["channel"]
            charge = {
                "id": charge_id,
                "object": "charge",
                "created": now,
                "livemode": False,
                "paid": False,
                "refunded": False,
                "reversed": False,
                "app": app_id,
                "channel": channel,
                "order_no": body["order_no"],
                "client_ip": body.get("client_ip"),
                "amount": amount,
                "amount_settle": amount,
                "currency": body["currency"],
                "subject": body["subject"],
                "body": body["body"],
                "extra": body.get("extra") or {},
                "time_paid": None,
                "time_expire": time_expire or now + DEFAULT_EXPIRY,
                "time_settle": None,
                "transaction_no": None,
                "refunds": {"object": "list", "url": f"/v1/charges/{charge_id}/refunds", "has_more": False, "data": []},
                "amount_refunded": 0,
                "failure_code": None,
                "failure_msg": None,
                "metadata": body.get("metadata") or {},
                "credential": {"object": "credential", channel: {"orderInfo": f"sandbox:{charge_id}"}},
                "description": body.get("description"),
            }
            self.charges[charge_id] = charge
            self._remember(charge)
            return copy.deepcopy(charge)

    def api_retrieve_charge(self, charge_id):
        with self.lock:
            return self._served(copy.deepcopy(self.charge(charge_id)))

    def _served(self, charge):
        """A charge as served: its refunds are the first page of their list, as Ping++ embeds them."""
        embedded = charge.get("refunds")
        if self.page_limit is not None and embedded and len(embedded["data"]) > self.page_limit:
            embedded["data"], embedded["has_more"] = embedded["data"][: self.page_limit], True
        return charge

    def api_list_charges(self, params):
        app_id = params.get("app[id]")
        if not app_id:
            raise refused("Missing required parameter: app[id]", param="app[id]")
        wanted = {key: _bool_param(params, key) for key in ("paid", "refunded", "reversed")}
        channel = params.get("channel")
        with self.lock:
            items = [
                c
                for c in self.charges.values()
                if c["app"] == app_id
                and (channel is None or c["channel"] == channel)
                and all(value is None or c[key] is value for key, value in wanted.items())
            ]
            return self._page(items, params, "/v1/charges", "charge", self.charges)

    def api_reverse_charge(self, charge_id):
        """Close an unpaid charge (it can no longer be paid); a paid one cannot be reversed."""
        with self.lock:
            charge = self.charge(charge_id)
            if charge["paid"]:
                raise refused("Charge has been paid and cannot be reversed; refund it instead", code="charge_paid")
            charge["reversed"] = True
            return copy.deepcopy(charge)

    # --- the Ping++ API: refunds ---------------------------------------------------------------

    def api_create_refund(self, charge_id, body):
        description = body.get("description")
        if not isinstance(description, str) or not description or len(description) > 255:
            raise refused("Missing required parameter: description (1-255 characters)", param="description")
        with self.lock:
            charge = self.charge(charge_id)
            if not charge["paid"]:
                raise refused("Charge has not been paid and cannot be refunded", code="charge_unpaid", param="charge")
            # Refunds still settling hold their part too: Ping++ never lets refunds exceed the payment.
            held = sum(r["amount"] for r in charge["refunds"]["data"] if r["status"] != REFUND_FAILED)
            refundable = charge["amount"] - held
            amount = _amount(body) if body.get("amount") is not None else refundable
            if refundable <= 0:
                raise refused("Charge has been fully refunded", code="charge_refunded", param="amount")
            if amount > refundable:
                raise refused(f"Refund amount {amount} exceeds the refundable {refundable}", param="amount")
            refund = self._new_refund(charge, amount, description, body.get("metadata") or {})
            if self.refund_status == REFUND_SUCCEEDED:
                self._refund_succeeded(refund)
            return copy.deepcopy(refund)

    def api_list_refunds(self, charge_id, params):
        with self.lock:
            charge = self.charge(charge_id)
            return self._page(charge["refunds"]["data"], params, charge["refunds"]["url"], "refund", self.refunds)

    def api_retrieve_refund(self, charge_id, refund_id):
        with self.lock:
            self.charge(charge_id)
            refund = self.refunds.get(refund_id)
            if refund is None or refund["charge"] != charge_id:
                raise missing("refund", refund_id)
            return copy.deepcopy(refund)

    def _new_refund(self, charge, amount, description, metadata):
        refund = {
            "id": new_id("re_"),
            "object": "refund",
            "order_no": charge["order_no"],
            "amount": amount,
            "created": int(time.time()),
            "succeed": False,
            "status": REFUND_PENDING,
            "time_succeed": None,
            "description": description,
            "failure_code": None,
            "failure_msg": None,
            "metadata": metadata,
            "charge": charge["id"],
            "charge_order_no": charge["order_no"],
            "transaction_no": None,
            "funding_source": None,
            "extra": {},
            "currency": charge["currency"],
        }
        charge["refunds"]["data"].insert(0, refund)  # newest first, as Ping++ lists them
        self.refunds[refund["id"]] = refund
        self._remember(refund)
        return refund

    def _refund_succeeded(self, refund):
        now = int(time.time())
        refund.update(status=REFUND_SUCCEEDED, succeed=True, time_succeed=now, transaction_no="re" + str(now))
        charge = self.charges.get(refund["charge"])
        if charge is not None:
            charge["amount_refunded"] += refund["amount"]
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        self.emit("refund.succeeded", copy.deepcopy(refund))

    # --- the Ping++ API: transfers -------------------------------------------------------------

    def api_create_transfer(self, body):
        _required(body, "order_no", "channel", "currency", "type", "recipient", "description")
        app_id, amount = _app_id(body), _amount(body)
        with self.lock:
            if any(t["order_no"] == body["order_no"] and t["app"] == app_id for t in self.transfers.values()):
                raise refused(
                    "order_no has been used: " + str(body["order_no"]), code="order_no_used", param="order_no"
                )
            transfer = {
                "id": new_id("tr_"),
                "object": "transfer",
                "type": body["type"],
                "created": int(time.time()),
                "time_transferred": None,
                "livemode": False,
                "status": TRANSFER_PENDING,
                "app": app_id,
                "channel": body["channel"],
                "order_no": body["order_no"],
                "amount": amount,
                "amount_settle": amount,
                "currency": body["currency"],
                "recipient": body["recipient"],
                "description": body["description"],
                "transaction_no": None,
                "failure_msg": None,
                "extra": body.get("extra") or {},
                "metadata": body.get("metadata") or {},
            }
            self.transfers[transfer["id"]] = transfer
            self._remember(transfer)
            if self.transfer_status != TRANSFER_PENDING:
                self._set_transfer_status(transfer, self.transfer_status)
            return copy.deepcopy(transfer)

    def api_retrieve_transfer(self, transfer_id):
        with self.lock:
            return copy.deepcopy(self.transfer(transfer_id))

    def api_list_transfers(self, params):
        app_id = params.get("app[id]")
        if not app_id:
            raise refused("Missing required parameter: app[id]", param="app[id]")
        status, channel = params.get("status"), params.get("channel")
        with self.lock:
            items = [
                t
                for t in self.transfers.values()
                if t["app"] == app_id
                and (status is None or t["status"] == status)
                and (channel is None or t["channel"] == channel)
            ]
            return self._page(items, params, "/v1/transfers", "transfer", self.transfers)

    def _set_transfer_status(self, transfer, status):
        now = int(time.time())
        transfer["status"] = status
        if status == TRANSFER_PAID:
            transfer.update(time_transferred=now, transaction_no=transfer["transaction_no"] or f"2088{now}")
            self.emit("transfer.succeeded", copy.deepcopy(transfer))
        elif status in (TRANSFER_FAILED, "canceled"):
            transfer["failure_msg"] = transfer["failure_msg"] or "sandbox: the transfer failed"
            self.emit("transfer.failed", copy.deepcopy(transfer))

    # --- paging ----------------------------------------------------------------------------------

    def _page(self, items, params, url, kind, store):
        """Ping++'s list: newest first, `limit` (1-100, default 10), `starting_after` / `ending_before`
        (an object id, exclusive) and `created[gt|gte|lt|lte]` (Unix seconds)."""
        limit = _int_param(params, "limit", 1, 100, default=10)
        if self.page_limit is not None:
            limit = min(limit, self.page_limit)
        bounds = {op: _int_param(params, f"created[{op}]") for op in ("gt", "gte", "lt", "lte")}
        checks = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}

        def key(obj):
            return obj["created"], self._order.get(obj["id"], 0)

        ordered = sorted(
            (o for o in items if all(v is None or checks[op](o["created"], v) for op, v in bounds.items())),
            key=key,
            reverse=True,
        )
        after, before = params.get("starting_after"), params.get("ending_before")
        if after is not None or before is not None:
            cursor_id = after if after is not None else before
            cursor = store.get(cursor_id)
            if cursor is None:
                raise refused(
                    f"No such {kind}: {cursor_id}",
                    code="resource_missing",
                    param="starting_after" if after is not None else "ending_before",
                )
            if after is not None:
                rest = [o for o in ordered if key(o) < key(cursor)]
                data, has_more = rest[:limit], len(rest) > limit
            else:
                rest = [o for o in ordered if key(o) > key(cursor)]
                data, has_more = rest[-limit:], len(rest) > limit
        else:
            data, has_more = ordered[:limit], len(ordered) > limit
        data = copy.deepcopy(data)
        if kind == "charge":
            data = [self._served(charge) for charge in data]
        return {"object": "list", "url": url, "has_more": has_more, "data": data}

    # --- controls: what the payer, Alipay and Ping++'s back office do ----------------------------

    def mark_paid(self, charge_id, even_if_reversed=False):
        """The payer pays the charge. A reversed or expired charge cannot be paid, unless
        even_if_reversed: a payment that slipped through anyway (the double-payment path)."""
        with self.lock:
            charge = self.charge(charge_id) if charge_id in self.charges else self.find("charge", charge_id)
            if charge["paid"]:
                return copy.deepcopy(charge)
            if not even_if_reversed:
                if charge["reversed"]:
                    raise ControlError(f"charge {charge['id']} was reversed (closed) and cannot be paid")
                if charge["time_expire"] is not None and charge["time_expire"] <= time.time():
                    raise ControlError(f"charge {charge['id']} expired and cannot be paid")
            now = int(time.time())
            charge.update(paid=True, time_paid=now, transaction_no="2016" + charge["id"][-10:])
            paid = copy.deepcopy(charge)
            self.emit("charge.succeeded", copy.deepcopy(charge))
            return paid

    def refund(self, charge_id, amount):
        """A succeeded refund exactly as asked, without the API's checks (a refund made on Ping++'s
        dashboard, or an odd event a test scripts); announced as refund.succeeded."""
        with self.lock:
            charge = self.charge(charge_id)
            refund = self._new_refund(charge, amount, "退款", {})
            self._refund_succeeded(refund)
            return copy.deepcopy(refund)

    def settle_refund(self, refund_id, outcome):
        """A pending refund succeeds (refund.succeeded) or fails (status failed: Ping++ announces no
        event for that, payapi learns it by retrieving the refund)."""
        if outcome not in OUTCOMES:
            raise ControlError(f"outcome must be one of {', '.join(OUTCOMES)}", status=400)
        with self.lock:
            refund = self.find("refund", refund_id)
            if refund["status"] != REFUND_PENDING:
                raise ControlError(f"refund {refund['id']} is already {refund['status']}")
            if outcome == "succeeded":
                self._refund_succeeded(refund)
            else:
                refund.update(
                    status=REFUND_FAILED, failure_code="sandbox_failed", failure_msg="sandbox: the refund failed"
                )
            return copy.deepcopy(refund)

    def settle_transfer(self, transfer_id, outcome):
        """A transfer in flight is paid (transfer.succeeded) or fails (transfer.failed)."""
        if outcome not in OUTCOMES:
            raise ControlError(f"outcome must be one of {', '.join(OUTCOMES)}", status=400)
        with self.lock:
            transfer = self.find("transfer", transfer_id)
            if transfer["status"] not in (TRANSFER_PENDING, "scheduled"):
                raise ControlError(f"transfer {transfer['id']} is already {transfer['status']}")
            self._set_transfer_status(transfer, TRANSFER_PAID if outcome == "succeeded" else TRANSFER_FAILED)
            return copy.deepcopy(transfer)

    def set_transfer(self, transfer_id, status):
        """Any Ping++ status, from any status (tests script odd histories); paid/failed are announced."""
        if status not in TRANSFER_STATUSES:
            raise ControlError(f"status must be one of {', '.join(TRANSFER_STATUSES)}", status=400)
        with self.lock:
            transfer = self.transfer(transfer_id)
            self._set_transfer_status(transfer, status)
            return copy.deepcopy(transfer)

    def snapshot(self):
        """Everything, newest first, for the page and /_sandbox/state."""
        with self.lock:

            def newest(store):
                return copy.deepcopy(sorted(store.values(), key=lambda o: self._order.get(o["id"], 0), reverse=True))

            return {
                "charges": newest(self.charges),
                "refunds": newest(self.refunds),
                "transfers": newest(self.transfers),
            }
