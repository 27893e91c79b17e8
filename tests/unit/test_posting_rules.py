"""The money rules that are plain arithmetic (payapi/wallet.py, payapi/books.py), as properties over
any amounts: the fee and the expert's credit make the pay, refund shares add up to the credit, a
failed refund gives back what the refunds standing no longer take. The entries they post are
checked on real databases by every API test (the books' self-check ends each one)."""

import types

import hypothesis
from hypothesis import strategies as st

from payapi.money import books, wallet

MONEY = st.integers(1, 100_000_000)  # fen: up to a million yuan
FEE_BPS = st.integers(0, 10_000)


@hypothesis.given(money=MONEY, fee_bps=FEE_BPS)
def test_fee_and_credit_add_up_to_the_pay_and_the_odd_fen_goes_to_the_expert(money, fee_bps):
    credited = wallet.credit_for(money, fee_bps)
    fee = money - credited
    assert 0 <= fee <= credited + fee == money
    assert fee == money * fee_bps // 10_000  # the fee rounds down ...
    assert credited * 10_000 >= money * (10_000 - fee_bps) > (credited - 1) * 10_000  # ... the credit up


def a_pay(money, fee_bps):
    return types.SimpleNamespace(money=money, credited=wallet.credit_for(money, fee_bps), amount_refunded=0)


@st.composite
def refunds_of_a_whole_pay(draw):
    """(money, fee_bps, amounts): a pay and refunds that together refund all of it."""
    money = draw(st.integers(1, 1_000_000))
    cuts = sorted(set(draw(st.lists(st.integers(1, money - 1), max_size=20)))) if money > 1 else []
    return money, draw(FEE_BPS), [b - a for a, b in zip([0, *cuts], [*cuts, money], strict=True)]


@hypothesis.given(refunds_of_a_whole_pay())
def test_refund_shares_add_up_to_the_credit_and_fee_shares_to_the_fee(case):
    money, fee_bps, amounts = case
    pay = a_pay(money, fee_bps)
    shares = []
    for amount in amounts:
        share = wallet.refund_share(pay, amount)
        assert 0 <= share <= amount  # neither the expert's nor the fee's part is ever negative
        shares.append(share)
        pay.amount_refunded += amount
    assert sum(shares) == pay.credited
    assert sum(amount - share for amount, share in zip(amounts, shares, strict=True)) == money - pay.credited


@hypothesis.given(money=MONEY, fee_bps=FEE_BPS, data=st.data())
def test_the_last_refund_failing_gives_back_exactly_what_it_took(money, fee_bps, data):
    pay = a_pay(money, fee_bps)
    pay.amount_refunded = data.draw(st.integers(0, money - 1), label="refunded before")
    amount = data.draw(st.integers(1, money - pay.amount_refunded), label="amount")
    taken = wallet.refund_share(pay, amount)
    pay.amount_refunded += amount
    assert wallet.returned_share(pay, amount) == taken


@hypothesis.given(
    money=st.integers(1, 10_000),
    fee_bps=st.integers(0, 10_000),
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


@hypothesis.given(
    user_id=st.from_regex(r"[0-9a-f]{24}", fullmatch=True), bucket=st.sampled_from([books.PENDING, books.AVAILABLE])
)
def test_an_expert_account_names_its_expert_and_bucket(user_id, bucket):
    assert books.expert_of(books.expert(user_id, bucket)) == (user_id, bucket)


def test_the_platform_accounts_belong_to_no_expert():
    for account in (books.PINGPP, books.FEES, books.PAYOUTS, books.REFUNDS):
        assert books.expert_of(account) is None
