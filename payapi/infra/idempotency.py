"""Idempotency-Key: a request repeated with the same key gets its first answer, without acting twice.

Keys are held in the database, so they hold across workers and hosts. For 24 hours a key whose
request succeeded (900) answers every repeat with that answer; the same key with another body is
904; a repeat while the first request is still running is 906 (retry in a second). A request that
did not succeed leaves the key unused. A running request owns its key for a minute: if its
process died meanwhile, the key is free again after that.
"""

import hashlib
import re

import peewee

from payapi.contract.errors import INVALID, ApiError, locked
from payapi.domain.clock import now_ms
from payapi.infra.db import for_update, transaction
from payapi.infra.models import IdempotencyKey

KEY = re.compile(r"[\x20-\x7e]{1,64}")
KEEP_MS = 24 * 3600 * 1000
RUNNING_LEASE_MS = 60 * 1000
RUNNING, DONE = "running", "done"


def fingerprint(method, path, raw_body):
    return hashlib.sha256(b"%s %s\n%s" % (method.encode(), path.encode(), raw_body)).hexdigest()


def derived_id(scope, key, request_hash):
    """A 24-hex id that is the same for every request repeating this one (key and request: e.g. our
    refund_id at Ping++), so a repeat can find what its first attempt made even when that attempt's
    answer was lost. The request is part of it: a scope is a route, not what the route acts on, and
    a key used again after 24 hours (or after a failure) for another pay is another request."""
    return hashlib.sha256(f"{scope}\n{key}\n{request_hash}".encode()).hexdigest()[:24]


def valid_key(key):
    if KEY.fullmatch(key) is None:
        raise ApiError(INVALID, "Idempotency-Key 应为 1-64 个可打印 ASCII 字符")
    return key


@transaction
def begin(scope, key, request_hash):
    """-> the stored answer (text) to replay, or None when this request should run (it now owns the key)."""
    now = now_ms()
    row = for_update(IdempotencyKey.select().where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)).first()
    if row is not None:
        expired = row.created_at + KEEP_MS <= now
        abandoned = row.status == RUNNING and row.lease_until <= now
        if not (expired or abandoned):
            if row.request_hash != request_hash:
                raise ApiError(INVALID, "Idempotency-Key 已用于另一个请求")
            if row.status == RUNNING:
                raise locked(1000, "相同的请求正在处理中，请稍后再试")
            return row.answer
        row.delete_instance()
    try:
        IdempotencyKey.create(scope=scope, key=key, request_hash=request_hash, status=RUNNING,
                              lease_until=now + RUNNING_LEASE_MS, created_at=now)
    except peewee.IntegrityError:
        raise locked(1000, "相同的请求正在处理中，请稍后再试") from None  # a racing twin took it first
    return None


@transaction
def finish(scope, key, answer):
    IdempotencyKey.update(status=DONE, answer=answer).where(
        IdempotencyKey.scope == scope, IdempotencyKey.key == key, IdempotencyKey.status == RUNNING
    ).execute()


@transaction
def abandon(scope, key):
    IdempotencyKey.delete().where(
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
