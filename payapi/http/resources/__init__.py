"""One Falcon resource per documented route, by route block. They do HTTP only: read, call the
domain, answer.

phone     /rest/pay/... (the phone's routes)        internal  /internal/... (the order service)
webhooks  /rest/pay/webhook (Ping++)                 ops       /ops/api/... (operators' scripts)
service   /healthz, /metrics, /openapi.json          common    what they share

Each responder declares its operation (`@operation`): the request shape it takes (decoded before
it runs, 904 naming the field otherwise), the answer it gives, and the errors it may meet. The
OpenAPI document is built from these declarations.
"""
