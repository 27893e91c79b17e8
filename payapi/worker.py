"""The background worker: payouts to Alipay and reconciliation with Ping++.

Every step is idempotent and claims its rows in the database, so several workers on several
machines may run at once.
"""

import logging
import signal
import threading

from . import payments, withdrawals

log = logging.getLogger(__name__)


def run_once(settings, gateway):
    summary = {
        "pays": payments.reconcile_pays(gateway, settings.platform_fee_bps),
        "payouts": withdrawals.run_payouts(gateway),
        "transfers": withdrawals.reconcile_transfers(gateway),
    }
    log.info("worker pass: %s", summary)
    return summary


def run_forever(settings, gateway, interval=60.0):
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        try:
            run_once(settings, gateway)
        except Exception:
            log.exception("worker pass failed; trying again in %.0f s", interval)
        stop.wait(interval)
    log.info("worker stopped")
