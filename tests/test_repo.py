"""Repository-level checks that cannot live in a notebook: the README agrees with nbs/index.ipynb and
with CI, the code keeps to the project's format and line length, and importing gpt3dev stays cheap."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fenced_blocks(markdown: str, lang: str) -> list[str]:
    return [b.strip() for b in re.findall(rf"```{lang}\n(.*?)```", markdown, flags=re.S)]


def index_notebook():
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    md = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = ["".join(c["source"]).strip() for c in nb["cells"] if c["cell_type"] == "code"]
    return md, code


def test_readme_quickstart_matches_index():
    readme = (ROOT / "README.md").read_text()
    md, _ = index_notebook()
    assert fenced_blocks(readme, "sh") == fenced_blocks(md, "sh"), "README.md quickstart differs from nbs/index.ipynb"
    assert len(fenced_blocks(readme, "sh")) == 2, "the README gives exactly two commands: set up and run, then test"


def test_readme_example_is_the_tested_notebook_code():
    readme = (ROOT / "README.md").read_text()
    _, code = index_notebook()
    for block in fenced_blocks(readme, "python"):
        assert block in code, f"README example not found among nbs/index.ipynb's code cells:\n{block}"


def test_readme_prose_matches_index():
    readme = (ROOT / "README.md").read_text()
    md, _ = index_notebook()
    norm = lambda s: re.sub(
        r"\s+", " ", s.replace("](nbs/images/", "](images/")
    ).strip()  # pictures: paths from the root vs nbs/
    for para in re.split(r"\n\s*\n", md):
        para = para.strip()
        if para and not para.startswith("```") and not para.startswith("# gpt3dev"):
            assert norm(para) in norm(readme), f"README.md lacks this paragraph of nbs/index.ipynb:\n{para}"


def test_ci_runs_the_readme_test_command():
    test_command = fenced_blocks((ROOT / "README.md").read_text(), "sh")[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), f".ci/run does not run the README's test command: {test_command}"


def test_ci_sets_nothing_the_readme_does_not_ask_for():
    "CI runs the tests in a user's environment: every variable .ci/run exports is one the README tells the user about."
    ci, readme = (ROOT / ".ci" / "run").read_text(), (ROOT / "README.md").read_text()
    lines = [line.split("#")[0].strip() for line in ci.splitlines()]
    exported = {word.split("=")[0] for line in lines if line.startswith("export ") for word in shlex.split(line)[1:]}
    command = fenced_blocks(readme, "sh")[1]  # and NAME=value put before the test command itself
    assigned = {
        word.split("=")[0]
        for line in lines
        if command in line
        for word in shlex.split(line.split(command)[0])
        if "=" in word
    }
    assert exported, "no export found in .ci/run: the test no longer reads it"
    for name in sorted(exported | assigned):
        assert f"`{name}" in readme, f".ci/run sets {name}, which the README does not tell a user to set"
    for name in ("HF_HUB_OFFLINE", "MPLBACKEND", "WANDB_MODE"):
        assert name not in exported | assigned, (
            f".ci/run sets {name}: the tests would pass there and fail in a plain shell"
        )


def test_import_is_light():
    # what makes `import gpt3dev` fast is not importing torch; a wall-time bound would only measure the machine's load
    code = "import sys, gpt3dev; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert out == ["False", "False"], "import gpt3dev imports torch or transformers: keep the package's __init__ light"


def test_every_notebook_module_is_exported():
    mods = {p.stem for p in (ROOT / "gpt3dev").glob("*.py") if not p.stem.startswith("_")}
    for nb in sorted((ROOT / "nbs").glob("[0-9][0-9]_*.ipynb")):
        src = json.loads(nb.read_text())["cells"][1]["source"]
        m = re.search(r"#\| default_exp (\w+)", "".join(src))
        assert m and m.group(1) in mods, f"{nb.name} exports no module present in gpt3dev/"


def test_slow_and_cuda_cells_are_opt_in():
    # nbdev splits tst_flags on whitespace: 'slow|cuda' would be one flag that no cell carries, and every
    # '#| slow' cell would run in the default test command
    from configparser import ConfigParser

    cfg = ConfigParser()
    cfg.read(ROOT / "settings.ini")
    flags = cfg["DEFAULT"]["tst_flags"].split()
    assert {"slow", "cuda"} <= set(flags), flags
    used = set()
    for nb in (ROOT / "nbs").rglob("*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            src = "".join(cell["source"])
            used |= set(re.findall(r"^#\|\s*(slow|cuda)\s*$", src, flags=re.M))
    assert used <= set(flags)


def test_pictures_exist():
    "Every picture README.md and the notebooks show is in the repository."
    refs = [(ROOT, p) for p in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text())]
    for nb in (ROOT / "nbs").rglob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        refs += [
            (nb.parent, p)
            for c in cells
            if c["cell_type"] == "markdown"
            for p in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", "".join(c["source"]))
        ]
    assert len(refs) >= 5
    missing = [str(base / p) for base, p in refs if not p.startswith("http") and not (base / p).is_file()]
    assert not missing, f"pictures not found: {missing}"


def test_notebooks_name_their_kernel():
    "JupyterLab starts a notebook's kernel without asking only when the notebook names one."
    missing = [
        str(nb.relative_to(ROOT))
        for nb in sorted((ROOT / "nbs").rglob("*.ipynb"))
        if json.loads(nb.read_text())["metadata"].get("kernelspec", {}).get("name") != "python3"
    ]
    assert not missing, f"notebooks without a python3 kernelspec: {missing}"


def test_readme_example_prints_what_the_readme_shows():
    "The output quoted under the README's example is what running it prints, on any machine."
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"```python\n(.*?)```\n\n((?:    [^\n]*\n)+)", readme, flags=re.S)
    assert m, "README.md: the example should be followed by its output, indented four spaces"
    shown = "\n".join(line[4:] for line in m.group(2).splitlines())
    got = subprocess.run(
        [sys.executable, "-c", m.group(1)], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert got == shown.strip(), f"README.md shows {shown!r}, the example prints {got!r}"


def ruff(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "ruff"
    return subprocess.run([str(exe) if exe.exists() else "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_code_is_formatted_and_linted():
    "Notebooks, tests, benchmarks and tools as ruff formats them; no line over 120 columns, no ';' chains."
    r = ruff("format", "--check", "nbs", "tests", "bench", "tools")
    assert r.returncode == 0, f"run `ruff format nbs tests bench tools`, then nbdev_clean and nbdev_export:\n{r.stdout}"
    r = ruff("check", ".")
    assert r.returncode == 0, r.stdout


def test_package_lines_fit_in_120_columns():
    "The generated package too, but for the first line of nbdev's own `__all__` (it wraps the list, then prefixes it)."
    long = [
        f"{py.name}:{n}"
        for py in (ROOT / "gpt3dev").glob("*.py")
        if py.name != "_modidx.py"
        for n, line in enumerate(py.read_text().splitlines(), 1)
        if len(line) > 120 and not line.startswith("__all__ = [")
    ]
    assert not long, f"lines over 120 columns (shorten them in the notebooks): {long}"
