"""The web pages in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven by
selenium). A missing browser fails the test with a clear message: CI installs it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from .factories import OTHER_ARCH, new_key, patch_bytes, pem, upload

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "registry"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.fail("headless browser tests need Chromium and its driver: `apt-get install -y chromium chromium-driver`")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("headless browser tests need selenium: `pip install selenium`")
    profile = tempfile.mkdtemp(prefix="llmpatch-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1200,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_list_search_and_patch_page(registry, browser):
    from selenium.webdriver.common.by import By

    alice = registry.user("alice")
    key = new_key()
    evaluation = {"refusal_rate": 0.92, "helpfulness": 0.81, "false_refusal_rate": 0.04, "notes": "not numeric"}
    r = registry.client.post("/api/v1/patches", headers=alice, files=upload(
        patch_bytes("refusal", "1.0.0", domains=("toxicity",), description="Refuses harmful requests <b>bold</b>"), key, pem(key)))
    assert r.status_code == 201
    registry.client.post("/api/v1/patches", headers=alice, files=upload(
        patch_bytes("refusal", "1.1.0", seed=1, domains=("toxicity",), evaluation=evaluation,
                    description="Refuses harmful requests <b>bold</b>"), key))
    registry.client.post("/api/v1/patches", headers=alice, files=upload(
        patch_bytes("refusal", "1.2.0", seed=2, arch=OTHER_ARCH), key))
    registry.client.post("/api/v1/patches/refusal/versions/1.2.0/yank", headers=alice, json={"reason": "regresses helpfulness"})
    registry.client.post("/api/v1/patches", headers=alice, files=upload(
        patch_bytes("medical-advice", domains=("medical",)), key, pem(key)))

    browser.get(registry.url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tr.result")
    assert [row.find_element(By.TAG_NAME, "a").text for row in rows] == ["medical-advice", "refusal"]
    browser.save_screenshot(str(ARTIFACTS / "index.png"))

    box = browser.find_element(By.ID, "q")
    box.send_keys("refu")
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tr.result")
    assert [row.find_element(By.TAG_NAME, "a").text for row in rows] == ["refusal"]
    assert "1.1.0" in rows[0].text  # latest non-yanked version

    rows[0].find_element(By.TAG_NAME, "a").click()
    assert browser.find_element(By.ID, "name").text == "refusal"
    assert browser.find_element(By.ID, "install").text == "patch install refusal@1.1.0"
    assert "<b>bold</b>" in browser.page_source.replace("&lt;", "<").replace("&gt;", ">")  # escaped, not rendered
    assert not browser.find_elements(By.CSS_SELECTOR, "main b")
    versions = browser.find_elements(By.CSS_SELECTOR, "#versions tr.version")
    assert [v.get_attribute("data-version") for v in versions] == ["1.2.0", "1.1.0", "1.0.0"]
    assert "yanked: regresses helpfulness" in versions[0].text and "yanked" in versions[0].get_attribute("class")
    assert browser.find_element(By.ID, "signer").text == r.json()["key_id"][:16]
    base_rows = browser.find_elements(By.CSS_SELECTOR, "#base-models tbody tr")
    assert len(base_rows) == 2
    metrics = [row.find_elements(By.TAG_NAME, "td")[0].text for row in browser.find_elements(By.CSS_SELECTOR, "#evaluation tbody tr")]
    assert metrics == ["false_refusal_rate", "helpfulness", "refusal_rate"]
    bars = browser.find_elements(By.CSS_SELECTOR, "#evaluation-chart rect.bar")
    widths = [float(b.get_attribute("width")) for b in bars]
    assert len(widths) == 3 and widths[2] == max(widths) == 300.0 and widths[0] < widths[1]
    browser.save_screenshot(str(ARTIFACTS / "patch.png"))

    browser.get(registry.url + "/patches/nosuch")
    assert browser.find_element(By.ID, "error").text == "no patch named `nosuch`"
