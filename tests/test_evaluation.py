"""gpt3dev_eval against lm-evaluation-harness's own numbers, on every scoring path, and its CLI without the Hub.

`shared/fixtures/lm-eval/` holds a small random GPT-2 and what lm-evaluation-harness 0.4.13 computed on it,
request by request (see its README). `nbs/08_evaluation.ipynb` checks the strings, log-likelihoods and
metrics of every document through the evaluation functions (shared contexts, batch size 16); here every
other path and batch size scores the harness's own requests: by default a subset chosen to include every
case (shared contexts, single-token MMLU answers, prompts cut from the left), all of them with
GPT3DEV_FULL_CONFORMANCE=1 (about ten times longer).
"""

import json
import os
import subprocess
import sys
import time

import pytest

from gpt3dev.core import data_path, fixture_path
from gpt3dev.evaluation import (
    hellaswag_docs,
    hellaswag_requests,
    lambada_docs,
    lambada_requests,
    loglikelihood,
    mmlu_docs,
    mmlu_requests,
    reference_loglikelihood,
)

FULL = os.environ.get("GPT3DEV_FULL_CONFORMANCE") == "1"
# per task, the documents scored by default: the first eight, and those whose prompt the 128-token window cuts
SUBSET = {
    "hellaswag": range(8),
    "lambada_openai": [*range(8), 107, 109],
    "mmlu_high_school_geography_0shot": [*range(8), 95],
    "mmlu_high_school_geography_5shot": range(8),
}
PATHS = {
    "one-at-a-time": dict(batch_size=1, share_contexts=False),
    "batched": dict(batch_size=16, share_contexts=False),
    "batched, left-padded": dict(batch_size=16, share_contexts=False, padding_side="left"),
    "shared contexts, batch 1": dict(batch_size=1, share_contexts=True),
    "shared contexts, batch 16": dict(batch_size=16, share_contexts=True),
}


@pytest.fixture(scope="module")
def harness():
    """The fixture's model, tokenizer, and the requests it holds:
    [(task, doc_id, context, continuation, loglikelihood, is_greedy)]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = fixture_path("lm-eval")  # a FileNotFoundError saying where shared/ was looked for and how to set GPT3DEV_SHARED
    tasks = json.loads((d / "harness_requests.json").read_text())["tasks"]
    rows = [
        (task, doc["doc_id"], r["context"], r["continuation"], float(r["loglikelihood"]), r["is_greedy"])
        for task, t in tasks.items()
        for doc in t["docs"]
        if FULL or doc["doc_id"] in SUBSET[task]
        for r in doc["requests"]
    ]
    lambada = [r["is_greedy"] for doc in tasks["lambada_openai"]["docs"] for r in doc["requests"]]
    flags_ok = sum(lambada) / len(lambada) == tasks["lambada_openai"]["metrics"]["acc"]
    model = AutoModelForCausalLM.from_pretrained(d / "tiny-gpt2").eval()
    return model, AutoTokenizer.from_pretrained(d / "tiny-gpt2"), rows, flags_ok


def test_requests_equal_the_harness():
    "For every document of the fixture, the strings gpt3dev builds from shared/data are the harness's."
    tasks = json.loads((fixture_path("lm-eval") / "harness_requests.json").read_text())["tasks"]
    geo = mmlu_docs(data_path(), ["high_school_geography"])["high_school_geography"]
    built = {
        "hellaswag": [hellaswag_requests(d) for d in hellaswag_docs(data_path(), 120)],
        "lambada_openai": [lambada_requests(d) for d in lambada_docs(data_path(), 120)],
        "mmlu_high_school_geography_0shot": [mmlu_requests("high_school_geography", r, []) for r in geo["test"][:120]],
        "mmlu_high_school_geography_5shot": [
            mmlu_requests("high_school_geography", r, geo["dev"][:5]) for r in geo["test"][:40]
        ],
    }
    for task, t in tasks.items():
        assert len(built[task]) == len(t["docs"]), task
        for ours, doc in zip(built[task], t["docs"]):
            assert ours == [(r["context"], r["continuation"]) for r in doc["requests"]], f"{task} doc {doc['doc_id']}"


@pytest.fixture(scope="module")
def greedy(harness):
    """The greedy flags to expect: the fixture's, unless they contradict its own LAMBADA acc (then the harness's
    rule, computed by `reference_loglikelihood`)."""
    model, tok, rows, flags_ok = harness
    if flags_ok:
        return [g for *_, g in rows]
    return [reference_loglikelihood(model, tok, c, x)[1] for _, _, c, x, _, _ in rows]


@pytest.mark.parametrize("path", PATHS)
def test_loglikelihoods_equal_the_harness(harness, greedy, path):
    model, tok, rows, _ = harness
    got = loglikelihood(model, tok, [(c, x) for _, _, c, x, _, _ in rows], **PATHS[path])
    for (task, doc_id, _, x, want, _), (ll, g), want_greedy in zip(rows, got, greedy, strict=True):
        assert abs(ll - want) <= 1e-4, f"{path}: {task} doc {doc_id} continuation {x!r}: {ll} != harness {want}"
        assert g == want_greedy, f"{path}: {task} doc {doc_id} continuation {x!r}: is_greedy {g} != {want_greedy}"


def test_the_fixture_greedy_flags_are_what_the_test_thinks(harness):
    "The fixture's is_greedy are all true while its LAMBADA acc is 0: the harness's rule is used instead (said here)."
    *_, flags_ok = harness
    d = fixture_path("lm-eval")
    tasks = json.loads((d / "harness_requests.json").read_text())["tasks"]
    flags = {r["is_greedy"] for t in tasks.values() for doc in t["docs"] for r in doc["requests"]}
    assert flags_ok or (flags == {True} and tasks["lambada_openai"]["metrics"]["acc"] == 0.0)


def run_eval(env, *args):
    "gpt3dev_eval in a fresh process whose Hub settings are `env` alone (none from the shell); its result and time."
    hub = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")
    t = time.time()
    r = subprocess.run(
        [sys.executable, "-c", "import sys; from gpt3dev.evaluation import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if k not in hub}, **env},
    )
    return r, time.time() - t


@pytest.mark.parametrize(
    "env, facts",
    [
        ({"HF_HUB_OFFLINE": "1"}, ("Rowan/hellaswag", "Hugging Face Hub")),
        ({"HF_ENDPOINT": "http://127.0.0.1:9"}, ("Hugging Face Hub", "127.0.0.1")),
    ],
)
def test_without_the_hub_one_line_that_says_use_data_dir(env, facts, tmp_path):
    r, seconds = run_eval(
        env, "--model", str(tmp_path / "no-model"), "--tasks", "hellaswag"
    )  # the data fail before the model
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpt3dev_eval: error: ") and "--data-dir" in lines[0], r.stderr
    assert all(f in lines[0] for f in facts), (facts, lines[0])
    assert seconds < 60, f"{seconds:.0f} s"  # datasets alone retries for ~30 s after the imports
