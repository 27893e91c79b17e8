"""Operators: accounts, console sessions, HTTP Basic for scripts, and the audit trail of their actions.

An operator is a person with a name and a password (bcrypt, as pay passwords, on the process's
one low-priority hashing thread). Wrong passwords are counted by *name and client address* (the
`lockout` kind `operator`: five within any 3 hours lock that name from that address for 3 hours),
so a stranger cannot lock the real operator out, and by *name* alone (the kind `operator-name`, a
rate: NAME_BURST wrong ones, then one per NAME_INTERVAL_MS, from addresses the name has never
logged in from), so guessing from many addresses stays slow while the operator, from an address
they logged in from before (the kind `operator-known`), still gets in; and by *address* alone
(`operator-addr`, a rate: ADDRESS_BURST, then one per ADDRESS_INTERVAL_MS), so one address trying
new names cannot keep the one place for operator logins busy. The rows are keyed by
digests of the name as typed, so an unknown name is counted, locked and timed (a decoy bcrypt)
exactly like a known one. A disabled operator's sessions end at once and their Basic credentials
stop working on the next request.

- The console (`/ops/...`) keeps a session: the cookie holds a random token, the table only its
  SHA-256 (a copy of the table logs nobody in), with the CSRF token every console form carries.
- Scripts (`/ops/api/...`) send HTTP Basic on every request. A successful verification is kept
  per process for BASIC_CACHE_S (bcrypt at cost 12 is ~0.3 s: a script making 100 calls must not
  cost 100 of them), keyed by a SHA-256 of the credentials; whether the operator is still enabled
  with the same password hash, and whether the name is locked from the request's address, is read
  from the database on every request (two primary-key reads, no bcrypt).
"""

import base64
import binascii
import dataclasses
import getpass
import hashlib
import hmac
import json
import re
import secrets
import threading
import time

from payapi.contract.errors import INVALID, NOT_ALLOWED, NOT_FOUND, SECRET_REJECTED, UNAUTHENTICATED, ApiError, locked
from payapi.domain.clock import now_ms
from payapi.domain.ids import new_id
from payapi.infra.db import RowByKey, lock_row, transaction
from payapi.infra.models import AuditEntry, Lockout, Operator, OperatorSession
from payapi.users import security

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # bcrypt sees a SHA-256 of it; the bound only keeps requests small
SESSION_MS = 12 * 3600 * 1000  # one shift; then the console asks again
BASIC_CACHE_S = 60
BASIC_CACHE_SIZE = 256
# Guessing one name from everywhere: NAME_BURST wrong passwords, then one per NAME_INTERVAL_MS
# (GCRA), except from addresses the name logged in from within KNOWN_MS.
NAME_BURST = 20
NAME_INTERVAL_MS = 60 * 1000
KNOWN_MS = 30 * 24 * 3600 * 1000
BY_ADDRESS, BY_NAME, KNOWN = security.OPERATOR, "operator-name", "operator-known"
# Guessing from one address at any names (a new name each time is never locked: five guesses
# each): ADDRESS_BURST wrong passwords, then one per ADDRESS_INTERVAL_MS, refused before the
# login's place and its bcrypt, so one address cannot keep every operator login out as busy.
ADDRESS_BURST = 100
ADDRESS_INTERVAL_MS = 10 * 1000
FROM_ADDRESS = "operator-addr"
# The console's cookies (Path=/ops, Secure, HttpOnly, SameSite=Strict): the session's token, and
# the login form's double-submit CSRF token (there is no session yet to keep it in).
SESSION_COOKIE = "payapi_ops_session"
LOGIN_CSRF_COOKIE = "payapi_ops_login"

operator_by_name = RowByKey(Operator, Operator.name)
operator_by_id = RowByKey(
    Operator, Operator.operator_id, columns=(Operator.name, Operator.disabled_at, Operator.passwd_hash)
)
session_by_hash = RowByKey(OperatorSession, OperatorSession.token_hash)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who is acting: an operator (by id and name) or, for commands, `cli:<login user>`."""

    operator_id: str
    name: str
    # The account's version when it was verified (a digest of its password hash, whose salt is new
    # on every reset): a new password ends cached logins, even one set within the same millisecond.
    version: str = ""


def _version(passwd_hash):
    return hashlib.sha256(passwd_hash.encode()).hexdigest()[:32]


def _key(*parts):
    """A lockout row's key for a name (as typed, known or not) and maybe an address."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:24]


