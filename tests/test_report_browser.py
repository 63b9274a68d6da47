"""The summary and a map page of the demo run, opened in a real headless browser (Chromium + Selenium).

Checks what a person sees: every image decodes (``naturalWidth > 0``, which is 0 for a broken
image), the tables are there and filled, and the summary's links lead to the map pages. Needs
Debian's ``chromium`` and ``chromium-driver`` (.ci/install-system-packages) and the ``selenium``
package; skipped with the reason where one is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip(
            "chromium or chromium-driver not found (apt-get install chromium chromium-driver, "
            "see .ci/install-system-packages)"
        )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--allow-file-access-from-files",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def images_of(driver) -> list[dict]:
    """Every <img> of the page once loaded: its alt text, whether it finished and its decoded width."""
    return driver.execute_script(
        "return Array.from(document.images)"
        ".map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}));"
    )


def test_summary_and_map_pages_load_every_image_and_table(demo_run: Path, browser):
    from selenium.webdriver.common.by import By

    summary = demo_run / "results/reports/summary.html"
    browser.get(summary.as_uri())
    assert browser.title == "cropchain accuracy summary"
    images = images_of(browser)
    # the chart and one quicklook per architecture and tile (demo: rf, xgboost x 2 tiles)
    assert len(images) == 1 + 2 * 2, images
    assert all(i["complete"] and i["width"] > 0 for i in images), images
    tables = browser.find_elements(By.TAG_NAME, "table")
    assert len(tables) == 3  # metrics, F-score per class, maps
    assert (
        len(tables[0].find_elements(By.CSS_SELECTOR, "tbody tr")) == 2 * 3
    )  # 2 architectures x (2 tiles + all)
    # every map page of the run is linked: 2 runs x 2 architectures x 2 tiles
    links = [
        a.get_attribute("href")
        for a in tables[2].find_elements(By.CSS_SELECTOR, "a")
        if a.text.startswith("run ")
    ]
    assert len(links) == 8
    browser.get(links[0])
    assert " · run " in browser.title
    images = images_of(browser)
    assert {i["alt"] for i in images} == {
        "quicklook of the map",
        "confusion matrix",
    }  # pixel classifiers: no curves
    assert all(i["complete"] and i["width"] > 0 for i in images), images
    rows = browser.find_elements(By.CSS_SELECTOR, "table.classes tbody tr")
    assert len(rows) >= 3 and all(len(r.find_elements(By.TAG_NAME, "td")) == 8 for r in rows)
    assert "overall accuracy" in browser.find_element(By.CSS_SELECTOR, "table.metrics").text
