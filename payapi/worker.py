"""The background worker: payouts to Alipay and reconciliation with Ping++.

Every step is idempotent and claims its rows in the database, so several workers on several
machines may run at once.
"""

import logging
import signal
import threading
import time

from payapi.backoffice import operators
from payapi.domain.clock import now_ms
from payapi.infra import idempotency, jobs, outbox
from payapi.money import payments, reconciliation, refunds, withdrawals

log = logging.getLogger(__name__)


def run_once(settings, gateway, notify=True):
    """One pass of every kind of work; a kind that fails outright does not keep the others from their turn.

    notify: also deliver the notifications due now (run_forever has its own dispatcher thread instead).
    """
    outbox.configure(settings)
    started = time.perf_counter()
    passes = {
        "pays": lambda: payments.reconcile_pays(gateway, settings),
        "reversals": lambda: payments.reverse_closed_pays(gateway, settings),
        "refunds": lambda: refunds.reconcile_refunds(gateway),
        "holds": lambda: payments.release_holds(),
        "payouts": lambda: withdrawals.run_payouts(gateway),
        "transfers": lambda: withdrawals.reconcile_transfers(gateway),
        "idempotency_keys": lambda: {"forgotten": idempotency.forget_expired()},
        "operator_guesses": lambda: {"forgotten": operators.forget_stale_guesses()},
        "reconciliation": lambda: reconciliation.daily(settings, gateway),
    }
    if notify and settings.notify_url:
        passes["notifications"] = lambda: {"attempted": _deliver_due(settings)}
    summary = {}
    for name, run in passes.items():
        began, began_ms = time.perf_counter(), now_ms()
        try:
            summary[name] = run()
        except Exception as exc:
            # Typically the database is away; the next pass tries again.
            log.exception("worker pass %s failed", name, extra={"fields": {"pass": name}})
            summary[name] = {"error": type(exc).__name__}
        try:
            jobs.record_pass(name, began_ms, round((time.perf_counter() - began) * 1000, 1), summary[name])
        except Exception:
            log.exception("worker pass %s not recorded for /metrics", name, extra={"fields": {"pass": name}})
    # One line per pass, its counts as fields (a failed Ping++ call has its own line, with ids).
    ms = round((time.perf_counter() - started) * 1000, 1)
    log.info("worker pass", extra={"fields": {**summary, "ms": ms}})
    return summary


def _deliver_due(settings):
    dispatcher = outbox.Dispatcher(settings.notify_url, settings.notify_secret)
    try:
        return dispatcher.run_once()
    finally:
        dispatcher.close()


def run_forever(settings, gateway, interval=60.0):
    """The minute pass, and (with NOTIFY_URL) the notification dispatcher in its own thread: a
    notification is first sent within seconds, not at the next pass."""
    outbox.configure(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("worker started", extra={"fields": {"interval_s": interval, "env": settings.env}})
    dispatcher = None
    if settings.notify_url:
        dispatcher = threading.Thread(
            target=outbox.Dispatcher(settings.notify_url, settings.notify_secret).run_forever,
            args=(stop,),
            name="notify-dispatcher",
            daemon=True,
        )
        dispatcher.start()
    while not stop.is_set():
        try:
            run_once(settings, gateway, notify=False)
        except Exception:
            log.exception("worker pass failed; trying again in %.0f s", interval)
        stop.wait(interval)
    if dispatcher is not None:
        dispatcher.join(timeout=10)
    log.info("worker stopped")
