"""The official `openai` SDK, unchanged but for its base URL, against Switchyard."""

import json
import sqlite3
import subprocess

import httpx
import openai
import pytest

from conftest import BIN, E2E_KEY, Gateway


def test_plain_chat(client):
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello"}], temperature=0.2
    )
    assert raw.headers["x-switchyard-target"] == "mock/mock-model"
    assert raw.headers["x-request-id"].startswith("sy-")
    assert float(raw.headers["x-switchyard-cost-usd"]) > 0
    resp = raw.parse()
    assert resp.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 tok5"
    assert resp.usage.completion_tokens == 6


def test_streamed_chat_with_usage(client):
    stream = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text == "tok0 tok1 tok2 tok3 tok4 tok5"
    assert usage is not None and usage.completion_tokens == 6


def test_streamed_chat_without_usage_request(client):
    chunks = list(client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_calls_plain_and_streamed(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    resp = client.chat.completions.create(
        model="tools", messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools, tool_choice="auto"
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"Paris"}'
    args = ""
    for chunk in client.chat.completions.create(model="tools", messages=[{"role": "user", "content": "x"}], tools=tools, stream=True):
        for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            args += tc.function.arguments or ""
    assert args == '{"city":"Paris"}'


def test_embeddings(client):
    resp = client.embeddings.create(model="embed", input=["one two", "three"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) == 8
    assert resp.usage.prompt_tokens == 3


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["chat", "fallback", "tools", "limited", "unmetered", "embed"]


def test_fallback_is_invisible_to_the_client(client):
    raw = client.chat.completions.with_raw_response.create(model="fallback", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-switchyard-target"] == "mock/mock-model"
    assert raw.headers["x-switchyard-attempts"] == "2"
    assert raw.parse().choices[0].message.content.startswith("tok0")


def test_error_cases(client, gateway):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="chat", messages=[])
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="limited", messages=[{"role": "user", "content": "x"}])
    assert e.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x" * 70000}])
    assert e.value.status_code == 413
    bad = openai.OpenAI(base_url=gateway.base + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    r = httpx.post(gateway.base + "/v1/chat/completions", content=b"{oops", headers={"authorization": f"Bearer {E2E_KEY}"})
    assert r.status_code == 400 and "error" in r.json()


def test_ledger_and_metrics_after_sigterm(tmp_path, upstream):
    gw = Gateway(tmp_path, upstream, with_key=False)
    c = openai.OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0)
    c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "one two three"}])
    list(c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}], stream=True))
    c.chat.completions.create(model="fallback", messages=[{"role": "user", "content": "x"}])
    c.chat.completions.create(model="unmetered", messages=[{"role": "user", "content": "count me please"}])
    c.embeddings.create(model="embed", input="a b")
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    metrics = httpx.get(gw.base + "/metrics").text
    assert "gen_ai_client_token_usage" in metrics
    assert gw.stop() == 0
    db = sqlite3.connect(gw.ledger)
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM requests ORDER BY started_at_ms").fetchall()
    assert len(rows) == 6, [dict(r) for r in rows]
    plain = rows[0]
    assert plain["route"] == "chat" and plain["status"] == 200
    assert plain["input_tokens"] == 3 and plain["output_tokens"] == 6
    assert abs(plain["cost_usd"] - (3 * 1.0 + 6 * 2.0) / 1e6) < 1e-12
    assert plain["energy_wh"] > 0 and plain["energy_method"].startswith("estimated")
    assert plain["carbon_g"] > 0
    assert rows[1]["stream"] == 1 and rows[1]["output_tokens"] == 6 and rows[1]["ttft_ms"] is not None
    assert rows[2]["fallbacks"] == 1 and rows[2]["attempts"] == 2
    unmetered = rows[3]
    assert unmetered["tokens_estimated"] == 1 and unmetered["output_tokens"] > 0
    assert unmetered["cost_usd"] is None, "no price: cost unknown, never 0"
    assert rows[4]["operation"] == "embeddings"
    assert rows[5]["status"] == 404


def test_usage_report_reads_the_ledger(tmp_path, upstream):
    gw = Gateway(tmp_path, upstream, with_key=False)
    c = openai.OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0)
    for _ in range(3):
        c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "one two"}])
    c.chat.completions.create(model="unmetered", messages=[{"role": "user", "content": "x"}])
    assert gw.stop() == 0
    out = subprocess.run([BIN, "usage", "--ledger", gw.ledger, "--by", "route", "--json"], capture_output=True, text=True, check=True)
    rows = {r["group"]: r for r in json.loads(out.stdout)}
    assert rows["chat"]["requests"] == 3
    assert rows["chat"]["output_tokens"] == 18
    assert abs(rows["chat"]["cost_usd"] - 3 * (2 * 1.0 + 6 * 2.0) / 1e6) < 1e-12
    assert rows["unmetered"]["cost_usd"] is None
    table = subprocess.run([BIN, "usage", "--ledger", gw.ledger, "--since", "1h"], capture_output=True, text=True, check=True).stdout
    assert "mock-model" in table
