"""Shared helpers for gpt3dev's benchmarks: wall-clock timing and CPU peak memory.

Peak memory on a CPU has no `torch.cuda.max_memory_allocated`; instead the profiler records every
allocation and free made through torch's allocator (with sizes, in time order), and the running sum's
maximum is the peak that a piece of code adds on top of what existed before it ran.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile


def timeit(fn, reps: int = 3, warmup: int = 1) -> float:
    "Median wall-clock seconds of `fn()` over `reps` runs, after `warmup` runs."
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_memory(fn) -> int:
    "Peak bytes allocated through torch's CPU allocator while `fn()` runs, above what was live before."
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def machine() -> str:
    "One line naming the machine a benchmark ran on."
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {torch.get_num_threads()} threads{gpu}; torch {torch.__version__}, Python {platform.python_version()}"
    )


def table(rows: list[dict], columns: list[str]) -> str:
    "A markdown table of `rows` (dicts) with `columns` in order."
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(out)
