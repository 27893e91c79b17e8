"""Settings: everything the service reads from the environment, read once."""

import dataclasses
import os
import zoneinfo


DEFAULT_DATABASE_URL = "sqlite:///payapi.db"


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # The first secret signs, every one of them verifies (key rotation).
    auth_secrets: tuple[str, ...] = ()
    service_key: str = ""
    pingpp_api_key: str = ""
    pingpp_app_id: str = ""
    pingpp_api_base: str = ""
    pingpp_private_key_path: str = ""
    pingpp_public_key_path: str = ""
    pingpp_timeout: float = 5.0
    sms_backend: str = "console"
    sms_file: str = "sms.jsonl"
    timezone: str = "Asia/Shanghai"
    bcrypt_rounds: int = 12
    platform_fee_bps: int = 0
    withdraw_min: int = 100
    withdraw_max: int = 5_000_000
    pay_money_max: int = 100_000_000

    @property
    def uses_development_secret(self):
        return self.auth_secrets == (DEVELOPMENT_SECRET,)

    @property
    def pingpp_live(self):
        """Live keys take real money; Ping++ marks the events of live charges livemode: true."""
        return self.pingpp_api_key.startswith("sk_live_")

    @property
    def tz(self):
        return zoneinfo.ZoneInfo(self.timezone)

    @classmethod
    def from_env(cls, environ=None):
        env = os.environ if environ is None else environ
        database_url = (
            env.get("DATABASE_URL")
            or env.get("JAWSDB_URL")
            or env.get("CLEARDB_DATABASE_URL")
            or DEFAULT_DATABASE_URL
        )
        secrets_ = tuple(s.strip() for s in env.get("AUTH_SECRET", "").split(",") if s.strip())
        if not secrets_:
            secrets_ = (DEVELOPMENT_SECRET,)
        settings = cls(
            database_url=database_url,
            auth_secrets=secrets_,
            service_key=env.get("SERVICE_KEY", ""),
            pingpp_api_key=env.get("PINGPP_API_KEY", ""),
            pingpp_app_id=env.get("PINGPP_APP_ID", ""),
            pingpp_api_base=env.get("PINGPP_API_BASE", ""),
            pingpp_private_key_path=env.get("PINGPP_PRIVATE_KEY_PATH", ""),
            pingpp_public_key_path=env.get("PINGPP_PUBLIC_KEY_PATH", ""),
            pingpp_timeout=float(env.get("PINGPP_TIMEOUT", "5")),
            sms_backend=env.get("SMS_BACKEND", "console"),
            sms_file=env.get("SMS_FILE", "sms.jsonl"),
            timezone=env.get("TIMEZONE", "Asia/Shanghai"),
            bcrypt_rounds=int(env.get("BCRYPT_ROUNDS", "12")),
            platform_fee_bps=int(env.get("PLATFORM_FEE_BPS", "0")),
            withdraw_min=int(env.get("WITHDRAW_MIN", "100")),
            withdraw_max=int(env.get("WITHDRAW_MAX", "5000000")),
        )
        _ = settings.tz  # fail at start-up, not on the first withdrawal, if TIMEZONE is wrong
        if not 0 <= settings.platform_fee_bps <= 10_000:
            raise ValueError("PLATFORM_FEE_BPS must be between 0 and 10000")
        if not 4 <= settings.bcrypt_rounds <= 31:
            raise ValueError("BCRYPT_ROUNDS must be between 4 and 31")
        return settings


# Known to everyone on purpose: it lets a newcomer run the service and mint tokens with
# `python -m payapi token` without configuring anything, and it is useless in production,
# where AUTH_SECRET is always set.
DEVELOPMENT_SECRET = "payapi-development-secret-do-not-use-in-production"
