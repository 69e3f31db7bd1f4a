"""gpt3dev_train as a user runs it: real processes, SIGKILL, torchrun, bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("GPT3DEV_SHARED", Path(__file__).resolve().parents[2] / "shared"))
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
SMALL = ["--preset", "tiny", "--batch-size", "4", "--block-size", "64", "--total-tokens", str(40 * 4 * 64),
         "--warmup-tokens", "1024", "--ckpt-steps", "10", "--eval-steps", "20", "--eval-batches", "2",
         "--skip-gen", "--wandb", "disabled", "--no-progress"]


def losses(out):
    return [(r["step"], r["loss"], r.get("val_loss")) for r in map(json.loads, (Path(out) / "metrics.jsonl").read_text().splitlines())]


def run(*args, **kw):
    return subprocess.run(["gpt3dev_train", *args], capture_output=True, text=True, env=ENV, timeout=300, **kw)


def test_sigkill_and_resume_gives_the_same_losses(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    r = run(*SMALL, "--out", str(whole))
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen(["gpt3dev_train", *SMALL, "--out", str(broken)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = broken / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 25): time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    logged = len(metrics.read_text().splitlines())
    assert 25 <= logged < 40, logged                             # killed mid-way, after the step-20 checkpoint
    r = run(*SMALL, "--out", str(broken), "--resume")
    assert r.returncode == 0, r.stderr
    assert losses(broken) == losses(whole)                       # bitwise: same floats, step by step
    assert (broken / "weights_fingerprint.txt").read_text() == (whole / "weights_fingerprint.txt").read_text()


def test_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path):
    out = tmp_path / "run"
    assert run(*SMALL, "--out", str(out), "--total-tokens", str(20 * 4 * 64)).returncode == 0
    ckpts = out / "checkpoints"
    (ckpts / "step_00000030.pt.tmp").write_bytes(b"\x80\x02 truncated by a kill")   # what a kill during torch.save leaves
    r = run(*SMALL, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert [s for s, *_ in losses(out)] == list(range(1, 41))


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_ddp_two_processes_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r = run(*SMALL, "--out", str(one), "--batch-size", "8", "--skip-val")
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["torchrun", "--standalone", "--nproc_per_node=2", shutil.which("gpt3dev_train"), *SMALL, "--out", str(two),
                        "--batch-size", "4", "--skip-val", "--dist-timeout", "120"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = losses(one), losses(two)
    assert [s for s, *_ in a] == [s for s, *_ in b]
    assert max(abs(x[1] - y[1]) for x, y in zip(a, b)) < 1e-4


def torchrun(*args, **kw):
    return subprocess.run(["torchrun", "--standalone", "--nproc_per_node=2", shutil.which("gpt3dev_train"), *args, "--dist-timeout", "120"],
                          capture_output=True, text=True, env=ENV, timeout=300, **kw)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_fsdp_matches_one_process_and_resumes_exactly(tmp_path):
    one, whole, broken = tmp_path / "one", tmp_path / "whole", tmp_path / "broken"
    args = [*SMALL, "--total-tokens", str(30 * 8 * 64), "--batch-size", "4", "--gen-steps", "30", "--gen-tokens", "8"]
    r = run(*args, "--out", str(one), "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    r = torchrun(*args, "--fsdp", "--out", str(whole))
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = losses(one), losses(whole)
    assert [s for s, *_ in a] == [s for s, *_ in b] == list(range(1, 31))
    assert max(abs(x[1] - y[1]) for x, y in zip(a, b)) < 1e-4     # the same global batch of 8 blocks, sharded weights
    # the FSDP run's checkpoint is an ordinary one: its weights load into a plain model and equal the exported ones
    import torch
    from transformers import AutoModelForCausalLM
    import gpt3dev.modeling  # noqa: F401  (registers the architecture with the Auto classes)
    ckpt = torch.load(sorted((whole / "checkpoints").iterdir())[-1], weights_only=False)
    hf = AutoModelForCausalLM.from_pretrained(whole / "hf")
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in hf.state_dict().items())
    # SIGKILL the whole torchrun job mid-way, resume it under FSDP: the same losses, bit for bit
    p = subprocess.Popen(["torchrun", "--standalone", "--nproc_per_node=2", shutil.which("gpt3dev_train"), *args, "--fsdp", "--out", str(broken)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = broken / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 15): time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL); p.wait(timeout=60)
    assert 15 <= len(metrics.read_text().splitlines()) < 30
    r = run(*args, "--out", str(broken), "--resume")             # one process cannot take over two processes' data shares
    assert r.returncode == 2 and "was written by 2 process(es), this run has 1" in r.stderr.strip().splitlines()[-1]
    r = torchrun(*args, "--fsdp", "--out", str(broken), "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert losses(broken) == losses(whole)
    assert (broken / "weights_fingerprint.txt").read_text() == (whole / "weights_fingerprint.txt").read_text()


@pytest.mark.parametrize("args, message, code", [
    (["--data", "/no/such/corpus.txt"], "gpt3dev_train: error: data source '/no/such/corpus.txt': no such file", 2),
    (["--batch-size", "many"], "gpt3dev_train: error: argument --batch-size: invalid int value: 'many'", 2),
    (["--lr", "-1"], "gpt3dev_train: error: --lr must be > 0, got -1.0", 2),
    (["--resume"], "gpt3dev_train: error: --resume: no checkpoint in", 2),
    (["--fsdp", "--opt-state-on-cpu"], "gpt3dev_train: error: --fsdp already splits the optimizer state across processes", 2),
])
def test_bad_input_is_one_line(tmp_path, args, message, code):
    r = run(*SMALL, "--out", str(tmp_path / "run"), *args)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines()[-1].startswith(message), r.stderr


def test_empty_data_and_damaged_or_mismatched_checkpoints(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    r = run(*SMALL, "--out", str(tmp_path / "e"), "--data", str(tmp_path / "empty.txt"))
    assert r.returncode == 2 and "holds no documents" in r.stderr.strip().splitlines()[-1]
    out = tmp_path / "run"
    assert run(*SMALL, "--out", str(out), "--total-tokens", str(10 * 4 * 64)).returncode == 0
    good = sorted((out / "checkpoints").iterdir())
    r = run(*SMALL, "--out", str(out), "--resume", "--batch-size", "8")
    assert r.returncode == 2 and "was made with batch_size=4, this run has 8" in r.stderr.strip().splitlines()[-1]
    (out / "checkpoints" / "step_00000099.pt").write_bytes(b"not a checkpoint")
    r = run(*SMALL, "--out", str(out), "--resume")
    assert r.returncode == 2 and "step_00000099.pt cannot be read" in r.stderr.strip().splitlines()[-1]
    assert all(p.exists() for p in good)                          # nothing already written was touched
