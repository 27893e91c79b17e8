"""Health at a glance, for an operator on call (GET /ops/api/health, the console's health page, /metrics).

Everything is read from the database, which the worker (perhaps on another host) writes:
- each kind of worker pass (worker_pass, upserted per pass by jobs.record_pass): when it last ran,
  last succeeded, and how many times in a row it failed outright;
- the outbox: messages waiting, failing (waiting after at least one failed attempt), the oldest
  waiting message's age;
- the last daily reconciliation (date, status);
- Ping++'s last error, noted (health_note `pingpp`) by the gateway whenever a call fails.

`problems()` says in words what is wrong; the console shows the page red when there is anything.
"""

import datetime
import logging

from peewee import fn

from payapi.contract.shapes import OpsHealthAnswer, OutboxHealth, PassHealth, PingppHealth, ReconciliationHealth
from payapi.domain.clock import iso, now_ms
from payapi.domain.lifecycles import NotificationStatus
from payapi.infra.db import db
from payapi.infra.models import HealthNote, Notification, Reconciliation, WorkerPass

log = logging.getLogger(__name__)

PINGPP = "pingpp"
# The worker runs every pass each minute: one that has not run for 5 minutes means the worker is down.
STALE_PASS_MS = 5 * 60 * 1000
# Recorded only by `worker --once`: the running worker delivers notifications in a thread of its own
# (the outbox's numbers show whether that works), so this row going old is no sign of trouble.
OWN_THREAD = {"notifications"}
# A message is first tried within seconds; 10 minutes waiting means the order service is not taking them.
OLD_WAITING_S = 10 * 60
# Ping++'s last error is "recent" (worth a red line) for 15 minutes.
RECENT_PINGPP_MS = 15 * 60 * 1000


def note_pingpp_error(message, at=None):
    """Ping++'s last error, with when: one row upserted (cheap), never raising into the caller's error path."""
    try:
        with db.atomic():
            HealthNote.replace(name=PINGPP, detail=str(message)[:255], at=at or now_ms()).execute()
    except Exception as exc:  # noqa: BLE001 - the database may be what is failing; the log has the error
        log.warning("Ping++ error not noted for the health page: %s", type(exc).__name__)


def snapshot(now=None):
    """OpsHealthAnswer, from the database; database "down" (and nothing else known) when it cannot be read."""
    now = now or now_ms()
    try:
        return _read(now)
    except Exception as exc:  # noqa: BLE001 - any failure to read means the database is down for us
        log.warning("health: database not read: %s", type(exc).__name__)
        return OpsHealthAnswer(
            database="down",
            passes=[],
            outbox=OutboxHealth(waiting=0, failing=0, oldest_waiting_s=None),
            reconciliation=None,
            pingpp=None,
        )


def _read(now):
    passes = [
        PassHealth(
            pass_=row.name,
            last_run_at=iso(row.last_started_at or None),
            last_success_at=iso(row.last_success_at or None),
            failures_in_a_row=row.failures_in_a_row,
        )
        for row in WorkerPass.select().order_by(WorkerPass.name)
    ]
    pending = Notification.status == NotificationStatus.PENDING
    waiting, oldest = (
        Notification.select(fn.COUNT(1), fn.MIN(Notification.created_at)).where(pending).scalar(as_tuple=True)
    )
    failing = Notification.select().where(pending, Notification.attempts > 0).count()
    last = Reconciliation.select().order_by(Reconciliation.created_at.desc()).first()
    note = HealthNote.get_or_none(HealthNote.name == PINGPP)
    return OpsHealthAnswer(
        database="ok",
        passes=passes,
        outbox=OutboxHealth(
            waiting=int(waiting or 0),
            failing=failing,
            oldest_waiting_s=max(0, (now - oldest) // 1000) if oldest is not None else None,
        ),
        reconciliation=ReconciliationHealth(date=last.date, status=last.status) if last else None,
        pingpp=PingppHealth(last_error=note.detail, at=iso(note.at)) if note else None,
    )


def _ms(value):
    return int(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def problems(health, now=None):
    """What is wrong, in words (Chinese, as the console): empty when all is well."""
    now = now or now_ms()
    found = []
    if health.database != "ok":
        return ["数据库无法访问"]
    if not health.passes:
        found.append("后台任务（worker）从未运行过")
    for p in health.passes:
        if p.failures_in_a_row:
            found.append(f"后台任务 {p.pass_} 已连续失败 {p.failures_in_a_row} 次")
        if p.pass_ not in OWN_THREAD and (p.last_run_at is None or now - _ms(p.last_run_at) > STALE_PASS_MS):
            found.append(f"后台任务 {p.pass_} 已超过 {STALE_PASS_MS // 60000} 分钟没有运行")
    if health.outbox.failing:
        found.append(f"{health.outbox.failing} 条通知发送失败，正在重试")
    if health.outbox.oldest_waiting_s is not None and health.outbox.oldest_waiting_s > OLD_WAITING_S:
        found.append(f"最早的待发通知已等待 {health.outbox.oldest_waiting_s // 60} 分钟")
    if health.reconciliation is not None and health.reconciliation.status == "different":
        found.append(f"{health.reconciliation.date} 的对账有差异")
    if health.pingpp is not None and now - _ms(health.pingpp.at) <= RECENT_PINGPP_MS:
        found.append("Ping++ 最近出错：" + health.pingpp.last_error)
    return found


def metric_families(now=None):
    """Gauges for /metrics (read at scrape time), so an alert can fire on what the health page shows."""
    from prometheus_client.core import GaugeMetricFamily

    now = now or now_ms()
    health = _read(now)
    in_a_row = GaugeMetricFamily(
        "payapi_worker_pass_failures_in_a_row",
        "Passes of this kind that failed outright since its last success.",
        labels=["pass"],
    )
    last_run = GaugeMetricFamily(
        "payapi_worker_pass_last_run_timestamp_seconds",
        "When the last pass of this kind started (Unix seconds).",
        labels=["pass"],
    )
    for p in health.passes:
        in_a_row.add_metric([p.pass_], p.failures_in_a_row)
        last_run.add_metric([p.pass_], _ms(p.last_run_at) / 1000 if p.last_run_at else 0)
    yield in_a_row
    yield last_run
    yield GaugeMetricFamily(
        "payapi_outbox_oldest_waiting_seconds",
        "Age of the oldest notification still to be delivered (0: none waits).",
        value=health.outbox.oldest_waiting_s or 0,
    )
    yield GaugeMetricFamily(
        "payapi_notifications_failing",
        "Notifications still to be delivered whose last attempt failed.",
        value=health.outbox.failing,
    )
    different = GaugeMetricFamily(
        "payapi_reconciliation_last_different",
        "1 if the last daily reconciliation found differences it could not heal.",
        labels=["date"],
    )
    if health.reconciliation is not None:
        different.add_metric([health.reconciliation.date], int(health.reconciliation.status == "different"))
    yield different
    yield GaugeMetricFamily(
        "payapi_pingpp_last_error_timestamp_seconds",
        "When a call to Ping++ last failed (Unix seconds; 0: never).",
        value=_ms(health.pingpp.at) / 1000 if health.pingpp else 0,
    )
