"""`gpt3dev_serve` as a user runs it: the console script in a subprocess on 127.0.0.1, the `openai` client, the server
always stopped.

The server is transformers' own (`transformers serve`); gpt3dev only makes its classes visible to it (see nbs/14_serve).
These tests are what notices when a transformers upgrade breaks that hook."""

import os
import signal
import socket
import subprocess
import time
import urllib.request

import openai
import pytest
import torch
from transformers import AutoTokenizer

from gpt3dev.config import GPT3DevConfig
from gpt3dev.core import data_path
from gpt3dev.modeling import GPT3DevForCausalLM
from gpt3dev.sft import prepare_chat_model, stop_token_ids, with_chat_format

TOKENIZER = data_path("gpt2-tokenizer", must_exist=False)
STARTUP_S = 180  # importing torch and transformers and loading the model, on a loaded 2-core machine
CHAT = [{"role": "user", "content": "Tell me a story."}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    "A tiny gpt3dev chat model (random weights), the GPT-2 tokenizer in the Harmony format, as gpt3dev_sft saves one."
    tok = with_chat_format(AutoTokenizer.from_pretrained(TOKENIZER))
    torch.manual_seed(0)
    model = GPT3DevForCausalLM(
        GPT3DevConfig(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=4, window_size=8)
    )
    prepare_chat_model(model, tok)
    path = tmp_path_factory.mktemp("serve") / "chat"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen):
    "SIGTERM to the server's process group, then SIGKILL if it has not gone within 30 s."
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    "`gpt3dev_serve` on a free port of 127.0.0.1: yields (base URL, model id, process); always stopped afterwards."
    port, log = free_port(), tmp_path_factory.mktemp("serve-log") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["gpt3dev_serve", str(checkpoint), "--port", str(port), "--device", "cpu"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, f"gpt3dev_serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                f"no answer on port {port} after {STARTUP_S} s:\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(checkpoint), proc
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_checkpoint(server, client):
    assert [m.id for m in client.models.list().data] == [server[1]]


def test_completion_is_the_models_greedy_continuation(server, client, checkpoint):
    r = client.completions.create(model=server[1], prompt="Once upon a time", max_tokens=6, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 6
    tok, model = AutoTokenizer.from_pretrained(checkpoint), GPT3DevForCausalLM.from_pretrained(checkpoint).eval()
    ids = tok("Once upon a time", return_tensors="pt").input_ids
    local = model.generate(ids, max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(ids))[
        0, ids.shape[1] :
    ]
    assert r.choices[0].text == tok.decode(local, skip_special_tokens=True)


def test_streamed_chat_joins_to_the_non_streamed_text(server, client):
    whole = client.chat.completions.create(model=server[1], messages=CHAT, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "length" and text
    pieces, reasons = [], []
    for chunk in client.chat.completions.create(
        model=server[1], messages=CHAT, max_tokens=12, temperature=0, stream=True
    ):
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert len(pieces) > 1 and "".join(pieces) == text
    assert reasons == ["length"]


def test_chat_stops_at_the_harmony_end_token(server, client, checkpoint):
    "A bias that makes `<|return|>` the first token: generation stops there, and the token is not in the text."
    end = stop_token_ids(AutoTokenizer.from_pretrained(checkpoint))[0]
    r = client.chat.completions.create(
        model=server[1], messages=CHAT, max_tokens=12, temperature=0, logit_bias={str(end): 100.0}
    )
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 1 and "<|return|>" not in (r.choices[0].message.content or "")


def test_bad_requests_are_errors_and_the_server_lives_on(server, client):
    with pytest.raises(openai.BadRequestError) as e:  # a model this server does not serve: 400
        client.chat.completions.create(model="not-this-model", messages=CHAT, max_tokens=4)
    assert e.value.status_code == 400
    # More tokens than the model's 128 positions: the model refuses, and transformers' server (5.24) answers that
    # with a 500 or by closing the connection; either way the server must stay up.
    with pytest.raises((openai.APIStatusError, openai.APIConnectionError)):
        client.chat.completions.create(model=server[1], messages=CHAT, max_tokens=500, temperature=0)
    assert server[2].poll() is None
    fresh = openai.OpenAI(
        base_url=server[0], api_key="unused", max_retries=0, timeout=120
    )  # the failed reply's connection is closed
    r = fresh.chat.completions.create(model=server[1], messages=CHAT, max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3


def test_serve_refuses_a_directory_without_a_model(tmp_path):
    r = subprocess.run(["gpt3dev_serve", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("gpt3dev_serve: error: ") and "holds no saved model" in r.stderr
