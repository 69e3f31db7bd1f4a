"""Benchmark: does the data pipeline feed the hardware, and does its order train as well as random windows?

Each part prints a table of ratios against a baseline measured in the same run:

1. delivery: tokens/s that one process gets from `TokenStream` on a prepared folder, at world sizes 1 and 8
   (the rank's own blocks), against the same text tokenized on the fly (the pre-`gpt3dev_prepare` path).
   Goal: >= 20M tokens/s per rank, not falling as ranks are added.
2. preparation: `gpt3dev_prepare`'s tokens/s with 1 and 2 worker processes. Goal: >= 1.7x with 2.
3. resume: seconds from `--resume` (a fresh stream and `load_state_dict`) to the first batch, near the start
   and near the end of a 1-billion-token prepared folder (sparse synthetic shards). Goal: equal, under 1 s.
4. background loading: a training step fed by `Prefetcher` against the same step with its batch already in
   memory. Goal: within 3%.
5. memory: peak memory (proportional set size of the process and its workers) while preparing a 1 GB text
   file. Goal: under 500 MB. (`--skip-memory` leaves it out: it takes a few minutes.)
6. quality (`--quality`): the nanoGPT CPU recipe (4 layers, d_model 128, block 64, batch 12, AdamW 1e-3, 2,000
   steps) on Tiny Shakespeare's GPT-2 tokens, trained with uniformly random 64-token windows of the training
   tokens (nanoGPT's sampler) and with gpt3dev's on-the-fly and prepared streams, scored on the same held-out
   tokens. Goal: gpt3dev within 0.02 nats/token of random windows.

    python bench/data.py [--quality] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table  # noqa: E402

from gpt3dev.config import GPT3DevConfig  # noqa: E402
from gpt3dev.core import data_path  # noqa: E402
from gpt3dev.data import (
    MANIFEST,
    PreparedBlocks,
    Prefetcher,
    TokenStream,
    load_tokenizer,
    prepare,  # noqa: E402
    read_manifest,
    tokenizer_fingerprint,
)
from gpt3dev.modeling import GPT3DevForCausalLM  # noqa: E402


def corpus(folder: Path, copies: int) -> Path:
    "Tiny Shakespeare and WikiText (as JSON Lines of paragraphs), `copies` times each: real English of both shapes."
    folder.mkdir(parents=True, exist_ok=True)
    wiki = [
        json.dumps({"text": line})
        for line in data_path("text-corpus", "wikitext-2-raw-v1.test.nonempty-lines.crlf.txt").read_text().splitlines()
        if line.strip()
    ]
    for i in range(copies):
        (folder / f"shakespeare_{i}.txt").write_bytes(data_path("text-corpus", "tinyshakespeare.txt").read_bytes())
        (folder / f"wiki_{i}.jsonl").write_text("\n".join(wiki) + "\n")
    return folder


def delivered(stream, batch: int, seconds: float = 3.0) -> float:
    "Tokens/s that `stream.batch(batch)` delivers (after one warm-up batch)."
    stream.batch(batch)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += stream.batch(batch).numel()
    return n / (time.perf_counter() - t0)


def delivery(text: Path, prepared: Path, tokenizer, block: int, batch: int) -> list[dict]:
    rows = []
    for world in (1, 8):
        fly = delivered(TokenStream(str(text), tokenizer, block, rank=0, world_size=world, shuffle=0), batch)
        prep = delivered(TokenStream(str(prepared), tokenizer, block, rank=0, world_size=world), batch)
        rows.append(
            {"world size": world, "path": "on the fly (baseline)", "tokens/s per rank": f"{fly:,.0f}", "ratio": "1.0x"}
        )
        rows.append(
            {
                "world size": world,
                "path": "prepared, memory-mapped",
                "tokens/s per rank": f"{prep:,.0f}",
                "ratio": f"{prep / fly:,.0f}x",
            }
        )
    return rows


def preparation(text: Path, tokenizer, root: Path) -> tuple[list[dict], float]:
    rows, rates = [], {}
    for workers in (1, 2):
        out = root / f"prepared_{workers}"
        t0 = time.perf_counter()
        m = prepare(str(text), tokenizer, out, "gpt2", workers=workers, progress=False, shard_tokens=10_000_000)
        seconds = time.perf_counter() - t0
        tokens = sum(s["tokens"] for shards in m["splits"].values() for s in shards)
        rates[workers] = tokens / seconds
        rows.append(
            {
                "workers": workers,
                "tokens": f"{tokens:,}",
                "seconds": f"{seconds:.1f}",
                "tokens/s": f"{rates[workers]:,.0f}",
                "ratio": f"{rates[workers] / rates[1]:.2f}x",
            }
        )
    return rows, rates[2] / 2


def synthetic(folder: Path, tokenizer, tokens: int, shards: int = 10) -> Path:
    "A prepared folder of `tokens` tokens in sparse files (zeros that take no disk), with a manifest like a real one."
    folder.mkdir(parents=True, exist_ok=True)
    per = tokens // shards
    entries = []
    for i in range(shards):
        for name, size in ((f"train_{i:05d}.bin", 2 * per), (f"train_{i:05d}.idx", 8 * 1000)):
            with open(folder / name, "wb") as fh:
                fh.truncate(size)
        entries.append(
            {
                "file": f"train_{i:05d}.bin",
                "tokens": per,
                "documents": 1000,
                "max_id": 0,
                "sha256": "",
                "index": f"train_{i:05d}.idx",
                "index_sha256": "",
            }
        )
    manifest = {
        "format": "gpt3dev-prepared",
        "version": 1,
        "complete": True,
        "dtype": "uint16",
        "tokenizer": {
            "name": "gpt2",
            "fingerprint": tokenizer_fingerprint(tokenizer),
            "eos_id": 50256,
            "vocab_size": 50257,
        },
        "splits": {"train": entries, "validation": []},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def resume(folder: Path, tokenizer, block: int, batch: int) -> list[dict]:
    rows, base = [], None
    total = sum(s["tokens"] for s in read_manifest(folder)["splits"]["train"])
    for where, fraction in (("near the start", 0.001), ("near the end", 0.999)):
        state = TokenStream(str(folder), tokenizer, block, world_size=8).state_dict()
        state["streams"][0]["index"] = int(fraction * total / block / 8)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            s = TokenStream(str(folder), tokenizer, block, world_size=8)
            s.load_state_dict(state)
            s.batch(batch)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        base = base or t
        rows.append(
            {
                "position": f"{where} (block {state['streams'][0]['index']:,} of rank 0)",
                "seconds to first batch": f"{t:.4f}",
                "ratio": f"{t / base:.2f}x",
            }
        )
    return rows


def background(prepared: Path, tokenizer, steps: int = 20) -> list[dict]:
    "The same model step fed from memory and through the prefetcher (median of `steps` steps each, alternating)."
    torch.manual_seed(0)
    cfg = GPT3DevConfig(vocab_size=50257, n_positions=256, n_embd=128, n_layer=4, n_head=4)
    model = GPT3DevForCausalLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x):
        opt.zero_grad(set_to_none=True)
        model(input_ids=x, labels=x, use_cache=False).loss.backward()
        opt.step()

    ready = TokenStream(str(prepared), tokenizer, 256).batch(8)
    fed = Prefetcher(TokenStream(str(prepared), tokenizer, 256), 8)
    mem, pre = [], []
    for _ in range(3):
        step(ready)
        step(fed.batch(8))
    for _ in range(steps):
        t = time.perf_counter()
        step(ready)
        mem.append(time.perf_counter() - t)
        t = time.perf_counter()
        step(fed.batch(8))
        pre.append(time.perf_counter() - t)
    fed.close()
    a, b = statistics.median(mem), statistics.median(pre)
    return [
        {"step fed": "batch already in memory (baseline)", "ms": f"{1000 * a:.1f}", "ratio": "1.00x"},
        {"step fed": "Prefetcher (prepared data)", "ms": f"{1000 * b:.1f}", "ratio": f"{b / a:.3f}x"},
    ]


def memory(root: Path, tokenizer, size: int = 1 << 30) -> list[dict]:
    "Peak proportional set size of `gpt3dev_prepare` and its workers while it prepares a `size`-byte (1 GiB) text file."
    import psutil

    big = root / "big.txt"
    piece = (
        data_path("text-corpus", "tinyshakespeare.txt").read_bytes()
        + data_path("text-corpus", "wikitext-2-raw-v1.test.nonempty-lines.crlf.txt").read_bytes()
    )
    with open(big, "wb") as fh:
        while fh.tell() < size:
            fh.write(piece)
    cmd = [
        "gpt3dev_prepare",
        "--no-progress",
        "--data",
        str(big),
        "--out",
        str(root / "big"),
        "--tokenizer",
        str(data_path("gpt2-tokenizer")),
        "--workers",
        "2",
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, proc = 0, psutil.Process(p.pid)
    t0 = time.perf_counter()
    while p.poll() is None:
        try:
            pss = sum(q.memory_full_info().pss for q in [proc, *proc.children(recursive=True)])
            peak = max(peak, pss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    out, err = p.communicate()
    if p.returncode:
        raise RuntimeError(err)
    size = big.stat().st_size
    big.unlink()
    shutil.rmtree(root / "big")
    return [
        {
            "input": f"{size / 2**30:.2f} GiB .txt (one document)",
            "workers": 2,
            "seconds": f"{seconds:.0f}",
            "peak memory (PSS, all processes)": f"{peak / 2**20:.0f} MiB",
            "goal": "500 MiB",
            "ratio to goal": f"{peak / (500 * 2**20):.2f}x",
        }
    ]


def quality(tokenizer, name: str, steps: int) -> list[dict]:
    "nanoGPT's CPU recipe three ways, on the same training tokens, scored on the same held-out tokens."
    shk = str(data_path("text-corpus", "tinyshakespeare.txt"))
    with tempfile.TemporaryDirectory() as d:
        prepare(shk, tokenizer, f"{d}/p", name, val_share=0.1, workers=1, progress=False)
        m = read_manifest(f"{d}/p")

        def tokens(split):
            return np.concatenate(
                [np.fromfile(Path(d, "p", s["file"]), dtype=m["dtype"]) for s in m["splits"][split]]
            ).astype(np.int64)

        train_tokens, held = tokens("train"), tokens("validation")

        def random_windows():
            g = torch.Generator().manual_seed(1337)
            while True:
                ix = torch.randint(len(train_tokens) - 64, (12,), generator=g)
                yield torch.stack([torch.from_numpy(train_tokens[i : i + 64]) for i in ix.tolist()])

        def stream(source, **kw):
            s = TokenStream(source, tokenizer, 64, val_share=0.1, seed=1337, **kw)
            while True:
                yield s.batch(12)

        samplers = {
            "uniformly random windows (nanoGPT, baseline)": random_windows(),
            "gpt3dev on the fly (shuffle buffer 1024)": stream(shk, shuffle=1024),
            "gpt3dev prepared (shuffled, shifted epochs)": stream(f"{d}/p"),
        }
        results = {}
        for name, batches in samplers.items():
            torch.manual_seed(1337)
            cfg = GPT3DevConfig(
                vocab_size=len(tokenizer),
                n_positions=64,
                n_embd=128,
                n_layer=4,
                n_head=4,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                attention_layers=["dense"] * 4,
            )
            model = GPT3DevForCausalLM(cfg).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
            for it in range(steps):
                lr = (
                    1e-3 * min(1.0, (it + 1) / 100)
                    if it < 100
                    else 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * (it - 100) / (steps - 100)))
                )
                for g in opt.param_groups:
                    g["lr"] = lr
                x = next(batches)
                loss = model(input_ids=x, labels=x, use_cache=False).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            results[name] = held_out_loss(model, held)
    base = next(iter(results.values()))
    return [
        {"sampler": k, "held-out nats/token": f"{v:.4f}", "difference": f"{v - base:+.4f}"} for k, v in results.items()
    ]


@torch.no_grad()
def held_out_loss(model, held: np.ndarray) -> float:
    "Mean next-token loss over every 64-token window of the held-out tokens (non-overlapping)."
    model.eval()
    n = (len(held) - 1) // 64
    x = torch.from_numpy(held[: n * 64].reshape(n, 64))
    total, count = 0.0, 0
    for chunk in x.split(64):
        total += model(input_ids=chunk, labels=chunk, use_cache=False).loss.item() * chunk.numel()
        count += chunk.numel()
    return total / count


def pipeline_tables(args, tokenizer):
    "Parts 1-5: preparation, delivery, resume, background loading, memory."
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        text = corpus(root / "text", args.copies)
        rows, per_core = preparation(text, tokenizer, root)
        print(
            "## Preparation (GPT-2 tokenizer)\n\n"
            + table(rows, ["workers", "tokens", "seconds", "tokens/s", "ratio"])
            + "\n"
        )
        print(f"per worker at 2 workers: {per_core:,.0f} tokens/s\n")
        print(
            "## Delivery to one rank (GPT-2 tokens, blocks of 2048, batches of 16)\n\n"
            + table(
                delivery(text, root / "prepared_2", tokenizer, 2048, 16),
                ["world size", "path", "tokens/s per rank", "ratio"],
            )
            + "\n"
        )
        print(
            "## Resume to first batch, 1-billion-token folder, 8 ranks\n\n"
            + table(
                resume(synthetic(root / "billion", tokenizer, 1_000_000_000), tokenizer, 2048, 16),
                ["position", "seconds to first batch", "ratio"],
            )
            + "\n"
        )
        print(
            "## Training step with background loading (4 layers, d_model 128, batch 8 x 256)\n\n"
            + table(background(root / "prepared_2", tokenizer), ["step fed", "ms", "ratio"])
            + "\n"
        )
        if not args.skip_memory:
            print(
                "## Memory while preparing a large .txt\n\n"
                + table(
                    memory(root, tokenizer, args.memory_bytes),
                    ["input", "workers", "seconds", "peak memory (PSS, all processes)", "goal", "ratio to goal"],
                )
                + "\n"
            )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=8, help="copies of the two corpora in the delivery/preparation text")
    ap.add_argument("--skip-memory", action="store_true", help="leave out the large preparation")
    ap.add_argument(
        "--memory-bytes", type=int, default=1 << 30, help="size of the .txt prepared to measure memory (1 GiB)"
    )
    ap.add_argument("--quality", action="store_true", help="also train the nanoGPT recipe three ways (minutes)")
    ap.add_argument("--only-quality", action="store_true", help="the quality comparison alone")
    ap.add_argument("--steps", type=int, default=2000, help="training steps of each quality run")
    ap.add_argument(
        "--quality-tokenizer",
        default=None,
        help="tokenizer of the quality runs (default GPT-2's; embedded: 12x cheaper)",
    )
    args = ap.parse_args()
    print(f"machine: {machine()}\n")
    tokenizer = load_tokenizer(str(data_path("gpt2-tokenizer")))
    if not args.only_quality:
        pipeline_tables(args, tokenizer)
    if args.quality or args.only_quality:
        name = args.quality_tokenizer or "gpt2"
        tok = load_tokenizer(args.quality_tokenizer) if args.quality_tokenizer else tokenizer
        print(
            f"## Loss per token: samplers compared ({args.steps} steps each, tokenizer {name})\n\n"
            + table(quality(tok, name, args.steps), ["sampler", "held-out nats/token", "difference"])
            + "\n"
        )


if __name__ == "__main__":
    main()
