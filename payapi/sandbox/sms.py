"""A local Alibaba Cloud SMS and Tencent Cloud SMS, served beside the Ping++ sandbox.

It answers `SendSms` as the official SDKs call it, on the sandbox's own address:

- Aliyun (Dysmsapi 2017-05-25, alibabacloud-dysmsapi20170525): RPC style, `POST /?PhoneNumbers=..`
  with `x-acs-action: SendSms` and an `ACS3-HMAC-SHA256` Authorization header;
- Tencent (SMS 2021-01-11, tencentcloud-sdk-python-sms): `POST /` with a JSON body,
  `X-TC-Action: SendSms` and a `TC3-HMAC-SHA256` Authorization header.

Each request's signature is verified with the secret the sandbox holds for its key id, and a bad
one is refused as the provider refuses it (Aliyun `SignatureDoesNotMatch`, `IncompleteSignature`,
`InvalidAccessKeyId.NotFound`; Tencent `AuthFailure.SignatureFailure`, `AuthFailure.SecretIdNotFound`,
`AuthFailure.SignatureExpire`). Accepted messages are kept (the phone's inbox) and shown on the
sandbox page; faults play the providers' bad days: a per-number limit, an illegal number, a 500,
a hang, or any code of the provider's.

Controls: `GET /_sandbox/sms?phone=P` (messages, newest first), `GET /_sandbox/sms/last?phone=P`,
`POST /_sandbox/sms/faults {"provider": "aliyun"|"tencent"|"any", "kind": "limit"|"illegal"|"fail"|
"hang"|"code", "times": N, "seconds": S, "code": C}`. `python -m payapi sandbox sms --last PHONE`.

Imports nothing of payapi outside payapi/sandbox.
"""

import datetime
import hashlib
import hmac
import html
import json
import logging
import re
import threading
import time
import urllib.parse
import uuid

log = logging.getLogger("payapi.sandbox.sms")

ALIYUN, TENCENT = "aliyun", "tencent"
# The keys a development setup uses (payapi's dev.py gives the service the same); tests and
# `--aliyun-key`/`--tencent-key` add others.
DEV_ALIYUN_KEY = ("LTAI5tPayapiSandboxDev", "payapi-sandbox-aliyun-secret-not-a-real-one")
DEV_TENCENT_KEY = ("AKIDpayapiSandboxDev0000000000000000", "payapi-sandbox-tencent-secret-not-real")
FAULT_KINDS = ("limit", "illegal", "fail", "hang", "code")
ALIYUN_MAX_SKEW_S = 15 * 60
TENCENT_MAX_SKEW_S = 5 * 60
_MAINLAND = re.compile(r"1[3-9][0-9]{9}")


def _now():
    return time.time()


def _request_id():
    return str(uuid.uuid4()).upper()


