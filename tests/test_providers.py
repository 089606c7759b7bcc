"""Tests for routerlab.providers, mostly against real recorded provider traffic.

The recordings live outside the repo (``ROUTERLAB_PROVIDER_WIRE`` or
``<repo>/../shared/provider-wire``) and are read at run time, never copied.
Expected values are computed here from the recorded JSON, independently of the
adapter code, and a few are hard-coded literals read from the files by hand.
"""

from __future__ import annotations

import ast
import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from wire import MISSING, REPO, WIRE, WIRE_FILES, adapter_for, body_bytes, load, parse

from routerlab.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
)
from routerlab.providers import (
    ADAPTERS,
    AnthropicAdapter,
    OpenAIAdapter,
    ProviderAdapter,
    RequestSpec,
    get_adapter,
)
from routerlab.types import Completion, Usage

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}

KEY = "sk-test-DoNotLeak-0123456789abcdef"
STATUS_TO_ERROR: dict[int, type[ProviderError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    429: RateLimitError,
    500: ServerError,
    529: OverloadedError,
}


# --------------------------------------------------------------------------- helpers


def kind_of(path: Path) -> str:
    if path.name.startswith("error_"):
        return "error"
    return "stream" if "stream" in path.name else "success"


def wire_params(keep: Callable[[Path], bool]) -> list[Any]:
    if not WIRE.is_dir():
        return [pytest.param(None, id="no-provider-wire", marks=pytest.mark.skip(reason=MISSING))]
    return [pytest.param(p, id=p.relative_to(WIRE).as_posix()) for p in WIRE_FILES if keep(p)]


def sse_data(text: str) -> list[dict[str, Any]]:
    """Every JSON ``data:`` payload of an SSE body (test-side, deliberately simple)."""
    out = []
    for line in text.split("\n"):
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(json.loads(line[5:]))
    return out


def openai_usage(u: dict[str, Any]) -> Usage:
    ptd = u.get("prompt_tokens_details") or {}
    cached = [ptd.get("cached_tokens"), u.get("cached_tokens"), u.get("prompt_cache_hit_tokens")]
    return Usage(
        input_tokens=u["prompt_tokens"],
        output_tokens=u["completion_tokens"],
        cache_read_tokens=max([c for c in cached if isinstance(c, int)], default=0),
        cache_write_tokens=ptd.get("cache_write_tokens") or 0,
        reasoning_tokens=(u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def anthropic_usage(u: dict[str, Any]) -> Usage:
    read = u.get("cache_read_input_tokens") or 0
    write = u.get("cache_creation_input_tokens") or 0
    return Usage(
        input_tokens=u["input_tokens"] + read + write,
        output_tokens=u["output_tokens"],
        cache_read_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=(u.get("output_tokens_details") or {}).get("thinking_tokens") or 0,
    )


def expected_success(folder: str, body: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...], Usage]:
    if folder == "anthropic":
        text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
        return (text,), (FINISH.get(body["stop_reason"], body["stop_reason"]),), anthropic_usage(body["usage"])
    choices = sorted(body["choices"], key=lambda c: c["index"])
    texts = tuple(c["message"]["content"] or "" for c in choices)
    return texts, tuple(c["finish_reason"] for c in choices), openai_usage(body["usage"])


def expected_stream(folder: str, text: str) -> tuple[tuple[str, ...], tuple[Any, ...], Usage]:
    """Texts and finish reasons per choice (deltas grouped by ``choices[].index``, in index order)."""
    events = sse_data(text)
    if folder == "anthropic":
        usage = dict(next(e["message"]["usage"] for e in events if e["type"] == "message_start"))
        final = [e for e in events if e["type"] == "message_delta"][-1]
        usage.update(final["usage"])
        deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
        joined = "".join(d["text"] for d in deltas if d["type"] == "text_delta")
        stop = final["delta"]["stop_reason"]
        return (joined,), (FINISH.get(stop, stop),), anthropic_usage(usage)
    texts: dict[int, str] = {}
    reasons: dict[int, Any] = {}
    for c in (c for e in events for c in e["choices"]):
        i = c.get("index", 0)
        texts[i] = texts.get(i, "") + (c["delta"].get("content") or "")
        if c["finish_reason"]:
            reasons[i] = c["finish_reason"]
    order = sorted(texts)
    usage = openai_usage([e for e in events if e.get("usage")][-1]["usage"])
    return tuple(texts[i] for i in order), tuple(reasons.get(i) for i in order), usage


def provider_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"]["message"])
    return str(body["detail"])


# --------------------------------------------------------------------------- every recorded file


def test_wire_corpus_present() -> None:
    if not WIRE.is_dir():
        pytest.skip(MISSING)
    folders = {p.parent.name for p in WIRE_FILES}
    assert {"anthropic", "openai", "openrouter", "deepseek", "together"} <= folders
    assert {kind_of(p) for p in WIRE_FILES} == {"error", "stream", "success"}


@pytest.mark.parametrize("path", wire_params(lambda p: True))
def test_recorded_exchange(path: Path) -> None:
    record = load(path)
    response = record["response"]
    status, headers, raw = response["status"], response["headers"], body_bytes(record)
    adapter = adapter_for(path)
    folder = path.parent.name
    kind = kind_of(path)

    if kind == "success":
        texts, reasons, usage = expected_success(folder, response["body"])
        got = adapter.parse_response(status, headers, raw)
        assert got.texts == texts
        assert got.finish_reasons == reasons
        assert got.usage == usage
        assert got.response_id == response["body"]["id"]
        assert got.model == response["body"]["model"]
    elif kind == "stream":
        texts, reasons, usage = expected_stream(folder, response["body"])
        got = adapter.parse_stream(status, headers, raw)
        assert got.texts == texts
        assert got.finish_reasons == reasons
        assert got.usage == usage
    else:
        cls = STATUS_TO_ERROR[status]
        # Secrets in the headers handed to the parser must never reach the error.
        leaky = {**headers, "Authorization": f"Bearer {KEY}", "x-api-key": KEY}
        err = adapter.parse_error(status, leaky, raw, model="m-1")
        # the exact class of every recording is checked by the table in test_chat_wire.py
        assert isinstance(err, cls) or (status == 429 and not err.retryable)
        assert err.retryable is (status in (500, 529) or type(err) is RateLimitError)
        assert err.status == status
        assert err.provider == adapter.name and err.model == "m-1"
        assert provider_message(response["body"]) in str(err)
        assert KEY not in str(err) and KEY not in json.dumps(err.body)
        error_obj = response["body"].get("error")
        if folder == "anthropic":
            assert err.error_type == error_obj["type"]
        elif isinstance(error_obj, dict):
            assert err.error_type in {error_obj.get("code"), error_obj.get("type"), str(error_obj.get("code"))}
        with pytest.raises(type(err)):
            adapter.parse_response(status, headers, raw)


# --------------------------------------------------------------------------- literal expectations


def test_openai_prompt_cache_hit_literal() -> None:
    got = parse("openai/chat_completions_success__2.json")
    assert got.usage == Usage(input_tokens=3663, output_tokens=117, cache_read_tokens=3584)
    assert got.finish_reasons == ("stop",)
    assert got.text.startswith('"Ah, the most important meal of the day')


def test_openai_tool_call_null_content_gives_empty_text() -> None:
    got = parse("openai/chat_completions_success__1.json")
    assert got.texts == ("",)
    assert got.finish_reasons == ("tool_calls",)
    assert got.usage == Usage(input_tokens=92, output_tokens=17)


def test_openai_n2_gives_two_texts() -> None:
    got = parse("openai/chat_completions_n2__1.json")
    assert got.texts == ("This is a test. How can I assist you further?",) * 2
    assert got.finish_reasons == ("stop", "stop")
    assert got.usage == Usage(input_tokens=12, output_tokens=24)
    assert got.mean_logprobs == ()


def test_anthropic_cache_write_literal() -> None:
    got = parse("anthropic/messages_success__1.json")
    assert got.usage == Usage(input_tokens=147 + 4602, output_tokens=38, cache_write_tokens=4602)
    assert got.texts == ("",)  # tool_use block only
    assert got.finish_reasons == ("tool_calls",)  # Anthropic's tool_use, in OpenAI's words


def test_anthropic_cache_read_literal() -> None:
    got = parse("anthropic/messages_success__2.json")
    assert got.usage == Usage(input_tokens=151 + 4602, output_tokens=38, cache_read_tokens=4602)


def test_anthropic_text_and_thinking_tokens_literal() -> None:
    assert parse("anthropic/messages_success__3.json").usage == Usage(
        input_tokens=10 + 7351, output_tokens=4, cache_write_tokens=7351
    )
    four = parse("anthropic/messages_success__4.json")
    assert (four.text, four.usage.input_tokens, four.usage.output_tokens) == ("2", 30, 3)
    assert parse("anthropic/messages_max_tokens__1.json").finish_reasons == ("length",)


def test_groq_cached_and_reasoning_literal() -> None:
    got = parse("groq/chat_completions_success__2.json")
    assert got.usage == Usage(input_tokens=336, output_tokens=96, cache_read_tokens=256, reasoning_tokens=59)


def _reparse_modified(rel: str, change: Callable[[dict[str, Any]], None]) -> Completion:
    record = load(rel)
    body = copy.deepcopy(record["response"]["body"])
    change(body)
    return adapter_for(rel).parse_response(200, {}, json.dumps(body).encode())


def test_deepseek_cache_hit_field() -> None:
    assert parse("deepseek/chat_completions_success__1.json").usage == Usage(input_tokens=12, output_tokens=1)

    def hit(body: dict[str, Any]) -> None:  # older DeepSeek bodies carry only prompt_cache_hit_tokens
        del body["usage"]["prompt_tokens_details"]
        body["usage"].update(prompt_cache_hit_tokens=8, prompt_cache_miss_tokens=4)

    assert _reparse_modified("deepseek/chat_completions_success__1.json", hit).usage.cache_read_tokens == 8


def test_together_top_level_cached_tokens() -> None:
    rel = "together/chat_completions_success__1.json"
    assert parse(rel).usage == Usage(input_tokens=44, output_tokens=23)
    got = _reparse_modified(rel, lambda b: b["usage"].update(cached_tokens=32))
    assert got.usage.cache_read_tokens == 32
    assert parse("together/chat_completions_success__2.json").finish_reasons == ("eos",)


def test_openrouter_cache_write_tokens() -> None:
    rel = "openrouter/chat_completions_success__1.json"
    assert parse(rel).usage == Usage(input_tokens=16, output_tokens=13)
    got = _reparse_modified(rel, lambda b: b["usage"]["prompt_tokens_details"].update(cache_write_tokens=100))
    assert got.usage.cache_write_tokens == 100


def test_openai_mean_logprobs_non_streaming() -> None:
    def add_logprobs(body: dict[str, Any]) -> None:
        body["choices"][0]["logprobs"] = {"content": [{"token": "a", "logprob": -1.0}, {"token": "b", "logprob": -3.0}]}
        body["choices"][1]["logprobs"] = {"content": [{"token": "c", "logprob": -0.5}]}

    got = _reparse_modified("openai/chat_completions_n2__1.json", add_logprobs)
    assert got.mean_logprobs == (-2.0, -0.5)


# --------------------------------------------------------------------------- streams


def test_stream_literals_openai() -> None:
    got = parse("openai/chat_completions_stream__1.json")
    assert (got.texts, got.finish_reasons) == (("2",), ("stop",))
    assert got.usage == Usage(input_tokens=26, output_tokens=4)
    tool = parse("openai/chat_completions_stream__2.json")
    assert (tool.texts, tool.finish_reasons) == (("",), ("tool_calls",))
    assert tool.usage == Usage(input_tokens=54, output_tokens=20)


def test_stream_literals_anthropic() -> None:
    got = parse("anthropic/messages_stream__1.json")
    assert (got.texts, got.finish_reasons) == (("- Captain\n- Scoop",), ("stop",))
    assert got.usage == Usage(input_tokens=17, output_tokens=10)  # message_delta's 10, not message_start's 1
    assert got.response_id == "msg_017A4s3HAsrqf5d2WvBmrpLr"
    tool = parse("anthropic/messages_stream__2.json")
    assert (tool.texts, tool.finish_reasons) == (("",), ("tool_calls",))
    assert tool.usage == Usage(input_tokens=543, output_tokens=40)


def test_stream_literals_openrouter_comment_lines() -> None:
    got = parse("openrouter/chat_completions_stream__1.json")
    assert got.texts == ("test response",)
    assert got.usage == Usage(input_tokens=586, output_tokens=3)


def test_stream_logprobs_literal() -> None:
    got = parse("openai/chat_completions_logprobs_stream__1.json")
    assert got.texts == ("Hi! How can I help?",)
    assert got.usage == Usage(input_tokens=7, output_tokens=10)
    lps = [
        -0.06212615966796875,
        -0.00028228759765625,
        -0.000766754150390625,
        -7.62939453125e-6,
        0.000030517578125,
        -0.0000457763671875,
        -0.000091552734375,
    ]
    assert got.mean_logprobs == pytest.approx((sum(lps) / len(lps),))


def _sse(*events: tuple[str, dict[str, Any] | str]) -> bytes:
    parts = []
    for event, data in events:
        head = f"event: {event}\n" if event else ""
        payload = data if isinstance(data, str) else json.dumps(data)
        parts.append(f"{head}data: {payload}\n\n")
    return "".join(parts).encode()


def test_anthropic_stream_error_event_is_typed() -> None:
    body = _sse(
        (
            "message_start",
            {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1, "output_tokens": 1}}},
        ),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    with pytest.raises(OverloadedError, match="Overloaded"):
        AnthropicAdapter().parse_stream(200, {}, body)


def test_openai_stream_embedded_error_and_missing_usage() -> None:
    err = _sse(("", {"error": {"message": "upstream died", "code": 502}}))
    with pytest.raises(ServerError, match="upstream died"):
        OpenAIAdapter().parse_stream(200, {}, err)
    no_usage = _sse(
        ("", {"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}),
        ("", "[DONE]"),
    )
    with pytest.raises(MalformedResponseError, match="usage"):
        OpenAIAdapter().parse_stream(200, {}, no_usage)


def test_stream_line_separator_inside_text_and_crlf() -> None:
    chunk = {
        "id": "x",
        "choices": [{"index": 0, "delta": {"content": "a\u2028b"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }
    body = ("data: " + json.dumps(chunk, ensure_ascii=False) + "\r\n\r\ndata: [DONE]\r\n\r\n").encode()
    assert OpenAIAdapter().parse_stream(200, {}, body).texts == ("a\u2028b",)


def test_stream_non_2xx_and_malformed() -> None:
    with pytest.raises(RateLimitError):
        AnthropicAdapter().parse_stream(
            429, {"retry-after": "1"}, b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}'
        )
    with pytest.raises(MalformedResponseError, match="message_start"):
        AnthropicAdapter().parse_stream(200, {}, _sse(("ping", {"type": "ping"})))
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        OpenAIAdapter().parse_stream(200, {}, b"data: {not json\n\n")


# --------------------------------------------------------------------------- errors


def test_retry_after_from_recordings() -> None:
    anthropic = load("anthropic/error_429__1.json")["response"]
    err = AnthropicAdapter().parse_error(
        anthropic["status"], anthropic["headers"], body_bytes(load("anthropic/error_429__1.json"))
    )
    assert isinstance(err, RateLimitError) and err.retry_after_s == 7.0
    openai = load("openai/error_429__1.json")
    err = OpenAIAdapter().parse_error(429, openai["response"]["headers"], body_bytes(openai))
    assert err.retry_after_s == 20.0 and err.error_type == "rate_limit_exceeded"
    assert (
        AnthropicAdapter().parse_error(529, {}, body_bytes(load("anthropic/error_529__1.json"))).retry_after_s is None
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"RETRY-AFTER-MS": "1500", "retry-after": "2"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a past HTTP date
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers: dict[str, str], expected: float | None) -> None:
    assert OpenAIAdapter().parse_error(429, headers, b"").retry_after_s == expected


@pytest.mark.parametrize(
    ("status", "body", "cls", "fragment"),
    [
        (502, b"<html><body>502 Bad Gateway</body></html>", ServerError, "502 Bad Gateway"),
        (503, b"", ServerError, "empty error body"),
        (
            500,
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            OverloadedError,
            "Overloaded",
        ),
        (529, b"overloaded", OverloadedError, "overloaded"),
        (
            403,
            b'{"error":{"message":"forbidden region","type":"permission_error"}}',
            PermissionDeniedError,
            "forbidden region",
        ),
        (
            413,
            b'{"type":"error","error":{"type":"request_too_large","message":"too big"}}',
            PayloadTooLargeError,
            "too big",
        ),
        (422, b'{"detail":[{"loc":["body","model"],"msg":"field required"}]}', InvalidRequestError, "field required"),
        (418, b'{"error":"teapot"}', InvalidRequestError, "teapot"),
        (408, b'{"message":"request timed out","type":"timeout"}', ProviderTimeoutError, "request timed out"),
    ],
)
def test_parse_error_shapes(status: int, body: bytes, cls: type[ProviderError], fragment: str) -> None:
    err = OpenAIAdapter().parse_error(status, {}, body, model="m")
    assert type(err) is cls and err.status == status
    assert fragment in str(err)


def test_embedded_error_in_2xx_body_is_typed() -> None:
    body = b'{"error":{"message":"Rate limited upstream","code":429}}'
    with pytest.raises(RateLimitError, match="Rate limited upstream"):
        OpenAIAdapter().parse_response(200, {}, body)


# --------------------------------------------------------------------------- API key safety


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(
            {
                "error": {
                    "message": f"Incorrect API key provided: {KEY}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            }
        ),
        json.dumps({"type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key {KEY}"}}),
        json.dumps({"detail": f"Invalid API Key {KEY}"}),
        f"<html>401: header was Authorization: Bearer {KEY}</html>",
    ],
)
def test_echoed_key_never_in_error(body: str) -> None:
    for adapter in ADAPTERS.values():
        spec = adapter.build_request(
            base_url="https://x",
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            temperature=None,
            api_key=KEY,
        )
        err = adapter.parse_error(401, spec.headers, body.encode(), model="m")
        assert isinstance(err, AuthenticationError)
        assert KEY not in str(err) and KEY not in err.message and KEY not in json.dumps(err.body)
        with pytest.raises(MalformedResponseError) as bad:
            adapter.parse_response(200, spec.headers, f"oops {KEY}".encode())
        assert KEY not in str(bad.value)


@pytest.mark.parametrize("adapter", list(ADAPTERS.values()), ids=list(ADAPTERS))
def test_redacted_headers_and_repr_hide_key(adapter: ProviderAdapter) -> None:
    spec = adapter.build_request(
        base_url="https://x",
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        temperature=0.0,
        api_key=KEY,
    )
    assert KEY in json.dumps(spec.headers)  # really sent
    redacted = spec.redacted_headers()
    assert KEY not in json.dumps(redacted) and "REDACTED" in redacted.values()
    assert set(redacted) == set(spec.headers)
    assert KEY not in repr(spec) and KEY not in str(spec)


# --------------------------------------------------------------------------- malformed 2xx


MESSAGES = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 1 + 1?"}]


@pytest.mark.parametrize("adapter", list(ADAPTERS.values()), ids=list(ADAPTERS))
@pytest.mark.parametrize("body", [b"<html>gateway</html>", b"", b"[1, 2]", b'{"id": "x"'])
def test_malformed_non_json(adapter: ProviderAdapter, body: bytes) -> None:
    with pytest.raises(MalformedResponseError) as info:
        adapter.parse_response(200, {}, body)
    assert info.value.retryable and info.value.status == 200


def test_malformed_missing_fields() -> None:
    openai, anthropic = OpenAIAdapter(), AnthropicAdapter()
    with pytest.raises(MalformedResponseError, match="choices"):
        openai.parse_response(200, {}, b'{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":1}}')
    with pytest.raises(MalformedResponseError, match="choices"):
        openai.parse_response(200, {}, b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}')
    with pytest.raises(MalformedResponseError, match="message"):
        openai.parse_response(200, {}, b'{"choices":[{"index":0}],"usage":{"prompt_tokens":1,"completion_tokens":1}}')
    with pytest.raises(MalformedResponseError, match="content"):
        anthropic.parse_response(200, {}, b'{"id":"x","usage":{"input_tokens":1,"output_tokens":1}}')
    with pytest.raises(MalformedResponseError, match="prompt_tokens"):
        openai.parse_response(
            200, {}, b'{"choices":[{"index":0,"message":{"content":"a"}}],"usage":{"total_tokens":3}}'
        )


@pytest.mark.parametrize("rel", ["openai/chat_completions_success__2.json", "anthropic/messages_success__5.json"])
def test_missing_usage_is_malformed(rel: str) -> None:
    body = copy.deepcopy(load(rel)["response"]["body"])
    del body["usage"]
    with pytest.raises(MalformedResponseError, match="no usage"):
        adapter_for(rel).parse_response(200, {}, json.dumps(body).encode())


# --------------------------------------------------------------------------- build_request


def test_openai_build_request() -> None:
    adapter = OpenAIAdapter()
    spec = adapter.build_request(
        base_url="https://api.example.com/v1/",
        model="gpt-x",
        messages=MESSAGES,
        max_tokens=64,
        temperature=0.2,
        api_key="k1",
    )
    assert isinstance(spec, RequestSpec) and spec.method == "POST"
    assert spec.url == "https://api.example.com/v1/chat/completions"
    assert spec.headers == {"Content-Type": "application/json", "Authorization": "Bearer k1"}
    assert spec.body == {"model": "gpt-x", "messages": MESSAGES, "max_tokens": 64, "temperature": 0.2}
    assert spec.content() == json.dumps(spec.body, ensure_ascii=False, separators=(",", ":")).encode()

    many = adapter.build_request(
        base_url="http://localhost:11434/v1",
        model="m",
        messages=MESSAGES,
        max_tokens=8,
        temperature=None,
        api_key=None,
        n=3,
        logprobs=True,
    )
    assert "Authorization" not in many.headers and "temperature" not in many.body
    assert many.body["n"] == 3 and many.body["logprobs"] is True
    assert adapter.name == "openai"


def test_content_is_deterministic_utf8() -> None:
    spec = OpenAIAdapter().build_request(
        base_url="https://x",
        model="m",
        messages=[{"role": "user", "content": "café ☕"}],
        max_tokens=5,
        temperature=None,
        api_key=None,
    )
    assert "café ☕".encode() in spec.content()
    assert b": " not in spec.content() and spec.content() == spec.content()


def test_anthropic_build_request() -> None:
    adapter = AnthropicAdapter()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be terse."},
        *MESSAGES[1:],
        {"role": "system", "content": [{"type": "text", "text": "No punctuation."}]},
    ]
    spec = adapter.build_request(
        base_url="https://api.anthropic.com/",
        model="claude-x",
        messages=messages,
        max_tokens=100,
        temperature=None,
        api_key="k2",
    )
    assert spec.url == "https://api.anthropic.com/v1/messages"
    assert spec.headers["x-api-key"] == "k2" and spec.headers["anthropic-version"] == "2023-06-01"
    assert spec.headers["content-type"] == "application/json"
    assert not any(h.lower() == "authorization" for h in spec.headers)
    assert spec.body == {
        "model": "claude-x",
        "max_tokens": 100,
        "system": "Be terse.\n\nNo punctuation.",
        "messages": [{"role": "user", "content": "What is 1 + 1?"}],
    }
    assert all(m["role"] != "system" for m in spec.body["messages"])
    bare = adapter.build_request(
        base_url="https://a", model="c", messages=MESSAGES[1:], max_tokens=1, temperature=0.5, api_key=None
    )
    assert "system" not in bare.body and "x-api-key" not in bare.headers and bare.body["temperature"] == 0.5
    assert adapter.name == "anthropic"


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 2}, {"logprobs": True}, {"max_tokens": 0}, {"messages": [{"role": "tool", "content": "x"}]}],
)
def test_anthropic_build_request_rejects(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "base_url": "https://a",
        "model": "c",
        "messages": MESSAGES,
        "max_tokens": 10,
        "temperature": None,
        "api_key": None,
    }
    with pytest.raises(ValueError):
        AnthropicAdapter().build_request(**{**args, **kwargs})


