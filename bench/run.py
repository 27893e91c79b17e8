#!/usr/bin/env python
"""payapi's benchmark: the real gunicorn + payapi against bare falcon, on SQLite and MariaDB.

    python bench/run.py [--seconds 6] [--rounds 3] [--db sqlite,mariadb] [--connections 32]
    python bench/run.py --quick          # smoke run: 2 s, 1 round

For each database: a fresh database (SQLite file in a temp dir; MariaDB: a private mariadbd in a
temp datadir on a free 127.0.0.1 port), `python -m payapi migrate`, seed rows, then
`gunicorn -c gunicorn.conf.py` (WEB_CONCURRENCY=4, BCRYPT_ROUNDS=12, default INFO logging with
stderr going to a file, as in production) and, under the same gunicorn.conf.py, the bare falcon
app of bench/bare_app.py. wrk drives both in alternating rounds; medians are reported, with the
starvation check (read p99 while bcrypt routes are saturated / idle read p99) and the RSS of the
payapi workers after the load. Results: a markdown table per database on stdout and JSON in
bench/results/<timestamp>.json.

Everything listens on 127.0.0.1 only; every process started here is stopped at the end, also on
Ctrl-C or an error.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, ROOT)

WRK = shutil.which("wrk") or "/usr/bin/wrk"
MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
MARIADB_INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")

WEB_CONCURRENCY = "4"
BCRYPT_ROUNDS = "12"
# Users whose pay password the bcrypt load changes: a fresh set for every wrk run (see passwd.lua),
# so requests a previous run left queued in the server never race a new run on the same user.
PASSWD_USERS_PER_RUN = 32
MARIADB_DB = "payapi_bench"
APP_HEADERS = {"client": "1.2.3.4", "platform": "android", "channel": "TencentAPP"}
# The pay password as the app sends it: its own hash of what the user typed ("加密后").
PASSWD = hashlib.md5(b"payapi-bench-123456").hexdigest()

_started = []  # every Popen started here, stopped in cleanup()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes ----------------------------------------------------------------------------------

def start(cmd, **kwargs):
    # Own session: a Ctrl-C in the terminal reaches only this script, which then stops them in order.
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _started.append(proc)
    return proc


def stop(proc, grace=30.0):
    """SIGTERM, wait, then SIGKILL the process group this script created for it."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_new_session): only what we started
        except ProcessLookupError:
            pass
        proc.wait(10)
    else:
        # A gunicorn master that exited may leave a worker behind for a moment; the group is ours.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc in _started:
        _started.remove(proc)


