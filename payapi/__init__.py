"""payapi: the payment module of a consultation app (Ping++ charges, experts' wallets, withdrawals).

The folders are the layers. Each imports only the layers below it (function-level imports
included; pyproject.toml's import-linter contracts, run by .ci/run, keep it so):

    entry points   __main__ (the commands), wsgi (what gunicorn loads), worker, dev,
                   app (create_app and the one route table), startup (what a process refuses to run with)
    http/          falcon: middleware, auth, body reading, @operation, the OpenAPI document,
                   the resources (one class per route), the console and its templates, the gunicorn worker class
    backoffice/    operators (accounts, sessions, the audit trail) and their actions
    money/         payments, refunds, withdrawals, wallet and books, Ping++ events, reconciliation
    users/         a user's secrets (pay password, security answers, lockouts) and SMS codes
    infra/         config, db and models, the outbox, idempotency keys, worker jobs, the Ping++ gateway
                   (the one module that imports pingpp), metrics, logs
    contract/      the wire: shapes (msgspec Structs), patterns (their regexes), render (records as
                   answers), errors (codes and ApiError)
    domain/        pure: lifecycle tables, clock (the natural month), ids

sandbox/ is a local Ping++ for dev, the tests and the benchmark: it imports nothing of payapi.
This file imports nothing, so importing payapi.sandbox loads only the sandbox.
"""