def cli_identity():
    return Identity("", f"cli:{getpass.getuser()}")


# --- accounts ------------------------------------------------------------------------------------


def check_name(name):
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ApiError(INVALID, "用户名须为 1-64 个字母、数字或 ._@-，以字母或数字开头")
    return name


def check_password(password):
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ApiError(INVALID, f"密码长度应为 {MIN_PASSWORD}-{MAX_PASSWORD} 个字符")
    return password


def add(name, password, rounds, reset=False):
    """A new operator; with reset, an existing one gets this password, is enabled, and its sessions end."""
    check_name(name)
    hashed = security.hash_secret(check_password(password), rounds)
    return _save(name, hashed, reset)


@transaction
def _save(name, hashed, reset):
    now = now_ms()
    existing = Operator.get_or_none(Operator.name == name)
    if existing is not None and not reset:
        raise ApiError(NOT_ALLOWED, f"操作员 {name} 已存在")
    if existing is None:
        return Operator.create(operator_id=new_id(), name=name, passwd_hash=hashed, created_at=now, updated_at=now)
    existing.passwd_hash, existing.disabled_at, existing.updated_at = hashed, None, now
    existing.save()
    OperatorSession.delete().where(OperatorSession.operator_id == existing.operator_id).execute()
    return existing


@transaction
def disable(name):
    """Disable an operator: every session ends now; Basic stops on the next request. False if unknown."""
    operator = Operator.get_or_none(Operator.name == name)
    if operator is None:
        return False
    now = now_ms()
    if operator.disabled_at is None:
        operator.disabled_at = now
    operator.updated_at = now
    operator.save()
    OperatorSession.delete().where(OperatorSession.operator_id == operator.operator_id).execute()
    return True


def all_operators():
    return list(Operator.select().order_by(Operator.name))


# A hash to check against when the name is unknown or disabled: the answer then takes as long as
# for a wrong password, so timing does not tell which names exist.
_DECOY: dict[int, str] = {}


def _decoy_hash(rounds):
    if rounds not in _DECOY:
        _DECOY[rounds] = security.hash_secret(secrets.token_hex(16), rounds)
    return _DECOY[rounds]


def verify(name, password, rounds, address):
    """The operator these credentials name; 905 if they do not verify, 906 while the name is locked
    from this address, while it is being guessed from everywhere (unless it logged in from here
    before) or while this worker's place for operator logins is taken.

    rounds: BCRYPT_ROUNDS, the cost of the decoy check for a name that does not exist.
    address: the client's address (the last X-Forwarded-For entry, else the peer)."""
    name = name if isinstance(name, str) else ""
    here = _key(BY_ADDRESS, name, address)
    remaining = security.lock_remaining(here, BY_ADDRESS)
    if remaining:
        raise locked(remaining)  # before the name's rate: a locked address's tries cost nobody else
    known = _known(name, address)
    from_here = _take_guess(_key(FROM_ADDRESS, address), FROM_ADDRESS, known, ADDRESS_BURST, ADDRESS_INTERVAL_MS)
    tried = False
    try:
        with security.operator_slots.place():
            counted = _take_guess(_key(BY_NAME, name), BY_NAME, known)  # before the slow check, as check_secret
            tried = True
            identity = _verify(name, password, rounds, here)
    except ApiError:
        if from_here and not tried:  # busy, or the name's rate: no password was tried
            _give_back_guess(_key(FROM_ADDRESS, address), FROM_ADDRESS, ADDRESS_INTERVAL_MS)
        raise
    if counted:
        _give_back_guess(_key(BY_NAME, name), BY_NAME)  # a right password was no guess
    if from_here:
        _give_back_guess(_key(FROM_ADDRESS, address), FROM_ADDRESS, ADDRESS_INTERVAL_MS)
    _remember(name, address)
    return identity


def _verify(name, password, rounds, here):
    row = operator_by_name(name) if NAME.fullmatch(name) else None
    usable = row is not None and row.disabled_at is None and isinstance(password, str) and len(password) <= MAX_PASSWORD
    # An unknown or disabled name goes through the very same count, lock and bcrypt, on a decoy
    # that nothing matches.
    security.check_secret(
        here, BY_ADDRESS, password if usable else "", row.passwd_hash if usable else _decoy_hash(rounds)
    )
    return Identity(row.operator_id, row.name, _version(row.passwd_hash))


