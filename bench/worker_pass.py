"""The worker's minute pass over a backlog of stale pending pays, and the database time it spends.

    python -m bench.worker_pass [--db sqlite,mariadb] [--stale 1000,100000] [--passes 5] [--json PATH]

Per database and backlog size: a fresh database, migrated, with that many stale pending pays put
in bulk (bench/bulk.py fill_stale: pays never checked, whose charges are unpaid and expired), the
Ping++ sandbox in this process knowing the charges of the pays the passes will ask about (the
oldest 100 per pass: a pass reads at most that many; the others stay unknown to it, which
nothing reads), then `--passes` passes of `payapi.worker.run_once`, one after the other, as
`python -m payapi worker` runs them each minute (notify=False: there the dispatcher thread
delivers, and bench/run.py measures it; the pays' closing messages are still written to the
outbox). The first pass also runs the daily reconciliation (yesterday, once). The median pass is
the figure to quote: a durable COMMIT waits for the disk, and on a shared machine one pass in a
few meets someone else's writes.

Database time is the time spent inside the driver's cursor: every statement's execute, the rows
fetched, and BEGIN/COMMIT (peewee runs them through the cursor too), summed; measured by this
script around the database's cursors, not by hooks in payapi. Per pass: the wall time, the
database time, the statements, and each kind of pass's share; then the statements that took the
most time. SQLite in a temp dir; MariaDB started as bench/run.py starts it.
"""

import argparse
import collections
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from peewee_migrate import Router

from bench import bulk
from payapi import worker
from payapi.__main__ import MIGRATIONS
from payapi.infra import jobs
from payapi.infra.db import bind, open_database
from payapi.sandbox import Sandbox
from payapi.wsgi import gateway_from
from tests.support import mariadb
from tests.support.config import settings_for
from tests.support.live_server import free_port

MARIADB_PARAMS = "--user=root --skip-log-bin --skip-name-resolve --max-connections=500"  # as bench/run.py
BATCH = 100  # payments.reconcile_pays' batch: what one pass asks Ping++ about at most


class TimedCursor:
    """A DB-API cursor whose execute and fetches add their time to clock (SQLite steps through a
    query's rows as they are fetched, so fetching is database time too)."""

    def __init__(self, cursor, clock):
        self._cursor, self._clock = cursor, clock

    def _timed(self, name, *args):
        started = time.perf_counter()
        try:
            return getattr(self._cursor, name)(*args)
        finally:
            self._clock.add(time.perf_counter() - started, args[0] if name == "execute" else None)

    def execute(self, sql, params=()):
        self._timed("execute", sql, params)
        return self

    def fetchone(self):
        return self._timed("fetchone")

    def fetchall(self):
        return self._timed("fetchall")

    def fetchmany(self, *size):
        return self._timed("fetchmany", *size)

    def __iter__(self):
        return self

    def __next__(self):
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class Clock:
    """Database time and statements, in total and per SQL text (the statement a fetch belongs to
    is the cursor's last execute)."""

    def __init__(self):
        self.seconds, self.statements = 0.0, 0
        self.by_sql = collections.defaultdict(lambda: [0.0, 0])
        self._last = None

    def add(self, seconds, sql):
        self.seconds += seconds
        if sql is not None:
            self.statements += 1
            self._last = " ".join(sql.split())
            self.by_sql[self._last][1] += 1
        if self._last is not None:
            self.by_sql[self._last][0] += seconds

    def snapshot(self):
        return self.seconds, self.statements


def timed(database, clock):
    """Every cursor of database (peewee's execute_sql, BEGIN and COMMIT) timed by clock."""
    cursor = database.cursor
    database.cursor = lambda *args, **kwargs: TimedCursor(cursor(*args, **kwargs), clock)
    return database


@contextlib.contextmanager
def kinds_timed(clock, shares):
    """Each kind of pass's share of the database time: run_once calls jobs.record_pass after each
    kind, so what was spent since the previous call is that kind's (record_pass's own statements
    are counted apart, as "record_pass")."""
    record_pass = jobs.record_pass
    last = [clock.snapshot()]

    def recording(name, *args):
        now = clock.snapshot()
        shares[name] = (now[0] - last[0][0], now[1] - last[0][1], args[1])
        try:
            return record_pass(name, *args)
        finally:
            after = clock.snapshot()
            spent = shares.get("record_pass", (0.0, 0, 0.0))
            shares["record_pass"] = (spent[0] + after[0] - now[0], spent[1] + after[1] - now[1], 0.0)
            last[0] = after

    jobs.record_pass = recording
    try:
        yield
    finally:
        jobs.record_pass = record_pass


