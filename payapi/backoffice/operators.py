"""Operators: accounts, console sessions, HTTP Basic for scripts, and the audit trail of their actions.

An operator is a person with a name and a password (bcrypt, as pay passwords, on the process's
one low-priority hashing thread; wrong ones count in the `lockout` table under the kind
`operator`: five within any 3 hours lock for 3 hours). A disabled operator's sessions end at once
and their Basic credentials stop working on the next request.

- The console (`/ops/...`) keeps a session: the cookie holds a random token, the table only its
  SHA-256 (a copy of the table logs nobody in), with the CSRF token every console form carries.
- Scripts (`/ops/api/...`) send HTTP Basic on every request. A successful verification is kept
  per process for BASIC_CACHE_S (bcrypt at cost 12 is ~0.3 s: a script making 100 calls must not
  cost 100 of them), keyed by a SHA-256 of the credentials; whether the operator is still enabled
  and unchanged is read from the database on every request.
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

from payapi.contract.errors import INVALID, NOT_ALLOWED, NOT_FOUND, SECRET_REJECTED, UNAUTHENTICATED, ApiError
from payapi.domain.clock import now_ms
from payapi.domain.ids import new_id
from payapi.infra.db import RowByKey, transaction
from payapi.infra.models import AuditEntry, Operator, OperatorSession
from payapi.users import security

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # bcrypt sees a SHA-256 of it; the bound only keeps requests small
SESSION_MS = 12 * 3600 * 1000  # one shift; then the console asks again
BASIC_CACHE_S = 60
BASIC_CACHE_SIZE = 256
# The console's cookies (Path=/ops, Secure, HttpOnly, SameSite=Strict): the session's token, and
# the login form's double-submit CSRF token (there is no session yet to keep it in).
SESSION_COOKIE = "payapi_ops_session"
LOGIN_CSRF_COOKIE = "payapi_ops_login"

operator_by_name = RowByKey(Operator, Operator.name)
operator_by_id = RowByKey(Operator, Operator.operator_id,
                          columns=(Operator.name, Operator.disabled_at, Operator.updated_at))
session_by_hash = RowByKey(OperatorSession, OperatorSession.token_hash)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who is acting: an operator (by id and name) or, for commands, `cli:<login user>`."""

    operator_id: str
    name: str
    updated_at: int = 0  # the account's version when it was verified: a new password ends cached logins


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


def verify(name, password, rounds):
    """The operator these credentials name; 905 if they do not verify, 906 while locked or while
    this worker's place for operator logins is taken.

    rounds: BCRYPT_ROUNDS, the cost of the decoy check for a name that does not exist."""
    with security.operator_slots.place():
        return _verify(name, password, rounds)


def _verify(name, password, rounds):
    row = operator_by_name(name) if isinstance(name, str) and NAME.fullmatch(name) else None
    if row is None or row.disabled_at is not None or not isinstance(password, str) or len(password) > MAX_PASSWORD:
        security.secret_matches(password if isinstance(password, str) else "", _decoy_hash(rounds))
        raise ApiError(SECRET_REJECTED, security.WRONG[security.OPERATOR])
    security.check_secret(row.operator_id, security.OPERATOR, password, row.passwd_hash)
    return Identity(row.operator_id, row.name, row.updated_at)


def still_valid(identity):
    """Enabled, and its password not changed since it was verified."""
    row = operator_by_id(identity.operator_id)
    return row is not None and row.disabled_at is None and row.updated_at == identity.updated_at


# --- HTTP Basic (scripts) ----------------------------------------------------------------------------

class BasicLogins:
    """HTTP Basic credentials, each verified with bcrypt at most once per BASIC_CACHE_S in this process."""

    def __init__(self, rounds, ttl_s=BASIC_CACHE_S, size=BASIC_CACHE_SIZE):
        self.rounds, self.ttl_s, self.size = rounds, ttl_s, size
        self._cache = {}  # SHA-256 of the credentials -> (Identity, monotonic expiry)
        self._lock = threading.Lock()

    def authenticate(self, header):
        """The operator of an `Authorization: Basic ...` header; 901 if absent or wrong, 906 while locked."""
        name, password = _parse_basic(header)
        key = hashlib.sha256(f"{name}\0{password}".encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            hit = self._cache.get(key)
        identity = hit[0] if hit and hit[1] > time.monotonic() else None
        if identity is None:
            try:
                identity = verify(name, password, self.rounds)
            except ApiError as exc:
                if exc.code == SECRET_REJECTED:
                    raise ApiError(UNAUTHENTICATED, exc.msg) from None
                raise
            with self._lock:
                if len(self._cache) >= self.size:
                    self._cache.clear()  # rare: as many operators as this; each is verified again once
                self._cache[key] = (identity, time.monotonic() + self.ttl_s)
        if not still_valid(identity):
            with self._lock:
                self._cache.pop(key, None)
            raise ApiError(UNAUTHENTICATED, "操作员已停用或密码已更改")
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
    OperatorSession.create(token_hash=_digest(token), operator_id=identity.operator_id, csrf=csrf,
                           expires_at=now + SESSION_MS, created_at=now)
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
    return Session(Identity(row.operator_id, operator.name, operator.updated_at), row.csrf)


def close_session(token):
    if token:
        OperatorSession.delete().where(OperatorSession.token_hash == _digest(token)).execute()


def same_token(given, expected):
    """Constant-time comparison of a CSRF token (missing or non-text never matches)."""
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


# --- the audit trail -------------------------------------------------------------------------------

def audit(identity, action, target, reason, before, after):
    """One audit row; the caller's transaction writes it with the change it records."""
    return AuditEntry.create(
        audit_id=new_id(), operator=identity.name, action=action, target=target, reason=reason or "",
        before=json.dumps(before, ensure_ascii=False), after=json.dumps(after, ensure_ascii=False),
        created_at=now_ms(),
    )


def audit_entries(limit, before=None):
    """Newest first; before: an audit_id (exclusive)."""
    query = AuditEntry.select()
    if before:
        cursor = AuditEntry.get_or_none(AuditEntry.audit_id == before)
        if cursor is None:
            raise ApiError(NOT_FOUND, "before 不是已有的审计记录")
        query = query.where((AuditEntry.created_at < cursor.created_at)
                            | ((AuditEntry.created_at == cursor.created_at) & (AuditEntry.audit_id < cursor.audit_id)))
    return list(query.order_by(AuditEntry.created_at.desc(), AuditEntry.audit_id.desc()).limit(limit))
