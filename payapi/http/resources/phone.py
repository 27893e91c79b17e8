"""The phone's routes (seed 1-9 and what they imply): /rest/pay/..., each user's own."""

from payapi.contract.render import withdrawal_info
from payapi.contract.shapes import (
    AccountAnswer,
    BalanceAnswer,
    BillsAnswer,
    BillsQuery,
    BillsSummaryAnswer,
    BillsSummaryQuery,
    CheckInfoAnswer,
    Done,
    PasswdRequest,
    PayAnswer,
    QuestionRequest,
    SmsCodeRequest,
    StatusAnswer,
    StatusReport,
    WithdrawAccount,
    WithdrawAnswer,
    WithdrawInfoRequest,
    WithdrawRequest,
    WithdrawsAnswer,
    WithdrawsQuery,
)
from payapi.http.operation import operation
from payapi.http.resources.common import path_id, with_info
from payapi.money import payments, statement, withdrawals
from payapi.users import security, sms

PASSWORD_LOCK = "Five wrong pay passwords within any 3 hours (withdraw, passwd and question together) lock for 3 hours."


def phone_headers(req):
    """The phone's own headers (`channel` is the app store here), kept for audit; never an error."""
    return payments.PhoneHeaders(
        client_ip=(req.get_header("client") or "")[:64],
        platform=(req.get_header("platform") or "")[:32],
        store=(req.get_header("channel") or "")[:64],
    )


class PayResource:
    @operation(
        id="getPay",
        summary="A pay record (seed 1); only its payer may read it.",
        tag="mobile",
        answer=PayAnswer,
        errors={404: None},
    )
    def on_get(self, req, resp, pay_id):
        with_info(resp, payments.info_of(path_id(pay_id), req.context.user_id))


class PayStatusResource:
    def __init__(self, codec, settings, gateway):
        self.codec, self.settings, self.gateway = codec, settings, gateway

    @operation(
        id="getPayStatus",
        summary="A pay's status and the app's last report (seed 2).",
        tag="mobile",
        answer=StatusAnswer,
        errors={404: None},
    )
    def on_get(self, req, resp, pay_id):
        status, client_status = payments.status_of(path_id(pay_id), req.context.user_id)
        resp.media = StatusAnswer(status=status, client_status=client_status)

    @operation(
        id="reportPayStatus",
        summary="Record what the app's payment SDK showed (seed 3).",
        tag="mobile",
        body=StatusReport,
        errors={404: None},
        example={"status": "success"},
        description="Never marks a pay paid by itself: on `success` the server asks Ping++ and applies its "
        "answer (at most once per pay every few seconds; a report meanwhile is recorded and answered 900). "
        "While pending, `cancel` → cancel, `invalid` → fail, `fail` leaves it pending.",
    )
    def on_post(self, req, resp, pay_id, body):
        payments.report_client_status(
            self.gateway, self.settings, req.context.user_id, path_id(pay_id), body.status, phone_headers(req)
        )
        resp.media = Done()


class Withdraw:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(
        id="withdraw",
        summary="Withdraw to the Alipay account (seed 4); once per natural month.",
        tag="mobile",
        body=WithdrawRequest,
        answer=WithdrawAnswer,
        example={"passwd": "xxxx", "amount": "1000"},
        idempotent=True,
        errors={
            403: "905: wrong pay password. 910: pay password or withdraw account not set, already "
            "withdrawn this month, or insufficient balance.",
            429: None,
        },
        description="Checks in order: amount (904), pay password and account set (910), lock (906), "
        "password (905), one per natural month (910), available balance (910). " + PASSWORD_LOCK,
    )
    def on_post(self, req, resp, body):
        withdrawal = withdrawals.withdraw(
            self.settings, req.context.user_id, body.passwd, body.amount, phone_headers(req)
        )
        resp.media = WithdrawAnswer(withdraw_id=withdrawal.withdraw_id)


class Passwd:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(
        id="setPayPassword",
        summary="Set or change the pay password (seed 5).",
        tag="mobile",
        body=PasswdRequest,
        example={"passwd": "xxxx"},
        errors={
            403: "905: wrong old password or answers. 910: a change without `old_passwd` or answers, "
            "or answers when none were set.",
            429: None,
        },
        description="A change needs `old_passwd` (checked when present) or all three answers; one or two "
        "answers are 904. " + PASSWORD_LOCK,
    )
    def on_post(self, req, resp, body):
        security.set_pay_password(self.settings, req.context.user_id, body.passwd, body.old_passwd, body.answers)
        resp.media = Done()


class Question:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(
        id="setSecurityAnswers",
        summary="Set or replace the three security answers (seed 6).",
        tag="mobile",
        body=QuestionRequest,
        example={"answer1": "a", "answer2": "b", "answer3": "c"},
        errors={403: "905: wrong pay password. 910: `passwd` is needed while a pay password is set.", 429: None},
        description="Whenever a pay password is set, setting or replacing answers needs the correct `passwd`.",
    )
    def on_post(self, req, resp, body):
        security.set_answers(self.settings, req.context.user_id, body.answers, body.passwd)
        resp.media = Done()


