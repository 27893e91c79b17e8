"""SMS providers: Alibaba Cloud SMS and Tencent Cloud SMS through their official SDKs, with fail-over.

Each provider's `send` returns an `Outcome` and never raises for what the provider answered:

- ACCEPTED: the provider took the message (the code is on its way);
- LIMITED: the provider's own per-number limit (Aliyun `isv.BUSINESS_LIMIT_CONTROL`, Tencent
  `LimitExceeded.PhoneNumber*`): 906 with `retry_after`, no other provider is asked (the limit is
  there to protect the phone's owner);
- REFUSED: the provider says the number cannot get an SMS (invalid, unsupported region, opted
  out): 910;
- FAILED: anything else (5xx, a time-out, a refused signature, an exhausted account, a template
  the console did not approve): the next provider in SMS_BACKEND is asked, else 920.

The SDKs are imported here only, when a provider backend is built (a worker building its app), so
that a process with SMS_BACKEND=file never loads them and no phone waits for the import.
Time-outs are short (a phone is waiting) and neither SDK retries. Nothing here logs the code, a
secret or a request URL (the Aliyun SDK puts the code in the query string, and exceptions from
requests quote the URL): the log has the provider, its answer's code and its request id.
"""

import dataclasses
import json
import logging
import re
import threading
import time
import urllib.parse

from payapi.domain.clock import next_day_start, now_ms

log = logging.getLogger("payapi.sms")

ACCEPTED, LIMITED, REFUSED, FAILED = "accepted", "limited", "refused", "failed"
CONNECT_TIMEOUT = 2.0  # seconds
READ_TIMEOUT = 3.0
ALIYUN, TENCENT = "aliyun", "tencent"
PROVIDERS = (ALIYUN, TENCENT)
DEFAULT_ALIYUN_ENDPOINT = "dysmsapi.aliyuncs.com"
DEFAULT_TENCENT_ENDPOINT = "sms.tencentcloudapi.com"
DEFAULT_TENCENT_REGION = "ap-guangzhou"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# The settings each provider needs, by environment variable and Settings field.
REQUIRED = {
    ALIYUN: (
        ("ALIYUN_ACCESS_KEY_ID", "aliyun_access_key_id"),
        ("ALIYUN_ACCESS_KEY_SECRET", "aliyun_access_key_secret"),
        ("ALIYUN_SMS_SIGN_NAME", "aliyun_sms_sign_name"),
        ("ALIYUN_SMS_TEMPLATE_CODE", "aliyun_sms_template_code"),
    ),
    TENCENT: (
        ("TENCENT_SECRET_ID", "tencent_secret_id"),
        ("TENCENT_SECRET_KEY", "tencent_secret_key"),
        ("TENCENT_SMS_SDK_APP_ID", "tencent_sms_sdk_app_id"),
        ("TENCENT_SMS_SIGN_NAME", "tencent_sms_sign_name"),
        ("TENCENT_SMS_TEMPLATE_ID", "tencent_sms_template_id"),
    ),
}
ENDPOINT_SETTING = {
    ALIYUN: ("ALIYUN_SMS_ENDPOINT", "aliyun_sms_endpoint"),
    TENCENT: ("TENCENT_SMS_ENDPOINT", "tencent_sms_endpoint"),
}


@dataclasses.dataclass
class Outcome:
    provider: str
    status: str
    code: str = ""  # the provider's own answer code ("OK", "isv.BUSINESS_LIMIT_CONTROL", "timeout" ...)
    request_id: str = ""
    retry_after_ms: int = 0
    elapsed_ms: int = 0

    @property
    def accepted(self):
        return self.status == ACCEPTED


# --- endpoints and numbers -----------------------------------------------------------------------


def parse_endpoint(value):
    """-> (scheme, host[:port]) from a host (HTTPS) or an http(s)://host[:port] URL; ValueError if neither."""
    value = value.strip()
    if "://" in value:
        url = urllib.parse.urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/") or url.query:
            raise ValueError(f"{value!r} is neither a host nor an http(s)://host[:port] URL")
        try:
            url.port  # noqa: B018 - raises for a port that is not a number
        except ValueError:
            raise ValueError(f"{value!r} has a port that is not a number") from None
        return url.scheme, url.netloc
    if not value or not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", value):
        raise ValueError(f"{value!r} is neither a host nor an http(s)://host[:port] URL")
    return "https", value


def is_loopback(netloc):
    host = urllib.parse.urlsplit(f"//{netloc}").hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def e164(phone):
    """The token's phone as +<country><number>: a bare number is a mainland China number (+86)."""
    if phone.startswith("+"):
        return phone
    if phone.startswith("00"):
        return "+" + phone[2:]
    return "+86" + phone


def aliyun_number(phone):
    """Aliyun: mainland numbers as the 11 digits, others as country code + number without '+'."""
    number = e164(phone)
    return number[3:] if number.startswith("+86") else number[1:]


