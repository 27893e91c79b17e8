"""Logging: one JSON object per line on stderr, for every logger, gunicorn's own included.

Nothing secret is ever passed to a logger: no bodies, no headers, no tokens, codes or hashes.
"""

import datetime
import logging
import os
import sys

import msgspec

# Anything a field holds that JSON has no type for (an enum, a Decimal, an exception) as its str().
_encode = msgspec.json.Encoder(enc_hook=str).encode


class JsonLines(logging.Formatter):
    """One JSON object per line. It runs once per request (the access line), so it is kept cheap:
    msgspec encodes, and the timestamp's text is made once per second."""

    _second, _second_text = None, ""

    def _timestamp(self, created):
        second = int(created)
        if second != self._second:
            stamp = datetime.datetime.fromtimestamp(second, datetime.UTC).isoformat()  # ...T12:00:00+00:00
            self._second, self._second_text = second, stamp[:-6]
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record):
        line = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def level():
    return os.environ.get("LOG_LEVEL", "INFO").upper()


def _lean_records():
    # What JsonLines writes needs no caller (file, line: a stack walk per record), thread or
    # process name: not collecting them is the logging module's own documented optimisation, and
    # the access line is written on every request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


def configure():
    _lean_records()
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonLines) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLines())
        root.addHandler(handler)
    root.setLevel(level())
    _quiet_libraries()
    # Python's warnings and an uncaught exception would otherwise print plain text.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _quiet_libraries():
    # The SDK logs request bodies at debug level; they carry account ids and names.
    logging.getLogger("pingpp").setLevel(logging.WARNING)


def _log_uncaught(exc_type, exc, tb):
    if issubclass(exc_type, KeyboardInterrupt):
        return sys.__excepthook__(exc_type, exc, tb)
    logging.getLogger("payapi").critical("uncaught %s", exc_type.__name__, exc_info=(exc_type, exc, tb))


def gunicorn_logconfig():
    """gunicorn's `logconfig_dict`: its own lines (boot, workers, signals) through JsonLines too.

    gunicorn's access log stays off (level WARNING): payapi.request already writes one line
    per request, and two would double every count an operator makes.
    """
    _lean_records()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "payapi.infra.logs.JsonLines"}},
        "handlers": {
            "json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "root": {"level": level(), "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            "pingpp": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }
