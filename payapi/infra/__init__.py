"""What the services stand on: storage, the outbox, the provider, the process's plumbing.

config       settings read from the environment
db           the database proxy, retried write transactions, read-only fast rows
models       the tables (imports only db)
outbox       outbox.save(record): the one way a pay, refund or withdrawal is saved (its stored
             JSON and its announced moves, in the caller's transaction); the Standard Webhooks dispatcher
idempotency  Idempotency-Key
jobs         worker passes: due ids read first, one item at a time, bad items set aside
gateway      Ping++: the Gateway Protocol, its dataclasses, and the only module that imports pingpp
metrics      /metrics (prometheus-client, multiprocess under gunicorn)
logs         one JSON object per log line

Inside, the order is outbox, idempotency, jobs, metrics > models > db; gateway, config and logs
stand alone. May import: contract, domain.
"""