def _known(name, address):
    row = security.lockout_of(_key(KNOWN, name, address), KNOWN)
    return row is not None and row.locked_until > now_ms()


@transaction
def _take_guess(key, kind, known, burst=NAME_BURST, interval=NAME_INTERVAL_MS):
    """Count a guess at a name from anywhere (kind BY_NAME), or at any name from one address
    (FROM_ADDRESS): GCRA over `locked_until`, the theoretical arrival time; 906 past the rate,
    except from an address the name logged in from. -> whether it counted."""
    now = now_ms()
    row = lock_row(Lockout, {"failures": 0, "failed_at": ""}, user_id=key, kind=kind)
    tat = max(row.locked_until, now)
    ahead = tat - now - (burst - 1) * interval
    if ahead > 0:
        if not known:
            raise locked(ahead)
        return False  # the operator's own address: let in, and not pushing the others further back
    row.locked_until = tat + interval
    row.save()
    return True


def _give_back_guess(key, kind, interval=NAME_INTERVAL_MS):
    Lockout.update(locked_until=Lockout.locked_until - interval).where(
        Lockout.user_id == key, Lockout.kind == kind, Lockout.locked_until >= interval
    ).execute()


@transaction
def _remember(name, address):
    row = lock_row(Lockout, {"failures": 0, "failed_at": ""}, user_id=_key(KNOWN, name, address), kind=KNOWN)
    row.locked_until = now_ms() + KNOWN_MS
    row.save()


SWEEP_BATCH = 1000
_sweep_after = [0]  # the id the next sweep of per-address rows starts after (a pass goes round the table)


def run_down_guesses(now):
    """The operators' rates and remembered addresses that have run down. The index on kind finds
    them among the operators' rows only: the users' own rows (a row per user who ever mistyped a
    secret) are neither read nor locked, every minute, by every worker."""
    return Lockout.delete().where(Lockout.kind.in_((BY_NAME, KNOWN, FROM_ADDRESS)), Lockout.locked_until < now)


def address_counts(now, after):
    """The next per-address counts that may no longer count, in id order from after (the index on
    kind, whose entries are in id order within a kind)."""
    return (
        Lockout.select(Lockout.id, Lockout.failed_at)
        .where(Lockout.kind == BY_ADDRESS, Lockout.locked_until <= now, Lockout.id > after)
        .order_by(Lockout.id)
        .limit(SWEEP_BATCH)
    )


@transaction
def forget_stale_guesses():
    """The worker deletes operators' lockout rows that no longer count (a made-up name leaves two):
    rates that have run down, addresses no longer remembered, and per-address counts with no lock
    and no wrong password within the window. -> how many."""
    now = now_ms()
    gone = run_down_guesses(now).execute()
    rows = list(address_counts(now, _sweep_after[0]))
    _sweep_after[0] = rows[-1].id if len(rows) == SWEEP_BATCH else 0
    stale = [
        row.id
        for row in rows
        if all(now - int(t) >= security.WINDOW_MS for t in filter(None, row.failed_at.split(",")))
    ]
    if stale:
        gone += Lockout.delete().where(Lockout.id.in_(stale)).execute()
    return gone


def still_valid(identity, address):
    """Enabled, its password not changed since it was verified, and not locked from this address:
    -> None, or the ApiError to answer."""
    row = operator_by_id(identity.operator_id)
    if row is None or row.disabled_at is not None or _version(row.passwd_hash) != identity.version:
        return ApiError(UNAUTHENTICATED, "操作员已停用或密码已更改")
    remaining = security.lock_remaining(_key(BY_ADDRESS, identity.name, address), BY_ADDRESS)
    return locked(remaining) if remaining else None


# --- HTTP Basic (scripts) ----------------------------------------------------------------------------


