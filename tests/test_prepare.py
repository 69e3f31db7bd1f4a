"""gpt3dev_prepare and training on its folders, as a user runs them: real processes, SIGKILL, one-line refusals."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gpt3dev.core import data_path, shared_dir

pytestmark = pytest.mark.skipif(
    not (shared_dir() / "data").is_dir(), reason=f"shared data not found at {shared_dir()} (set GPT3DEV_SHARED)"
)
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
SMALL = [
    "--preset",
    "tiny",
    "--batch-size",
    "4",
    "--block-size",
    "64",
    "--total-tokens",
    str(12 * 4 * 64),
    "--warmup-tokens",
    "1024",
    "--eval-steps",
    "6",
    "--eval-batches",
    "2",
    "--skip-gen",
    "--wandb",
    "disabled",
    "--no-progress",
]


def prepare(*args, **kw):
    return subprocess.run(
        ["gpt3dev_prepare", "--no-progress", *args], capture_output=True, text=True, env=ENV, timeout=300, **kw
    )


def train(*args):
    return subprocess.run(["gpt3dev_train", *SMALL, *args], capture_output=True, text=True, env=ENV, timeout=300)


def last_line(text):
    return text.strip().splitlines()[-1] if text.strip() else ""


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    "Tiny Shakespeare and WikiText, four copies each: about 2.5M GPT-2 tokens in many documents and two long ones."
    d = tmp_path_factory.mktemp("corpus")
    for i in range(4):
        (d / f"shakespeare_{i}.txt").write_bytes(data_path("text-corpus", "tinyshakespeare.txt").read_bytes())
        rows = [
            json.dumps({"text": line})
            for line in data_path("text-corpus", "wikitext-2-raw-v1.test.nonempty-lines.crlf.txt")
            .read_text()
            .splitlines()
            if line.strip()
        ]
        (d / f"wiki_{i}.jsonl").write_text("\n".join(rows) + "\n")
    return d


def test_a_killed_preparation_continues_to_the_same_bytes(tmp_path, corpus):
    args = [
        "--data",
        str(corpus),
        "--tokenizer",
        str(data_path("gpt2-tokenizer")),
        "--shard-tokens",
        "150000",
        "--workers",
        "2",
    ]
    r = prepare(*args, "--out", str(tmp_path / "whole"))
    assert r.returncode == 0, r.stderr
    whole = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert len(whole["splits"]["train"]) >= 10 and whole["complete"]
    broken = tmp_path / "broken"
    p = subprocess.Popen(
        ["gpt3dev_prepare", "--no-progress", *args, "--out", str(broken)],
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while (
        time.time() < deadline and p.poll() is None
    ):  # kill it once a few shards are recorded, in the middle of the next
        try:
            done = len(json.loads((broken / "manifest.json").read_text())["splits"]["train"])
        except (FileNotFoundError, json.JSONDecodeError):
            done = 0
        if done >= 3:
            break
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    left = json.loads((broken / "manifest.json").read_text())
    assert not left["complete"] and 3 <= len(left["splits"]["train"]) < len(whole["splits"]["train"]), left["resume"]
    r = prepare(*args, "--out", str(broken))  # the same command again
    assert r.returncode == 0, r.stderr
    assert files(broken) == files(tmp_path / "whole")


def test_prepare_refuses_what_would_lose_or_mix_data(tmp_path):
    shk = str(data_path("text-corpus", "tinyshakespeare.txt"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    r = prepare("--data", shk, "--out", str(tmp_path / "mine"))
    assert r.returncode == 2 and str(tmp_path / "mine") in last_line(r.stderr) and "not a prepared dataset" in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "a user's file"
    out = tmp_path / "prep"
    assert prepare("--data", shk, "--out", str(out), "--workers", "1").returncode == 0
    before = files(out)
    r = prepare("--data", shk, "--out", str(out))
    assert r.returncode == 2 and "--overwrite" in last_line(r.stderr) and files(out) == before
    r = prepare("--data", shk, "--out", str(out), "--val-share", "0.1", "--overwrite", "--workers", "1")
    assert r.returncode == 0 and json.loads((out / "manifest.json").read_text())["val_share"] == 0.1
    r = prepare("--data", shk, "--out", str(out), "--verify")
    assert r.returncode == 0 and "every shard matches its checksum" in r.stdout
    shard = out / "train_00000.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    r = prepare("--data", shk, "--out", str(out), "--verify")
    assert r.returncode == 2 and str(shard) in last_line(r.stderr) and "checksum" in last_line(r.stderr)
    r = prepare("--data", str(tmp_path / "nothing.txt"), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "nothing.txt" in last_line(r.stderr)
    r = prepare("--data", shk, "--out", str(tmp_path / "y"), "--workers", "-1")
    assert r.returncode == 2 and "--workers" in last_line(r.stderr)


def test_training_refuses_prepared_data_it_cannot_use(tmp_path, prepared):
    r = train("--data", str(prepared), "--tokenizer", str(data_path("gpt2-tokenizer")), "--out", str(tmp_path / "a"))
    assert (
        r.returncode == 2 and "'embedded'" in last_line(r.stderr) and "--tokenizer embedded" in last_line(r.stderr)
    ), r.stderr
    assert not (tmp_path / "a" / "metrics.jsonl").exists()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for p in prepared.iterdir():
        (damaged / p.name).write_bytes(p.read_bytes())
    (damaged / "train_00001.bin").write_bytes((damaged / "train_00001.bin").read_bytes()[:-2])
    r = train("--data", str(damaged), "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "train_00001.bin" in last_line(r.stderr) and "damaged" in last_line(r.stderr), r.stderr
    (damaged / "manifest.json").write_text(json.dumps({"format": "something else"}))
    r = train("--data", str(damaged), "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and "not a prepared dataset" in last_line(r.stderr), r.stderr


def test_training_on_prepared_data_and_text_mixed(tmp_path, prepared):
    out = tmp_path / "run"
    r = train(
        "--data",
        str(prepared),
        "embedded",
        "--data-weights",
        "3",
        "1",
        "--no-cross-doc-attention",
        "--verify-data",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13)) and rows[-1]["loss"] < rows[0]["loss"]
    assert "val_loss" in rows[5] and "val_loss" in rows[11]
