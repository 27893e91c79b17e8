"""Ping++'s signed webhook: POST /rest/pay/webhook."""

from typing import Any

from payapi.contract.errors import UNAUTHENTICATED, ApiError
from payapi.contract.shapes import WebhookAnswer
from payapi.http.body import MAX_WEBHOOK_BODY, read_body
from payapi.http.operation import operation
from payapi.infra import metrics
from payapi.money import events


class Webhook:
    auth = None  # authenticated by Ping++'s signature instead

    def __init__(self, settings, gateway):
        self.settings, self.gateway = settings, gateway

    @operation(
        id="pingppWebhook",
        summary="Ping++ events, verified by signature and applied once per event id.",
        tag="provider",
        body=Any,
        raw_body=True,
        max_body=MAX_WEBHOOK_BODY,
        answer=WebhookAnswer,
        errors={502: None},
        example={
            "id": "evt_401160623091616471",
            "object": "event",
            "type": "charge.succeeded",
            "livemode": False,
            "data": {"object": {"id": "ch_Hm5uTSifDOuTy9iLeLPSurrD", "object": "charge"}},
        },
        description="Handled: charge.succeeded, refund.succeeded, transfer.succeeded, transfer.failed; other "
        "types are stored and acknowledged. A signed body that is not an event is acknowledged as "
        "`malformed`. A refund whose charge we have not seen paid makes the server ask Ping++ first; if "
        "Ping++ cannot be reached the answer is 502 and nothing is stored.",
    )
    def on_post(self, req, resp):
        raw = read_body(req, MAX_WEBHOOK_BODY)
        if not self.gateway.webhook_is_authentic(raw, req.get_header("X-Pingplusplus-Signature")):
            raise ApiError(UNAUTHENTICATED, "签名无效")
        result = events.handle_event(self.settings, self.gateway, raw)
        metrics.observe_webhook(result)
        resp.media = WebhookAnswer(result=result)