def mask(phone):
    """138****8000: enough to tell numbers apart in a log, not enough to text one."""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"


def _until_midnight(tz):
    now = now_ms()
    return next_day_start(now, tz) - now


# --- Alibaba Cloud -------------------------------------------------------------------------------

ALIYUN_LIMIT = "isv.BUSINESS_LIMIT_CONTROL"
ALIYUN_REFUSED = {"isv.MOBILE_NUMBER_ILLEGAL"}


class AliyunSms:
    """Dysmsapi 2017-05-25 SendSms, signed ACS3-HMAC-SHA256 by alibabacloud-dysmsapi20170525."""

    name = ALIYUN

    def __init__(self, settings, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT):
        self.settings = settings
        self.scheme, self.host = parse_endpoint(settings.aliyun_sms_endpoint or DEFAULT_ALIYUN_ENDPOINT)
        self.timeouts = (connect_timeout, read_timeout)
        self._client = None
        self._lock = threading.Lock()
        # Made now, when the worker builds its app: importing the Aliyun SDK takes 0.5-1 s (aiohttp,
        # APScheduler), which the first phone waiting for a code should not pay.
        _build_early(self)

    def client(self):
        with self._lock:
            if self._client is None:
                from alibabacloud_dysmsapi20170525.client import Client
                from alibabacloud_tea_openapi.utils_models import Config

                s = self.settings
                self._client = Client(
                    Config(
                        access_key_id=s.aliyun_access_key_id,
                        access_key_secret=s.aliyun_access_key_secret,
                        endpoint=self.host,
                        protocol=self.scheme,
                        connect_timeout=int(self.timeouts[0] * 1000),
                        read_timeout=int(self.timeouts[1] * 1000),
                    )
                )
            return self._client

    def send(self, phone, code, purpose, text):
        from alibabacloud_dysmsapi20170525.models import SendSmsRequest
        from darabonba.runtime import RuntimeOptions

        started = time.monotonic()
        outcome = Outcome(self.name, FAILED)
        try:
            request = SendSmsRequest(
                phone_numbers=aliyun_number(phone),
                sign_name=self.settings.aliyun_sms_sign_name,
                template_code=self.settings.aliyun_sms_template_code,
                template_param=json.dumps({"code": code}, separators=(",", ":")),
            )
            # RuntimeOptions() has no retry options: the SDK makes exactly one attempt.
            body = self.client().send_sms_with_options(request, RuntimeOptions()).body
            outcome.code, outcome.request_id = body.code or "", body.request_id or ""
            if outcome.code == "OK":
                outcome.status = ACCEPTED
            elif outcome.code == ALIYUN_LIMIT:
                outcome.status, outcome.retry_after_ms = LIMITED, self._limit_ms(body.message or "")
            elif outcome.code in ALIYUN_REFUSED:
                outcome.status = REFUSED
        except Exception as exc:  # noqa: BLE001 - every failure is the same to the caller: try the next one
            outcome.code, outcome.request_id = _failure_of(exc)
        outcome.elapsed_ms = int((time.monotonic() - started) * 1000)
        return outcome

    def _limit_ms(self, message):
        # "触发分钟级流控Permits:1", "触发小时级流控Permits:5", "触发天级流控Permits:10"
        if "天级" in message:
            return _until_midnight(self.settings.tz)
        if "小时级" in message:
            return 3600 * 1000
        return 60 * 1000


# --- Tencent Cloud -------------------------------------------------------------------------------

# The per-number limits; other LimitExceeded.* codes are the whole application's quotas
# (LimitExceeded.AppDailyLimit ...) or a malformed request: not this user's doing, so fail over.
TENCENT_LIMITS = {
    "LimitExceeded.PhoneNumberThirtySecondLimit": 30 * 1000,
    "LimitExceeded.PhoneNumberOneHourLimit": 3600 * 1000,
    "LimitExceeded.PhoneNumberDailyLimit": None,  # until midnight
    "LimitExceeded.PhoneNumberSameContentDailyLimit": None,
    "LimitExceeded.DeliveryFrequencyLimit": 60 * 1000,
}
TENCENT_REFUSED = {
    "InvalidParameterValue.IncorrectPhoneNumber",
    "UnsupportedOperation.UnsupportedRegion",
    "FailedOperation.PhoneNumberInBlacklist",
}


