"""A fake provider endpoint for tests and examples, behind ``httpx.MockTransport``.

``FakeProviders`` answers OpenAI-compatible ``/chat/completions`` and
Anthropic ``/v1/messages`` requests in each provider's real wire format from
answers you enqueue per model::

    fake = FakeProviders(clock=clock)
    fake.enqueue("gpt-4o-mini", "Paris", "Paris")         # two samples
    fake.enqueue("gpt-4o", status=429)                     # a rate limit
    fake.enqueue("claude-3-5-sonnet-20240620", timeout=True)
    client = httpx.Client(transport=fake.transport())

A request with ``n=k`` takes k queued texts at once. Every request is kept in
``fake.requests`` (method, url, headers, parsed JSON body) for assertions.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class _Queued:
    text: str | None = None
    status: int = 200
    timeout: bool = False
    body: bytes | None = None
    delay_s: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    logprob: float | None = None


@dataclass
class FakeProviders:
    """Scripted provider endpoints; ``clock`` (if given, a :class:`FakeClock`) advances by ``delay_s``."""

    clock: Any = None
    default_text: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    _queues: dict[str, deque[_Queued]] = field(default_factory=lambda: defaultdict(deque))

    def enqueue(
        self,
        model: str,
        *texts: str,
        status: int = 200,
        timeout: bool = False,
        body: bytes | None = None,
        delay_s: float = 0.0,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        logprob: float | None = None,
    ) -> FakeProviders:
        """Queue answers for ``model``: one per text, or one failure (status/timeout/raw body)."""
        q = self._queues[model]
        if texts:
            for t in texts:
                q.append(_Queued(t, status, timeout, body, delay_s, input_tokens, output_tokens, logprob))
        else:
            q.append(_Queued(None, status, timeout, body, delay_s, input_tokens, output_tokens, logprob))
        return self

    def calls(self, model: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.requests if model is None or r["body"].get("model") == model]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def async_transport(self) -> httpx.MockTransport:
        async def handler(request: httpx.Request) -> httpx.Response:
            return self.handle(request)

        return httpx.MockTransport(handler)

    def _take(self, model: str) -> _Queued:
        q = self._queues[model]
        if q:
            return q.popleft()
        if self.default_text is not None:
            return _Queued(self.default_text)
        raise AssertionError(f"FakeProviders: nothing queued for model {model!r}")

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        self.requests.append(
            {"method": request.method, "url": str(request.url), "headers": dict(request.headers), "body": body}
        )
        model = str(body.get("model", ""))
        anthropic = request.url.path.endswith("/v1/messages")
        n = int(body.get("n", 1))
        first = self._take(model)
        if first.delay_s and self.clock is not None:
            self.clock.advance(first.delay_s)
        if first.timeout:
            raise httpx.ReadTimeout("fake timeout", request=request)
        if first.body is not None:
            return httpx.Response(first.status, content=first.body, headers={"content-type": "application/json"})
        if first.status != 200:
            return _error(first.status, anthropic)
        items = [first] + [self._take(model) for _ in range(n - 1)]
        prompt_tokens = first.input_tokens if first.input_tokens is not None else _count(body)
        outs = [q.output_tokens if q.output_tokens is not None else len(str(q.text).split()) + 1 for q in items]
        if anthropic:
            payload = anthropic_message(model, str(items[0].text), prompt_tokens, outs[0])
        else:
            lps: list[float | None] = [q.logprob if body.get("logprobs") else None for q in items]
            payload = openai_completion(model, [str(q.text) for q in items], prompt_tokens, sum(outs), lps)
        payload["id"] = f"{payload['id']}{len(self.requests)}"
        return httpx.Response(200, json=payload)


def openai_completion(
    model: str,
    texts: list[str],
    prompt_tokens: int,
    completion_tokens: int,
    logprobs: list[float | None] | None = None,
) -> dict[str, Any]:
    """An OpenAI-compatible ``chat.completion`` body with one choice per text."""
    choices = []
    for i, t in enumerate(texts):
        lp = (logprobs or [None] * len(texts))[i]
        lpd: dict[str, Any] | None = None
        if lp is not None:
            lpd = {
                "content": [{"token": w, "logprob": lp, "bytes": None, "top_logprobs": []} for w in t.split() or [""]]
            }
        choices.append(
            {"index": i, "message": {"role": "assistant", "content": t}, "logprobs": lpd, "finish_reason": "stop"}
        )
    return {
        "id": "chatcmpl-rl",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_message(model: str, text: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """An Anthropic Messages API ``message`` body with one text block."""
    return {
        "id": "msg_rl",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        },
    }


def _count(body: dict[str, Any]) -> int:
    words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return words + len(str(body.get("system", "")).split()) + 3


def _error(status: int, anthropic: bool) -> httpx.Response:
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }
    etype = kinds.get(status, "api_error")
    if anthropic:
        payload: dict[str, Any] = {"type": "error", "error": {"type": etype, "message": f"fake {etype}"}}
    else:
        payload = {"error": {"message": f"fake {etype}", "type": etype, "param": None, "code": None}}
    return httpx.Response(status, json=payload)


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
