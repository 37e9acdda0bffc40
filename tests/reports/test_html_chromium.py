"""The HTML report in a real browser: headless Chromium (Debian's `chromium`, installed here when missing) renders its
plots, and the page fetches nothing.

"Nothing fetched" is read from Chromium's own network log (--log-net-log): every request the page starts carries the
page's origin as initiator, while the browser's own background requests (update checks, accounts) carry none and are
left out. A control page that does fetch proves the check sees page requests; DNS is mapped to nowhere, so no request
could leave the machine anyway.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mdeploy.reports import render
from tests.reports import png

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", '--host-resolver-rules=MAP * ~NOTFOUND']
WIDTH = 1280


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; installed with apt-get when missing. A machine that cannot install it fails this test:
    a skipped browser test would let a broken page pass CI."""
    found = shutil.which("chromium")
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.fail("chromium is not installed and there is no apt-get to install it: install Debian's `chromium` package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"could not install chromium: `{' '.join(cmd)}` failed: {exc}")
        if proc.returncode != 0:
            pytest.fail(f"could not install chromium: `{' '.join(cmd)}` exited {proc.returncode} (root and network needed):\n"
                        f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.fail("apt-get installed chromium but there is no `chromium` on PATH")
    return found


def browse(binary: str, page: Path, folder: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Open `page` once in a fresh profile; returns the process and the URLs of the requests the page started."""
    profile, netlog = folder / "profile", folder / "netlog.json"
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    proc = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120, cwd=folder)
    assert netlog.is_file(), f"chromium wrote no network log (exit {proc.returncode}): {proc.stderr[-1500:]}"
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [e["params"]["url"] for e in log["events"] if e["type"] == start_job and "url" in e.get("params", {})
                and e["params"].get("initiator") != "not an origin"]  # the browser's own requests have no initiator
    return proc, requests


def test_the_fetch_check_sees_a_page_that_fetches(chromium, tmp_path):
    page = tmp_path / "fetches.html"
    page.write_text('<!DOCTYPE html><html><head><style>@font-face{font-family:f;src:url(https://fonts.example.invalid/f.woff2)}'
                    'body{font-family:f}</style></head><body><img src="http://example.invalid/a.png">text</body></html>')
    _, requests = browse(chromium, page, tmp_path, "--dump-dom")
    assert "http://example.invalid/a.png" in requests and "https://fonts.example.invalid/f.woff2" in requests


def test_html_report_renders_its_plots_and_fetches_nothing(chromium, mixed_report, tmp_path):
    page = render.write_all(mixed_report, tmp_path / "report")["html"]
    shot = tmp_path / "shot.png"
    proc, requests = browse(chromium, page, tmp_path, f"--window-size={WIDTH},3000", f"--screenshot={shot}")
    assert shot.is_file(), proc.stderr[-1500:]
    assert requests == []
    image = png.read(shot)
    assert image.shape == (3000, WIDTH, 3)
    # the plots' colours are on the screen: first-artifact bars (blue), second-artifact bars (orange); the FAILED
    # badge and fail marks (red) and pass marks (green) are drawn
    assert png.count(image, "#4c78a8") > 10_000 and png.count(image, "#f58518") > 3_000
    assert png.count(image, "#c62828") > 200 and png.count(image, "#2e7d32") > 100


def test_every_plot_is_laid_out_with_its_bars(chromium, mixed_report, tmp_path):
    """The same page with a measuring script added (and allowed by its CSP): every SVG has its size on the page and
    every bar in it has an area."""
    text = render.to_html(mixed_report)
    assert text.count("default-src 'none'; style-src 'unsafe-inline'\"") == 1
    text = text.replace("style-src 'unsafe-inline'\"", "style-src 'unsafe-inline'; script-src 'unsafe-inline'\"")
    script = ("<script>const out=[...document.querySelectorAll('svg.plot')].map(s=>{const r=s.getBoundingClientRect();"
              "const bars=[...s.querySelectorAll('rect.bar')].map(b=>b.getBoundingClientRect());"
              "return {label:s.getAttribute('aria-label'),x:r.x,width:r.width,height:r.height,bars:bars.length,"
              "drawn:bars.filter(b=>b.width>0&&b.height>0).length}});"
              "const pre=document.createElement('pre');pre.id='measure';pre.textContent=JSON.stringify(out);"
              "document.body.appendChild(pre);</script>")
    page = tmp_path / "measured.html"
    page.write_text(text.replace("</main>", "</main>" + script))
    proc, requests = browse(chromium, page, tmp_path, f"--window-size={WIDTH},2000", "--dump-dom")
    found = re.search(r'<pre id="measure">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the page's DOM was not dumped: {proc.stderr[-1500:]}"
    plots = json.loads(html.unescape(found.group(1)))
    assert len(plots) == 10 and requests == []
    for plot in plots:
        assert plot["width"] >= 500 and plot["height"] >= 40 and plot["x"] + plot["width"] <= WIDTH, plot
        assert plot["bars"] >= 1 and plot["drawn"] == plot["bars"], plot


def test_the_page_policy_blocks_a_fetch_even_if_one_slipped_in(chromium, passing_report, tmp_path):
    """The report's Content-Security-Policy is what guarantees no fetch: an image injected into the page stays unloaded."""
    page = tmp_path / "injected.html"
    page.write_text(render.to_html(passing_report).replace("</main>", '<img src="http://example.invalid/leak.png"></main>'))
    _, requests = browse(chromium, page, tmp_path, "--dump-dom")
    assert requests == []
