"""`switchyard serve` with no config: the built-in local engine answers the official SDK with
no keys and no network, and the request lands in the SQLite ledger."""

import sqlite3

import openai

from conftest import BIN, ROOT, free_port, require, start_process


def test_embedded_default_answers_with_the_local_model(tmp_path):
    model_dir = ROOT / "models"
    require(model_dir / "SmolLM2-135M-Instruct.Q4_1.gguf")
    port = free_port()
    proc, _ = start_process(
        [require(BIN), "serve", "--listen", f"127.0.0.1:{port}"],
        env={"SWITCHYARD_MODEL_DIR": str(model_dir), "SWITCHYARD_LOG": "info"},
        ready=r"switchyard listening.*?addr=(\S+)",
        stream="stderr",
        cwd=tmp_path,
    )
    try:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        assert [m.id for m in c.models.list()] == ["local/smollm2"]
        resp = c.chat.completions.create(
            model="local/smollm2",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        assert resp.choices[0].message.content.strip()
        assert resp.usage.prompt_tokens > 0 and 0 < resp.usage.completion_tokens <= 16
        text = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(
                model="local/smollm2", messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, stream=True
            )
            if ch.choices
        )
        assert text
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    rows = sqlite3.connect(tmp_path / "switchyard-ledger.sqlite").execute(
        "SELECT route, provider_kind, output_tokens, tokens_estimated, energy_wh, energy_method FROM requests"
    ).fetchall()
    assert len(rows) == 2
    for route, kind, out, est, wh, method in rows:
        assert route == "local/smollm2" and kind == "local" and out > 0 and est == 0
        assert wh is not None and wh > 0 and method in ("measured-rapl", "estimated-cpu-time")
