"""`weitiao ui` in a real headless Chromium (Debian's, driven by Playwright): the page loads, the
runs table lists the runs, a run opens its report, a prediction typed into the box comes back,
two runs compare; a screenshot is kept in test-artifacts/dashboard.png. Then who may call it: the
token, the Host header, another site's form, a handed run's report script, paths typed for an image run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
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
    url = None
    for _ in range(300):  # the address it prints carries the per-start token
        printed = re.search(r"at (http://\S+/\?token=\S+)", (runs.parent / "ui.log").read_text())
        if printed:
            try:
                urllib.request.urlopen(printed.group(1).replace("/?", "/api/runs?"), timeout=1)
                url = printed.group(1)
                break
            except OSError:
                pass
        assert proc.poll() is None, (runs.parent / "ui.log").read_text()
        time.sleep(0.2)
    assert url, (runs.parent / "ui.log").read_text()
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


def _call(url: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def test_only_the_printed_address_opens_the_dashboard(dashboard):
    """No token: 403 on every route; a foreign Host (DNS rebinding) and another site's Origin: 403 even with
    the token; the token in the URL sets a SameSite=Strict cookie that then works alone."""
    url, _ = dashboard
    base, token = url.split("/?token=")
    body = json.dumps({"inputs": ["we saw a great film"]}).encode()
    json_type = {"Content-Type": "application/json"}
    for path in ("/", "/api/runs", "/runs/classification/report", "/docs"):
        status, text, _ = _call(base + path)
        assert status == 403 and "token" in text, (path, status, text)
    assert _call(base + "/api/runs/classification/predict", "POST", json_type, body)[0] == 403
    assert _call(base + "/api/runs?token=wrong")[0] == 403
    status, text, _ = _call(f"{base}/api/runs?token={token}", headers={"Host": "attacker.example:80"})
    assert status == 403 and "Host" in text
    status, _, _ = _call(f"{base}/api/runs/classification/predict?token={token}", "POST", json_type | {"Origin": "http://attacker.example"}, body)
    assert status == 403
    status, text, headers = _call(f"{base}/api/runs?token={token}")
    assert status == 200 and {r["name"] for r in json.loads(text)} == {"classification", "token_classification"}
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, text, _ = _call(base + "/api/runs/classification/predict", "POST", json_type | {"Cookie": cookie.split(";")[0]}, body)
    assert status == 200 and json.loads(text)["predictions"][0]["label"] in ("neg", "pos")


def test_a_handed_runs_report_runs_no_script_and_limits_hold(dashboard, tiny_runs):
    """A report.html planted in a run folder is served under a sandbox CSP (a real browser runs none of its
    script); texts past serve's limit and an image run's typed paths are refused."""
    from playwright.sync_api import sync_playwright

    url, runs = dashboard
    base, token = url.split("/?token=")
    planted = runs / "planted"
    shutil.copytree(tiny_runs["image_classification"], planted)
    (planted / "report.html").write_text("<html><body><p id='x'>report</p><script>document.title = 'script ran';"
                                         "fetch('/api/runs').then(() => document.title = 'fetched')</script></body></html>")
    os.utime(planted / "report.html", (time.time() + 60, time.time() + 60))  # newer than its log: served as it is
    status, _, headers = _call(f"{base}/runs/planted/report?token={token}")
    assert status == 200 and "sandbox" in headers.get("content-security-policy", "")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base}/runs/planted/report?token={token}")
        page.wait_for_selector("#x")
        time.sleep(0.5)
        assert page.title() == "", page.title()
        browser.close()
    json_type = {"Content-Type": "application/json"}
    status, text, _ = _call(f"{base}/api/runs/planted/predict?token={token}", "POST", json_type,
                            json.dumps({"inputs": ["/etc/passwd"]}).encode())
    assert status == 422 and "uploaded image files" in text
    status, text, _ = _call(f"{base}/api/runs/classification/predict?token={token}", "POST", json_type,
                            json.dumps({"inputs": ["word " * 5000]}).encode())
    assert status == 422 and "over the limit" in text
    import http.client

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", f"/api/runs/classification/predict?token={token}")  # the length alone is refused, as `weitiao serve` does
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(33 * 1024 * 1024))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
