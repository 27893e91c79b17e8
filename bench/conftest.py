"""The benchmarks' fixtures are the test suite's: databases (SQLite and MariaDB through pytest-mysql,
`--db`), the Ping++ sandbox, the app and its users. Run a benchmark file on its own,
`pytest bench/test_hot_path.py`, not together with tests/ (both would add `--db`)."""

from tests.conftest import *  # noqa: F403  (the fixtures)
from tests.conftest import _mariadb_server, pytest_addoption, pytest_generate_tests  # noqa: F401
