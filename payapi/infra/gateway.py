"""Ping++: the only module that imports the pingpp SDK.

Callers hand in small dataclasses and get small dataclasses back (Saleor's gateway shape); no
SDK object leaves this module. Webhook signatures are Ping++'s too, so they are verified here.

The SDK is pinned (pingpp 2.7.2, 2018) and not forked; what today's Python needs from it is
adapted here, before and right after `import pingpp`:
- its vendored six 1.11 has a meta-path importer with only find_module, which Python 3.12
  stopped calling, so `pingpp.six.moves...` imports fail (and the fallback `from cgi import
  parse_qsl` fails too); a small finder with find_spec serves those names from six's importer;
- it verifies TLS against its own 2018 CA file unless `pingpp.ca_bundle` is set: certifi's;
- it signs requests with pycryptodome; `cryptography` (which PyMySQL needs anyway) does the
  same RSA-SHA256 PKCS#1 v1.5 signature, so the project carries one crypto library.
"""

import base64
import binascii
import dataclasses
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import certifi
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class _VendoredSixMoves(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """find_spec for `pingpp.six.moves*`, served by the vendored six's own importer (six ≥ 1.16 does this itself)."""

    prefix = "pingpp.six.moves"

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.prefix and not fullname.startswith(self.prefix + "."):
            return None
        six = sys.modules.get("pingpp.six")
        importer = getattr(six, "_importer", None)
        if importer is None or fullname not in importer.known_modules:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=importer.is_package(fullname))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return sys.modules["pingpp.six"]._importer.load_module(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass  # six's lazy modules fill themselves in on attribute access


if not any(isinstance(finder, _VendoredSixMoves) for finder in sys.meta_path):
    sys.meta_path.insert(0, _VendoredSixMoves())

import pingpp  # noqa: E402  (after the finder above, or it fails on Python 3.12+)
import pingpp.api_requestor  # noqa: E402
import pingpp.http_client  # noqa: E402

pingpp.ca_bundle = certifi.where()


def _rsa_sign(requestor: object, private_key: str, data: str) -> bytes:
    """The SDK's request signature (APIRequestor.rsa_sign) with cryptography instead of pycryptodome."""
    key = _signing_key(private_key)
    return base64.b64encode(key.sign(data.encode(), padding.PKCS1v15(), hashes.SHA256()))


@functools.lru_cache(maxsize=4)
def _signing_key(pem: str) -> rsa.RSAPrivateKey:
    # Loading a PEM RSA key checks the key, ~45 ms of CPU for 2048 bits; signing takes ~0.4 ms.
    # The SDK hands over the PEM text on every call: it is loaded once per process.
    return load_private_key(pem)


pingpp.api_requestor.APIRequestor.rsa_sign = _rsa_sign


# The SDK makes a new HTTP client, and with it a new requests.Session, for every call: a new TCP
# and TLS handshake with Ping++ each time (and ~0.5 ms of Python to build the session). Each thread
# keeps one client instead (requests' sessions are not made to be shared between threads), so its
# calls reuse a kept-alive connection; urllib3 checks a pooled connection is still open before
# reusing it. A forked child (gunicorn's workers) starts with none of its parent's.
_clients = threading.local()
_sdk_client = pingpp.http_client.new_default_http_client


def _thread_client(*args: Any, **kwargs: Any) -> Any:
    settings = (args, tuple(sorted(kwargs.items())))
    cached = getattr(_clients, "client", None)
    if cached is None or cached[0] != settings:
        cached = _clients.client = (settings, _sdk_client(*args, **kwargs))
    return cached[1]


def _forget_clients() -> None:
    global _clients
    _clients = threading.local()


pingpp.http_client.new_default_http_client = _thread_client
os.register_at_fork(after_in_child=_forget_clients)


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """An RSA public key from PEM text (SubjectPublicKeyInfo or PKCS#1); ValueError if it is none."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ValueError("not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM text (PKCS#8 or PKCS#1, no passphrase); ValueError if it is none."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValueError("not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def read_key(value: str, path: str) -> str:
    """The PEM text given as a value, else read from path; '' when neither is set. OSError if unreadable."""
    if value:
        # Config vars often arrive with their newlines written as the two characters \n.
        return value.replace("\\n", "\n")
    if path:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    return ""


log = logging.getLogger("payapi.gateway")


class GatewayError(Exception):
    """Ping++ could not be reached, timed out, or refused the request.

    code: Ping++'s error code when it answered with one (e.g. "charge_paid"), else None.

    certain: Ping++ answered and refused (HTTP 4xx), or the call was never sent: it certainly did
    nothing. Otherwise (time-out, no connection, 5xx, a garbled or lost answer) it may have acted.
    """

    def __init__(self, message: str, code: str | None = None, certain: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.certain = certain


def call_seconds(timeout: float) -> float:
    """The longest one Ping++ call may take: the connect time-out, then the read time-out."""
    return 2 * timeout


@dataclasses.dataclass(frozen=True)
class ChargeRequest:
    order_no: str
    amount: int
    channel: str
    subject: str
    body: str
    client_ip: str
    currency: str = "cny"
    extra: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class ProviderCharge:
    id: str
    order_no: str
    amount: int
    currency: str
    paid: bool
    reversed: bool  # closed at Ping++: it can no longer be paid
    time_expire: int | None  # Unix seconds
    raw: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TransferRequest:
    order_no: str
    amount: int
    recipient: str
    recipient_name: str
    description: str
    currency: str = "cny"


@dataclasses.dataclass(frozen=True)
class ProviderTransfer:
    id: str
    order_no: str
    amount: int
    currency: str
    status: str  # scheduled, pending, paid, failed
    raw: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RefundRequest:
    refund_id: str  # ours: sent as metadata.refund_id, so a refund whose answer was lost can be found
    charge_id: str
    amount: int
    description: str


@dataclasses.dataclass(frozen=True)
class ProviderRefund:
    id: str
    charge_id: str
    charge_order_no: str | None  # Ping++ sends it with refund events; None when absent
    amount: int  # -1 when missing or not an integer
    currency: str | None  # None when absent
    status: str  # pending, succeeded, failed
    succeeded: bool
    metadata_refund_id: str | None  # our refund_id, for refunds payapi asked for
    raw: dict[str, Any]


class Gateway(Protocol):
    """What the services ask of the payment provider (PingppGateway; the tests' fakes speak to the
    real SDK through the sandbox). Small dataclasses in and out; GatewayError when it fails."""

    def create_charge(self, request: ChargeRequest) -> ProviderCharge: ...

    def retrieve_charge(self, charge_id: str) -> ProviderCharge: ...

    def reverse_charge(self, charge_id: str) -> ProviderCharge: ...

    def create_refund(self, request: RefundRequest) -> ProviderRefund: ...

    def retrieve_refund(self, charge_id: str, refund_id: str) -> ProviderRefund: ...

    def list_refunds(self, charge_id: str) -> list[ProviderRefund]: ...

    def list_charges(self, created_gte: int, created_lt: int) -> Iterator[ProviderCharge]: ...

    def list_transfers(self, created_gte: int, created_lt: int) -> Iterator[ProviderTransfer]: ...

    def create_transfer(self, request: TransferRequest) -> ProviderTransfer: ...

    def retrieve_transfer(self, transfer_id: str) -> ProviderTransfer: ...

    def webhook_is_authentic(self, raw_body: bytes, signature: str | None) -> bool: ...


T = TypeVar("T")


def _integer(raw: dict[str, Any], key: str, default: int | None) -> Any:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def charge_from(raw: dict[str, Any]) -> ProviderCharge:
    return ProviderCharge(
        id=str(raw.get("id", "")),
        order_no=str(raw.get("order_no", "")),
        amount=_integer(raw, "amount", -1),
        currency=str(raw.get("currency", "")),
        paid=raw.get("paid") is True,
        reversed=raw.get("reversed") is True,
        time_expire=_integer(raw, "time_expire", None),
        raw=raw,
    )


def transfer_from(raw: dict[str, Any]) -> ProviderTransfer:
    return ProviderTransfer(
        id=str(raw.get("id", "")),
        order_no=str(raw.get("order_no", "")),
        amount=_integer(raw, "amount", -1),
        currency=str(raw.get("currency", "")),
        status=str(raw.get("status", "")),
        raw=raw,
    )


def refund_from(raw: dict[str, Any]) -> ProviderRefund:
    order_no, currency = raw.get("charge_order_no"), raw.get("currency")
    status = raw.get("status")
    metadata = raw.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    ours = metadata.get("refund_id")
    return ProviderRefund(
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


def _plain(sdk_object: Any) -> Any:
    # PingppObject is a dict subclass; a JSON round trip leaves plain dicts and lists.
    return json.loads(json.dumps(sdk_object))


def _ping_message(exc: Exception) -> str:
    """What Ping++ said about a failed call: its error message, or what went wrong on the way.

    Never the request (it carries account ids and names) and never the response body.
    """
    body = getattr(exc, "json_body", None)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    if isinstance(exc, pingpp.error.APIConnectionError) and getattr(exc, "_message", None):
        # The SDK's text is a paragraph of advice, then "(Network error: <what requests said>)".
        text = str(exc._message)
        return (text[text.index("(Network error: ") :] if "(Network error: " in text else text.splitlines()[0])[:300]
    status = getattr(exc, "http_status", None)
    return f"HTTP {status}" if status else type(exc).__name__


class PingppGateway(Gateway):
    """The Gateway over the pingpp SDK."""

    def __init__(
        self,
        api_key: str,
        app_id: str,
        api_base: str = "",
        private_key: str = "",
        public_key: str = "",
        timeout: float = 5.0,
        private_key_path: str = "",
        public_key_path: str = "",
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.app_id = app_id
        self._api_key = api_key
        # Told of every failed call (the operators' health page shows Ping++'s last error); it never
        # raises into the call.
        self._on_error = on_error
        # The SDK keeps its configuration in module globals; one gateway per process sets them.
        if api_base:
            pingpp.api_base = api_base.rstrip("/")
        private_pem = read_key(private_key, private_key_path)
        if private_pem:
            load_private_key(private_pem)  # a broken key fails here, not on the first payout
        pingpp.private_key = private_pem or None
        pingpp.private_key_path = None
        # The SDK's defaults (30 s connect, 80 s read, a retry on 502) would hold a worker for
        # minutes; one bounded attempt, and the worker or the next report tries again later.
        pingpp.timeout = timeout
        pingpp.connect_timeout = timeout
        pingpp.max_network_retries = 0
        public_pem = read_key(public_key, public_key_path)
        self._public_key = load_public_key(public_pem) if public_pem else None
        if self._public_key is None:
            log.warning("no Ping++ public key (PINGPP_PUBLIC_KEY or PINGPP_PUBLIC_KEY_PATH): every webhook answers 401")

    def _call(self, what: str, ids: dict[str, Any], func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        fields = {"call": what, **ids}
        if not self._api_key:
            # Development only (production refuses to start without it); said on every call, so
            # a 920 is never a mystery.
            log.error("Ping++ %s not sent: PINGPP_API_KEY is not set", what, extra={"fields": fields})
            raise GatewayError("PINGPP_API_KEY is not set", certain=True)
        try:
            return _plain(func(*args, api_key=self._api_key, **kwargs))
        except (pingpp.error.PingppError, requests.RequestException, ValueError) as exc:
            message = _ping_message(exc) if isinstance(exc, pingpp.error.PingppError) else type(exc).__name__
            body = getattr(exc, "json_body", None)
            error = body.get("error") if isinstance(body, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            log.warning(
                "Ping++ %s failed: %s",
                what,
                message,
                extra={
                    "fields": {
                        **fields,
                        "error": type(exc).__name__,
                        "ping_message": message,
                        "ping_code": code,
                        "http_status": getattr(exc, "http_status", None),
                    }
                },
            )
            if self._on_error is not None:
                self._on_error(f"{what}: {message}" + (f" ({code})" if code else ""))
            status = getattr(exc, "http_status", None)
            refused = isinstance(exc, pingpp.error.PingppError) and isinstance(status, int) and 400 <= status < 500
            raise GatewayError(f"{what}: {type(exc).__name__}: {message}", code=code, certain=refused) from exc

    def create_charge(self, request: ChargeRequest) -> ProviderCharge:
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
        return charge_from(self._call("create charge", {"order_no": request.order_no}, pingpp.Charge.create, **params))

    def retrieve_charge(self, charge_id: str) -> ProviderCharge:
        return charge_from(self._call("retrieve charge", {"charge_id": charge_id}, pingpp.Charge.retrieve, charge_id))

    def reverse_charge(self, charge_id: str) -> ProviderCharge:
        """Close an unpaid charge so its credential can no longer take money (code charge_paid if paid)."""
        return charge_from(self._call("reverse charge", {"charge_id": charge_id}, pingpp.Charge.reverse, charge_id))

    def create_refund(self, request: RefundRequest) -> ProviderRefund:
        params = {
            "description": request.description,
            "amount": request.amount,
            "metadata": {"refund_id": request.refund_id},
        }
        return refund_from(
            self._call(
                "create refund",
                {"charge_id": request.charge_id, "refund_id": request.refund_id},
                pingpp.Charge.refund,
                request.charge_id,
                **params,
            )
        )

    def retrieve_refund(self, charge_id: str, refund_id: str) -> ProviderRefund:
        return refund_from(
            self._call(
                "retrieve refund",
                {"charge_id": charge_id, "pingpp_refund_id": refund_id},
                pingpp.Charge.retrieve_refund,
                charge_id,
                refund_id,
            )
        )

    def list_refunds(self, charge_id: str) -> list[ProviderRefund]:
        """Every refund of a charge, every page (Ping++ may page smaller than the 100 asked for)."""
        return list(
            self._pages(
                "list refunds",
                {"charge_id": charge_id},
                refund_from,
                lambda **params: pingpp.Charge.list_refunds(charge_id, **params),
                {},
            )
        )

    def _pages(
        self,
        what: str,
        ids: dict[str, Any],
        convert: Callable[[dict[str, Any]], T],
        list_call: Callable[..., Any],
        params: dict[str, Any],
    ) -> Iterator[T]:
        """Every object of a Ping++ list: page after page while it says `has_more`."""
        params = {**params, "limit": 100}
        while True:
            page = self._call(what, ids, list_call, **params)
            data = page.get("data") or []
            for raw in data:
                yield convert(raw)
            if not page.get("has_more") or not data:
                return
            params["starting_after"] = data[-1]["id"]

    def _each(
        self, what: str, resource: Any, created_gte: int, created_lt: int, convert: Callable[[dict[str, Any]], T]
    ) -> Iterator[T]:
        """Every object of a list created in [created_gte, created_lt) (Unix seconds)."""
        params = {"app": {"id": self.app_id}, "created": {"gte": created_gte, "lt": created_lt}}
        return self._pages(what, {"created_gte": created_gte, "created_lt": created_lt}, convert, resource.list, params)

    def list_charges(self, created_gte: int, created_lt: int) -> Iterator[ProviderCharge]:
        return self._each("list charges", pingpp.Charge, created_gte, created_lt, charge_from)

    def list_transfers(self, created_gte: int, created_lt: int) -> Iterator[ProviderTransfer]:
        return self._each("list transfers", pingpp.Transfer, created_gte, created_lt, transfer_from)

    def create_transfer(self, request: TransferRequest) -> ProviderTransfer:
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
        return transfer_from(
            self._call("create transfer", {"order_no": request.order_no}, pingpp.Transfer.create, **params)
        )

    def retrieve_transfer(self, transfer_id: str) -> ProviderTransfer:
        return transfer_from(
            self._call("retrieve transfer", {"transfer_id": transfer_id}, pingpp.Transfer.retrieve, transfer_id)
        )

    def webhook_is_authentic(self, raw_body: bytes, signature: str | None) -> bool:
        """RSA-SHA256 (PKCS#1 v1.5) over the raw body, base64 in X-Pingplusplus-Signature."""
        if self._public_key is None or not signature:
            return False
        try:
            self._public_key.verify(
                base64.b64decode(signature, validate=True), raw_body, padding.PKCS1v15(), hashes.SHA256()
            )
            return True
        except (InvalidSignature, ValueError, TypeError, binascii.Error):
            return False
