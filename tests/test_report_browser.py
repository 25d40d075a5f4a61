"""report.html in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium) opens the page, counts the cards, marks a cluster
rejected and reads the exported selection; names that are markup show as text and run
nothing. Skipped where no browser is installed; CI (`.ci/run`) installs one and must run it."""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mcvae_framework.cli import cli
from tiny_runs import MARKUP_CLASS, MARKUP_FILE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser(tmp_path: Path, width: int = 1300, height: int = 1000):
    """Headless Chromium from the system, offline-safe flags and a fresh profile; ``None``
    (with the reason) when it cannot be had."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install -e \".[dev]\")"
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        return None, "no Chromium: apt-get install -y chromium chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options), ""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    chrome, reason = browser(tmp_path_factory.mktemp("chromium"))
    if chrome is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test, but {reason}")
        pytest.skip(reason)
    yield chrome
    chrome.quit()


def exported_selection(driver) -> dict:
    href = driver.find_element("id", "download-selection").get_attribute("href")
    prefix = "data:application/json;charset=utf-8,"
    assert href.startswith(prefix)
    return json.loads(urllib.parse.unquote(href[len(prefix):]))


def test_cards_rejection_and_the_exported_selection(driver, mrc_run, mrc_page, tmp_path):
    assert CliRunner().invoke(cli, ["predict", str(mrc_run), "--data", str(mrc_run / "config.json"),
                                    "--out", str(tmp_path / "p.npz")]).exit_code == 0
    truth = np.load(tmp_path / "p.npz")
    driver.get(mrc_page.as_uri())
    cards = driver.find_elements("css selector", ".card")
    assert len(cards) == 3
    before = exported_selection(driver)
    assert sorted(before["items"]) == sorted(truth["index"].tolist()) and before["rejected_clusters"] == []
    # reject the largest cluster
    sizes = np.bincount(truth["cluster"], minlength=3)
    rejected = int(sizes.argmax())
    card = driver.find_element("css selector", f'.card[data-cluster="{rejected}"]')
    card.find_element("css selector", "button.reject").click()
    assert "rejected" in card.get_attribute("class")
    after = exported_selection(driver)
    kept = [c for c in range(3) if c != rejected]
    assert after["rejected_clusters"] == [rejected] and after["kept_clusters"] == kept
    assert sorted(after["items"]) == sorted(truth["index"][truth["cluster"] != rejected].tolist())
    command = driver.find_element("id", "command").text
    assert f"--clusters {','.join(map(str, kept))} " in command and command.startswith("mcvae predict")
    assert after["command"] == command
    # and back
    card.find_element("css selector", "button.keep").click()
    assert exported_selection(driver)["rejected_clusters"] == []
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_markup_in_names_shows_as_text_and_runs_nothing(driver, folder_page):
    from selenium.common.exceptions import NoAlertPresentException

    driver.get(folder_page.as_uri())
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # an onerror=alert(...) that ran would have opened one
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"], img[src=\"y\"]').length") == 0
    captions = [e.text for e in driver.find_elements("css selector", ".members figcaption")]
    assert any(MARKUP_FILE in text for text in captions)
    headers = [e.text for e in driver.find_elements("css selector", "table.confusion th")]
    assert MARKUP_CLASS in headers
    for button in driver.find_elements("css selector", "button.reject"):
        button.click()  # the selection is rebuilt from the data: still text only
    assert exported_selection(driver)["items"] == []
    for button in driver.find_elements("css selector", "button.keep"):
        button.click()
    assert any(i.endswith(MARKUP_FILE) for i in exported_selection(driver)["items"])
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text
