"""Benchmark: gpt3dev on a GPU, in one command: sparse attention kernels, a training step, generation.

Every figure is a ratio against a baseline measured in the same run:

1. Attention, B=1, H=12, D=64, bf16, T in {4096, 8192, 16384}: local:256, strided:128 and fixed:128:8 through
   gpt3dev's kernels (`auto`, and `flex` / `blocked` where they run), forward and forward+backward, against dense
   causal SDPA (the FlashAttention backend on CUDA) and SDPA given the pattern as a dense boolean mask; peak memory.
   Each kernel's output is first checked against the masked SDPA's; the `auto` row names the kernel it chose, and a
   target checks that choice is within 10% of the fastest kernel measured (on CUDA, where there is a choice).
2. Training step of `gpt3-small` (125M) at T=2048: bf16 autocast, `torch.compile`, fused AdamW; tokens/s and MFU
   (FLOPs from `flops_per_token`, which counts the local layers' band, not T²), against the same model with every
   layer dense.
3. Generation of 512 tokens after a 32-token prompt, batch 1 and 8, with gpt3dev's window-bounded cache, against
   transformers' `GPT2LMHeadModel` of the same size.

    PYTHONPATH=. python bench/gpu.py                      # on a GPU (under 8 minutes on one H200)
    python bench/gpu.py --device cpu --smoke              # the same code paths at toy sizes, in under a minute

The smoke run exists so that the script cannot rot between the rare runs on a GPU: a CI test runs it.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table  # noqa: E402

from gpt3dev.attention import choose_backend, sparse_attention  # noqa: E402
from gpt3dev.config import GPT3DevConfig, flops_per_token  # noqa: E402
from gpt3dev.modeling import GPT3DevForCausalLM  # noqa: E402
from gpt3dev.patterns import parse  # noqa: E402
from gpt3dev.train import peak_flops  # noqa: E402

FULL = dict(
    lengths=[4096, 8192, 16384],
    patterns=["local:256", "strided:128", "fixed:128:8"],
    heads=12,
    head_dim=64,
    preset="gpt3-small",
    train_T=2048,
    batch=8,
    steps=10,
    new_tokens=512,
    gen_batches=[1, 8],
)
SMOKE = dict(
    lengths=[256, 512],
    patterns=["local:32", "strided:16", "fixed:16:4"],
    heads=2,
    head_dim=16,
    preset="tiny",
    train_T=128,
    batch=2,
    steps=2,
    new_tokens=16,
    gen_batches=[1, 2],
)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps: int, warmup: int = 1) -> float:
    "Median seconds of `fn()` over `reps` runs after `warmup` runs (CUDA events on a GPU)."
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def peak_mib(fn, device) -> float | None:
    "Peak GPU memory (MiB) `fn()` allocates above what was live before; None off the GPU."
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def causal_sdpa(q, k, v):
    "Dense causal attention through SDPA; on CUDA pinned to the FlashAttention backend (the strongest dense baseline)."
    if q.device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention(cfg, device, dtype, reps):
    rows, checks = [], []
    H, D = cfg["heads"], cfg["head_dim"]
    backends = ["auto", "flex", "blocked"] if device.type == "cuda" else ["auto"]  # CPU flex has no backward
    for T in cfg["lengths"]:
        torch.manual_seed(0)
        q, k, v = (torch.randn(1, H, T, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        grad = torch.randn(1, H, T, D, device=device, dtype=dtype)

        def measure(f):
            "(forward seconds, forward+backward seconds, forward+backward peak MiB) of attention function `f`."

            def fwd():
                with torch.no_grad():
                    f(q, k, v)

            def both():
                q.grad = k.grad = v.grad = None
                f(q, k, v).backward(grad)

            return timed(fwd, device, reps), timed(both, device, reps), peak_mib(both, device)

        base = measure(causal_sdpa)
        rows.append(
            {
                "T": T,
                "pattern": "dense causal",
                "kernel": "SDPA (flash)" if device.type == "cuda" else "SDPA",
                "fwd ms": f"{base[0] * 1e3:.2f}",
                "fwd+bwd ms": f"{base[1] * 1e3:.2f}",
                "peak MiB": "-" if base[2] is None else f"{base[2]:.0f}",
                "fwd+bwd vs causal": "1.00x",
                "fwd+bwd vs masked SDPA": "",
            }
        )
        for spec in cfg["patterns"]:
            pattern = parse(spec)
            mask = pattern.dense(T, device=device)
            masked = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            ref = measure(masked)
            with torch.no_grad():
                want = masked(q, k, v).float()
            rows.append(
                {
                    "T": T,
                    "pattern": spec,
                    "kernel": "SDPA + dense mask",
                    "fwd ms": f"{ref[0] * 1e3:.2f}",
                    "fwd+bwd ms": f"{ref[1] * 1e3:.2f}",
                    "peak MiB": "-" if ref[2] is None else f"{ref[2]:.0f}",
                    "fwd+bwd vs causal": f"{base[1] / ref[1]:.2f}x",
                    "fwd+bwd vs masked SDPA": "1.00x",
                }
            )
            times = {"SDPA + dense mask": ref[1]}  # fwd+bwd seconds of each kernel that ran, for auto's check
            for backend in backends:
                f = lambda q, k, v, b=backend: sparse_attention(q, k, v, pattern, backend=b)
                try:
                    with torch.no_grad():
                        err = (f(q, k, v).float() - want).abs().max().item()
                except (ValueError, NotImplementedError, RuntimeError) as e:
                    rows.append(
                        {"T": T, "pattern": spec, "kernel": f"gpt3dev {backend}", "fwd ms": f"n/a ({type(e).__name__})"}
                    )
                    continue
                tol = 2e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-4
                checks.append(
                    (f"{spec} T={T} {backend}: output equals masked SDPA", err <= tol, f"max error {err:.1e}")
                )
                got = measure(f)
                chosen = f" ({choose_backend(q, k, pattern)})" if backend == "auto" else ""
                times[f"gpt3dev {backend}{chosen}"] = got[1]
                rows.append(
                    {
                        "T": T,
                        "pattern": spec,
                        "kernel": f"gpt3dev {backend}{chosen}",
                        "fwd ms": f"{got[0] * 1e3:.2f}",
                        "fwd+bwd ms": f"{got[1] * 1e3:.2f}",
                        "peak MiB": "-" if got[2] is None else f"{got[2]:.0f}",
                        "fwd+bwd vs causal": f"{base[1] / got[1]:.2f}x",
                        "fwd+bwd vs masked SDPA": f"{ref[1] / got[1]:.2f}x",
                    }
                )
                if spec.startswith("local") and backend == "flex" and T in (8192, 16384):
                    need = 3 if T == 8192 else 6
                    checks.append(
                        (
                            f"flex {spec} fwd+bwd at T={T} >= {need}x dense causal SDPA",
                            base[1] / got[1] >= need,
                            f"{base[1] / got[1]:.2f}x",
                        )
                    )
                    checks.append(
                        (
                            f"flex {spec} fwd+bwd at T={T} >= 6x masked SDPA",
                            ref[1] / got[1] >= 6,
                            f"{ref[1] / got[1]:.2f}x",
                        )
                    )
            auto = [name for name in times if name.startswith("gpt3dev auto")]
            if auto and len(times) > 2:  # auto against every other kernel measured here
                best = min(times, key=times.get)
                checks.append(
                    (
                        f"auto picks a fast kernel for {spec} at T={T} (fwd+bwd within 10% of the best)",
                        times[auto[0]] <= 1.1 * times[best],
                        f"{auto[0]}: {times[auto[0]] * 1e3:.2f} ms, best {best}: {times[best] * 1e3:.2f} ms",
                    )
                )
            print(f"attention T={T} {spec} done", file=sys.stderr, flush=True)
        del q, k, v, grad
    return rows, checks


def model_config(cfg, dense: bool, T: int):
    """The preset with room for T positions (token ids 0 as bos/eos, inside every vocabulary); every layer
    dense if `dense`."""
    preset = GPT3DevConfig.from_preset(cfg["preset"])
    kw = dict(n_positions=max(T, preset.n_positions), bos_token_id=0, eos_token_id=0)
    if dense:
        kw["attention_layers"] = ["dense"] * preset.n_layer
    return GPT3DevConfig.from_preset(cfg["preset"], **kw)


def training(cfg, device, dtype, compile_model):
    T, B, rows, res = cfg["train_T"], cfg["batch"], [], {}
    peak = peak_flops(device)
    for name, dense in (("all dense", True), ("gpt3dev (dense / local)", False)):
        torch.manual_seed(0)
        mc = model_config(cfg, dense, T)
        model = GPT3DevForCausalLM(mc).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        step_model = torch.compile(model) if compile_model else model
        ids = torch.randint(0, mc.vocab_size, (B, T), device=device)
        amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        losses = []

        def step():
            opt.zero_grad(set_to_none=True)
            with amp:
                loss = step_model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            opt.step()
            losses.append(loss.detach())

        secs = timed(step, device, reps=cfg["steps"], warmup=2)  # the warm-up compiles
        tps = B * T / secs
        fpt = flops_per_token(mc, T)
        res[name] = (tps, fpt * tps / peak if peak else None, torch.stack(losses).float().cpu())
        print(f"training {name}: {tps:,.0f} tok/s", file=sys.stderr, flush=True)
        del model, opt, step_model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = res["all dense"][0]
    for name, (tps, mfu, _) in res.items():
        rows.append(
            {
                "model": name,
                "tokens/s": f"{tps:,.0f}",
                "vs all dense": f"{tps / base:.2f}x",
                "MFU": "n/a (unknown peak)" if mfu is None else f"{mfu:.1%}",
            }
        )
    ours = res["gpt3dev (dense / local)"]
    checks = [
        ("training losses finite", bool(torch.isfinite(ours[2]).all()), f"last {ours[2][-1].item():.3f}"),
        (f"{cfg['preset']} step at T={T} at least as fast as all dense", ours[0] >= base, f"{ours[0] / base:.2f}x"),
    ]
    if ours[1] is not None:
        checks.append(("MFU >= 40%", ours[1] >= 0.40, f"{ours[1]:.1%}"))
    return rows, checks


def generation(cfg, device, dtype):
    from transformers import GPT2Config, GPT2LMHeadModel

    mc = model_config(cfg, False, 2 * cfg["new_tokens"])
    torch.manual_seed(0)
    ours = GPT3DevForCausalLM(mc).to(device, dtype).eval()
    gpt2 = (
        GPT2LMHeadModel(
            GPT2Config(
                n_layer=mc.n_layer,
                n_embd=mc.n_embd,
                n_head=mc.n_head,
                vocab_size=mc.vocab_size,
                n_positions=mc.n_positions,
            )
        )
        .to(device, dtype)
        .eval()
    )
    rows, checks, new = [], [], cfg["new_tokens"]
    for B in cfg["gen_batches"]:
        prompt = torch.randint(0, mc.vocab_size, (B, 32), device=device)
        kw = dict(
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
            attention_mask=torch.ones_like(prompt),
        )
        res = {}
        for name, model in (("transformers GPT2LMHeadModel", gpt2), ("gpt3dev", ours)):
            with torch.no_grad():
                out = None

                def run():
                    nonlocal out
                    out = model.generate(prompt, **kw)

                secs = timed(run, device, reps=2, warmup=1)
            assert out.shape == (B, 32 + new), out.shape
            res[name] = B * new / secs
        base = res["transformers GPT2LMHeadModel"]
        for name, tps in res.items():
            rows.append({"batch": B, "model": name, "new tokens/s": f"{tps:,.0f}", "vs GPT-2": f"{tps / base:.2f}x"})
        checks.append(
            (
                f"generation batch {B} at least as fast as GPT2LMHeadModel",
                res["gpt3dev"] >= base,
                f"{res['gpt3dev'] / base:.2f}x",
            )
        )
        print(f"generation batch {B} done", file=sys.stderr, flush=True)
    return rows, checks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--smoke", action="store_true", help="toy sizes: the same code paths in under a minute (for CI)")
    ap.add_argument(
        "--dtype",
        default="bf16",
        choices=["bf16", "fp32"],
        help="attention, autocast and generation dtype (default bf16)",
    )
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the training step (default: on CUDA only; CPU compilation alone outlasts the smoke run)",
    )
    ap.add_argument(
        "--reps", type=int, default=None, help="timed repetitions per attention measurement (default 10, smoke 2)"
    )
    ap.add_argument(
        "--sections",
        nargs="+",
        default=["attention", "training", "generation"],
        help="which parts to run (default all)",
    )
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device (use --device cpu --smoke)")
    cfg = SMOKE if args.smoke else FULL
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    compile_model = device.type == "cuda" if args.compile is None else args.compile
    reps = args.reps or (2 if args.smoke else 10)
    start = time.time()
    print(
        f"## GPU (`bench/gpu.py{' --device cpu --smoke' if args.smoke else ''}`)\n\n"
        f"Machine: {machine()}. dtype {args.dtype}"
        f"{', torch.compile' if compile_model else ''}.\n"
    )
    checks = []
    if "attention" in args.sections:
        rows, c = attention(cfg, device, dtype, reps)
        checks += c
        print(
            f"Attention, B=1, H={cfg['heads']}, D={cfg['head_dim']} (median of {reps}); "
            "ratios are the baseline's time over the kernel's:\n"
        )
        print(
            table(
                rows,
                [
                    "T",
                    "pattern",
                    "kernel",
                    "fwd ms",
                    "fwd+bwd ms",
                    "peak MiB",
                    "fwd+bwd vs causal",
                    "fwd+bwd vs masked SDPA",
                ],
            )
            + "\n"
        )
    if "training" in args.sections:
        rows, c = training(cfg, device, dtype, compile_model)
        checks += c
        print(
            f"Training step of {cfg['preset']} at T={cfg['train_T']}, batch {cfg['batch']}, "
            f"{args.dtype} autocast, fused AdamW on CUDA:\n"
        )
        print(table(rows, list(rows[0])) + "\n")
    if "generation" in args.sections:
        rows, c = generation(cfg, device, dtype)
        checks += c
        print(
            f"Generation, {cfg['new_tokens']} new tokens after a 32-token prompt (greedy), "
            f"{cfg['preset']} against GPT2LMHeadModel of the same size:\n"
        )
        print(table(rows, list(rows[0])) + "\n")
    print("Targets:\n" + "\n".join(f"- [{'x' if ok else ' '}] {text}: {detail}" for text, ok, detail in checks))
    print(f"\nWall time {time.time() - start:.0f} s.")
    wrong = [text for text, ok, _ in checks if not ok and "equals" in text]
    if wrong:
        print(f"bench/gpu.py: kernels disagree with SDPA: {wrong}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