def measure(url, stale, passes, sandbox, work):
    """Seed, then run the passes; -> the figures of each pass."""
    database = open_database(url)
    bind(database)
    Router(database, migrate_dir=MIGRATIONS).run()
    database.close()
    seconds, now = bulk.fill_stale(url, stale)
    sandbox.reset()
    for i in range(min(stale, BATCH * passes)):
        charge = bulk.stale_charge(i, stale, now)
        sandbox.charges[charge["id"]] = charge
    print(f"  {stale:,} stale pending pays in {seconds:.1f} s", file=sys.stderr)
    settings = settings_for(url, sandbox.url, sandbox.public_key_path, str(work / "sms.jsonl"))
    gateway = gateway_from(settings)
    clock = Clock()
    database = timed(bind(open_database(url)), clock)
    database.connect()
    results = []
    for n in range(passes):
        shares = {}
        before = clock.snapshot()
        started = time.perf_counter()
        with kinds_timed(clock, shares):
            summary = worker.run_once(settings, gateway, notify=False)
        wall = time.perf_counter() - started
        after = clock.snapshot()
        results.append(
            {
                "pass": n + 1,
                "wall_s": round(wall, 3),
                "db_s": round(after[0] - before[0], 4),
                "statements": after[1] - before[1],
                "pays": summary.get("pays"),
                "by_kind": {
                    k: {"db_s": round(v[0], 4), "statements": v[1], "wall_ms": v[2]} for k, v in shares.items()
                },
            }
        )
    slowest = sorted(clock.by_sql.items(), key=lambda item: -item[1][0])[:6]
    database.close()
    return {
        "stale": stale,
        "median": {k: statistics.median(p[k] for p in results) for k in ("wall_s", "db_s", "statements")},
        "passes": results,
        "slowest": [{"db_s": round(s, 4), "count": c, "sql": sql[:300]} for sql, (s, c) in slowest],
    }


def report(db_name, figures):
    for run in figures:
        print(f"\n### {db_name}, {run['stale']:,} stale pending pays\n")
        print("| pass | wall s | database s | statements | pays | largest shares (database ms) |")
        print("|---|---|---|---|---|---|")
        for p in run["passes"]:
            kinds = sorted(p["by_kind"].items(), key=lambda kv: -kv[1]["db_s"])[:3]
            shares = ", ".join(f"{k} {v['db_s'] * 1000:.1f}" for k, v in kinds)
            print(f"| {p['pass']} | {p['wall_s']:.3f} | {p['db_s']:.4f} | {p['statements']} | {p['pays']} | {shares} |")
        m = run["median"]
        print(f"| median | {m['wall_s']:.3f} | {m['db_s']:.4f} | {m['statements']:.0f} | | |")
        print("\nslowest statements (all passes): database ms, count, SQL")
        for s in run["slowest"]:
            print(f"- {s['db_s'] * 1000:.1f} ms, {s['count']}×: {s['sql'][:160]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,mariadb", help="comma-separated: sqlite, mariadb")
    parser.add_argument("--stale", default="1000,100000", help="stale pending pays, comma-separated sizes")
    parser.add_argument("--passes", type=int, default=5, help="passes one after the other on each database (5)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    sizes = list(dict.fromkeys(int(s.replace("_", "")) for s in args.stale.split(",")))  # each size once
    if set(dbs) - {"sqlite", "mariadb"}:
        parser.error("--db takes sqlite, mariadb or both, comma-separated")
    results = {}
    with tempfile.TemporaryDirectory(prefix="payapi-worker-pass-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        sandbox = Sandbox(public_key_path=str(work / "pingpp_public.pem")).start()
        stack.callback(sandbox.stop)
        server = None
        for db_name in dbs:
            figures = []
            for stale in sizes:
                print(f"{db_name}: {stale:,} stale pending pays", file=sys.stderr)
                if db_name == "sqlite":
                    url = f"sqlite:///{work / f'stale_{stale}.db'}"
                else:
                    if server is None:
                        server = mariadb.start(work / "mariadb", free_port(), MARIADB_PARAMS)
                        stack.callback(server.stop)
                    url = mariadb.create_database(server, f"stale_{stale}")
                figures.append(measure(url, stale, args.passes, sandbox, work))
            results[db_name] = figures
            report(db_name, figures)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
