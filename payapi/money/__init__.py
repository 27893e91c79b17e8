"""The money: every movement is balanced postings in the same transaction as its cause.

payments        pay records, charge creation, the phone's reports, applying charges, reversals, the hold
refunds         refunds: asked for by the order service, duplicate payments, made elsewhere
withdrawals     withdrawals, monthly payouts, transfer outcomes
wallet          what each money movement posts; experts' balances
books           the double-entry books: journal entries, the trial balance, the self-check
events          Ping++ webhook events: stored by id, applied once
reconciliation  the daily comparison with Ping++'s lists

Inside, the order is events, reconciliation > withdrawals > payments > refunds > wallet > books.
May import: users, infra, contract, domain. No provider call under a database lock.
"""
