"""Text on MySQL: utf8mb4 everywhere, compared byte for byte, on any database default.

A later migration that forgets (a table in latin1, a `_ci` collation) fails here, on MariaDB.
"""

import ast
import dataclasses
import json
import os
import subprocess
import sys

import pymysql
import pytest
import webtest
from peewee_migrate import Router

from payapi.__main__ import MIGRATIONS
from payapi.app import create_app
from payapi.domain.ids import new_id
from payapi.infra.db import BINARY_COLLATIONS, bind, db, open_database
from payapi.infra.models import Event, JournalEntry
from payapi.users.sms import FileSms
from payapi.wsgi import gateway_from
from tests.support.config import SERVICE_KEY, process_env
from tests.support.databases import assert_books_balance
from tests.support.live_server import free_port, run_gunicorn
from tests.support.pingpp import event, sign
from tests.support.scenarios import pay_request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMOJI_SUBJECT = "预约😀咨询"
# MariaDB's binary NO PAD collation: 'abc' and 'abc ' differ too (utf8mb4_bin pads).
MARIADB_COLLATION = "utf8mb4_nopad_bin"


def test_no_migration_imports_the_application():
    for name in sorted(os.listdir(MIGRATIONS)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(MIGRATIONS, name), encoding="utf-8").read())
        imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names] + [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ]
        assert not [m for m in imported if m.split(".")[0] == "payapi"], f"{name} imports application code"


def test_the_collation_lists_of_the_app_and_the_migration_agree():
    tree = ast.parse(open(os.path.join(MIGRATIONS, "003_utf8mb4_bin.py"), encoding="utf-8").read())
    (value,) = [n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "BINARY_COLLATIONS"]
    assert ast.literal_eval(value) == BINARY_COLLATIONS


@pytest.mark.only_db("mariadb")
def test_every_table_and_text_column_is_utf8mb4_binary_after_migrating(database):
    assert db.execute_sql("SELECT @@character_set_database, @@collation_database").fetchone() == (
        "utf8mb4",
        MARIADB_COLLATION,
    )
    tables = db.execute_sql(
        "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
    ).fetchall()
    assert len(tables) >= 10  # nine models and peewee-migrate's history
    assert [t for t in tables if t[1] != MARIADB_COLLATION] == []
    columns = db.execute_sql(
        "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND CHARACTER_SET_NAME IS NOT NULL"
    ).fetchall()
    assert len(columns) > 50
    assert [c for c in columns if c[2:] != ("utf8mb4", MARIADB_COLLATION)] == []


# --- a database created with a narrow default ------------------------------------------------


def narrow_database_url(request, charset):
    """A fresh, empty database whose default character set is charset, on the test MariaDB."""
    proc = request.getfixturevalue("mariadb_proc")
    name = f"payapi_{charset}_{new_id()[-8:]}"
    admin = pymysql.connect(unix_socket=proc.unixsocket, user="root")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET {charset}")
    admin.close()
    return request.getfixturevalue("mariadb_url").rsplit("/", 1)[0] + "/" + name


