#!/usr/bin/env python
"""payapi's benchmark: the real gunicorn + payapi against bare falcon, on SQLite and MariaDB.

    python bench/run.py [--db sqlite,mariadb] [--seconds 4] [--rounds 3] [--writes 300] [--before 448d0c6]
    python bench/run.py --quick          # smoke run: 2 s, 1 round, 60 writes
    python bench/run.py --worker-pass 100000   # also the worker's pass over stale pays (bench/worker_pass.py)
    python bench/run.py --bulk 1000000 --bulk-only   # 1,000 against 1,000,000 pays filled in bulk, one run

The servers are the test suite's (tests/support/live_server.py: `gunicorn -c gunicorn.conf.py` in
production mode, 4 workers, gunicorn's own 1000 connections per worker as the Procfile runs it),
on a SQLite file or a MariaDB server started with pytest-mysql's executor (tests/support/mariadb.py), with
the Ping++ sandbox (payapi.sandbox) as Ping++. Per database:

- `reads`: payapi as in production (BCRYPT_ROUNDS=12): the reads, the bcrypt route, starvation,
  slow clients, RSS;
- `writes`: payapi on the same database with BCRYPT_ROUNDS=4: create pay, webhook (applied),
  refund and withdraw, each request using up its own pay or expert; then the notification
  dispatcher on the outbox they filled;
- `before`: an earlier version (--before, default the one before the write path's work, extracted with `git archive`,
  its own database): the same writes (no refunds there) and the pay read;
- with `--bulk N` (BulkComparison; alone with --bulk-only): payapi on a database of 1,000 pays and
  on one of N, both filled by bench/bulk.py, side by side: the pay read, an expert's balance and
  statement, and the applied webhook, small and large back to back;

and, once, the bare falcon app of bench/bare_app.py under the same gunicorn.conf.py. Everything
else is seeded through the HTTP API. wrk (bench/wrk.lua, which reports JSON) drives them in
alternating rounds after a warm-up round; medians are reported. Results: a markdown table per
database on stdout and JSON in bench/results/<timestamp>.json. Everything listens on 127.0.0.1
only; every process started here is stopped at the end, also on Ctrl-C or an error.
"""

import argparse
import base64
import contextlib
import datetime
import io
import itertools
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))

from bench import bulk  # noqa: E402
from payapi.http.auth import Authenticator  # noqa: E402
from payapi.sandbox import Sandbox  # noqa: E402
from tests.support import mariadb  # noqa: E402
from tests.support.config import AUTH_SECRETS, SERVICE_KEY  # noqa: E402
from tests.support.live_server import LiveServer, Trickler, expert, free_port, paid_charge, parallel  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402
from tests.support.scenarios import ACCOUNT, PASSWD, pay_request  # noqa: E402

WRK = shutil.which("wrk") or "/usr/bin/wrk"
WORKERS = 4
# gunicorn's default, as the Procfile runs it (LiveServer's default of one per thread would leave
# wrk's kept-alive connections beyond 16 waiting in the backlog for the whole run).
WORKER_CONNECTIONS = 1000
NOTIFY_SECRET = "whsec_" + base64.b64encode(b"payapi-bench-notify-secret-32by").decode()
SERVER_ENV = {
    "LOG_LEVEL": "INFO",  # one JSON line per request, as in production
    # Messages are written only with a NOTIFY_URL; the web processes never send them (the
    # dispatcher, later, sends them to its receiver's URL).
    "NOTIFY_URL": "http://127.0.0.1:9/payapi-notifications",
    "NOTIFY_SECRET": NOTIFY_SECRET,
    # Every password request is another user's anyway (the per-user turn never refuses), and the
    # per-user rate must not thin the bcrypt load out either.
    "PASSWORD_RATE_BURST": "1000000",
    "PLATFORM_FEE_BPS": "1000",  # a fee on every credit, so a paid charge books its fee posting too
}
MARIADB_PARAMS = "--user=root --skip-log-bin --skip-name-resolve --max-connections=500"  # else server defaults
# Requests to a bcrypt route in flight at once when each must be served: a worker sheds (906) a
# third one waiting for bcrypt, and two connections can never be three in one worker.
BCRYPT_CONNECTIONS = 2
TRICKLERS = 64
WITHDRAW, REFUND = 1000, 100  # fen per request: each seeded pay credits its expert 11,121 (12,356 less 10 %)
# The expert whose statement is read (GET /rest/pay/bills) has this many paid pays, made through
# the API: a line each (no settlement hold here), so a first page of 20 and a page after it.
STATEMENT_PAYS = 45
SMALL_BULK = 1_000  # pays in the small database of --bulk's comparison (the large one: --bulk's N)
READS = ("pay", "checkInfo", "balance", "bills", "bills_next", "webhook")
# The version before the write path's work (issue 21). (The comparison was first made with the
# version before the double-entry books, 2bccfbe^, whose pingpp shims no longer import on 3.13.)
BEFORE = "448d0c6"
RUNNING = []  # wrk and dispatcher processes, stopped in cleanup()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stop_process(proc, grace=10.0):
    """SIGTERM, then SIGKILL to the process group it was started in (start_new_session: only ours)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    if proc in RUNNING:
        RUNNING.remove(proc)


def expect(answer, what):
    if answer.status != 200 or answer.code != 900:
        raise RuntimeError(f"seeding {what}: {answer!r}")
    return answer.body


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --- processes seen from /proc -----------------------------------------------------------------


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
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


def wait_idle(server, limit=20.0, database=()):
    """Until the server's processes and the database server's (database: their pids) use < 10 % of
    a core: bcrypt work a finished run left queued, and what MariaDB does after a burst of writes
    (purging old row versions, flushing pages), which took a core from the next read run."""
    pids = [server.proc.pid, *children(server.proc.pid), *database]
    before, deadline = cpu_ticks(pids), time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_ticks(pids)
        if now - before <= 0.05 * os.sysconf("SC_CLK_TCK"):
            return
        before = now
    log("server still busy after the settle time; going on")


class LogTail:
    """Counts the server's request lines for one route as its log grows (answers of queued requests)."""

    def __init__(self, server, route):
        self.path, self.route = server.log_path, route
        self.offset, self.count, self.rest = os.path.getsize(self.path), 0, b""

    def wait_for(self, expected, limit=60.0, stall=15.0):
        started = changed = time.monotonic()
        while self.count < expected:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            self.offset += len(data)
            *lines, self.rest = (self.rest + data).split(b"\n")
            counted = sum(
                1 for line in lines if b'"payapi.request"' in line and json.loads(line).get("route") == self.route
            )
            self.count += counted
            now = time.monotonic()
            changed = now if counted else changed
            if now - started > limit or now - changed > stall:
                log(f"server answered {self.count} of {expected} requests after {now - started:.0f} s; going on")
                return round(now - started, 2)
            time.sleep(0.1)
        return round(time.monotonic() - started, 2)


# --- wrk ---------------------------------------------------------------------------------------


