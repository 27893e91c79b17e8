"""The background worker: payouts to Alipay and reconciliation with Ping++.

Every step is idempotent and claims its rows in the database, so several workers on several
machines may run at once.
"""

import logging
import signal
import threading
import time

from . import payments, withdrawals

log = logging.getLogger(__name__)


def run_once(settings, gateway):
    """One pass of every kind of work; a kind that fails outright does not keep the others from their turn."""
    started = time.perf_counter()
    passes = {
        "pays": lambda: payments.reconcile_pays(gateway, settings.platform_fee_bps),
        "payouts": lambda: withdrawals.run_payouts(gateway),
        "transfers": lambda: withdrawals.reconcile_transfers(gateway),
    }
    summary = {}
    for name, run in passes.items():
        try:
            summary[name] = run()
        except Exception as exc:
            # Typically the database is away; the next pass tries again.
            log.exception("worker pass %s failed", name, extra={"fields": {"pass": name}})
            summary[name] = {"error": type(exc).__name__}
    # One line per pass, its counts as fields (a failed Ping++ call has its own line, with ids).
    ms = round((time.perf_counter() - started) * 1000, 1)
    log.info("worker pass", extra={"fields": {**summary, "ms": ms}})
    return summary


def run_forever(settings, gateway, interval=60.0):
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("worker started", extra={"fields": {"interval_s": interval, "env": settings.env}})
    while not stop.is_set():
        try:
            run_once(settings, gateway)
        except Exception:
            log.exception("worker pass failed; trying again in %.0f s", interval)
        stop.wait(interval)
    log.info("worker stopped")
