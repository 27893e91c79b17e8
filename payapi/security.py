"""Pay password, security answers, withdraw account: slow hashes and database-held lockouts."""

import base64
import concurrent.futures
import functools
import hashlib
import json
import logging
import os
import threading
import time
import unicodedata

import bcrypt

from . import sms
from .clock import now_ms
from .db import RowByKey, for_update, lock_row, transaction
from .errors import NOT_ALLOWED, SECRET_REJECTED, ApiError, locked
from .models import Lockout, Profile

log = logging.getLogger(__name__)

PASSWD = "passwd"
ANSWERS = "answers"
OPERATOR = "operator"  # an operator's console or Basic password (operators.py); the same rule
WRONG = {PASSWD: "支付密码错误", ANSWERS: "密保答案错误", OPERATOR: "用户名或密码错误"}
MAX_FAILURES = 5  # wrong ones within any WINDOW_MS (a sliding window) lock for LOCK_MS
WINDOW_MS = 3 * 3600 * 1000
LOCK_MS = 3 * 3600 * 1000
IN_FLIGHT_WAIT_S = 5.0

lockout_of = RowByKey(Lockout, Lockout.user_id, Lockout.kind)
profile_by_user = RowByKey(Profile, Profile.user_id)


# --- hashing -------------------------------------------------------------------------------

def _prehash(secret):
    # bcrypt reads at most 72 bytes; SHA-256 first so every character counts, base64 so no NUL.
    return base64.b64encode(hashlib.sha256(secret.encode("utf-8")).digest())


def _background_priority():
    # Lowest CPU priority for the hashing thread: a bcrypt check takes ~0.3 s of a core, and at
    # normal priority a few of them would make every cheap read on the host wait for a core.
    # Raising one's own niceness needs no privilege; it applies to this thread only (Linux).
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


_hashing = None
_hashing_lock = threading.Lock()


def _slow(func, *args):
    """Run a bcrypt call on this process's one low-priority hashing thread and wait for it.

    One per process bounds the bcrypt work to one core per worker, and the waiting request
    thread releases the GIL, so the worker's other threads keep serving reads.
    """
    global _hashing
    if _hashing is None:
        with _hashing_lock:
            if _hashing is None:  # created lazily: after gunicorn forks, in each worker
                _hashing = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="bcrypt", initializer=_background_priority
                )
    return _hashing.submit(func, *args).result()


# Requests of one worker process that may wait on bcrypt at once. gunicorn runs 4 threads per
# worker: with at most 2 of them on bcrypt, the other 2 keep answering cheap reads; a third
# password request in the same worker is refused at once (906, retry in a second) before any
# attempt is counted, instead of queueing reads behind it. Measured: see README, Performance.
MAX_WAITING_ON_BCRYPT = 2
_bcrypt_slots = threading.BoundedSemaphore(MAX_WAITING_ON_BCRYPT)


