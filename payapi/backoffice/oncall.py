"""What an operator on call looks up (issue 23): any withdrawal, an expert, notifications failing now,
a pay's refunds as they stand, the books' accounts named for people, and refused actions in the audit.

actions.py has the actions and the older reads; this module only reads.
"""

import urllib.parse

import msgspec

from payapi.contract.errors import NOT_FOUND, ApiError
from payapi.contract.render import ops_notification
from payapi.contract.shapes import OpsNotificationNow
from payapi.domain.clock import iso
from payapi.domain.lifecycles import NotificationStatus, RefundStatus
from payapi.infra.models import Notification, Pay, Profile, Wallet, Withdrawal
from payapi.money import statement
from payapi.money.books import AVAILABLE, FEES, PAYOUTS, PENDING, PINGPP, REFUNDS

FAILING, FAILED = "failing", "failed"


# --- withdrawals: any of them ------------------------------------------------------------------------


def search_withdrawals(q=None, status=None, limit=50, before=None):
    """Withdrawals (finished ones too) whose id or expert is q, of a status, newest first."""
    query = Withdrawal.select()
    if q:
        query = query.where((Withdrawal.withdraw_id == q) | (Withdrawal.user_id == q))
    if status:
        query = query.where(Withdrawal.status == status)
    if before:
        cursor = Withdrawal.get_or_none(Withdrawal.withdraw_id == before)
        if cursor is None:
            raise ApiError(NOT_FOUND, "before 不是已有的提现")
        query = query.where(
            (Withdrawal.created_at < cursor.created_at)
            | ((Withdrawal.created_at == cursor.created_at) & (Withdrawal.withdraw_id < before))
        )
    return list(query.order_by(Withdrawal.created_at.desc(), Withdrawal.withdraw_id.desc()).limit(limit))


# --- an expert -----------------------------------------------------------------------------------------


def expert(user_id, limit=100):
    """An expert's balance, profile, withdrawals, pays and the newest lines of their statement (newest first)."""
    wallet = Wallet.get_or_none(Wallet.user_id == user_id)
    profile = Profile.get_or_none(Profile.user_id == user_id)
    withdrawals = list(
        Withdrawal.select().where(Withdrawal.user_id == user_id).order_by(Withdrawal.created_at.desc()).limit(limit)
    )
    pays = list(Pay.select().where(Pay.expert_id == user_id).order_by(Pay.created_at.desc()).limit(limit))
    if wallet is None and profile is None and not withdrawals and not pays:
        raise ApiError(NOT_FOUND, "没有这个专家的任何记录")
    return {
        "user_id": user_id,
        "name": person(profile, user_id),
        "profile": profile,
        "pending": wallet.pending if wallet else 0,
        "available": wallet.available if wallet else 0,
        "withdrawals": withdrawals,
        "pays": pays,
        "statement": statement.page(user_id, limit)[0],
    }


def person(profile, user_id):
    """An expert as people say it: the withdraw account's holder name when known, and the id's start."""
    short = user_id[:8] + "…"
    name = profile.account_name if profile is not None and profile.account_name else ""
    return f"{name}（{short}）" if name else short


# --- the books' accounts ----------------------------------------------------------------------------

ACCOUNT_NAMES = {
    PINGPP: "Ping++ 代收（平台在 Ping++ 的资金）",
    FEES: "平台手续费收入",
    PAYOUTS: "提现在途（待 Ping++ 转账）",
    REFUNDS: "退款在途（待 Ping++ 结算）",
}
BUCKETS = {PENDING: "冻结中（结算期）", AVAILABLE: "可提现"}


def name_accounts(accounts):
    """The trial balance's rows with `name` (who or what the account is) and `expert_id` (or None)."""
    experts = {
        a["account"].split(":")[1]
        for a in accounts
        if a["account"].count(":") == 2 and a["account"].startswith("expert:")
    }
    profiles = {p.user_id: p for p in Profile.select().where(Profile.user_id.in_(list(experts)))} if experts else {}
    named = []
    for a in accounts:
        parts = a["account"].split(":")
        if len(parts) == 3 and parts[0] == "expert":
            name = f"专家 {person(profiles.get(parts[1]), parts[1])} · {BUCKETS.get(parts[2], parts[2])}"
            named.append({**a, "name": name, "expert_id": parts[1]})
        else:
            named.append({**a, "name": ACCOUNT_NAMES.get(a["account"], a["account"]), "expert_id": None})
    return named


# --- a pay's refunds as they stand ---------------------------------------------------------------------


def refunded(refunds):
    """{"settled", "pending", "failed"}: fen refunded and settled by Ping++, asked for and not settled yet,
    and refused by Ping++ (given back to nobody: not part of what is refunded)."""
    totals = {"settled": 0, "pending": 0, "failed": 0}
    key = {RefundStatus.SUCCEEDED: "settled", RefundStatus.PENDING: "pending", RefundStatus.FAILED: "failed"}
    for r in refunds:
        totals[key[RefundStatus(r.status)]] += r.amount
    return totals


# --- notifications failing now --------------------------------------------------------------------------


def failing_notifications(limit=200):
    """Pending messages whose last attempt failed: the oldest first (the longest the order service has
    not heard)."""
    return list(
        Notification.select()
        .where(Notification.status == NotificationStatus.PENDING, Notification.attempts > 0)
        .order_by(Notification.created_at)
        .limit(limit)
    )


def notifications(state, limit=200):
    return failing_notifications(limit) if state == FAILING else failed_notifications(limit)


def failed_notifications(limit=200):
    """Messages given up on (24 hours without a 2xx), newest first."""
    return list(
        Notification.select()
        .where(Notification.status == NotificationStatus.FAILED)
        .order_by(Notification.updated_at.desc())
        .limit(limit)
    )


def target_host(notify_url):
    return urllib.parse.urlsplit(notify_url).hostname or "" if notify_url else ""


def notification_now(message, notify_url):
    base = msgspec.structs.asdict(ops_notification(message))
    waiting = message.status == NotificationStatus.PENDING
    return OpsNotificationNow(
        **base, next_attempt_at=iso(message.next_attempt_at) if waiting else None, target=target_host(notify_url)
    )
