"""The on-call routes (issue 23): /ops/api/health, the withdrawal search, notifications failing now (JSON),
and the console's health page, home page (withdrawals: in flight, or searched) and expert page."""

from payapi.backoffice import actions, oncall
from payapi.contract.errors import ApiError, invalid
from payapi.contract.shapes import (
    NotificationsQuery,
    OpsHealthAnswer,
    OpsNotificationsNowAnswer,
    OpsWithdrawalsAnswer,
    WithdrawalSearchQuery,
    WithdrawalStatus,
)
from payapi.http.console import Page, header_status, page_id
from payapi.http.operation import operation
from payapi.http.resources.ops import OPERATOR_ERRORS, ForOperators
from payapi.infra import health

# --- JSON (HTTP Basic) ----------------------------------------------------------------------------------


class OpsHealth(ForOperators):
    @operation(
        id="opsHealth",
        summary="Health at a glance: worker passes, the outbox, the last reconciliation, "
        "the database, Ping++'s last error (operators).",
        tag="operators",
        answer=OpsHealthAnswer,
        errors=OPERATOR_ERRORS,
        description="`passes`: each kind of worker pass, when it last ran and last succeeded (null: never) "
        "and how many times in a row it failed outright. `outbox`: notifications waiting, of which failing "
        "(at least one failed attempt), the oldest waiting one's age in seconds (null: none waits). "
        "`reconciliation`: the last daily reconciliation (null: none yet). `pingpp`: the last failed call "
        "to Ping++ (null: none yet).",
    )
    def on_get(self, req, resp):
        resp.media = health.snapshot()


class OpsWithdrawals(ForOperators):
    @operation(
        id="opsListWithdrawals",
        summary="Any withdrawal by its id or its expert's user id, finished ones "
        "too; without q and status, those in flight, stuck ones first (operators).",
        tag="operators",
        query=WithdrawalSearchQuery,
        answer=OpsWithdrawalsAnswer,
        errors={**OPERATOR_ERRORS, 404: None},
        description="`q`: a withdraw_id or an expert's user id; `status`: one status; newest first, `limit` "
        "per page; `before`: a withdraw_id from the previous page (one that does not exist is 911).",
    )
    def on_get(self, req, resp, query):
        if query.q is None and query.status is None and query.before is None:
            rows = actions.withdrawals_in_flight(query.limit)
        else:
            rows = oncall.search_withdrawals(query.q, query.status, query.limit, query.before)
        resp.media = OpsWithdrawalsAnswer(list=[actions.withdrawal_view(w) for w in rows])


class OpsNotifications(ForOperators):
    @operation(
        id="opsFailedNotifications",
        summary="Notifications to the order service failing now (`failing`: "
        "still to be delivered after a failed attempt) or given up after 24 hours (`failed`, the default).",
        tag="operators",
        query=NotificationsQuery,
        answer=OpsNotificationsNowAnswer,
        errors=OPERATOR_ERRORS,
        description="`failing` lists a message as soon as an attempt fails, oldest first, with its next "
        "attempt (`next_attempt_at`), the host it is sent to (`target`) and the last error; `failed`: "
        "newest first.",
    )
    def on_get(self, req, resp, query):
        url = self.settings.notify_url if self.settings else None
        resp.media = OpsNotificationsNowAnswer(
            list=[oncall.notification_now(n, url) for n in oncall.notifications(query.state)]
        )


# --- the console ----------------------------------------------------------------------------------------


class HealthPage(Page):
    def on_get(self, req, resp):
        snapshot = health.snapshot()
        header = header_status(snapshot)  # the page's header from the same snapshot, not a second one
        self.console.render(
            req, resp, "health.html", health=snapshot, problems=header["health_problems"], tab="health", **header
        )


class Withdrawals(Page):
    """The home page: withdrawals in flight, or those a search found (by id or expert, status)."""

    def on_get(self, req, resp):
        q = (req.get_param("q") or "").strip()[:64]
        status = req.get_param("status") or ""
        error, searched = None, bool(q or status)
        try:
            if q:
                page_id(q.lower(), "提现 id 或专家用户号")
            if status and status not in set(WithdrawalStatus):
                raise invalid("状态只能是 pending、processing、succeeded 或 failed")
            rows = (
                oncall.search_withdrawals(q.lower() or None, status or None, 200)
                if searched
                else actions.withdrawals_in_flight()
            )
        except ApiError as exc:
            error, rows = exc.msg, []
        self.console.render(
            req,
            resp,
            "withdrawals.html",
            status=400 if error else 200,
            withdrawals=[actions.withdrawal_view(w) for w in rows],
            q=q,
            status_filter=status,
            searched=searched,
            error=error,
            statuses=list(WithdrawalStatus),
            tab="withdrawals",
        )


class Expert(Page):
    def on_get(self, req, resp, user_id):
        try:
            found = oncall.expert(page_id(user_id, "专家用户号"))
        except ApiError as error:
            return self.failed(req, resp, error)
        found["withdrawals"] = [actions.withdrawal_view(w) for w in found["withdrawals"]]
        self.console.render(req, resp, "expert.html", expert=found, tab="withdrawals")


__all__ = ["Expert", "HealthPage", "OpsHealth", "OpsNotifications", "OpsWithdrawals", "Withdrawals"]
