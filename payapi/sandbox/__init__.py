"""A local Ping++ for development, tests and the benchmark: `python -m payapi sandbox`.

The real `pingpp` SDK talks to it over HTTP (`PINGPP_API_BASE`); it signs and delivers webhooks
with its own key pair; its controls (Python methods, `/_sandbox/` JSON and page, commands) play
the payer, Alipay and Ping++'s back office, and inject faults. Never imported by the service.

- `core`: charges, refunds and transfers and Ping++'s rules for them
- `webhooks`: the key pair, signed events, delivery with retries
- `service`: `Sandbox`, the HTTP server (Ping++ API + controls), fault injection
- `page`: the HTML page; `cli`: the commands
"""

from .service import Sandbox

__all__ = ["Sandbox"]