class WithdrawInfo:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(
        id="getWithdrawAccount",
        summary="The withdraw account (seed 8); empty strings when none is set.",
        tag="mobile",
        answer=AccountAnswer,
    )
    def on_get(self, req, resp):
        resp.media = AccountAnswer(info=WithdrawAccount(**security.withdraw_account(req.context.user_id)))

    @operation(
        id="setWithdrawAccount",
        summary="Set the withdraw account with an SMS code (seed 7).",
        tag="mobile",
        body=WithdrawInfoRequest,
        example={"smscode": "123123", "type": "alipay", "id": "xxxx", "name": "xxxx"},
        errors={
            403: "905: the SMS code is wrong, expired, used, or tried 5 times. 910: the token has no usable phone."
        },
        description="The body is checked before the code; the code is used up only by a successful change.",
    )
    def on_post(self, req, resp, body):
        security.set_withdraw_account(
            self.settings, req.context.user_id, req.context.phone, body.smscode, body.type, body.id, body.name
        )
        resp.media = Done()


class CheckInfo:
    @operation(
        id="getCheckInfo", summary="Which security settings are set (seed 9).", tag="mobile", answer=CheckInfoAnswer
    )
    def on_get(self, req, resp):
        resp.media = CheckInfoAnswer(**security.check_info(req.context.user_id))


class SmsCodeResource:
    def __init__(self, codec, settings, sms_backend):
        self.codec, self.settings, self.sms_backend = codec, settings, sms_backend

    @operation(
        id="sendSmsCode",
        summary="Send a 6-digit code to the token's phone.",
        tag="mobile",
        body=SmsCodeRequest,
        example={"purpose": sms.WITHDRAW_INFO},
        errors={
            403: "910: the token has no usable phone, or the SMS provider refuses the number.",
            429: None,
            502: None,
        },
        description=f"At most 1 per {sms.MIN_INTERVAL_MS // 1000} s and {sms.MAX_PER_DAY} per calendar day "
        "(TIMEZONE) per user, else 906 (also the SMS provider's own per-number limit); the code lives "
        "5 minutes. A code no provider accepted (920) costs none of that quota.",
    )
    def on_post(self, req, resp, body):
        sms.send_code(self.settings, self.sms_backend, req.context.user_id, req.context.phone, body.purpose)
        resp.media = Done()


class Balance:
    def __init__(self, settings):
        self.settings = settings

    @operation(
        id="getBalance",
        summary="The wallet balance and whether a withdrawal is possible now.",
        tag="mobile",
        answer=BalanceAnswer,
    )
    def on_get(self, req, resp):
        resp.media = BalanceAnswer(info=withdrawals.balance_info(self.settings, req.context.user_id))


class Withdraws:
    def __init__(self, codec):
        self.codec = codec

    @operation(
        id="listWithdrawals",
        summary="The user's withdrawals, newest first.",
        tag="mobile",
        query=WithdrawsQuery,
        answer=WithdrawsAnswer,
        errors={404: None},
        description="`before` is one of the user's withdraw_ids (exclusive); another id is 911.",
    )
    def on_get(self, req, resp, query):
        rows, has_more = withdrawals.list_withdrawals(req.context.user_id, query.limit, query.before)
        resp.media = WithdrawsAnswer(list=[withdrawal_info(w) for w in rows], has_more=has_more)


class Bills:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(
        id="listBills",
        summary="The expert's statement (收支明细), newest first.",
        tag="mobile",
        query=BillsQuery,
        answer=BillsAnswer,
        description="Every movement of the token's user's money as the books hold it: `income` (a paid "
        "pay's credit net of `fee`), `refund` (its share, negative), `refund_returned` (a failed refund's "
        "share given back), `withdrawal` (negative), `withdrawal_returned` (a failed withdrawal given back), "
        "`available` (held money becoming withdrawable: `amount` 0, see `available_after`). `before` is a "
        "`bill_id` (exclusive), read as a place in the statement: an id that is not the user's gives their "
        "own older lines. `month` is a natural month in TIMEZONE.",
    )
    def on_get(self, req, resp, query):
        lines, has_more = statement.page(req.context.user_id, query.limit, query.before, query.month, self.settings.tz)
        resp.media = BillsAnswer(list=lines, has_more=has_more)


class BillsSummary:
    def __init__(self, codec, settings):
        self.codec, self.settings = codec, settings

    @operation(
        id="getBillsSummary",
        summary="A natural month of the expert's statement: totals and balances.",
        tag="mobile",
        query=BillsSummaryQuery,
        answer=BillsSummaryAnswer,
        description="`month` defaults to the current natural month in TIMEZONE. `closing` = `opening` + "
        "`income` + `refunds` + `withdrawn` + `returned` (refunds and withdrawn are negative).",
    )
    def on_get(self, req, resp, query):
        resp.media = BillsSummaryAnswer(**statement.summary(req.context.user_id, query.month, self.settings.tz))
