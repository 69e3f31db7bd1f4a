"""The notebooks as a book: run them top to bottom and commit what a reader should see, or check that what is
committed is what the code prints now.

    python tools/book.py run [NOTEBOOK ...]     # execute and write the outputs into the notebooks
    python tools/book.py check [NOTEBOOK ...]   # execute and fail when a committed output is missing or stale

Both execute exactly the cells `nbdev_test` executes (the same nbdev and execnb machinery: cells flagged with
settings.ini's `tst_flags` are skipped unless `--flags` names them, `#| eval: false` cells never run), one fresh
process per notebook, so `check` is the notebook half of the test command and replaces `nbdev_test` rather than
running every notebook twice.

What counts as output: printed text (stdout), results and displays (text, HTML, Markdown, images). Left out,
because they change on every run or cannot be shown outside a live kernel: stderr (progress bars, warnings) and
live widget views. The shared data's path is written as `../shared`, where the README puts it, so that outputs
read the same on every machine. Volatile pieces of text (durations, rates, temporary paths, object addresses,
dates, float errors below 1e-4 and the last of four or more printed digits, which other CPUs round differently)
are masked before outputs are compared, and `run` keeps a cell's committed outputs when they match the new ones
after masking, so a re-run does not churn the diff. Figures are compared by count and kind, not by pixels. Cells
that did not run (slow cells without `--flags slow`) keep their committed outputs unchecked.
"""

import argparse
import difflib
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEEP_MIME = ("text/plain", "text/html", "text/markdown", "image/png", "image/svg+xml", "image/jpeg")

# The shared data is shown where the README puts it, beside the repository, whatever this machine calls it, so a
# path printed on one machine reads (and compares) the same on every other.
SHARED = Path(os.environ.get("GPT3DEV_SHARED") or ROOT.parent / "shared").expanduser()
SHARED_SHOWN = "../shared"
_SHARED_PATHS = re.compile(
    "(" + "|".join(map(re.escape, sorted({str(SHARED), str(SHARED.resolve())}, key=len, reverse=True))) + ")"
    r"(?=[/\s'\")\]]|$)"  # the folder itself, not a sibling whose name starts the same (`shared2`)
)

VOLATILE = [
    (re.compile(re.escape(str(ROOT)) + r"[^\s'\")\]]*|/tmp/[^\s'\")\]]*"), "<path>"),
    (re.compile(r"\btmp[a-z0-9_]{8}\b"), "<tmp>"),
    (re.compile(r"0x[0-9a-fA-F]{6,}"), "<addr>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[ T_]\d{2}[:-]?\d{2}[:-]?\d{2}(\.\d+)?|\b\d{8}[-_]\d{6}\b"), "<date>"),
    (re.compile(r"[\d.,]+\s?[kKMG]?\s?(tok|tokens|it|samples|steps|blocks|docs)/s\b"), "<rate>"),
    (re.compile(r"\b\d+(\.\d+)?\s?(ns|µs|us|ms|s|sec|secs|seconds|min|minutes)\b"), "<time>"),
    (re.compile(r"\b\d+(\.\d+)?x\b"), "<ratio>"),  # a speed-up measured in the cell
    (re.compile(r'("(?:seconds|elapsed|wall_time)":\s*)[\d.e+-]+'), r"\1<time>"),  # durations in printed JSON
]
PROGRESS = re.compile(r"\d+%\|.*\||\bit/s\]")  # a tqdm bar, as it ends up in captured text


# Float rounding differs between CPUs (their vector units sum in other orders): an error measured at 1e-7 and the
# last of four or more printed digits are what a machine, not the code, decides.
TINY = re.compile(r"\b\d(\.\d+)?e-(0[5-9]|[1-9]\d)\b")
DECIMAL = re.compile(r"\b\d+\.\d+\b")


def _last_digit(match):
    number = match.group()
    return number[:-1] + "_" if len(number.replace(".", "").lstrip("0")) >= 4 else number


