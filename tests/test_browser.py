"""The static leaderboard page, driven in headless Chromium (Selenium + chromedriver).

Needs Debian's ``chromium`` and ``chromium-driver`` and ``pip install selenium``; skips, saying
which is missing, where they are not installed. The screenshot is saved under ``artifacts/``
(git-ignored) and its path printed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.fixtures import runs_make

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1500,1000",
]


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def driver():
    chromium = os.environ.get("CALBENCH_CHROMIUM") or _find(
        "chromium", "chromium-browser", "google-chrome"
    )
    chromedriver = os.environ.get("CALBENCH_CHROMEDRIVER") or _find("chromedriver")
    if not chromium:
        pytest.skip("no Chromium binary (apt-get install chromium chromium-driver)")
    if not chromedriver:
        pytest.skip("no chromedriver (apt-get install chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium not installed (pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="calbench-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in CHROMIUM_ARGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(a)
    # An explicit driver path keeps Selenium Manager from trying to download one (no network).
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    from calbench.report.leaderboard import build

    root = tmp_path_factory.mktemp("browser")
    runs_make.make_results(root / "results")
    build(root / "results", root / "leaderboard")
    return root / "leaderboard" / "index.html"


def _body_rows(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")


def _column(driver, key: str) -> list[str]:
    from selenium.webdriver.common.by import By

    headers = driver.find_elements(By.CSS_SELECTOR, "#board thead th")
    col = [h.get_attribute("data-key") for h in headers].index(key)
    return [
        r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-v")
        for r in _body_rows(driver)
        if r.is_displayed()
    ]


def test_leaderboard_page_in_chromium(driver, page: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(page.as_uri())
    assert driver.title == "calbench leaderboard"
    # No alert fired: the hostile model name is text, not markup.
    assert driver.execute_script("return document.querySelectorAll('#board img').length") == 0

    rows = _body_rows(driver)
    assert len(rows) == 4
    models = [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows]
    assert '<img src=x onerror="alert(1)"> $x$ | evil' in models
    assert sorted(_column(driver, "task")) == ["synthmath"] * 3 + ["synthqa"]

    # Sorting: Brier ascending, then descending, reverses the order of distinct values.
    brier_th = driver.find_element(By.CSS_SELECTOR, 'th[data-key="brier"] button')

    def order() -> list[tuple[str, str]]:
        return list(zip(_column(driver, "task"), _column(driver, "model"), strict=True))

    before = order()
    brier_th.click()
    asc = [float(v) for v in _column(driver, "brier")]
    assert asc == sorted(asc)
    brier_th.click()
    desc = [float(v) for v in _column(driver, "brier")]
    assert desc == sorted(desc, reverse=True)
    # Initially the best row of the first task leads; now the worst row overall does.
    assert order() != before
    assert (
        driver.find_element(By.CSS_SELECTOR, 'th[data-key="brier"]').get_attribute("aria-sort")
        == "descending"
    )
    # Text column: model names in order.
    driver.find_element(By.CSS_SELECTOR, 'th[data-key="model"] button').click()
    names = _column(driver, "model")
    assert names == sorted(names, key=str.lower) or names == sorted(names)

    # Task filter.
    Select(driver.find_element(By.ID, "task-filter")).select_by_value("synthqa")
    visible = [r for r in _body_rows(driver) if r.is_displayed()]
    assert len(visible) == 1
    assert "1 of 4 rows" in driver.find_element(By.ID, "row-count").text
    Select(driver.find_element(By.ID, "task-filter")).select_by_value("")
    assert sum(r.is_displayed() for r in _body_rows(driver)) == 4

    # One click opens a row's reliability diagram, and the SVG really loads.
    link = driver.find_elements(By.CSS_SELECTOR, "a.diagram-link")[0]
    link.click()
    dialog = driver.find_element(By.ID, "diagram")
    WebDriverWait(driver, 10).until(lambda d: dialog.get_attribute("open") is not None)
    img = dialog.find_element(By.TAG_NAME, "img")
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
    )
    assert img.get_attribute("src").endswith(".svg")
    assert dialog.find_element(By.CLASS_NAME, "title").text == link.get_attribute("data-title")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "leaderboard_dialog.png"
    assert driver.save_screenshot(str(shot))
    print(f"screenshot: {shot}")

    dialog.find_element(By.CSS_SELECTOR, "button.close").click()
    WebDriverWait(driver, 5).until(ec.invisibility_of_element(dialog))
    table_shot = ARTIFACTS / "leaderboard_table.png"
    driver.save_screenshot(str(table_shot))
    print(f"screenshot: {table_shot}")
