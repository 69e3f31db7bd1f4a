"""Benchmark: whole validation sets scored by gpt3dev's engine, against one request at a time, in the same run.

HellaSwag (10,042 documents), LAMBADA (5,153) and MMLU (14,042 questions, 0-shot as `lm_eval --tasks mmlu`)
are scored on the `tiny` preset as `gpt3dev_train --preset tiny` builds it (random weights, its embedded
4096-token tokenizer; `--tokenizer gpt2` for the GPT-2 files in shared/data and a 50,257-token head) through
`evaluate`, the function behind `gpt3dev_eval`. The baseline is the plainest computation, what the harness does at
batch size 1: each request alone, the full model and its log-softmax over every position
(`gpt3dev.evaluation.reference_loglikelihood`, which the notebook and the tests also hold the engine to). It is
timed on a fixed random sample of each task's requests and extrapolated to the task, or on every request with
a `--baseline-requests` at least the task's size (about seven minutes for all three on 2 idle cores); its
log-likelihoods and greedy flags must equal the engine's for every request it scores.

    python bench/evaluation.py [--baseline-requests 300] [--batch-size 16] [--limit N] [--tokenizer embedded|gpt2]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table  # noqa: E402

from gpt3dev.config import GPT3DevConfig  # noqa: E402
from gpt3dev.core import data_path  # noqa: E402
from gpt3dev.data import load_tokenizer  # noqa: E402
from gpt3dev.evaluation import TASKS, evaluate, reference_loglikelihood, task_docs  # noqa: E402
from gpt3dev.modeling import GPT3DevForCausalLM  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--baseline-requests",
        type=int,
        default=300,
        help="requests per task timed one at a time, a random sample; more than the task has times all of them "
        "(default: 300)",
    )
    ap.add_argument("--batch-size", type=int, default=16, help="the engine's batch size (default: 16)")
    ap.add_argument("--limit", type=int, help="documents per task, per MMLU subject (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    ap.add_argument(
        "--sample",
        type=int,
        help="HellaSwag/LAMBADA: score a fixed random sample of N documents, extrapolate the time (default: all)",
    )
    ap.add_argument(
        "--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="tasks to score (default: all three)"
    )
    ap.add_argument(
        "--n-positions",
        type=int,
        default=256,
        help="context window; the preset's 128 cannot hold HellaSwag's longest ending in the embedded tokenizer, "
        "133 tokens (default: 256)",
    )
    ap.add_argument(
        "--tokenizer",
        default="embedded",
        choices=["embedded", "gpt2"],
        help="embedded: gpt3dev_train's tiny-model tokenizer (4096 tokens); gpt2: shared/data's GPT-2 files "
        "(default: embedded)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tok = load_tokenizer("embedded" if args.tokenizer == "embedded" else str(data_path("gpt2-tokenizer")))
    torch.manual_seed(0)
    model = GPT3DevForCausalLM(
        GPT3DevConfig.from_preset(
            "tiny",
            vocab_size=len(tok),
            n_positions=args.n_positions,
            bos_token_id=tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).eval()
    window, load0 = model.config.n_positions, os.getloadavg()[0]
    rows, checks = [], []
    for task in args.tasks:
        t = time.perf_counter()
        docs = task_docs(task, data_path(), args.limit)
        scale = 1.0
        if args.sample and task != "mmlu" and args.sample < len(docs):
            scale, docs = len(docs) / args.sample, random.Random(0).sample(docs, args.sample)
        res = evaluate(model, tok, task, batch_size=args.batch_size, log_samples=True, progress=True, docs={task: docs})
        engine = (time.perf_counter() - t) * scale
        reqs = [r for s in res["samples"] for r in s["requests"]]
        sample = random.Random(0).sample(reqs, min(args.baseline_requests, len(reqs)))
        reference_loglikelihood(model, tok, sample[0]["context"], sample[0]["continuation"])  # warm-up
        t = time.perf_counter()
        base = [reference_loglikelihood(model, tok, r["context"], r["continuation"]) for r in sample]
        per_request = (time.perf_counter() - t) / len(sample)
        worst = max(abs(ll - r["loglikelihood"]) for (ll, _), r in zip(base, sample))
        relative = max(abs(ll - r["loglikelihood"]) / max(1.0, abs(ll)) for (ll, _), r in zip(base, sample))
        same_greedy = all(g == r["is_greedy"] for (_, g), r in zip(base, sample))
        # float32 sums over up to ~130 continuation tokens: equal within 1e-4 relative, as the engine's own probe asks
        checks.append(
            (
                f"{task}: the engine's scores equal one-at-a-time on "
                + (
                    f"all {len(sample):,} requests" if len(sample) == len(reqs) else f"{len(sample):,} sampled requests"
                ),
                relative <= 1e-4 and same_greedy,
                f"largest difference {worst:.1e} ({relative:.1e} relative), "
                f"greedy flags {'equal' if same_greedy else 'DIFFER'}",
            )
        )
        r = res[task]
        metrics = ", ".join(
            f"{k} {v:.4f}" if v < 1e6 else f"{k} {v:.4e}"
            for k, v in r.items()
            if k in ("acc", "acc_norm", "perplexity")
        )
        n_reqs = len(reqs) * scale
        rows.append(
            {
                "task": task,
                "documents": f"{r['n']:,}"
                + (f" of {r['n'] * scale:,.0f} (a random sample; times extrapolated)" if scale > 1 else ""),
                "requests": f"{n_reqs:,.0f}",
                "gpt3dev (s)": f"{engine:.0f}",
                "requests/s": f"{n_reqs / engine:.0f}",
                "one at a time (s)": f"{per_request * n_reqs:.0f}"
                + ("" if len(sample) == n_reqs else f" (extrapolated from {len(sample)} timed)"),
                "speedup": f"{per_request * n_reqs / engine:.1f}x",
                "metrics": metrics,
            }
        )
        print(rows[-1], flush=True)
    total_engine = sum(float(r["gpt3dev (s)"]) for r in rows)
    total_base = sum(float(r["one at a time (s)"].split()[0]) for r in rows)
    rows.append(
        {
            "task": "all three",
            "gpt3dev (s)": f"{total_engine:.0f}",
            "one at a time (s)": f"{total_base:.0f}",
            "speedup": f"{total_base / total_engine:.1f}x",
        }
    )
    print(
        f"## Evaluation (`bench/evaluation.py`)\n\nMachine: {machine()}; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. Model: the `tiny` preset (4 layers, d=64, 4 heads, random weights) "
        f"with {window} positions with the {args.tokenizer} tokenizer ({len(tok):,} tokens), float32; "
        f"engine batch size {args.batch_size}, shared contexts.\n"
    )
    print(table(rows, list(rows[0])))
    print("\nChecks:\n" + "\n".join(f"- [{'x' if ok else ' '}] {t}: {d}" for t, ok, d in checks))


if __name__ == "__main__":
    main()
