"""The `auth` header: HS256 JWTs minted by the app's account service."""

import functools
import math
import re
import time

import jwt

from payapi.contract.errors import UNAUTHENTICATED, ApiError
from payapi.domain.ids import is_id

# Clock skew tolerated between the account service and us, for `iat`, `nbf` and `exp`.
LEEWAY_S = 30
# A phone number an SMS can be sent to: ASCII digits with an optional leading "+", 5-20 long
# (E.164 is at most 15 digits; local formats and extensions get some room). Anything else in the
# claim is treated as no phone at all.
_PHONE = re.compile(r"\+?[0-9]{5,20}")


class _Rejected(Exception):
    """Raised, not returned, so that the cache keeps only successes."""


def usable_phone(value):
    """The phone claim if an SMS can be sent to it, else None."""
    return value if isinstance(value, str) and _PHONE.fullmatch(value) else None


def _finite_seconds(value):
    """A claim that is a finite number of seconds, as a float; else None (bool, NaN, Infinity, 1e999...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return seconds if math.isfinite(seconds) else None


class Authenticator:
    """Verifies tokens with every configured secret; signs with the first."""

    def __init__(self, secrets):
        if not secrets:
            raise ValueError("at least one auth secret is needed")
        self._secrets = tuple(secrets)
        # A token's signature and claims never change, so each one is verified once per process;
        # only its expiry is checked on every request. This takes PyJWT off the hot path.
        # Only successes are cached (a rejection raises): a token rejected for a time-dependent
        # reason (`nbf`/`iat` ahead of our clock) is looked at again on its next use.
        self._verified = functools.lru_cache(maxsize=4096)(self._verify)

    def _verify(self, token):
        for secret in self._secrets:
            try:
                claims = jwt.decode(
                    token,
                    secret,
                    algorithms=["HS256"],
                    options={"require": ["exp", "sub"], "verify_exp": False},
                    leeway=LEEWAY_S,
                )
            except jwt.InvalidSignatureError:
                continue
            except (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError):
                raise _Rejected from None
            sub, exp = claims.get("sub"), _finite_seconds(claims.get("exp"))
            if not is_id(sub) or exp is None:
                raise _Rejected
            return sub, exp, usable_phone(claims.get("phone"))
        raise _Rejected

    def authenticate(self, token):
        """-> (user_id, phone or None) or ApiError 901."""
        if not token or len(token) > 4096:
            raise ApiError(UNAUTHENTICATED, "请先登录")
        try:
            user_id, exp, phone = self._verified(token)
        except _Rejected:
            raise ApiError(UNAUTHENTICATED, "登录凭证无效") from None
        if exp + LEEWAY_S <= time.time():
            raise ApiError(UNAUTHENTICATED, "登录已过期，请重新登录")
        return user_id, phone

    def mint(self, user_id, phone=None, ttl=3600):
        claims = {"sub": user_id, "exp": int(time.time()) + int(ttl)}
        if phone:
            claims["phone"] = phone
        return jwt.encode(claims, self._secrets[0], algorithm="HS256")
