"""`python -m payapi dev` as a newcomer runs it: the walkthrough (docs/walkthrough.md), pasted block by
block into bash, gives the answers it promises; Ctrl-C or SIGTERM leaves no process behind."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
STARTUP_TIMEOUT = 120  # seconds: migrate, a key pair, gunicorn and the worker on two busy cores


def walkthrough_blocks():
    """The ```sh blocks between the walkthrough's markers, in order."""
    text = (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8")
    section = text.split("<!-- walkthrough")[1].split("<!-- /walkthrough -->")[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)


def free_port_pair():
    """A port whose next one is free too (the sandbox listens on PORT+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535 and all(_free(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no two adjacent free ports")


def _free(port):
    """Nothing listens there (connections closing in TIME_WAIT do not count, as for the servers)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def descendants(pid):
    """Every live process below pid, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Dev:
    """`python -m payapi dev` in a temp dir, in its own process group (as a terminal's foreground job)."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.port = free_port_pair()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        # The walkthrough says `python`: this interpreter. A script, not a symlink: a symlink to a venv's
        # python outside the venv's bin/ loses the venv (and its packages) on Python 3.11+.
        (self.bin / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (self.bin / "python").chmod(0o755)
        # Without PYTHONUNBUFFERED (set on some CI machines and shells): dev's terminal is a file here,
        # and what it prints (the banner) must reach it while dev runs, not when it exits.
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PINGPP_", "DATABASE_URL", "PAYAPI_", "PYTHONUNBUFFERED"))
        }
        self.env.update(PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT), PORT=str(self.port))
        self.output = tmp_path / "dev-terminal.txt"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "payapi", "dev", "--worker-interval", "1"],
            cwd=tmp_path,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=open(self.output, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def terminal(self):
        return self.output.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text, timeout=STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while text not in self.terminal():
            assert self.proc.poll() is None, f"dev exited with {self.proc.returncode}:\n{self.terminal()[-4000:]}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.terminal()[-4000:]}"
            time.sleep(0.2)

    def interrupt(self, sig):
        """The signal a terminal sends its foreground job; returns dev's exit status and its former children."""
        children = descendants(self.proc.pid)
        os.killpg(self.proc.pid, sig)
        try:
            status = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return status, children

    def kill(self):
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def dev(tmp_path):
    started = Dev(tmp_path)
    yield started
    if started.proc.poll() is None:
        started.kill()


def run_blocks(dev, blocks):
    """All blocks in one bash (variables carry over, `set -e`), each step's output cut out by markers."""
    script = "set -euo pipefail\n" + "".join(f"printf '\\n@@step {i}@@\\n'\n{block}" for i, block in enumerate(blocks))
    done = subprocess.run(["bash", "-c", script], cwd=dev.dir, env=dev.env, capture_output=True, text=True, timeout=300)
    parts = re.split(r"\n@@step \d+@@\n", "\n" + done.stdout)[1:]
    assert done.returncode == 0 and len(parts) == len(blocks), (
        f"walkthrough stopped at step {len(parts) - 1} (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
        f"{done.stderr[-3000:]}\n--- dev terminal ---\n{dev.terminal()[-4000:]}"
    )
    return parts


def answers(output):
    """The JSON answers a step printed, in order."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def check_setup(out):
    assert out.strip() == ""


def check_pay_created(out):
    (pay,) = answers(out)
    assert pay["code"] == 900 and pay["info"]["status"] == "pending" and pay["info"]["amount"] == 12356
    assert pay["info"]["charge"]["id"].startswith("ch_") and pay["info"]["charge"]["paid"] is False


def check_paid_in_sandbox(out):
    assert re.search(r"^charge ch_\w+ \(order_no [0-9a-f]{24}, 123\.56 yuan\) paid$", out, re.M), out
    assert re.search(
        r"^charge\.succeeded evt_\w+ delivered to http://127\.0\.0\.1:\d+/rest/pay/webhook: HTTP 200 "
        r'\{"code": ?900, ?"result": ?"applied"\}$',
        out,
        re.M,
    ), out


def check_paid_and_credited(out):
    status, balance = answers(out)
    assert status == {"code": 900, "status": "paid", "client_status": "pending"}
    assert balance["code"] == 900 and balance["info"]["balance"] == 12356 and balance["info"]["can_withdraw"] is False


def check_password_and_answers(out):
    assert answers(out) == [{"code": 900}, {"code": 900}]


def check_sms_and_account(out):
    assert answers(out) == [{"code": 900}, {"code": 900}]


def check_withdrawal(out):
    (answer,) = answers(out)
    assert answer["code"] == 900 and re.fullmatch(r"[0-9a-f]{24}", answer["withdraw_id"])


def check_processing(out):
    (listed,) = answers(out)
    assert [(w["amount"], w["status"]) for w in listed["list"]] == [(10000, "processing")]
    assert listed["list"][0]["account"] == {"type": "alipay", "id": "expert@example.com", "name": "韩梅梅"}


def check_transfer_paid_in_sandbox(out):
    assert re.search(
        r"^transfer tr_\w+ \(order_no [0-9a-f]{24}, 100\.00 yuan to expert@example\.com\) paid$", out, re.M
    ), out
    assert re.search(
        r'^transfer\.succeeded evt_\w+ delivered to .*: HTTP 200 \{"code": ?900, ?"result": ?"applied"\}$', out, re.M
    ), out


def check_succeeded(out):
    listed, balance = answers(out)
    assert [(w["amount"], w["status"]) for w in listed["list"]] == [(10000, "succeeded")]
    assert balance["info"]["balance"] == 2356 and balance["info"]["next_withdraw_at"] is not None


def check_operator_sees_the_books(out):
    books, audit = answers(out)
    assert books["code"] == 900 and books["debits"] == books["credits"] == 12356 + 10000 + 10000
    assert {"pingpp", "payouts"} <= {a["account"] for a in books["accounts"]}
    assert audit == {"code": 900, "list": []}


STEPS = [
    check_setup,
    check_pay_created,
    check_paid_in_sandbox,
    check_paid_and_credited,
    check_password_and_answers,
    check_sms_and_account,
    check_withdrawal,
    check_processing,
    check_transfer_paid_in_sandbox,
    check_succeeded,
    check_operator_sees_the_books,
]


def test_the_readme_walkthrough_works_as_pasted_and_ctrl_c_stops_everything(dev):
    blocks = walkthrough_blocks()
    assert len(blocks) == len(STEPS), "the walkthrough and this test's checks differ in steps"
    dev.wait_for("Ctrl-C stops everything.")
    env_file = (dev.dir / "payapi-dev.env").read_text()
    assert f"export PAYAPI=http://127.0.0.1:{dev.port}\n" in env_file
    assert f"export PINGPP_API_BASE=http://127.0.0.1:{dev.port + 1}\n" in env_file
    assert "export SERVICE_KEY=dev\n" in env_file
    assert f"export OPS_URL=http://127.0.0.1:{dev.port}/ops/\n" in env_file and "export OPS_USER=dev\n" in env_file
    assert "operators' console" in dev.terminal()

    outputs = run_blocks(dev, blocks)
    for i, (check, out) in enumerate(zip(STEPS, outputs, strict=False)):
        try:
            check(out)
        except AssertionError as exc:
            raise AssertionError(f"walkthrough step {i} ({check.__name__}) answered:\n{out}") from exc
    # The code went through the Alibaba Cloud SDK to the SMS sandbox, which shows it to the developer.
    assert "[sms via aliyun to 13900139000]" in dev.terminal()

    status, children = dev.interrupt(signal.SIGINT)
    assert status == 0, dev.terminal()[-3000:]
    assert len(children) >= 5  # sandbox, gunicorn master and its 2 workers, the worker
    assert [pid for pid in children if alive(pid)] == []
    assert _free(dev.port) and _free(dev.port + 1)
    assert dev.terminal().rstrip().endswith("[dev] stopped.") and "Traceback" not in dev.terminal()


def test_sigterm_while_starting_stops_what_was_started(dev):
    dev.wait_for("starting web")
    status, children = dev.interrupt(signal.SIGTERM)
    assert status == 0, dev.terminal()[-3000:]
    assert children and [pid for pid in children if alive(pid)] == []
    assert _free(dev.port) and _free(dev.port + 1)
    assert "Traceback" not in dev.terminal() and "Ctrl-C stops everything." not in dev.terminal()


def test_dev_passes_the_environment_through_except_what_it_sets_and_the_walkthrough_says_which(monkeypatch, tmp_path):
    from payapi.dev import Dev as DevCommand

    passed = {
        "NOTIFY_URL": "http://127.0.0.1:9/hook",
        "NOTIFY_SECRET": "whsec_" + "a" * 32,
        "AUTH_SECRET": "s" * 32,
        "TIMEZONE": "UTC",
        "LOG_LEVEL": "DEBUG",
    }
    replaced = {
        "DATABASE_URL": "mysql://u:p@prod/db",
        "JAWSDB_URL": "mysql://u:p@jaws/db",
        "PAYAPI_ENV": "production",
        "PINGPP_API_KEY": "sk_live_x",
        "PINGPP_PRIVATE_KEY": "pem",
        "SMS_BACKEND": "tencent",
        "ALIYUN_ACCESS_KEY_SECRET": "a-real-account",
        "TENCENT_SECRET_KEY": "another",
    }
    for name, value in {**passed, **replaced}.items():
        monkeypatch.setenv(name, value)
    env = DevCommand(18000, 5, str(tmp_path)).environment()
    assert {name: env.get(name) for name in passed} == passed
    assert env["DATABASE_URL"].startswith("sqlite:///") and "JAWSDB_URL" not in env and "PINGPP_PRIVATE_KEY" not in env
    assert (env["PAYAPI_ENV"], env["PINGPP_API_KEY"], env["SMS_BACKEND"]) == (
        "development",
        "sk_test_payapi_dev",
        "aliyun",
    )
    assert env["ALIYUN_ACCESS_KEY_SECRET"] != "a-real-account" and "TENCENT_SECRET_KEY" not in env
    walkthrough = (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8")
    intro = walkthrough.split("## Walkthrough")[1].split("Paste these")[0]
    assert "NOTIFY_URL" in intro and "NOTIFY_SECRET" in intro and "nothing else is" not in intro
