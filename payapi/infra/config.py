"""Settings: everything the service reads from the environment, read once.

What is *safe* to run with (production refuses what development tolerates) is decided in
`startup.py`; this module only reads.
"""

import dataclasses
import os
import zoneinfo

DEFAULT_DATABASE_URL = "sqlite:///payapi.db"
PRODUCTION, DEVELOPMENT = "production", "development"
# Heroku's add-ons write their own variable; DATABASE_URL, when set, wins.
DATABASE_URL_VARIABLES = ("DATABASE_URL", "JAWSDB_URL", "CLEARDB_DATABASE_URL")


@dataclasses.dataclass(frozen=True)
class Settings:
    env: str = PRODUCTION
    database_url: str = DEFAULT_DATABASE_URL
    # The variable the URL came from ("" when it is the SQLite default nobody asked for).
    database_url_source: str = ""
    # The first secret signs, every one of them verifies (key rotation).
    auth_secrets: tuple[str, ...] = ()
    service_key: str = ""
    pingpp_api_key: str = ""
    pingpp_app_id: str = ""
    pingpp_api_base: str = ""
    # Keys as PEM text (PINGPP_*_KEY) or as files (PINGPP_*_KEY_PATH); startup.py checks them.
    pingpp_private_key: str = ""
    pingpp_private_key_path: str = ""
    pingpp_public_key: str = ""
    pingpp_public_key_path: str = ""
    pingpp_timeout: float = 5.0
    sms_backend: str = "console"
    sms_file: str = "sms.jsonl"
    # SMS providers (sms_providers.py); endpoints: a host (HTTPS) or http://host:port (a sandbox).
    aliyun_access_key_id: str = ""
    aliyun_access_key_secret: str = ""
    aliyun_sms_sign_name: str = ""
    aliyun_sms_template_code: str = ""
    aliyun_sms_endpoint: str = "dysmsapi.aliyuncs.com"
    tencent_secret_id: str = ""
    tencent_secret_key: str = ""
    tencent_sms_sdk_app_id: str = ""
    tencent_sms_sign_name: str = ""
    tencent_sms_template_id: str = ""
    tencent_sms_region: str = "ap-guangzhou"
    tencent_sms_endpoint: str = "sms.tencentcloudapi.com"
    timezone: str = "Asia/Shanghai"
    bcrypt_rounds: int = 12
    # Each user's own rate of slow (bcrypt) operations: a burst, then one per interval.
    password_rate_burst: int = 10
    password_rate_interval: int = 60
    platform_fee_bps: int = 0
    withdraw_min: int = 100
    withdraw_max: int = 5_000_000
    pay_money_max: int = 100_000_000
    settlement_hold_seconds: int = 7 * 24 * 3600
    notify_url: str = ""
    notify_secret: str = ""

    @property
    def production(self):
        return self.env != DEVELOPMENT

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
        mode = env.get("PAYAPI_ENV", "").strip().lower() or PRODUCTION
        source = next((name for name in DATABASE_URL_VARIABLES if env.get(name, "").strip()), "")
        database_url = env[source].strip() if source else DEFAULT_DATABASE_URL
        secrets_ = tuple(s.strip() for s in env.get("AUTH_SECRET", "").split(",") if s.strip())
        if not secrets_ and mode == DEVELOPMENT:
            secrets_ = (DEVELOPMENT_SECRET,)
        settings = cls(
            env=mode,
            database_url=database_url,
            database_url_source=source,
            auth_secrets=secrets_,
            service_key=env.get("SERVICE_KEY", ""),
            pingpp_api_key=env.get("PINGPP_API_KEY", ""),
            pingpp_app_id=env.get("PINGPP_APP_ID", ""),
            pingpp_api_base=env.get("PINGPP_API_BASE", ""),
            pingpp_private_key=env.get("PINGPP_PRIVATE_KEY", "").strip(),
            pingpp_private_key_path=env.get("PINGPP_PRIVATE_KEY_PATH", "").strip(),
            pingpp_public_key=env.get("PINGPP_PUBLIC_KEY", "").strip(),
            pingpp_public_key_path=env.get("PINGPP_PUBLIC_KEY_PATH", "").strip(),
            pingpp_timeout=_number(env, "PINGPP_TIMEOUT", "5", float),
            sms_backend=env.get("SMS_BACKEND", "console"),
            sms_file=env.get("SMS_FILE", "sms.jsonl"),
            **{field: env.get(name, "").strip() or default for name, field, default in SMS_VARIABLES},
            timezone=env.get("TIMEZONE", "Asia/Shanghai"),
            bcrypt_rounds=_number(env, "BCRYPT_ROUNDS", "12", int),
            password_rate_burst=_number(env, "PASSWORD_RATE_BURST", "10", int),
            password_rate_interval=_number(env, "PASSWORD_RATE_INTERVAL", "60", int),
            platform_fee_bps=_number(env, "PLATFORM_FEE_BPS", "0", int),
            withdraw_min=_number(env, "WITHDRAW_MIN", "100", int),
            withdraw_max=_number(env, "WITHDRAW_MAX", "5000000", int),
            settlement_hold_seconds=_number(env, "SETTLEMENT_HOLD_SECONDS", str(7 * 24 * 3600), int),
            notify_url=env.get("NOTIFY_URL", ""),
            notify_secret=env.get("NOTIFY_SECRET", ""),
        )
        try:
            _ = settings.tz  # fail at start-up, not on the first withdrawal, if TIMEZONE is wrong
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"TIMEZONE {settings.timezone!r} is not a known time zone") from None
        if not 0 <= settings.platform_fee_bps <= 10_000:
            raise ValueError("PLATFORM_FEE_BPS must be between 0 and 10000")
        if settings.settlement_hold_seconds < 0:
            raise ValueError("SETTLEMENT_HOLD_SECONDS must not be negative")
        if settings.password_rate_burst < 1 or settings.password_rate_interval < 0:
            raise ValueError("PASSWORD_RATE_BURST must be at least 1 and PASSWORD_RATE_INTERVAL not negative")
        if not 4 <= settings.bcrypt_rounds <= 31:
            raise ValueError("BCRYPT_ROUNDS must be between 4 and 31")
        return settings


