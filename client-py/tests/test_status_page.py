"""The status page (`GET /ui`) in a real browser: Debian's chromium and chromedriver, driven by
selenium. The page loads, refuses a wrong secret, then shows a lock the test acquired (owner
and token) and drops it once released. A screenshot is saved as target/status-page.png.

Skipped when chromedriver is missing, unless LOCKSERVER_REQUIRE_BROWSER is set (the test
command sets it, and installs the browser)."""

import os
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if not (CHROMEDRIVER and CHROMIUM) and not os.environ.get("LOCKSERVER_REQUIRE_BROWSER"):
    pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser():
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=412,915"):
        options.add_argument(argument)  # a phone-sized window
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def row(browser, resource):
    rows = browser.find_elements(By.CSS_SELECTOR, f'#locks tr[data-resource="{resource}"]')
    return rows[0] if rows else None


def test_the_status_page_shows_what_is_held(server, client, browser):
    wait = WebDriverWait(browser, 15)
    browser.get(server.addr + "/ui")
    assert browser.title == "lockserver"

    browser.find_element(By.ID, "secret").send_keys("not-the-secret")
    browser.find_element(By.ID, "connect").click()
    wait.until(lambda b: "refused" in b.find_element(By.ID, "error").text)
    assert not browser.find_element(By.ID, "status").is_displayed()

    browser.find_element(By.ID, "secret").send_keys(server.secret)
    browser.find_element(By.ID, "connect").click()
    wait.until(lambda b: b.find_element(By.ID, "status").is_displayed())
    wait.until(lambda b: b.find_element(By.ID, "version").text not in ("", "…"))
    assert browser.find_element(By.ID, "health").text == "ok"
    assert browser.find_element(By.ID, "backend").text == "embedded"

    with client.lock("ui-job", expire=30, value="step 1") as lock, client.lease(30) as lease:
        shown = wait.until(lambda b: row(b, "ui-job"))
        assert shown.find_element(By.CSS_SELECTOR, ".owner").text == lock.owner
        assert shown.find_element(By.CSS_SELECTOR, ".token").text == str(lock.token)
        assert shown.find_element(By.CSS_SELECTOR, ".value").text == "step 1"
        assert shown.find_element(By.CSS_SELECTOR, ".left").text.endswith("s")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f'#leases tr[data-lease="{lease.id}"]'))
        (ROOT / "target").mkdir(exist_ok=True)
        browser.save_screenshot(str(ROOT / "target" / "status-page.png"))
    wait.until(lambda b: row(b, "ui-job") is None)
