"""A private MariaDB server on 127.0.0.1, for the tests and for the benchmark.

Both start it with pytest-mysql's executor and the binaries pytest.ini names: the tests through
pytest-mysql's fixture (conftest.py), the benchmark, which is not pytest, through `start`.
"""

import configparser
from pathlib import Path

import pymysql
from pytest_mysql.executor import MySQLExecutor

ROOT = Path(__file__).resolve().parent.parent.parent


def start(base_directory, port, params):
    """mariadbd (under mysqld_safe) in a fresh data directory below base_directory; stop() stops it."""
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    binaries = ini["pytest"]
    base_directory = Path(base_directory)
    base_directory.mkdir(parents=True, exist_ok=True)
    return MySQLExecutor(
        mysqld_safe=binaries["mysql_mysqld_safe"],
        mysqld=binaries["mysql_mysqld"],
        admin_exec=binaries["mysql_admin"],
        install_db=binaries["mysql_install_db"],
        logfile_path=str(base_directory / "mariadb.log"),
        base_directory=base_directory,
        params=params,
        user="root",
        host="127.0.0.1",
        port=port,
    ).start()


def create_database(server, name):
    """A utf8mb4 database and the `payapi` user on the server (a pytest-mysql executor); -> its URL."""
    root = pymysql.connect(unix_socket=server.unixsocket, user="root")
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4")
        cur.execute("CREATE USER IF NOT EXISTS 'payapi'@'127.0.0.1' IDENTIFIED BY 'payapi'")
        cur.execute("GRANT ALL ON *.* TO 'payapi'@'127.0.0.1'")
    root.close()
    return f"mysql://payapi:payapi@127.0.0.1:{server.port}/{name}"


def version(server):
    root = pymysql.connect(unix_socket=server.unixsocket, user="root")
    with root.cursor() as cur:
        cur.execute("SELECT VERSION()")
        (text,) = cur.fetchone()
    root.close()
    return text
