"""Logging: one JSON object per line on stderr, for every logger.

Nothing secret is ever passed to a logger: no bodies, no headers, no tokens, codes or hashes.
"""

import datetime
import json
import logging
import os


class JsonLines(logging.Formatter):
    def format(self, record):
        line = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure():
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonLines) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLines())
        root.addHandler(handler)
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    # The SDK logs request bodies at debug level; they carry account ids and names.
    logging.getLogger("pingpp").setLevel(logging.WARNING)