def uses_bcrypt(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if not _bcrypt_slots.acquire(blocking=False):
            raise locked(1000, "系统繁忙，请稍后再试")
        try:
            return func(*args, **kwargs)
        finally:
            _bcrypt_slots.release()

    return wrapper


def hash_secret(secret, rounds):
    return _slow(bcrypt.hashpw, _prehash(secret), bcrypt.gensalt(rounds)).decode("ascii")


def secret_matches(secret, hashed):
    try:
        return _slow(bcrypt.checkpw, _prehash(secret), hashed.encode("ascii"))
    except ValueError:
        log.error("stored secret hash is malformed")
        return False


def normalise_answer(answer):
    return unicodedata.normalize("NFKC", answer).strip().casefold()


def _answers_secret(answers):
    # One hash over all three: one bcrypt per check instead of three, and no hint which was wrong.
    return json.dumps([normalise_answer(a) for a in answers], ensure_ascii=False)


# --- lockout -------------------------------------------------------------------------------

def _recent_failures(row, now):
    """Times (ms) of the wrong attempts, and those still being checked, within the sliding window."""
    return [t for t in map(int, filter(None, row.failed_at.split(","))) if now - t < WINDOW_MS]


def _keep_failures(row, times):
    row.failed_at = ",".join(map(str, times))
    row.failures = len(times)


@transaction
def _start_attempt(user_id, kind):
    """Count the attempt before the slow check, so parallel guesses cannot outrun the limit."""
    now = now_ms()
    row = lock_row(Lockout, {"failures": 0, "failed_at": ""}, user_id=user_id, kind=kind)
    if row.locked_until > now:
        raise locked(row.locked_until - now)
    # A lock that has run out has used up the failures that set it (all of them are 3 hours old).
    times = [] if row.locked_until else _recent_failures(row, now)
    if len(times) >= MAX_FAILURES:
        # The limit is reached by attempts still being checked; one of them may yet succeed.
        return False
    _keep_failures(row, times + [now])
    row.locked_until = 0
    row.save()
    return True


@transaction
def _finish_attempt(user_id, kind, ok):
    now = now_ms()
    row = for_update(Lockout.select().where(Lockout.user_id == user_id, Lockout.kind == kind)).get()
    if ok:
        _keep_failures(row, [])
        row.locked_until = 0
    elif row.locked_until <= now:
        times = _recent_failures(row, now)
        _keep_failures(row, times)
        if len(times) >= MAX_FAILURES:  # five within any 3 hours: locked for 3 hours from this one
            row.locked_until = now + LOCK_MS
    row.save()
    return row.locked_until


def lock_remaining(user_id, kind):
    """Milliseconds until the lock on this secret ends; 0 when not locked."""
    row = lockout_of(user_id, kind)
    return max(0, row.locked_until - now_ms()) if row else 0


def check_secret(user_id, kind, secret, hashed):
    """905 if wrong, 906 if locked (also with the right secret); a right one resets the count."""
    deadline = time.monotonic() + IN_FLIGHT_WAIT_S
    while not _start_attempt(user_id, kind):
        # MAX_FAILURES attempts are still being checked (parallel requests): wait for their
        # verdict, a lock or a reset by a right one, instead of refusing a secret that may be right.
        if time.monotonic() > deadline:
            raise locked(1000)
        time.sleep(0.05)
    ok = secret_matches(secret, hashed)
    locked_until = _finish_attempt(user_id, kind, ok)
    if not ok:
        if locked_until:
            raise locked(locked_until - now_ms())
        raise ApiError(SECRET_REJECTED, WRONG[kind])


def check_answers(user_id, answers, hashed):
    check_secret(user_id, ANSWERS, _answers_secret(answers), hashed)


# --- profile -------------------------------------------------------------------------------

def profile_of(user_id):
    return profile_by_user(user_id)


@transaction
def _update_profile(user_id, expect, **changes):
    """Write changes unless the field we verified against changed meanwhile (compare-and-set)."""
    now = now_ms()
    profile = lock_row(Profile, {"created_at": now, "updated_at": now}, user_id=user_id)
    for field, value in expect.items():
        if getattr(profile, field) != value:
            raise ApiError(NOT_ALLOWED, "设置已被修改，请重试")
    for field, value in changes.items():
        setattr(profile, field, value)
    profile.updated_at = now
    profile.save()


@uses_bcrypt
def set_pay_password(settings, user_id, passwd, old_passwd=None, answers=None):
    profile = profile_of(user_id)
    current = profile.passwd_hash if profile else None
    if current:
        if old_passwd is not None:
            check_secret(user_id, PASSWD, old_passwd, current)
        elif answers is not None:
            if not profile.answers_hash:
                raise ApiError(NOT_ALLOWED, "尚未设置密保问题")
            check_answers(user_id, answers, profile.answers_hash)
        else:
            raise ApiError(NOT_ALLOWED, "修改支付密码需要原密码或密保答案")
    _update_profile(user_id, {"passwd_hash": current}, passwd_hash=hash_secret(passwd, settings.bcrypt_rounds))


@uses_bcrypt
def set_answers(settings, user_id, answers, passwd=None):
    """Set or replace the answers; whenever a pay password is set, also the first time, it is asked.

    Otherwise a stolen token could set answers and then use them to replace the pay password.
    """
    profile = profile_of(user_id)
    current = profile.answers_hash if profile else None
    passwd_hash = profile.passwd_hash if profile else None
    if passwd_hash:
        if passwd is None:
            raise ApiError(NOT_ALLOWED, "设置密保问题需要支付密码")
        check_secret(user_id, PASSWD, passwd, passwd_hash)
    hashed = hash_secret(_answers_secret(answers), settings.bcrypt_rounds)
    # Also unchanged since the check: a pay password set meanwhile was not asked for.
    _update_profile(user_id, {"answers_hash": current, "passwd_hash": passwd_hash}, answers_hash=hashed)


def set_withdraw_account(settings, user_id, phone, smscode, account_type, account_id, account_name):
    sms.require_phone(phone)

    def save_account():
        _update_profile(
            user_id, {}, account_type=account_type, account_id=account_id, account_name=account_name
        )

    sms.consume_code(settings, user_id, phone, sms.WITHDRAW_INFO, smscode, then=save_account)


def check_info(user_id):
    profile = profile_of(user_id)
    return {
        "passwd": bool(profile and profile.passwd_hash),
        "questions": bool(profile and profile.answers_hash),
        "withdraw": bool(profile and profile.account_id),
    }


def withdraw_account(user_id):
    profile = profile_of(user_id)
    if not profile or not profile.account_id:
        return {"type": "", "id": "", "name": ""}
    return {"type": profile.account_type, "id": profile.account_id, "name": profile.account_name}
