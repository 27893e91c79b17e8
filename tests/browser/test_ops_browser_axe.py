"""Every console page, readable by anyone (WCAG 2.1 AA), in the real browser (Debian's chromium, as
tests/test_ops_browser.py drives it): axe-core (the copy axe-selenium-python ships, nothing downloaded)
finds no serious or critical violation; at 390 px wide the key columns (amount, status, error) are on
screen without scrolling sideways; with JavaScript off every page still works."""

import json

import pytest
from axe_selenium_python import Axe
from selenium.webdriver.common.by import By

from payapi.backoffice import actions as ops
from payapi.backoffice import operators
from payapi.infra.models import Notification, Refund
from tests.browser.test_ops_browser import chromium, log_in, server  # noqa: F401 - server is the live-gunicorn fixture
from tests.support.config import SERVICE_KEY
from tests.support.operators import OPERATOR_PASSWORD
from tests.support.scenarios import set_up_expert, withdraw

BAD = ("serious", "critical")


class Who:
    name = "alice"


@pytest.fixture
def data(app, make_user, pay_expert, fake_pingpp, gateway):
    """Something on every page: an expert with a pay (refunded: one pending, one failed), a stuck withdrawal, a
    notification failing now, a refused action in the audit trail."""
    expert = set_up_expert(make_user())
    pay = pay_expert(expert.id, 12_356)
    for amount in (1_000, 2_000):
        app.post(
            f"/internal/pays/{pay['pay_id']}/refunds",
            json.dumps({"amount": amount, "description": "退"}).encode(),
            headers={"X-Service-Key": SERVICE_KEY},
            content_type="application/json",
        )
    Refund.update(status="failed", last_error="Ping++: 余额不足").where(Refund.amount == 2_000).execute()
    withdraw_id = withdraw(expert, 5_000).json["withdraw_id"]
    message = Notification.select().first()
    Notification.update(
        attempts=1, last_status=503, last_error="503 Service Unavailable", next_attempt_at=message.created_at + 5_000
    ).execute()
    fake_pingpp.fail_next()
    ops.retry_withdrawal(gateway, withdraw_id, Who(), "再试")  # Ping++ fails: the withdrawal's last error
    operators.audit_refused(
        Who(),
        ops.FAIL,
        withdraw_id,
        "卡住了",
        {"status": "processing"},
        {"status": "processing"},
        "Ping++ 显示转账 tr_1 仍在处理中（pending），不能置为失败",
    )
    return expert, pay["pay_id"], withdraw_id


def pages(expert, pay_id, withdraw_id):
    return [
        "/ops",
        f"/ops?q={expert.id}&status=pending",
        f"/ops/withdrawals/{withdraw_id}",
        f"/ops/experts/{expert.id}",
        "/ops/pays",
        f"/ops/pays?q={expert.id}",
        f"/ops/pays/{pay_id}",
        "/ops/notifications",
        "/ops/books",
        "/ops/audit",
        "/ops/stats",
        "/ops/health",
        "/ops/experts/" + "f" * 24,
    ]


def violations(driver):
    axe = Axe(driver)
    axe.inject()
    found = axe.run()["violations"]
    return [v for v in found if v["impact"] in BAD], axe


@pytest.mark.only_db("sqlite")
def test_every_page_has_no_serious_accessibility_violation(server, data, settings, tmp_path):  # noqa: F811
    operators.add("alice", OPERATOR_PASSWORD, settings.bcrypt_rounds)
    driver = chromium(tmp_path / "chromium-profile-axe")
    try:
        driver.get(server.url + "/ops/login")
        bad, axe = violations(driver)
        assert bad == [], axe.report(bad)
        log_in(driver, server.url)
        for path in pages(*data):
            driver.get(server.url + path)
            assert driver.find_element(By.TAG_NAME, "h1").text, path
            bad, axe = violations(driver)
            assert bad == [], f"{path}: {axe.report(bad)}"
    finally:
        driver.quit()


@pytest.mark.only_db("sqlite")
def test_key_columns_fit_a_390_px_screen(server, data, settings, tmp_path):  # noqa: F811
    operators.add("alice", OPERATOR_PASSWORD, settings.bcrypt_rounds)
    driver = chromium(tmp_path / "chromium-profile-narrow")
    try:
        log_in(driver, server.url)
        driver.set_window_size(390, 844)
        width = driver.execute_script("return window.innerWidth")
        assert width <= 390
        checked = 0
        for path in pages(*data):
            driver.get(server.url + path)
            driver.save_screenshot(str(tmp_path / (path.strip("/").replace("/", "-").replace("?", "_") + ".png")))
            for cell in driver.find_elements(By.CSS_SELECTOR, "td.key"):
                box = driver.execute_script(
                    "const r = arguments[0].getBoundingClientRect(); return [r.left, r.right, r.width];", cell
                )
                assert cell.is_displayed() and box[0] >= 0 and box[1] <= width + 0.5, (path, cell.text, box, width)
                checked += 1
            scroll = driver.execute_script("return document.documentElement.scrollWidth")
            assert scroll <= width, (path, scroll, width)  # nothing wider than the screen
        assert checked >= 10  # amounts, statuses and errors of withdrawals, pays, refunds, notifications
    finally:
        driver.quit()


@pytest.mark.only_db("sqlite")
def test_every_page_works_with_javascript_off(server, data, settings, tmp_path):  # noqa: F811
    expert, pay_id, withdraw_id = data
    operators.add("alice", OPERATOR_PASSWORD, settings.bcrypt_rounds)
    driver = chromium(tmp_path / "chromium-profile-nojs-all", javascript=False)
    try:
        log_in(driver, server.url)
        for path in pages(*data):
            driver.get(server.url + path)
            assert driver.find_element(By.TAG_NAME, "h1").text, path
            assert driver.find_element(By.ID, "health-link").get_attribute("href").endswith("/ops/health")
        # The search is a plain form.
        driver.get(server.url + "/ops")
        driver.find_element(By.ID, "wq").send_keys(expert.id)
        old = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.ID, "wsearch").click()
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 20).until(expected_conditions.staleness_of(old))
        assert withdraw_id in driver.find_element(By.TAG_NAME, "main").text
    finally:
        driver.quit()
