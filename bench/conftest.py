"""The benchmarks' fixtures are the test suite's: databases (SQLite and MariaDB through pytest-mysql,
`--db`), the Ping++ sandbox, the app and its users (tests/conftest.py and tests/api/conftest.py, loaded as plugins; the
helpers come from tests.support). Run a benchmark file on its own, `pytest bench/test_hot_path.py`,
not together with tests/ (both would add `--db`)."""

pytest_plugins = ["tests.conftest", "tests.api.conftest"]
