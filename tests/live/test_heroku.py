"""The deploy as Heroku runs it, as far as this machine allows.

The Procfile's `release`, `web` and `worker` lines run through bash (as Heroku runs them) with
Heroku-style variables: PORT, a JAWSDB_URL with a percent-encoded password pointing at the test
MariaDB, production mode with every required setting. Then /healthz, one JSON line per request,
and a clean exit on SIGTERM (what Heroku sends every process of a dyno on restart or scale down).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse

import pymysql
import pytest
import requests

from payapi.domain.ids import new_id
from payapi.http.auth import Authenticator
from payapi.infra.config import Settings
from payapi.sandbox.sms import DEV_ALIYUN_KEY
from payapi.startup import NEEDS, SERVE, problems
from tests.support.config import AUTH_SECRETS, SERVICE_KEY
from tests.support.live_server import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def procfile():
    lines = {}
    with open(os.path.join(ROOT, "Procfile"), encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, command = line.split(":", 1)
                lines[name.strip()] = command.strip()
    return lines


def app_json():
    with open(os.path.join(ROOT, "app.json"), encoding="utf-8") as f:
        return json.load(f)


def test_app_json_runs_the_procfile_processes_with_jawsdb():
    manifest = app_json()
    assert set(manifest["formation"]) == set(procfile()) - {"release"} == {"web", "worker"}
    assert [a["plan"].split(":")[0] for a in manifest["addons"]] == ["jawsdb"]
    assert procfile()["release"] == "python -m payapi migrate"


def test_app_json_asks_for_everything_production_refuses_to_start_without():
    manifest = app_json()
    assert all(v.get("description") for v in manifest["env"].values())
    # What a deploy would hold: the add-on's URL, app.json's values, a stand-in for each required
    # or generated variable (the public key: a real one, since it is parsed).
    env = {"JAWSDB_URL": "mysql://u:p%40ss@host:3306/db"}
    for name, spec in manifest["env"].items():
        if "value" in spec:
            env[name] = spec["value"]
        elif spec.get("required") or spec.get("generator") == "secret":
            env[name] = "x" * 64
    from tests.support.pingpp import new_rsa_key, public_pem

    env["PINGPP_PUBLIC_KEY"] = public_pem(new_rsa_key()).decode()
    assert problems(Settings.from_env(env), SERVE)[0] == []
    assert manifest["env"]["SERVICE_KEY"]["generator"] == "secret"
    assert manifest["env"]["PAYAPI_ENV"]["value"] == "production"
    # Every variable app.json names is one payapi reads.
    source = "".join(
        open(os.path.join(ROOT, "payapi", "infra", n), encoding="utf-8").read() for n in ("config.py", "logs.py")
    )
    assert [n for n in manifest["env"] if f'"{n}"' not in source] == []
    assert "serve" in NEEDS


def test_python_version_file_names_a_version_this_machine_tests():
    with open(os.path.join(ROOT, ".python-version"), encoding="utf-8") as f:
        version = f.read().strip()
    assert re.fullmatch(r"3\.1[1-4]", version), version


# --- the Procfile, run as Heroku runs it -----------------------------------------------------------

PASSWORD = "j@wsdb/p:ss%w?rd"


@pytest.fixture
def jawsdb_url(request):
    if "mariadb" not in request.config.getoption("--db"):
        pytest.skip("--db does not include mariadb")
    proc = request.getfixturevalue("mariadb_proc")
    name = "heroku_" + os.urandom(4).hex()
    user = "u" + os.urandom(4).hex()
    root = pymysql.connect(unix_socket=proc.unixsocket, user="root")
    with root.cursor() as cur:
        # A JawsDB database: its own user, its own schema, a default charset nobody chose.
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET latin1")
        cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (user, PASSWORD))
        cur.execute(f"GRANT ALL ON {name}.* TO %s@'127.0.0.1'", (user,))
    root.close()
    return f"mysql://{user}:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:{proc.port}/{name}"


def dyno_env(jawsdb_url, pingpp_url, public_key_path, tmp_path, port):
    env = {
        # `python` and `gunicorn` are this interpreter's (on Heroku: the slug's), whatever pyenv's
        # shims would make of .python-version.
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        "HOME": str(tmp_path),  # also where gunicorn's control socket goes
        "LANG": "en_US.UTF-8",
        "PORT": str(port),
        "DYNO": "web.1",
        "WEB_CONCURRENCY": "2",
        "JAWSDB_URL": jawsdb_url,
        "AUTH_SECRET": ",".join(AUTH_SECRETS),
        "SERVICE_KEY": SERVICE_KEY,
        "PINGPP_API_KEY": "sk_test_payapi",
        "PINGPP_APP_ID": "app_test_payapi",
        "PINGPP_API_BASE": pingpp_url,
        "PINGPP_PUBLIC_KEY": open(public_key_path, encoding="ascii").read().replace("\n", "\\n"),
        # Codes through the Alibaba Cloud SDK to the SMS sandbox (in the Ping++ sandbox's process).
        "SMS_BACKEND": "aliyun",
        "ALIYUN_ACCESS_KEY_ID": DEV_ALIYUN_KEY[0],
        "ALIYUN_ACCESS_KEY_SECRET": DEV_ALIYUN_KEY[1],
        "ALIYUN_SMS_SIGN_NAME": "问诊平台",
        "ALIYUN_SMS_TEMPLATE_CODE": "SMS_154950909",
        "ALIYUN_SMS_ENDPOINT": pingpp_url,
        "PYTHONUNBUFFERED": "1",
    }
    if "VIRTUAL_ENV" in os.environ:
        env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
    return env


class Process:
    """One Procfile line under bash, in its own process group (a dyno), its output in a file."""

    def __init__(self, command, env, log_path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def records(self):
        text = open(self.log_path, encoding="utf-8").read()
        return [json.loads(line) for line in text.splitlines() if line.strip()]  # each line must be JSON

    def terminate(self, timeout=30):
        """SIGTERM to every process of the dyno, as Heroku does; -> exit status."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self._log.close()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_the_procfile_runs_release_web_and_worker_as_heroku_does(jawsdb_url, fake_pingpp_server, pingpp_keys, tmp_path):
    lines = procfile()
    port = free_port()
    env = dyno_env(jawsdb_url, fake_pingpp_server.url, pingpp_keys[1], tmp_path, port)

    release = subprocess.run(
        ["bash", "-c", lines["release"]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert release.returncode == 0, release.stderr
    assert "003_utf8mb4_bin" in release.stdout

    web = Process(lines["web"], env, tmp_path / "web.log")
    worker = Process(lines["worker"], {**env, "DYNO": "worker.1"}, tmp_path / "worker.log")
    try:

        def healthy():
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return web.proc.poll() is not None  # stop waiting: it exited

        wait_for(healthy, 60, "the web dyno's /healthz")
        assert web.proc.poll() is None, open(web.log_path).read()[-3000:]
        for i in range(3):
            answer = requests.get(
                f"http://127.0.0.1:{port}/healthz", headers={"X-Request-Id": f"heroku-{i}"}, timeout=5
            )
            assert answer.json() == {"code": 900, "db": "ok"}
        # An SMS code through the Alibaba Cloud SDK, in production mode, reaches the sandbox's phone.
        token = Authenticator(AUTH_SECRETS).mint(new_id(), phone="13700137000")
        sent = requests.post(f"http://127.0.0.1:{port}/rest/pay/smscode", json={}, headers={"auth": token}, timeout=10)
        assert sent.json() == {"code": 900}
        assert [m["provider"] for m in fake_pingpp_server.sms.messages_to("13700137000")] == ["aliyun"]
        wait_for(lambda: any(r["msg"] == "worker pass" for r in worker.records()), 60, "the worker's first pass")
    finally:
        web_status = web.terminate()
        worker_status = worker.terminate()

    web_lines, worker_lines = web.records(), worker.records()
    requests_logged = [
        r["request_id"] for r in web_lines if r["logger"] == "payapi.request" and r["request_id"].startswith("heroku-")
    ]
    assert sorted(requests_logged) == ["heroku-0", "heroku-1", "heroku-2"]  # one line per request
    assert web_status == 0 and any(r["msg"] == "Shutting down: Master" for r in web_lines), web_lines[-5:]
    assert worker_status == 0
    said = [r["msg"] for r in worker_lines]
    assert said[0] == "worker started" and said[-1] == "worker stopped", said
    assert not [r for r in web_lines + worker_lines if r["level"] in ("ERROR", "CRITICAL")]
    everything = open(web.log_path).read() + open(worker.log_path).read() + release.stdout + release.stderr
    assert PASSWORD not in everything and urllib.parse.quote(PASSWORD, safe="") not in everything