def mask(text):
    "The text with its volatile pieces replaced by placeholders."
    for pattern, placeholder in VOLATILE:
        text = pattern.sub(placeholder, text)
    return DECIMAL.sub(_last_digit, TINY.sub("<tiny>", text))


def _text(value):
    return "".join(value) if isinstance(value, list) else str(value)


def portable(text):
    "Text with this machine's path to the shared data written as the README's `../shared`."
    return _SHARED_PATHS.sub(SHARED_SHOWN, text)


def reader_outputs(outputs):
    "The outputs a reader sees: stdout, results and displays in the kept formats; stderr and widget views dropped."
    kept = []
    for out in outputs:
        kind = out["output_type"]
        if kind == "stream" and out.get("name") == "stdout":
            text = portable(_without_progress(_text(out["text"])))
            if text:
                kept.append({"name": "stdout", "output_type": "stream", "text": text})
        elif kind in ("display_data", "execute_result"):
            data = {
                k: v if k.startswith("image/") else portable(_text(v))
                for k, v in out.get("data", {}).items()
                if k in KEEP_MIME
            }
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                continue  # a live widget: its text fallback says nothing to a reader of the file
            if data:
                kept.append(
                    {"data": data, "metadata": {}, "output_type": kind}
                    | ({"execution_count": None} if kind == "execute_result" else {})
                )
    return _merge_streams(kept)


def _without_progress(text):
    "Text as a terminal leaves it (each line's last carriage-return segment), progress bars left out."
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join(line for line in lines if not PROGRESS.search(line))


def _merge_streams(outputs):
    "Consecutive stdout chunks as one output, as Jupyter shows them."
    merged = []
    for out in outputs:
        if merged and out["output_type"] == "stream" and merged[-1]["output_type"] == "stream":
            merged[-1] = {**merged[-1], "text": _lines(_text(merged[-1]["text"]) + _text(out["text"]))}
        else:
            merged.append({**out, "text": _lines(_text(out["text"]))} if out["output_type"] == "stream" else out)
    return merged


def _lines(text):
    return text.splitlines(keepends=True)


def comparable(outputs):
    "What must match between committed and fresh outputs: kinds and masked text; images by kind only."
    shown = []
    for out in outputs:
        if out["output_type"] == "stream":
            shown.append(("stdout", mask(_text(out["text"]))))
            continue
        for mime, value in sorted(out["data"].items()):
            shown.append((mime, "<image>" if mime.startswith("image/") else mask(_text(value))))
    return shown


def execute(path, flags):
    "Run one notebook as nbdev_test does; return {cell id: reader outputs} for the cells that ran, and the time."
    from execnb.nbio import nb2dict
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor

    os.environ["IN_TEST"] = "1"
    sys.path.insert(0, str(ROOT))
    skip = set(get_config().tst_flags.split()) - set(flags)
    nb = NBProcessor(path, procs=FrontmatterProc, process=True).nb
    ran = []

    def skipped(cell):
        if cell.cell_type != "code" or "nbdev_export" + "(" in cell.source:
            return True
        directives = getattr(cell, "directives_", {}) or {}
        if directives.get("eval:", [""])[0].lower() == "false" or skip & directives.keys():
            return True
        cell.outputs = []
        ran.append(cell)
        return False

    start = time.time()
    shell = CaptureShell(path, mpl_format="png")
    with working_directory(Path(path).parent):
        try:
            shell.run_all(nb, exc_stop=True, preproc=skipped)
        except BaseException:
            return None, shell.prettytb(fname=path), time.time() - start
    outputs = {cell.id: reader_outputs(nb2dict(cell.outputs)) for cell in ran}
    return outputs, None, time.time() - start


def _execute(args):
    return execute(*args)


def shown(path):
    "A notebook's name as the report shows it: relative to the repository when inside it."
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def notebooks(names):
    if names:
        return [Path(n).resolve() for n in names]
    return sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def stale(path, fresh):
    "The cells whose committed outputs differ from fresh ones: [(cell number, cell id, diff lines)]."
    nb = json.loads(path.read_text())
    problems = []
    for number, cell in enumerate(nb["cells"]):
        if cell.get("id") not in fresh:
            continue
        old, new = comparable(reader_outputs(cell.get("outputs", []))), comparable(fresh[cell["id"]])
        if old != new:
            diff = difflib.unified_diff(_render(old), _render(new), "committed", "now", lineterm="", n=1)
            problems.append((number, cell["id"], list(diff)[:12]))
    return problems


