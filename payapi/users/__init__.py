"""A user's own secrets.

security   pay password, security answers, withdraw account, lockouts; bcrypt shared fairly
sms        SMS codes (hashed, rate-limited, single use) and the console / file backends

security imports sms, not the other way. May import: infra, contract, domain.
"""
