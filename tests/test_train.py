"""gpt3dev_train as a user runs it: real processes, SIGKILL, Ctrl-C and SIGTERM, torchrun, bad input.

The exact-resume grid (one run per trainer feature, each killed at a random step and resumed) is slow: it runs
when GPT3DEV_SLOW=1 is set; one representative case, with randomness in every step, always runs."""

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gpt3dev.core import shared_dir

SHARED = shared_dir()
SHAKESPEARE = SHARED / "data" / "text-corpus" / "tinyshakespeare.txt"
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
SMALL = [
    "--preset",
    "tiny",
    "--batch-size",
    "4",
    "--block-size",
    "64",
    "--total-tokens",
    str(40 * 4 * 64),
    "--warmup-tokens",
    "1024",
    "--ckpt-steps",
    "10",
    "--eval-steps",
    "20",
    "--eval-batches",
    "2",
    "--skip-gen",
    "--wandb",
    "disabled",
    "--no-progress",
]
slow = pytest.mark.skipif(not os.environ.get("GPT3DEV_SLOW"), reason="slow: set GPT3DEV_SLOW=1 to run it")
needs_torchrun = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")


def losses(out):
    return [
        (r["step"], r["loss"], r.get("val_loss"))
        for r in map(json.loads, (Path(out) / "metrics.jsonl").read_text().splitlines())
    ]


def rows(out):
    p = Path(out) / "metrics.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


def run(*args, **kw):
    return subprocess.run(
        ["gpt3dev_train", *args], capture_output=True, text=True, env=kw.pop("env", ENV), timeout=300, **kw
    )


def torchrun_cmd(*args):
    return [
        "torchrun",
        "--standalone",
        "--nproc_per_node=2",
        shutil.which("gpt3dev_train"),
        *args,
        "--dist-timeout",
        "120",
    ]


def torchrun(*args, **kw):
    return subprocess.run(torchrun_cmd(*args), capture_output=True, text=True, env=ENV, timeout=300, **kw)


def last_line(text):
    return text.strip().splitlines()[-1] if text.strip() else ""


def start(cmd):
    "A training process in its own session (so a signal reaches all of a torchrun job), its output captured."
    return subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def kill_job(p):
    """SIGKILL a run and every process it started (torchrun's workers live in sessions of their own), as a node
    failure would."""
    import psutil

    procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    p.communicate(timeout=60)


