"""What gunicorn loads: the real collaborators, built from the environment."""

import logging

from . import logs
from .config import DEVELOPMENT_SECRET, Settings
from .db import bind, open_database
from .gateway import PingppGateway
from .sms import make_backend
from .app import create_app

log = logging.getLogger(__name__)


def gateway_from(settings):
    return PingppGateway(
        api_key=settings.pingpp_api_key,
        app_id=settings.pingpp_app_id,
        api_base=settings.pingpp_api_base,
        private_key_path=settings.pingpp_private_key_path,
        public_key_path=settings.pingpp_public_key_path,
        timeout=settings.pingpp_timeout,
    )


def get_app(settings=None):
    logs.configure()
    settings = settings or Settings.from_env()
    if settings.uses_development_secret:
        log.warning(
            "AUTH_SECRET is not set: tokens are verified with the public development secret %r. "
            "Never run production like this.",
            DEVELOPMENT_SECRET,
        )
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
