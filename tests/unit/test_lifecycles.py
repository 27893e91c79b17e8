"""The lifecycle tables (payapi/lifecycles.py): every status has its row, a move the table does not
allow is refused and changes nothing, and after any walk of allowed moves the keys derived from the
status (the database's unique keys) are in step with it."""

import types

import hypothesis
import pytest
from hypothesis import strategies as st

from payapi.domain.lifecycles import (
    NOTIFICATION,
    PAY,
    REFUND,
    WITHDRAWAL,
    IllegalMove,
    NotificationStatus,
    PayStatus,
    RefundStatus,
    WithdrawalStatus,
)

TABLES = [(PAY, PayStatus), (WITHDRAWAL, WithdrawalStatus), (REFUND, RefundStatus), (NOTIFICATION, NotificationStatus)]


@pytest.mark.parametrize("lifecycle, statuses", TABLES, ids=[lifecycle.name for lifecycle, _ in TABLES])
def test_every_status_has_a_row_and_moves_only_to_statuses(lifecycle, statuses):
    assert set(lifecycle.moves) == set(statuses)
    assert lifecycle.initial in statuses
    for status, targets in lifecycle.moves.items():
        assert targets <= set(statuses) and status not in targets, status
    assert set(lifecycle.announce) <= set(statuses)


def a_record(lifecycle, now):
    record = types.SimpleNamespace(
        type="order", o_id="o" * 24, note_id=None, paid_at=None, user_id="u" * 24, month="2026-11"
    )
    return lifecycle.begin(record, now)


def keys_in_step(lifecycle, record, been):
    """been: the statuses the record has been in."""
    if lifecycle is PAY:  # one pending pay per order: the unique open_for, set exactly while pending
        assert (record.open_for is not None) == (record.status == PayStatus.PENDING)
        assert (record.paid_at is not None) == (PayStatus.PAID in been)
    if lifecycle is WITHDRAWAL:  # one withdrawal a month: the unique active_month, free again once failed
        assert (record.active_month is None) == (record.status == WithdrawalStatus.FAILED)


@pytest.mark.parametrize("lifecycle, statuses", TABLES, ids=[lifecycle.name for lifecycle, _ in TABLES])
@hypothesis.given(data=st.data())
def test_any_walk_keeps_the_derived_keys_in_step_and_refuses_what_the_table_does_not_allow(lifecycle, statuses, data):
    now = 1_700_000_000_000
    record = a_record(lifecycle, now)
    been = {record.status}
    keys_in_step(lifecycle, record, been)
    for _ in range(data.draw(st.integers(1, 12), label="steps")):
        now += 1
        to = data.draw(st.sampled_from(sorted(statuses)), label="to")
        before = dict(vars(record))
        if to in lifecycle.moves[record.status]:
            lifecycle.move(record, to, now)
            been.add(to)
            assert (record.status, record.updated_at) == (to, now)
            if to in lifecycle.announce:
                assert record.announcements[-1] == lifecycle.announce[to]
            if lifecycle is PAY and before["paid_at"] is not None:
                assert record.paid_at == before["paid_at"]  # paid once: the first time stays
        else:
            with pytest.raises(IllegalMove):
                lifecycle.move(record, to, now)
            assert vars(record) == before
        keys_in_step(lifecycle, record, been)
