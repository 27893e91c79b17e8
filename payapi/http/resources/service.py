"""For load balancers and tooling: /healthz, /metrics, /openapi.json."""

import threading

import falcon

from payapi.contract.errors import UNEXPECTED
from payapi.contract.shapes import (
    HealthAnswer,
)
from payapi.http.operation import operation
from payapi.http.resources.common import log
from payapi.infra import metrics
from payapi.infra.db import db, describe_error


class Health:
    """`/healthz`; why the database is unreachable is logged once per distinct cause, not per probe."""

    auth = None

    def __init__(self):
        self._lock = threading.Lock()
        self._down_because = None  # the last cause logged, until the database answers again

    @operation(
        id="health",
        summary="Whether the database answers.",
        tag="operations",
        answer=HealthAnswer,
        errors={503: "999: the database is down (`db`: `down`)."},
    )
    def on_get(self, req, resp):
        try:
            db.execute_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "down"; the log says which
            self._note(describe_error(exc, db.obj))
            resp.status = falcon.HTTP_503
            resp.media = {"code": UNEXPECTED, "msg": "数据库不可用", "db": "down"}
            return
        self._note(None)
        resp.media = HealthAnswer()

    def _note(self, cause):
        with self._lock:
            if cause == self._down_because:
                return
            before, self._down_because = self._down_because, cause
        if cause is not None:
            log.error("database unreachable: %s", cause, extra={"fields": {"cause": cause}})
        elif before is not None:
            log.info("database reachable again")


class OpenApi:
    auth = None

    def __init__(self, document):
        self.document = document

    @operation(id="openapi", summary="This document.", tag="operations", answer=dict)
    def on_get(self, req, resp):
        resp.media = self.document


class Metrics:
    """Prometheus's text format; not JSON, so not in the OpenAPI document."""

    auth = "metrics"
    documented = False

    def on_get(self, req, resp):
        resp.data = metrics.render()
        resp.content_type = metrics.CONTENT_TYPE
