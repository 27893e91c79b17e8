"""Every request and answer body, declared once as a msgspec Struct.

The same classes validate what comes in (`Codec.decode`), encode what goes out, and are the
schemas of the OpenAPI document (`Codec.schema_hook`). The project's own rules are types:
money in fen, whole numbers, trimmed text with limits, opaque secrets, 24-hex ids. Limits that
come from the configuration (WITHDRAW_MIN, ...) name their setting and are read from the running
service's settings, so the document always states the limits the service enforces.

Wire names from the seed (`userID`, `createdAt`) appear only here, as field names on the wire.
"""

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

import msgspec

from payapi.contract.errors import HTTP_STATUS, invalid
from payapi.contract.patterns import digits_between, trimmed_length
from payapi.domain.lifecycles import AppReport, NotificationStatus, Outcome, PayStatus, RefundStatus, WithdrawalStatus

ID_PATTERN = "^[0-9a-f]{24}$"
_DIGITS = re.compile(r"0*[0-9]{1,15}")  # leading zeros do not count toward the length


# --- the project's types ------------------------------------------------------------------------


class Whole(int):
    """A JSON integer or a string of decimal digits, within [minimum, maximum].

    Floats (also 1000.0), signs, spaces, exponents, empty strings and booleans are refused: "10.5"
    or 1e3 are never silently rounded into someone's money. A bound is a number or the name of the
    setting that holds it.
    """

    minimum: int | str = 0
    maximum: int | str = 10**15
    unit = ""
    description = "A whole number"

    @classmethod
    def between(cls, minimum: int | str, maximum: int | str, description: str | None = None) -> "type[Whole]":
        name = f"{cls.__name__}_{minimum}_{maximum}"
        return type(
            name, (cls,), {"minimum": minimum, "maximum": maximum, "description": description or cls.description}
        )

    @classmethod
    def bounds(cls, settings: Any) -> tuple[int, int]:
        resolve = lambda bound: getattr(settings, bound) if isinstance(bound, str) else bound  # noqa: E731
        return resolve(cls.minimum), resolve(cls.maximum)

    @classmethod
    def parse(cls, value: object, settings: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"必须是整数{cls.unit}")
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and _DIGITS.fullmatch(value):
            number = int(value.lstrip("0") or "0")
        else:
            raise ValueError(f"必须是整数{cls.unit}")
        low, high = cls.bounds(settings)
        if not low <= number <= high:
            raise ValueError(f"超出范围 {low}-{high}")
        return number


class Fen(Whole):
    """Money: an integer number of fen (分)."""

    unit = "（分）"
    description = "Money in fen (分)"