class TencentSms:
    """SMS 2021-01-11 SendSms, signed TC3-HMAC-SHA256 by tencentcloud-sdk-python-sms."""

    name = TENCENT

    def __init__(self, settings, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT):
        self.settings = settings
        self.scheme, self.host = parse_endpoint(settings.tencent_sms_endpoint or DEFAULT_TENCENT_ENDPOINT)
        self.timeouts = (connect_timeout, read_timeout)
        self._client = None
        self._lock = threading.Lock()
        _build_early(self)

    def client(self):
        with self._lock:
            if self._client is None:
                from tencentcloud.common import credential
                from tencentcloud.common.profile.client_profile import ClientProfile
                from tencentcloud.common.profile.http_profile import HttpProfile
                from tencentcloud.sms.v20210111.sms_client import SmsClient

                # The SDK's debug lines hold the request body (the code): they never reach our handlers.
                logging.getLogger("tencentcloud_sdk_common").propagate = False
                s = self.settings
                # reqTimeout goes to requests as it is: (connect, read) as for requests itself.
                http = HttpProfile(protocol=self.scheme, endpoint=self.host, reqTimeout=self.timeouts)
                self._client = SmsClient(
                    credential.Credential(s.tencent_secret_id, s.tencent_secret_key),
                    s.tencent_sms_region or DEFAULT_TENCENT_REGION,
                    ClientProfile(signMethod="TC3-HMAC-SHA256", httpProfile=http),  # no retryer: one attempt
                )
            return self._client

    def send(self, phone, code, purpose, text):
        from tencentcloud.sms.v20210111.models import SendSmsRequest

        started = time.monotonic()
        outcome = Outcome(self.name, FAILED)
        try:
            request = SendSmsRequest()
            request.PhoneNumberSet = [e164(phone)]
            request.SmsSdkAppId = self.settings.tencent_sms_sdk_app_id
            request.SignName = self.settings.tencent_sms_sign_name
            request.TemplateId = self.settings.tencent_sms_template_id
            request.TemplateParamSet = [code]
            answer = self.client().SendSms(request)
            outcome.request_id = answer.RequestId or ""
            status = (answer.SendStatusSet or [None])[0]
            outcome.code = (status.Code if status else "") or "NoSendStatus"
            self._judge(outcome)
        except Exception as exc:  # noqa: BLE001
            outcome.code, outcome.request_id = _failure_of(exc)
            self._judge(outcome)
        outcome.elapsed_ms = int((time.monotonic() - started) * 1000)
        return outcome

    def _judge(self, outcome):
        if outcome.code == "Ok":
            outcome.status = ACCEPTED
        elif outcome.code in TENCENT_LIMITS:
            wait = TENCENT_LIMITS[outcome.code]
            outcome.status = LIMITED
            outcome.retry_after_ms = _until_midnight(self.settings.tz) if wait is None else wait
        elif outcome.code in TENCENT_REFUSED:
            outcome.status = REFUSED
        else:
            outcome.status = FAILED


def _build_early(provider):
    try:
        provider.client()
    except Exception:  # noqa: BLE001 - e.g. an empty key in development: each send then fails (and says why)
        pass


def _failure_of(exc):
    """(code, request id) of an SDK exception, without its message (it may quote the request)."""
    code = getattr(exc, "code", None)
    if not isinstance(code, str) or not code or code == "None":
        inner = getattr(exc, "inner_exception", None) or exc
        detail = f"{type(inner).__name__} {getattr(inner, 'message', '')} {inner}".lower()
        code = (
            "timeout"
            if "timeout" in detail or "timed out" in detail
            else "connection_error"
            if "connection" in detail
            else type(inner).__name__
        )
    if code in ("ClientNetworkError", "ServerNetworkError"):  # Tencent's wrappers
        detail = str(getattr(exc, "message", ""))
        code = f"{code}:timeout" if "timed out" in detail.lower() else code
    request_id = getattr(exc, "request_id", None) or getattr(exc, "requestId", None) or ""
    return code, str(request_id) if request_id != "None" else ""


# --- fail-over -----------------------------------------------------------------------------------


class ProviderChain:
    """The providers of SMS_BACKEND in order: the first that does not fail decides."""

    def __init__(self, providers):
        self.providers = list(providers)

    def send(self, phone, code, purpose, text):
        outcome = None
        for i, provider in enumerate(self.providers):
            outcome = provider.send(phone, code, purpose, text)
            more = outcome.status == FAILED and i + 1 < len(self.providers)
            level = logging.WARNING if outcome.status == FAILED else logging.INFO
            log.log(
                level,
                "SMS %s via %s: %s%s",
                purpose,
                provider.name,
                outcome.status,
                " (trying the next provider)" if more else "",
                extra={
                    "fields": {
                        "provider": provider.name,
                        "outcome": outcome.status,
                        "provider_code": outcome.code,
                        "provider_request_id": outcome.request_id,
                        "phone": mask(phone),
                        "purpose": purpose,
                        "elapsed_ms": outcome.elapsed_ms,
                    }
                },
            )
            if outcome.status != FAILED:
                return outcome
        return outcome


def backend_names(value):
    """SMS_BACKEND as a list of names: 'console', 'file', or providers in fail-over order."""
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def make_chain(settings, names, **timeouts):
    kinds = {ALIYUN: AliyunSms, TENCENT: TencentSms}
    return ProviderChain(kinds[name](settings, **timeouts) for name in names)
