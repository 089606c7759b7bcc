"""Real-browser check: JupyterLab on 127.0.0.1, the sweep notebook run in headless Chromium, a slider moved.

Uses Debian's ``chromium`` (``.ci/run`` installs it) driven by Playwright with
``executable_path``: no browser is ever downloaded. Skipped, with the reason,
where there is no Chromium. The screenshot lands in ``.screenshots/``
(gitignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, require_mirror

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
SHOTS = REPO / ".screenshots"
TOKEN = "routerlab-browser-check"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def lab(imported: Any, tmp_path: Path) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 serving a copy of the notebooks (autosave must not touch the repo)."""
    require_mirror()
    ws = imported("mot_date").root
    nbdir = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", nbdir)
    port = _free_port()
    env = {
        **os.environ,
        "ROUTERLAB_WORKSPACE": str(ws),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrun"),
    }
    env.pop("MPLBACKEND", None)
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={nbdir}",
            "--ServerApp.open_browser=False",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=nbdir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine (Debian package 'chromium'; .ci/run "
    "installs it): the real-browser check is skipped",
)
def test_sweep_notebook_in_jupyterlab_with_a_slider_move(lab: str) -> None:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(f"{lab}/lab/tree/02_sweep_and_frontier.ipynb?token={TOKEN}", timeout=120_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        select = page.locator(".jp-Dialog button", has_text="Select")
        try:  # JupyterLab may ask which kernel to start
            select.first.click(timeout=15_000)
        except Exception:
            pass
        page.wait_for_selector("#jp-main-statusbar :text('Idle')", timeout=120_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            select.first.click(timeout=5_000)
        except Exception:
            pass
        numbers = page.locator(".routerlab-numbers td.v")
        try:
            numbers.first.wait_for(timeout=int(os.environ.get("RL_BROWSER_WAIT_MS", "240000")))
        except Exception:
            page.screenshot(path=str(SHOTS / "browser-failure.png"), full_page=True)
            raise
        page.locator(".jp-OutputArea-output img").first.wait_for(timeout=60_000)
        try:  # the "official Jupyter news?" toast would cover part of the screenshot
            page.locator(".jp-toast-button", has_text="No").first.click(timeout=2_000)
        except Exception:
            pass
        before = numbers.all_inner_texts()
        images = page.locator(".jp-OutputArea-output img")
        plots_before = [images.nth(i).get_attribute("src") for i in range(images.count())]
        readout = page.locator(".widget-slider .widget-readout").first
        readout.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "browser-before-slider.png"), full_page=False)
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0.00")
        page.keyboard.press("Enter")
        deadline = time.monotonic() + 60
        after = before
        while time.monotonic() < deadline:
            after = numbers.all_inner_texts()
            if after != before:
                break
            time.sleep(0.25)
        plots_after = plots_before
        while time.monotonic() < deadline:  # the explorer's plot is redrawn with the point moved
            plots_after = [images.nth(i).get_attribute("src") for i in range(images.count())]
            if plots_after != plots_before:
                break
            time.sleep(0.25)
        page.wait_for_selector("#jp-main-statusbar :text('Idle')", timeout=60_000)
        page.locator(".routerlab-numbers").first.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "browser-explorer-after-slider.png"), full_page=False)
        browser.close()
    assert before and after != before, f"the explorer's numbers did not change: {before}"
    assert plots_after != plots_before, "the explorer's plot was not redrawn after the slider move"
    assert (SHOTS / "browser-explorer-after-slider.png").stat().st_size > 10_000
