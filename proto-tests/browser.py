"""Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium, for the
console tests and for pictures of what a person would see. Screenshots go to the test
artefacts directory, `$GREGOR_TEST_ARTIFACTS` (default `<repo>/target/test-artifacts`).
"""
import os
import shutil
import tempfile
from pathlib import Path

from conftest import REPO

ARTIFACTS = Path(os.environ.get("GREGOR_TEST_ARTIFACTS", REPO / "target" / "test-artifacts"))
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")


class Browser:
    """One headless Chromium with a fresh profile; `close()` ends it (and chromedriver)."""

    def __init__(self, width=1400, height=1000):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="gregor-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        # The network is closed: without these Chromium waits on connections of its own.
        for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--no-proxy-server",
                     f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]:
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(30)

    def open(self, url):
        self.driver.get(url)
        return self.driver

    def text(self):
        return self.driver.find_element("tag name", "body").text

    def screenshot(self, name):
        """Saves a full-page PNG as <artefacts>/<name>.png and returns its path."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        height = self.driver.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
        width = self.driver.get_window_size()["width"]
        self.driver.set_window_size(width, min(max(int(height) + 120, 600), 6000))
        self.driver.save_screenshot(str(path))
        return path

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
