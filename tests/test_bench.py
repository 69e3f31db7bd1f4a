"""The benchmarks that run where CI cannot measure them still run in CI, at toy sizes, so they cannot rot."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_runs_on_cpu():
    "bench/gpu.py's code paths (kernels checked against SDPA, training step, generation) at toy sizes on the CPU."
    run = subprocess.run(
        [sys.executable, "bench/gpu.py", "--device", "cpu", "--smoke", "--reps", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    for heading in ("Attention, B=1", "Training step of tiny", "Generation, 16 new tokens"):
        assert heading in out, f"bench/gpu.py printed no '{heading}' table:\n{out}"
    for spec in ("local:32", "strided:16", "fixed:16:4"):
        assert f"- [x] {spec} T=512 auto: output equals masked SDPA" in out, out
    assert "- [x] training losses finite" in out, out
