"""`python -m payapi dev`: the whole flow on this machine, for a newcomer, in one command.

Development mode (PAYAPI_ENV=development), SQLite in ./payapi-dev.db (migrated first), the Ping++
sandbox on PORT+1 delivering its webhooks to the web app, the web app under gunicorn on PORT
(default 8000) and the worker (a pass every 5 s), all on 127.0.0.1. It prints a user's and an
expert's token and the service key, writes them to ./payapi-dev.env for a shell to source, and
stops every process it started on Ctrl-C or SIGTERM. It also makes an operator (`dev`, a new
password each run) and prints the console's address and login.

Each child runs in its own process group (a Ctrl-C in the terminal reaches only this process,
which then stops them in order: worker, web, sandbox) and writes to ./payapi-dev.log, which this
process shows on the terminal. SMS codes go through the real Alibaba Cloud SDK (SMS_BACKEND=aliyun)
to the SMS sandbox in the sandbox process, which shows them on its page, in its log lines and to
`python -m payapi sandbox sms --last PHONE`.
"""

import argparse
import datetime
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from payapi.domain.ids import new_id
from payapi.sandbox.sms import DEV_ALIYUN_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DB_FILE = "payapi-dev.db"
LOG_FILE = "payapi-dev.log"
ENV_FILE = "payapi-dev.env"
KEY_FILE = "payapi-dev-sandbox-key.pem"  # the sandbox's private key: kept, so restarts keep trusting it
PUBLIC_KEY_FILE = "payapi-dev-sandbox-public.pem"
USER_PHONE, EXPERT_PHONE = "13800138000", "13900139000"
OPERATOR = "dev"  # the newcomer's operator account for the console at /ops/
TOKEN_TTL = 7 * 86400
STOP_GRACE = 10.0  # seconds each child gets to stop before it is killed
READY_TIMEOUT = 60.0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m payapi dev", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8000")),
        help="web app port (default $PORT or 8000); the sandbox listens on the next one",
    )
    parser.add_argument("--worker-interval", type=float, default=5.0, help="seconds between worker passes (default 5)")
    args = parser.parse_args(argv)
    # A pipe or a file is block-buffered: the banner (tokens, the console's login) and the log
    # lines must reach a newcomer's `| tee` or `> file` as they are printed, not at exit.
    if hasattr(sys.stdout, "reconfigure"):  # not when a caller replaced it
        sys.stdout.reconfigure(line_buffering=True)
    return Dev(args.port, args.worker_interval, os.getcwd()).run()


