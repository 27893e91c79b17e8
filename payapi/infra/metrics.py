"""`GET /metrics` in Prometheus's text format.

Two sources:
- What a web process sees (requests, latency, webhook outcomes) is counted in memory by
  prometheus-client. Under gunicorn it runs in multiprocess mode (gunicorn.conf.py sets
  PROMETHEUS_MULTIPROC_DIR in the master before forking): each worker writes its counters to its
  own files there and a scrape, answered by any worker, sums them over every worker of the host.
- What only the worker process knows (its passes, payouts) and the outbox are read from the
  database at scrape time: the worker may run on another host (another dyno) than the web app,
  whose memory a scrape cannot see.

The request counter sits on every request's path: label children are looked up once and kept.
"""

import json
import logging
import os

from peewee import fn
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from payapi.domain.lifecycles import NotificationStatus
from payapi.infra import health
from payapi.infra.models import Notification, Withdrawal, WorkerPass

log = logging.getLogger("payapi.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

REGISTRY = CollectorRegistry(auto_describe=False)  # True would read the database at import
REQUESTS = Counter(
    "payapi_requests",
    "Requests answered, by route template (- for no route), method, HTTP status and payapi code.",
    ["route", "method", "status", "code"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "payapi_request_duration_seconds",
    "Time from the request's first middleware to its answer, by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "payapi_webhook_events",
    "Signed Ping++ events received, by outcome (applied, ignored, mismatch, unknown, replay, malformed).",
    ["outcome"],
    registry=REGISTRY,
)

_request_children: dict[tuple[object, ...], object] = {}


def observe_request(route, method, status, code, seconds):
    """route: a template or "-"; code: the answer's payapi code, or None for one without (HTML, a redirect)."""
    # Bounded labels, and the cache keyed by them too: a made-up method (anyone may send 20,000)
    # must make neither a new series nor a new entry here.
    key = (route, method if method in METHODS else "other", status, "-" if code is None else code)
    children = _request_children.get(key)
    if children is None:
        children = _request_children[key] = (
            REQUESTS.labels(key[0], key[1], str(status), str(key[3])),
            LATENCY.labels(route),
        )
    children[0].inc()
    children[1].observe(seconds)


def observe_webhook(outcome):
    WEBHOOKS.labels(str(outcome)).inc()


class DatabaseCollector:
    """Read at scrape time: the worker's passes, withdrawals by status, the outbox's backlog."""

    def collect(self):
        up = GaugeMetricFamily("payapi_metrics_database_up", "Whether /metrics could read the database (1) or not (0).")
        try:
            families = list(self._from_database())
        except Exception as exc:  # noqa: BLE001 - the in-process metrics are still worth answering
            log.warning("metrics: database not read: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_database(self):
        withdrawals = GaugeMetricFamily(
            "payapi_withdrawals", "Withdrawals by status (payouts by result).", labels=["status"]
        )
        for status, count in Withdrawal.select(Withdrawal.status, fn.COUNT(1)).group_by(Withdrawal.status).tuples():
            withdrawals.add_metric([status], count)
        yield withdrawals
        outbox = GaugeMetricFamily(
            "payapi_notifications",
            "Notifications to the order service still to be sent (pending) or given up after 24 hours (failed).",
            labels=["status"],
        )
        counted = dict(
            Notification.select(Notification.status, fn.COUNT(1))
            .where(Notification.status.in_([NotificationStatus.PENDING, NotificationStatus.FAILED]))
            .group_by(Notification.status)
            .tuples()
        )
        for status in (NotificationStatus.PENDING, NotificationStatus.FAILED):
            outbox.add_metric([status], counted.get(status, 0))
        yield outbox
        runs = CounterMetricFamily("payapi_worker_passes", "Worker passes run, by kind.", labels=["pass"])
        failures = CounterMetricFamily(
            "payapi_worker_pass_failures", "Worker passes that failed outright.", labels=["pass"]
        )
        items = CounterMetricFamily(
            "payapi_worker_items",
            "Items the worker's passes handled, by kind and outcome (payouts: sent, failed).",
            labels=["pass", "outcome"],
        )
        seconds = GaugeMetricFamily(
            "payapi_worker_pass_duration_seconds", "How long the last pass took.", labels=["pass"]
        )
        success = GaugeMetricFamily(
            "payapi_worker_pass_last_success_timestamp_seconds",
            "When the last pass that did not fail started (Unix seconds).",
            labels=["pass"],
        )
        for row in WorkerPass.select().order_by(WorkerPass.name):
            runs.add_metric([row.name], row.runs)
            failures.add_metric([row.name], row.failures)
            seconds.add_metric([row.name], row.last_ms / 1000)
            success.add_metric([row.name], row.last_success_at / 1000)
            for outcome, count in sorted(json.loads(row.counts or "{}").items()):
                items.add_metric([row.name, outcome], count)
        yield from (runs, failures, items, seconds, success)
        yield from health.metric_families()  # what the operators' health page shows, for alerts


_database = DatabaseCollector()
REGISTRY.register(_database)


def render():
    """The text of /metrics: under gunicorn, every worker of this host summed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_database)
    else:
        registry = REGISTRY
    return generate_latest(registry)
