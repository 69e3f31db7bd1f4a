"""The widgets notebook as a person meets it: opened in JupyterLab in a real browser, Run All, then looked at.

`nbdev_test` runs the same cells headless, where a figure that JupyterLab would show as the text
`<Figure size 600x600 with 1 Axes>` passes unnoticed. This test needs Chromium and Playwright; without them it
is skipped with the reason, unless `GPT3DEV_BROWSER_TESTS=1` (set by CI), where a missing browser is a failure.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from lab import browser_page, find_chromium, jupyterlab, run_all, save  # noqa: E402

REQUIRED = os.environ.get("GPT3DEV_BROWSER_TESTS") == "1"


def _browser():
    chromium = find_chromium()
    try:
        import playwright.sync_api  # noqa: F401

        missing = None if chromium else "Chromium (apt install chromium, or set GPT3DEV_CHROMIUM)"
    except ImportError:
        missing = "playwright (pip install playwright)"
    if missing:
        if REQUIRED:
            pytest.fail(f"GPT3DEV_BROWSER_TESTS=1 but {missing} is missing")
        pytest.skip(f"browser test skipped: {missing} is missing")
    return chromium


def texts(output) -> str:
    data = output.get("data", {})
    return "".join(output.get("text", "")) + "".join(data.get("text/plain", ""))


def test_widgets_notebook_in_jupyterlab():
    chromium = _browser()
    work = Path(tempfile.mkdtemp())
    try:
        nb_path = work / "10_widgets.ipynb"
        shutil.copy(ROOT / "nbs" / "10_widgets.ipynb", nb_path)
        shutil.copytree(ROOT / "nbs" / "images", work / "images")  # the screenshots its markdown shows
        with jupyterlab(work, log=work / "lab.log") as url, browser_page(chromium) as page:
            try:
                run_all(page, url, nb_path.name, timeout_s=400)
                page.wait_for_timeout(1500)  # let widget views finish rendering
                stderr = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"] .jp-RenderedText'
                dom = page.evaluate(
                    """() => ({
                    errors: document.querySelectorAll('%s, .jp-OutputArea-output .ansi-red-fg').length,
                    widgetImages: document.querySelectorAll(
                        '.jupyter-widgets .jp-OutputArea-output img, .widget-output img').length,
                    tokens: [...document.querySelectorAll('.widget-html span[title^="p = "]')].length,
                    status: [...document.querySelectorAll('.widget-html')].map(e => e.textContent)
                        .filter(t => t.includes('tokens, mean probability')),
                    figureText: [...document.querySelectorAll('.jp-OutputArea-output')]
                        .filter(e => e.textContent.includes('<Figure size')).length})"""
                    % stderr
                )
                saved = save(page, nb_path)
            except Exception:
                page.screenshot(path=str(work / "failed.png"), full_page=True)
                shutil.copytree(work, ROOT / "browser-test-failure", dirs_exist_ok=True)
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)

    outputs = [o for c in saved["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, f"cells raised in JupyterLab: {[e['ename'] + ': ' + e['evalue'] for e in errors]}"
    as_text = [texts(o)[:80] for o in outputs if "<Figure size" in texts(o) and "image/png" not in o.get("data", {})]
    assert not as_text and dom["figureText"] == 0, f"figures shown as text instead of pictures: {as_text}"
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 3, f"expected the 3 figures the notebook returns, each shown once; got {len(pictures)}"
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 3, f"expected the explorer, the viewer and the playground; got {len(widgets)} widget outputs"
    # each widget ends in a state worth looking at: pictures drawn, and the playground showing a generation
    assert dom["widgetImages"] >= 2, (
        f"the explorer and the viewer should each show a picture; the page has {dom['widgetImages']}"
    )
    assert dom["tokens"] >= 40 and dom["status"], (
        f"the playground shows {dom['tokens']} generated tokens, status {dom['status']}"
    )
