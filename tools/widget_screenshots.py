"""Screenshots of gpt3dev's widgets rendered live in JupyterLab by a real (headless) browser.

It writes a notebook that shows each widget, starts JupyterLab on it, opens it in headless Chromium
(driven by Playwright), runs all cells, sets a few controls as a person would, and saves a PNG of each
widget's output under nbs/images/. Needs Playwright (a dev dependency) and a Chromium (Debian: `apt install chromium`);
`tests/test_browser.py` drives the widgets notebook itself the same way.

    python tools/widget_screenshots.py [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lab import browser_page, find_chromium, jupyterlab, run_all

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
    "attention_viewer": "av = attention_viewer(model, tok, 'def add(a, b):\\n    \"Return the sum of a and b.\"\\n"
    "    return a + b\\n\\nfor i in range(10):\\n    print(add(i, i))\\n')\nav",
    "generation_playground": "gp = generation_playground(model, tok, prompt='The for statement')\n"
    "gp.controls['temperature'].value = 0.8\ngp.controls['max_new_tokens'].value = 40\n"
    "gp.controls['button'].click()\ngp",
}


def pattern_figure(out: Path):
    "The four patterns side by side (the README's picture), drawn by gpt3dev.widgets.plot_pattern."
    from gpt3dev.widgets import plot_patterns

    plot_patterns(["dense", "local:16", "strided:8", "fixed:8:2"], 64).savefig(out / "patterns.png", dpi=72)
    print(f"wrote {out / 'patterns.png'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chromium", default=find_chromium())
    ap.add_argument("--model", default="", help="a checkpoint to show (default: a random tiny model)")
    ap.add_argument("--out", default=str(ROOT / "nbs" / "images"))
    args = ap.parse_args()
    if not args.chromium:
        sys.exit("no Chromium found: apt install chromium, or pass --chromium PATH")
    work = Path(tempfile.mkdtemp())
    cells = [CELLS["setup"] % args.model] + [
        CELLS[k] for k in ("pattern_explorer", "attention_viewer", "generation_playground")
    ]
    nb = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None} for c in cells
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (work / "widgets.ipynb").write_text(json.dumps(nb))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pattern_figure(out)
    try:
        with jupyterlab(work) as url, browser_page(args.chromium) as page:
            try:
                run_all(page, url, "widgets.ipynb")
                page.wait_for_selector("text=/tokens, mean probability/", timeout=60_000)
            except Exception:
                page.screenshot(path=str(out / "failed.png"), full_page=True)
                raise
            time.sleep(2)
            cells = page.query_selector_all(".jp-Notebook .jp-Cell")
            for cell, name in zip(cells[1:], ["pattern_explorer", "attention_viewer", "generation_playground"]):
                area = cell.query_selector(".jp-OutputArea")
                area.scroll_into_view_if_needed()
                time.sleep(0.5)
                area.screenshot(path=str(out / f"{name}.png"))
                print(f"wrote {out / (name + '.png')}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
