"""The live tier's fixtures: a real gunicorn (several worker processes) per test module, on the
test database and the Ping++ sandbox; see tests/support/live_server.py. A test that also sets up
users through the app in-process uses the API tier's `make_user` and `pay_expert`."""

import pytest

from tests.api.conftest import make_user, pay_expert  # noqa: F401  (the fixtures)
from tests.support import databases
from tests.support.live_server import LiveServer


@pytest.fixture(scope="module")
def live(request, database_url, fake_pingpp_server, pingpp_keys, tmp_path_factory):
    """The test module's own real gunicorn on the test database, as tests/support/live_server.py starts
    it; LIVE_SERVER in the module gives its options (workers, worker_connections, environment)."""
    databases.migrated(database_url)  # the real migrations, before any worker opens the database
    options = getattr(request.module, "LIVE_SERVER", {})
    server = LiveServer(
        tmp_path_factory.mktemp("gunicorn"), database_url, fake_pingpp_server.url, pingpp_keys[1], **options
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(live, database, fake_pingpp):
    """The running gunicorn, a clean database bound in this process too, a reset Ping++ sandbox;
    afterwards, nothing it logged was a traceback."""
    yield live
    assert "Traceback" not in live.log(), live.log()[-4000:]
