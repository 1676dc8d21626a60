"""End-to-end fixtures: the real `switchyard` binary in front of the OpenAI wire-format test
server (`mock-openai`), driven by the official `openai` Python SDK."""

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
PROFILE = os.environ.get("SWITCHYARD_PROFILE", "debug")
BIN = TARGET / PROFILE / "switchyard"
MOCK = TARGET / PROFILE / "mock-openai"
E2E_KEY = "sk-e2e-secret"


def require(path: Path) -> Path:
    if not path.exists():
        raise RuntimeError(f"{path} is missing: build it first with `cargo build --workspace --bins` (scripts/test.sh does)")
    return path


def start_process(args, env=None, ready=r"listening on (\S+)", stream="stdout", timeout=60, cwd=None):
    """Starts a process and waits for its readiness line; returns (proc, matched group)."""
    proc = subprocess.Popen(
        [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = pipe.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        m = re.search(ready, line)
        if m:
            # Keep draining both pipes so a chatty process never blocks on a full pipe.
            for p in (proc.stdout, proc.stderr):
                threading.Thread(target=lambda p=p: [None for _ in p], daemon=True).start()
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError(f"{args[0]} did not start: {''.join(seen)} {proc.stderr.read() if stream == 'stdout' else ''}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def upstream():
    proc, addr = start_process([require(MOCK), "--tokens", "6"])
    yield f"http://{addr}/v1"
    proc.kill()
    proc.wait()


def gateway_config(upstream_url: str, ledger: Path, port: int, with_key: bool) -> str:
    keys = (
        f'[[keys]]\nname = "e2e"\nkey_env = "SWITCHYARD_E2E_KEY"\nteam = "qa"\n' if with_key else ""
    )
    return f"""
listen = "127.0.0.1:{port}"
max_body_bytes = 65536
[ledger]
path = "{ledger}"
flush_interval_ms = 20
{keys}
[defaults]
retry = {{ retries = 0 }}

[providers.mock]
kind = "openai"
base_url = "{upstream_url}"

[[routes]]
name = "chat"
targets = [{{ provider = "mock", model = "mock-model" }}]

[[routes]]
name = "fallback"
targets = [{{ provider = "mock", model = "err-500" }}, {{ provider = "mock", model = "mock-model" }}]

[[routes]]
name = "tools"
targets = [{{ provider = "mock", model = "tool-get_weather" }}]

[[routes]]
name = "limited"
targets = [{{ provider = "mock", model = "err-429" }}]

[[routes]]
name = "unmetered"
targets = [{{ provider = "mock", model = "nousage" }}]

[[routes]]
name = "embed"
targets = [{{ provider = "mock", model = "text-embedding-mock" }}]

[targets."mock/mock-model"]
price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0, source = "e2e test price", as_of = "2026-11-22" }}
energy = {{ method = "j_per_token", input_j = 0.01, output_j = 0.1, source = "e2e test profile" }}
grid_g_co2e_per_kwh = 400.0
"""


class Gateway:
    def __init__(self, tmp: Path, upstream_url: str, with_key: bool):
        self.ledger = tmp / "ledger.sqlite"
        port = free_port()
        cfg = tmp / "switchyard.toml"
        cfg.write_text(gateway_config(upstream_url, self.ledger, port, with_key))
        self.proc, _ = start_process(
            [require(BIN), "serve", "--config", cfg],
            env={"SWITCHYARD_E2E_KEY": E2E_KEY, "SWITCHYARD_LOG": "info"},
            ready=r"switchyard listening.*?addr=(\S+)",
            stream="stderr",
        )
        self.base = f"http://127.0.0.1:{port}"

    def stop(self) -> int:
        """SIGTERM, as an orchestrator would; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def gateway(tmp_path, upstream):
    gw = Gateway(tmp_path, upstream, with_key=True)
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    import openai

    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=E2E_KEY, max_retries=0, timeout=30)
