"""Idempotency-Key: a request repeated with the same key gets its first answer, without acting twice.

Keys are held in the database, so they hold across workers and hosts. For 24 hours a key whose
request succeeded (900) answers every repeat with that answer; the same key with another body is
904; a repeat while the first request is still running is 906 (retry in a second). A request that
did not succeed leaves the key unused. A running request owns its key for a minute: if its
process died meanwhile, the key is free again after that. The key's row remembers its first
attempt's time, from which ids made for the request are derived (derived_id).

A request is recognised by its fingerprint, an HMAC-SHA256 of method, path and body under a key
derived from AUTH_SECRET (a withdraw body holds the app's hash of a 6-digit pay password: a plain
hash stored beside it is undone in seconds by trying the million bodies). Like tokens, the first
secret makes it and every listed secret is tried on a repeat, so a rotation keeps retries working
while the old secret stays listed (24 hours); rows the previous version wrote hold a plain
SHA-256, which is tried last (they are all gone 24 hours after the upgrade).
"""

import functools
import hashlib
import hmac
import re
import struct

import peewee

from payapi.contract.errors import INVALID, ApiError, locked
from payapi.domain.clock import now_ms
from payapi.infra.db import for_update, transaction
from payapi.infra.models import IdempotencyKey

KEY = re.compile(r"[\x20-\x7e]{1,64}")
KEEP_MS = 24 * 3600 * 1000
RUNNING_LEASE_MS = 60 * 1000
RUNNING, DONE = "running", "done"


@functools.lru_cache(maxsize=16)
def _fingerprint_key(secret):
    # Its own key, not the JWT secret itself: the two uses never share an HMAC input space.
    return hmac.new(secret.encode(), b"payapi idempotency fingerprint", hashlib.sha256).digest()


def fingerprints(secrets, method, path, raw_body):
    """The request's fingerprint under each secret (the first is the one stored), then the plain
    SHA-256 of the previous version (matched, never stored)."""
    message = b"%s %s\n%s" % (method.encode(), path.encode(), raw_body)
    keyed = [hmac.new(_fingerprint_key(s), message, hashlib.sha256).hexdigest() for s in secrets or ("",)]
    return (*keyed, hashlib.sha256(message).hexdigest())


def derived_id(scope, key, request_hash, first_at_ms):
    """An ObjectId-shaped id that is the same for every request repeating this one (key and
    request: e.g. our refund_id at Ping++), so a repeat can find what its first attempt made even
    when that attempt's answer was lost: 4 bytes of the first attempt's time (seconds, as
    ids.new_id), then 8 bytes of SHA-256 of the key and request. The request is part of it: a
    scope is a route, not what the route acts on, and a key used again after 24 hours (or after a
    failure) for another pay is another request."""
    digest = hashlib.sha256(f"{scope}\n{key}\n{request_hash}".encode()).digest()
    return (struct.pack(">I", first_at_ms // 1000) + digest[:8]).hex()


def valid_key(key):
    if KEY.fullmatch(key) is None:
        raise ApiError(INVALID, "Idempotency-Key 应为 1-64 个可打印 ASCII 字符")
    return key


@transaction
def begin(scope, key, candidates):
    """-> (the stored answer (text) to replay, or None when this request should run (it now owns the
    key); the request's fingerprint and the time of the key's first attempt (ms), from which ids
    made for it are derived (derived_id)).

    candidates: fingerprints() of the request."""
    now = now_ms()
    request_hash = candidates[0]
    row = for_update(IdempotencyKey.select().where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)).first()
    if row is not None:
        expired = row.created_at + KEEP_MS <= now
        abandoned = row.status == RUNNING and row.lease_until <= now
        same = row.request_hash in candidates
        if not (expired or abandoned):
            if not same:
                raise ApiError(INVALID, "Idempotency-Key 已用于另一个请求")
            if row.status == RUNNING:
                raise locked(1000, "相同的请求正在处理中，请稍后再试")
            return row.answer, row.request_hash, row.created_at
        if abandoned and not expired and same:
            # The same request again after an attempt that failed or died: it keeps its first
            # attempt's fingerprint and time, so what it derives (its refund id at Ping++) is what
            # that attempt used, whichever secret made the fingerprint.
            IdempotencyKey.update(lease_until=now + RUNNING_LEASE_MS).where(IdempotencyKey.id == row.id).execute()
            return None, row.request_hash, row.created_at  # (the row is locked: no twin takes it meanwhile)
        row.delete_instance()
    try:
        IdempotencyKey.create(
            scope=scope,
            key=key,
            request_hash=request_hash,
            status=RUNNING,
            lease_until=now + RUNNING_LEASE_MS,
            created_at=now,
        )
    except peewee.IntegrityError:
        raise locked(1000, "相同的请求正在处理中，请稍后再试") from None  # a racing twin took it first
    return None, request_hash, now


@transaction
def finish(scope, key, answer):
    IdempotencyKey.update(status=DONE, answer=answer).where(
        IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.status == RUNNING
    ).execute()


@transaction
def abandon(scope, key):
    """The request did not succeed: the key is free again (its lease ends now). The row stays, so
    the same request again keeps its first attempt's time; another request may take the key."""
    IdempotencyKey.update(lease_until=0).where(
        IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.status == RUNNING
    ).execute()


@transaction
def forget_expired(batch=1000):
    """The worker removes keys older than 24 hours."""
    old = [
        row_id
        for (row_id,) in IdempotencyKey.select(IdempotencyKey.id)
        .where(IdempotencyKey.created_at < now_ms() - KEEP_MS)
        .limit(batch)
        .tuples()
    ]
    if old:
        IdempotencyKey.delete().where(IdempotencyKey.id.in_(old)).execute()
    return len(old)
