"""The console in a real browser: Debian's chromium, driven by Selenium through chromedriver, against the
real gunicorn on 127.0.0.1. An operator logs in, opens every page, fails a withdrawal through its form
(the sandbox lists no transfer for it) and finds the audit entry. A screenshot of each page is saved
under the test's temporary directory. CI installs chromium and chromium-driver (.ci/run): this test is
never skipped for want of them."""

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from payapi.backoffice import operators
from tests.support.live_server import LiveServer
from tests.support.operators import OPERATOR_PASSWORD
from tests.support.scenarios import balance, set_up_expert, withdraw, withdrawal

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]


def chromium(profile_dir, javascript=True):
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def server(tmp_path, database_url, fake_pingpp, pingpp_keys, database):
    live = LiveServer(tmp_path, database_url, fake_pingpp.url, pingpp_keys[1], workers=2).start()
    yield live
    live.stop()


@pytest.fixture
def pending(make_user, pay_expert):
    expert = set_up_expert(make_user())
    pay_expert(expert.id, 12_356)
    withdraw_id = withdraw(expert, 10_000).json["withdraw_id"]
    return expert, withdraw_id


def submit(driver, element, then_url=None):
    """Click a submit button and wait for the next page (a click does not wait for the navigation)."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def replaced(_):
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # Chromium's answer while the old document is being torn down, instead of "stale".
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    WebDriverWait(driver, 20).until(replaced)
    if then_url is not None:
        WebDriverWait(driver, 20).until(expected_conditions.url_to_be(then_url))


def log_in(driver, url):
    driver.get(url + "/ops")
    assert driver.current_url == url + "/ops/login"  # no session: the login form
    driver.find_element(By.ID, "name").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(OPERATOR_PASSWORD)
    submit(driver, driver.find_element(By.ID, "login"))
    assert driver.current_url == url + "/ops", driver.page_source[:2000]
    assert driver.find_element(By.ID, "operator").text == "alice"


@pytest.mark.only_db("sqlite")
def test_an_operator_fails_a_withdrawal_in_a_real_browser(server, pending, settings, tmp_path):
    expert, withdraw_id = pending
    operators.add("alice", OPERATOR_PASSWORD, settings.bcrypt_rounds)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    driver = chromium(tmp_path / "chromium-profile")
    try:
        driver.get(server.url + "/ops/login")
        driver.save_screenshot(str(shots / "login.png"))
        log_in(driver, server.url)
        # The stylesheet got past the Content-Security-Policy (and nothing else was needed).
        header = driver.find_element(By.TAG_NAME, "header")
        assert header.value_of_css_property("background-color") in ("rgba(29, 35, 48, 1)", "rgb(29, 35, 48)")
        assert withdraw_id in driver.find_element(By.TAG_NAME, "main").text
        assert "¥100.00" in driver.find_element(By.TAG_NAME, "main").text
        driver.save_screenshot(str(shots / "withdrawals.png"))

        submit(driver, driver.find_element(By.LINK_TEXT, withdraw_id))
        assert driver.current_url == f"{server.url}/ops/withdrawals/{withdraw_id}"
        driver.save_screenshot(str(shots / "withdrawal.png"))
        driver.find_element(By.ID, "fail-reason").send_keys("支付宝拒收：账户已注销 <b>")
        driver.find_element(By.ID, "fail-confirm").click()
        submit(driver, driver.find_element(By.ID, "fail-submit"))
        assert "审计记录" in driver.find_element(By.CSS_SELECTOR, ".done").text, driver.page_source[:3000]
        assert "失败" in driver.find_element(By.ID, "status").text
        driver.save_screenshot(str(shots / "withdrawal-failed.png"))
        assert withdrawal(withdraw_id).status == "failed" and balance(expert) == 12_356

        submit(driver, driver.find_element(By.LINK_TEXT, "操作审计"))
        audit = driver.find_element(By.TAG_NAME, "main").text
        assert withdraw_id in audit and "提现置为失败" in audit and "支付宝拒收：账户已注销 <b>" in audit
        assert "alice" in audit
        driver.save_screenshot(str(shots / "audit.png"))

        submit(driver, driver.find_element(By.LINK_TEXT, "支付查询"))
        driver.find_element(By.ID, "q").send_keys(expert.id)
        submit(driver, driver.find_element(By.ID, "search"))
        assert "¥123.56" in driver.find_element(By.TAG_NAME, "main").text
        driver.save_screenshot(str(shots / "pays.png"))
        submit(driver, driver.find_element(By.CSS_SELECTOR, "main table a"))
        assert "charge.succeeded" in driver.find_element(By.TAG_NAME, "main").text
        driver.save_screenshot(str(shots / "pay.png"))

        for tab, expect, name in (
            ("失败通知", "失败通知", "notifications"),
            ("账目与对账", "试算平衡表", "books"),
            ("30 天统计", "最近 30 天", "stats"),
        ):
            submit(driver, driver.find_element(By.LINK_TEXT, tab))
            assert expect in driver.find_element(By.TAG_NAME, "h1").text
            driver.save_screenshot(str(shots / f"{name}.png"))
        bars = driver.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
        assert len(bars) == 90 and any(float(b.get_attribute("height")) > 0 for b in bars)

        submit(driver, driver.find_element(By.CSS_SELECTOR, "form.logout button"), server.url + "/ops/login")
        assert driver.current_url == server.url + "/ops/login"
        driver.get(server.url + "/ops/audit")
        assert driver.current_url == server.url + "/ops/login"  # the session is gone
    finally:
        driver.quit()
    for name in (
        "login",
        "withdrawals",
        "withdrawal",
        "withdrawal-failed",
        "audit",
        "pays",
        "pay",
        "notifications",
        "books",
        "stats",
    ):
        png = (shots / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5_000, name


@pytest.mark.only_db("sqlite")
def test_the_console_works_with_javascript_off(server, settings, tmp_path):
    operators.add("alice", OPERATOR_PASSWORD, settings.bcrypt_rounds)
    driver = chromium(tmp_path / "chromium-profile-nojs", javascript=False)
    try:
        log_in(driver, server.url)
        submit(driver, driver.find_element(By.LINK_TEXT, "账目与对账"))
        assert "试算平衡表" in driver.find_element(By.TAG_NAME, "h1").text
        driver.save_screenshot(str(tmp_path / "books-without-javascript.png"))
    finally:
        driver.quit()
