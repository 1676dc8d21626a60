"""The official `openai` SDK through Switchyard to a Gemini target: the gateway's `gemini`
provider in front of the Gemini API test server (`mock-gemini`), which here refuses, as Gemini 3
does, a tool loop whose function call comes back without its thought signature, and, stricter
than Gemini, accepts only the signatures it issued. A tool loop that passes therefore carried
the signature out in the SDK's message and back in the client's echo of it."""

import openai
import pytest

from conftest import BIN, PROFILE, TARGET, free_port, require, start_process

MOCK_GEMINI = TARGET / PROFILE / "mock-gemini"
SIGNATURE = "c2lnLWUyZS0x"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def gemini_gateway(tmp_path):
    up, addr = start_process(
        [require(MOCK_GEMINI), "--sign-calls", SIGNATURE, "--require-issued-signatures"]
    )
    port = free_port()
    cfg = tmp_path / "switchyard.toml"
    cfg.write_text(
        f"""
listen = "127.0.0.1:{port}"
[ledger]
path = "{tmp_path / "ledger.sqlite"}"
[defaults]
retry = {{ retries = 0 }}

[providers.gemini]
kind = "gemini"
base_url = "http://{addr}/v1beta"
api_key_env = "SWITCHYARD_E2E_GEMINI_KEY"

[[routes]]
name = "weather"
targets = [{{ provider = "gemini", model = "call-get_weather" }}]
"""
    )
    gw, _ = start_process(
        [require(BIN), "serve", "--config", cfg],
        env={"SWITCHYARD_E2E_GEMINI_KEY": "AIza-e2e", "SWITCHYARD_LOG": "info"},
        ready=r"switchyard listening.*?addr=(\S+)",
        stream="stderr",
    )
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=30)
    for p in (gw, up):
        p.terminate()
        p.wait(timeout=30)


def test_a_tool_loop_echoes_the_thought_signature_back_to_gemini(gemini_gateway):
    client = gemini_gateway
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="weather", messages=messages, tools=TOOLS)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]
    assert call.function.name == "get_weather"
    # As Google's own OpenAI-compatible endpoint carries it.
    assert call.model_extra["extra_content"] == {"google": {"thought_signature": SIGNATURE}}

    # The SDK's message object goes back as it came, then the tool's result.
    messages += [message, {"role": "tool", "tool_call_id": call.id, "content": "21°C, sunny"}]
    second = client.chat.completions.create(model="weather", messages=messages, tools=TOOLS)
    assert second.choices[0].message.tool_calls[0].function.name == "get_weather"

    # Without the signature (a client that dropped it) the gateway sends Google's documented
    # stand-in, which this strict server refuses: the same loop fails, so the pass above is the
    # echo's doing.
    bare = message.model_dump(exclude_unset=True)
    for tc in bare["tool_calls"]:
        tc.pop("extra_content")
    with pytest.raises(openai.BadRequestError, match="Thought signature is not valid"):
        client.chat.completions.create(
            model="weather",
            messages=[messages[0], bare, messages[2]],
            tools=TOOLS,
        )
