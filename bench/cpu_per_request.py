"""CPU time per answered request, process by process, for the bare app, the pay read and the balance.

    python -m bench.cpu_per_request [--db mariadb|sqlite] [--rounds 4] [--seconds 6] [--root PATH]

On this shared 2-core machine a read's rate moves by 10-25 % between runs with whatever else the
host runs, and a ratio to the bare app moves with the bare app's own rate. What each answered
request costs in CPU moves much less, so two versions of a read are compared here: run this once
per checkout (`--root`, alternately), and compare each read's CPU per request with the pay read's
of the same run. The balance's one JSON column was measured this way (docs/performance.md, "The
balance in one column").

It starts what bench/run.py starts (the bare app, the Ping++ sandbox, a MariaDB server with the
same options or a SQLite file, payapi's read server and its expert with earnings, a pay password
and an account), then runs wrk on each read in turn, `--rounds` times, and prints for each run the
rate, the p99, and the microseconds of CPU per answered request spent by the gunicorn workers, by
the database server (MariaDB) and by wrk; then each read's median. bench/run.py's report is still
the benchmark; this is a tool for comparing.
"""

import argparse
import contextlib
import os
import statistics
import tempfile
from pathlib import Path

from bench import run

READS = ("bare", "pay", "balance")


def measure(load, work, seconds, database_pids):
    """One wrk run of load -> its result, with CPU µs per answered request by process."""
    workers = run.children(load.server.proc.pid)
    before = run.cpu_ticks(workers), run.cpu_ticks(database_pids), os.times()
    result = load.run(work, seconds, 2)
    after = run.cpu_ticks(workers), run.cpu_ticks(database_pids), os.times()
    answered, tick = max(result["requests"], 1), os.sysconf("SC_CLK_TCK")
    wrk_s = (after[2].children_user + after[2].children_system) - (before[2].children_user + before[2].children_system)
    result["cpu_us"] = {
        "workers": (after[0] - before[0]) / tick / answered * 1e6,
        "database": (after[1] - before[1]) / tick / answered * 1e6,
        "wrk": wrk_s / answered * 1e6,
    }
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("mariadb", "sqlite"), default="mariadb")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=6, help="seconds per wrk run (6)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--root", default=str(run.ROOT), help="the payapi checkout to serve (this one)")
    args = parser.parse_args(argv)
    options = argparse.Namespace(mariadb_option=[], seconds=args.seconds, threads=2, write_cap=60)
    tmp = Path(tempfile.mkdtemp(prefix="payapi-cpu-"))
    runs = {name: [] for name in READS}
    with contextlib.ExitStack() as stack:
        stack.callback(run.cleanup)
        bare = run.start_bare(tmp, stack)
        bench = run.DatabaseBench(args.db, options, tmp, bare, stack)
        bench.start_sandbox("SQLite file (WAL) in a temp dir")
        reads = bench.server("reads", bench.database("payapi_cpu"), root=Path(args.root), migrate=True)
        reader, pay_id, *_ = bench.reader(reads)
        paths = {"bare": (bare, f"/rest/pay/{pay_id}"), "pay": (reads, f"/rest/pay/{pay_id}")}
        paths["balance"] = (reads, "/rest/pay/balance")
        loads = {
            name: run.Load(name, server, [(path, reader.headers, None)], args.connections)
            for name, (server, path) in paths.items()
        }
        database = bench.database_pids()
        for rnd in range(args.rounds):
            for name, load in loads.items():
                run.wait_idle(load.server, database=database)
                r = measure(load, tmp, args.seconds, database)
                runs[name].append(r)
                cpu = r["cpu_us"]
                print(
                    f"round {rnd + 1} {name:8} {r['rps']:7.0f} rps  p99 {r['p99_ms'] or 0:6.1f} ms  "
                    f"CPU µs a request: workers {cpu['workers']:6.1f}  database {cpu['database']:6.1f}  "
                    f"wrk {cpu['wrk']:5.1f}",
                    flush=True,
                )
    print(f"\nmedians over {args.rounds} rounds ({args.db}, {args.root}):")
    for name, results in runs.items():
        own = {k: statistics.median(r["cpu_us"][k] for r in results) for k in ("workers", "database")}
        rps = statistics.median(r["rps"] for r in results)
        print(f"  {name:8} {rps:7.0f} rps  workers {own['workers']:6.1f} µs  database {own['database']:6.1f} µs")


if __name__ == "__main__":
    main()
