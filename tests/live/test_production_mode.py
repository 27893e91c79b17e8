"""PAYAPI_ENV: production refuses every missing or unsafe setting with one log line and a non-zero
exit (gunicorn included: it stops instead of forking refusing workers forever); development runs
with what a newcomer has, and says so.
"""

import base64
import json
import os
import subprocess
import sys
import time

import pytest

from payapi.infra.config import DEVELOPMENT_SECRET, Settings
from payapi.startup import MIGRATE, SERVE, TOKEN, problems
from tests.support.config import AUTH_SECRETS, SERVICE_KEY
from tests.support.live_server import free_port, run_gunicorn
from tests.support.pingpp import new_rsa_key, private_pem, public_pem

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRONG = "s" * 32


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    public, private = new_rsa_key(), new_rsa_key()
    (directory / "public.pem").write_bytes(public_pem(public))
    (directory / "private.pem").write_bytes(private_pem(private))
    return directory


@pytest.fixture
def complete(keys, tmp_path):
    """A complete production configuration, as a Heroku app's config vars."""
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'payapi.db'}",
        "AUTH_SECRET": ",".join(AUTH_SECRETS),
        "SERVICE_KEY": SERVICE_KEY,
        "PINGPP_API_KEY": "sk_live_abc",
        "PINGPP_APP_ID": "app_abc",
        "PINGPP_PUBLIC_KEY_PATH": str(keys / "public.pem"),
        "SMS_BACKEND": "file",
    }


def refusals(env, needs=SERVE):
    return problems(Settings.from_env(env), needs)[0]


def test_a_complete_production_configuration_is_accepted(complete, keys):
    assert refusals(complete) == []
    as_values = {k: v for k, v in complete.items() if k != "PINGPP_PUBLIC_KEY_PATH"}
    as_values["PINGPP_PUBLIC_KEY"] = (keys / "public.pem").read_text().replace("\n", "\\n")  # one-line config var
    as_values["PINGPP_PRIVATE_KEY"] = (keys / "private.pem").read_text()
    assert refusals(as_values) == []
    jawsdb = {k: v for k, v in complete.items() if k != "DATABASE_URL"} | {"JAWSDB_URL": "mysql://u:p%40ss@h:3306/db"}
    assert refusals(jawsdb) == []


def _without(name):
    return lambda env, keys: {k: v for k, v in env.items() if k != name}


def _with(**changes):
    return lambda env, keys: {**env, **{k: v.format(keys=keys) for k, v in changes.items()}}


HOOK = "https://orders.example/payapi-notifications"
GOOD_NOTIFY_SECRET = "whsec_" + base64.b64encode(b"the order service's 32-byte key!").decode()

# Each unsafe configuration, and what the refusal line must name.
UNSAFE = [
    ("no AUTH_SECRET", _without("AUTH_SECRET"), "AUTH_SECRET is not set"),
    ("a short AUTH_SECRET", _with(AUTH_SECRET="x" * 31), "AUTH_SECRET: secret #1 of 1 is shorter than 32 bytes"),
    ("a short rotated AUTH_SECRET", _with(AUTH_SECRET=f"{STRONG},short"), "secret #2 of 2 is shorter than 32 bytes"),
    ("the development secret", _with(AUTH_SECRET=DEVELOPMENT_SECRET), "public development secret"),
    ("no SERVICE_KEY", _without("SERVICE_KEY"), "SERVICE_KEY is not set"),
    ("no PINGPP_API_KEY", _without("PINGPP_API_KEY"), "PINGPP_API_KEY is not set"),
    ("no PINGPP_APP_ID", _without("PINGPP_APP_ID"), "PINGPP_APP_ID is not set"),
    ("no public key", _without("PINGPP_PUBLIC_KEY_PATH"), "Ping++ public key is not set"),
    ("a public key file that is missing", _with(PINGPP_PUBLIC_KEY_PATH="{keys}/nothing.pem"), "cannot read it"),
    ("a public key that is not one", _with(PINGPP_PUBLIC_KEY_PATH="{keys}/private.pem"), "not a PEM public key"),
    (
        "a public key both ways",
        _with(PINGPP_PUBLIC_KEY="x"),
        "PINGPP_PUBLIC_KEY and PINGPP_PUBLIC_KEY_PATH are both set",
    ),
    (
        "a private key that is not one",
        _with(PINGPP_PRIVATE_KEY="garbage"),
        "PINGPP_PRIVATE_KEY: not an unencrypted PEM",
    ),
    ("no database URL", _without("DATABASE_URL"), "no database URL is set"),
    ("an unknown URL parameter", _with(DATABASE_URL="mysql://u:p@h/db?pool=5"), "unknown parameter(s) pool"),
    ("console SMS by default", _without("SMS_BACKEND"), "SMS_BACKEND is console"),
    ("console SMS", _with(SMS_BACKEND="console"), "SMS_BACKEND is console"),
    ("an unknown SMS backend", _with(SMS_BACKEND="twilio"), "SMS_BACKEND must be console, file, aliyun, tencent"),
    ("an unknown PAYAPI_ENV", _with(PAYAPI_ENV="staging"), "PAYAPI_ENV must be production or development"),
    ("an empty NOTIFY_SECRET key", _with(NOTIFY_URL=HOOK, NOTIFY_SECRET="whsec_"), "NOTIFY_SECRET: its key is 0 bytes"),
    (
        "a short NOTIFY_SECRET key",
        _with(NOTIFY_URL=HOOK, NOTIFY_SECRET="whsec_" + base64.b64encode(b"k" * 16).decode()),
        "its key is 16 bytes",
    ),
    (
        "a NOTIFY_SECRET that is not base64",
        _with(NOTIFY_URL=HOOK, NOTIFY_SECRET="whsec_c2VjcmV0*!"),
        "not standard base64",
    ),
    ("a NOTIFY_SECRET without whsec_", _with(NOTIFY_URL=HOOK, NOTIFY_SECRET=GOOD_NOTIFY_SECRET[6:]), "not whsec_"),
    ("NOTIFY_URL without NOTIFY_SECRET", _with(NOTIFY_URL=HOOK), "NOTIFY_SECRET is not"),
]