def test_requests_match_recorded_shapes() -> None:
    rec = load("anthropic/messages_success__5.json")["request"]
    sent = rec["body"]
    spec = AnthropicAdapter().build_request(
        base_url="https://api.anthropic.com",
        model=sent["model"],
        messages=sent["messages"],
        max_tokens=sent["max_tokens"],
        temperature=sent["temperature"],
        api_key="k",
    )
    assert set(sent) <= set(spec.body) and spec.body == sent
    assert spec.url == rec["url"]
    recorded_headers = {k.lower(): v for k, v in rec["headers"].items()}
    assert spec.headers["anthropic-version"] == recorded_headers["anthropic-version"]

    system_rec = load("anthropic/messages_success__4.json")["request"]["body"]
    spec = AnthropicAdapter().build_request(
        base_url="https://api.anthropic.com",
        model="c",
        max_tokens=10,
        temperature=None,
        api_key=None,
        messages=[{"role": "system", "content": system_rec["system"]}, *system_rec["messages"]],
    )
    assert spec.body["system"] == system_rec["system"]  # blocks with cache_control stay blocks
    assert spec.body["messages"] == system_rec["messages"]

    for rel, base in [
        ("ollama/chat_completions_success__1.json", "http://localhost:11434/v1"),
        ("openai/chat_completions_n2__1.json", "https://api.openai.com/v1"),
    ]:
        rec = load(rel)["request"]
        spec = OpenAIAdapter().build_request(
            base_url=base,
            model=rec["body"]["model"],
            messages=rec["body"]["messages"],
            max_tokens=16,
            temperature=None,
            api_key="k",
            n=rec["body"].get("n", 1),
        )
        assert spec.url == rec["url"]
        assert {k: spec.body[k] for k in ("model", "messages")} == {k: rec["body"][k] for k in ("model", "messages")}
        assert spec.body.get("n") == rec["body"].get("n")


# --------------------------------------------------------------------------- registry / import weight


def test_get_adapter() -> None:
    assert isinstance(get_adapter("openai"), OpenAIAdapter)
    assert isinstance(get_adapter("anthropic"), AnthropicAdapter)
    assert set(ADAPTERS) == {"openai", "anthropic"}
    with pytest.raises(ConfigError, match="gemini") as info:
        get_adapter("gemini")
    assert "anthropic" in str(info.value) and "openai" in str(info.value)


def test_module_imports_only_stdlib_and_routerlab() -> None:
    tree = ast.parse((REPO / "routerlab" / "providers.py").read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - {"routerlab", "httpx"} <= set(sys.stdlib_module_names), imported
