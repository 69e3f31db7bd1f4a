"""Run a notebook the way a person does: JupyterLab in a real (headless) Chromium, driven by Playwright.

Used by `tests/test_browser.py` (the widgets notebook must show its pictures and widgets in JupyterLab)
and by `tools/widget_screenshots.py`. Needs `pip install playwright` (a dev dependency) and a Chromium
(Debian: `apt install chromium`); Playwright's own browser download is not used.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def find_chromium() -> str | None:
    "A Chromium executable: `$GPT3DEV_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH."
    return os.environ.get("GPT3DEV_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyterlab(root: Path, env: dict | None = None, log: Path | None = None):
    """A JupyterLab server on `root` (no token, localhost only) for the duration of the block; yields its URL.

    The kernel gets the environment a person's JupyterLab has: `MPLBACKEND` is removed, so matplotlib uses
    ipykernel's inline backend as it does for a user (a test runner's `MPLBACKEND=Agg` would hide the bug
    this exists to catch)."""
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "MPLBACKEND"}
    port = _free_port()
    out = open(log, "w") if log else subprocess.DEVNULL
    lab = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        for _ in range(240):
            if lab.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {lab.returncode} (log: {log})")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("JupyterLab did not start within 120 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
        if log:
            out.close()


@contextmanager
def browser_page(chromium: str, width: int = 1400, height: int = 1000):
    "A Playwright page in headless Chromium (the flags a sandboxed, offline machine needs)."
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
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
        try:
            yield browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
        finally:
            browser.close()


def run_all(page, url: str, notebook: str, timeout_s: float = 300):
    """Open `notebook` (a path under the server's root) in JupyterLab, run all its cells from the menu, and wait
    until every code cell has run and the kernel is idle. Raises `TimeoutError` naming the cells still pending."""
    page.goto(f"{url}/lab/tree/{notebook}", wait_until="networkidle")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_timeout(3000)
    if page.query_selector("text=Select Kernel"):
        raise RuntimeError(f"JupyterLab asks which kernel to start for {notebook}: the notebook names no kernelspec")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    page.add_style_tag(content=".jp-toast-container, .Toastify { display: none !important; }")  # no "news?" pop-up
    page.click("text=Run", timeout=30_000)
    page.click("text=Run All Cells", timeout=30_000)
    start = time.time()
    while time.time() < start + timeout_s:
        prompts = page.eval_on_selector_all(
            ".jp-CodeCell .jp-InputArea-prompt", "els => els.map(e => e.textContent.trim())"
        )
        done = [p[1:-2].strip().isdigit() for p in prompts]
        if prompts and all(done) and page.query_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']"):
            return prompts
        if time.time() > start + 90 and not any(done) and "[*]:" not in prompts:
            raise RuntimeError(f"{notebook}: Run All started nothing within 90 s (no kernel?)")
        time.sleep(1)
    pending = [i for i, p in enumerate(prompts) if not p[1:-2].strip().isdigit()]
    raise TimeoutError(f"{notebook}: code cells {pending} had not run after {timeout_s:.0f} s")


def save(page, path: Path) -> dict:
    "Save the open notebook (Ctrl+S) and return it as JSON once the file on disk has outputs."
    before = path.stat().st_mtime
    page.keyboard.press("Control+s")
    for _ in range(60):
        if path.stat().st_mtime != before:
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # caught mid-write
        time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not save {path}")
