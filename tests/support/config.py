"""The tests' settings: secrets, the service key, fast bcrypt, the sandbox as Ping++; and the
environment a payapi process (command, worker, gunicorn) gets for the same settings."""

import base64
import os

from payapi.infra.config import Settings

AUTH_SECRETS = ("test-auth-secret-0123456789abcdef0123456789", "test-auth-secret-before-rotation-0123456789")
SERVICE_KEY = "test-service-key"


def settings_for(database_url, pingpp_url, public_key_path, sms_file):
    """Settings for the app under test, on this database and this Ping++ sandbox."""
    return Settings(
        database_url=database_url,
        auth_secrets=AUTH_SECRETS,
        service_key=SERVICE_KEY,
        pingpp_api_key="sk_test_payapi",
        pingpp_app_id="app_test_payapi",
        pingpp_api_base=pingpp_url,
        pingpp_public_key_path=public_key_path,
        pingpp_timeout=1.0,
        sms_backend="file",
        sms_file=sms_file,
        bcrypt_rounds=4,
        settlement_hold_seconds=0,  # tests of the hold set their own
        password_rate_burst=1000,  # tests of the rate set their own (tests/api/test_load_shedding.py)
        # The outbox is written only with a NOTIFY_URL; nothing listens here (tests that deliver
        # point it at their own receiver).
        notify_url="http://127.0.0.1:9/payapi-notifications",
        notify_secret="whsec_" + base64.b64encode(b"n" * 32).decode(),
    )


def process_env(settings, **extra):
    """The environment a payapi process (command, worker, gunicorn) gets for these settings: production mode, complete."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYAPI_", "PINGPP_", "JAWSDB_", "CLEARDB_"))}
    env.update(
        PAYAPI_ENV="production",
        DATABASE_URL=settings.database_url,
        AUTH_SECRET=",".join(settings.auth_secrets),
        SERVICE_KEY=settings.service_key,
        PINGPP_API_KEY=settings.pingpp_api_key,
        PINGPP_APP_ID=settings.pingpp_app_id,
        PINGPP_API_BASE=settings.pingpp_api_base,
        PINGPP_PUBLIC_KEY_PATH=settings.pingpp_public_key_path,
        PINGPP_TIMEOUT=str(settings.pingpp_timeout),
        SMS_BACKEND=settings.sms_backend,
        SMS_FILE=settings.sms_file,
        BCRYPT_ROUNDS=str(settings.bcrypt_rounds),
        PASSWORD_RATE_BURST=str(settings.password_rate_burst),
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env
