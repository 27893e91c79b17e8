"""What operators are and do.

operators   operator accounts (bcrypt, lockout), console sessions, HTTP Basic logins, the audit trail
actions     what operators see and do: withdrawals in flight, pays with their history, failed
            notifications, daily volumes; retry / fail / resend, each audited in the same transaction

May import: money, users, infra, contract, domain. Never falcon: http/ turns these into pages and JSON.
"""
