"""Worker passes over due items: ids read first, each item handled on its own, a bad one set aside.

Reading a pass's ids into a list before touching any item matters on SQLite: writing while a
`SELECT` cursor is still open keeps a read snapshot that SQLite refuses to turn into a write
("database is locked") once another process has committed meanwhile. Each item then runs in its
own short transactions. An item that raises is logged with its id, pushed back by a growing
delay (so the same poison item is not first again next pass), and the pass goes on.
"""

import json
import logging

from payapi.infra.db import lock_row, transaction
from payapi.infra.models import WorkerPass

log = logging.getLogger("payapi.worker")

BACKOFF_BASE_MS = 60 * 1000
BACKOFF_CAP_MS = 60 * 60 * 1000


def backoff_ms(failures):
    """1 min, 2 min, 4 min ... at most an hour, after the n-th failure in a row."""
    return min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** min(max(failures - 1, 0), 16))


def run_pass(name, ids, handle, set_aside, counts):
    """handle(id) -> the key of counts to add one to (None: nothing to count); set_aside(id) after an exception.

    counts must have a "failed" key: an item that raised is counted there too.
    """
    for item_id in ids:
        try:
            outcome = handle(item_id)
            if outcome is not None:
                counts[outcome] += 1
        except Exception as exc:
            counts["failed"] += 1
            log.exception(
                "%s: %s failed; set aside",
                name,
                item_id,
                extra={"fields": {"pass": name, "id": item_id, "error": f"{type(exc).__name__}: {exc}"[:500]}},
            )
            try:
                set_aside(item_id)
            except Exception:
                log.exception(
                    "%s: could not set %s aside", name, item_id, extra={"fields": {"pass": name, "id": item_id}}
                )
    return counts


@transaction
def record_pass(name, started_ms, ms, summary):
    """Note one pass of a kind in the database, for /metrics (the web app may be on another host)."""
    row = lock_row(WorkerPass, {"counts": "{}", "updated_at": started_ms}, name=name)
    counts = json.loads(row.counts or "{}")
    for outcome, count in summary.items():
        if isinstance(count, int) and not isinstance(count, bool):
            counts[outcome] = counts.get(outcome, 0) + count
    failed = "error" in summary
    row.runs += 1
    row.failures += int(failed)
    row.failures_in_a_row = row.failures_in_a_row + 1 if failed else 0
    row.last_started_at = started_ms
    if not failed:
        row.last_success_at = started_ms
    row.last_ms = ms
    row.counts = json.dumps(counts, sort_keys=True)
    row.updated_at = started_ms
    row.save()
