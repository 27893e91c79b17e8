"""The notification dispatcher alone, for bench/run.py: `python -m bench.dispatch SECONDS`.

What `python -m payapi worker` runs in its dispatcher thread (payapi.infra.outbox.Dispatcher,
same settings and checks), without the worker's minute pass, so its throughput is measured on its
own: it delivers what is due to NOTIFY_URL for SECONDS, then stops.
"""

import sys
import threading

from payapi import startup
from payapi.infra import logs, outbox
from payapi.infra.db import bind, open_database


def main(seconds):
    settings = startup.settings_for("worker", startup.SERVE)
    logs.configure()
    bind(open_database(settings.database_url))
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    outbox.Dispatcher(settings.notify_url, settings.notify_secret).run_forever(stop)


if __name__ == "__main__":
    main(float(sys.argv[1]))