class SmsSandbox:
    def __init__(self, aliyun_keys=None, tencent_keys=None):
        self.lock = threading.Lock()
        self.keys = {ALIYUN: dict([DEV_ALIYUN_KEY]), TENCENT: dict([DEV_TENCENT_KEY])}
        self.keys[ALIYUN].update(aliyun_keys or {})
        self.keys[TENCENT].update(tencent_keys or {})
        self.messages = []  # accepted: {"id", "provider", "phone", "sign_name", "template", "params", "code", ...}
        self.requests = []  # every SendSms that reached the sandbox: {"provider", "answer", "status", ...}
        self.faults = []  # {"provider", "kind", "seconds", "code"}
        self._nonces = {}

    # --- controls --------------------------------------------------------------------------------

    def add_key(self, provider, key_id, secret):
        with self.lock:
            self.keys[provider][key_id] = secret

    def fault_next(self, kind, provider="any", times=1, seconds=10.0, code="", message=""):
        """The next SendSms calls (to provider, or "any") answer with this fault instead of sending.

        kind code answers the provider's `code` (with `message`, e.g. Aliyun's limit's level).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if provider not in (ALIYUN, TENCENT, "any"):
            raise ValueError("provider must be aliyun, tencent or any")
        if kind == "code" and not code:
            raise ValueError("kind code needs the provider's code")
        with self.lock:
            self.faults.extend(
                {"provider": provider, "kind": kind, "seconds": float(seconds), "code": code, "message": message}
                for _ in range(times)
            )

    def reset(self):
        with self.lock:
            self.messages.clear()
            self.requests.clear()
            self.faults.clear()
            self._nonces.clear()

    def messages_to(self, phone=None):
        """Accepted messages, newest first; phone in any form (13800138000, +8613800138000)."""
        wanted = _national(phone) if phone else None
        with self.lock:
            return [m for m in reversed(self.messages) if wanted is None or _national(m["phone"]) == wanted]

    def last_code(self, phone):
        found = self.messages_to(phone)
        return found[0]["code"] if found else None

    def _take_fault(self, provider):
        with self.lock:
            for i, fault in enumerate(self.faults):
                if fault["provider"] in (provider, "any"):
                    return self.faults.pop(i)
        return None

    # --- HTTP ------------------------------------------------------------------------------------

    @staticmethod
    def handles(environ):
        return bool(
            environ.get("HTTP_X_ACS_ACTION")
            or environ.get("HTTP_X_TC_ACTION")
            or environ.get("PATH_INFO", "").startswith("/_sandbox/sms")
        )

    def __call__(self, environ, start_response):
        raw = read_request(environ)
        if environ.get("HTTP_X_ACS_ACTION"):
            status, headers, body = self._aliyun(environ, raw)
        elif environ.get("HTTP_X_TC_ACTION"):
            status, headers, body = self._tencent(environ, raw)
        else:
            return self._control(environ, raw, start_response)
        start_response(f"{status} {'OK' if status == 200 else 'Error'}", [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def _record(self, provider, phone, status, code, request_id):
        with self.lock:
            self.requests.append(
                {
                    "provider": provider,
                    "phone": phone,
                    "status": status,
                    "answer": code,
                    "request_id": request_id,
                    "at": _now(),
                }
            )
        log.info(
            "SMS sandbox %s SendSms to %s -> %s %s",
            provider,
            phone,
            status,
            code,
            extra={"fields": {"provider": provider, "status": status, "answer": code}},
        )

    def _fault(self, provider, phone, request_id):
        """-> (kind, provider code) of a scripted fault, sleeping first for a hang; None for none."""
        fault = self._take_fault(provider)
        if fault is None:
            return None
        if fault["kind"] == "hang":  # recorded now: the answer comes long after the caller gave up
            self._record(provider, phone, "hang", f"hung {fault['seconds']:g} s", request_id)
            time.sleep(fault["seconds"])
        return fault

    def _keep(self, provider, phone, sign_name, template, params, code, request_id, message_id):
        message = {
            "id": message_id,
            "provider": provider,
            "phone": phone,
            "sign_name": sign_name,
            "template": template,
            "params": params,
            "code": code,
            "request_id": request_id,
            "received_at": _now(),
            "text": f"【{sign_name}】{template} {json.dumps(params, ensure_ascii=False)}",
        }
        with self.lock:
            self.messages.append(message)
        # The sandbox is the phone: showing the code in its own log is the point.
        log.warning(
            "[sms via %s to %s] 【%s】验证码 %s",
            provider,
            phone,
            sign_name,
            code,
            extra={"fields": {"provider": provider, "template": template}},
        )
        return message

    # --- Aliyun ----------------------------------------------------------------------------------

    def _aliyun(self, environ, raw):
        request_id = _request_id()
        query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded") and raw:
            query.update(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        phone = query.get("PhoneNumbers", "")

        def answer(http_status, code, message, record=True, **extra):
            if record:
                self._record(ALIYUN, phone, http_status, code, request_id)
            body = {"RequestId": request_id, "Code": code, "Message": message, **extra}
            if http_status != 200:
                body["HostId"] = environ.get("HTTP_HOST", "")
            return http_status, [("Content-Type", "application/json;charset=utf-8")], _json(body)

        refused = self._aliyun_signature(environ, raw)
        if refused:
            return answer(*refused)
        action = environ.get("HTTP_X_ACS_ACTION")
        if action != "SendSms" or environ.get("HTTP_X_ACS_VERSION") != "2017-05-25":
            return answer(
                400,
                "InvalidAction.NotFound",
                f"Specified api is not found, please check your url and method. ({action})",
            )
        fault = self._fault(ALIYUN, phone, request_id)
        if fault:
            kind = fault["kind"]
            if kind == "limit":
                return answer(200, "isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")
            if kind == "illegal":
                return answer(200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
            if kind == "code":
                return answer(200, fault["code"], fault["message"] or "sandbox: scripted answer")
            if kind == "fail":
                return answer(500, "InternalError", "The request processing has failed due to some unknown error.")
            return answer(503, "ServiceUnavailable", "sandbox: hung", record=False)  # a hang, answered after it
        sign_name, template = query.get("SignName", ""), query.get("TemplateCode", "")
        if not re.fullmatch(r"(\+?86|0086)?1[3-9][0-9]{9}|(\+|00)?[2-9][0-9]{7,14}", phone):
            return answer(200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if not sign_name:
            return answer(200, "isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        if not re.fullmatch(r"SMS_[0-9]+", template):
            return answer(200, "isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            params = json.loads(query.get("TemplateParam") or "{}")
            if not isinstance(params, dict):
                raise ValueError
        except ValueError:
            return answer(200, "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        biz_id = f"{int(_now() * 1000)}^{uuid.uuid4().int % 10**10}"
        self._keep(ALIYUN, phone, sign_name, template, params, str(params.get("code", "")), request_id, biz_id)
        return answer(200, "OK", "OK", BizId=biz_id)

    def _aliyun_signature(self, environ, raw):
        """None if the ACS3-HMAC-SHA256 signature verifies, else (status, code, message)."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        match = re.fullmatch(r"ACS3-HMAC-SHA256 Credential=([^,]*),SignedHeaders=([^,]*),Signature=([0-9a-f]+)", auth)
        if not match:
            return 400, "IncompleteSignature", "The request signature does not conform to Aliyun standards."
        key_id, signed, signature = match.groups()
        with self.lock:
            secret = self.keys[ALIYUN].get(key_id)
        if secret is None:
            return 404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
        headers = _headers(environ)
        names = signed.split(";")
        required = {"host"} | {name for name in headers if name.startswith("x-acs-")}
        if names != sorted(names) or not required <= set(names) or any(name not in headers for name in names):
            return 400, "IncompleteSignature", "The request signature does not conform to Aliyun standards."
        if headers.get("x-acs-content-sha256") != hashlib.sha256(raw).hexdigest():
            return 400, "SignatureDoesNotMatch", "The request body does not match x-acs-content-sha256."
        try:
            stamp = datetime.datetime.strptime(headers.get("x-acs-date", ""), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return 400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
        if abs(stamp.replace(tzinfo=datetime.UTC).timestamp() - _now()) > ALIYUN_MAX_SKEW_S:
            return 400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
        query = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        canonical_query = "&".join(f"{k}={urllib.parse.quote(v, safe='~')}" for k, v in sorted(query))
        canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in names)
        canonical = "\n".join(
            [
                environ["REQUEST_METHOD"],
                urllib.parse.quote(environ.get("PATH_INFO") or "/", safe="/~"),
                canonical_query,
                canonical_headers,
                signed,
                headers["x-acs-content-sha256"],
            ]
        )
        to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
        expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return (
                400,
                "SignatureDoesNotMatch",
                f"Specified signature is not matched with our calculation. server string to sign is:{to_sign}",
            )
        nonce = headers.get("x-acs-signature-nonce", "")
        with self.lock:
            seen = self._nonces.get(nonce)
            self._nonces = {n: t for n, t in self._nonces.items() if _now() - t < ALIYUN_MAX_SKEW_S}
            if not nonce or seen is not None:
                return 400, "SignatureNonceUsed", "Specified signature nonce was used already."
            self._nonces[nonce] = _now()
        return None

    # --- Tencent ---------------------------------------------------------------------------------

    def _tencent(self, environ, raw):
        request_id = str(uuid.uuid4())
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            body = {}
        phones = body.get("PhoneNumberSet") or []
        phone = phones[0] if phones and isinstance(phones[0], str) else ""

        def error(code, message, http_status=200, record=True):
            if record:
                self._record(TENCENT, phone, http_status, code, request_id)
            return (
                http_status,
                [("Content-Type", "application/json")],
                _json({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}}),
            )

        def status(code, message, fee=0):
            self._record(TENCENT, phone, 200, code, request_id)
            serial = f"2433:{uuid.uuid4().int % 10**28}" if code == "Ok" else ""
            entry = {
                "SerialNo": serial,
                "PhoneNumber": phone,
                "Fee": fee,
                "SessionContext": "",
                "Code": code,
                "Message": message,
                "IsoCode": "CN" if phone.startswith("+86") else "DEF",
            }
            return serial, (
                200,
                [("Content-Type", "application/json")],
                _json({"Response": {"SendStatusSet": [entry], "RequestId": request_id}}),
            )

        refused = self._tencent_signature(environ, raw)
        if refused:
            return error(*refused)
        action = environ.get("HTTP_X_TC_ACTION")
        if action != "SendSms" or environ.get("HTTP_X_TC_VERSION") != "2021-01-11":
            return error("InvalidAction", f"The action {action} is not supported in this version.")
        fault = self._fault(TENCENT, phone, request_id)
        if fault:
            kind = fault["kind"]
            if kind == "limit":
                return status(
                    "LimitExceeded.PhoneNumberThirtySecondLimit", "单个手机号30秒内下发短信条数超过设定的上限"
                )[1]
            if kind == "illegal":
                return status("InvalidParameterValue.IncorrectPhoneNumber", "手机号格式错误")[1]
            if kind == "code":
                return status(fault["code"], fault["message"] or "sandbox: scripted answer")[1]
            if kind == "fail":
                self._record(TENCENT, phone, 500, "InternalError", request_id)
                return 500, [("Content-Type", "text/plain")], b"Internal Server Error"
            return error("InternalError.Timeout", "sandbox: hung", record=False)
        if len(phones) != 1 or not isinstance(phone, str):
            return error("InvalidParameterValue.IncorrectPhoneNumber", "手机号格式错误")
        if (
            not re.fullmatch(r"\+861[3-9][0-9]{9}|\+[1-9][0-9]{7,14}", phone)
            or phone.startswith("+86")
            and not _MAINLAND.fullmatch(phone[3:])
        ):
            return status("InvalidParameterValue.IncorrectPhoneNumber", "手机号格式错误")[1]
        if not re.fullmatch(r"14[0-9]{8}", str(body.get("SmsSdkAppId", ""))):
            return error("InvalidParameterValue.SdkAppIdNotExist", "SdkAppId不存在")
        if not body.get("SignName"):
            return error("FailedOperation.SignatureIncorrectOrUnapproved", "签名未审批或格式错误")
        if not re.fullmatch(r"[0-9]+", str(body.get("TemplateId", ""))):
            return error("FailedOperation.TemplateIncorrectOrUnapproved", "模板未审批或内容不匹配")
        params = body.get("TemplateParamSet") or []
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return error("InvalidParameterValue.TemplateParameterFormatError", "验证码模板参数格式错误")
        serial, answer = status("Ok", "send success", fee=1)
        self._keep(
            TENCENT,
            phone,
            body["SignName"],
            str(body["TemplateId"]),
            params,
            params[0] if params else "",
            request_id,
            serial,
        )
        return answer

    def _tencent_signature(self, environ, raw):
        """None if the TC3-HMAC-SHA256 signature verifies, else (code, message) as Tencent answers."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        match = re.fullmatch(
            r"TC3-HMAC-SHA256 Credential=([^/]*)/([0-9]{4}-[0-9]{2}-[0-9]{2})/([a-z]+)/tc3_request, "
            r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
            auth,
        )
        if not match:
            return "AuthFailure.InvalidAuthorization", "Authorization header format error."
        secret_id, date, service, signed, signature = match.groups()
        with self.lock:
            secret = self.keys[TENCENT].get(secret_id)
        if secret is None:
            return (
                "AuthFailure.SecretIdNotFound",
                "The SecretId is not found, please ensure that your SecretId is correct.",
            )
        headers = _headers(environ)
        try:
            timestamp = int(headers.get("x-tc-timestamp", ""))
        except ValueError:
            return "AuthFailure.InvalidAuthorization", "X-TC-Timestamp is missing or not a number."
        if abs(timestamp - _now()) > TENCENT_MAX_SKEW_S:
            return (
                "AuthFailure.SignatureExpire",
                "Signature expired. Timestamp and server time cannot differ by more than 5 minutes.",
            )
        names = signed.split(";")
        if service != "sms" or not {"content-type", "host"} <= set(names) or any(n not in headers for n in names):
            return (
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. Please check your signature is correct.",
            )
        if date != datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d"):
            return (
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. Please check your signature is correct.",
            )
        canonical = "\n".join(
            [
                environ["REQUEST_METHOD"],
                environ.get("PATH_INFO") or "/",
                environ.get("QUERY_STRING", ""),
                "".join(
                    f"{n}:{headers[n].strip().lower() if n == 'content-type' else headers[n].strip()}\n" for n in names
                ),
                signed,
                hashlib.sha256(raw).hexdigest(),
            ]
        )
        to_sign = "\n".join(
            [
                "TC3-HMAC-SHA256",
                str(timestamp),
                f"{date}/{service}/tc3_request",
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )

        def mac(key, text):
            return hmac.new(key, text.encode(), hashlib.sha256).digest()

        key = mac(mac(mac(("TC3" + secret).encode(), date), service), "tc3_request")
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return (
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. Please check your signature is correct.",
            )
        return None

    # --- controls over HTTP ----------------------------------------------------------------------

    def _control(self, environ, raw, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        form = environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded")
        status, answer = 200, {}
        try:
            if method == "GET" and path in ("/_sandbox/sms", "/_sandbox/sms/"):
                answer = {"messages": self.messages_to(query.get("phone"))}
            elif method == "GET" and path == "/_sandbox/sms/last":
                found = self.messages_to(query.get("phone") or None)
                if not found:
                    status, answer = (
                        404,
                        {"error": {"message": f"no SMS to {query.get('phone', 'anyone')} in the sandbox"}},
                    )
                else:
                    answer = {"message": found[0]}
            elif method == "POST" and path == "/_sandbox/sms/faults":
                params = dict(urllib.parse.parse_qsl(raw.decode("utf-8"))) if form else json.loads(raw or b"{}")
                times = int(params.get("times") or 1)
                if not 1 <= times <= 1000:
                    raise ValueError("times must be 1 to 1000")
                self.fault_next(
                    params.get("kind"),
                    params.get("provider") or "any",
                    times,
                    float(params.get("seconds") or 10),
                    params.get("code") or "",
                    params.get("message") or "",
                )
                answer = {
                    "faults": list(self.faults),
                    "message": f"the next {times} SendSms call(s) to {params.get('provider') or 'any'}: {params.get('kind')}",
                }
            else:
                status, answer = 404, {"error": {"message": f"no sandbox control {method} {path}"}}
        except (ValueError, TypeError, AttributeError) as exc:
            status, answer = 400, {"error": {"message": str(exc)}}
        if form:
            message = (
                answer.get("message")
                if isinstance(answer.get("message"), str)
                else answer.get("error", {}).get("message", "")
            )
            start_response(
                "303 See Other",
                [("Location", "/_sandbox/?" + urllib.parse.urlencode({"msg": message})), ("Content-Length", "0")],
            )
            return [b""]
        body = _json(answer)
        start_response(
            f"{status} {'OK' if status == 200 else 'Error'}",
            [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    # --- the page's section ----------------------------------------------------------------------

    def render(self):
        e = html.escape
        with self.lock:
            messages = list(reversed(self.messages))[:50]
            waiting = [f"{f['provider']}:{f['kind']}" for f in self.faults]
        rows = "".join(
            f"<tr><td>{e(m['provider'])}</td><td><code>{e(m['phone'])}</code></td><td><b>{e(m['code'])}</b></td>"
            f"<td>{e(m['sign_name'])}</td><td><code>{e(m['template'])}</code></td>"
            f"<td>{e(datetime.datetime.fromtimestamp(m['received_at'], datetime.UTC).strftime('%Y-%m-%d %H:%M:%S'))}</td>"
            f"<td><code>{e(m['request_id'])}</code></td></tr>"
            for m in messages
        )
        table = (
            f"<table><tr><th>provider</th><th>phone</th><th>code</th><th>sign name</th><th>template</th>"
            f"<th>received (UTC)</th><th>request id</th></tr>{rows}</table>"
            if rows
            else '<p class="muted">No SMS yet.</p>'
        )
        options = "".join(f'<option value="{k}">{k}</option>' for k in ("limit", "illegal", "fail", "hang"))
        form = (
            '<form method="post" action="/_sandbox/sms/faults"><fieldset><legend>SMS faults: the next SendSms calls</legend>'
            '<select name="provider"><option value="any">any provider</option><option value="aliyun">aliyun</option>'
            f'<option value="tencent">tencent</option></select> <select name="kind">{options}</select>'
            ' times <input name="times" value="1" size="3"> seconds (hang) <input name="seconds" value="10" size="4">'
            f' <button>add</button><br><span class="muted">waiting: {e(", ".join(waiting) or "none")}</span>'
            "</fieldset></form>"
        )
        return (
            f'<h2>SMS <span class="muted">(Alibaba Cloud and Tencent Cloud SendSms; newest 50; '
            f'<a href="/_sandbox/sms">as JSON</a>)</span></h2>{form}{table}'
        )


def _national(phone):
    """A number as 13800138000 for a mainland one (any prefix), else its digits with the country code."""
    digits = re.sub(r"[^0-9]", "", phone or "")
    if phone and phone.startswith("00"):
        digits = digits[2:]
    if len(digits) == 13 and digits.startswith("86") and _MAINLAND.fullmatch(digits[2:]):
        return digits[2:]
    return digits


def _headers(environ):
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    return headers


def _json(body):
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def read_request(environ):
    """A WSGI request's body: its Content-Length bytes (the Ping++ and the SMS sandbox both read so)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length > 0 else b""
