"""What a process checks before it serves, and the one log line that says why it will not.

Production (PAYAPI_ENV unset or `production`) refuses every missing or unsafe setting that
API.md lists; development (`PAYAPI_ENV=development`) runs with the public development secret,
console SMS, the SQLite default and no Ping++ credentials, and says so in warning lines.
Broken values (a URL payapi cannot use, a key that is not a key) are refused in both modes.

Each command checks only what it uses: `serve` (web and worker) everything, `migrate` and
`database` (operator commands) the database URL, `token` the auth secret.
"""

import logging
import os

from payapi.infra import logs
from payapi.infra.config import DEFAULT_DATABASE_URL, DEVELOPMENT, DEVELOPMENT_SECRET, PRODUCTION, Settings

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 32
SERVE, MIGRATE, TOKEN, DATABASE, GATEWAY = "serve", "migrate", "token", "database", "gateway"
NEEDS = {
    SERVE: {"database", "auth", "service", "pingpp", "sms", "notify"},
    MIGRATE: {"database"},
    DATABASE: {"database"},
    GATEWAY: {"database", "pingpp"},  # operator commands that ask Ping++ (withdrawals retry / fail)
    TOKEN: {"auth"},
}
# gunicorn's arbiter stops (instead of forking a new worker forever) when a worker exits with this.
GUNICORN_WORKER_BOOT_ERROR = 3

# Set in a gunicorn master that has checked everything; its forked workers inherit it and do
# not repeat the checks (or their warning lines) once per worker.
checked = False


def problems(settings, needs):
    """-> (refusals, warnings): what this process must not run with, and what it only mentions."""
    refusals, warnings = [], []
    production = settings.env == PRODUCTION
    relaxed = warnings if settings.env == DEVELOPMENT else refusals  # what development tolerates
    if settings.env not in (PRODUCTION, DEVELOPMENT):
        refusals.append(f"PAYAPI_ENV must be production or development, not {settings.env!r}")
    wanted = NEEDS[needs]

    if "database" in wanted:
        _check_database_url(settings, refusals, relaxed)

    if "auth" in wanted:
        if not settings.auth_secrets:
            refusals.append("AUTH_SECRET is not set")
        elif DEVELOPMENT_SECRET in settings.auth_secrets:
            (refusals if production else warnings).append(
                f"AUTH_SECRET is not set: tokens use the public development secret {DEVELOPMENT_SECRET!r}"
                if settings.auth_secrets == (DEVELOPMENT_SECRET,)
                else "AUTH_SECRET contains the public development secret"
            )
        short = [
            i
            for i, s in enumerate(settings.auth_secrets, 1)
            if s != DEVELOPMENT_SECRET and len(s.encode()) < MIN_SECRET_BYTES
        ]
        if short:
            which = ", ".join(f"#{i}" for i in short)
            relaxed.append(
                f"AUTH_SECRET: secret {which} of {len(settings.auth_secrets)} is shorter than {MIN_SECRET_BYTES} bytes"
            )

    if "service" in wanted and not settings.service_key:
        relaxed.append("SERVICE_KEY is not set (every /internal route answers 901)")

    if "pingpp" in wanted:
        if not settings.pingpp_api_key:
            relaxed.append("PINGPP_API_KEY is not set (every Ping++ call fails: 920)")
        if not settings.pingpp_app_id:
            relaxed.append("PINGPP_APP_ID is not set")
        _check_key(settings, "PUBLIC", True, refusals, relaxed)
        _check_key(settings, "PRIVATE", False, refusals, relaxed)

    if "notify" in wanted and (settings.notify_url or settings.notify_secret):
        from payapi.infra.outbox import secret_problem

        if not settings.notify_secret:
            relaxed.append("NOTIFY_URL is set but NOTIFY_SECRET is not (messages would go unsigned)")
        elif problem := secret_problem(settings.notify_secret):
            relaxed.append(
                f"{problem} (whsec_ then standard base64 of 24-64 bytes; an empty or bad key lets "
                "anyone forge messages to the order service, or signs none)"
            )

    if "sms" in wanted:
        _check_sms(settings, production, refusals, relaxed, warnings)
    return refusals, warnings


def _check_sms(settings, production, refusals, relaxed, warnings):
    from payapi.users.sms_providers import (
        ENDPOINT_SETTING,
        PROVIDERS,
        REQUIRED,
        backend_names,
        is_loopback,
        parse_endpoint,
    )

    names = backend_names(settings.sms_backend)
    if names in (["console"], ["file"]):
        if names == ["console"] and production:
            refusals.append("SMS_BACKEND is console: it writes live codes into the log stream (set SMS_BACKEND)")
        elif names == ["file"]:
            warnings.append(f"SMS_BACKEND is file: codes are written to {settings.sms_file} and reach no phone")
        return
    if not names or any(name not in PROVIDERS for name in names) or len(set(names)) != len(names):
        refusals.append(
            f"SMS_BACKEND must be console, file, aliyun, tencent or both providers in order "
            f"(aliyun,tencent), not {settings.sms_backend!r}"
        )
        return
    for name in names:
        missing = [variable for variable, field in REQUIRED[name] if not getattr(settings, field)]
        if missing:
            relaxed.append(
                f"SMS_BACKEND={settings.sms_backend}: {', '.join(missing)} not set (every code via {name} fails)"
            )
        variable, field = ENDPOINT_SETTING[name]
        try:
            scheme, host = parse_endpoint(getattr(settings, field))
        except ValueError as exc:
            refusals.append(f"{variable}: {exc}")
            continue
        if scheme == "http" and production and not is_loopback(host):
            refusals.append(f"{variable}: plain http to {host} would send signed requests and codes in clear text")


