"""Browser fixtures: Debian's Chromium driven by Playwright, against the app_server from tests/conftest.py.

No browser can be downloaded here, so Playwright is pointed at the system Chromium
(`apt-get install chromium`; GENLAB_CHROMIUM overrides the path). Without either, these tests skip,
or fail under CI=true (tests.conftest.require).
Screenshots go to $GENLAB_SCREENSHOTS when set (docs/screenshots/ is refreshed that way), else to a
temporary folder.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import require, require_module

CHROMIUM = os.environ.get("GENLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="session")
def browser():
    sync_api = require_module("playwright.sync_api", "Playwright is not installed: run `sh tests/install.sh` "
                                                     "(pip install -r requirements-dev.txt)")
    require(Path(CHROMIUM).is_file(), f"Chromium not found at {CHROMIUM}: run `sh tests/install.sh` "
                                      "(apt-get install chromium) or set GENLAB_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_server):
    """A fresh browser tab (its own Gradio session) with the app loaded."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(app_server.url)
    page.get_by_role("tab", name="Text", exact=True).wait_for()
    yield page
    context.close()


@pytest.fixture
def offline_page(browser, tmp_path):
    """A page of an app whose downloads fail for real, online or not: its proxy is a closed local port
    and its torch cache is empty (the fallback needs the VGG19 download to fail; online it would fetch
    550 MB)."""
    from bench.memory import start_app

    server = start_app(env={"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
                            "NO_PROXY": "127.0.0.1,localhost", "TORCH_HOME": str(tmp_path / "torch")})
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(server.url)
        page.get_by_role("tab", name="Text", exact=True).wait_for()
        yield page
    finally:
        context.close()
        server.stop()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    folder = Path(os.environ["GENLAB_SCREENSHOTS"]) if os.environ.get("GENLAB_SCREENSHOTS") else \
        tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