class Load:
    """Requests for wrk: (path, headers, body) each; bench/wrk.lua sends them and reports JSON.

    once: every request once (write routes; one shed with 429 is sent again after the others),
    wrk ended as soon as all are answered, and the rate taken from the first request sent to the
    last answer; otherwise for `seconds`.
    """

    def __init__(self, name, server, requests, connections, method="GET", once=False, keep_answers=False):
        self.name, self.server, self.requests = name, server, requests
        self.connections, self.method, self.once, self.keep_answers = connections, method, once, keep_answers

    def start(self, work, seconds, threads):
        run_dir = Path(tempfile.mkdtemp(dir=work, prefix=f"wrk-{self.name}-"))
        with open(run_dir / "requests", "wb") as f:
            for path, headers, body in self.requests:
                fields = [path, *(f"{k}: {v}" for k, v in headers.items())]
                body = body if isinstance(body, bytes) else (body or "").encode()
                line = "\t".join(fields).encode() + b"\t" + body
                assert b"\n" not in line and line.count(b"\t") == len(fields), line[:200]
                f.write(line + b"\n")
        (run_dir / "done").mkdir()
        (run_dir / "answers").mkdir()
        threads = min(threads, len(self.requests)) if self.once else threads
        env = dict(
            os.environ,
            BENCH_REQUESTS=str(run_dir / "requests"),
            BENCH_METHOD=self.method,
            BENCH_THREADS=str(threads),
            BENCH_ONCE="1" if self.once else "0",
            BENCH_DONE_DIR=str(run_dir / "done"),
            BENCH_RESULT=str(run_dir / "result.json"),
            BENCH_ANSWERS=str(run_dir / "answers") if self.keep_answers else "",
        )
        cmd = [
            WRK,
            f"-t{threads}",
            f"-c{max(self.connections, threads)}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "wrk.lua"),
            self.server.url,
        ]
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        RUNNING.append(proc)
        return Running(self, proc, run_dir, threads, seconds)

    def run(self, work, seconds, threads):
        return self.start(work, seconds, threads).finish()


class Running:
    def __init__(self, load, proc, run_dir, threads, seconds):
        self.load, self.proc, self.run_dir, self.threads, self.seconds = load, proc, run_dir, threads, seconds

    def finish(self):
        try:
            if self.load.once:  # ended early once every thread has its answers
                while self.proc.poll() is None and len(os.listdir(self.run_dir / "done")) < self.threads:
                    time.sleep(0.02)
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGINT)  # wrk then reports as at the end of -d
            out, _ = self.proc.communicate(timeout=self.seconds + 60)
        finally:
            stop_process(self.proc, grace=2.0)
        try:
            with open(self.run_dir / "result.json") as f:
                raw = json.load(f)
        except (OSError, ValueError):
            raise RuntimeError(f"wrk gave no result ({self.proc.returncode}) for {self.load.name}:\n{out}") from None
        threads, latency, errors = raw["threads"], raw["latency_ms"], raw["errors"]
        result = {
            "endpoint": self.load.name,
            "connections": self.load.connections,
            "requests": raw["requests"],
            "non_2xx": errors.get("status", 0),
            "socket_errors": sum(errors.get(k, 0) for k in ("connect", "read", "write", "timeout")),
            "mean_ms": latency.get("mean"),
            "p50_ms": latency.get("p50"),
            "p90_ms": latency.get("p90"),
            "p99_ms": latency.get("p99"),
            "max_ms": latency.get("max"),
            "duration_s": raw["duration_s"],
            "sent": sum(t.get("sent", 0) for t in threads),
            "lines": raw["lines"],
            "shed_and_sent_again": sum(t.get("shed", 0) for t in threads),
        }
        if self.load.once:
            ends = [t.get("t1") for t in threads]
            result["complete"] = all(ends)
            if all(ends):
                span = max(ends) - min(t["t0"] for t in threads)
                result["duration_s"] = span
        result["rps"] = result["requests"] / result["duration_s"] if result["duration_s"] else 0.0
        result["ok_rps"] = result["rps"] * (1 - result["non_2xx"] / result["requests"]) if result["requests"] else 0.0
        if self.load.keep_answers:
            result["answers"] = [
                json.loads(line)
                for name in os.listdir(self.run_dir / "answers")
                for line in open(self.run_dir / "answers" / name, encoding="utf-8")
                if line.strip()
            ]
        if result["rps"] and result["mean_ms"] is not None and not self.load.once:
            # wrk's latency covers answered requests only. Little's law gives the mean over all the
            # connection-time (connections / rps); well above wrk's mean, some connections spent the
            # run waiting for answers that never came, which p99 hides.
            implied = self.load.connections / result["rps"] * 1000
            result["unanswered_share"] = max(0.0, 1 - result["mean_ms"] / implied)
        return result


# --- servers and seeds -------------------------------------------------------------------------


def start_bare(tmp, stack):
    """The bare falcon app (bench/bare_app.py) on the same gunicorn configuration as payapi, in
    tmp/bare, stopped when stack closes: every ratio's ceiling."""
    (tmp / "bare").mkdir()
    bare = LiveServer(
        tmp / "bare",
        workers=WORKERS,
        worker_connections=WORKER_CONNECTIONS,
        app="bench.bare_app:app",
        ready_path="/rest/pay/" + "0" * 24,
        **SERVER_ENV,
    )
    stack.callback(bare.stop)
    bare.start(timeout=60)
    log(f"bare falcon up on {bare.url}")
    return bare


