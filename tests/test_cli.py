"""The console scripts, run as a user runs them: a subprocess, real files, exit codes and one-line errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import pytest
import torch

from gpt3dev.core import data_path, shared_dir

SHARED = shared_dir()
TOKENIZER = data_path("gpt2-tokenizer", must_exist=False)


def cli(*args, cwd=None):
    return subprocess.run(["gpt3dev_arch", *args], capture_output=True, text=True, cwd=cwd)


def test_arch_table_lists_every_paper_size():
    r = cli()
    assert r.returncode == 0, r.stderr
    for size in ["small", "medium", "large", "xl", "2.7b", "6.7b", "13b", "175b"]:
        assert f"gpt3-{size}" in r.stdout
    assert "16*" in r.stdout and "* gpt3-xl heads:" in r.stdout  # the paper's differences, marked and explained


def test_arch_describes_a_preset_with_its_overrides():
    r = cli("--preset", "gpt3-xl", "--set", "n_layer=2", "--set", "window_size=64")
    assert r.returncode == 0, r.stderr
    assert "2 layers, d_model 2048, 16 heads of 128" in r.stdout and "local:64" in r.stdout
    assert "vocabulary 4096" in cli("--preset", "tiny").stdout  # tiny as the trainer builds it


@pytest.mark.skipif(not TOKENIZER.exists(), reason=f"shared data not found at {SHARED} (set GPT3DEV_SHARED)")
def test_arch_saves_a_checkpoint_transformers_loads(tmp_path):
    r = cli("--preset", "tiny", "--set", "n_layer=2", "--save", str(tmp_path / "ck"), "--tokenizer", str(TOKENIZER))
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["model_type"] == "gpt3dev" and config["n_layer"] == 2 and config["vocab_size"] == 50257
    ck = str(tmp_path / "ck")
    code = (
        "import gpt3dev.modeling, torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
        f"m = AutoModelForCausalLM.from_pretrained({ck!r}); t = AutoTokenizer.from_pretrained({ck!r}); "
        "ids = t('hello world', return_tensors='pt').input_ids; "
        "print(m.generate(ids, max_new_tokens=3, do_sample=False).shape[1] - ids.shape[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("3")


def one_error_line(r, prog: str, *facts: str):
    "`r` failed with exit status 2 and one line on stderr, `prog: error: ...`, that names every one of `facts`."
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), r.stderr[-2000:]
    assert all(f in lines[0] for f in facts), (facts, lines[0])


@pytest.mark.parametrize(
    "args, facts",
    [
        (["--preset", "tiny", "--set", "n_embd=30"], ("n_embd", "30", "n_head")),
        (["--save", "somewhere"], ("--save", "--preset")),
        (["--preset", "tiny", "--set", "n_layer"], ("--set", "KEY=VALUE", "n_layer")),
        (["--preset", "tiny", "--set", "foo=1"], ("--set", "'foo'")),
        (["--seq-len", "-1"], ("--seq-len", "-1")),
        (["--preset", "gpt3-huge"], ("--preset", "gpt3-huge")),
        (["--preset", "tiny", "--save", "x", "--tokenizer", "/no/such/dir"], ("tokenizer", "/no/such/dir")),
    ],
)
def test_arch_bad_input_is_one_line_and_status_2(args, facts, tmp_path):
    r = cli(*args, cwd=tmp_path)
    one_error_line(r, "gpt3dev_arch", *facts)
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    if not TOKENIZER.exists():
        pytest.skip(f"shared data not found at {SHARED} (set GPT3DEV_SHARED)")
    d = tmp_path_factory.mktemp("ck") / "tiny"
    r = subprocess.run(
        [
            "gpt3dev_arch",
            "--preset",
            "tiny",
            "--set",
            "n_positions=512",
            "--save",
            str(d),
            "--tokenizer",
            str(TOKENIZER),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return d


def test_eval_cli_writes_metrics_and_samples(tiny_checkpoint, tmp_path):
    out, samples = tmp_path / "r.json", tmp_path / "s.jsonl"
    r = subprocess.run(
        [
            "gpt3dev_eval",
            "--model",
            str(tiny_checkpoint),
            "--data-dir",
            str(SHARED / "data"),
            "--run-lambada",
            "--run-mmlu",
            "--mmlu-tasks",
            "anatomy,virology",
            "--num-fewshot",
            "2",
            "--limit",
            "5",
            "--output",
            str(out),
            "--log-samples",
            str(samples),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["lambada"]["n"] == 5 and res["mmlu"]["n"] == 10 and res["mmlu"]["num_fewshot"] == 2
    assert set(res["mmlu"]["subjects"]) == {"anatomy", "virology"}
    assert res["settings"]["model"] == str(tiny_checkpoint)
    assert len(samples.read_text().splitlines()) == 15
    assert "lambada" in r.stdout and "2-shot" in r.stdout


EVAL_BAD_INPUT = [
    (["--model", "/no/such/model"], ("model", "/no/such/model")),
    (["--limit", "0"], ("--limit", "0")),
    (["--batch-size", "0"], ("--batch-size", "0")),
    (["--run-mmlu", "--mmlu-tasks", "astrology"], ("MMLU", "astrology")),
    (["--run-mmlu", "--num-fewshot", "9", "--mmlu-tasks", "anatomy"], ("--num-fewshot", "9")),
    (["--tasks", "hellaswag,winogrande"], ("task", "winogrande")),
    (["--data-dir", "/nonexistent", "--tasks", "lambada_openai"], ("/nonexistent/lambada/lambada_test.jsonl",)),
    (["--output", "{tmp}"], ("--output", "{tmp}", "directory")),
    (["--log-samples", "{tmp}/no/such/s.jsonl"], ("--log-samples", "{tmp}/no/such/s.jsonl", "folder")),
    (["--output", "{tmp}/both", "--log-samples", "{tmp}/both"], ("--output", "--log-samples", "same file")),
]
if not torch.cuda.is_available():  # checked before the data and the model
    EVAL_BAD_INPUT.append((["--device", "cuda"], ("device", "cuda")))


@pytest.mark.parametrize("args, facts", EVAL_BAD_INPUT)
def test_eval_cli_bad_input(tiny_checkpoint, tmp_path, args, facts):
    "Each bad input: status 2 and one line naming the flag, file or value, before any model loads or file is written."
    base = ["--data-dir", str(SHARED / "data"), "--tasks", "lambada_openai", "--limit", "2"]
    base += [] if "--model" in args else ["--model", str(tiny_checkpoint)]
    args, facts = [a.replace("{tmp}", str(tmp_path)) for a in args], [f.replace("{tmp}", str(tmp_path)) for f in facts]
    r = subprocess.run(
        ["gpt3dev_eval", *base, *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    one_error_line(r, "gpt3dev_eval", *facts)
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--output", "--log-samples"])
def test_eval_cli_keeps_an_existing_file_unless_overwrite(tiny_checkpoint, tmp_path, flag):
    "A file the user named that exists is refused before anything runs, in one line naming flag and file, and kept."
    earlier = tmp_path / "earlier.json"
    earlier.write_text("earlier results\n")
    args = [
        "gpt3dev_eval",
        "--model",
        str(tiny_checkpoint),
        "--data-dir",
        str(SHARED / "data"),
        "--tasks",
        "lambada_openai",
        "--limit",
        "2",
        flag,
        str(earlier),
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert flag in lines[0] and str(earlier) in lines[0] and "--overwrite" in lines[0], lines[0]
    assert earlier.read_text() == "earlier results\n"
    r = subprocess.run(args + ["--overwrite"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert earlier.read_text() != "earlier results\n" and "lambada" in earlier.read_text()


def test_arch_keeps_an_existing_checkpoint_unless_overwrite(tiny_checkpoint, tmp_path):
    "--save into a directory that holds a model: refused in one line naming it and --overwrite, not a byte changed."
    d = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    args = ["--preset", "tiny", "--set", "n_layer=2", "--save", str(d), "--tokenizer", "none"]
    r = cli(*args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and str(d) in lines[0] and "--overwrite" in lines[0], r.stderr
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    r = cli(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((d / "config.json").read_text())["n_layer"] == 2


def test_generate_cli_is_reproducible_and_reads_stdin(tiny_checkpoint):
    base = [
        "gpt3dev_generate",
        "--model",
        str(tiny_checkpoint),
        "--max-new-tokens",
        "12",
        "--temperature",
        "0.9",
        "--top-p",
        "0.95",
    ]
    a = subprocess.run(base + ["--prompt", "ROMEO:", "--seed", "5"], capture_output=True, text=True)
    b = subprocess.run(base + ["--seed", "5"], input="ROMEO:", capture_output=True, text=True)
    c = subprocess.run(base + ["--prompt", "ROMEO:", "--seed", "6"], capture_output=True, text=True)
    assert a.returncode == b.returncode == c.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("ROMEO:")
    assert a.stdout != c.stdout
    several = subprocess.run(
        base + ["--prompt", "ROMEO:", "--seed", "5", "--num-return-sequences", "2"], capture_output=True, text=True
    )
    assert several.returncode == 0 and several.stdout.count("ROMEO:") == 2


@pytest.mark.parametrize(
    "args, facts",
    [
        (["--temperature", "-0.1"], ("temperature", "-0.1")),
        (["--top-p", "1.2"], ("top_p", "1.2")),
        (["--prompt", "  "], ("prompt", "empty")),
        (["--chat"], ("chat template",)),
        (["--system", "be brief"], ("--system", "--chat")),
        (["--max-new-tokens", "600"], ("max_new_tokens", "context")),  # too long: the error alone, no prompt echoed
        (["--model", "/no/such/model"], ("model", "/no/such/model")),
    ],
)
def test_generate_cli_bad_input(tiny_checkpoint, args, facts):
    cmd = ["gpt3dev_generate", "--model", str(tiny_checkpoint)]
    cmd += (["--prompt", "hello"] if "--prompt" not in args else []) + args
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    one_error_line(r, "gpt3dev_generate", *facts)
    assert r.stdout == ""


INSTRUCT = SHARED / "data" / "instruct"


@pytest.mark.skipif(not INSTRUCT.exists(), reason=f"shared data not found at {SHARED} (set GPT3DEV_SHARED)")
def test_sft_cli_trains_resumes_and_chats(tiny_checkpoint, tmp_path):
    out = tmp_path / "sft"
    args = [
        "gpt3dev_sft",
        "--model",
        str(tiny_checkpoint),
        "--data",
        str(INSTRUCT / "code_alpaca_2k.json"),
        str(INSTRUCT / "glaive_toolcall_en_demo.json"),
        "--caps",
        "60",
        "20",
        "--out",
        str(out),
        "--block-size",
        "128",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--batch-size",
        "4",
        "--ckpt-steps",
        "10",
        "--eval-steps",
        "10",
        "--eval-batches",
        "2",
        "--skip-gen",
        "--wandb",
        "disabled",
        "--no-progress",
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    stats = json.loads((out / "data_stats.json").read_text())
    for name, cap in (
        ("code_alpaca_2k.json", 60),
        ("glaive_toolcall_en_demo.json", 20),
    ):  # kept: what trains, after every drop
        st = stats[str(INSTRUCT / name)]
        assert st["kept"] + st.get("dropped: no answer within block", 0) == cap, (name, st)
    assert stats[str(INSTRUCT / "glaive_toolcall_en_demo.json")].get("dropped: no answer within block"), (
        "block 128 cuts some tool calls' answers"
    )
    # resuming a finished run from its last checkpoint changes nothing and says so by logging no new steps
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()] == rows
    # a second run into the finished one is refused before it writes anything there (its data statistics included)
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = subprocess.run([a if a != "60" else "30" for a in args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and str(out) in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == kept
    r = subprocess.run(
        [
            "gpt3dev_generate",
            "--model",
            str(out / "hf"),
            "--chat",
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "8",
            "--temperature",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and len(r.stdout) > 1, r.stderr  # an untrained model may answer in blanks; it answers
    r = subprocess.run(
        [
            "gpt3dev_generate",
            "--model",
            str(out / "hf"),
            "--chat",
            "--interactive",
            "--system",
            "Be brief.",
            "--max-new-tokens",
            "6",
            "--temperature",
            "0",
        ],
        input="Hello\n\nHow are you?\n/exit\nnot read\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.count("assistant> ") == 2, (
        r.stdout,
        r.stderr,
    )  # two turns; the blank line is skipped
    r = subprocess.run(
        ["gpt3dev_generate", "--model", str(tiny_checkpoint), "--chat", "--prompt", "Hello"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "chat template" in r.stderr.strip().splitlines()[-1]
    r = subprocess.run(args + ["--out", str(tmp_path / "bad"), "--caps", "1"], capture_output=True, text=True)
    one_error_line(r, "gpt3dev_sft", "--caps")


CLIS = ["gpt3dev_train", "gpt3dev_sft", "gpt3dev_generate", "gpt3dev_arch", "gpt3dev_eval"]


def flag_helps(text: str) -> dict:
    "`{flag: its help}` from argparse's --help: an entry starts '  -', its help goes on in lines indented further."
    entries, current = [], None
    for line in text.splitlines():
        if line.startswith("  -"):
            current = [line.strip()]
            entries.append(current)
        elif line.startswith("    ") and current is not None:
            current.append(line.strip())
        else:
            current = None
    helps = {}
    for first, *rest in entries:
        spec, _, help_start = (first + "  ").partition("  ")  # the flag (with its metavar), then the help
        helps[spec.split(",")[0].split()[0]] = " ".join([help_start.strip(), *rest]).strip()
    return helps


def test_flag_helps_reads_argparse_layout():
    text = (
        "usage: x [-h]\n\noptions:\n  -h, --help            show this help message and exit\n\nmodel:\n"
        "  --preset PRESET       model size (default: tiny)\n  --init-from INIT_FROM\n"
        "                        start from this\n"
        "                        checkpoint (default: none)\n  --bare BARE\n"
    )
    assert flag_helps(text) == {
        "-h": "show this help message and exit",
        "--preset": "model size (default: tiny)",
        "--init-from": "start from this checkpoint (default: none)",
        "--bare": "",
    }


@pytest.mark.parametrize("prog", CLIS)
def test_every_flag_has_help_and_a_default(prog):
    "Each flag of each CLI: one line of help, then its default (or that it is required); a flag without help fails."
    r = subprocess.run([prog, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    helps = {k: v for k, v in flag_helps(r.stdout).items() if k != "-h"}
    assert len(helps) >= 6, r.stdout
    for flag, text in helps.items():
        said, shown, default = text.rpartition("(default: ")
        assert (shown and default.endswith(")")) or text.endswith("(required)"), (
            f"{prog} {flag}: no default shown in {text!r}"
        )
        words = (said if shown else text.removesuffix("(required)")).split()
        assert len(words) >= 2, f"{prog} {flag}: no help ({text!r})"


def test_train_help_groups_every_setting():
    r = subprocess.run(["gpt3dev_train", "--help"], capture_output=True, text=True, timeout=120)
    for group in [
        "model:",
        "data:",
        "optimisation:",
        "schedule:",
        "evaluation:",
        "device and precision:",
        "logging and checkpoints:",
        "distributed:",
    ]:
        assert f"\n{group}\n" in r.stdout, group
    for flag in ["--dropout", "--overwrite", "--allow-changes"]:
        assert flag in flag_helps(r.stdout), flag


def test_sft_takes_init_from_as_its_model():
    r = subprocess.run(["gpt3dev_sft", "--help"], capture_output=True, text=True, timeout=120)
    helps = flag_helps(r.stdout)
    assert helps["--model"].endswith("(required)") and "  --model MODEL, --init-from MODEL" in r.stdout
    r = subprocess.run(["gpt3dev_sft", "--data", "x.json"], capture_output=True, text=True, timeout=120)
    one_error_line(r, "gpt3dev_sft", "--model/--init-from")


@pytest.fixture(scope="module")
def truncated_checkpoint(tiny_checkpoint, tmp_path_factory):
    "A copy of the tiny checkpoint whose model.safetensors lost its second half (a copy or a save cut short)."
    d = tmp_path_factory.mktemp("cut") / "tiny"
    shutil.copytree(tiny_checkpoint, d)
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return d


@pytest.mark.parametrize(
    "prog, args",
    [
        ("gpt3dev_generate", ["--prompt", "hi", "--model"]),
        ("gpt3dev_eval", ["--limit", "2", "--data-dir", str(SHARED / "data"), "--model"]),
        ("gpt3dev_sft", ["--data", str(SHARED / "data" / "instruct" / "alpaca_en_demo.json"), "--model"]),
        ("gpt3dev_sft", ["--data", str(SHARED / "data" / "instruct" / "alpaca_en_demo.json"), "--init-from"]),
        ("gpt3dev_train", ["--wandb", "disabled", "--init-from"]),
    ],
)
def test_truncated_weights_are_one_line_naming_the_file(truncated_checkpoint, tmp_path, prog, args):
    r = subprocess.run(
        [
            prog,
            *args,
            str(truncated_checkpoint),
            "--out" if prog in ("gpt3dev_train", "gpt3dev_sft") else "--device",
            str(tmp_path / "run") if prog in ("gpt3dev_train", "gpt3dev_sft") else "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"{prog}: error: ") and str(truncated_checkpoint / "model.safetensors") in lines[0], (
        lines[0]
    )


def test_no_transformers_progress_bars(tiny_checkpoint, tmp_path):
    "Loading (generate) and saving (arch --save) a model draw none of transformers' bars."
    r = subprocess.run(
        ["gpt3dev_generate", "--model", str(tiny_checkpoint), "--prompt", "hi", "--max-new-tokens", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = cli("--preset", "tiny", "--set", "n_layer=2", "--save", str(tmp_path / "ck"), "--tokenizer", str(TOKENIZER))
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_ctrl_c_while_importing_is_one_line_and_130():
    "A Ctrl-C while a command's imports load (seconds, on a cold start): one line, status 130, no traceback."
    child = """
import signal, sys, time, gpt3dev.cli
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal (a background job ignores Ctrl-C)
class SlowTorch:  # stalls the import of torch, as a cold disk does, so that the interrupt lands inside it
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("importing torch", flush=True)
            time.sleep(60)
sys.meta_path.insert(0, SlowTorch())
sys.exit(gpt3dev.cli.train())
"""
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "importing torch\n"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.splitlines() == ["gpt3dev_train: interrupted while starting"], err
