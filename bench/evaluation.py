"""Benchmark: the batched log-likelihood engine against one-request-at-a-time scoring, on HellaSwag.

The baseline is the plainest computation (what the original eval.py did, without its bugs): each of the
four endings of each example in its own forward pass, log-softmax over every position. Both compute the
same scores (checked here); the table gives examples/s and the ratio.

    python bench/evaluation.py [--examples 200] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table  # noqa: E402

from gpt3dev.config import GPT3DevConfig  # noqa: E402
from gpt3dev.core import data_path  # noqa: E402
from gpt3dev.evaluation import encode_pair, eval_hellaswag, hellaswag_docs  # noqa: E402
from gpt3dev.modeling import GPT3DevForCausalLM  # noqa: E402


@torch.no_grad()
def one_at_a_time(model, tok, docs):
    correct = 0
    for d in docs:
        scores = []
        for choice in d["choices"]:
            ctx, cont = encode_pair(tok, d["query"], " " + choice)
            logp = F.log_softmax(model(torch.tensor([ctx + cont])).logits[0, :-1].float(), -1)
            scores.append(logp[len(ctx) - 1:].gather(-1, torch.tensor(cont)[:, None]).sum().item())
        correct += max(range(4), key=lambda j: scores[j]) == d["gold"]
    return correct / len(docs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(data_path("gpt2-tokenizer"), eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = GPT3DevForCausalLM(GPT3DevConfig(vocab_size=len(tok), n_positions=512, n_embd=256, n_layer=4, n_head=4)).eval()
    docs = hellaswag_docs(data_path(), limit=args.examples)
    one_at_a_time(model, tok, docs[:5])                                   # warm-up
    t = time.perf_counter(); base_acc = one_at_a_time(model, tok, docs); base = time.perf_counter() - t
    rows = [{"engine": "one request at a time (baseline)", "batch size": 1, "examples/s": f"{len(docs) / base:.1f}", "speedup": "1.00x", "acc": f"{base_acc:.4f}"}]
    checks = []
    for bs in args.batch_size:
        t = time.perf_counter(); res = eval_hellaswag(model, tok, docs, batch_size=bs); dt = time.perf_counter() - t
        assert abs(res["acc"] - base_acc) < 1e-9, "batched scoring disagrees with the baseline"
        rows.append({"engine": "gpt3dev batched", "batch size": bs, "examples/s": f"{len(docs) / dt:.1f}", "speedup": f"{base / dt:.2f}x", "acc": f"{res['acc']:.4f}"})
        if bs == 16: checks.append(("batched engine at batch size 16 >= 4x one-at-a-time", base / dt >= 4, f"{base / dt:.2f}x"))
    # the work no engine can skip: the head at every continuation token, the body over each distinct context once
    d, V, layers = model.config.n_embd, model.config.vocab_size, model.config.n_layer
    body, head = 2 * 12 * layers * d * d, 2 * d * V                      # FLOPs per token
    ctx_tokens = cont_tokens = all_tokens = 0
    for doc in docs:
        for choice in doc["choices"]:
            ctx, cont = encode_pair(tok, doc["query"], " " + choice)
            all_tokens += len(ctx) + len(cont) - 1; cont_tokens += len(cont)
        ctx_tokens += len(ctx)
    bound = all_tokens * (body + head) / ((ctx_tokens + cont_tokens) * body + cont_tokens * head)
    print(f"## Evaluation (`bench/evaluation.py`)\n\nMachine: {machine()}. HellaSwag, first {len(docs)} validation examples "
          "(4 endings each); model: 4 layers, d=256, 4 heads, GPT-2 vocabulary (50257), float32.\n")
    print(table(rows, list(rows[0])))
    print(f"\nWork bound: the baseline runs the model and its {V}-way head over {all_tokens:,} positions; no engine can do "
          f"less than the body over {ctx_tokens + cont_tokens:,} positions (each context once) and the head over the "
          f"{cont_tokens:,} continuation tokens. The FLOP ratio, {bound:.2f}x, bounds any speedup on a compute-bound CPU.")
    print("\nTargets:\n" + "\n".join(f"- [{'x' if ok else ' '}] {t}: {d}" for t, ok, d in checks))


if __name__ == "__main__":
    main()