def before_tree(rev, tmp):
    """The older version's files (no worktree: nothing in the repository changes)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
    tree = Path(tmp) / f"before-{sha}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return sha, tree


class Seeder:
    """Experts and pays made through one server's HTTP API, sent by wrk (the sandbox plays the payer).

    Each pool: `size` experts, each with one new pay of 12,356 fen (its Ping++ charge created at the
    sandbox and paid there, its signed charge.succeeded not yet sent), a pay password and a
    withdraw account.
    """

    phones = itertools.count(13900000000)

    def __init__(self, bench, version, server):
        self.bench, self.version, self.server = bench, version, server

    def user(self):
        return self.server.user(phone=str(next(self.phones)))

    def create_pays(self, experts, rnd):
        """`POST /internal/pays` once per expert, as the order service: a measured run of its own."""
        lines = [
            ("/internal/pays", json_headers(**{"X-Service-Key": SERVICE_KEY}), json.dumps(pay_request(expert_id=u.id)))
            for u in experts
        ]
        load = Load(
            "create_pay", self.server, lines, self.bench.args.write_connections, "POST", once=True, keep_answers=True
        )
        created = self.bench.run(load, rnd, label=f"create_pay@{self.version}")
        return [a["info"] for a in created.pop("answers") if a.get("code") == 900]

    def pool(self, size, rnd):
        experts = [self.user() for _ in range(size)]
        infos = self.create_pays(experts, rnd)
        sandbox = self.bench.sandbox
        charges = [sandbox.mark_paid(info["charge"]["id"])["id"] for info in infos]
        signed = {r["object_id"]: r for r in sandbox.events if r["type"] == "charge.succeeded"}
        by_id = {u.id: u for u in experts}
        self.seed("/rest/pay/passwd", [(u, {"passwd": PASSWD}) for u in experts], BCRYPT_CONNECTIONS)
        self.seed("/rest/pay/smscode", [(u, {"purpose": "withdrawInfo"}) for u in experts])
        codes = {m["phone"]: m["code"] for m in self.server.sms_messages()}
        self.seed("/rest/pay/withdrawInfo", [(u, {"smscode": codes[u.phone], **ACCOUNT}) for u in experts])
        return [
            (by_id[info["expert_id"]], info["pay_id"], signed[c]["raw"], signed[c]["signature"])
            for info, c in zip(infos, charges, strict=True)
        ]

    def paid_pays(self, size, rnd):
        """`size` new pays, each a new expert's, paid at the sandbox: -> the pool write_loads takes
        (no expert user: only its webhook load is for these)."""
        infos = self.create_pays([self.user() for _ in range(size)], rnd)
        sandbox = self.bench.sandbox
        charges = [sandbox.mark_paid(info["charge"]["id"])["id"] for info in infos]
        signed = {r["object_id"]: r for r in sandbox.events if r["type"] == "charge.succeeded"}
        return [
            (None, info["pay_id"], signed[c]["raw"], signed[c]["signature"])
            for info, c in zip(infos, charges, strict=True)
        ]

    def seed(self, path, requests, connections=8):
        lines = [(path, json_headers(**u.headers), json.dumps(body, ensure_ascii=False)) for u, body in requests]
        answers = Load("seed", self.server, lines, connections, "POST", once=True, keep_answers=True).run(
            self.bench.work, self.bench.args.write_cap, self.bench.args.threads
        )["answers"]
        failed = [a for a in answers if a.get("code") != 900]
        if failed or len(answers) != len(lines):
            log(
                f"seeding {path} on {self.version}: {len(lines) - len(answers) + len(failed)} of {len(lines)} "
                f"not done, e.g. {failed[:1]}"
            )


def json_headers(**headers):
    return {"Content-Type": "application/json", **headers}


def passwd_load(server, connections, seconds):
    """A first pay password for a new user each request (one bcrypt hash at the server's cost); enough
    users that none comes round again, even while most requests are shed at once (906)."""
    body = json.dumps({"passwd": PASSWD})
    fresh = [("/rest/pay/passwd", json_headers(**server.user().headers), body) for _ in range(1000 * seconds)]
    return Load("passwd", server, fresh, connections, "POST")


def webhook_load(server, pool, connections):
    """Each pay's signed charge.succeeded, sent once: every request applies a new paid charge."""
    return Load(
        "webhook_applied",
        server,
        [("/rest/pay/webhook", json_headers(**{"X-Pingplusplus-Signature": sig}), raw) for _, _, raw, sig in pool],
        connections,
        "POST",
        once=True,
    )


def write_loads(server, pool, connections, refunds=True):
    """The write routes over one round's pool, in order: apply each pay, refund a little of it, withdraw some of the credit."""
    loads = [webhook_load(server, pool, connections)]
    if refunds:
        body = json.dumps({"amount": REFUND, "description": "预约取消"}, ensure_ascii=False)
        loads.append(
            Load(
                "refund",
                server,
                [
                    (f"/internal/pays/{pay_id}/refunds", json_headers(**{"X-Service-Key": SERVICE_KEY}), body)
                    for _, pay_id, _, _ in pool
                ],
                connections,
                "POST",
                once=True,
            )
        )
    body = json.dumps({"passwd": PASSWD, "amount": WITHDRAW})
    loads.append(
        Load(
            "withdraw",
            server,
            [("/rest/pay/withdraw", json_headers(**u.headers), body) for u, _, _, _ in pool],
            BCRYPT_CONNECTIONS,
            "POST",
            once=True,
        )
    )
    return loads


# --- scenarios ---------------------------------------------------------------------------------


def slow_clients(server, read, work, args, give_up_after=None):
    """Reads while 64 connections trickle (half their headers, half a 100 kB webhook body, a piece a second)."""
    idle = read.run(work, args.slow_seconds, args.threads)
    tricklers = [Trickler(server.port, "body" if i % 2 else "headers", give_up_after) for i in range(TRICKLERS)]
    for t in tricklers:
        t.start()
    for t in tricklers:
        t.opened.wait(10)
    loaded = read.run(work, args.slow_seconds, args.threads)
    for t in tricklers:
        t.join((give_up_after or 30) + 10)

    def outcome(t):
        if t.answer:
            return t.answer.split(b"\r\n", 1)[0].decode("latin-1")
        return "closed without an answer" if t.answer == b"" else "still open when the trickler gave up"

    lasted = sorted(t.lasted for t in tricklers if t.lasted is not None)
    return {
        "idle": idle,
        "trickled": loaded,
        "outcomes": dict(Counter(outcome(t) for t in tricklers)),
        "lasted_s": {"min": lasted[0], "median": statistics.median(lasted), "max": lasted[-1]} if lasted else None,
        "p99_ratio": loaded["p99_ms"] / idle["p99_ms"] if loaded["requests"] and idle["p99_ms"] else None,
        "gave_up_after_s": give_up_after,
    }


def dispatch(server, work, seconds):
    """Messages/s the notification dispatcher delivers to a local receiver (tests/support/receiver.py, which verifies each)."""
    receiver = Receiver(NOTIFY_SECRET)
    env = dict(server.env, NOTIFY_URL=receiver.url, NOTIFY_SECRET=NOTIFY_SECRET)
    with open(work / "dispatch.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.dispatch", str(seconds)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    RUNNING.append(proc)
    try:
        first = last = None
        count = at_first = 0
        while proc.poll() is None:
            time.sleep(0.02)
            now, seen = time.monotonic(), len(receiver.received)
            if seen and first is None:
                first, count, at_first = now, seen, seen
            if seen != count:
                last, count = now, seen
        proc.wait(30)
    finally:
        stop_process(proc)
        receiver.stop()
    delivered = len(receiver.received)
    return {
        "delivered": delivered,
        "refused": len(receiver.refused),
        "window_s": seconds,
        "rate": (count - at_first) / (last - first) if first and last and last > first else None,
        "backlog_emptied": bool(last and time.monotonic() - last > 1.0),
        "exit": proc.returncode,
    }


def analyse_log(path):
    """payapi's request lines (status per route) and anything logged at WARNING or above."""
    statuses, problems = Counter(), Counter()
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return {}
    with f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                if "[ERROR]" in line or "[CRITICAL]" in line or "Traceback" in line:
                    problems[line.strip()[:160]] += 1
                continue
            if rec.get("logger") == "payapi.request":
                statuses[f"{rec.get('method')} {rec.get('route')} {rec.get('status')} code={rec.get('code')}"] += 1
            elif rec.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                problems[f"{rec.get('level')} {rec.get('logger')}: {str(rec.get('msg'))[:160]}"] += 1
    return {"request_statuses": dict(sorted(statuses.items())), "warnings_and_errors": dict(problems)}


class DatabaseBench:
    """Every scenario on one database: servers, seeds, alternating rounds, then the one-off scenarios."""

    def __init__(self, kind, args, tmp, bare, stack, before=None, work=None):
        self.kind, self.args, self.bare, self.stack, self.before = kind, args, bare, stack, before
        self.work = Path(tmp) / (work or kind)
        self.work.mkdir()
        self.result = {"database": kind, "runs": []}

    def database(self, name):
        if self.kind == "sqlite":
            return f"sqlite:///{self.work / name}.db"
        if not hasattr(self, "mariadb"):
            log("mariadb: starting a server with pytest-mysql's executor")
            params = " ".join([MARIADB_PARAMS, *self.args.mariadb_option])
            self.mariadb = mariadb.start(self.work / "mariadb", free_port(), params)
            self.stack.callback(self.mariadb.stop)
            self.result["database_detail"] = f"MariaDB {mariadb.version(self.mariadb)} ({params}, else defaults)"
        return mariadb.create_database(self.mariadb, name)

    def server(self, name, url, root=ROOT, migrate=False, prepare=None, **env):
        (self.work / name).mkdir()
        server = LiveServer(
            self.work / name,
            url,
            self.sandbox.url,
            self.sandbox.public_key_path,
            workers=WORKERS,
            worker_connections=WORKER_CONNECTIONS,
            root=root,
            each_worker=root == ROOT,
            **SERVER_ENV,
            **env,
        )
        if migrate:
            server.migrate()
        if prepare:
            prepare(url)
        self.stack.callback(server.stop)
        return server.start(timeout=60)

    def database_pids(self):
        """The MariaDB server's processes (mysqld_safe and mariadbd), if this run started one."""
        server = getattr(self, "mariadb", None)
        if server is None or server.process is None:
            return []
        return [server.process.pid, *children(server.process.pid)]

    def run(self, load, rnd, label=None, seconds=None):
        """One wrk run; recorded unless it is the warm-up (round 0)."""
        seconds = self.args.write_cap if load.once else seconds or (self.args.seconds if rnd else 1)
        r = load.run(self.work, seconds, self.args.threads)
        r.update(endpoint=label or load.name, round=rnd)
        if rnd:
            self.result["runs"].append(r)
        log(
            f"{self.kind} {'warm-up ' if not rnd else ''}{r['endpoint']:24} {r['rps']:9.1f} rps  p50 {r['p50_ms'] or 0:8.2f} ms  "
            f"p99 {r['p99_ms'] or 0:8.2f} ms  non-2xx {r['non_2xx']}  socket errors {r['socket_errors']}"
            + ("" if r.get("complete", True) else "  (NOT all answered)")
        )
        return r

    def start_sandbox(self, sqlite_detail):
        """The Ping++ sandbox for this database's servers; sqlite_detail: the report's database line
        until a MariaDB server is started (self.database writes that server's own)."""
        self.sandbox = Sandbox(public_key_path=str(self.work / "pingpp_public.pem")).start()
        self.stack.callback(self.sandbox.stop)
        self.result.setdefault("database_detail", sqlite_detail)

    def go(self):
        args = self.args
        self.start_sandbox("SQLite file (WAL) in a temp dir")
        self.url = self.database("payapi_bench")
        log(f"{self.kind}: payapi (BCRYPT_ROUNDS=12) and payapi for the write routes (BCRYPT_ROUNDS=4)")
        reads = self.server("reads", self.url, migrate=True, BCRYPT_ROUNDS="12")
        writes = self.server("writes", self.url, BCRYPT_ROUNDS="4")
        self.servers = {"reads": reads, "writes": writes}
        seeders = [Seeder(self, "after", writes)]
        if self.before:
            sha, tree = self.before
            log(f"{self.kind}: the earlier version {sha} (--before) on its own database")
            old = self.server("before", self.database("payapi_before"), root=tree, migrate=True, BCRYPT_ROUNDS="4")
            self.servers["before"] = old
            seeders.append(Seeder(self, "before", old))
        loads = self.read_loads(reads, self.servers.get("before"))

        log(f"{self.kind}: {args.rounds} alternating round(s) after a warm-up round; each round seeds its writes")
        for rnd in range(args.rounds + 1):  # round 0 warms every server up and is not recorded
            wait_idle(reads, database=self.database_pids())
            self.read_round(reads, loads, rnd)
            for seeder in seeders:
                pool = seeder.pool(args.writes if rnd else 2 * args.write_connections, rnd)
                wait_idle(seeder.server, database=self.database_pids())
                for load in write_loads(seeder.server, pool, args.write_connections, seeder.version == "after"):
                    self.run(load, rnd, label=f"{load.name}@{seeder.version}")
                wait_idle(seeder.server, database=self.database_pids())

        self.result["rss_mb"] = {
            name: [round(rss_mb(p) or 0, 1) for p in children(server.proc.pid)] for name, server in self.servers.items()
        }
        wait_idle(writes, database=self.database_pids())
        log(f"{self.kind}: notification dispatcher, {args.dispatch_seconds} s")
        self.result["dispatch"] = dispatch(writes, self.work, args.dispatch_seconds)
        if not args.writes_only:
            log(f"{self.kind}: slow clients")
            self.result["slow_clients"] = {"payapi": slow_clients(reads, loads["pay"], self.work, args)}
        if args.gthread and not args.writes_only and self.kind == args.dbs[0]:
            log(f"{self.kind}: slow clients against gunicorn's stock gthread worker")
            stock = self.server("gthread", self.url, BCRYPT_ROUNDS="12", GUNICORN_WORKER_CLASS="gthread")
            read = Load("pay", stock, loads["pay"].requests, args.connections)
            self.result["slow_clients"]["payapi, stock gthread"] = slow_clients(stock, read, self.work, args, 15)
            stock.stop()
        for name, server in self.servers.items():
            self.result[f"log_{name}"] = analyse_log(server.log_path)
        summarise(self.result)
        return self.result

    def reader(self, server):
        """A payer with a paid pay, and an expert with earnings, a pay password and an account:
        -> (the user, the pay's id, its applied charge.succeeded, that event's headers, the answer)."""
        reader = expert(server, self.sandbox, self.sandbox.private_key, 88_800)
        info = expect(server.internal_pay(userID=reader.id), "POST /internal/pays")["info"]
        raw, signature = self.sandbox.signed_event("charge.succeeded", self.sandbox.mark_paid(info["charge"]["id"]))
        webhook = json_headers(**{"X-Pingplusplus-Signature": signature})
        return reader, info["pay_id"], raw, webhook, server.post("/rest/pay/webhook", raw=raw, headers=webhook)

    def statement(self, server, owner=None, lines=None):
        """An expert with a statement (STATEMENT_PAYS pays made and paid through the API, unless an
        owner with `lines` lines is given) -> (the expert, {"bills": its first page, "bills_next":
        the page after it, by the first page's cursor}), each page checked once."""
        if owner is None:
            owner, lines = server.user(), STATEMENT_PAYS
            sandbox = self.sandbox
            parallel(
                5,
                lambda i: [
                    paid_charge(server, sandbox, sandbox.private_key, expert_id=owner.id) for _ in range(i, lines, 5)
                ],
            )
        first = owner.get("/rest/pay/bills")
        cursor = first.body["list"][-1]["bill_id"] if first.code == 900 and first.body["list"] else ""
        pages = {"bills": "/rest/pay/bills", "bills_next": f"/rest/pay/bills?before={cursor}"}
        after = owner.get(pages["bills_next"])
        checks = {
            "bills": first.code == 900 and len(first.body["list"]) == 20 and first.body["has_more"],
            "bills_next": after.code == 900
            and len(after.body["list"]) == min(20, lines - 20)
            and after.body["list"][0]["bill_id"] < cursor,
        }
        for name, ok in checks.items():
            if not ok:
                log(f"CHECK FAILED {name}: {first if name == 'bills' else after}")
        self.result.setdefault("checks", {}).update(checks)
        return owner, pages

    def read_loads(self, reads, before=None):
        """The reads as wrk sends them, each checked once first; the pay read on the version before too."""
        reader, pay_id, raw, webhook, applied = self.reader(reads)
        self.result["checks"] = self.check(reads, reader, pay_id, applied, raw, webhook)
        owner, pages = self.statement(reads)
        pay, c = f"/rest/pay/{pay_id}", self.args.connections
        loads = {
            "bare": Load("bare", self.bare, [(pay, reader.headers, None)], c),
            "pay": Load("pay", reads, [(pay, reader.headers, None)], c),
            "checkInfo": Load("checkInfo", reads, [("/rest/pay/checkInfo", reader.headers, None)], c),
            "balance": Load("balance", reads, [("/rest/pay/balance", reader.headers, None)], c),
            **{name: Load(name, reads, [(path, owner.headers, None)], c) for name, path in pages.items()},
            "webhook": Load("webhook", reads, [("/rest/pay/webhook", webhook, raw)], c, "POST"),
        }
        if before is not None:
            old_reader, old_pay_id, *_ = self.reader(before)
            loads["pay@before"] = Load("pay@before", before, [(f"/rest/pay/{old_pay_id}", old_reader.headers, None)], c)
        return loads

    def read_round(self, reads, loads, rnd):
        """The reads, the bcrypt route, and the pay read while the bcrypt route is saturated."""
        args = self.args
        for name in ("bare", "balance") if args.writes_only else ("bare", "pay", "pay@before", *READS[1:]):
            if name in loads:
                self.run(loads[name], rnd)
        if args.writes_only:
            return
        tail = LogTail(reads, "/rest/pay/passwd")
        alone = self.run(passwd_load(reads, args.passwd_connections, args.seconds), rnd)
        seconds = args.seconds if rnd else 1
        load = passwd_load(reads, args.load_connections, seconds + 2).start(self.work, seconds + 2, args.threads)
        time.sleep(1.0)
        try:
            starved = self.run(loads["pay"], rnd, label="pay_under_bcrypt")
        finally:
            loaded = load.finish()
        loaded.update(endpoint="passwd_load", round=rnd)
        if rnd:
            self.result["runs"].append(loaded)
        starved["drain_s"] = tail.wait_for(alone["sent"] + loaded["sent"])  # bcrypt requests still queued
        wait_idle(reads, database=self.database_pids())

    def check(self, reads, reader, pay_id, applied, raw, webhook):
        """One request per read before the load: what a right answer looks like."""
        pay = reader.get(f"/rest/pay/{pay_id}")
        check = reader.get("/rest/pay/checkInfo")
        balance = reader.get("/rest/pay/balance")
        replay = reads.post("/rest/pay/webhook", raw=raw, headers=webhook)
        checks = {
            "webhook applied": applied.status == 200 and applied.body.get("result") == "applied",
            "pay": pay.code == 900 and pay.body["info"]["status"] == "paid",
            "checkInfo": check.code == 900 and check.body.get("passwd") is True and check.body.get("withdraw") is True,
            "balance": balance.code == 900 and balance.body["info"]["balance"] == 88_800 - 8_880,
            "webhook replay": replay.status == 200 and replay.body.get("result") == "replay",
        }
        for name, ok in checks.items():
            if not ok:
                log(f"CHECK FAILED {name}")
        return checks


class BulkComparison(DatabaseBench):
    """--bulk N: a small database (SMALL_BULK pays) and a large one (N pays), both filled by
    bench/bulk.py, each under its own payapi on the same database server, measured in one run:
    the reads and the applied webhook, small and large one after the other in alternating order.

    The reads: `GET /rest/pay/{pay_id}` of a pay made through the API (the reader's, as in the
    other runs), and the balance and the statement (first page, and the page after it by its
    cursor) of a bulk expert, who has the same history in both (bench/bulk.py: 100 pays, 200
    lines). The webhook: each round's new pays, made through the API on each.
    """

    SIZES = ("small", "large")
    ROUTES = ("pay", "balance", "bills", "bills_next")

    def fill(self, pays):
        def seed(url):
            log(f"{self.kind}: {pays:,} pays in bulk (bench/bulk.py)")
            t0 = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "bench.bulk", url, str(pays)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            )
            self.result["bulk"][pays] = {"output": done.stdout.strip(), "wall_s": round(time.monotonic() - t0, 1)}
            log(f"{self.kind}: {done.stdout.strip()} ({time.monotonic() - t0:.0f} s with start-up)")

        return seed

    def go(self):
        args = self.args
        self.start_sandbox("SQLite files (WAL) in a temp dir")
        self.result.update(bulk={}, sizes={"small": SMALL_BULK, "large": args.bulk})
        servers, loads, seeders, c = {}, {}, {}, args.connections
        for size in self.SIZES:
            pays = self.result["sizes"][size]
            url = self.database(f"payapi_{size}")
            servers[size] = self.server(size, url, migrate=True, prepare=self.fill(pays), BCRYPT_ROUNDS="4")
            reader, pay_id, *_ = self.reader(servers[size])
            owner = servers[size].user()
            owner.id = bulk.expert_id(0)
            owner.headers["auth"] = Authenticator(AUTH_SECRETS).mint(owner.id, phone=owner.phone)
            _, pages = self.statement(servers[size], owner, 2 * bulk.PAYS_PER_EXPERT)
            self.result["checks"][f"balance@{size}"] = owner.get("/rest/pay/balance").code == 900
            loads[size] = {
                "pay": Load("pay", servers[size], [(f"/rest/pay/{pay_id}", reader.headers, None)], c),
                "balance": Load("balance", servers[size], [("/rest/pay/balance", owner.headers, None)], c),
                **{name: Load(name, servers[size], [(path, owner.headers, None)], c) for name, path in pages.items()},
            }
            seeders[size] = Seeder(self, size, servers[size])
        self.result["statement_lines"] = 2 * bulk.PAYS_PER_EXPERT
        bare = Load("bare", self.bare, [("/rest/pay/" + "0" * 24, {}, None)], c)
        log(f"{self.kind}: small and large, {args.rounds} alternating round(s) after a warm-up round")
        for rnd in range(args.rounds + 1):
            order = self.SIZES if rnd % 2 else self.SIZES[::-1]
            self.run(bare, rnd)
            for route in self.ROUTES:
                for size in order:
                    self.run(loads[size][route], rnd, label=f"{route}@{size}")
            pools = {
                size: seeders[size].paid_pays(args.writes if rnd else 2 * args.write_connections, rnd) for size in order
            }
            for size in order:
                wait_idle(servers[size])
                self.run(
                    webhook_load(servers[size], pools[size], args.write_connections),
                    rnd,
                    label=f"webhook_applied@{size}",
                )
        for size, server in servers.items():
            self.result[f"log_{size}"] = analyse_log(server.log_path)
        summarise(self.result)
        s = self.result["summary"]
        self.result["comparison"] = {}
        for route in (*self.ROUTES, "webhook_applied", "create_pay"):
            small, large = s.get(f"{route}@small", {}), s.get(f"{route}@large", {})
            rate = "ok_rps" if route in ("webhook_applied", "create_pay") else "rps"
            # Each round's large ÷ small: the two ran one after the other, so the machine's load,
            # which drifts over a run, weighs on both alike; their median is the figure compared.
            by_round = {(r["endpoint"], r["round"]): r[rate] for r in self.result["runs"]}
            paired = [
                by_round[f"{route}@large", rnd] / by_round[f"{route}@small", rnd]
                for rnd in range(1, args.rounds + 1)
                if by_round.get((f"{route}@small", rnd)) and (f"{route}@large", rnd) in by_round
            ]
            self.result["comparison"][route] = {
                "small_rps": small.get(rate),
                "large_rps": large.get(rate),
                "ratio": median(paired),
                "round_ratios": [round(x, 2) for x in paired],
                "small_p99_ms": small.get("p99_ms"),
                "large_p99_ms": large.get("p99_ms"),
            }
        return self.result


def summarise(result):
    by = {}
    for r in result["runs"]:
        by.setdefault(r["endpoint"], []).append(r)
    summary = {}
    for k, runs in by.items():
        summary[k] = {
            "rps": median([r["rps"] for r in runs]),
            "ok_rps": median([r["ok_rps"] for r in runs]),
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "unanswered_share": median([r.get("unanswered_share") for r in runs]),
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "incomplete": sum(1 for r in runs if r.get("complete") is False),
        }
    bare = summary.get("bare", {}).get("rps")
    for k, s in summary.items():  # reads: all answers ÷ bare; writes (issue 21's ratios): 2xx/s ÷ bare
        reads = k in ("bare", *READS, "pay_under_bcrypt", "pay@before")
        rate = s["rps"] if reads else s["ok_rps"]
        s["x_bare"] = rate / bare if bare and rate and (reads or "@" in k) else None
    result["summary"] = summary
    idle, loaded = summary.get("pay", {}).get("p99_ms"), summary.get("pay_under_bcrypt", {}).get("p99_ms")
    result["starvation_ratio"] = loaded / idle if idle and loaded else None


# --- report ------------------------------------------------------------------------------------


def fmt(value, digits=2):
    return "–" if value is None else f"{value:,.{digits}f}"


def verdict(ok):
    return "" if ok is None else (" (target met)" if ok else " (target NOT met)")


NAMES = {
    "bare": "bare falcon `GET /rest/pay/{pay_id}` (the ceiling)",
    "pay": "`GET /rest/pay/{pay_id}`",
    "checkInfo": "`GET /rest/pay/checkInfo`",
    "balance": "`GET /rest/pay/balance`",
    "bills": "`GET /rest/pay/bills` (the expert's statement, first page of 20)",
    "bills_next": "`GET /rest/pay/bills?before=…` (the page after it, by its cursor)",
    "webhook": "`POST /rest/pay/webhook` (signed replay)",
    "passwd": "`POST /rest/pay/passwd` (first pay password, bcrypt 12)",
    "pay_under_bcrypt": "`GET /rest/pay/{pay_id}` while passwd is saturated",
    "passwd_load": "… that passwd load",
    "create_pay@after": "`POST /internal/pays` (a new pay; its charge created at the sandbox)",
    "webhook_applied@after": "`POST /rest/pay/webhook` (a new paid charge applied)",
    "refund@after": "`POST /internal/pays/{pay_id}/refunds` (100 fen; refund created at the sandbox)",
    "withdraw@after": "`POST /rest/pay/withdraw` (pay password at bcrypt 4)",
}
WRITES = ("create_pay@after", "webhook_applied@after", "refund@after", "withdraw@after")
TARGETS = {"sqlite": 0.65, "mariadb": 0.45}  # GET /rest/pay/{pay_id} × bare falcon (issue 9)


COMPARED = {
    "pay": "`GET /rest/pay/{pay_id}`",
    "balance": "`GET /rest/pay/balance` (a bulk expert: 100 pays)",
    "bills": "`GET /rest/pay/bills` (that expert's first page)",
    "bills_next": "`GET /rest/pay/bills?before=…` (the page after it)",
    "webhook_applied": "`POST /rest/pay/webhook` applied (2xx/s)",
    "create_pay": "`POST /internal/pays` (the webhooks' pays; 2xx/s)",
}


def comparison_report(res):
    sizes, s = res["sizes"], res["summary"]
    lines = [
        f"### {res['database']}, small ({sizes['small']:,} pays) and large ({sizes['large']:,} pays) in one run: "
        f"{res['database_detail']}",
        "",
    ]
    for seeded in res["bulk"].values():
        lines.append(f"- bench/bulk.py: {seeded['output']}")
    lines += [
        f"- the statement read: a bulk expert with {res['statement_lines']} lines; bare falcon "
        f"{fmt(s.get('bare', {}).get('rps'), 0)} rps in the same rounds",
        "",
        "| route | small rps | large rps | large ÷ small (median of the rounds') | within 10 % | each round's | "
        "small p99 ms | large p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for route, c in res["comparison"].items():
        ok = None if c["ratio"] is None else c["ratio"] >= 0.9
        lines.append(
            f"| {COMPARED[route]} | {fmt(c['small_rps'], 0)} | {fmt(c['large_rps'], 0)} | {fmt(c['ratio'])} | "
            f"{'–' if ok is None else 'yes' if ok else '**no**'} | {', '.join(f'{x:.2f}' for x in c['round_ratios'])} | "
            f"{fmt(c['small_p99_ms'])} | {fmt(c['large_p99_ms'])} |"
        )
    lines.append("")
    lines += checks_and_logs(res, BulkComparison.SIZES)
    lines.append("")
    return lines


def checks_and_logs(res, servers):
    """The report's lines on the checks before the load and each server's log: non-200 answers,
    warnings and errors."""
    bad = [k for k, ok in res.get("checks", {}).items() if not ok]
    lines = [f"- checks before the load: {'all as expected' if not bad else 'FAILED: ' + ', '.join(bad)}"]
    for name in servers:
        lg = res.get(f"log_{name}") or {}
        odd = {k: v for k, v in lg.get("request_statuses", {}).items() if " 200 " not in k}
        if odd:
            lines.append(f"- {name} server, non-200 answers: " + "; ".join(f"{k} ×{v}" for k, v in odd.items()))
        if lg.get("warnings_and_errors"):
            lines.append(
                f"- {name} server, warnings/errors: "
                + "; ".join(f"{k} ×{v}" for k, v in list(lg["warnings_and_errors"].items())[:8])
            )
    return lines


def report(results, meta, bare_slow):
    m = meta["machine"]
    lines = [
        f"## payapi benchmark — {meta['started']}",
        "",
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}; load average at start "
        f"{' '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}, at end {' '.join(f'{x:.2f}' for x in meta['loadavg_at_end'])}",
        f"- command: `{meta['command']}`{' (quick: noisy smoke figures, not for comparison)' if meta['quick'] else ''}",
        f"- gunicorn -c gunicorn.conf.py, {WORKERS} workers, worker class {meta['worker_class']}, "
        f"{WORKER_CONNECTIONS} connections per worker; wrk -t{meta['threads']}, reads -c{meta['connections']} for "
        f"{meta['seconds']} s, writes -c{meta['write_connections']} (withdraw -c{BCRYPT_CONNECTIONS}) × {meta['writes']} requests each; "
        f"{meta['rounds']} alternating round(s), medians",
        "",
    ]
    for res in results:
        if "error" in res:
            lines += [f"### {res['database']}: FAILED", "", "```", res["error"][-3000:], "```", ""]
            continue
        if "comparison" in res:
            lines += comparison_report(res)
            continue
        s = res["summary"]
        lines += [
            f"### {res['database']}: {res['database_detail']}",
            "",
            "| endpoint | rps | 2xx/s | × bare | p50 ms | p99 ms | requests | non-2xx | socket errors |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for k, name in NAMES.items():
            if k in s:
                e = s[k]
                lines.append(
                    f"| {name} | {fmt(e['rps'], 1 if (e['rps'] or 0) < 100 else 0)} | "
                    f"{fmt(e['ok_rps'], 1 if (e['ok_rps'] or 0) < 100 else 0)} | {fmt(e['x_bare'])} | "
                    f"{fmt(e['p50_ms'])} | {fmt(e['p99_ms'])} | {e['requests']:,} | {e['non_2xx']} | {e['socket_errors']} |"
                )
        lines.append("")
        x = s.get("pay", {}).get("x_bare")
        lines.append(
            f"- `GET /rest/pay/{{pay_id}}` × bare = **{fmt(x)}**{verdict(None if x is None else x >= TARGETS[res['database']])}"
            f" (target ≥ {TARGETS[res['database']]})"
        )
        ratio = res.get("starvation_ratio")
        lines.append(
            f"- starvation: read p99 under bcrypt load / idle read p99 = "
            f"{fmt(s.get('pay_under_bcrypt', {}).get('p99_ms'))} / {fmt(s.get('pay', {}).get('p99_ms'))} ms = "
            f"**{fmt(ratio)}×**{verdict(None if ratio is None else ratio <= 2)} (target ≤ 2×)"
        )
        for k in ("pay", "pay_under_bcrypt"):
            if (s.get(k, {}).get("unanswered_share") or 0) > 0.2:
                lines.append(
                    f"- **{NAMES[k]}: stalled connections**: ≈{s[k]['unanswered_share'] * 100:.0f}% of the "
                    "connection-time went to requests still unanswered at the end, which wrk leaves out of p99"
                )
        if "passwd" in s:
            lines.append(
                "- passwd: the 2xx/s are first pay passwords set (one bcrypt-12 hash each, every request "
                "another user); the other answers were shed at once with 906 (a third request waiting for "
                "bcrypt in one worker)"
            )
        tails = [f"{NAMES[k]} {s[k]['p99_ms'] / s[k]['p50_ms']:.1f}×" for k in WRITES if s.get(k, {}).get("p50_ms")]
        if tails:
            lines.append("- writes' p99 ÷ p50 (target ≤ 3×): " + "; ".join(tails))
        d = res.get("dispatch") or {}
        if d.get("rate") and s.get("bare", {}).get("rps"):
            lines.append(f"- dispatcher × bare: **{d['rate'] / s['bare']['rps']:.3f}** (target ≥ 0.08)")
        incomplete = [k for k, e in s.items() if e["incomplete"]]
        if incomplete:
            lines.append(
                f"- **not every write request was answered** in: {', '.join(incomplete)} (rate over wrk's whole run)"
            )
        if "webhook_applied@before" in s:
            lines += [
                "",
                f"Before and after: before = {meta['before']} (--before) with its own "
                "gunicorn.conf.py, i.e. gunicorn's stock gthread worker unless GUNICORN_WORKER_CLASS says otherwise; "
                "after = this checkout; each on its own database, the same seeds and requests, alternating:",
                "",
                "| route | before 2xx/s | after 2xx/s | after ÷ before | before p99 ms | after p99 ms |",
                "|---|---|---|---|---|---|",
            ]
            for k in ("pay", "create_pay", "webhook_applied", "withdraw"):
                b, a = s.get(f"{k}@before", {}), s.get(f"{k}@after", s.get(k, {}))
                lines.append(
                    f"| {NAMES.get(k + '@after', NAMES.get(k))} | {fmt(b.get('ok_rps'), 0)} | {fmt(a.get('ok_rps'), 0)} | "
                    f"{fmt(a['ok_rps'] / b['ok_rps'] if a.get('ok_rps') and b.get('ok_rps') else None)} | "
                    f"{fmt(b.get('p99_ms'))} | {fmt(a.get('p99_ms'))} |"
                )
        d = res.get("dispatch") or {}
        lines += [
            "",
            f"- notifications: the dispatcher delivered {d.get('delivered')} messages to a local receiver "
            f"(verified with standardwebhooks; refused {d.get('refused')}) at **{fmt(d.get('rate'), 0)} messages/s**"
            + (" (the whole backlog)" if d.get("backlog_emptied") else f" (within {d.get('window_s')} s)"),
        ]
        rss = [x for v in res.get("rss_mb", {}).values() for x in v]
        lines.append(
            f"- worker RSS after the load: {', '.join(f'{k} {max(v):.1f}' for k, v in res['rss_mb'].items() if v)} MB "
            f"(largest){verdict(max(rss) <= 80 if rss else None)} (target ≤ 80 MB)"
        )
        lines += checks_and_logs(res, ("reads", "writes", "before"))
        lines.append("")
    slow = [(f"{res['database']}: {name}", sc) for res in results for name, sc in res.get("slow_clients", {}).items()]
    if bare_slow:
        slow.insert(0, ("bare falcon", bare_slow))
    if slow:
        lines += [
            f"### Slow clients: {TRICKLERS} connections trickling (half headers, half a 100 kB webhook body, "
            "a piece a second) while wrk reads",
            "",
            "| server | idle rps | idle p99 ms | trickled rps | trickled p99 ms | p99 ratio (≤ 2×) "
            "| read connection-time unanswered | trickler cut off after s (min / median / max) | what they got |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, sc in slow:
            i, t, lasted = sc["idle"], sc["trickled"], sc["lasted_s"] or {}
            stalled = t.get("unanswered_share", 1.0 if not t["requests"] else None)
            lines.append(
                f"| {name} | {fmt(i['rps'], 0)} | {fmt(i['p99_ms'])} | {fmt(t['rps'], 0)} | "
                f"{fmt(t['p99_ms'] if t['requests'] else None)} | {fmt(sc['p99_ratio'])} | "
                f"{'–' if stalled is None else f'{stalled * 100:.0f} %'} | "
                f"{fmt(lasted.get('min'), 1)} / {fmt(lasted.get('median'), 1)} / {fmt(lasted.get('max'), 1)} | "
                + "; ".join(f"{k} ×{v}" for k, v in sc["outcomes"].items())
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,mariadb", help="comma-separated: sqlite, mariadb")
    parser.add_argument("--seconds", type=int, default=4, help="seconds per read run (4)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, medians reported (3)")
    parser.add_argument(
        "--writes", type=int, default=300, help="requests per write run, each with its own pay or expert (300)"
    )
    parser.add_argument(
        "--before",
        default=BEFORE,
        help=f"an earlier version to compare the writes and the pay read with ('' to skip; default {BEFORE})",
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections for the reads (32)")
    parser.add_argument("--write-connections", type=int, default=16, help="wrk connections for the writes (16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--passwd-connections", type=int, default=4, help="wrk connections for POST passwd (4)")
    parser.add_argument("--load-connections", type=int, default=8, help="bcrypt load during the starvation check (8)")
    parser.add_argument(
        "--slow-seconds", type=int, default=5, help="seconds of reads idle and with tricklers (5; < 10)"
    )
    parser.add_argument("--dispatch-seconds", type=int, default=5, help="seconds of notification delivery (5)")
    parser.add_argument(
        "--no-gthread",
        dest="gthread",
        action="store_false",
        help="skip the slow clients against gunicorn's stock gthread worker",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s, 1 round, 60 writes, 2 s slow/dispatch")
    parser.add_argument(
        "--writes-only",
        action="store_true",
        help="only the bare app, the balance read, the writes and the dispatcher (no passwd, starvation or slow clients)",
    )
    parser.add_argument(
        "--bulk",
        type=int,
        default=0,
        help="also compare a database of N pays filled in bulk (bench/bulk.py) with one of 1,000, in one run",
    )
    parser.add_argument(
        "--worker-pass",
        type=int,
        default=0,
        metavar="N",
        help="also the worker's minute pass over 1,000 and N stale pending pays, its database time (bench/worker_pass.py)",
    )
    parser.add_argument("--bulk-only", action="store_true", help="with --bulk: only the bare app and that comparison")
    parser.add_argument(
        "--mariadb-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="one more mariadbd option for the benchmark's server, e.g. --mariadb-option=--innodb-buffer-pool-size=2G",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.writes, args.slow_seconds, args.dispatch_seconds = 2, 1, 60, 2, 2
    args.write_cap = 60  # seconds a write run may take at most
    args.dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    if not args.dbs or set(args.dbs) - {"sqlite", "mariadb"}:
        parser.error("--db takes sqlite, mariadb or both, comma-separated")
    if args.bulk_only and not args.bulk:
        parser.error("--bulk-only needs --bulk N")
    if not os.path.exists(WRK):
        raise SystemExit(f"missing {WRK}")

    started = datetime.datetime.now(datetime.UTC)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "command": shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": model,
            "loadavg_at_start": os.getloadavg(),
            "python": sys.version.split()[0],
        },
        **{
            k: getattr(args, k)
            for k in ("seconds", "rounds", "writes", "threads", "connections", "write_connections", "bulk", "bulk_only")
        },
        "worker_class": os.environ.get(
            "GUNICORN_WORKER_CLASS", "payapi.http.serving.BufferingThreadWorker (config default)"
        ),
    }
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        log(f"load average {os.getloadavg()[0]:.2f} before starting: numbers will be noisy")

    def interrupted(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Also when started in the background or stopped with SIGTERM/SIGHUP: the servers run in their
    # own sessions, so only this script can stop them.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    tmp = tempfile.mkdtemp(prefix="payapi-bench-")
    results, bare_slow, worker_pass = [], None, None
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(cleanup)
            before = None
            if args.before:
                try:
                    before = before_tree(args.before, tmp)
                except (subprocess.CalledProcessError, OSError, tarfile.TarError) as exc:  # e.g. a shallow clone
                    log(f"cannot take {args.before} ({exc}); going on without the comparison")
                    meta["before_error"] = f"{args.before}: {exc}"
            meta["before"] = before[0] if before else None
            bare = start_bare(Path(tmp), stack)
            for kind in args.dbs:
                benches = ([] if args.bulk_only else [DatabaseBench]) + ([BulkComparison] if args.bulk else [])
                for bench in benches:
                    try:
                        with contextlib.ExitStack() as per_database:
                            work = kind if bench is DatabaseBench else f"{kind}-bulk"
                            results.append(bench(kind, args, tmp, bare, per_database, before, work).go())
                    except (Exception, subprocess.TimeoutExpired) as exc:  # report it, go on
                        log(f"{kind}: FAILED: {exc}\n{traceback.format_exc()}")
                        results.append({"database": kind, "error": f"{type(exc).__name__}: {exc}"})
            if not args.writes_only and not args.bulk_only:
                log("slow clients against the bare app")
                bare_read = Load("bare", bare, [("/rest/pay/" + "0" * 24, {}, None)], args.connections)
                bare_slow = slow_clients(bare, bare_read, Path(tmp), args)
            if args.worker_pass:
                worker_pass = worker_pass_run(args, Path(tmp))
    except KeyboardInterrupt:
        log("interrupted; everything stopped")
        raise SystemExit(130) from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not leave servers behind
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    meta["loadavg_at_end"] = os.getloadavg()
    meta["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = report(results, meta, bare_slow)
    if worker_pass is not None:
        text += "\n\n## The worker's pass over stale pending pays (bench/worker_pass.py)\n" + worker_pass["markdown"]
    print(text)
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / (started.strftime("%Y%m%dT%H%M%SZ") + ".json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(
            {
                "meta": meta,
                "results": results,
                "bare_slow_clients": bare_slow,
                "worker_pass": worker_pass,
                "markdown": text,
            },
            f,
            ensure_ascii=False,
            indent=2,
            default=str,
        )
    log(f"results written to {out.relative_to(ROOT)}")


def worker_pass_run(args, tmp):
    """bench/worker_pass.py on the same databases, in its own process (it binds payapi's database
    and starts its own MariaDB): -> its markdown and figures, or the error."""
    sizes = ",".join(dict.fromkeys(("1000", str(args.worker_pass))))
    log(f"the worker's pass over {sizes} stale pending pays (bench/worker_pass.py)")
    out = tmp / "worker_pass.json"
    command = [
        sys.executable,
        "-m",
        "bench.worker_pass",
        "--db",
        ",".join(args.dbs),
        "--stale",
        sizes,
        "--json",
        str(out),
    ]
    try:
        run = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log(f"worker pass: FAILED: {exc}\n{getattr(exc, 'stderr', '') or ''}")
        return {"markdown": f"\nFAILED: {exc}", "error": str(exc)}
    return {"markdown": run.stdout, "figures": json.loads(out.read_text())}


def cleanup():
    for proc in list(RUNNING):
        try:
            stop_process(proc, grace=2.0)
        except Exception as exc:  # keep stopping the others
            log(f"could not stop pid {proc.pid}: {exc}")


if __name__ == "__main__":
    main()
