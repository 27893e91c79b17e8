"""SMS verification codes: sending (rate-limited), storing (hashed) and using them (once)."""

import datetime
import hashlib
import hmac
import json
import logging
import secrets
import threading

from payapi.contract.errors import NOT_ALLOWED, PROVIDER_FAILED, SECRET_REJECTED, ApiError, locked
from payapi.domain.clock import UTC, day_start, next_day_start, now_ms
from payapi.infra.db import for_update, lock_row, transaction
from payapi.infra.models import Profile, SmsCode
from payapi.users.sms_providers import LIMITED, REFUSED, backend_names, make_chain

log = logging.getLogger("payapi.sms")

WITHDRAW_INFO = "withdrawInfo"
PURPOSES = (WITHDRAW_INFO,)
CODE_TTL_MS = 5 * 60 * 1000
MAX_TRIES = 5
MIN_INTERVAL_MS = 60 * 1000
MAX_PER_DAY = 10

TEMPLATES = {WITHDRAW_INFO: "您正在设置提现账户，验证码 {code}，5 分钟内有效。如非本人操作请忽略。"}


# --- backends: anything with send(phone, code, purpose, text) ------------------------------
#
# send returns None (console, file: done) or an sms_providers.Outcome (the providers' answer).


class ConsoleSms:
    """Development backend: the message as a log line (every line a process writes is JSON).

    It shows the code, which is why production refuses SMS_BACKEND=console.
    """

    def send(self, phone, code, purpose, text):
        logging.getLogger("payapi.sms.console").warning(
            "[sms to %s] %s", phone, text, extra={"fields": {"phone": phone, "purpose": purpose}}
        )


class FileSms:
    """Appends one JSON line per message to a file: for tests and staging."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()

    def send(self, phone, code, purpose, text):
        sent_at = datetime.datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = json.dumps(
            {"phone": phone, "code": code, "purpose": purpose, "text": text, "sent_at": sent_at},
            ensure_ascii=False,
        )
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def make_backend(settings, **timeouts):
    names = backend_names(settings.sms_backend)
    if names == ["console"]:
        return ConsoleSms()
    if names == ["file"]:
        return FileSms(settings.sms_file)
    if names and all(name in ("aliyun", "tencent") for name in names):
        return make_chain(settings, names, **timeouts)  # aliyun, tencent or both in fail-over order
    raise ValueError(f"unknown SMS_BACKEND {settings.sms_backend!r}")


# --- codes ---------------------------------------------------------------------------------


def _code_hash(settings, user_id, purpose, phone, code):
    # Keyed: a 6-digit code under a plain hash would fall to a million guesses offline.
    key = hashlib.sha256(b"payapi-sms-code:" + settings.auth_secrets[0].encode()).digest()
    message = f"{user_id}:{purpose}:{phone}:{code}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@transaction
def _issue(settings, user_id, phone, purpose):
    now = now_ms()
    # The profile row is this user's lock: parallel requests are counted one after the other.
    lock_row(Profile, {"created_at": now, "updated_at": now}, user_id=user_id)
    tz = settings.tz
    mine = SmsCode.select().where(SmsCode.user_id == user_id)
    last = mine.order_by(SmsCode.created_at.desc()).first()
    if last and now - last.created_at < MIN_INTERVAL_MS:
        raise locked(last.created_at + MIN_INTERVAL_MS - now, "验证码发送太频繁，请稍后再试")
    if mine.where(SmsCode.created_at >= day_start(now, tz)).count() >= MAX_PER_DAY:
        raise locked(next_day_start(now, tz) - now, "今天的验证码发送次数已用完")
    code = f"{secrets.randbelow(10**6):06d}"
    row = SmsCode.create(
        user_id=user_id,
        purpose=purpose,
        phone=phone,
        code_hash=_code_hash(settings, user_id, purpose, phone, code),
        created_at=now,
        expires_at=now + CODE_TTL_MS,
    )
    return code, row.id


def require_phone(phone):
    """910 unless the token carried a usable phone (auth.usable_phone: an unusable claim is None)."""
    if not phone:
        raise ApiError(NOT_ALLOWED, "账号未绑定可用的手机号")


@transaction
def _withdraw(row_id):
    SmsCode.delete().where(SmsCode.id == row_id).execute()


def send_code(settings, backend, user_id, phone, purpose):
    """Send a new code; only a code a provider accepted stays (and counts toward the user's limits).

    The code is written first, in the transaction that checks the limits, so parallel requests
    are counted; the provider is called after that transaction, holding no lock. A code that no
    provider accepted is deleted again: it is not the latest code, and it costs no quota.
    """
    require_phone(phone)
    code, row_id = _issue(settings, user_id, phone, purpose)
    try:
        outcome = backend.send(phone, code, purpose, TEMPLATES[purpose].format(code=code))
    except Exception:  # noqa: BLE001 - a backend that raises has not sent it
        log.exception("SMS backend failed for purpose %s", purpose)
        outcome = False
    if outcome is None or (outcome and outcome.accepted):
        return
    try:
        _withdraw(row_id)
    except Exception:  # noqa: BLE001 - the answer stays the provider's; the code then counts
        log.exception("could not delete an SMS code no provider accepted")
    if outcome and outcome.status == LIMITED:
        raise locked(outcome.retry_after_ms, "验证码发送太频繁，请稍后再试")
    if outcome and outcome.status == REFUSED:
        raise ApiError(NOT_ALLOWED, "该手机号无法接收短信")
    raise ApiError(PROVIDER_FAILED, "短信发送失败，请稍后再试")


@transaction
def _try_code(settings, user_id, phone, purpose, code, then):
    latest = for_update(
        SmsCode.select()
        .where(SmsCode.user_id == user_id, SmsCode.purpose == purpose)
        .order_by(SmsCode.created_at.desc(), SmsCode.id.desc())
    ).first()
    if latest is None:
        return "none"
    now = now_ms()
    if latest.used_at is not None or latest.expires_at <= now or latest.tries >= MAX_TRIES:
        return "dead"
    if latest.phone != phone:
        return "dead"
    expected = _code_hash(settings, user_id, purpose, phone, code)
    if not hmac.compare_digest(expected, latest.code_hash):
        latest.tries += 1
        latest.save()
        return "wrong"
    latest.used_at = now
    latest.save()
    then()
    return "ok"


def consume_code(settings, user_id, phone, purpose, code, then):
    """Use the latest code sent to this user for purpose, and run then() in the same transaction.

    A wrong code still counts (committed) toward the code's tries; the change and the use of the
    code commit together or not at all.
    """
    outcome = _try_code(settings, user_id, phone, purpose, code, then)
    if outcome == "none":
        raise ApiError(SECRET_REJECTED, "请先获取验证码")
    if outcome == "dead":
        raise ApiError(SECRET_REJECTED, "验证码已失效，请重新获取")
    if outcome == "wrong":
        raise ApiError(SECRET_REJECTED, "验证码错误")
