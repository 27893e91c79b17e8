"""Logging: plain lines on stderr; request lines are already JSON."""

import logging
import os


def configure():
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    # The SDK logs request bodies at debug level; they carry account ids and names.
    logging.getLogger("pingpp").setLevel(logging.WARNING)
