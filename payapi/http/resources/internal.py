"""The order service's routes: /internal/pays (X-Service-Key), creating pays and refunds."""

import msgspec

from payapi.contract.render import refund_info
from payapi.contract.shapes import NewPayRequest, PayAnswer, RefundAnswer, RefundRequest, RefundsAnswer
from payapi.http.operation import operation
from payapi.http.resources.common import path_id, with_info
from payapi.infra import idempotency
from payapi.money import payments, refunds


class InternalPays:
    auth = "service"

    def __init__(self, codec, settings, gateway):
        self.codec, self.settings, self.gateway = codec, settings, gateway

    @operation(
        id="createPay",
        summary="Create a pay and its Ping++ charge (order service).",
        tag="internal",
        body=NewPayRequest,
        answer=PayAnswer,
        idempotent=True,
        errors={403: "910: the order or note is already paid (`info` is the pay that paid it).", 502: None},
        example={
            "type": "order",
            "o_id": "57691bba8789ff202b5968fb",
            "userID": "54f3b5fec08b6f54100c1cbe",
            "expert_id": "54f3b5fec08b6f54100c1cbf",
            "amount": 12356,
            "channel": "alipay",
            "subject": "支付预约订单_2016-06-23",
            "desc": "",
        },
        links={
            name: {"operationId": name, "parameters": {"pay_id": "$response.body#/info/pay_id"}}
            for name in ("getPayInternal", "getPay", "getPayStatus", "reportPayStatus", "createRefund", "listRefunds")
        },
        description="A second call for the same order/note, money and channel while pending returns the "
        "same pay; other money or channel closes it (and its charge at Ping++) and makes a new one.",
    )
    def on_post(self, req, resp, body):
        if not body.client_ip:
            body.client_ip = (req.get_header("client") or "")[:64]
        with_info(resp, payments.create_pay(self.gateway, self.settings, body).info)


class InternalPay:
    auth = "service"

    @operation(
        id="getPayInternal",
        summary="Any pay record (order service).",
        tag="internal",
        answer=PayAnswer,
        errors={404: None},
    )
    def on_get(self, req, resp, pay_id):
        with_info(resp, payments.info_of(path_id(pay_id)))


class InternalRefunds:
    auth = "service"

    def __init__(self, codec, settings, gateway):
        self.codec, self.settings, self.gateway = codec, settings, gateway

    @operation(
        id="createRefund",
        summary="Refund part or all of a paid pay through Ping++ (order service).",
        tag="internal",
        body=RefundRequest,
        answer=RefundAnswer,
        idempotent=True,
        example={"amount": 5000, "description": "预约取消"},
        errors={
            404: None,
            403: "910: the pay is not paid, already fully refunded, or the amount is more than is still refundable.",
            502: None,
        },
        description="`amount` defaults to what is still refundable (refunds already accepted count, also when "
        "requests race). The expert's share is debited at once and given back if Ping++ fails the refund. "
        "Ping++ certainly making nothing: 920, nothing written. When it may have made it (its answer was "
        "lost and it cannot be asked), 900 with the refund `pending`: the worker finds out, and a refund "
        "Ping++ never made becomes `failed` (refund.failed).",
    )
    def on_post(self, req, resp, pay_id, body):
        keyed = req.context.get("idempotency")
        amount = None if body.amount is msgspec.UNSET else body.amount
        refund = refunds.request_refund(
            self.gateway,
            path_id(pay_id),
            amount,
            body.description,
            self.settings.pingpp_timeout,
            refund_id=idempotency.derived_id(*keyed) if keyed else None,
        )
        resp.media = RefundAnswer(refund=refund_info(refund))

    @operation(
        id="listRefunds",
        summary="A pay's refunds, oldest first (order service).",
        tag="internal",
        answer=RefundsAnswer,
        errors={404: None},
    )
    def on_get(self, req, resp, pay_id):
        payments.info_of(path_id(pay_id))  # 911 for an unknown pay
        resp.media = RefundsAnswer(list=[refund_info(r) for r in refunds.refunds_of(pay_id)])