@pytest.mark.parametrize("change, says", [c[1:] for c in UNSAFE], ids=[c[0] for c in UNSAFE])
def test_production_refuses_each_unsafe_setting(complete, keys, change, says):
    found = refusals(change(complete, keys))
    assert len(found) == 1 and says in found[0], found


def test_every_refusal_is_named_together():
    found = refusals({})
    assert len(found) == 7, found  # database, auth secret, service key, api key, app id, public key, SMS


def test_development_runs_with_nothing_configured_and_says_what_it_tolerates():
    refused, warned = problems(Settings.from_env({"PAYAPI_ENV": "development"}), SERVE)
    assert refused == []
    said = " | ".join(warned)
    assert DEVELOPMENT_SECRET in said and "sqlite:///payapi.db" in said
    assert "PINGPP_API_KEY is not set" in said and "Ping++ public key is not set" in said


def test_a_notify_secret_of_24_to_64_bytes_is_accepted_and_development_only_warns_of_a_bad_one(complete):
    for size in (24, 64):
        secret = "whsec_" + base64.b64encode(b"k" * size).decode()
        assert refusals({**complete, "NOTIFY_URL": HOOK, "NOTIFY_SECRET": secret}) == []
    refused, warned = problems(
        Settings.from_env({"PAYAPI_ENV": "development", "NOTIFY_URL": HOOK, "NOTIFY_SECRET": "whsec_"}), SERVE
    )
    assert refused == [] and any("NOTIFY_SECRET: its key is 0 bytes" in w for w in warned)


BROKEN = [
    c
    for c in UNSAFE
    if c[0] in ("a public key that is not one", "a private key that is not one", "an unknown URL parameter")
]


