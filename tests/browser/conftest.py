"""The browser tier runs the operators' console in chromium against the live tier's real gunicorn,
with the API tier's experts and withdrawals."""

from tests.api.conftest import expert, make_user, order_service, pay_expert, pending, send_event, user  # noqa: F401
from tests.live.conftest import live, server  # noqa: F401  (the fixtures)