SMS_VARIABLES = (
    ("ALIYUN_ACCESS_KEY_ID", "aliyun_access_key_id", ""),
    ("ALIYUN_ACCESS_KEY_SECRET", "aliyun_access_key_secret", ""),
    ("ALIYUN_SMS_SIGN_NAME", "aliyun_sms_sign_name", ""),
    ("ALIYUN_SMS_TEMPLATE_CODE", "aliyun_sms_template_code", ""),
    ("ALIYUN_SMS_ENDPOINT", "aliyun_sms_endpoint", "dysmsapi.aliyuncs.com"),
    ("TENCENT_SECRET_ID", "tencent_secret_id", ""),
    ("TENCENT_SECRET_KEY", "tencent_secret_key", ""),
    ("TENCENT_SMS_SDK_APP_ID", "tencent_sms_sdk_app_id", ""),
    ("TENCENT_SMS_SIGN_NAME", "tencent_sms_sign_name", ""),
    ("TENCENT_SMS_TEMPLATE_ID", "tencent_sms_template_id", ""),
    ("TENCENT_SMS_REGION", "tencent_sms_region", "ap-guangzhou"),
    ("TENCENT_SMS_ENDPOINT", "tencent_sms_endpoint", "sms.tencentcloudapi.com"),
)


def _number(env, name, default, kind):
    value = env.get(name, default)
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {value!r}") from None


# Known to everyone on purpose: it lets a newcomer run the service and mint tokens with
# `python -m payapi token` without configuring anything in development; production refuses it.
DEVELOPMENT_SECRET = "payapi-development-secret-do-not-use-in-production"
