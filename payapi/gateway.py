"""Ping++: the only module that imports the pingpp SDK.

Callers hand in small dataclasses and get small dataclasses back (Saleor's gateway shape); no
SDK object leaves this module. Webhook signatures are Ping++'s too, so they are verified here.
"""

import base64
import binascii
import dataclasses
import json
import logging

import pingpp
import requests
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15

log = logging.getLogger(__name__)

# Channels a pay may use (Ping++'s names); `extra` is passed through for those that need it.
CHANNELS = frozenset(
    {
        "alipay", "alipay_wap", "alipay_pc_direct", "alipay_qr", "alipay_lite",
        "wx", "wx_pub", "wx_pub_qr", "wx_wap", "wx_lite",
        "upacp", "upacp_wap", "upacp_pc", "applepay_upacp", "qpay", "bfb_wap", "cmb_wallet",
    }
)


class GatewayError(Exception):
    """Ping++ could not be reached, timed out, or refused the request.

    code: Ping++'s error code when it answered with one (e.g. "charge_paid"), else None.
    """

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class ChargeRequest:
    order_no: str
    amount: int
    channel: str
    subject: str
    body: str
    client_ip: str
    currency: str = "cny"
    extra: dict | None = None


@dataclasses.dataclass(frozen=True)
class Charge:
    id: str
    order_no: str
    amount: int
    currency: str
    paid: bool
    reversed: bool  # closed at Ping++: it can no longer be paid
    time_expire: int | None  # Unix seconds
    raw: dict


@dataclasses.dataclass(frozen=True)
class TransferRequest:
    order_no: str
    amount: int
    recipient: str
    recipient_name: str
    description: str
    currency: str = "cny"


@dataclasses.dataclass(frozen=True)
class Transfer:
    id: str
    order_no: str
    amount: int
    currency: str
    status: str  # scheduled, pending, paid, failed
    raw: dict


@dataclasses.dataclass(frozen=True)
class RefundRequest:
    refund_id: str  # ours: sent as metadata.refund_id, so a refund whose answer was lost can be found
    charge_id: str
    amount: int
    description: str


@dataclasses.dataclass(frozen=True)
class Refund:
    id: str
    charge_id: str
    charge_order_no: str | None  # Ping++ sends it with refund events; None when absent
    amount: int  # -1 when missing or not an integer
    currency: str | None  # None when absent
    status: str  # pending, succeeded, failed
    succeeded: bool
    metadata_refund_id: str | None  # our refund_id, for refunds payapi asked for
    raw: dict


def _integer(raw, key, default):
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def charge_from(raw):
    return Charge(
        id=str(raw.get("id", "")),
        order_no=str(raw.get("order_no", "")),
        amount=_integer(raw, "amount", -1),
        currency=str(raw.get("currency", "")),
        paid=raw.get("paid") is True,
        reversed=raw.get("reversed") is True,
        time_expire=_integer(raw, "time_expire", None),
        raw=raw,
    )


def transfer_from(raw):
    return Transfer(
        id=str(raw.get("id", "")),
        order_no=str(raw.get("order_no", "")),
        amount=_integer(raw, "amount", -1),
        currency=str(raw.get("currency", "")),
        status=str(raw.get("status", "")),
        raw=raw,
    )


def refund_from(raw):
    order_no, currency = raw.get("charge_order_no"), raw.get("currency")
    status = raw.get("status")
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    ours = metadata.get("refund_id")
    return Refund(
        id=raw["id"] if isinstance(raw.get("id"), str) else "",
        charge_id=raw["charge"] if isinstance(raw.get("charge"), str) else "",
        charge_order_no=order_no if order_no is None else str(order_no),
        amount=_integer(raw, "amount", -1),
        currency=currency if currency is None else str(currency),
        status=str(status) if status is not None else "",
        # Older refund objects carry only `succeed`; newer ones `status` too.
        succeeded=status in (None, "succeeded") and raw.get("succeed") is not False,
        metadata_refund_id=ours if isinstance(ours, str) else None,
        raw=raw,
    )


def _plain(sdk_object):
    # PingppObject is a dict subclass; a JSON round trip leaves plain dicts and lists.
    return json.loads(json.dumps(sdk_object))


