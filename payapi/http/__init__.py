"""HTTP: everything that knows falcon (and jinja2, gunicorn).

middleware   request ids and the JSON access log, header auth, the one error envelope
auth         the `auth` header's JWTs
body         reading request bodies, bounded
operation    `@operation`: a responder's declaration; decodes its body and query, runs it idempotently
openapi      the OpenAPI document, from the route table, the declarations and the shapes
resources    one falcon resource per route: read the request, call a service, set the answer
console      the operators' console at /ops (Jinja2 pages in templates/, CSRF, its stylesheet)
serving      the gunicorn worker class (requests read to their end before a thread sees them)

May import: backoffice, money, users, infra, contract, domain. Imported by: the entry points.
"""
