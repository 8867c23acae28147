"""`weitiao ui` in a real headless Chromium (Debian's, driven by Playwright): the page loads, the
runs table lists the runs, a run opens its report, a prediction typed into the box comes back,
two runs compare; a screenshot is kept in test-artifacts/dashboard.png."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import ROOT

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def dashboard(tiny_runs, tmp_path_factory):
    from test_serve import free_port

    runs = tmp_path_factory.mktemp("ui") / "runs"
    for name in ("classification", "token_classification"):
        shutil.copytree(tiny_runs[name], runs / name)
    port = free_port()
    log = open(runs.parent / "ui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "weitiao", "ui", "--runs", str(runs), "--port", str(port)], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "api/runs", timeout=1)
            break
        except OSError:
            assert proc.poll() is None, (runs.parent / "ui.log").read_text()
            time.sleep(0.2)
    yield url, runs
    proc.terminate()
    proc.wait(timeout=30)


def test_the_dashboard_in_a_real_browser(dashboard, tiny_runs):
    from playwright.sync_api import sync_playwright

    from weitiao.api import load

    url, runs = dashboard
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make test installs it: make browser)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("tr.run >> nth=1")
        names = page.locator("tr.run td:nth-child(2)").all_inner_texts()
        assert sorted(names) == ["classification", "token_classification"]
        assert page.locator("tr.run", has_text="classification").first.inner_text()

        page.locator("tr.run[data-name='classification']").click()  # open the run: its report in the frame
        frame = page.frame_locator("#view")
        frame.locator("#status").wait_for(timeout=60_000)
        assert "finished" in frame.locator("#status").inner_text()
        assert frame.locator("img[alt='loss.png']").count() == 1

        text = "we saw a great film today"
        page.fill("#input", text)
        page.click("#predict")
        page.wait_for_function("document.getElementById('output').textContent.includes('label')", timeout=60_000)
        shown = json.loads(page.inner_text("#output").splitlines()[0])
        assert shown == load(str(tiny_runs["classification"])).predict([text])[0]

        for name in ("classification", "token_classification"):  # two runs compared
            page.locator(f"tr.run[data-name='{name}'] input[type=checkbox]").check()
        page.click("#compare")
        frame.locator("text=Config differences").wait_for(timeout=60_000)
        assert "task.type" in frame.locator("body").inner_text()
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
