"""What gunicorn loads: the real collaborators, built from the environment."""

import logging

from payapi import startup
from payapi.app import create_app
from payapi.infra import health
from payapi.infra.db import bind, open_database
from payapi.infra.gateway import PingppGateway
from payapi.users.sms import make_backend

log = logging.getLogger(__name__)


def gateway_from(settings):
    return PingppGateway(
        api_key=settings.pingpp_api_key,
        app_id=settings.pingpp_app_id,
        api_base=settings.pingpp_api_base,
        private_key=settings.pingpp_private_key,
        private_key_path=settings.pingpp_private_key_path,
        public_key=settings.pingpp_public_key,
        public_key_path=settings.pingpp_public_key_path,
        timeout=settings.pingpp_timeout,
        on_error=health.note_pingpp_error,
    )


def get_app(settings=None):
    if settings is None:
        if startup.checked:  # by the gunicorn master this worker was forked from
            settings = startup.settings_for("web", startup.SERVE, startup.GUNICORN_WORKER_BOOT_ERROR)
        else:
            # Without gunicorn.conf.py: a worker that refuses must stop gunicorn, not be respawned.
            settings = startup.check_serving("web", startup.GUNICORN_WORKER_BOOT_ERROR)
    bind(open_database(settings.database_url))
    return create_app(settings, gateway_from(settings), make_backend(settings))


app = None


def __getattr__(name):
    # `gunicorn payapi.wsgi:application` builds the app on first access, not on import.
    global app
    if name == "application":
        if app is None:
            app = get_app()
        return app
    raise AttributeError(name)
