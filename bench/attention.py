"""Benchmark: gpt3dev's attention kernels against SDPA with a dense boolean mask of the same pattern.

For each pattern and sequence length (B=1, H=12, D=64, float32) it times the forward pass and the
forward+backward pass, and measures the peak memory of forward+backward above the inputs. Every row
is printed as a ratio against the baseline measured in the same run: `torch`'s SDPA given the pattern as
a dense boolean mask. Also shown: dense causal SDPA (`is_causal=True`, what a dense layer costs) and the
eager additive-mask attention of the project gpt3dev supersedes.

    python bench/attention.py                       # T = 512 … 8192, 2 threads
    python bench/attention.py --T 1024 4096 --patterns local:256
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, peak_memory, table, timeit  # noqa: E402

from gpt3dev.attention import sparse_attention  # noqa: E402
from gpt3dev.patterns import Dense, parse  # noqa: E402

B, H, D = 1, 12, 64
EAGER_MAX_BYTES = 6 * 2**30  # the eager baseline keeps ~4 T×T float tensors per head; skip it past this


def eager_additive(q, k, v, pattern):
    "The original project's sparse layer: full scores, plus a 0/-inf additive mask, softmax, weighted sum."
    T = q.shape[2]
    mask = torch.zeros(T, T).masked_fill(~pattern.dense(T), float("-inf"))
    w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask
    return torch.matmul(torch.softmax(w, dim=-1), v)


def kernels(pattern):
    "Name -> attention function (q, k, v) -> out; the first is the baseline."
    bool_mask = {}

    def sdpa_mask(q, k, v):
        T = q.shape[2]
        if T not in bool_mask:
            bool_mask.clear()
            bool_mask[T] = pattern.dense(T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask[T])

    return {
        "sdpa + dense mask (baseline)": sdpa_mask,
        "sdpa causal (dense layer)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "eager additive mask (original)": lambda q, k, v: eager_additive(q, k, v, pattern),
        "gpt3dev blocked": lambda q, k, v: sparse_attention(q, k, v, pattern, backend="blocked"),
        "gpt3dev flex (forward only on CPU)": lambda q, k, v: sparse_attention(q, k, v, pattern, backend="flex"),
        "gpt3dev auto": lambda q, k, v: sparse_attention(q, k, v, pattern),
    }


def measure(fn, T, reps, do_memory=True, backward=True):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, requires_grad=backward) for _ in range(3))
    g = torch.randn(B, H, T, D)

    def fwd():
        with torch.no_grad():
            fn(q, k, v)

    def fwd_bwd():
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(g)

    res = {"fwd": timeit(fwd, reps)}
    if backward:
        res["fwdbwd"] = timeit(fwd_bwd, reps)
        if do_memory:
            q.grad = k.grad = v.grad = None
            res["mem"] = peak_memory(fwd_bwd)
    return res


def measure_group(spec, T, reps):
    "Every kernel on one (pattern, T): run in a fresh process so earlier runs' memory does not skew timings."
    pattern, out = parse(spec), {}
    for name, fn in kernels(pattern).items():
        if "eager" in name and 4 * B * H * T * T * 4 > EAGER_MAX_BYTES:
            continue
        if "auto" in name and not isinstance(pattern, Dense):
            continue  # auto = blocked on CPU for sparse
        if "flex" in name and not torch.cuda.is_available() and T > 4096:
            continue
        backward = not ("flex" in name and not torch.cuda.is_available())
        out[name] = measure(fn, T, reps if T < 4096 else max(1, reps - 1), backward=backward)
    return out


def run(lengths, patterns, reps, threads):
    rows, results = [], {}
    for spec in patterns:
        for T in lengths:
            cmd = [sys.executable, __file__, "--one", spec, str(T), "--reps", str(reps), "--threads", str(threads)]
            group = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            base = None
            for name, r in group.items():
                results[(spec, T, name)] = r
                if base is None:
                    base = r
                rows.append(
                    {
                        "pattern": spec,
                        "T": T,
                        "kernel": name,
                        "fwd ms": f"{r['fwd'] * 1e3:.1f}",
                        "fwd speedup": f"{base['fwd'] / r['fwd']:.2f}x",
                        "fwd+bwd ms": f"{r['fwdbwd'] * 1e3:.1f}" if "fwdbwd" in r else "n/a",
                        "fwd+bwd speedup": f"{base['fwdbwd'] / r['fwdbwd']:.2f}x" if "fwdbwd" in r else "n/a",
                        "peak MiB": f"{r['mem'] / 2**20:.0f}" if "mem" in r else "n/a",
                        "memory vs baseline": f"{r['mem'] / base['mem']:.2f}x" if "mem" in r else "n/a",
                    }
                )
                print(" | ".join(str(v) for v in rows[-1].values()), file=sys.stderr, flush=True)
    return rows, results


def targets(results):
    "The issue's targets, checked on this run's numbers."
    out = []

    def get(spec, T, name, key):
        r = results.get((spec, T, name))
        return None if r is None else r.get(key)

    def check(text, ok, detail):
        out.append(f"- [{'x' if ok else ' '}] {text}: {detail}")

    L, S = "local:256", "strided:128"
    blk, base, causal, eager = (
        "gpt3dev blocked",
        "sdpa + dense mask (baseline)",
        "sdpa causal (dense layer)",
        "eager additive mask (original)",
    )
    if get(L, 4096, blk, "fwdbwd"):
        b = get(L, 4096, blk, "fwdbwd")
        r1 = get(L, 4096, base, "fwdbwd") / b
        check("local:256 fwd+bwd at T=4096 >= 6x SDPA with the band mask", r1 >= 6, f"{r1:.2f}x")
        r2 = get(L, 4096, causal, "fwdbwd") / b
        check("local:256 fwd+bwd at T=4096 >= 3x dense causal SDPA", r2 >= 3, f"{r2:.2f}x")
        r3 = get(L, 4096, base, "fwd") / get(L, 4096, blk, "fwd")
        check("local:256 forward at T=4096 >= 6x SDPA with the band mask", r3 >= 6, f"{r3:.2f}x")
        m = get(L, 4096, blk, "mem")
        r4 = m / get(L, 4096, causal, "mem")
        check("local:256 peak memory <= 1.5x SDPA's (dense causal)", r4 <= 1.5, f"{r4:.2f}x")
        r4b = m / get(L, 4096, base, "mem")
        check("local:256 peak memory <= 1.5x SDPA's (band mask)", r4b <= 1.5, f"{r4b:.2f}x")
        if get(L, 4096, eager, "mem"):
            r5 = get(L, 4096, eager, "mem") / m
            check("local:256 peak memory >= 10x below the eager additive mask", r5 >= 10, f"{r5:.1f}x below")
        if get(L, 8192, blk, "fwdbwd"):
            r6 = get(L, 8192, blk, "fwdbwd") / b
            check("local:256 fwd+bwd time grows <= 2.3x from T=4096 to 8192", r6 <= 2.3, f"{r6:.2f}x")
    if get(S, 4096, blk, "fwdbwd"):
        r7 = get(S, 4096, causal, "fwd") / get(S, 4096, blk, "fwd")
        check("strided:128 forward at T=4096 faster than dense causal SDPA", r7 > 1, f"{r7:.2f}x")
        r8 = get(S, 4096, causal, "fwdbwd") / get(S, 4096, blk, "fwdbwd")
        check("strided:128 fwd+bwd at T=4096 faster than dense causal SDPA", r8 > 1, f"{r8:.2f}x")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    ap.add_argument("--patterns", nargs="+", default=["local:256", "strided:128", "fixed:128:8", "dense"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--one", nargs=2, metavar=("PATTERN", "T"), help=argparse.SUPPRESS)  # internal: one group, JSON out
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure_group(args.one[0], int(args.one[1]), args.reps)))
        return
    rows, results = run(args.T, args.patterns, args.reps, args.threads)
    print(
        f"## Attention kernels (`bench/attention.py`)\n\nMachine: {machine()}. B={B}, H={H}, D={D}, float32. "
        "Speedups and memory are ratios against SDPA with a dense boolean mask of the same pattern, "
        "measured in the same run; "
        "peak memory is what forward+backward allocates above its inputs.\n"
    )
    print(table(rows, list(rows[0])))
    print("\nTargets:\n" + targets(results))


if __name__ == "__main__":
    main()