def _render(shown):
    return [f"[{mime}] {line}" for mime, text in shown for line in (text.splitlines() or [""])]


def write(path, fresh):
    "Put fresh outputs into the notebook, keeping committed ones that match after masking; return cells changed."
    from execnb.nbio import nb2str
    from nbdev.clean import clean_nb
    from nbdev.config import get_config

    nb = json.loads(path.read_text())
    changed = 0
    for cell in nb["cells"]:
        if cell.get("id") not in fresh:
            continue
        new, old = fresh[cell["id"]], reader_outputs(cell.get("outputs", []))
        if comparable(old) != comparable(new):
            cell["outputs"] = new
            changed += 1
        else:
            cell["outputs"] = old  # as committed, in today's rules for what a reader sees
    cfg = get_config()
    clean_nb(
        nb,
        clear_all=False,
        allowed_metadata_keys=cfg.allowed_metadata_keys.split(),
        allowed_cell_metadata_keys=cfg.allowed_cell_metadata_keys.split(),
        clean_ids=cfg.clean_ids,
    )
    path.write_text(nb2str(nb))
    return changed


def count(path):
    "Committed outputs of a notebook: (figures, text or tables)."
    figures = texts = 0
    for cell in json.loads(path.read_text())["cells"]:
        for out in reader_outputs(cell.get("outputs", [])):
            if any(m.startswith("image/") for m in out.get("data", {})):
                figures += 1
            else:
                texts += 1
    return figures, texts


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "mode",
        choices=["run", "check", "count"],
        help="run: write outputs; check: compare; count: list committed outputs",
    )
    parser.add_argument("notebooks", nargs="*", help="notebooks (default: every notebook under nbs/)")
    parser.add_argument(
        "--flags", default="", help="space-separated test flags to run (e.g. 'slow'), as nbdev_test --flags"
    )
    parser.add_argument("--n_workers", type=int, default=min(os.cpu_count() or 1, 8), help="notebooks run at once")
    args = parser.parse_args(argv)
    paths = notebooks(args.notebooks)
    if args.mode == "count":
        for path in paths:
            figures, texts = count(path)
            print(f"{shown(path)}: {figures} figures, {texts} text/table outputs")
        return 0
    jobs = [(str(p), args.flags.split()) for p in paths]
    failed, outdated = [], []
    with ProcessPoolExecutor(max_workers=max(args.n_workers, 1), max_tasks_per_child=1) as pool:
        for path, (fresh, error, seconds) in zip(paths, pool.map(_execute, jobs)):
            name = shown(path)
            if error is not None:
                failed.append(name)
                print(f"{name}: FAILED after {seconds:.0f} s\n{error}", file=sys.stderr)
            elif args.mode == "run":
                print(f"{name}: {write(path, fresh)} cells with new outputs ({seconds:.0f} s)")
            else:
                problems = stale(path, fresh)
                outdated += [name] if problems else []
                print(f"{name}: {'STALE' if problems else 'ok'} ({len(fresh)} cells compared, {seconds:.0f} s)")
                for number, cell_id, diff in problems:
                    print(f"  cell {number} (id {cell_id}): committed output is not what the code prints now")
                    print("    " + "\n    ".join(diff))
    if failed:
        print(f"notebooks failed: {', '.join(map(str, failed))}", file=sys.stderr)
    if outdated:
        print(
            f"stale outputs in: {', '.join(map(str, outdated))}; "
            "refresh them with `python tools/book.py run` and commit",
            file=sys.stderr,
        )
    if not failed and not outdated:
        print("Success.")
    return 1 if failed or outdated else 0


if __name__ == "__main__":
    sys.exit(main())
