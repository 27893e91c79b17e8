"""A real gunicorn (several worker processes) on 127.0.0.1, and clients that hit it in parallel.

For tests that need processes, not threads: exactly-once across workers, locks held in the
database, a worker that must not be killed. Every wait here is bounded. The benchmark
(bench/run.py) starts and seeds its servers with the same helpers.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from payapi.domain.ids import new_id
from payapi.http.auth import Authenticator
from tests.support.config import AUTH_SECRETS, SERVICE_KEY
from tests.support.pingpp import event, sign
from tests.support.scenarios import ACCOUNT, PASSWD, pay_request

ROOT = Path(__file__).resolve().parent.parent.parent
REQUEST_TIMEOUT = 20  # seconds, for every request a test makes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Answer:
    """One HTTP answer: status, parsed JSON body (None if it was not JSON), seconds it took."""

    def __init__(self, status, body, text, seconds):
        self.status, self.body, self.text, self.seconds = status, body, text, seconds

    @property
    def code(self):
        return self.body.get("code") if isinstance(self.body, dict) else None

    def __repr__(self):
        return f"<{self.status} {self.text[:200]!r} {self.seconds:.2f}s>"


class LiveServer:
    """`gunicorn -c gunicorn.conf.py` in a subprocess, configured like production through its environment.

    app: another WSGI app under the same configuration instead of payapi (the benchmark's bare
    falcon app), answering 200 at ready_path. root: the checkout to serve from (the benchmark
    measures an older version of payapi from its own tree). each_worker: wait until every worker
    has answered a request (told by payapi's request lines, which name the pid).
    """

    def __init__(
        self,
        tmp_dir,
        database_url=None,
        pingpp_url=None,
        public_key_path=None,
        workers=4,
        worker_connections=None,
        app=None,
        root=ROOT,
        ready_path="/healthz",
        each_worker=None,
        **extra_env,
    ):
        self.port = free_port()
        self.worker_connections = worker_connections
        self.app, self.root, self.ready_path = app, Path(root), ready_path
        self.each_worker = app is None if each_worker is None else each_worker
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tmp_dir) / "gunicorn.log"
        self.sms_file = Path(tmp_dir) / "sms.jsonl"
        self.workers = workers
        self.env = dict(os.environ)
        self.env.update(
            PAYAPI_ENV="production",  # a complete production configuration: what the tests exercise
            PORT=str(self.port),
            WEB_CONCURRENCY=str(workers),
            AUTH_SECRET=",".join(AUTH_SECRETS),
            SERVICE_KEY=SERVICE_KEY,
            PINGPP_API_KEY="sk_test_payapi",
            PINGPP_APP_ID="app_test_payapi",
            SMS_BACKEND="file",
            SMS_FILE=str(self.sms_file),
            BCRYPT_ROUNDS="4",
            PASSWORD_RATE_BURST="1000",  # as in the suite's settings; tests of the rate set their own
            SETTLEMENT_HOLD_SECONDS="0",
            PYTHONUNBUFFERED="1",
        )
        given = {"DATABASE_URL": database_url, "PINGPP_API_BASE": pingpp_url, "PINGPP_PUBLIC_KEY_PATH": public_key_path}
        self.env.update({k: v for k, v in given.items() if v is not None})
        self.env.update({k: str(v) for k, v in extra_env.items()})
        self.proc = None

    def migrate(self):
        """`python -m payapi migrate` of this server's checkout with its environment (the Procfile's release step)."""
        done = subprocess.run(
            [sys.executable, "-m", "payapi", "migrate"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed in {self.root}:\n{done.stdout}{done.stderr}")
        return self

    def start(self, timeout=30):
        self._log = open(self.log_path, "ab")
        # The config file's bind is 0.0.0.0:$PORT (Heroku); the command line narrows it to loopback;
        # no control socket, whose default path would be shared by every gunicorn on the machine;
        # --worker-connections = threads: a worker takes no more connections than it has threads and
        # the rest wait in the backlog for any worker, so a burst is served by several processes
        # (with the default 1000 one gthread worker often accepts a whole burst and queues it).
        # worker_connections: the Procfile's own setting instead (gunicorn's 1000), for slow clients.
        # Who answered a request is the pid on its payapi.request log line.
        # A positional APP_MODULE overrides the config file's wsgi_app, as --bind overrides its bind.
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--no-control-socket",
                "--worker-connections",
                str(self.worker_connections or self.env.get("GUNICORN_THREADS", "4")),
                *([self.app] if self.app else []),
            ],
            cwd=self.root,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not become healthy in {timeout}s:\n{self.log()[-3000:]}")
            booted = self.log().count("Booting worker")
            try:
                healthy = requests.get(self.url + self.ready_path, timeout=2).status_code == 200
            except requests.RequestException:
                healthy = False
            if healthy and booted >= self.workers:
                break
            time.sleep(0.1)
        # Each worker builds the app after "Booting worker"; until every one of them has answered,
        # a burst could be served by the first one alone.
        while self.each_worker and len(self.served_by()) < self.workers:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"not every gunicorn worker answered in {timeout}s:\n{self.log()[-3000:]}")
            parallel(4 * self.workers, lambda i: self.get("/healthz"))
        return self

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()

    def log(self):
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self):
        """A position in the log; served_by(mark) looks only at what came after it."""
        return len(self.log())

    def records(self, since=0):
        """The log's lines since the mark, each parsed as the JSON object it must be."""
        return [json.loads(line) for line in self.log()[since:].splitlines() if line.strip()]

    def served_by(self, since=0):
        """Counter of worker pid -> requests answered since the mark."""
        return Counter(r["pid"] for r in self.records(since) if r.get("logger") == "payapi.request")

    def worker_pids(self):
        """Pids of the workers gunicorn booted so far (a killed one is replaced by a new pid)."""
        return [
            int(r["msg"].rsplit(":", 1)[1])
            for r in self.records()
            if r.get("logger") == "gunicorn.error" and r["msg"].startswith("Booting worker with pid:")
        ]

    # --- HTTP ---------------------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, raw=None, timeout=REQUEST_TIMEOUT):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        started = time.monotonic()
        response = requests.request(method, self.url + path, data=data, headers=hdrs, timeout=timeout)
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        return Answer(response.status_code, parsed, response.text, time.monotonic() - started)

    def get(self, path, headers=None, timeout=REQUEST_TIMEOUT):
        return self.request("GET", path, headers=headers, timeout=timeout)

    def post(self, path, body=None, headers=None, raw=None, timeout=REQUEST_TIMEOUT):
        return self.request("POST", path, body=body, headers=headers, raw=raw, timeout=timeout)

    # --- the callers ----------------------------------------------------------------------------

    def internal_pay(self, timeout=REQUEST_TIMEOUT, **fields):
        """POST /internal/pays as the order service; fields override a valid order body."""
        body = pay_request(**fields)
        return self.post("/internal/pays", body, headers={"X-Service-Key": SERVICE_KEY}, timeout=timeout)

    def deliver(self, private_key, evt):
        """POST one signed Ping++ event to the webhook."""
        raw = json.dumps(evt).encode()
        return self.post("/rest/pay/webhook", raw=raw, headers={"X-Pingplusplus-Signature": sign(private_key, raw)})

    def user(self, phone=None):
        return LiveUser(self, phone)

    def sms_messages(self):
        """Every SMS sent so far, oldest first: {"phone", "code", ...}."""
        try:
            with open(self.sms_file, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def sms_codes(self, phone):
        return [m["code"] for m in self.sms_messages() if m["phone"] == phone]


class LiveUser:
    def __init__(self, server, phone=None):
        self.server = server
        self.id = new_id()
        self.phone = phone or "139" + f"{secrets.randbelow(10**8):08d}"
        self.headers = {
            "auth": Authenticator(AUTH_SECRETS).mint(self.id, phone=self.phone),
            "client": "1.2.3.4",
            "platform": "android",
            "channel": "TencentAPP",
        }

    def get(self, path):
        return self.server.get(path, headers=self.headers)

    def post(self, path, body=None):
        return self.server.post(path, body if body is not None else {}, headers=self.headers)


def parallel(n, call, timeout=60):
    """Run call(i) for i in range(n) on n threads released together by a barrier; -> list of results."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait(timeout=15)
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=timeout) for f in futures]


def paid_charge(server, fake, private_key=None, **fields):
    """A pay created through /internal/pays and marked paid at the fake; -> (pay info, paid charge).

    With private_key, its charge.succeeded event is delivered once (the expert is credited).
    """
    created = server.internal_pay(**fields)
    assert created.status == 200 and created.code == 900, created
    info = created.body["info"]
    charge = fake.mark_paid(info["charge"]["id"])
    if private_key is not None:
        answer = server.deliver(private_key, event("charge.succeeded", charge))
        assert answer.status == 200 and answer.body["result"] == "applied", answer
    return info, charge


def expert(server, fake, private_key, balance):
    """A user with a pay password, a withdraw account (set through an SMS code) and a balance."""
    user = server.user()
    assert user.post("/rest/pay/passwd", {"passwd": PASSWD}).code == 900
    assert user.post("/rest/pay/smscode", {"purpose": "withdrawInfo"}).code == 900
    (code,) = server.sms_codes(user.phone)
    answer = user.post("/rest/pay/withdrawInfo", {"smscode": code, **ACCOUNT})
    assert answer.code == 900, answer
    paid_charge(server, fake, private_key, expert_id=user.id, amount=balance)
    return user


class Trickler(threading.Thread):
    """A client that sends its headers (or its body) one piece a second, as issue 9 measured.

    answer: what the server said before it closed the connection (None: nothing); lasted: seconds
    until then. give_up_after: leave by itself after that long (a server that never cuts it off).
    """

    def __init__(self, port, slow_part, give_up_after=None):
        super().__init__(daemon=True)
        self.port, self.slow_part, self.give_up_after = port, slow_part, give_up_after
        self.opened = threading.Event()
        self.answer, self.lasted = None, None

    def run(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        started = time.monotonic()
        try:
            if self.slow_part == "body":
                sock.sendall(b"POST /rest/pay/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            else:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            self.opened.set()
            while self.give_up_after is None or time.monotonic() - started < self.give_up_after:
                sock.sendall(b"x" if self.slow_part == "body" else b"X-Slow: 1\r\n")
                time.sleep(1)
                # Whatever the server said before it closed the connection.
                sock.setblocking(False)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    data = None
                sock.setblocking(True)
                if data is not None:
                    self.answer = data
                    return
        except OSError:
            return
        finally:
            self.lasted = time.monotonic() - started
            self.opened.set()
            sock.close()


def run_gunicorn(args, env, cwd, timeout=45):
    """gunicorn that is expected to stop by itself (a refusal): -> (exit status, its output).

    A test fails if it is still running after timeout (then it is killed).
    """
    import pytest

    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"gunicorn did not stop by itself within {timeout}s:\n{out[-3000:]}")
    return proc.returncode, out
