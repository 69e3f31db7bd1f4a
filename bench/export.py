"""Benchmark: the model exported to ONNX and run by onnxruntime, against eager PyTorch.

1. Equality: the largest |logit difference| of the `torch.export` graph and of the ONNX model against eager
   PyTorch, for batch 1 and 3, lengths 5 and 50 (the bench model's local layers: window 32, so 50 crosses the band).
2. Speed: tokens/s of a 128-token forward (no cache), batch 1 and 8, onnxruntime against eager PyTorch
   (the baseline, measured in the same run with the same number of threads).

    python bench/export.py            # 4 layers, d=512, 8 heads, vocab 8192, dense / local:32
    python bench/export.py --smoke    # a tiny model, a few repetitions: the code paths only
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, timeit  # noqa: E402

from gpt3dev.config import GPT3DevConfig  # noqa: E402
from gpt3dev.modeling import GPT3DevForCausalLM, export_lm, export_onnx  # noqa: E402

SIZES = {
    "full": dict(n_layer=4, n_embd=512, n_head=8, vocab_size=8192, n_positions=1024, window_size=32),
    "smoke": dict(n_layer=2, n_embd=32, n_head=4, vocab_size=256, n_positions=160, window_size=32),
}


def equality(model, program, session) -> list[dict]:
    "Largest |logit difference| against eager for each (batch, length)."
    rows = []
    for B in (1, 3):
        for T in (5, 50):
            x = torch.randint(0, model.config.vocab_size, (B, T))
            with torch.no_grad():
                eager = model(x).logits
                graph = program.module()(input_ids=x).logits
            ort = session.run(["logits"], {"input_ids": x.numpy()})[0]
            rows.append(
                {
                    "batch": B,
                    "length": T,
                    "torch.export max diff": f"{(graph - eager).abs().max().item():.1e}",
                    "onnxruntime max diff": f"{np.abs(ort - eager.numpy()).max():.1e}",
                }
            )
    return rows


def speed(model, session, T: int, reps: int) -> list[dict]:
    "Tokens/s of a T-token forward, eager PyTorch (baseline) and onnxruntime, batch 1 and 8."
    rows = []
    for B in (1, 8):
        x = torch.randint(0, model.config.vocab_size, (B, T))
        feed = {"input_ids": x.numpy()}

        def eager():
            with torch.inference_mode():
                model(x, use_cache=False)

        base = B * T / timeit(eager, reps=reps, warmup=2)
        ort = B * T / timeit(lambda: session.run(["logits"], feed), reps=reps, warmup=2)
        rows.append(
            {
                "batch": B,
                "eager PyTorch tok/s": f"{base:,.0f}",
                "onnxruntime tok/s": f"{ort:,.0f}",
                "onnxruntime / eager": f"{ort / base:.2f}x",
            }
        )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny model and few repetitions (checks the code paths)")
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions per measurement (median)")
    ap.add_argument("--length", type=int, default=128, help="tokens per sequence in the timed forward")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    cfg = GPT3DevConfig(**SIZES["smoke" if args.smoke else "full"])
    model = GPT3DevForCausalLM(cfg).eval()
    threads = torch.get_num_threads()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    with tempfile.TemporaryDirectory() as d:
        program = export_lm(model)
        session = onnxruntime.InferenceSession(
            export_onnx(model, Path(d) / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
    print(
        f"Machine: {machine()}; onnxruntime {onnxruntime.__version__}, {threads} threads each; "
        f"load average at start {os.getloadavg()[0]:.1f}."
    )
    print(
        f"Model: {cfg.n_layer} layers ({' / '.join(cfg.attention_layers[:2])}), d={cfg.n_embd}, {cfg.n_head} heads, "
        f"vocab {cfg.vocab_size}, float32; exported once with symbolic batch and length.\n"
    )
    print("Logits of the exported model against eager PyTorch (float32):\n")
    print(
        table(equality(model, program, session), ["batch", "length", "torch.export max diff", "onnxruntime max diff"])
    )
    reps = 2 if args.smoke else args.reps
    print(f"\n{args.length}-token forward (no cache), median of {reps}:\n")
    print(
        table(
            speed(model, session, args.length, reps),
            ["batch", "eager PyTorch tok/s", "onnxruntime tok/s", "onnxruntime / eager"],
        )
    )


if __name__ == "__main__":
    main()