def wait_rows(p, out, n, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and rows(out) < n and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, f"the run ended before step {n}: {p.communicate()[1][-2000:]}"


def final_state(out):
    "The last checkpoint's weights and optimizer state, loaded the safe way."
    import torch

    return torch.load(sorted((Path(out) / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)


def assert_same_tensors(a, b, where=""):
    import torch

    if torch.is_tensor(a):
        assert torch.equal(a, b), where
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}/{i}")
    else:
        assert a == b, (where, a, b)


def kill_and_resume(tmp_path, args, distributed=False, steps=30, blocks_per_step=4):
    """A run killed (SIGKILL, the whole job) at a random step and resumed to the end equals the same run uninterrupted:
    the losses in metrics.jsonl, the final weights and the optimizer state, bit for bit."""
    tokens = steps * blocks_per_step * 64 * (2 if distributed else 1)
    args = [*SMALL, "--total-tokens", str(tokens), "--ckpt-steps", "7", *args]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    cmd = (
        (lambda out: torchrun_cmd(*args, "--out", str(out)))
        if distributed
        else (lambda out: ["gpt3dev_train", *args, "--out", str(out)])
    )
    r = subprocess.run(cmd(whole), capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    seed = random.randrange(10**6)
    kill_at = random.Random(seed).randrange(9, steps - 2)
    print(f"killing at step {kill_at} (seed {seed})")
    p = start(cmd(broken))
    wait_rows(p, broken, kill_at)
    kill_job(p)
    assert 8 <= rows(broken) < steps, rows(broken)
    r = subprocess.run(cmd(broken) + ["--resume"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert losses(broken) == losses(whole)  # bitwise: same floats, step by step
    a, b = final_state(whole), final_state(broken)
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")
    assert (broken / "weights_fingerprint.txt").read_text() == (whole / "weights_fingerprint.txt").read_text()


def test_sigkill_and_resume_is_exact_with_randomness_in_every_step(tmp_path):
    # dropout draws from torch's generator in every step, the mixture from the stream's,
    # over 2 accumulated micro-batches
    kill_and_resume(
        tmp_path,
        [
            "--dropout",
            "0.1",
            "--acc",
            "2",
            "--batch-size",
            "2",
            "--data",
            str(SHAKESPEARE),
            "embedded",
            "--data-weights",
            "3",
            "1",
        ],
    )


def test_sigkill_and_resume_is_exact_from_prepared_data(tmp_path, prepared):
    # blocks memory-mapped in a shuffled order, document boundaries from the stored ends,
    # mixed with text read on the fly
    kill_and_resume(
        tmp_path,
        [
            "--dropout",
            "0.1",
            "--no-cross-doc-attention",
            "--data",
            str(prepared),
            "embedded",
            "--data-weights",
            "3",
            "1",
        ],
    )


@needs_torchrun
@pytest.mark.parametrize("mode", [[], ["--fsdp"]], ids=["ddp", "fsdp"])
def test_sigkill_and_resume_is_exact_from_prepared_data_on_two_ranks(tmp_path, prepared, mode):
    # each rank reads only its own blocks, and resumes from its own few integers
    kill_and_resume(tmp_path, [*mode, "--data", str(prepared)], distributed=True, steps=20)


@slow
@pytest.mark.parametrize(
    "args",
    [
        ["--dropout", "0.1"],
        ["--acc", "3"],
        ["--optimizer", "lion", "--lr", "1e-3"],
        ["--dtype", "bf16"],
        ["--opt-state-on-cpu"],
        ["--no-cross-doc-attention"],
        ["--data", str(SHAKESPEARE), "embedded", "--data-weights", "3", "1"],
    ],
    ids=["dropout", "acc3", "lion", "bf16", "opt-state-on-cpu", "no-cross-doc-attention", "mixing"],
)
def test_sigkill_and_resume_is_exact_under_each_feature(tmp_path, args):
    kill_and_resume(tmp_path, args, blocks_per_step=4 * (3 if "--acc" in args else 1))


@slow
@needs_torchrun
def test_sigkill_and_resume_is_exact_under_ddp(tmp_path):
    kill_and_resume(tmp_path, ["--dropout", "0.1"], distributed=True, steps=20)


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    "SMALL run uninterrupted, the reference for interrupted ones."
    out = tmp_path_factory.mktemp("whole") / "run"
    r = run(*SMALL, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "Ctrl-C (SIGINT)"), (signal.SIGTERM, 143, "SIGTERM")])
def test_ctrl_c_and_sigterm_stop_cleanly_and_resume_exactly(tmp_path, whole_run, sig, code, name):
    out = tmp_path / "run"
    p = start(["gpt3dev_train", *SMALL, "--out", str(out)])
    wait_rows(p, out, random.randrange(12, 30))
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=120)
    step = rows(out)
    assert p.returncode == code, (p.returncode, stderr[-2000:])
    assert "Traceback" not in stderr, stderr
    ckpt = out / "checkpoints" / f"step_{step:08d}.pt"
    line = last_line(stderr)  # the signal, the step, the checkpoint written, and the flag that continues
    assert name in line and f"step {step} of 40" in line and str(ckpt) in line and "--resume" in line, stderr
    assert ckpt.exists()
    if sig == signal.SIGTERM:
        return  # the same stop as Ctrl-C's: one resume check is enough for CI
    r = run(*SMALL, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert losses(out) == losses(whole_run)
    assert (out / "weights_fingerprint.txt").read_text() == (whole_run / "weights_fingerprint.txt").read_text()


def test_a_checkpoint_from_before_wandb_ids_resumes_exactly(tmp_path, whole_run):
    # checkpoints written before the W&B run's id was saved lack "wandb_id": they load, and the run goes on bit for bit
    import torch

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(whole_run / "metrics.jsonl", out / "metrics.jsonl")
    state = torch.load(whole_run / "checkpoints" / "step_00000020.pt", weights_only=True)
    del state["wandb_id"]
    torch.save(state, out / "checkpoints" / "step_00000020.pt")
    r = run(*SMALL, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert losses(out) == losses(whole_run)
    assert (out / "weights_fingerprint.txt").read_text() == (whole_run / "weights_fingerprint.txt").read_text()


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, whole_run):
    import torch

    out = tmp_path / "run"
    # long steps (a 40-batch validation and a checkpoint after each):
    # the second Ctrl-C lands while the first is being honoured
    p = start(
        ["gpt3dev_train", *SMALL, "--out", str(out), "--ckpt-steps", "1", "--eval-steps", "1", "--eval-batches", "40"]
    )
    wait_rows(p, out, 5)
    p.send_signal(signal.SIGINT)
    assert p.stderr.readline().startswith("Ctrl-C (SIGINT): stopping")
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in stderr, (p.returncode, stderr[-2000:])
    newest = sorted((out / "checkpoints").glob("step_*.pt"))[-1]
    line = last_line(stderr)  # the newest complete checkpoint, and the flag that continues from it
    assert "Ctrl-C (SIGINT)" in line and str(newest) in line and "--resume" in line, stderr
    for ckpt in (out / "checkpoints").glob("step_*.pt"):
        torch.load(ckpt, weights_only=True)  # every complete one loads
    r = run(*SMALL, "--out", str(out), "--resume")  # validation and checkpoint cadence may change on resume
    assert r.returncode == 0, r.stderr
    assert not list((out / "checkpoints").glob("*.tmp"))
    assert [l[:2] for l in losses(out)] == [l[:2] for l in losses(whole_run)]


def test_a_truncated_init_from_model_is_one_line(tmp_path, whole_run):
    hf = tmp_path / "hf"
    shutil.copytree(whole_run / "hf", hf)
    weights = hf / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short, as by an interrupted copy
    r = run(*SMALL, "--out", str(tmp_path / "run"), "--init-from", str(hf))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert last_line(r.stderr).startswith("gpt3dev_train: error: ") and str(weights) in last_line(r.stderr), r.stderr


def test_a_finished_run_is_not_overwritten_by_accident(tmp_path):
    out = tmp_path / "run"
    short = [*SMALL, "--total-tokens", str(10 * 4 * 64)]
    assert run(*short, "--out", str(out)).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = run(*short, "--out", str(out), "--seed", "1")
    assert r.returncode == 2, r.stderr
    line = last_line(r.stderr)  # the folder, what it holds, and the flags that say what to do
    assert line.startswith("gpt3dev_train: error: ") and str(out) in line, r.stderr
    assert all(w in line for w in ("metrics.jsonl, checkpoints, hf", "--resume", "--overwrite")), line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # not a byte changed
    r = run(*short, "--out", str(out), "--seed", "1", "--total-tokens", str(5 * 4 * 64), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert [s for s, *_ in losses(out)] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_00000005.pt"
    ]  # the old run's checkpoints are gone
    r = run(*short, "--out", str(out), "--seed", "1", "--total-tokens", str(8 * 4 * 64), "--resume", "--allow-changes")
    assert r.returncode == 0, r.stderr  # resumes the new run, not the old one
    assert [s for s, *_ in losses(out)] == list(range(1, 9))


def test_a_run_ends_by_saying_where_the_model_is(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in ENV.items() if k != "MPLBACKEND" and not k.startswith("WANDB_")}  # as a plain shell has it
    r = run(*SMALL, "--total-tokens", str(5 * 4 * 64), "--out", str(out), "--wandb", "offline", env=env)
    assert r.returncode == 0, r.stderr
    assert (out / "loss.png").stat().st_size > 5_000  # matplotlib found a backend by itself
    tail = r.stdout.strip().splitlines()[-5:]
    assert tail[1] == f"the model: {out / 'hf'}  (metrics: {out / 'metrics.jsonl'}, curves: {out / 'loss.png'})", tail
    assert tail[2] == f"try it:    gpt3dev_generate --model {out / 'hf'} --prompt 'Hello'"
    assert tail[4].startswith(f"W&B:       wandb sync {out / 'wandb'}/offline-run-"), tail
    assert "wandb:" not in r.stdout + r.stderr and "Writing model shards" not in r.stderr, (
        r.stderr
    )  # no W&B summary or git warning
    r = subprocess.run(
        ["gpt3dev_generate", "--model", str(out / "hf"), "--prompt", "Hello", "--max-new-tokens", "4"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr  # and the advice works


@needs_torchrun
def test_ddp_two_processes_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r = run(*SMALL, "--out", str(one), "--batch-size", "8", "--skip-val")
    assert r.returncode == 0, r.stderr
    r = torchrun(*SMALL, "--out", str(two), "--batch-size", "4", "--skip-val")
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = losses(one), losses(two)
    assert [s for s, *_ in a] == [s for s, *_ in b]
    assert max(abs(x[1] - y[1]) for x, y in zip(a, b)) < 1e-4


@needs_torchrun
def test_fsdp_matches_one_process_and_resumes_exactly(tmp_path):
    one, whole, broken = tmp_path / "one", tmp_path / "whole", tmp_path / "broken"
    args = [*SMALL, "--total-tokens", str(30 * 8 * 64), "--batch-size", "4", "--gen-steps", "30", "--gen-tokens", "8"]
    r = run(*args, "--out", str(one), "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    r = torchrun(*args, "--fsdp", "--out", str(whole))
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = losses(one), losses(whole)
    assert [s for s, *_ in a] == [s for s, *_ in b] == list(range(1, 31))
    assert max(abs(x[1] - y[1]) for x, y in zip(a, b)) < 1e-4  # the same global batch of 8 blocks, sharded weights
    # the FSDP run's checkpoint is an ordinary one: its weights load into a plain model and equal the exported ones
    import torch
    from transformers import AutoModelForCausalLM
    import gpt3dev.modeling  # noqa: F401  (registers the architecture with the Auto classes)

    ckpt = torch.load(sorted((whole / "checkpoints").iterdir())[-1], weights_only=True)
    hf = AutoModelForCausalLM.from_pretrained(whole / "hf")
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in hf.state_dict().items())
    # SIGKILL the whole torchrun job mid-way, resume it under FSDP: the same losses, bit for bit
    p = start(torchrun_cmd(*args, "--fsdp", "--out", str(broken)))
    wait_rows(p, broken, 15)
    kill_job(p)
    assert 15 <= rows(broken) < 30
    r = run(*args, "--out", str(broken), "--resume")  # one process cannot take over two processes' data shares
    assert r.returncode == 2 and "was written by 2 process(es), this run has 1" in last_line(r.stderr)
    r = torchrun(*args, "--fsdp", "--out", str(broken), "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert losses(broken) == losses(whole)
    assert (broken / "weights_fingerprint.txt").read_text() == (whole / "weights_fingerprint.txt").read_text()


@pytest.mark.parametrize(
    "args, named, code",
    [
        (["--data", "/no/such/corpus.txt"], ["/no/such/corpus.txt"], 2),
        (["--batch-size", "many"], ["--batch-size", "'many'"], 2),
        (["--lr", "-1"], ["--lr", "-1.0"], 2),
        (["--resume"], ["--resume"], 2),
        (["--resume", "--overwrite"], ["--resume", "--overwrite"], 2),
        (["--fsdp", "--opt-state-on-cpu"], ["--fsdp", "--opt-state-on-cpu"], 2),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, named, code):
    r = run(*SMALL, "--out", str(tmp_path / "run"), *args)
    assert r.returncode == code and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    line = last_line(r.stderr)  # one line, naming the flag, file or value at fault
    assert line.startswith("gpt3dev_train: error: ") and all(n in line for n in named), r.stderr


def test_bad_data_is_reported(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    r = run(*SMALL, "--out", str(tmp_path / "e"), "--data", str(tmp_path / "empty.txt"))
    assert r.returncode == 2 and "holds no documents" in last_line(r.stderr), r.stderr
    (tmp_path / "noise.txt").write_bytes(random.Random(0).randbytes(50_000))  # binary data named .txt
    r = run(*SMALL, "--out", str(tmp_path / "n"), "--data", str(tmp_path / "noise.txt"))
    assert r.returncode == 2 and str(tmp_path / "noise.txt") in last_line(r.stderr), r.stderr


def test_changed_settings_damaged_and_unsafe_checkpoints(tmp_path):
    out = tmp_path / "run"
    short = [*SMALL, "--total-tokens", str(20 * 4 * 64)]
    assert run(*short, "--out", str(out)).returncode == 0
    ckpts = out / "checkpoints"
    good = sorted(ckpts.iterdir())
    assert [p.name for p in good] == ["step_00000010.pt", "step_00000020.pt"]
    # settings that change the numbers: refused, naming each change; settings that cannot: free
    r = run(*short, "--out", str(out), "--resume", "--batch-size", "8", "--lr", "0.001")
    assert r.returncode == 2, r.stderr
    line = last_line(r.stderr)  # the checkpoint, each change with both values, and the flag that accepts them
    assert str(good[-1]) in line and "--allow-changes" in line, r.stderr
    assert "batch_size: 4 -> 8" in line and "lr: None (the preset's) -> 0.001" in line, line
    r = run(*short, "--out", str(out), "--resume", "--log-steps", "1", "--eval-batches", "1", "--progress")
    assert r.returncode == 0, r.stderr
    # a damaged newest checkpoint: named, set aside, and the run resumes from the one before
    import torch

    (ckpts / "step_00000030.pt").write_bytes(good[-1].read_bytes()[:5000])  # cut short, as by a full disk
    r = run(*SMALL, "--total-tokens", str(40 * 4 * 64), "--out", str(out), "--resume", "--allow-changes")
    assert r.returncode == 0, r.stderr
    warning = r.stderr.strip().splitlines()[0]  # the damaged file, where it is kept, and the one resumed from
    assert warning.startswith("warning: ") and str(ckpts / "step_00000030.pt") in warning, r.stderr
    assert "step_00000030.pt.bad" in warning and warning.endswith("step_00000020.pt"), r.stderr
    assert "warning: --allow-changes: resuming" in r.stderr and "total_tokens: 5120 -> 10240" in r.stderr
    assert f"resuming from {ckpts / 'step_00000020.pt'} (step 20, 5,120 tokens)" in r.stdout.splitlines(), r.stdout
    assert (ckpts / "step_00000030.pt.bad").exists() and [s for s, *_ in losses(out)] == list(range(1, 41))
    # a checkpoint holding pickled objects is never loaded: with nothing else to resume from, a one-line error names it
    state = torch.load(ckpts / "step_00000040.pt", weights_only=True)
    state["note"] = Path("unpickling me calls pathlib")
    for p in ckpts.glob("step_*.pt"):
        p.unlink()
    torch.save(state, ckpts / "step_00000040.pt")
    r = run(*SMALL, "--out", str(out), "--resume")
    assert r.returncode == 2, r.stderr
    line = last_line(r.stderr)  # the file refused and the object it would have built
    assert line.startswith("gpt3dev_train: error: --resume") and str(ckpts / "step_00000040.pt") in line, r.stderr
    assert "(pathlib.PosixPath)" in line, line
