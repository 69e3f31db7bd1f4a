"""The tests pass whatever the user's shell says about the Hugging Face Hub, W&B and matplotlib.

CI once exported `HF_HUB_OFFLINE=1` before the README's test command, and a notebook test that held only
with it (or with internet) stayed green there while a newcomer's plain shell failed. Here one notebook runs
in three environments a user may have: none of the settings, the settings CI used to export, and a Hub
host that answers (what a machine with internet sees), so a test that leans on any of them fails here."""

import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gpt3dev.core import shared_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_dir()
# what a user's shell may say about the Hub, W&B and matplotlib; the tests must not depend on any of it
SETTINGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "MPLBACKEND", "WANDB_MODE")


def plain_env(**settings) -> dict:
    "This process's environment without any of `SETTINGS`, then `settings` added."
    return {**{k: v for k, v in os.environ.items() if k not in SETTINGS}, **settings}


class _Unavailable(BaseHTTPRequestHandler):
    "A Hub host that answers every request at once, with 503: reachable, but never a file."

    def _answer(self):
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def answering_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def nbdev_test(notebook: str, env: dict) -> subprocess.CompletedProcess:
    exe = shutil.which("nbdev_test", path=str(Path(sys.executable).parent)) or shutil.which("nbdev_test")
    return subprocess.run(
        [exe, "--path", str(ROOT / "nbs" / notebook)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


CASES = {
    "none set": {},
    "set as CI once did": {"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "WANDB_MODE": "offline"},
    "a Hub that answers": {"HF_ENDPOINT": "the answering_hub fixture's address"},
}


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason=f"shared data not found at {SHARED} (set GPT3DEV_SHARED)")
@pytest.mark.parametrize("case", list(CASES))
def test_core_notebook_passes_whatever_the_shell_says_about_the_hub(case, answering_hub):
    """`00_core` tests `from_hub` offline, unreachable and reachable: it makes each case itself, so each
    environment passes."""
    settings = {k: answering_hub if k == "HF_ENDPOINT" else v for k, v in CASES[case].items()}
    r = nbdev_test("00_core.ipynb", plain_env(**settings))
    assert r.returncode == 0, (
        f"00_core fails with {settings or 'none of ' + ', '.join(SETTINGS)}:\n{(r.stdout + r.stderr)[-3000:]}"
    )
