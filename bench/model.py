"""Benchmark: the gpt3dev model, against the same model with dense layers and against GPT-2.

1. Training step (forward + backward + AdamW) tokens/s, 4 layers, d=512, 8 heads, vocab 8192, batch 1, at
   T=2048 and T=8192: gpt3dev's alternating dense / local:256 layers against every layer dense (SDPA),
   next to the speedup the FLOP count predicts.
2. Generation tokens/s with the KV cache, 512 new tokens after a 32-token prompt, against transformers'
   `GPT2LMHeadModel` of identical size, both through `generate` (greedy).
3. KV-cache memory after 4096 generated tokens: gpt3dev's cache against an all-dense cache.

    python bench/model.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table  # noqa: E402

from gpt3dev.config import GPT3DevConfig, flops_per_token  # noqa: E402
from gpt3dev.modeling import GPT3DevForCausalLM, make_cache  # noqa: E402

SIZE = dict(n_layer=4, n_embd=512, n_head=8, vocab_size=8192)


def config(T, dense=False):
    layers = ["dense"] * 4 if dense else None
    return GPT3DevConfig(**SIZE, n_positions=max(T, 2048), window_size=256, attention_layers=layers)


def train_step_time(cfg, T, steps):
    torch.manual_seed(0)
    model = GPT3DevForCausalLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (1, T))

    def step():
        opt.zero_grad(set_to_none=True)
        model(ids, labels=ids, use_cache=False).loss.backward()
        opt.step()

    step()  # warm-up (allocations, AdamW state)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def training(lengths, steps):
    rows, checks = [], []
    for T in lengths:
        sparse_cfg, dense_cfg = config(T), config(T, dense=True)
        ts, td = train_step_time(sparse_cfg, T, steps), train_step_time(dense_cfg, T, steps)
        predicted = flops_per_token(dense_cfg, T) / flops_per_token(sparse_cfg, T)
        measured = td / ts
        rows.append(
            {
                "T": T,
                "all dense tok/s": f"{T / td:,.0f}",
                "gpt3dev tok/s": f"{T / ts:,.0f}",
                "measured speedup": f"{measured:.2f}x",
                "FLOP-predicted": f"{predicted:.2f}x",
                "measured / predicted": f"{measured / predicted:.0%}",
            }
        )
        if T == 8192:
            checks.append(
                (
                    f"T=8192: measured speedup >= 85% of predicted",
                    measured / predicted >= 0.85,
                    f"{measured / predicted:.0%}",
                )
            )
        if T == 2048:
            checks.append((f"T=2048: gpt3dev no slower than all-dense", measured >= 1.0, f"{measured:.2f}x"))
        print(rows[-1], file=sys.stderr, flush=True)
    return rows, checks


def generation(new_tokens, prompt_len, reps):
    torch.manual_seed(0)
    ours = GPT3DevForCausalLM(config(2048)).eval()
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=512, n_head=8, vocab_size=8192, n_positions=2048)).eval()
    prompt = torch.randint(0, 8192, (1, prompt_len))
    rows, res = [], {}
    for name, model in [("transformers GPT2LMHeadModel", gpt2), ("gpt3dev (dense / local:256)", ours)]:
        kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            model.generate(prompt, **{**kw, "max_new_tokens": 16, "min_new_tokens": 16})  # warm-up
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                out = model.generate(prompt, **kw)
                times.append(time.perf_counter() - t)
        assert out.shape[1] == prompt_len + new_tokens
        res[name] = new_tokens / min(times)
    base = res["transformers GPT2LMHeadModel"]
    for name, tps in res.items():
        rows.append({"model": name, "new tokens/s": f"{tps:.1f}", "vs GPT-2": f"{tps / base:.2f}x"})
    ratio = res["gpt3dev (dense / local:256)"] / base
    return rows, [("generation at least as fast as GPT2LMHeadModel", ratio >= 1.0, f"{ratio:.2f}x")]


def cache_memory(steps):
    torch.manual_seed(0)
    rows = {}
    for name, cfg in [
        ("all dense", config(steps + 64, dense=True)),
        ("gpt3dev (dense / local:256)", config(steps + 64)),
    ]:
        model = GPT3DevForCausalLM(cfg).eval()
        cache = make_cache(cfg)
        tok = torch.randint(0, 8192, (1, 1))
        with torch.no_grad():
            for _ in range(steps):
                tok = model(tok, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        per_layer = [layer.keys.shape[2] for layer in cache.layers]
        nbytes = sum(
            l.keys.numel() * l.keys.element_size() + l.values.numel() * l.values.element_size() for l in cache.layers
        )
        rows[name] = (per_layer, nbytes)
    dense_bytes = rows["all dense"][1]
    out = [
        {
            "cache": n,
            "positions kept per layer": str(pl),
            "MiB": f"{b / 2**20:.1f}",
            "vs all dense": f"{b / dense_bytes:.2f}x",
        }
        for n, (pl, b) in rows.items()
    ]
    local_kept = rows["gpt3dev (dense / local:256)"][0][1::2]
    return out, [
        ("local layers hold at most window (256) positions", max(local_kept) <= 256, f"{max(local_kept)} kept")
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--cache-steps", type=int, default=4096)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_rows, t_checks = training(args.T, args.steps)
    g_rows, g_checks = generation(args.new_tokens, 32, reps=3)
    c_rows, c_checks = cache_memory(args.cache_steps)
    print(
        f"## Model (`bench/model.py`)\n\nMachine: {machine()}. "
        "Model: 4 layers, d=512, 8 heads, vocab 8192, float32, batch 1.\n"
    )
    print("Training step (forward + backward + AdamW), gpt3dev against the same model with every layer dense (SDPA):\n")
    print(table(t_rows, list(t_rows[0])))
    print(
        f"\nGeneration with the KV cache, {args.new_tokens} new tokens after a 32-token prompt "
        "(greedy, `generate`), best of 3:\n"
    )
    print(table(g_rows, list(g_rows[0])))
    print(f"\nKV cache after {args.cache_steps} generated tokens:\n")
    print(table(c_rows, list(c_rows[0])))
    print(
        "\nTargets:\n"
        + "\n".join(f"- [{'x' if ok else ' '}] {text}: {detail}" for text, ok, detail in t_checks + g_checks + c_checks)
    )


if __name__ == "__main__":
    main()
