"""Screenshots of gpt3dev's widgets rendered live in JupyterLab by a real (headless) browser.

It writes a notebook that shows each widget, starts JupyterLab on it, opens it in headless Chromium
(driven by Playwright), runs all cells, sets a few controls as a person would, and saves a PNG of each
widget's output under nbs/images/. Needs `pip install playwright` and a Chromium (Debian: `apt install
chromium`); it is not part of the tests (CI has no browser).

    python tools/widget_screenshots.py [--chromium /usr/bin/chromium]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELLS = {
    "setup": """import torch, gpt3dev
from gpt3dev.config import GPT3DevConfig
from gpt3dev.modeling import GPT3DevForCausalLM
from gpt3dev.data import load_tokenizer
from gpt3dev.widgets import pattern_explorer, attention_viewer, generation_playground
tok = load_tokenizer("embedded")
torch.manual_seed(0)
model = GPT3DevForCausalLM(GPT3DevConfig.from_preset("tiny", vocab_size=len(tok), window_size=6)).eval()
MODEL = %r
if MODEL:
    from gpt3dev.core import load_pretrained
    model, tok = load_pretrained(MODEL)""",
    "pattern_explorer": "ex = pattern_explorer(n=48, kind='local', window=8)\nex",
    "attention_viewer": "av = attention_viewer(model, tok, 'def add(a, b):\\n    \"Return the sum of a and b.\"\\n    return a + b\\n\\nfor i in range(10):\\n    print(add(i, i))\\n')\nav",
    "generation_playground": "gp = generation_playground(model, tok, prompt='The for statement')\ngp.controls['temperature'].value = 0.8\ngp.controls['max_new_tokens'].value = 40\ngp.controls['button'].click()\ngp",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def pattern_figure(out: Path):
    "The four patterns side by side (the README's picture), drawn by gpt3dev.widgets.plot_pattern."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from gpt3dev.widgets import plot_pattern
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, spec in zip(axes, ["dense", "local:16", "strided:8", "fixed:8:2"]): plot_pattern(spec, 64, ax=ax)
    fig.tight_layout(); fig.savefig(out / "patterns.png", dpi=72); plt.close(fig)
    print(f"wrote {out / 'patterns.png'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    ap.add_argument("--model", default="", help="a checkpoint to show (default: a random tiny model)")
    ap.add_argument("--out", default=str(ROOT / "nbs" / "images"))
    args = ap.parse_args()
    if not args.chromium: sys.exit("no Chromium found: apt install chromium, or pass --chromium PATH")
    from playwright.sync_api import sync_playwright
    work = Path(tempfile.mkdtemp())
    cells = [CELLS["setup"] % args.model] + [CELLS[k] for k in ("pattern_explorer", "attention_viewer", "generation_playground")]
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None} for c in cells],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    (work / "widgets.ipynb").write_text(json.dumps(nb))
    port = free_port()
    lab = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.token=",
                            "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={work}",
                            "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                            *(["--allow-root"] if os.geteuid() == 0 else [])],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    pattern_figure(out)
    try:
        for _ in range(120):
            try: socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
            except OSError: time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
            page.goto(f"http://127.0.0.1:{port}/lab/tree/widgets.ipynb", wait_until="networkidle")
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.add_style_tag(content=".jp-toast-container, .Toastify { display: none !important; }")   # no "news?" pop-up
            page.click("text=Run", timeout=30_000)
            page.click("text=Run All Cells", timeout=30_000)
            try:
                for n in (2, 3):
                    page.wait_for_selector(f".jp-Notebook .jp-Cell:nth-child({n}) .jp-OutputArea-output img", timeout=180_000)
                page.wait_for_selector("text=/tokens, mean probability/", timeout=180_000)
            except Exception:
                page.screenshot(path=str(out / "failed.png"), full_page=True); raise
            time.sleep(2)
            cells = page.query_selector_all(".jp-Notebook .jp-Cell")
            for cell, name in zip(cells[1:], ["pattern_explorer", "attention_viewer", "generation_playground"]):
                area = cell.query_selector(".jp-OutputArea")
                area.scroll_into_view_if_needed(); time.sleep(0.5)
                area.screenshot(path=str(out / f"{name}.png"))
                print(f"wrote {out / (name + '.png')}")
            browser.close()
    finally:
        lab.terminate(); lab.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