class Child:
    """One process in its own process group, writing to the shared log."""

    def __init__(self, name, cmd, env, cwd, log):
        self.name, self.cmd = name, cmd
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def exited(self):
        return self.proc.poll()

    def stop(self, hurry):
        """SIGTERM to the group, wait, SIGKILL what is left of the group (only processes we started)."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while self.proc.poll() is None and time.monotonic() < deadline and not hurry():
                time.sleep(0.05)
        self._signal(signal.SIGKILL)  # stragglers (a gunicorn worker), or the leader itself
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def _signal(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Dev:
    def __init__(self, port, worker_interval, cwd):
        self.port, self.sandbox_port = port, port + 1
        self.worker_interval = worker_interval
        self.cwd = cwd
        self.web_url = f"http://127.0.0.1:{port}"
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.children = []
        self.stopping = threading.Event()
        self.interrupts = 0
        self.shown = threading.Event()  # the log follower stops when set

    def path(self, name):
        return os.path.join(self.cwd, name)

    # --- the children's environment ---------------------------------------------------------------

    def environment(self):
        env = dict(os.environ)
        # Development talks to the sandbox and to its own SQLite file only, whatever this shell holds.
        for name in (
            "JAWSDB_URL",
            "CLEARDB_DATABASE_URL",
            "PINGPP_PRIVATE_KEY_PATH",
            "PINGPP_PRIVATE_KEY",
            "PINGPP_PUBLIC_KEY",
            "SMS_FILE",
        ):
            env.pop(name, None)
        for name in list(env):  # never a real SMS provider's account from this shell
            if name.startswith(("ALIYUN_", "TENCENT_")):
                del env[name]
        env.update(
            PAYAPI_ENV="development",
            DATABASE_URL=f"sqlite:///{self.path(DB_FILE)}",
            PORT=str(self.port),
            SERVICE_KEY=os.environ.get("SERVICE_KEY") or "dev",
            PINGPP_API_BASE=self.sandbox_url,
            PINGPP_API_KEY="sk_test_payapi_dev",
            PINGPP_APP_ID="app_payapi_dev",
            PINGPP_PUBLIC_KEY_PATH=self.path(PUBLIC_KEY_FILE),
            # Codes through the real Alibaba Cloud SDK, signed with the sandbox's development key,
            # to the SMS sandbox (the sandbox process answers Aliyun's SendSms too).
            SMS_BACKEND="aliyun",
            ALIYUN_ACCESS_KEY_ID=DEV_ALIYUN_KEY[0],
            ALIYUN_ACCESS_KEY_SECRET=DEV_ALIYUN_KEY[1],
            ALIYUN_SMS_SIGN_NAME="payapi开发",
            ALIYUN_SMS_TEMPLATE_CODE="SMS_000000001",
            ALIYUN_SMS_ENDPOINT=self.sandbox_url,
            # Credits are withdrawable at once, so the walkthrough can withdraw what it was just paid.
            SETTLEMENT_HOLD_SECONDS="0",
            PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
        )
        env.setdefault("WEB_CONCURRENCY", "2")
        # The SDK (requests) honours HTTP(S)_PROXY: the sandbox on 127.0.0.1 must be reached directly.
        env["NO_PROXY"] = ",".join(p for p in ("127.0.0.1", "localhost", os.environ.get("NO_PROXY")) if p)
        return env

    # --- running ---------------------------------------------------------------------------------

    def run(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._interrupted)
        for port in (self.port, self.sandbox_port):
            if not _port_is_free(port):
                print(
                    f"port {port} on 127.0.0.1 is in use (another `payapi dev`?); try --port {self.port + 10}",
                    file=sys.stderr,
                )
                return 1
        env = self.environment()
        log = open(self.path(LOG_FILE), "wb")  # this run's output only; the children append to it
        follower = threading.Thread(target=self._follow, name="dev-log", daemon=True)
        follower.start()
        code = 0
        try:
            code = self._start(env, log)
            if code == 0:
                code = self._watch()
        except _Interrupted:  # Ctrl-C while starting: stop what was started, as after it
            code = 0
        finally:
            self._say("stopping: worker, web app, sandbox ...")
            for child in reversed(self.children):
                child.stop(hurry=lambda: self.interrupts > 1)
            time.sleep(0.2)  # let the follower show the last lines
            self.shown.set()
            follower.join(2)
            log.close()
            self._say("stopped.")
        return code

    def _interrupted(self, signum, frame):
        self.interrupts += 1
        self.stopping.set()

    def _start(self, env, log):
        self._say(f"migrating {self.path(DB_FILE)}")
        done = self._payapi(env, "migrate")
        print((done.stdout + done.stderr).strip(), flush=True)
        if done.returncode != 0:
            self._say("migrate failed")
            return 1

        self._spawn(
            "sandbox",
            [
                sys.executable,
                "-m",
                "payapi",
                "sandbox",
                "--port",
                str(self.sandbox_port),
                "--webhook-url",
                f"{self.web_url}/rest/pay/webhook",
                "--key-file",
                self.path(KEY_FILE),
                "--public-key-file",
                self.path(PUBLIC_KEY_FILE),
            ],
            env,
            log,
        )
        if not self._wait_ready("sandbox", f"{self.sandbox_url}/_sandbox/public_key.pem"):
            return 1
        self._spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                os.path.join(ROOT, "gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--no-control-socket",
            ],
            env,
            log,
        )
        if not self._wait_ready("web app", f"{self.web_url}/healthz"):
            return 1
        self._spawn(
            "worker", [sys.executable, "-m", "payapi", "worker", "--interval", str(self.worker_interval)], env, log
        )

        # An operator for the newcomer, with a new password each run (it is printed and written
        # below, so the console's login is always the one shown).
        ops_password = secrets.token_urlsafe(12)
        made = self._payapi(env, "operator", "add", OPERATOR, "--reset", input=ops_password + "\n")
        if made.returncode != 0:
            self._say(f"could not make the operator {OPERATOR}: {made.stderr.strip()}")
            return 1

        user_id, expert_id = new_id(), new_id()
        tokens = {}
        for who, user, phone in (("user", user_id, USER_PHONE), ("expert", expert_id, EXPERT_PHONE)):
            made = self._payapi(env, "token", user, "--phone", phone, "--ttl", str(TOKEN_TTL))
            if made.returncode != 0:
                self._say(f"could not mint the {who}'s token: {made.stderr.strip()}")
                return 1
            tokens[who] = made.stdout.strip().splitlines()[-1]
        variables = {
            "PAYAPI": self.web_url,
            "PINGPP_API_BASE": self.sandbox_url,
            "SERVICE_KEY": env["SERVICE_KEY"],
            "USER_ID": user_id,
            "USER_PHONE": USER_PHONE,
            "USER_TOKEN": tokens["user"],
            "EXPERT_ID": expert_id,
            "EXPERT_PHONE": EXPERT_PHONE,
            "EXPERT_TOKEN": tokens["expert"],
            "OPS_URL": f"{self.web_url}/ops/",
            "OPS_USER": OPERATOR,
            "OPS_PASSWORD": ops_password,
        }
        with open(self.path(ENV_FILE), "w", encoding="utf-8") as f:
            f.write(
                f"# Written by `python -m payapi dev` at {datetime.datetime.now().isoformat(timespec='seconds')}."
                f" Source it: . ./{ENV_FILE}\n"
            )
            f.writelines(f"export {k}={shlex.quote(v)}\n" for k, v in variables.items())
        self._banner(env, variables)
        return 0

    def _watch(self):
        while not self.stopping.wait(0.5):
            for child in self.children:
                if child.exited() is not None:
                    self._say(f"{child.name} exited with status {child.exited()}; see {LOG_FILE}")
                    return 1
        return 0

    def _payapi(self, env, *args, input=None):
        """Run `python -m payapi ARGS` to its end, its output captured (stdin: input, else none)."""
        return subprocess.run(
            [sys.executable, "-m", "payapi", *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            start_new_session=True,
        )

    def _spawn(self, name, cmd, env, log):
        if self.stopping.is_set():
            raise _Interrupted()
        self._say(f"starting {name}: {shlex.join(cmd[1:] if cmd[0] == sys.executable else cmd)}")
        self.children.append(Child(name, cmd, env, self.cwd, log))

    def _wait_ready(self, name, url):
        child = self.children[-1]
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.stopping.is_set():
                raise _Interrupted()
            if child.exited() is not None:
                self._say(f"{name} exited with status {child.exited()} while starting; see {LOG_FILE}")
                return False
            if time.monotonic() > deadline:
                self._say(f"{name} did not answer {url} within {READY_TIMEOUT:.0f} s; see {LOG_FILE}")
                return False
            try:
                with _OPENER.open(url, timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)

    # --- output ----------------------------------------------------------------------------------

    def _say(self, text):
        print(f"[dev] {text}", flush=True)

    def _banner(self, env, v):
        lines = [
            "",
            "payapi is running in development mode, on 127.0.0.1 only:",
            f"  web app   {self.web_url}   (gunicorn -c gunicorn.conf.py, {env['WEB_CONCURRENCY']} workers)",
            f"  sandbox   {self.sandbox_url}/_sandbox/   (the Ping++ and SMS sandbox: its page lists charges, refunds,"
            " transfers, webhooks and SMS, with buttons)",
            f"  worker    python -m payapi worker --interval {self.worker_interval:g}   (payouts, reconciliation)",
            f"  database  {self.path(DB_FILE)}   log: {LOG_FILE}",
            "  SMS       SMS_BACKEND=aliyun against the sandbox: python -m payapi sandbox sms --last PHONE",
            "",
            f"  service key (X-Service-Key for /internal/...):  {v['SERVICE_KEY']}",
            f"  user    {v['USER_ID']}  phone {v['USER_PHONE']}   token: {v['USER_TOKEN']}",
            f"  expert  {v['EXPERT_ID']}  phone {v['EXPERT_PHONE']}  token: {v['EXPERT_TOKEN']}",
            "",
            f"  operators' console  {v['OPS_URL']}   login: {v['OPS_USER']}  password: {v['OPS_PASSWORD']}",
            f"  (the same as JSON: curl -u {v['OPS_USER']}:{v['OPS_PASSWORD']} {self.web_url}/ops/api/withdrawals)",
            "",
            f"Next, in another terminal in this directory: `. ./{ENV_FILE}` (these values as shell variables),",
            "then follow the walkthrough in docs/walkthrough.md, for instance:",
            '  curl -s -H "auth: $EXPERT_TOKEN" $PAYAPI/rest/pay/balance',
            "  python -m payapi sandbox list",
            "Ctrl-C stops everything.",
            "",
        ]
        print("\n".join(lines), flush=True)

    def _follow(self):
        """Show the children's log on the terminal: JSON log lines shortened, anything else as it is."""
        position, pending = 0, b""
        path = self.path(LOG_FILE)
        while True:
            done = self.shown.is_set()
            try:
                with open(path, "rb") as f:
                    f.seek(position)
                    chunk = f.read()
            except OSError:
                chunk = b""
            position += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                print(_readable(line.decode("utf-8", "replace")), flush=True)
            if done:
                return
            time.sleep(0.1)


class _Interrupted(Exception):
    pass


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _port_is_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _readable(line):
    """`12:01:02 INFO payapi.request request method=GET ...` for a JSON log line."""
    if not line.startswith("{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "msg" not in record:
        return line
    head = [
        str(record.pop("ts", ""))[11:19],
        str(record.pop("level", "")),
        str(record.pop("logger", "")),
        str(record.pop("msg")),
    ]
    rest = [f"{k}={v}" for k, v in record.items() if k != "exc"]
    text = " ".join(p for p in head + rest if p)
    return text + ("\n" + record["exc"] if "exc" in record else "")