class BasicLogins:
    """HTTP Basic credentials, each verified with bcrypt at most once per BASIC_CACHE_S in this process."""

    def __init__(self, rounds, ttl_s=BASIC_CACHE_S, size=BASIC_CACHE_SIZE):
        self.rounds, self.ttl_s, self.size = rounds, ttl_s, size
        self._cache = {}  # SHA-256 of the credentials -> (Identity, monotonic expiry)
        self._lock = threading.Lock()

    def authenticate(self, header, address):
        """The operator of an `Authorization: Basic ...` header from the client at address; 901 if
        absent or wrong, 906 while locked."""
        name, password = _parse_basic(header)
        key = hashlib.sha256(f"{name}\0{password}".encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            hit = self._cache.get(key)
        identity = hit[0] if hit and hit[1] > time.monotonic() else None
        if identity is None:
            try:
                identity = verify(name, password, self.rounds, address)
            except ApiError as exc:
                if exc.code == SECRET_REJECTED:
                    raise ApiError(UNAUTHENTICATED, exc.msg) from None
                raise
            with self._lock:
                if len(self._cache) >= self.size:
                    self._cache.clear()  # rare: as many operators as this; each is verified again once
                self._cache[key] = (identity, time.monotonic() + self.ttl_s)
        refused = still_valid(identity, address)
        if refused is not None:
            if refused.code == UNAUTHENTICATED:
                with self._lock:
                    self._cache.pop(key, None)
            raise refused
        return identity


def _parse_basic(header):
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise ApiError(UNAUTHENTICATED, "需要操作员身份（HTTP Basic）")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise ApiError(UNAUTHENTICATED, "操作员身份格式错误") from None
    name, colon, password = decoded.partition(":")
    if not colon:
        raise ApiError(UNAUTHENTICATED, "操作员身份格式错误")
    return name, password


# --- console sessions ----------------------------------------------------------------------------


def _digest(token):
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Session:
    identity: Identity
    csrf: str


@transaction
def open_session(identity):
    """-> (the cookie's token, the session's CSRF token). Expired sessions are swept here."""
    now = now_ms()
    OperatorSession.delete().where(OperatorSession.expires_at < now).execute()
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    OperatorSession.create(
        token_hash=_digest(token),
        operator_id=identity.operator_id,
        csrf=csrf,
        expires_at=now + SESSION_MS,
        created_at=now,
    )
    return token, csrf


def session_of(token):
    """The live session of a cookie's token, or None (unknown, expired, operator disabled)."""
    if not token or len(token) > 128:
        return None
    row = session_by_hash(_digest(token))
    if row is None or row.expires_at <= now_ms():
        return None
    operator = operator_by_id(row.operator_id)
    if operator is None or operator.disabled_at is not None:
        return None
    return Session(Identity(row.operator_id, operator.name, _version(operator.passwd_hash)), row.csrf)


def close_session(token):
    if token:
        OperatorSession.delete().where(OperatorSession.token_hash == _digest(token)).execute()


def same_token(given, expected):
    """Constant-time comparison of a CSRF token (missing or non-text never matches)."""
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


# --- the audit trail -------------------------------------------------------------------------------


def audit(identity, action, target, reason, before, after, refusal=None):
    """One audit row; the caller's transaction writes it with the change it records. refusal: why
    Ping++'s answer refused the action (nothing was done): the row's outcome is then `refused`."""
    return AuditEntry.create(
        audit_id=new_id(),
        operator=identity.name,
        action=action,
        target=target,
        reason=reason or "",
        before=json.dumps(before, ensure_ascii=False),
        after=json.dumps(after, ensure_ascii=False),
        created_at=now_ms(),
        **({} if refusal is None else {"outcome": "refused", "refusal": str(refusal)[:255]}),
    )


@transaction
def audit_refused(identity, action, target, reason, before, after, refusal):
    """An action Ping++'s answer refused, recorded in a transaction of its own (the action's is rolled back)."""
    return audit(identity, action, target, reason, before, after, refusal=refusal)


def audit_entries(limit, before=None):
    """Newest first; before: an audit_id (exclusive)."""
    query = AuditEntry.select()
    if before:
        cursor = AuditEntry.get_or_none(AuditEntry.audit_id == before)
        if cursor is None:
            raise ApiError(NOT_FOUND, "before 不是已有的审计记录")
        query = query.where(
            (AuditEntry.created_at < cursor.created_at)
            | ((AuditEntry.created_at == cursor.created_at) & (AuditEntry.audit_id < cursor.audit_id))
        )
    return list(query.order_by(AuditEntry.created_at.desc(), AuditEntry.audit_id.desc()).limit(limit))