def _check_database_url(settings, refusals, relaxed):
    from payapi.infra.db import DatabaseUrlError, open_database

    if not settings.database_url_source:
        relaxed.append(
            "no database URL is set (DATABASE_URL, JAWSDB_URL or CLEARDB_DATABASE_URL)"
            + (
                f": using {DEFAULT_DATABASE_URL}, a local SQLite file"
                if settings.env == DEVELOPMENT
                else ": a SQLite file on an ephemeral disk would lose money records"
            )
        )
    try:
        open_database(settings.database_url)  # parses; connects only when used
    except DatabaseUrlError as exc:
        refusals.append(f"{settings.database_url_source or 'DATABASE_URL'}: {exc}")


def _check_key(settings, which, required, refusals, relaxed):
    from payapi.infra.gateway import load_private_key, load_public_key, read_key

    value = getattr(settings, f"pingpp_{which.lower()}_key")
    path = getattr(settings, f"pingpp_{which.lower()}_key_path")
    name = f"PINGPP_{which}_KEY"
    if value and path:
        refusals.append(f"{name} and {name}_PATH are both set; set one")
        return
    if not value and not path:
        if required:
            relaxed.append(f"Ping++ public key is not set ({name} or {name}_PATH; every webhook answers 401)")
        return
    where = name if value else f"{name}_PATH ({path})"
    try:
        pem = read_key(value, path)
        (load_public_key if which == "PUBLIC" else load_private_key)(pem)
    except OSError as exc:
        refusals.append(f"{where}: cannot read it ({exc.strerror or type(exc).__name__})")
    except ValueError as exc:
        refusals.append(f"{where}: {exc}")


def refuse(what, settings_env, reasons, exit_code):
    """The one log line, then exit."""
    log.critical(
        "%s refuses to start (PAYAPI_ENV=%s): %s",
        what,
        settings_env,
        "; ".join(reasons),
        extra={"fields": {"env": settings_env, "problems": reasons}},
    )
    raise SystemExit(exit_code)


def settings_for(what, needs, exit_code=1, environ=None):
    """Settings from the environment, checked for this kind of process; refuses (exits) when unsafe."""
    logs.configure()
    env = os.environ if environ is None else environ
    try:
        settings = Settings.from_env(env)
    except ValueError as exc:
        refuse(what, env.get("PAYAPI_ENV") or PRODUCTION, [str(exc)], exit_code)
    refusals, warnings = problems(settings, needs)
    if refusals:
        refuse(what, settings.env, refusals, exit_code)
    for warning in [] if checked else warnings:  # a forked gunicorn worker: its master said them
        log.warning("%s (PAYAPI_ENV=%s): %s", what, settings.env, warning)
    from payapi.infra import outbox as notifications  # not at import: it loads the models

    notifications.configure(settings)  # a command that changes records writes messages only with NOTIFY_URL
    return settings


def check_tables(what, settings, database, exit_code=1):
    """Refuse tables whose text columns cannot hold 4-byte UTF-8 (MySQL; SQLite always can), and a
    STATEMENT binary log (db.binlog_problem).

    A database that cannot be reached is only a warning: /healthz says 503 until it can be,
    and a dyno that crashes at boot while the database restarts helps nobody.
    """
    from payapi.infra.db import BINARY_COLLATIONS, binlog_problem, describe_error, text_columns
    from payapi.infra.models import ALL_MODELS

    tables = [m._meta.table_name for m in ALL_MODELS]
    was_closed = database.is_closed()
    try:
        database.connect(reuse_if_open=True)
        rows = text_columns(database, tables)
        binlog = binlog_problem(database)
    except Exception as exc:  # noqa: BLE001 - any failure to look is reported, not fatal
        log.warning("%s could not check table character sets: %s", what, describe_error(exc, database))
        return
    finally:
        if was_closed:
            database.close()
    if binlog:
        refuse(what, settings.env, [binlog], exit_code)
    if not rows:
        return  # SQLite, or not migrated yet
    narrow = {}
    for table, _, charset, _ in rows:
        if charset != "utf8mb4":
            narrow.setdefault(table, set()).add(charset)
    if narrow:
        shown = ", ".join(f"{table} ({', '.join(sorted(charsets))})" for table, charsets in sorted(narrow.items()))
        refuse(
            what,
            settings.env,
            [
                f"tables cannot hold 4-byte characters (emoji, rare CJK), they are not utf8mb4: {shown}; "
                "run `python -m payapi migrate`"
            ],
            exit_code,
        )
    loose = sorted({t for t, _, _, collation in rows if collation not in BINARY_COLLATIONS})
    if loose:
        log.warning(
            "%s: tables %s compare text without a binary collation (ids equal in another case); "
            "run `python -m payapi migrate`",
            what,
            ", ".join(loose),
        )


def check_serving(what, exit_code=1):
    """Settings and tables checked as a serving process needs them; exits with one log line if unsafe.

    gunicorn.conf.py runs this in the master (it imports only config, db, models and the
    gateway), so a refusal is one line and no worker boots.
    """
    from payapi.infra.db import open_database

    settings = settings_for(what, SERVE, exit_code)
    database = open_database(settings.database_url)
    check_tables(what, settings, database, exit_code)
    global checked
    checked = True
    return settings
