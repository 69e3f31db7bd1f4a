"""Fixtures shared by the test files."""

import os
import subprocess

import pytest

from gpt3dev.core import data_path, shared_dir


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """Tiny Shakespeare prepared by gpt3dev_prepare with the embedded tokenizer (the tiny preset's),
    10% held out, 100k-token shards."""
    if not (shared_dir() / "data").is_dir():
        pytest.skip(f"shared data not found at {shared_dir()} (set GPT3DEV_SHARED)")
    out = tmp_path_factory.mktemp("prepared") / "shakespeare"
    r = subprocess.run(
        [
            "gpt3dev_prepare",
            "--no-progress",
            "--data",
            str(data_path("text-corpus", "tinyshakespeare.txt")),
            "--out",
            str(out),
            "--val-share",
            "0.1",
            "--shard-tokens",
            "100000",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return out