class PingppGateway:
    def __init__(self, api_key, app_id, api_base="", private_key_path="", public_key_path="", timeout=5.0):
        self.app_id = app_id
        self._api_key = api_key
        # The SDK keeps its configuration in module globals; one gateway per process sets them.
        if api_base:
            pingpp.api_base = api_base.rstrip("/")
        pingpp.private_key_path = private_key_path or None
        pingpp.private_key = None
        # The SDK's defaults (30 s connect, 80 s read, a retry on 502) would hold a worker for
        # minutes; one bounded attempt, and the worker or the next report tries again later.
        pingpp.timeout = timeout
        pingpp.connect_timeout = timeout
        pingpp.max_network_retries = 0
        self._public_key = None
        if public_key_path:
            with open(public_key_path, "rb") as f:
                self._public_key = RSA.import_key(f.read())

    def _call(self, what, func, *args, **kwargs):
        if not self._api_key:
            raise GatewayError("PINGPP_API_KEY is not configured")
        try:
            return _plain(func(*args, api_key=self._api_key, **kwargs))
        except (pingpp.error.PingppError, requests.RequestException, ValueError) as exc:
            error = (getattr(exc, "json_body", None) or {}).get("error") or {}
            code, message = error.get("code"), str(error.get("message") or "")[:200]
            log.warning("Ping++ %s failed: %s %s %s", what, type(exc).__name__, code or "", message)
            raise GatewayError(f"{what}: {type(exc).__name__} {code or ''} {message}".strip(), code=code) from exc

    def create_charge(self, request: ChargeRequest) -> Charge:
        params = {
            "order_no": request.order_no,
            "app": {"id": self.app_id},
            "channel": request.channel,
            "amount": request.amount,
            "currency": request.currency,
            "client_ip": request.client_ip,
            "subject": request.subject,
            "body": request.body,
        }
        if request.extra:
            params["extra"] = request.extra
        return charge_from(self._call("create charge", pingpp.Charge.create, **params))

    def retrieve_charge(self, charge_id) -> Charge:
        return charge_from(self._call("retrieve charge", pingpp.Charge.retrieve, charge_id))

    def reverse_charge(self, charge_id) -> Charge:
        """Close an unpaid charge so its credential can no longer take money (code charge_paid if paid)."""
        return charge_from(self._call("reverse charge", pingpp.Charge.reverse, charge_id))

    def create_refund(self, request: RefundRequest) -> Refund:
        params = {"description": request.description, "amount": request.amount,
                  "metadata": {"refund_id": request.refund_id}}
        return refund_from(self._call("create refund", pingpp.Charge.refund, request.charge_id, **params))

    def retrieve_refund(self, charge_id, refund_id) -> Refund:
        return refund_from(self._call("retrieve refund", pingpp.Charge.retrieve_refund, charge_id, refund_id))

    def list_refunds(self, charge_id) -> list[Refund]:
        """Every refund of a charge (a charge has few: one page of 100)."""
        page = self._call("list refunds", pingpp.Charge.list_refunds, charge_id, limit=100)
        return [refund_from(raw) for raw in page.get("data", [])]

    def _each(self, what, resource, created_gte, created_lt, convert):
        """Every object of a list created in [created_gte, created_lt) (Unix seconds), paging as Ping++ does."""
        params = {"app": {"id": self.app_id}, "limit": 100, "created": {"gte": created_gte, "lt": created_lt}}
        while True:
            page = self._call(what, resource.list, **params)
            data = page.get("data") or []
            for raw in data:
                yield convert(raw)
            if not page.get("has_more") or not data:
                return
            params["starting_after"] = data[-1]["id"]

    def list_charges(self, created_gte, created_lt):
        return self._each("list charges", pingpp.Charge, created_gte, created_lt, charge_from)

    def list_transfers(self, created_gte, created_lt):
        return self._each("list transfers", pingpp.Transfer, created_gte, created_lt, transfer_from)

    def create_transfer(self, request: TransferRequest) -> Transfer:
        params = {
            "order_no": request.order_no,
            "app": {"id": self.app_id},
            "channel": "alipay",
            "type": "b2c",
            "amount": request.amount,
            "currency": request.currency,
            "recipient": request.recipient,
            "description": request.description,
            "extra": {"recipient_name": request.recipient_name},
        }
        return transfer_from(self._call("create transfer", pingpp.Transfer.create, **params))

    def retrieve_transfer(self, transfer_id) -> Transfer:
        return transfer_from(self._call("retrieve transfer", pingpp.Transfer.retrieve, transfer_id))

    def webhook_is_authentic(self, raw_body, signature):
        """RSA-SHA256 (PKCS#1 v1.5) over the raw body, base64 in X-Pingplusplus-Signature."""
        if self._public_key is None or not signature:
            return False
        try:
            pkcs1_15.new(self._public_key).verify(SHA256.new(raw_body), base64.b64decode(signature, validate=True))
            return True
        except (ValueError, TypeError, binascii.Error):
            return False
