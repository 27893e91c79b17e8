"""Pay password, security answers, withdraw account: slow hashes and database-held lockouts."""

import base64
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
import time
import unicodedata

import bcrypt

from payapi.contract.errors import NOT_ALLOWED, SECRET_REJECTED, ApiError, locked
from payapi.domain.clock import now_ms
from payapi.infra.db import RowByKey, for_update, lock_row, transaction
from payapi.infra.models import HashingTurn, Lockout, Profile
from payapi.users import sms

log = logging.getLogger("payapi.security")

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
turn_of = RowByKey(HashingTurn, HashingTurn.user_id, columns=(HashingTurn.busy_until, HashingTurn.tat))


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


# --- bcrypt capacity, shared fairly ---------------------------------------------------------
#
# Two limits, checked before any attempt is counted:
# - per user (in the database, so across workers and hosts): one slow operation in flight at a
#   time, and a rate of their own (a burst of PASSWORD_RATE_BURST, then one per
#   PASSWORD_RATE_INTERVAL seconds, as GCRA over one column). One account looping on its own password from many threads gets
#   906 for all but one request; nobody else notices.
# - per worker process: at most MAX_WAITING_ON_BCRYPT requests wait on bcrypt at once. gunicorn
#   runs 4 threads per worker: with at most 2 of them on bcrypt, the other 2 keep answering cheap
#   reads; a third password request in the same worker is refused at once (906, retry in a
#   second) instead of queueing reads behind it. Measured: see docs/performance.md, Results (the
#   read while /passwd is saturated).

MAX_WAITING_ON_BCRYPT = 2
BUSY = "系统繁忙，请稍后再试"
# A request of a user holds its turn at most this long (a killed process frees it then); a slow
# operation takes well under a second, or a few seconds while the worker sheds load.
TURN_LEASE_MS = 30 * 1000


class WorkerSlots:
    """This process's places for requests waiting on bcrypt."""

    def __init__(self, size):
        self.size = size
        self._free = threading.BoundedSemaphore(size)

    def try_take(self):
        return self._free.acquire(blocking=False)

    def give_back(self):
        self._free.release()

    @contextlib.contextmanager
    def place(self):
        """A place while the block runs, or 906 at once."""
        if not self.try_take():
            raise locked(1000, BUSY)
        try:
            yield
        finally:
            self.give_back()


worker_slots = WorkerSlots(MAX_WAITING_ON_BCRYPT)
# Operators' logins have a place of their own: a flood of logins with made-up names (each costs a
# decoy hash, so that timing does not tell names apart) then keeps out only other logins, never
# the users' password operations.
operator_slots = WorkerSlots(1)


def _due(row, settings, now):
    """When the user's next slow operation is due (GCRA); 906 if it may not start now."""
    interval = settings.password_rate_interval * 1000
    if row.busy_until > now:
        raise locked(1000, "上一个请求仍在处理中，请稍后再试")
    due = max(row.tat, now)
    if due - now > settings.password_rate_burst * interval:
        due = now  # further ahead than the rate can put it: this host's clock is behind the one that wrote it
    allowed_from = due - (settings.password_rate_burst - 1) * interval
    if now < allowed_from:
        raise locked(allowed_from - now, "操作过于频繁，请稍后再试")
    return due


def _take_turn(settings, user_id):
    """-> the lease of this user's turn; 906 while another of their slow operations runs or
    while they are over their rate."""
    seen = turn_of(user_id)
    if seen is not None:
        _due(seen, settings, now_ms())  # refused without a write (a looping client's common case)
    return _take_turn_locked(settings, user_id)


@transaction
def _take_turn_locked(settings, user_id):
    now = now_ms()
    row = lock_row(HashingTurn, {}, user_id=user_id)
    row.tat, row.busy_until = _due(row, settings, now) + settings.password_rate_interval * 1000, now + TURN_LEASE_MS
    row.save()
    return row.busy_until


@transaction
def _end_turn(settings, user_id, lease, unused=False):
    changes = {HashingTurn.busy_until: 0}
    if unused:  # refused before any hashing: it does not count toward the user's rate
        changes[HashingTurn.tat] = HashingTurn.tat - settings.password_rate_interval * 1000
    # Only our own lease: one that ran out may already be another request's.
    HashingTurn.update(changes).where(HashingTurn.user_id == user_id, HashingTurn.busy_until == lease).execute()


@contextlib.contextmanager
def hashing_turn(settings, user_id):
    """The user's turn at bcrypt and a place in this worker's queue for it, or 906."""
    lease = _take_turn(settings, user_id)
    if not worker_slots.try_take():
        _end_turn(settings, user_id, lease, unused=True)
        raise locked(1000, BUSY)
    try:
        yield
    finally:
        worker_slots.give_back()
        try:
            _end_turn(settings, user_id, lease)
        except Exception:  # noqa: BLE001 - the lease runs out by itself; the answer must not change
            log.exception("could not end the hashing turn of %s", user_id)


def uses_bcrypt(func):
    """For domain functions called as func(settings, user_id, ...): they run in the user's turn."""

    @functools.wraps(func)
    def wrapper(settings, user_id, *args, **kwargs):
        with hashing_turn(settings, user_id):
            return func(settings, user_id, *args, **kwargs)

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
        _update_profile(user_id, {}, account_type=account_type, account_id=account_id, account_name=account_name)

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