class Text(str):
    """A string, trimmed of surrounding whitespace (unless opaque), limited in characters after that."""

    min_len = 1
    max_len = 64
    strip: bool = True  # type: ignore[assignment]  # a limit of the shape, not str.strip
    description = "Text"

    @classmethod
    def between(cls, min_len: int, max_len: int, description: str | None = None, strip: bool = True) -> "type[Text]":
        name = f"{cls.__name__}_{min_len}_{max_len}{'' if strip else '_opaque'}"
        attrs = {"min_len": min_len, "max_len": max_len, "strip": strip, "description": description or cls.description}
        return type(name, (cls,), attrs)

    @classmethod
    def parse(cls, value: object, settings: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("必须是字符串")
        if cls.strip:
            value = value.strip()
        if not cls.min_len <= len(value) <= cls.max_len:
            raise ValueError(f"长度应为 {cls.min_len}-{cls.max_len}")
        return value


class Id(str):
    """24 lowercase hex characters (ObjectId-compatible)."""

    @classmethod
    def parse(cls, value: object, settings: Any) -> str:
        if not isinstance(value, str) or re.fullmatch(ID_PATTERN, value) is None:
            raise ValueError("格式错误")
        return value


PROJECT_TYPES = (Whole, Text, Id)

# The app hashes the pay password itself ("加密后"): an opaque string, never trimmed.
Secret = Text.between(1, 128, "The pay password as the app hashed it (opaque)", strip=False)
SecurityAnswer = Text.between(1, 64, "A security answer; compared after NFKC normalisation, trimming and case folding")
PayMoney = Fen.between(1, "pay_money_max", "Fen, 1..PAY_MONEY_MAX")
WithdrawAmount = Fen.between("withdraw_min", "withdraw_max", "Fen, WITHDRAW_MIN..WITHDRAW_MAX")
# Channels a pay may use (Ping++'s names); `extra` is passed through for those that need it.
CHANNELS = frozenset(
    {
        "alipay",
        "alipay_wap",
        "alipay_pc_direct",
        "alipay_qr",
        "alipay_lite",
        "wx",
        "wx_pub",
        "wx_pub_qr",
        "wx_wap",
        "wx_lite",
        "upacp",
        "upacp_wap",
        "upacp_pc",
        "applepay_upacp",
        "qpay",
        "bfb_wap",
        "cmb_wallet",
    }
)
Channel = Literal[tuple(sorted(CHANNELS))]
# Times in answers are ISO-8601 UTC with milliseconds (clock.iso), days are YYYY-MM-DD: both RFC 3339.
Time = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"}, examples=["2016-06-23T04:46:38.190Z"])]
Day = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date"}, examples=["2016-06-23"])]


class Body(msgspec.Struct, kw_only=True):
    """A request body (or query string). Unknown fields are ignored; null means absent (unless a
    shape says otherwise: where absent means "all", a null is refused rather than guessed at)."""

    nulls_mean_absent: ClassVar[bool] = True

    def __post_init__(self) -> None:
        # The project's types are subclasses only while decoding: code, drivers and encoders get plain values.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, int) and type(value) is not int and not isinstance(value, bool):
                setattr(self, name, int(value))
            elif isinstance(value, str) and type(value) is not str and isinstance(value, PROJECT_TYPES):
                setattr(self, name, str(value))


# --- requests ---------------------------------------------------------------------------------------


class StatusReport(Body):
    """What the app's payment SDK showed (seed 3)."""

    status: AppReport


class WithdrawRequest(Body):
    passwd: Secret
    amount: WithdrawAmount


def _three_or_none(struct: Body) -> None:
    present = [getattr(struct, f"answer{i}") is not None for i in (1, 2, 3)]
    if any(present) and not all(present):
        raise ValueError("answer1、answer2、answer3 须同时提供")


# The same rule for JSON Schema: a string answer needs the other two (null counts as absent).
THREE_OR_NONE_SCHEMA = {
    "allOf": [
        {
            "if": {"properties": {f"answer{i}": {"type": "string"}}, "required": [f"answer{i}"]},
            "then": {
                "properties": {f"answer{j}": {"type": "string"} for j in (1, 2, 3) if j != i},
                "required": [f"answer{j}" for j in (1, 2, 3) if j != i],
            },
        }
        for i in (1, 2, 3)
    ]
}


class PasswdRequest(Body):
    """Set the pay password; a change needs old_passwd (checked when present) or all three answers."""

    passwd: Secret
    old_passwd: Secret | None = None
    answer1: SecurityAnswer | None = None
    answer2: SecurityAnswer | None = None
    answer3: SecurityAnswer | None = None

    extra_json_schema: ClassVar[dict] = THREE_OR_NONE_SCHEMA

    def __post_init__(self) -> None:
        super().__post_init__()
        _three_or_none(self)

    @property
    def answers(self) -> list[str] | None:
        return None if self.answer1 is None else [self.answer1, self.answer2, self.answer3]


class QuestionRequest(Body):
    """Set or replace the three security answers; `passwd` is needed whenever a pay password is set."""

    answer1: SecurityAnswer
    answer2: SecurityAnswer
    answer3: SecurityAnswer
    passwd: Secret | None = None

    @property
    def answers(self) -> list[str]:
        return [self.answer1, self.answer2, self.answer3]


class WithdrawInfoRequest(Body):
    smscode: Text.between(1, 16, "The latest code from POST /rest/pay/smscode")
    id: Text.between(1, 64, "The Alipay account")
    name: Text.between(1, 32, "The account holder's name")
    type: Literal["alipay"] = "alipay"


class SmsCodeRequest(Body):
    purpose: Literal["withdrawInfo"] = "withdrawInfo"


class WithdrawsQuery(Body):
    limit: Whole.between(1, 100, "Page size") = 20
    before: Id | None = None


# A natural month in TIMEZONE (years 1970-2999: a month the service can name the bounds of).
Month = Annotated[
    str,
    msgspec.Meta(
        pattern="^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])$",
        examples=["2026-11"],
        description="A natural month in TIMEZONE, YYYY-MM.",
    ),
]


class BillsQuery(Body):
    limit: Whole.between(1, 100, "Page size") = 20
    before: Id | None = None  # a bill_id: the lines older than it (exclusive)
    month: Month | None = None  # only the lines of this natural month


class BillsSummaryQuery(Body):
    month: Month | None = None  # absent: the current natural month


class NewPay(Body, tag_field="type", kw_only=True):
    """What the order service asks for in POST /internal/pays."""

    user_id: Id = msgspec.field(name="userID")
    expert_id: Id
    amount: PayMoney
    money: PayMoney | None = None  # what the user pays; absent: amount
    channel: Channel
    subject: Text.between(1, 32, "The charge's subject")
    description: Text.between(0, 128, "The charge's body (subject when empty)") = msgspec.field(default="", name="desc")
    extra: dict | None = None  # passed to Ping++ for channels that need it
    client_ip: Text.between(0, 64, "The phone's `client` header (else this request's)") = ""
    platform: Text.between(0, 32, "The phone's `platform` header") = ""
    store: Text.between(0, 64, "The phone's `channel` header (the app store)") = ""
    if TYPE_CHECKING:  # the subclasses' ids, for the type checker only (a Struct's annotations are its fields)
        o_id: str
        note_id: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.money is None:
            self.money = self.amount

    @property
    def type(self) -> str:
        return str(self.__struct_config__.tag)

    @property
    def order_id(self) -> str:
        return self.o_id if self.type == "order" else self.note_id

    @property
    def open_for(self) -> str:
        return f"{self.type}:{self.order_id}"


class NewOrderPay(NewPay, tag="order", kw_only=True):
    """A pay for an appointment order (预约订单)."""

    o_id: Id


class NewNotePay(NewPay, tag="note", kw_only=True):
    """A pay for a question note (小纸条)."""

    note_id: Id


NewPayRequest = NewOrderPay | NewNotePay


class RefundRequest(Body):
    """A refund of part or all of a paid pay, asked for by the order service."""

    # An absent amount refunds everything still refundable: a null (a caller's bug) must not.
    nulls_mean_absent: ClassVar[bool] = False

    description: Text.between(1, 255, "Why: shown to the payer by Ping++")
    amount: PayMoney | msgspec.UnsetType = msgspec.UNSET  # absent: what is still refundable


class ReasonRequest(Body):
    """An operator's action; the reason goes into the audit trail."""

    reason: Text.between(0, 255, "Why (kept in the audit trail)") = ""


class FailRequest(Body):
    """Fail a withdrawal: a reason is required."""

    reason: Text.between(1, 255, "Why the withdrawal is failed (kept in the audit trail)")


class LimitQuery(Body):
    limit: Whole.between(1, 200, "Page size") = 50


class AuditQuery(LimitQuery):
    before: Id | None = None  # an audit_id: older entries than it


class PaySearchQuery(Body):
    """What to look for: a pay id, an order or note id (o_id / note_id), or a user id (payer or expert)."""

    q: Id


# --- answers --------------------------------------------------------------------------------------


class PayInfo(msgspec.Struct, kw_only=True):
    """A pay record with the seed's field names (route 1's `info`)."""

    pay_id: str
    o_id: str  # the appointment order (type order), else empty
    note_id: str  # the question note (type note), else empty
    expert_id: str
    user_id: str = msgspec.field(name="userID")
    amount: int  # the order's price, fen
    money: int  # what the user pays, fen
    charge: dict[str, Any]  # the Ping++ charge object as last received
    description: str = msgspec.field(name="desc")
    client_status: str
    status: PayStatus
    subject: str
    currency: str
    channel: str
    type: Literal["order", "note"]
    created_at: Time = msgspec.field(name="createdAt")
    updated_at: Time = msgspec.field(name="updatedAt")


class WithdrawAccount(msgspec.Struct):
    """The Alipay account withdrawals go to; empty strings when none is set."""

    type: Literal["", "alipay"]
    id: str
    name: str


class WithdrawalInfo(msgspec.Struct, kw_only=True):
    withdraw_id: str
    amount: int
    status: WithdrawalStatus
    account: WithdrawAccount
    created_at: Time = msgspec.field(name="createdAt")
    updated_at: Time = msgspec.field(name="updatedAt")


class BalanceInfo(msgspec.Struct, kw_only=True):
    balance: int  # fen, available + pending; negative only after a refund
    available: int  # what may be withdrawn
    pending: int  # credits still held (settlement hold)
    next_available_at: Time | None  # when the next pending amount becomes available
    currency: Literal["cny"] = "cny"
    can_withdraw: bool
    next_withdraw_at: Time | None  # when this month's withdrawal is what blocks: the next natural month


class RefundInfo(msgspec.Struct, kw_only=True):
    refund_id: str
    pay_id: str
    amount: int
    status: RefundStatus
    description: str
    created_at: Time = msgspec.field(name="createdAt")
    updated_at: Time = msgspec.field(name="updatedAt")


BillKind = Literal["income", "refund", "refund_returned", "withdrawal", "withdrawal_returned", "available"]


class BillLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A line of the expert's statement (收支明细): one movement of their money, as the books hold it."""

    bill_id: str  # its place in the statement (24 hex: the time, then the journal entry); a `before` for paging
    kind: BillKind
    title: str  # a short Chinese label fit to show: 预约订单收入, 小纸条收入, 退款, 提现, 提现退回, ...
    amount: int  # signed fen: the change of the balance (0 for `available`: held money became withdrawable)
    balance_after: int  # the balance (pending + available) after this line
    available_after: int  # what could be withdrawn after this line
    pay_id: str | None = None  # income, available, refund, refund_returned
    refund_id: str | None = None  # refund, refund_returned
    withdraw_id: str | None = None  # withdrawal, withdrawal_returned
    fee: int | None = None  # income: what the platform kept of what the user paid
    type: Literal["order", "note"] | None = None  # the pay's type, for lines that belong to a pay
    subject: str | None = None  # the pay's subject
    created_at: Time = msgspec.field(name="createdAt")


class Answer900(msgspec.Struct, kw_only=True):
    """Success: code 900 and the route's fields."""

    code: Annotated[Literal[900], msgspec.Meta(extra_json_schema={"type": "integer"})] = 900


class Done(Answer900, kw_only=True):
    pass


class PayAnswer(Answer900, kw_only=True):
    info: PayInfo


class StatusAnswer(Answer900, kw_only=True):
    status: PayStatus
    client_status: str


class WithdrawAnswer(Answer900, kw_only=True):
    withdraw_id: str


class AccountAnswer(Answer900, kw_only=True):
    info: WithdrawAccount


class CheckInfoAnswer(Answer900, kw_only=True):
    passwd: bool
    questions: bool
    withdraw: bool


class BalanceAnswer(Answer900, kw_only=True):
    info: BalanceInfo


class WithdrawsAnswer(Answer900, kw_only=True):
    list: list[WithdrawalInfo]
    has_more: bool


class BillsAnswer(Answer900, kw_only=True):
    """The expert's statement, newest first."""

    list: list[BillLine]
    has_more: bool


class BillsSummaryAnswer(Answer900, kw_only=True):
    """A natural month of the statement: closing = opening + income + refunds + withdrawn + returned."""

    month: str  # YYYY-MM in TIMEZONE
    income: int  # credits of paid pays, net of the fees
    fees: int  # what the platform kept of those pays
    refunds: int  # refunds' shares (negative), less those given back when a refund failed
    withdrawn: int  # withdrawals (negative)
    returned: int  # failed withdrawals given back
    opening: int  # the balance when the month began
    closing: int  # the balance when it ended (or now)


class RefundAnswer(Answer900, kw_only=True):
    refund: RefundInfo


class RefundsAnswer(Answer900, kw_only=True):
    list: list[RefundInfo]


class WebhookAnswer(Answer900, kw_only=True):
    result: Outcome


class HealthAnswer(Answer900, kw_only=True):
    db: Literal["ok"] = "ok"


# --- operators (/ops/api) --------------------------------------------------------------------------


class OpsWithdrawal(msgspec.Struct, kw_only=True):
    """A withdrawal as operators see it."""

    withdraw_id: str
    user_id: str
    amount: int
    status: WithdrawalStatus
    attempts: int
    last_error: str
    transfer_id: str | None
    account: WithdrawAccount
    stuck: bool  # pending over 10 minutes or with an error, or processing over a day
    age_s: int
    created_at: Time = msgspec.field(name="createdAt")
    updated_at: Time = msgspec.field(name="updatedAt")


class AuditInfo(msgspec.Struct, kw_only=True):
    audit_id: str
    operator: str  # the operator's name, or cli:<login user> for commands
    action: Literal["withdrawal.retry", "withdrawal.fail", "notification.resend"]
    target: str
    reason: str
    before: dict[str, Any]
    after: dict[str, Any]
    created_at: Time = msgspec.field(name="createdAt")
    outcome: Literal["performed", "refused"] = "performed"  # refused: Ping++'s answer refused it, nothing done
    refusal: str = ""  # why it was refused


class OpsPay(msgspec.Struct, kw_only=True):
    """A pay in search results."""

    pay_id: str
    type: Literal["order", "note"]
    o_id: str
    note_id: str
    user_id: str = msgspec.field(name="userID")
    expert_id: str
    amount: int
    money: int
    amount_refunded: int
    status: PayStatus
    client_status: str
    channel: str
    charge_id: str | None
    created_at: Time = msgspec.field(name="createdAt")
    paid_at: Time | None = msgspec.field(name="paidAt")


class OpsNotification(msgspec.Struct, kw_only=True):
    message_id: str
    type: str
    subject_id: str
    status: NotificationStatus
    attempts: int
    last_status: int | None
    last_error: str
    created_at: Time = msgspec.field(name="createdAt")
    updated_at: Time = msgspec.field(name="updatedAt")


class AccountTotal(msgspec.Struct, kw_only=True):
    account: str
    debits: int
    credits: int


class ReconciliationInfo(msgspec.Struct, kw_only=True):
    reconciliation_id: str
    date: Day  # the calendar day (TIMEZONE) it checked
    status: Literal["clean", "healed", "different"]
    healed: list[dict[str, Any]]
    differences: list[dict[str, Any]]
    created_at: Time = msgspec.field(name="createdAt")


class DayVolume(msgspec.Struct, kw_only=True):
    date: Day  # in TIMEZONE
    paid: int  # fen of charges paid that day
    refunded: int  # fen of refunds accepted
    withdrawn: int  # fen Ping++ paid out to experts


class OpsWithdrawalsAnswer(Answer900, kw_only=True):
    list: list[OpsWithdrawal]


class OpsWithdrawalAnswer(Answer900, kw_only=True):
    withdrawal: OpsWithdrawal
    audit_id: str


class OpsPaysAnswer(Answer900, kw_only=True):
    list: list[OpsPay]


class OpsNotificationsAnswer(Answer900, kw_only=True):
    list: list[OpsNotification]


class OpsNotificationAnswer(Answer900, kw_only=True):
    notification: OpsNotification
    audit_id: str


class AuditAnswer(Answer900, kw_only=True):
    list: list[AuditInfo]


class TrialBalanceAnswer(Answer900, kw_only=True):
    """The books' totals per account; the two totals are always equal."""

    accounts: list[AccountTotal]
    debits: int
    credits: int


class ReconciliationsAnswer(Answer900, kw_only=True):
    list: list[ReconciliationInfo]


class VolumesAnswer(Answer900, kw_only=True):
    """Paid, refunded and withdrawn per calendar day in TIMEZONE, the last 30 days, oldest first."""

    timezone: str
    days: list[DayVolume]


# --- notifications to the order service (Standard Webhooks bodies) ---------------------------------


class PayNoticeData(msgspec.Struct, kw_only=True, omit_defaults=True):
    pay: PayInfo
    refund: RefundInfo | None = None  # refund.succeeded and refund.failed


class WithdrawalNoticeData(msgspec.Struct, kw_only=True):
    withdrawal: WithdrawalInfo
    user_id: str


class PayNotice(msgspec.Struct, kw_only=True):
    """What payapi POSTs to NOTIFY_URL about a pay or its refund (signed per Standard Webhooks)."""

    type: Literal["pay.paid", "pay.closed", "refund.succeeded", "refund.failed"]
    timestamp: Time  # when the change happened (ISO-8601 UTC)
    data: PayNoticeData


class WithdrawalNotice(msgspec.Struct, kw_only=True):
    """What payapi POSTs to NOTIFY_URL about a withdrawal (signed per Standard Webhooks)."""

    type: Literal["withdrawal.succeeded", "withdrawal.failed"]
    timestamp: Time
    data: WithdrawalNoticeData


# Every code a failure carries (each response of the document says which of them it can be).
FailureCode = Annotated[
    Literal[tuple(sorted(HTTP_STATUS))],
    msgspec.Meta(
        extra_json_schema={"type": "integer"},
        description="901 not authenticated, 904 invalid input, 905 a secret did not verify, 906 locked or "
        "rate-limited, 910 not allowed by a business rule, 911 not found, 920 the provider failed, 999 unexpected.",
    ),
]


class Failure(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Every failure: a machine code and one short Chinese sentence fit to show to the user."""

    code: FailureCode
    msg: str
    retry_after: int | None = None  # 906: seconds to wait
    request_id: str | None = None  # 999: the id the error was logged with
    db: Literal["down"] | None = None  # GET /healthz only
    info: PayInfo | None = None  # 910 from POST /internal/pays: the pay that already paid the order


# --- decoding -------------------------------------------------------------------------------------

_FIELD = re.compile(r" - at `\$(?:\.([A-Za-z0-9_]+))?[^`]*`$")


def _chinese(error: Exception) -> str:
    """msgspec's English validation message -> one Chinese sentence naming the field."""
    message = str(error)
    match = _FIELD.search(message)
    field = match.group(1) if match else None
    reason = message[: match.start()] if match else message
    if reason.startswith("Object missing required field"):
        return f"缺少参数 {reason.split('`')[1]}"
    if field is None:
        if reason.startswith("Expected `object`"):
            return "请求体必须是 JSON 对象"
        return reason if not reason.isascii() else "请求参数有误"
    if reason.startswith("Invalid enum value") or reason.startswith("Expected `str` matching"):
        return f"参数 {field} 取值无效"
    if reason.startswith("Expected"):
        return f"参数 {field} 类型错误"
    return f"参数 {field} {reason}" if not reason.isascii() else f"参数 {field} 有误"


S = TypeVar("S")


class Codec:
    """Decodes request bodies into Structs by the running service's settings; describes them for OpenAPI."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def _dec_hook(self, tp: type, value: object) -> Any:
        if isinstance(tp, type) and issubclass(tp, (Whole, Text, Id)):
            return tp(tp.parse(value, self.settings))
        raise NotImplementedError(f"no decoder for {tp}")

    def decode(self, raw: bytes | str, shape: type[S]) -> S:
        """bytes -> an instance of shape, or 904 naming the field, for anything else."""
        try:
            value = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeError, RecursionError):
            raise invalid("请求体不是合法的 JSON") from None
        return self.convert(value, shape)

    def convert(self, value: object, shape: type[S]) -> S:
        if not isinstance(value, dict):
            raise invalid("请求体必须是 JSON 对象")
        if getattr(shape, "nulls_mean_absent", True):
            value = {k: v for k, v in value.items() if v is not None}
        try:
            return msgspec.convert(value, shape, dec_hook=self._dec_hook)
        except msgspec.ValidationError as error:
            raise invalid(_chinese(error)) from None

    def schema_hook(self, tp: type) -> dict[str, Any]:
        """The JSON Schema of the project's types, with the limits this service enforces."""
        if issubclass(tp, Whole):
            low, high = tp.bounds(self.settings)
            return {
                "description": f"{tp.description}: a JSON integer (no fraction: 1000.0 is refused) or a string "
                f"of decimal digits, {low}–{high}. Floats, signs, spaces, exponents, empty strings and booleans "
                "are 904.",
                "oneOf": [
                    {"type": "integer", "format": "int64", "minimum": low, "maximum": high},
                    {"type": "string", "pattern": digits_between(low, high)},
                ],
                "x-integer-literal": True,
                "examples": [str(low * 10) if low * 10 <= high else str(low), low],
            }
        if issubclass(tp, Text):
            if not tp.strip:
                return {
                    "type": "string",
                    "minLength": tp.min_len,
                    "maxLength": tp.max_len,
                    "description": f"{tp.description}; {tp.min_len}–{tp.max_len} characters.",
                }
            return {
                "type": "string",
                "pattern": trimmed_length(tp.min_len, tp.max_len),
                "description": f"{tp.description}; {tp.min_len}–{tp.max_len} characters after trimming "
                "surrounding whitespace.",
            }
        if issubclass(tp, Id):
            return {
                "type": "string",
                "pattern": ID_PATTERN,
                "description": "24 lowercase hex characters.",
                "examples": ["576b69ae7ce1fd7004cc8280"],
            }
        raise NotImplementedError(f"no schema for {tp}")


# --- operators on call (/ops/api/health, the withdrawal search, notifications failing now) ----------


class WithdrawalSearchQuery(LimitQuery):
    """q: a withdraw_id or an expert's user id; status: one status only; before: a withdraw_id (older ones).
    Without q and status: the withdrawals in flight, stuck ones first."""

    q: Id | None = None
    status: WithdrawalStatus | None = None
    before: Id | None = None


class PassHealth(msgspec.Struct, kw_only=True):
    pass_: str = msgspec.field(name="pass")
    last_run_at: Time | None
    last_success_at: Time | None
    failures_in_a_row: int


class OutboxHealth(msgspec.Struct, kw_only=True):
    waiting: int  # pending: not yet delivered
    failing: int  # of which at least one attempt failed
    oldest_waiting_s: int | None  # age of the oldest waiting message; null when none waits


class ReconciliationHealth(msgspec.Struct, kw_only=True):
    date: Day
    status: Literal["clean", "healed", "different"]


class PingppHealth(msgspec.Struct, kw_only=True):
    last_error: str
    at: Time


class OpsHealthAnswer(Answer900, kw_only=True):
    database: Literal["ok", "down"]
    passes: list[PassHealth]
    outbox: OutboxHealth
    reconciliation: ReconciliationHealth | None
    pingpp: PingppHealth | None


class NotificationsQuery(Body):
    """failing: still to be delivered, after at least one failed attempt; failed: given up after 24 hours."""

    state: Literal["failing", "failed"] = "failed"


class OpsNotificationNow(OpsNotification, kw_only=True):
    next_attempt_at: Time | None  # failing ones: when it is tried again
    target: str  # the host it is sent to (NOTIFY_URL's)


class OpsNotificationsNowAnswer(Answer900, kw_only=True):
    list: list[OpsNotificationNow]