def run(command, settings, *args):
    return subprocess.run(
        [sys.executable, "-m", "payapi", command, *args],
        cwd=ROOT,
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def bound_to(settings):
    """Bind the process to another database for one test; the suite's binding comes back after."""
    before = db.obj

    def bind_to(url):
        bind(open_database(url))
        db.connect(reuse_if_open=True)
        return dataclasses.replace(settings, database_url=url)

    yield bind_to
    if db.obj is not before:
        db.close()
    db.initialize(before)


@pytest.mark.only_db("mariadb")
@pytest.mark.parametrize("charset", ["latin1", "utf8mb3"])
def test_emoji_and_chinese_round_trip_on_a_database_created_with_a_narrow_default(
    request, charset, settings, bound_to, fake_pingpp, pingpp_keys
):
    url = narrow_database_url(request, charset)
    settings = dataclasses.replace(settings, database_url=url)
    migrated = run("migrate", settings)
    assert migrated.returncode == 0, migrated.stderr
    bound_to(url)
    app = webtest.TestApp(create_app(settings, gateway_from(settings), FileSms(settings.sms_file)))

    created = app.post(
        "/internal/pays",
        json.dumps(pay_request(subject=EMOJI_SUBJECT, desc="小纸条 🐼 𠀀")).encode(),
        headers={"X-Service-Key": SERVICE_KEY},
        content_type="application/json",
    )
    assert created.json["code"] == 900 and created.json["info"]["subject"] == EMOJI_SUBJECT
    info = created.json["info"]
    charge = fake_pingpp.mark_paid(info["charge"]["id"])
    charge["metadata"] = {"note": "会员 👍🏽 续费", "rare": "𠀀𪚥"}
    raw = json.dumps(event("charge.succeeded", charge), ensure_ascii=False).encode()
    delivered = app.post(
        "/rest/pay/webhook",
        raw,
        headers={"X-Pingplusplus-Signature": sign(pingpp_keys[0], raw)},
        content_type="application/json",
    )
    assert delivered.json["result"] == "applied"

    again = app.get(f"/internal/pays/{info['pay_id']}", headers={"X-Service-Key": SERVICE_KEY}).json["info"]
    assert (again["subject"], again["desc"], again["status"]) == (EMOJI_SUBJECT, "小纸条 🐼 𠀀", "paid")
    assert again["charge"]["metadata"]["note"] == "会员 👍🏽 续费"
    stored = Event.get(Event.object_id == charge["id"])
    assert json.loads(stored.payload)["data"]["object"]["metadata"]["rare"] == "𠀀𪚥"
    assert_books_balance()

    # Ids that differ only in case or a trailing space are different ids.
    def deliver(event_id):
        body = json.dumps(event("summary.daily.available", {"id": "sum_1"}, event_id)).encode()
        answer = app.post(
            "/rest/pay/webhook",
            body,
            headers={"X-Pingplusplus-Signature": sign(pingpp_keys[0], body)},
            content_type="application/json",
        )
        return answer.json["result"]

    assert [deliver(i) for i in ("evt_CaseCheck", "evt_casecheck", "evt_casecheck ", "evt_casecheck")] == [
        "ignored",
        "ignored",
        "ignored",
        "replay",
    ]
    # The books' unique (kind, reference) key: three references, three entries.
    for reference in ("ch_Ref", "ch_ref", "ch_ref "):
        JournalEntry.create(kind="charge", reference=reference, created_at=0)
    assert JournalEntry.select().where(JournalEntry.reference.startswith("ch_")).count() == 3


def narrow_refusal(output):
    (line,) = [json.loads(line) for line in output.splitlines() if '"CRITICAL"' in line]
    assert "cannot hold 4-byte characters" in line["msg"] and "pay (utf8mb3)" in line["msg"], line
    assert "python -m payapi migrate" in line["msg"]


@pytest.mark.only_db("mariadb")
def test_web_and_worker_refuse_tables_that_cannot_hold_four_byte_characters(request, settings, bound_to, tmp_path):
    url = narrow_database_url(request, "utf8mb3")
    bound_to(url)
    Router(db.obj, migrate_dir=MIGRATIONS).run("002_pay_info")  # as before 003 existed
    narrow = dataclasses.replace(settings, database_url=url)
    done = run("worker", narrow, "--once")
    assert done.returncode == 1 and done.stdout == ""
    narrow_refusal(done.stderr)
    env = process_env(narrow, PORT=free_port(), WEB_CONCURRENCY=1, HOME=tmp_path)
    code, out = run_gunicorn(["-c", "gunicorn.conf.py", "--no-control-socket"], env, ROOT)
    assert code != 0 and "Booting worker" not in out
    narrow_refusal(out)

    Router(db.obj, migrate_dir=MIGRATIONS).run()
    assert run("worker", narrow, "--once").returncode == 0