def cleanup():
    for proc in reversed(list(_started)):
        try:
            stop(proc, grace=10.0)
        except Exception as exc:  # keep stopping the others
            log(f"could not stop pid {proc.pid}: {exc}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 8000))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            found.append(int(entry))
                except (OSError, IndexError, ValueError):
                    pass
        return found


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
        except (OSError, IndexError, ValueError):
            pass
    return total


class PasswdLog:
    """Counts payapi's request-log lines for POST /rest/pay/passwd as the log file grows."""

    def __init__(self, path):
        self.path, self.offset, self.count, self.rest = path, 0, 0, b""

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return self.count
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        self.count += sum(1 for line in lines if b'"payapi.request"' in line and b'"route": "/rest/pay/passwd"' in line)
        return self.count

    def wait_for(self, expected, limit=60.0, stall=15.0):
        """Wait until the server answered every bcrypt request sent so far (or gave up on them)."""
        start = time.monotonic()
        last, changed = self.poll(), start
        while self.count < expected:
            now = time.monotonic()
            if now - start > limit or now - changed > stall:
                log(f"server answered {self.count} of {expected} passwd requests after {now - start:.0f} s; going on")
                return False
            time.sleep(0.2)
            if self.poll() != last:
                last, changed = self.count, time.monotonic()
        return True


def wait_idle(master_pid, limit=20.0):
    """Wait until gunicorn's workers stop burning CPU (bcrypt work queued by a finished wrk run)."""
    deadline = time.monotonic() + limit
    tick = os.sysconf("SC_CLK_TCK")
    pids = [master_pid] + children(master_pid)
    before = cpu_ticks(pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_ticks(pids)
        if now - before <= 0.05 * tick:  # < 10 % of one core over the last half second
            return
        before = now
    log("server still busy after the settle time; going on")


# --- HTTP ---------------------------------------------------------------------------------------

def http(method, url, body=None, headers=None, timeout=30):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_http(url, proc, log_path, headers=None, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering; log tail:\n{tail(log_path)}")
        try:
            status, _ = http("GET", url, headers=headers, timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s; log tail:\n{tail(log_path)}")


# --- gunicorn -----------------------------------------------------------------------------------

def gunicorn_cmd(port, app=None):
    # --bind on the command line overrides gunicorn.conf.py's 0.0.0.0 (command line wins over
    # the config file); a positional APP_MODULE overrides its wsgi_app the same way.
    cmd = [GUNICORN, "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    return cmd + ([app] if app else [])


def start_gunicorn(env_extra, log_path, app=None):
    port = free_port()
    env = dict(os.environ)
    env.pop("LOG_LEVEL", None)  # payapi's default INFO: one JSON line per request, as in production
    env.update(env_extra, PORT=str(port), WEB_CONCURRENCY=WEB_CONCURRENCY)
    logf = open(log_path, "ab")
    try:
        proc = start(gunicorn_cmd(port, app), cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT,
                     stdin=subprocess.DEVNULL)
    finally:
        logf.close()
    return proc, port


# --- MariaDB ------------------------------------------------------------------------------------

class MariaDB:
    """A private mariadbd in a temp datadir on a free 127.0.0.1 port."""

    def __init__(self, base):
        self.base = base
        self.datadir = os.path.join(base, "data")
        self.socket = os.path.join(base, "mariadb.sock")
        self.log_path = os.path.join(base, "mariadb.err")
        self.port = free_port()
        self.proc = None
        self.password = secrets.token_hex(12)

    # Server defaults otherwise (innodb_flush_log_at_trx_commit=1, 128 MB buffer pool), as a
    # production server would run; only the binlog is off (a single server, no replica).
    PARAMS = ["--skip-log-bin", "--skip-name-resolve", "--max-connections=300"]

    def start(self):
        os.makedirs(self.datadir)
        subprocess.run(
            [MARIADB_INSTALL_DB, "--no-defaults", "--user=root", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=180,
        )
        self.proc = start(
            [MARIADBD, "--no-defaults", "--user=root", f"--datadir={self.datadir}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--pid-file={os.path.join(self.base, 'mariadb.pid')}",
             f"--log-error={self.log_path}", f"--tmpdir={self.base}", *self.PARAMS],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        import pymysql

        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                root = pymysql.connect(unix_socket=self.socket, user="root", connect_timeout=2)
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not come up:\n{tail(self.log_path)}") from None
                time.sleep(0.2)
        with root.cursor() as cur:
            cur.execute(f"CREATE DATABASE {MARIADB_DB} CHARACTER SET utf8mb4")
            cur.execute("CREATE USER 'payapi'@'127.0.0.1' IDENTIFIED BY %s", (self.password,))
            cur.execute(f"GRANT ALL ON {MARIADB_DB}.* TO 'payapi'@'127.0.0.1'")
            cur.execute("SELECT VERSION()")
            self.version = cur.fetchone()[0]
        root.close()
        return f"mysql://payapi:{self.password}@127.0.0.1:{self.port}/{MARIADB_DB}"

    def stop(self):
        if self.proc is not None:
            stop(self.proc, grace=60.0)
            self.proc = None


# --- seeding ------------------------------------------------------------------------------------

BENCH_APP_ID = "app_1Gqj58ynP0mHeX1q"


def start_sandbox(tmp):
    """The Ping++ sandbox (payapi.sandbox) in this process: its key signs the benchmark's webhook, and
    whatever Ping++ call payapi makes goes to it, never to the real Ping++."""
    from payapi.sandbox import Sandbox

    return Sandbox(public_key_path=os.path.join(tmp, "pingpp_public.pem")).start()


def charge_object(pay_id, amount, paid, created):
    """A Ping++ alipay charge as Ping++ returns it (~1 KB of JSON once stored)."""
    charge_id = "ch_" + secrets.token_hex(12)
    order_info = (
        'service="mobile.securitypay.pay"&partner="2088101568358171"&_input_charset="utf-8"'
        f'&notify_url="https%3A%2F%2Fnotify.pingxx.com%2Fnotify%2Fcharges%2F{charge_id}"'
        f'&out_trade_no="{pay_id}"&subject="支付预约订单_2016-06-23"&body="预约专家咨询 60 分钟"'
        f'&total_fee="{amount / 100:.2f}"&payment_type="1"&seller_id="2088101568358171"&it_b_pay="2016-06-24 12:46:38"'
        '&sign="' + base64.b64encode(os.urandom(96)).decode() + '"&sign_type="RSA"'
    )
    return {
        "id": charge_id, "object": "charge", "created": created, "livemode": False, "paid": paid,
        "refunded": False, "reversed": False, "app": BENCH_APP_ID, "channel": "alipay",
        "order_no": pay_id, "client_ip": "1.2.3.4", "amount": amount, "amount_settle": amount,
        "currency": "cny", "subject": "支付预约订单_2016-06-23", "body": "预约专家咨询 60 分钟", "extra": {},
        "time_paid": created + 30 if paid else None, "time_expire": created + 86400, "time_settle": None,
        "transaction_no": "2016062321001004" + secrets.token_hex(6) if paid else None,
        "refunds": {"object": "list", "url": f"/v1/charges/{charge_id}/refunds", "has_more": False, "data": []},
        "amount_refunded": 0, "failure_code": None, "failure_msg": None, "metadata": {},
        "credential": {"object": "credential", "alipay": {"orderInfo": order_info}}, "description": None,
    }


def seed_rows(database_url, pool_size):
    """Rows the HTTP API cannot make without Ping++: pays, a wallet with its ledger, pool users."""
    from payapi.auth import Authenticator  # noqa: F401  (import check: same code as the server)
    from payapi.db import bind, open_database
    from payapi.ids import new_id
    from payapi.models import LedgerEntry, Pay, Profile, Wallet
    from payapi.security import hash_secret

    database = bind(open_database(database_url))
    database.connect(reuse_if_open=True)
    now_s = int(time.time())
    now = now_s * 1000
    user, expert, other = new_id(), new_id(), new_id()
    s = {"user": user, "expert": expert, "phone": "13800138000"}
    try:
        with database.atomic():
            # The pay the user reads (pending; the benchmark's first webhook delivery pays it).
            pay_id, o_id, money = new_id(), new_id(), 12356
            charge = charge_object(pay_id, money, False, now_s)
            Pay.create(
                pay_id=pay_id, type="order", o_id=o_id, expert_id=expert, user_id=user, amount=money,
                money=money, channel="alipay", subject="支付预约订单_2016-06-23", description="预约专家咨询 60 分钟",
                charge=json.dumps(charge, ensure_ascii=False), charge_id=charge["id"], open_for=f"order:{o_id}",
                time_expire=charge["time_expire"] * 1000, client_ip="1.2.3.4", platform="android",
                store="TencentAPP", created_at=now, updated_at=now,
            )
            s.update(pay_id=pay_id, charge=charge, charge_json_bytes=len(json.dumps(charge, ensure_ascii=False).encode()))
            # The user's earnings as an expert: a paid pay of someone else, its ledger entry, the wallet.
            earned_pay, earned = new_id(), 88800
            earned_charge = charge_object(earned_pay, earned, True, now_s - 86400)
            Pay.create(
                pay_id=earned_pay, type="note", note_id=new_id(), expert_id=user, user_id=other, amount=earned,
                money=earned, channel="alipay", subject="小纸条", charge=json.dumps(earned_charge, ensure_ascii=False),
                charge_id=earned_charge["id"], status="paid", client_status="success", credited=earned,
                time_expire=earned_charge["time_expire"] * 1000, created_at=now - 86_400_000, updated_at=now,
                paid_at=now,
            )
            LedgerEntry.create(user_id=user, amount=earned, kind="charge", reference=earned_pay,
                               balance_after=earned, created_at=now)
            Wallet.create(user_id=user, balance=earned, updated_at=now)
            s["balance"] = earned
            # Users the bcrypt load changes the pay password of (one hash, computed once).
            hashed = hash_secret(PASSWD, int(BCRYPT_ROUNDS))
            s["pool"] = [new_id() for _ in range(pool_size)]
            for start in range(0, pool_size, 100):
                Profile.insert_many(
                    [{"user_id": u, "passwd_hash": hashed, "created_at": now, "updated_at": now}
                     for u in s["pool"][start:start + 100]]
                ).execute()
    finally:
        database.close()
    return s


def seed_http(base, seed, sandbox, auth_secret, sms_file):
    """The rest through the real API: pay password, withdraw account (SMS code), first webhook delivery."""
    from payapi.auth import Authenticator

    auth = Authenticator((auth_secret,))
    seed["token"] = auth.mint(seed["user"], phone=seed["phone"], ttl=6 * 3600)
    seed["pool_tokens"] = [auth.mint(u, ttl=6 * 3600) for u in seed["pool"]]
    headers = {"auth": seed["token"], **APP_HEADERS}

    def expect(what, status, body, code=900):
        if status != 200 or not isinstance(body, dict) or body.get("code") != code:
            raise RuntimeError(f"seeding {what}: HTTP {status} {body!r}")
        return body

    expect("POST /rest/pay/passwd", *http("POST", base + "/rest/pay/passwd", {"passwd": PASSWD}, headers))
    expect("POST /rest/pay/smscode", *http("POST", base + "/rest/pay/smscode", {"purpose": "withdrawInfo"}, headers))
    with open(sms_file, encoding="utf-8") as f:
        code = [json.loads(line) for line in f if line.strip()][-1]["code"]
    expect("POST /rest/pay/withdrawInfo", *http("POST", base + "/rest/pay/withdrawInfo",
                                               {"smscode": code, "type": "alipay", "id": "13800138000", "name": "张三"},
                                               headers))
    paid = dict(seed["charge"], paid=True, time_paid=int(time.time()), transaction_no="2016062321001004" + secrets.token_hex(6))
    seed["event_raw"], seed["event_signature"] = sandbox.signed_event("charge.succeeded", paid)
    first = expect("first webhook delivery", *http("POST", base + "/rest/pay/webhook", seed["event_raw"],
                                                   {"X-Pingplusplus-Signature": seed["event_signature"],
                                                    "Content-Type": "application/json"}))
    if first.get("result") != "applied":
        raise RuntimeError(f"first webhook delivery was not applied: {first!r}")
    return seed


# --- wrk ----------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unknown wrk duration {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out):
    result = {"rps": None, "mean_ms": None, "p50_ms": None, "p75_ms": None, "p90_ms": None, "p99_ms": None, "requests": 0,
              "non_2xx": 0, "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        result["rps"] = float(m.group(1))
    m = re.search(r"^\s+Latency\s+(\S+)\s", out, re.M)
    if m:
        result["mean_ms"] = to_ms(m.group(1))
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M):
        result[f"p{pct}_ms"] = to_ms(value)
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    if m:
        result["requests"], result["duration_s"] = int(m.group(1)), to_ms(m.group(2)) / 1000
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        result["non_2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    return result


def wrk_cmd(url, seconds, connections, threads, script, script_args=()):
    cmd = [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency", "-s", script, url]
    return cmd + (["--", *script_args] if script_args else [])


def start_wrk(spec, port, seconds, threads):
    env = dict(os.environ, **spec["env"])
    if "BENCH_TOKENS_FILE" in env:  # the bcrypt route: the next unused users
        tokens, spec["pool"][:] = spec["pool"][:PASSWD_USERS_PER_RUN], spec["pool"][PASSWD_USERS_PER_RUN:]
        if len(tokens) < PASSWD_USERS_PER_RUN:
            raise RuntimeError("out of seeded pool users")
        env["BENCH_TOKENS_FILE"] = write_file(os.path.join(spec["tmp"], f"tokens-{len(spec['pool'])}"),
                                              "".join(t + "\n" for t in tokens))
    cmd = wrk_cmd(f"http://127.0.0.1:{port}{spec['path']}", seconds, spec["connections"], threads, spec["script"],
                  spec.get("script_args", ()))
    proc = start(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    proc.bench_cmd = cmd
    proc.bench_seconds = seconds
    return proc


def finish_wrk(proc):
    try:
        out, _ = proc.communicate(timeout=proc.bench_seconds + 60)
    finally:
        stop(proc, grace=2.0)
    result = parse_wrk(out)
    m = re.search(r"^bench-sent: (\d+)", out, re.M)
    if m:
        result["sent"] = int(m.group(1))
    if proc.returncode != 0 or result["rps"] is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {shlex.join(proc.bench_cmd)}\n{out}")
    result["output"] = out
    result["connections"] = int(re.search(r"-c(\d+)", " ".join(proc.bench_cmd)).group(1))
    # wrk's latency figures cover answered requests only. Little's law gives the mean over all the
    # connection-time: connections / rps. When it is well above wrk's mean, some connections spent
    # the run waiting for answers that never came (a stalled worker) and p99 hides them.
    if result["rps"]:
        implied = result["connections"] / result["rps"] * 1000
        result["littles_mean_ms"] = implied
        result["unanswered_share"] = max(0.0, 1 - (result["mean_ms"] or 0) / implied)
    return result


def run_wrk(spec, port, seconds, threads):
    return finish_wrk(start_wrk(spec, port, seconds, threads))


# --- the benchmark ------------------------------------------------------------------------------

def write_file(path, data):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


def endpoint_specs(tmp, seed, args):
    """What wrk sends: the name, path, connections and the request files of each endpoint."""
    def headers_file(name, headers):
        return write_file(os.path.join(tmp, f"{name}.headers"), "".join(f"{k}: {v}\n" for k, v in headers.items()))

    user_headers = headers_file("user", {"auth": seed["token"], **APP_HEADERS})
    get = {"BENCH_METHOD": "GET", "BENCH_HEADERS_FILE": user_headers}
    request_lua = os.path.join(BENCH, "request.lua")
    webhook_body = write_file(os.path.join(tmp, "webhook.json"), seed["event_raw"])
    webhook_headers = headers_file("webhook", {"Content-Type": "application/json",
                                               "X-Pingplusplus-Signature": seed["event_signature"]})
    passwd_body = write_file(os.path.join(tmp, "passwd.json"), json.dumps({"passwd": PASSWD, "old_passwd": PASSWD}))
    passwd_env = {"BENCH_TOKENS_FILE": None, "BENCH_THREADS": str(args.threads), "BENCH_BODY_FILE": passwd_body,
                  "BENCH_HEADERS_FILE": headers_file("passwd", {"Content-Type": "application/json", **APP_HEADERS})}
    c = args.connections

    def spec(key, name, path, connections, env, script=request_lua, script_args=()):
        return {"key": key, "name": name, "path": path, "connections": connections, "env": env, "script": script,
                "script_args": list(script_args), "tmp": tmp, "pool": seed["pool_tokens"]}

    passwd_lua = os.path.join(BENCH, "passwd.lua")
    return {
        "bare": spec("bare", "bare falcon `GET /rest/pay/{pay_id}`", f"/rest/pay/{seed['pay_id']}", c, get),
        "pay": spec("pay", "`GET /rest/pay/{pay_id}`", f"/rest/pay/{seed['pay_id']}", c, get),
        "checkInfo": spec("checkInfo", "`GET /rest/pay/checkInfo`", "/rest/pay/checkInfo", c, get),
        "balance": spec("balance", "`GET /rest/pay/balance`", "/rest/pay/balance", c, get),
        "webhook": spec("webhook", "`POST /rest/pay/webhook` (signed replay)", "/rest/pay/webhook", c,
                        {"BENCH_METHOD": "POST", "BENCH_BODY_FILE": webhook_body, "BENCH_HEADERS_FILE": webhook_headers}),
        "passwd": spec("passwd", f"`POST /rest/pay/passwd` (bcrypt {BCRYPT_ROUNDS}, -c{args.passwd_connections})",
                       "/rest/pay/passwd", args.passwd_connections, passwd_env, passwd_lua, [str(args.threads)]),
        "passwd_load": spec("passwd_load", f"`POST /rest/pay/passwd` load (-c{args.load_connections})",
                            "/rest/pay/passwd", args.load_connections, passwd_env, passwd_lua),
    }


def check_endpoints(base, seed):
    """One request per endpoint before the load: what a correct answer looks like, and the warm-up."""
    headers = {"auth": seed["token"], **APP_HEADERS}
    checks = {}

    def record(key, status, body, ok):
        checks[key] = {"status": status, "body": body if not isinstance(body, dict) else
                       {k: v for k, v in body.items() if k != "info"} | ({"info": "..."} if "info" in body else {}),
                       "ok": ok}
        if not ok:
            log(f"CHECK FAILED {key}: HTTP {status} {str(body)[:300]}")

    status, body = http("GET", f"{base}/rest/pay/{seed['pay_id']}", headers=headers)
    info = body.get("info", {}) if isinstance(body, dict) else {}
    record("pay", status, body, status == 200 and body.get("code") == 900 and info.get("pay_id") == seed["pay_id"]
           and info.get("status") == "paid" and isinstance(info.get("charge"), dict))
    status, body = http("GET", f"{base}/rest/pay/checkInfo", headers=headers)
    record("checkInfo", status, body, status == 200 and isinstance(body, dict) and body.get("code") == 900
           and body.get("passwd") is True and body.get("withdraw") is True)
    status, body = http("GET", f"{base}/rest/pay/balance", headers=headers)
    info = body.get("info", {}) if isinstance(body, dict) else {}
    record("balance", status, body, status == 200 and body.get("code") == 900
           and info.get("balance") == seed["balance"] and info.get("can_withdraw") is True)
    status, body = http("POST", f"{base}/rest/pay/webhook", seed["event_raw"],
                        {"X-Pingplusplus-Signature": seed["event_signature"], "Content-Type": "application/json"})
    record("webhook", status, body, status == 200 and isinstance(body, dict) and body.get("result") == "replay")
    status, body = http("POST", f"{base}/rest/pay/passwd", {"passwd": PASSWD, "old_passwd": PASSWD},
                        {"auth": seed["pool_tokens"].pop(), **APP_HEADERS})
    record("passwd", status, body, status == 200 and isinstance(body, dict) and body.get("code") == 900)
    return checks


def analyse_log(path):
    """payapi's own request lines (status per route) and anything logged at WARNING or above."""
    statuses, problems, gunicorn_problems, lines = {}, {}, [], 0
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return {}
    with f:
        for line in f:
            lines += 1
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("logger") == "payapi.request":
                    key = f"{rec.get('method')} {rec.get('route')} {rec.get('status')} code={rec.get('code')}"
                    statuses[key] = statuses.get(key, 0) + 1
                elif rec.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                    key = f"{rec.get('level')} {rec.get('logger')}: {str(rec.get('msg'))[:160]}"
                    problems[key] = problems.get(key, 0) + 1
            elif re.search(r"\[(ERROR|CRITICAL|WARNING)\]", line) and len(gunicorn_problems) < 20:
                gunicorn_problems.append(line.strip()[:300])
    return {"log_lines": lines, "request_statuses": dict(sorted(statuses.items())),
            "warnings_and_errors": problems, "gunicorn_problems": gunicorn_problems}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def bench_database(kind, args, tmp, sandbox, bare_port, bare_proc):
    work = os.path.join(tmp, kind)
    os.makedirs(work)
    mariadb = None
    proc = None
    result = {"database": kind, "runs": []}
    try:
        if kind == "sqlite":
            url = f"sqlite:///{os.path.join(work, 'payapi.db')}"
            result["database_detail"] = "SQLite file (WAL) in a temp dir"
        elif kind == "mariadb":
            log("mariadb: installing a datadir and starting mariadbd")
            mariadb = MariaDB(work)
            url = mariadb.start()
            result["database_detail"] = (f"MariaDB {mariadb.version}, private mariadbd on 127.0.0.1:{mariadb.port}, "
                                         f"server defaults + {' '.join(MariaDB.PARAMS)}")
        else:
            raise SystemExit(f"unknown database {kind!r} (sqlite, mariadb)")
        env = {"DATABASE_URL": url}
        log(f"{kind}: python -m payapi migrate")
        migrated = subprocess.run([sys.executable, "-m", "payapi", "migrate"], cwd=ROOT, env=dict(os.environ, **env),
                                  capture_output=True, text=True, timeout=180)
        if migrated.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{migrated.stdout}{migrated.stderr}")
        log(f"{kind}: seeding rows")
        seed = seed_rows(url, PASSWD_USERS_PER_RUN * 2 * args.rounds + 1)
        result["charge_json_bytes"] = seed["charge_json_bytes"]

        auth_secret = secrets.token_urlsafe(32)
        sms_file = os.path.join(work, "sms.jsonl")
        log_path = os.path.join(work, "gunicorn.log")
        result["gunicorn_log"] = log_path
        server_env = {
            **env, "PAYAPI_ENV": "production", "AUTH_SECRET": auth_secret, "SERVICE_KEY": secrets.token_urlsafe(32),
            "PINGPP_PUBLIC_KEY_PATH": sandbox.public_key_path,
            "PINGPP_API_BASE": sandbox.url, "PINGPP_API_KEY": "sk_test_payapi_bench", "PINGPP_APP_ID": BENCH_APP_ID,
            "BCRYPT_ROUNDS": BCRYPT_ROUNDS,
            "SMS_BACKEND": "file", "SMS_FILE": sms_file,
        }
        proc, port = start_gunicorn(server_env, log_path)
        base = f"http://127.0.0.1:{port}"
        result["command"] = " ".join(f"{k}={v}" for k, v in {
            "PORT": port, "WEB_CONCURRENCY": WEB_CONCURRENCY, "BCRYPT_ROUNDS": BCRYPT_ROUNDS,
            "DATABASE_URL": "...", "AUTH_SECRET": "...", "PINGPP_PUBLIC_KEY_PATH": "..."}.items()) + " " + \
            shlex.join(gunicorn_cmd(port)) + " 2>>gunicorn.log"
        wait_http(base + "/healthz", proc, log_path)
        log(f"{kind}: payapi up on {base} (master pid {proc.pid}); seeding through the API")
        seed_http(base, seed, sandbox, auth_secret, sms_file)
        result["checks"] = check_endpoints(base, seed)
        specs = endpoint_specs(work, seed, args)
        passwd_log = PasswdLog(log_path)
        passwd_expected = 2  # seeding and the check above

        def drain(run):
            """Wait for the bcrypt requests a finished run left queued in the server, then for idle CPU."""
            nonlocal passwd_expected
            passwd_expected += run.get("sent", 0)
            t0 = time.monotonic()
            run["drained"] = passwd_log.wait_for(passwd_expected)
            run["drain_s"] = round(time.monotonic() - t0, 2)
            wait_idle(proc.pid)

        # Warm-up: every worker opens its connection, imports lazily, fills its caches.
        warm = 1
        for k in ("bare", "pay", "checkInfo", "balance", "webhook"):
            run_wrk(specs[k], bare_port if k == "bare" else port, warm, args.threads)
        wait_idle(proc.pid)

        order = ["bare", "pay", "checkInfo", "balance", "webhook", "passwd"]
        for rnd in range(1, args.rounds + 1):
            for k in order:
                target = bare_port if k == "bare" else port
                r = run_wrk(specs[k], target, args.seconds, args.threads)
                r.update(round=rnd, endpoint=k)
                result["runs"].append(r)
                log(f"{kind} round {rnd} {k:10} {r['rps']:9.1f} rps  p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms"
                    f"  non-2xx {r['non_2xx']}  socket errors {sum(r['socket_errors'].values())}")
                if k == "passwd":
                    drain(r)
            # Starvation: the same read while a second wrk saturates the bcrypt route.
            load = start_wrk(specs["passwd_load"], port, args.seconds + 2, args.threads)
            try:
                time.sleep(1.0)
                r = run_wrk(specs["pay"], port, args.seconds, args.threads)
            finally:
                lr = finish_wrk(load)
            r.update(round=rnd, endpoint="pay_under_bcrypt")
            lr.update(round=rnd, endpoint="passwd_load")
            result["runs"] += [r, lr]
            log(f"{kind} round {rnd} pay under bcrypt load: {r['rps']:.1f} rps p99 {r['p99_ms']:.2f} ms "
                f"(load: {lr['rps']:.1f} rps, non-2xx {lr['non_2xx']})")
            drain(lr)

        workers = children(proc.pid)
        result["worker_rss_mb"] = [round((rss_kb(p) or 0) / 1024, 1) for p in workers]
        result["master_rss_mb"] = round((rss_kb(proc.pid) or 0) / 1024, 1)
    finally:
        if proc is not None:
            stop(proc)
        if mariadb is not None:
            mariadb.stop()
    result["log"] = analyse_log(os.path.join(work, "gunicorn.log"))
    summarise(result)
    return result


def summarise(result):
    by = {}
    for r in result["runs"]:
        by.setdefault(r["endpoint"], []).append(r)
    summary = {}
    for k, runs in by.items():
        summary[k] = {
            "rps": median([r["rps"] for r in runs]),
            # Answers that were 2xx, per second: for bcrypt routes the rest are 906 "busy" (shed).
            "ok_rps": median([r["rps"] * (1 - r["non_2xx"] / r["requests"]) if r["requests"] else 0 for r in runs]),
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "mean_ms": median([r.get("mean_ms") for r in runs]),
            "littles_mean_ms": median([r.get("littles_mean_ms") for r in runs]),
            "unanswered_share": median([r.get("unanswered_share") for r in runs]),
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "socket_errors": sum(sum(r["socket_errors"].values()) for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "rounds": len(runs),
        }
    bare = summary.get("bare", {}).get("rps")
    for k, s in summary.items():
        # Against the bare ceiling only for cheap routes: a bcrypt route is bounded by the hash.
        s["x_bare"] = s["rps"] / bare if bare and s["rps"] and not k.startswith("passwd") else None
    result["summary"] = summary
    idle, loaded = summary.get("pay", {}).get("p99_ms"), summary.get("pay_under_bcrypt", {}).get("p99_ms")
    result["starvation_ratio"] = loaded / idle if idle and loaded else None
    starved = [r["round"] for r in result["runs"] if r["endpoint"] == "pay_under_bcrypt" and r["requests"] == 0]
    if starved:
        result["starvation_note"] = (f"no read completed within the run in round(s) {starved}: reads fully starved "
                                     "(wrk leaves unfinished requests out of its latency figures)")
    drains = [r.get("drain_s") for r in result["runs"] if r["endpoint"].startswith("passwd") and "drain_s" in r]
    if drains:
        result["bcrypt_backlog_drain_s_max"] = max(drains)


# --- report -------------------------------------------------------------------------------------

def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "loadavg_at_start": os.getloadavg(),
            "python": sys.version.split()[0], "wrk": subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
            if os.path.exists(WRK) else "missing"}


def fmt(value, digits=2):
    return "–" if value is None else f"{value:,.{digits}f}"


def report(results, meta):
    lines = []
    m = meta["machine"]
    lines.append(f"## payapi benchmark — {meta['started']}")
    lines.append("")
    lines.append(f"- machine: {m['nproc']} CPUs, {m['cpu_model']}; load average at start "
                 f"{' '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}, at end "
                 f"{' '.join(f'{x:.2f}' for x in meta['loadavg_at_end'])}")
    lines.append(f"- command: `{meta['command']}`")
    lines.append(f"- wrk -t{meta['threads']} --latency --timeout 10s, {meta['seconds']} s per run, {meta['rounds']} "
                 f"alternating round(s) (bare, then payapi), medians; gunicorn -c gunicorn.conf.py "
                 f"(WEB_CONCURRENCY={WEB_CONCURRENCY}, worker class {meta['worker_class']}, threads {meta['threads_per_worker']}), "
                 f"BCRYPT_ROUNDS={BCRYPT_ROUNDS}, default INFO request logging with gunicorn's stderr sent to a file")
    lines.append("")
    for res in results:
        if "error" in res:
            lines += [f"### {res['database']}: FAILED", "", "```", res["error"][:3000], "```", ""]
            continue
        s = res["summary"]
        lines.append(f"### {res['database']}: {res['database_detail']}")
        lines.append("")
        lines.append("| endpoint | rps | × bare falcon | p50 ms | p99 ms | requests | non-2xx | socket errors |")
        lines.append("|---|---|---|---|---|---|---|---|")
        names = {
            "bare": f"bare falcon `GET /rest/pay/{{pay_id}}` (-c{meta['connections']})",
            "pay": "`GET /rest/pay/{pay_id}`",
            "checkInfo": "`GET /rest/pay/checkInfo`",
            "balance": "`GET /rest/pay/balance`",
            "webhook": "`POST /rest/pay/webhook` (signed replay)",
            "passwd": f"`POST /rest/pay/passwd` (bcrypt, -c{meta['passwd_connections']})",
            "pay_under_bcrypt": f"`GET /rest/pay/{{pay_id}}` while passwd runs at -c{meta['load_connections']}",
            "passwd_load": f"… that `POST /rest/pay/passwd` load (-c{meta['load_connections']})",
        }
        for k, name in names.items():
            if k not in s:
                continue
            e = s[k]
            rps_digits = 1 if (e["rps"] or 0) < 100 else 0
            lines.append(f"| {name} | {fmt(e['rps'], rps_digits)} | {fmt(e['x_bare'])} | {fmt(e['p50_ms'])} | "
                         f"{fmt(e['p99_ms'])} | {e['requests']:,} | {e['non_2xx']} | {e['socket_errors']} |")
        lines.append("")
        for k in ("passwd", "passwd_load"):
            if k in s and s[k]["non_2xx"]:
                lines.append(f"- {names[k]}: {fmt(s[k]['ok_rps'], 1)} answers/s were 900; the others were shed "
                             "(429/906 busy: more than two bcrypt requests in one worker)")
        ratio = res.get("starvation_ratio")
        verdict = "" if ratio is None else (" (target ≤ 2×: met)" if ratio <= 2 else " (target ≤ 2×: NOT met)")
        lines.append(f"- starvation: read p99 under bcrypt load / idle read p99 = "
                     f"{fmt(s.get('pay_under_bcrypt', {}).get('p99_ms'))} / {fmt(s.get('pay', {}).get('p99_ms'))} ms = "
                     f"**{fmt(ratio)}×**{verdict}")
        for k in ("pay", "pay_under_bcrypt"):
            e = s.get(k)
            if e and e.get("littles_mean_ms") and e["unanswered_share"] > 0.2:
                label = "idle" if k == "pay" else "under bcrypt load"
                lines.append(f"- **read {label}: stalled connections** — wrk's mean over answered requests is "
                             f"{fmt(e['mean_ms'])} ms but connections/rps is {fmt(e['littles_mean_ms'])} ms: "
                             f"≈{e['unanswered_share'] * 100:.0f}% of the connection-time went to requests still "
                             "unanswered when the run ended, which wrk leaves out of p50/p99")
        if res.get("starvation_note"):
            lines.append(f"- **starvation: {res['starvation_note']}**")
        if res.get("bcrypt_backlog_drain_s_max") is not None:
            lines.append(f"- bcrypt requests still queued in the server when a passwd run ended took up to "
                         f"{res['bcrypt_backlog_drain_s_max']:.1f} s to be answered (waited for before the next run)")
        rss = res.get("worker_rss_mb", [])
        verdict = "" if not rss else (" (target ≤ 80 MB: met)" if max(rss) <= 80 else " (target ≤ 80 MB: NOT met)")
        lines.append(f"- payapi worker RSS after the load: {', '.join(f'{x:.1f}' for x in rss)} MB{verdict}; "
                     f"master {res.get('master_rss_mb')} MB")
        lines.append(f"- stored charge JSON: {res.get('charge_json_bytes')} bytes")
        bad = [k for k, c in res.get("checks", {}).items() if not c["ok"]]
        lines.append(f"- pre-load checks: {'all as expected' if not bad else 'FAILED: ' + ', '.join(bad)}")
        lg = res.get("log", {})
        odd = {k: v for k, v in lg.get("request_statuses", {}).items() if " 200 " not in k}
        if odd:
            lines.append("- non-200 answers in payapi's request log: " + "; ".join(f"{k} ×{v}" for k, v in odd.items()))
        if lg.get("warnings_and_errors"):
            lines.append("- warnings/errors logged: " + "; ".join(f"{k} ×{v}" for k, v in lg["warnings_and_errors"].items()))
        if lg.get("gunicorn_problems"):
            lines.append("- gunicorn: " + " | ".join(lg["gunicorn_problems"][:5]))
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6, help="seconds per wrk run (6)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, medians reported (3)")
    parser.add_argument("--db", default="sqlite,mariadb", help="comma-separated: sqlite, mariadb")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections for the cheap routes (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--passwd-connections", type=int, default=4, help="wrk connections for POST passwd (4)")
    parser.add_argument("--load-connections", type=int, default=8, help="bcrypt load during the starvation check (8)")
    parser.add_argument("--quick", action="store_true", help="smoke run: --seconds 2 --rounds 1")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (gunicorn logs, databases)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 2, 1
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    if not dbs or set(dbs) - {"sqlite", "mariadb"}:
        parser.error("--db takes sqlite, mariadb or both, comma-separated")
    for tool in (WRK, GUNICORN) + ((MARIADBD, MARIADB_INSTALL_DB) if "mariadb" in dbs else ()):
        if not os.path.exists(tool):
            raise SystemExit(f"missing {tool}")

    started = datetime.datetime.now(datetime.timezone.utc)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "command": shlex.join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]]),
        "machine": machine(), "seconds": args.seconds, "rounds": args.rounds, "threads": args.threads,
        "connections": args.connections, "passwd_connections": args.passwd_connections,
        "load_connections": args.load_connections,
        "worker_class": os.environ.get("GUNICORN_WORKER_CLASS", "gthread (config default)"),
        "threads_per_worker": os.environ.get("GUNICORN_THREADS", "4 (config default)"),
    }
    if meta["machine"]["loadavg_at_start"][0] > 0.5 * (os.cpu_count() or 1):
        log(f"load average {meta['machine']['loadavg_at_start'][0]:.2f} before starting: numbers will be noisy")
    def interrupted(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Also when started in the background (SIGINT ignored) or stopped with SIGTERM/SIGHUP: the
    # servers run in their own sessions, so only this script can stop them.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    tmp = tempfile.mkdtemp(prefix="payapi-bench-")
    results = []
    bare_proc = None
    try:
        sandbox = start_sandbox(tmp)
        bare_log = os.path.join(tmp, "bare-gunicorn.log")
        bare_proc, bare_port = start_gunicorn({}, bare_log, app="bench.bare_app:app")
        wait_http(f"http://127.0.0.1:{bare_port}/rest/pay/{'0' * 24}", bare_proc, bare_log)
        meta["bare_command"] = f"PORT={bare_port} WEB_CONCURRENCY={WEB_CONCURRENCY} " + \
            shlex.join(gunicorn_cmd(bare_port, "bench.bare_app:app"))
        log(f"bare falcon up on 127.0.0.1:{bare_port} (master pid {bare_proc.pid})")
        for kind in dbs:
            try:
                results.append(bench_database(kind, args, tmp, sandbox, bare_port, bare_proc))
            except (Exception, subprocess.TimeoutExpired) as exc:  # report it, go on with the next database
                log(f"{kind}: FAILED: {exc}\n{traceback.format_exc()}")
                results.append({"database": kind, "error": f"{type(exc).__name__}: {exc}",
                                "log": analyse_log(os.path.join(tmp, kind, "gunicorn.log"))})
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        raise SystemExit(130)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not leave servers behind
        cleanup()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    meta["loadavg_at_end"] = os.getloadavg()
    meta["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    text = report(results, meta)
    print(text)
    out_dir = os.path.join(BENCH, "results")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, started.strftime("%Y%m%dT%H%M%SZ") + ".json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "results": results, "markdown": text}, f, ensure_ascii=False, indent=2)
    log(f"results written to {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    main()
