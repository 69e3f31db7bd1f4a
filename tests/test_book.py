"""`tools/book.py`, which writes the notebooks' outputs and checks them in CI: a printed number that changes
fails the check, a duration that changes does not, and a missing output fails it."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402


def notebook(path: Path, *sources: str) -> Path:
    cells = [
        {"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [], "source": s}
        for i, s in enumerate(sources)
    ]
    meta = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    path.write_text(json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))
    return path


def book_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    "tools/book.py run as a command, with `env` added to this process's environment."
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "book.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def test_masks_what_changes_between_runs_and_keeps_the_numbers():
    assert book.mask("step 10: loss 3.2500 (0.53 s, 1,234 tok/s) in /tmp/tmpab12/run") == (
        "step 10: loss 3.250_ (<time>, <rate>) in <path>"
    )
    assert book.mask("loss 3.25") != book.mask("loss 3.26")
    assert book.mask("error 2.68e-07, loss 6.9976") == book.mask("error 3.1e-07, loss 6.9975")  # CPU rounding
    assert book.mask("density 0.5002") != book.mask("density 0.500")  # a changed format still shows


def test_check_fails_on_a_changed_number_and_a_missing_output(tmp_path):
    nb = notebook(tmp_path / "demo.ipynb", "print('loss 3.25')", "import time\nprint(f'took {time.time() % 1:.3f} s')")
    assert book_cli("run", str(nb)).returncode == 0
    outputs = [c["outputs"] for c in json.loads(nb.read_text())["cells"]]
    assert outputs[0][0]["text"] == ["loss 3.25\n"] and outputs[1], "run writes what each cell prints"
    assert book_cli("check", str(nb)).returncode == 0, "a re-run that only differs in a duration passes"

    nb = notebook(nb, "print('loss 3.26')", "import time\nprint(f'took {time.time() % 1:.3f} s')")
    nb_json = json.loads(nb.read_text())
    nb_json["cells"][0]["outputs"] = outputs[0]
    nb_json["cells"][1]["outputs"] = outputs[1]
    nb.write_text(json.dumps(nb_json))
    r = book_cli("check", str(nb))
    assert r.returncode == 1 and "cell 0" in r.stdout and "loss 3.26" in r.stdout, r.stdout

    nb_json["cells"][0]["outputs"] = []
    nb.write_text(json.dumps(nb_json))
    r = book_cli("check", str(nb))
    assert r.returncode == 1 and "cell 0" in r.stdout, "an output the code prints but the file lacks fails"


def test_a_failing_cell_fails_the_check(tmp_path):
    nb = notebook(tmp_path / "broken.ipynb", "print('fine')", "raise ValueError('the cell that breaks')")
    r = book_cli("check", str(nb))
    assert r.returncode == 1 and "ValueError" in r.stderr and "broken.ipynb" in r.stderr


def test_shared_data_paths_read_the_same_wherever_shared_lies(tmp_path):
    "Written on one machine, checked on another whose `shared/` is elsewhere (CI clones beside a copy of it)."
    nb = notebook(
        tmp_path / "paths.ipynb",
        "import os\nfrom pathlib import Path\nshared = Path(os.environ['GPT3DEV_SHARED'])",
        "print(shared / 'data' / 'a.txt')",
        "shared / 'data'",
    )
    here, there = tmp_path / "here" / "shared", tmp_path / "there" / "shared"
    assert book_cli("run", str(nb), GPT3DEV_SHARED=str(here)).returncode == 0
    outputs = [c["outputs"] for c in json.loads(nb.read_text())["cells"]][1:]
    assert outputs[0][0]["text"] == ["../shared/data/a.txt\n"], outputs
    assert outputs[1][0]["data"]["text/plain"].endswith("Path('../shared/data')"), outputs
    r = book_cli("check", str(nb), GPT3DEV_SHARED=str(there))
    assert r.returncode == 0, r.stdout
