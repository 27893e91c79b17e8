"""The money rules that are plain arithmetic (payapi/wallet.py, payapi/books.py), as properties over
any amounts."""

import types

import hypothesis
from hypothesis import strategies as st

from payapi import wallet


@hypothesis.given(
    money=st.integers(1, 10_000), fee_bps=st.integers(0, 10_000),
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 10_000)), max_size=12),
)
def test_shares_stay_within_each_refund_and_those_standing_take_exactly_their_pro_rata_part(money, fee_bps, steps):
    pay = types.SimpleNamespace(money=money, credited=wallet.credit_for(money, fee_bps), amount_refunded=0)
    standing, taken = [], 0
    for refund, n in steps:
        if refund and pay.amount_refunded < money:
            amount = 1 + n % (money - pay.amount_refunded)
            share = wallet.refund_share(pay, amount)
            standing.append(amount)
            pay.amount_refunded += amount
        elif not refund and standing:
            amount = standing.pop(n % len(standing))  # Ping++ fails any of them, in any order
            share = wallet.returned_share(pay, amount)
            pay.amount_refunded -= amount
            share = -share
        else:
            continue
        assert 0 <= abs(share) <= amount
        taken += share
        assert taken == pay.credited * pay.amount_refunded // money
    if pay.amount_refunded == money:
        assert taken == pay.credited