@pytest.mark.parametrize("change, says", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_development_still_refuses_values_that_are_broken(complete, keys, change, says):
    env = change({**complete, "PAYAPI_ENV": "development"}, keys)
    found = problems(Settings.from_env(env), SERVE)[0]
    assert len(found) == 1 and says in found[0]


def test_migrate_and_token_need_only_what_they_use():
    assert refusals({"DATABASE_URL": "sqlite:///x.db"}, MIGRATE) == []
    assert [r.split(" (")[0] for r in refusals({}, MIGRATE)] == ["no database URL is set"]
    assert refusals({"AUTH_SECRET": STRONG}, TOKEN) == []
    assert refusals({}, TOKEN) == ["AUTH_SECRET is not set"]


def test_a_number_that_is_not_one_is_named():
    with pytest.raises(ValueError, match="PLATFORM_FEE_BPS must be a number, not 'ten'"):
        Settings.from_env({"PLATFORM_FEE_BPS": "ten"})
    with pytest.raises(ValueError, match="TIMEZONE 'Mars/Olympus' is not a known time zone"):
        Settings.from_env({"TIMEZONE": "Mars/Olympus"})


# --- the processes -----------------------------------------------------------------------------


def clean_env(config, cwd_is_root=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYAPI_", "PINGPP_", "JAWSDB_", "CLEARDB_"))}
    for name in ("DATABASE_URL", "AUTH_SECRET", "SERVICE_KEY", "SMS_BACKEND", "SMS_FILE"):
        env.pop(name, None)
    env.update(config)
    env["PYTHONPATH"] = ROOT
    return env


def lines_of(text):
    """Every line parsed as JSON: a line that is not one fails the test here."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_worker_refuses_to_start_with_one_line(complete):
    config = {k: v for k, v in complete.items() if k not in ("SERVICE_KEY", "PINGPP_APP_ID")}
    done = subprocess.run(
        [sys.executable, "-m", "payapi", "worker"],
        cwd=ROOT,
        env=clean_env(config),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    (line,) = lines_of(done.stderr)
    assert line["level"] == "CRITICAL" and line["env"] == "production"
    assert "SERVICE_KEY is not set" in line["msg"] and "PINGPP_APP_ID is not set" in line["msg"]


def test_token_refuses_the_development_secret_in_production():
    done = subprocess.run(
        [sys.executable, "-m", "payapi", "token", "54f3b5fec08b6f54100c1cbe"],
        cwd=ROOT,
        env=clean_env({"AUTH_SECRET": DEVELOPMENT_SECRET}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    (line,) = lines_of(done.stderr)
    assert "public development secret" in line["msg"]


def test_gunicorn_refuses_in_the_master_with_one_json_line_and_boots_no_worker(complete, tmp_path):
    config = {k: v for k, v in complete.items() if k not in ("PINGPP_API_KEY", "SMS_BACKEND")}
    env = clean_env({**config, "PORT": str(free_port()), "WEB_CONCURRENCY": "2", "HOME": str(tmp_path)})
    code, out = run_gunicorn(["-c", "gunicorn.conf.py", "--no-control-socket"], env, ROOT)
    assert code != 0
    lines = lines_of(out)  # gunicorn's own lines are JSON too
    (refusal,) = [r for r in lines if r["level"] == "CRITICAL"]
    assert "PINGPP_API_KEY is not set" in refusal["msg"] and "SMS_BACKEND is console" in refusal["msg"]
    assert not [r for r in lines if "Booting worker" in r["msg"]]


def test_gunicorn_without_our_config_file_stops_when_its_workers_refuse(complete, tmp_path):
    """`gunicorn payapi.wsgi:application` alone: the workers refuse, and gunicorn stops instead of respawning them."""
    config = {k: v for k, v in complete.items() if k != "AUTH_SECRET"}
    env = clean_env({**config, "HOME": str(tmp_path)})
    started = time.monotonic()
    code, out = run_gunicorn(
        ["--bind", f"127.0.0.1:{free_port()}", "--workers", "2", "--no-control-socket", "payapi.wsgi:application"],
        env,
        tmp_path,  # not the repository: no gunicorn.conf.py is read
    )
    # 3 is gunicorn's "worker failed to boot"; when both workers refuse at once, gunicorn 27 may
    # trip over the second while halting and exit 1 with a traceback. Either way it stopped.
    assert code in (1, 3), out[-3000:]
    assert "Worker failed to boot" in out
    assert time.monotonic() - started < 40
    assert out.count("Booting worker") <= 2, out[-3000:]
    refusals_ = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"CRITICAL"' in line]
    assert refusals_ and all("AUTH_SECRET is not set" in r["msg"] for r in refusals_)


def test_development_mode_runs_the_commands_with_nothing_configured(tmp_path):
    env = clean_env({"PAYAPI_ENV": "development", "HOME": str(tmp_path)})
    migrated = subprocess.run(
        [sys.executable, "-m", "payapi", "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "payapi.db").exists()
    warned = [r for r in lines_of(migrated.stderr) if r["level"] == "WARNING"]
    assert any("using sqlite:///payapi.db" in r["msg"] for r in warned)

    once = subprocess.run(
        [sys.executable, "-m", "payapi", "worker", "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert once.returncode == 0, once.stderr
    said = " | ".join(r["msg"] for r in lines_of(once.stderr))
    assert DEVELOPMENT_SECRET in said and "PINGPP_API_KEY is not set" in said
    assert json.loads(once.stdout.splitlines()[-1])["payouts"] == {"sent": 0, "failed": 0}
