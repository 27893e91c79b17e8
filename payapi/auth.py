"""The `auth` header: HS256 JWTs minted by the app's account service."""

import functools
import time

import jwt

from .errors import UNAUTHENTICATED, ApiError
from .ids import is_id


class Authenticator:
    """Verifies tokens with every configured secret; signs with the first."""

    def __init__(self, secrets):
        if not secrets:
            raise ValueError("at least one auth secret is needed")
        self._secrets = tuple(secrets)
        # A token's signature and claims never change, so each one is verified once per process;
        # only its expiry is checked on every request. This takes PyJWT off the hot path.
        self._verified = functools.lru_cache(maxsize=4096)(self._verify)

    def _verify(self, token):
        for secret in self._secrets:
            try:
                claims = jwt.decode(
                    token,
                    secret,
                    algorithms=["HS256"],
                    options={"require": ["exp", "sub"], "verify_exp": False},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                return None
            sub, exp, phone = claims.get("sub"), claims.get("exp"), claims.get("phone")
            if not is_id(sub) or isinstance(exp, bool) or not isinstance(exp, (int, float)):
                return None
            return sub, exp, phone if isinstance(phone, str) and phone else None
        return None

    def authenticate(self, token):
        """-> (user_id, phone) or ApiError 901."""
        if not token or len(token) > 4096:
            raise ApiError(UNAUTHENTICATED, "请先登录")
        verified = self._verified(token)
        if verified is None:
            raise ApiError(UNAUTHENTICATED, "登录凭证无效")
        user_id, exp, phone = verified
        if exp <= time.time():
            raise ApiError(UNAUTHENTICATED, "登录已过期，请重新登录")
        return user_id, phone

    def mint(self, user_id, phone=None, ttl=3600):
        claims = {"sub": user_id, "exp": int(time.time()) + int(ttl)}
        if phone:
            claims["phone"] = phone
        return jwt.encode(claims, self._secrets[0], algorithm="HS256")
