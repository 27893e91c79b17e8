"""gunicorn settings for payapi (Heroku-style: PORT and WEB_CONCURRENCY from the environment)."""

import multiprocessing
import os
import shutil
import tempfile

from payapi.infra.logs import gunicorn_logconfig

wsgi_app = "payapi.wsgi:application"
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
# Threads, not only processes: a bcrypt check holds its thread for ~0.3 s but releases the GIL,
# so the other threads of the same worker keep answering cheap reads. The worker's main loop
# reads each request to its end before a thread sees it, so clients that trickle their headers or
# body cannot hold the threads (payapi/http/serving.py). Measured: see README, Performance.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "payapi.http.serving.BufferingThreadWorker")
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A request holds a worker at most for a Ping++ call (PINGPP_TIMEOUT, 5 s) plus bcrypt; 30 s is
# far past both, so a timeout kill means something is really stuck.
timeout = 30
graceful_timeout = 25
keepalive = 5
# The service writes its own JSON line per request; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
# Every line gunicorn writes is one JSON object too (payapi.infra.logs.JsonLines).
logconfig_dict = gunicorn_logconfig()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Nothing here uses gunicorn's admin socket, and its default path (~/.gunicorn/gunicorn.ctl) would be
# shared by every gunicorn of the same user on a machine (dev, tests, the benchmark).
control_socket_disable = True


def on_starting(server):
    """In the master, before any worker: refuse unsafe settings or narrow tables with one log line.

    Exiting here stops gunicorn (a worker that refused would be forked again and again).
    """
    if getattr(server.app, "app_uri", wsgi_app) == wsgi_app:  # not the benchmark's bare falcon app
        from payapi.startup import check_serving

        check_serving("web")
    _metrics_directory()


def _metrics_directory():
    """/metrics sums the counters of every worker of this host: prometheus-client's multiprocess mode,
    where each worker writes its own files into PROMETHEUS_MULTIPROC_DIR. It is set here, in the
    master, before any worker is forked (and imports prometheus_client). Unless given, a fresh
    private directory for this server (removed at exit), so a previous run's counts never leak in."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PAYAPI_OWN_METRICS_DIR"] = tempfile.mkdtemp(
            prefix="payapi-metrics-"
        )


def child_exit(server, worker):
    """A worker exited: its live gauges go; its counters stay in the sums (they count what it did)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    own = os.environ.get("PAYAPI_OWN_METRICS_DIR")
    if own and own == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(own, ignore_errors=True)
