"""The official `anthropic` SDK against Switchyard's Messages face (`POST /v1/messages`),
served by an OpenAI-compatible upstream through the same routes."""

import anthropic
import pytest

from conftest import E2E_KEY


@pytest.fixture
def claude(gateway):
    return anthropic.Anthropic(base_url=gateway.base, api_key=E2E_KEY, max_retries=0, timeout=30)


def test_messages_plain(claude):
    msg = claude.messages.create(
        model="chat", max_tokens=64, system="be brief", messages=[{"role": "user", "content": "hello"}]
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].text == "tok0 tok1 tok2 tok3 tok4 tok5"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == 6


def test_messages_stream(claude):
    with claude.messages.stream(model="chat", max_tokens=64, messages=[{"role": "user", "content": "hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "tok0 tok1 tok2 tok3 tok4 tok5"
    assert final.usage.output_tokens == 6
    assert final.stop_reason == "end_turn"


def test_messages_tools(claude):
    tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    msg = claude.messages.create(model="tools", max_tokens=64, tools=tools, messages=[{"role": "user", "content": "Paris?"}])
    use = [b for b in msg.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    assert msg.stop_reason == "tool_use"
    with claude.messages.stream(model="tools", max_tokens=64, tools=tools, messages=[{"role": "user", "content": "Paris?"}]) as s:
        final = s.get_final_message()
    use = [b for b in final.content if b.type == "tool_use"][0]
    assert use.input == {"city": "Paris"}


def test_messages_errors(claude, gateway):
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="chat", max_tokens=8, messages=[{"role": "user", "content": "x"}], extra_body={"temperature": 1.5})
    assert e.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="limited", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    bad = anthropic.Anthropic(base_url=gateway.base, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="chat", max_tokens=8, messages=[{"role": "user", "content": "x"}])
