"""The adapters against the real recorded bodies in ``../shared/provider-wire/``: every error body's
class, OpenAI-style requests translated to Anthropic's wire format (compared with recorded Anthropic
requests), tool calls and refusals parsed, streams decoded incrementally, keys scrubbed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from wire import WIRE, adapter_for, body_bytes, load, parse

from routerlab.errors import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    RequestError,
    ServerError,
    UnsupportedParameterError,
)
from routerlab.providers import AnthropicAdapter, OpenAIAdapter, join_url, scrub

pytestmark = pytest.mark.skipif(not WIRE.is_dir(), reason=f"recorded provider traffic not found at {WIRE}")

#: The class every recorded error body must parse to. A new recording without an entry fails the test below.
ERRORS: dict[str, type[ProviderError]] = {
    "anthropic/error_400__1.json": ContextLengthError,  # prompt is too long
    "anthropic/error_400__2.json": InvalidRequestError,  # input does not match the expected shape
    "anthropic/error_401__1.json": AuthenticationError,
    "anthropic/error_401__2.json": AuthenticationError,
    "anthropic/error_404__1.json": NotFoundError,
    "anthropic/error_429__1.json": RateLimitError,
    "anthropic/error_429__2.json": RateLimitError,
    "anthropic/error_500__1.json": ServerError,
    "anthropic/error_529__1.json": OverloadedError,
    "anthropic/error_529__2.json": OverloadedError,
    "azure/error_401__1.json": AuthenticationError,
    "azure/error_404__1.json": NotFoundError,  # DeploymentNotFound
    "azure/error_429__1.json": RateLimitError,
    "deepseek/error_400__1.json": ContextLengthError,
    "deepseek/error_401__1.json": AuthenticationError,
    "groq/error_400__1.json": InvalidRequestError,  # tool_use_failed: the model's own output was invalid
    "groq/error_404__1.json": NotFoundError,
    "mistral/error_401__1.json": AuthenticationError,
    "ollama/error_400__1.json": ContextLengthError,
    "ollama/error_401__1.json": AuthenticationError,
    "openai/error_400__1.json": UnsupportedParameterError,  # stop with gpt-5-mini
    "openai/error_400__2.json": UnsupportedParameterError,  # system role with o1-mini
    "openai/error_400__3.json": ContextLengthError,
    "openai/error_401__1.json": AuthenticationError,
    "openai/error_401__2.json": AuthenticationError,
    "openai/error_404__1.json": NotFoundError,
    "openai/error_404__2.json": NotFoundError,  # a retired snapshot
    "openai/error_429__1.json": RateLimitError,
    "openai/error_429__2.json": QuotaExceededError,
    "openai/error_429__3.json": PayloadTooLargeError,  # "Request too large ... tokens per min"
    "openai/error_500__1.json": ServerError,
    "openai/error_500__2.json": ServerError,
    "openrouter/error_400__1.json": ContextLengthError,
    "openrouter/error_401__1.json": AuthenticationError,
    "openrouter/error_429__1.json": RateLimitError,
    "openrouter/error_429__2.json": RateLimitError,
    "perplexity/error_400__1.json": ContextLengthError,
}


# ---------------------------------------------------------------- every error body, classified


def test_every_recorded_error_body_has_an_expected_class() -> None:
    files = sorted(p.relative_to(WIRE).as_posix() for p in WIRE.glob("*/error_*.json"))
    assert files, "no error recordings found"
    unlisted = [f for f in files if f not in ERRORS]
    assert not unlisted, f"classify these new recordings in ERRORS: {unlisted}"


@pytest.mark.parametrize("rel", sorted(ERRORS))
def test_a_recorded_error_body_parses_to_its_class(rel: str) -> None:
    record = load(rel)
    r = record["response"]
    err = adapter_for(rel).parse_error(r["status"], r["headers"], body_bytes(record), model="m")
    assert type(err) is ERRORS[rel], f"{rel}: {type(err).__name__} ({err})"
    assert err.scope in ("transient", "tier", "request")


def test_what_each_error_does_to_the_route_and_the_breaker() -> None:
    assert (RateLimitError.scope, RateLimitError.breaker_use) == ("transient", "failure")
    assert (AuthenticationError.scope, AuthenticationError.breaker_use) == ("tier", "disable")
    assert (PermissionDeniedError.breaker_use, NotFoundError.breaker_use, QuotaExceededError.breaker_use) == (
        "disable",
        "disable",
        "disable",
    )
    for cls in (ContextLengthError, PayloadTooLargeError, UnsupportedParameterError):
        assert (cls.scope, cls.breaker_use, cls.retryable) == ("tier", "none", False)
    assert (InvalidRequestError.scope, InvalidRequestError.breaker_use) == ("request", "none")
    assert not QuotaExceededError.retryable and not PayloadTooLargeError.retryable


# ---------------------------------------------------------------- OpenAI-style requests to Anthropic


def anthropic_body(messages: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    spec = AnthropicAdapter().build_request(
        base_url="https://api.anthropic.com",
        model="claude-haiku-4-5-20251001",
        messages=messages,
        max_tokens=64000,
        temperature=None,
        api_key="sk-ant-test",
        options=options or None,
    )
    return spec.body


def test_tool_calls_and_tool_results_translate_to_the_recorded_anthropic_request() -> None:
    recorded = load("anthropic/messages_tool_result__1.json")["request"]["body"]
    ids = [b["id"] for b in recorded["messages"][1]["content"]]
    tool = recorded["tools"][0]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": recorded["system"][0]["text"]},
        {"role": "user", "content": [{"type": "text", "text": "Roll the dice 3 times"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": "dice_roll", "arguments": "{}"}} for i in ids
            ],
        },
    ]
    for i, roll in zip(ids, (1, 2, 3), strict=True):
        messages.append(
            {
                "role": "tool",
                "tool_call_id": i,
                "content": [{"type": "text", "text": json.dumps({"roll": roll}).replace(" ", "")}],
            }
        )
    tools = [
        {
            "type": "function",
            "function": {"name": tool["name"], "description": tool["description"], "parameters": tool["input_schema"]},
        }
    ]
    body = anthropic_body(messages, tools=tools)
    assert body["messages"] == recorded["messages"]  # one user turn holding the three tool_result blocks
    assert body["tools"] == recorded["tools"]
    assert body["system"] == recorded["system"][0]["text"]  # no cache_control: a plain string


def test_a_cached_system_block_keeps_its_cache_control() -> None:
    recorded = load("anthropic/messages_system_cache__1.json")["request"]["body"]
    block = recorded["system"][0]
    messages = [
        {
            "role": "system",
            "content": [{"type": "text", "text": block["text"], "cache_control": block["cache_control"]}],
        },
        {"role": "user", "content": "Hello there."},
    ]
    body = anthropic_body(messages)
    assert body["system"] == recorded["system"] and body["messages"] == recorded["messages"]
    # an OpenAI-format tier gets the same message without the Anthropic-only marker
    spec = OpenAIAdapter().build_request(
        base_url="https://api.openai.com/v1", model="gpt-4o", messages=messages, max_tokens=5, temperature=0,
        api_key=None,
    )  # fmt: skip
    assert "cache_control" not in json.dumps(spec.body)


def test_an_image_data_url_becomes_the_recorded_base64_image_block() -> None:
    recorded = load("anthropic/messages_image__1.json")["request"]["body"]
    image = recorded["messages"][0]["content"][1]["source"]
    url = f"data:{image['media_type']};base64,{image['data']}"
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What do you see in this image?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]
    assert anthropic_body(messages)["messages"] == recorded["messages"]
    web = anthropic_body(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    )
    assert web["messages"][0]["content"][0]["source"] == {"type": "url", "url": "https://x/y.png"}


@pytest.mark.parametrize("rel", ["openai/chat_completions_tools__1.json", "openai/chat_completions_tools__4.json"])
def test_openai_tool_requests_pass_through_unchanged(rel: str) -> None:
    recorded = load(rel)["request"]["body"]
    options = {k: recorded[k] for k in ("tools", "tool_choice", "parallel_tool_calls") if k in recorded}
    spec = OpenAIAdapter().build_request(
        base_url="https://api.openai.com/v1", model=recorded["model"], messages=recorded["messages"],
        max_tokens=100, temperature=None, api_key=None, options=options,
    )  # fmt: skip
    assert spec.body["messages"] == recorded["messages"]
    for k, v in options.items():
        assert spec.body[k] == v


@pytest.mark.parametrize(
    ("messages", "options", "field"),
    [
        ([{"role": "user", "content": "hi"}], {"seed": 1}, "seed"),
        ([{"role": "user", "content": "hi"}], {"response_format": {"type": "json_object"}}, "response_format"),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            {},
            r"messages\[0\]\.content\[0\]",
        ),
        ([{"role": "tool", "content": "x"}], {}, "tool_call_id"),
        ([{"role": "robot", "content": "x"}], {}, "role"),
        ([{"role": "user", "content": "hi"}], {"logit_bias": {}}, "logit_bias"),
    ],
)
def test_what_anthropic_cannot_carry_is_a_request_error(messages: Any, options: Any, field: str) -> None:
    with pytest.raises(RequestError, match=field):
        anthropic_body(messages, **options)


def test_stop_top_p_user_and_tool_choice_translate() -> None:
    body = anthropic_body(
        [{"role": "user", "content": "hi"}],
        stop="END",
        top_p=0.5,
        user="u-1",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        parallel_tool_calls=False,
        response_format={"type": "text"},
    )
    assert body["stop_sequences"] == ["END"] and body["top_p"] == 0.5 and body["metadata"] == {"user_id": "u-1"}
    assert body["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}


def test_urls_keep_their_query_string_and_azure_gets_an_api_key_header() -> None:
    assert join_url("https://r.openai.azure.com/openai/deployments/d/?api-version=2024-06-01", "/chat/completions") == (
        "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-06-01"
    )
    spec = OpenAIAdapter().build_request(
        base_url="https://r.openai.azure.com/openai/deployments/d?api-version=2024-06-01", model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0, api_key="k" * 32,
    )  # fmt: skip
    assert spec.headers["api-key"] == "k" * 32 and "Authorization" not in spec.headers
    assert "REDACTED" in repr(spec) and "k" * 32 not in repr(spec)


def test_the_reasoning_shape() -> None:
    spec = OpenAIAdapter().build_request(
        base_url="https://api.openai.com/v1", model="o3", messages=[{"role": "user", "content": "hi"}],
        max_tokens=500, temperature=0.7, api_key=None, n=2, reasoning=True, reasoning_effort="high", stream=True,
    )  # fmt: skip
    b = spec.body
    assert b["max_completion_tokens"] == 500 and "max_tokens" not in b and "temperature" not in b
    assert b["reasoning_effort"] == "high" and b["n"] == 2
    assert b["stream"] is True and b["stream_options"] == {"include_usage": True}
    recorded = load("openai/chat_completions_success__4.json")["request"]["body"]
    assert "max_completion_tokens" in recorded  # what a real gpt-5-mini request carried


# ---------------------------------------------------------------- answers out


def test_parallel_tool_calls_are_parsed() -> None:
    c = parse("openai/chat_completions_tools__3.json")
    recorded = load("openai/chat_completions_tools__3.json")["response"]["body"]["choices"][0]["message"]["tool_calls"]
    assert [(t.id, t.name, t.arguments) for t in c.tool_calls[0]] == [
        (r["id"], r["function"]["name"], r["function"]["arguments"]) for r in recorded
    ]
    assert c.finish_reasons == ("tool_calls",)


def test_streamed_parallel_tool_calls_are_assembled() -> None:
    c = parse("openai/chat_completions_tools_stream__2.json")
    assert len(c.tool_calls[0]) == 2
    for t in c.tool_calls[0]:
        assert t.name and isinstance(json.loads(t.arguments), dict) and t.id


def test_anthropic_tool_use_blocks_are_tool_calls_with_normalized_finish_reasons() -> None:
    c = parse("anthropic/messages_success__1.json")
    block = next(
        b for b in load("anthropic/messages_success__1.json")["response"]["body"]["content"] if b["type"] == "tool_use"
    )
    assert [(t.id, t.name, t.parsed_arguments()) for t in c.tool_calls[0]] == [
        (block["id"], block["name"], block["input"])
    ]
    assert c.finish_reasons == ("tool_calls",)
    s = parse("anthropic/messages_stream__2.json")
    assert s.tool_calls and s.finish_reasons == ("tool_calls",)
    assert parse("anthropic/messages_max_tokens__1.json").finish_reasons == ("length",)
    assert parse("anthropic/messages_stream__3.json").finish_reasons == ("length",)
    assert parse("anthropic/messages_stop_sequence__1.json").finish_reasons == ("stop",)


@pytest.mark.parametrize(
    "rel", ["openai/chat_completions_reasoning__3.json", "openai/chat_completions_reasoning_stream__1.json"]
)
def test_a_reasoning_reply_that_spent_its_budget_thinking_is_empty_and_cut_off(rel: str) -> None:
    c = parse(rel)
    assert c.texts == ("",) and c.finish_reasons == ("length",) and c.usage.reasoning_tokens > 0


def test_a_json_schema_refusal_is_parsed() -> None:
    c = parse("openai/chat_completions_json_schema__2.json")
    assert c.texts == ("",) and c.refusals[0] and "sorry" in c.refusals[0].lower()


STREAMS = sorted(p.relative_to(WIRE).as_posix() for p in WIRE.glob("*/*stream*.json")) if WIRE.is_dir() else []


@pytest.mark.parametrize("rel", STREAMS)
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_the_delta_decoder_yields_the_streams_text_in_any_chunking(rel: str, size: int) -> None:
    record = load(rel)
    body = body_bytes(record)
    adapter = adapter_for(rel)
    decoder = adapter.delta_decoder()
    deltas: list[str] = []
    for i in range(0, len(body), size):
        deltas.extend(decoder.feed(body[i : i + size]))
    full = adapter.parse_stream(record["response"]["status"], record["response"]["headers"], body)
    assert "".join(deltas) == full.texts[0]


def test_the_delta_decoder_survives_garbage_and_split_utf8() -> None:
    d = OpenAIAdapter().delta_decoder()
    event = 'data: {"choices":[{"index":0,"delta":{"content":"h\u00e9 \U0001f600"}}]}\r\n\r\n'.encode()
    out = d.feed(b"data: {not json\n\n") + d.feed(event[:20]) + d.feed(event[20:41]) + d.feed(event[41:])
    assert out == ["h\u00e9 \U0001f600"]


# ---------------------------------------------------------------- keys never leak


@pytest.mark.parametrize("key", ["0123456789abcdef0123456789abcdef", "AIzaSyD-4xQ9kEXAMPLEexampleKEY0123456789"])
def test_an_error_body_echoing_the_key_in_use_is_scrubbed(key: str) -> None:
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error"}})
    for adapter in (OpenAIAdapter(), AnthropicAdapter()):
        err = adapter.parse_error(401, {}, body.encode(), model="m", secrets=(key,))
        assert key not in str(err) and key not in err.message and key not in repr(err.body)
        assert "REDACTED" in err.message
        with pytest.raises(ProviderError) as ei:
            adapter.parse_response(200, {}, f"<html>{key}</html>".encode(), secrets=(key,))
        assert key not in str(ei.value)
    assert scrub(f"x {key} y", (key,)) == "x REDACTED y"
