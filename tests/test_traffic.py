"""The router on real traffic: tier-local failures, reasoning models, n support, tools, streaming,
unusable answers, probes, deadlines, size limits and key scrubbing.

Provider replies are the real recorded bodies in ``../shared/provider-wire/`` (read at run time, via
``ROUTERLAB_PROVIDER_WIRE``), served by ``httpx.MockTransport`` or by servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from wire import load

from routerlab import (
    AsyncCascadeRouter,
    CascadeExhaustedError,
    CascadeRouter,
    InvalidRequestError,
    RequestError,
    RouterlabError,
)
from routerlab.fakes import FakeClock, anthropic_message, openai_completion
from routerlab.policy import policy_from_dict

HEX_KEY = "0123456789abcdef0123456789abcdef"
GOOGLE_KEY = "AIzaSyD-4xQ9kEXAMPLEexampleKEY0123456789"
KEYS = {"CHEAP_KEY": HEX_KEY, "MID_KEY": "sk-ant-mid-0123456789", "TOP_KEY": GOOGLE_KEY}
Q = "Tell me the capital city of France in one word"  # medium


wire = load  # one recorded exchange of ../shared/provider-wire (skipped when missing)


def wire_response(rel: str, **headers: str) -> httpx.Response:
    """The recorded response of ``rel`` (status, body as recorded; content-type and extra headers)."""
    resp = wire(rel)["response"]
    raw = resp.get("body_raw")
    if raw is None:
        raw = resp["body"] if isinstance(resp["body"], str) else json.dumps(resp["body"])
    stream = isinstance(resp["body"], str) and "data:" in resp["body"]
    ctype = "text/event-stream" if stream else "application/json"
    return httpx.Response(resp["status"], content=str(raw).encode(), headers={"content-type": ctype, **headers})


def tier(name: str, provider: str, model: str, base_url: str, key: str | None, **over: Any) -> dict[str, Any]:
    t = {
        "name": name,
        "provider": provider,
        "model": model,
        "base_url": base_url,
        "api_key_env": key,
        "timeout_s": 5,
        "max_tokens": 64,
        "temperature": 0,
        "price": {"input_usd_per_mtok": "1", "output_usd_per_mtok": "2"},
    }
    t.update(over)
    return t


def ladder(*tiers: dict[str, Any], **over: Any) -> Any:
    d: dict[str, Any] = {
        "schema_version": 1,
        "tiers": list(tiers),
        "confidence": {"classes": ["medium"], "k": 2, "similarity": "difflib", "thresholds": [0.8] * (len(tiers) - 1)},
        "breaker": {"failure_threshold": 2, "window_s": 60, "recovery_s": 30, "disable_s": 600},
    }
    d.update(over)
    return policy_from_dict(d)


CHEAP = tier("cheap", "openai", "gpt-4o-mini", "https://api.openai.com/v1", "CHEAP_KEY")
MID = tier("mid", "anthropic", "claude-sonnet-4-0", "https://api.anthropic.com", "MID_KEY")
TOP = tier("top", "openai", "gpt-4o", "https://top.example/v1", "TOP_KEY")


class Script:
    """A MockTransport handler answering each model from its own queue of responses (or callables)."""

    def __init__(self) -> None:
        self.queues: dict[str, list[Any]] = {}
        self.requests: list[dict[str, Any]] = []

    def add(self, model: str, *responses: Any) -> Script:
        self.queues.setdefault(model, []).extend(responses)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        self.requests.append({"url": str(request.url), "headers": dict(request.headers), "body": body})
        q = self.queues.get(body.get("model", ""))
        assert q, f"nothing queued for {body.get('model')!r}"
        r = q.pop(0)
        return r(request, body) if callable(r) else r

    def bodies(self, model: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["body"].get("model") == model]


def ok(model: str, *texts: str, finish: str = "stop") -> httpx.Response:
    payload = openai_completion(model, list(texts), 10, 5 * len(texts))
    for c in payload["choices"]:
        c["finish_reason"] = finish
    return httpx.Response(200, json=payload)


def ant(model: str, text: str) -> httpx.Response:
    return httpx.Response(200, json=anthropic_message(model, text, 10, 5))


def router_for(policy: Any, script: Script, **kw: Any) -> CascadeRouter:
    return CascadeRouter(policy, client=httpx.Client(transport=httpx.MockTransport(script)), api_keys=KEYS, **kw)


# ---------------------------------------------------------------- tier-local failures move on


@pytest.mark.parametrize("rel", ["openai/error_404__1.json", "openai/error_401__1.json", "azure/error_404__1.json"])
def test_a_tier_local_error_at_the_cheap_tier_is_answered_by_the_mid_tier(rel: str) -> None:
    script = (
        Script().add("gpt-4o-mini", wire_response(rel)).add("claude-sonnet-4-0", ant("x", "Paris"), ant("x", "Paris"))
    )
    clock = FakeClock()
    r = router_for(ladder(CHEAP, MID, TOP), script, clock=clock).route(Q)
    assert (r.tier, r.text) == ("mid", "Paris")
    assert r.attempts[0].outcome == "error" and r.attempts[0].error_kind in ("not_found", "auth")
    # the tier is disabled for the breaker's disable_s (600 s), not tried by the next route
    router = router_for(ladder(CHEAP, MID, TOP), script, clock=clock)
    router._breakers = {}  # a fresh router state, same script
    script.add("gpt-4o-mini", wire_response(rel)).add("claude-sonnet-4-0", ant("x", "Paris"), ant("x", "Paris"))
    router.route(Q)
    script.add("claude-sonnet-4-0", ant("x", "Paris"), ant("x", "Paris"))
    r2 = router.route(Q)
    assert r2.attempts[0].outcome == "skipped_breaker"
    clock.advance(601)
    script.add("gpt-4o-mini", ok("gpt-4o-mini", "Paris", "Paris"))
    assert router.route(Q).tier == "cheap"  # the probe after disable_s


def test_context_length_at_the_cheap_tier_goes_to_a_larger_tier_without_feeding_its_breaker() -> None:
    script = Script()
    for _ in range(3):
        script.add("gpt-4o-mini", wire_response("deepseek/error_400__1.json"))
        script.add("claude-sonnet-4-0", ant("x", "Paris"), ant("x", "Paris"))
    router = router_for(ladder(CHEAP, MID, TOP), script)
    for _ in range(3):  # three long prompts: the cheap tier stays in service for short ones
        r = router.route(Q)
        assert r.tier == "mid" and r.attempts[0].error_kind == "context_length"
    assert router.breaker(router.policy.tiers[0]).state == "closed"


def test_the_same_invalid_request_at_every_tier_raises_it() -> None:
    bad = {
        "error": {"message": "messages.0: Input does not match the expected shape.", "type": "invalid_request_error"}
    }
    script = Script().add("gpt-4o-mini", httpx.Response(400, json=bad)).add("gpt-4o", httpx.Response(400, json=bad))
    script.add("claude-sonnet-4-0", wire_response("anthropic/error_400__2.json"))
    with pytest.raises(InvalidRequestError) as ei:
        router_for(ladder(CHEAP, MID, TOP, confidence={"classes": []}), script).route(Q)
    assert [a.outcome for a in ei.value.attempts] == ["error", "error", "error"]


def test_a_request_that_cannot_be_translated_fails_before_any_call() -> None:
    script = Script()
    with pytest.raises(RequestError, match="seed") as ei:
        router_for(ladder(CHEAP, MID), script).route(Q, seed=7)
    assert ei.value.tier == "mid" and script.requests == []
    with pytest.raises(RequestError, match=r"messages\[0\]"):
        router_for(ladder(CHEAP, MID), script).route(["not a message"])  # type: ignore[list-item]
    with pytest.raises(RequestError, match="unknown request field"):
        router_for(ladder(CHEAP, MID), script).route({"messages": [{"role": "user", "content": "hi"}], "tmperature": 1})
    assert script.requests == []


# ---------------------------------------------------------------- model families


def test_an_o_series_tier_sends_max_completion_tokens_and_no_temperature() -> None:
    o3 = tier("cheap", "openai", "o3-mini", "https://api.openai.com/v1", "CHEAP_KEY", reasoning_effort="low")
    script = Script().add("o3-mini", ok("o3-mini", "Paris", "Paris"))
    r = router_for(ladder(o3, TOP), script).route(Q)
    body = script.bodies("o3-mini")[0]
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    assert "temperature" not in body and body["reasoning_effort"] == "low" and body["n"] == 2
    assert r.tier == "cheap"


def test_reasoning_tokens_are_priced_as_output_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    gpt5 = tier(
        "only",
        "openai",
        "gpt-5-nano",
        "https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01",
        "CHEAP_KEY",
    )
    script = Script().add("gpt-5-nano", wire_response("azure/chat_completions_reasoning__1.json"))
    caplog.set_level(logging.INFO, logger="routerlab.router")
    r = router_for(ladder(gpt5), script).route(Q)
    assert script.requests[0]["url"] == (
        "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-06-01"
    )
    assert script.requests[0]["headers"].get("api-key") == HEX_KEY
    assert r.usage.reasoning_tokens == 192
    line = json.loads([rec.message for rec in caplog.records if '"event": "route"' in rec.message][-1])
    assert line["reasoning_tokens"] == 192


def test_a_groq_tier_sends_no_n() -> None:
    groq = tier("cheap", "openai", "llama-3.1-8b-instant", "https://api.groq.com/openai/v1", "CHEAP_KEY")
    script = Script().add("llama-3.1-8b-instant", ok("l", "Paris"), ok("l", "Paris"))
    r = router_for(ladder(groq, TOP), script).route(Q)
    bodies = script.bodies("llama-3.1-8b-instant")
    assert len(bodies) == 2 and all("n" not in b for b in bodies)
    assert r.tier == "cheap" and r.attempts[0].calls == 2


def test_a_one_choice_reply_to_n_2_is_completed_by_one_more_request() -> None:
    vllm = tier("cheap", "openai", "qwen", "http://127.0.0.1:9/v1", "CHEAP_KEY")
    script = Script().add("qwen", ok("qwen", "Paris"), ok("qwen", "Paris"))
    r = router_for(ladder(vllm, TOP), script).route(Q)
    bodies = script.bodies("qwen")
    assert [b.get("n") for b in bodies] == [2, None] and bodies[1]["temperature"] == 0.7
    assert r.tier == "cheap" and r.attempts[0].similarity == 1.0 and r.attempts[0].calls == 2
    assert r.cost_usd == r.attempts[0].cost_usd > 0  # both paid requests are counted


# ---------------------------------------------------------------- a full chat request in


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_a_tool_call_request_through_an_openai_and_an_anthropic_tier() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    same = openai_completion("gpt-4o-mini", ["", ""], 50, 20)
    for c in same["choices"]:
        c["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
        c["finish_reason"] = "tool_calls"
    request = {"messages": [{"role": "user", "content": Q}], "tools": [WEATHER], "tool_choice": "auto"}
    script = Script().add("gpt-4o-mini", httpx.Response(200, json=same))
    r = router_for(ladder(CHEAP, MID), script).route(request)
    assert r.tier == "cheap" and r.attempts[0].similarity == 1.0  # same tool, equal arguments: agree
    assert [(t.name, t.parsed_arguments()) for t in r.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert r.finish_reason == "tool_calls" and script.bodies("gpt-4o-mini")[0]["tools"] == [WEATHER]

    # the cheap tier fails; the Anthropic tier gets the tools translated and answers with tool_use
    tool_use = wire_response("anthropic/messages_success__1.json")
    script = Script().add("gpt-4o-mini", httpx.Response(500, json={"error": {"message": "x"}}))
    script.add("claude-sonnet-4-0", tool_use)
    r = router_for(ladder(CHEAP, MID), script).route(request)
    sent = script.bodies("claude-sonnet-4-0")[0]
    assert sent["tools"][0]["name"] == "get_weather" and "input_schema" in sent["tools"][0]
    assert sent["tool_choice"] == {"type": "auto"}
    assert r.tier == "mid" and r.tool_calls and r.finish_reason == "tool_calls"


def test_samples_calling_different_tools_disagree() -> None:
    a = {"id": "1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    b = {"id": "2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}
    two = openai_completion("gpt-4o-mini", ["", ""], 50, 20)
    for c, tc in zip(two["choices"], (a, b), strict=True):
        c["message"] = {"role": "assistant", "content": None, "tool_calls": [tc]}
    script = Script().add("gpt-4o-mini", httpx.Response(200, json=two)).add("gpt-4o", ok("gpt-4o", "ok"))
    r = router_for(ladder(CHEAP, TOP), script).route(Q, tools=[WEATHER])
    assert r.attempts[0].similarity == 0.0 and r.tier == "top"


# ---------------------------------------------------------------- unusable answers


def test_two_empty_samples_escalate() -> None:
    script = Script().add("gpt-4o-mini", ok("gpt-4o-mini", "", "")).add("gpt-4o", ok("gpt-4o", "Paris"))
    r = router_for(ladder(CHEAP, TOP), script).route(Q)
    assert r.tier == "top" and r.attempts[0].outcome == "unusable" and "empty" in r.escalation_reasons[0]


def test_a_reasoning_reply_cut_off_at_the_budget_escalates_and_the_final_tier_keeps_finish_reason() -> None:
    o3 = tier("cheap", "openai", "o3-mini", "https://api.openai.com/v1", "CHEAP_KEY")
    policy = ladder(o3, TOP, confidence={"classes": []})  # no check: one sample
    script = Script().add("o3-mini", wire_response("openai/chat_completions_reasoning__3.json"))
    script.add("gpt-4o", ok("gpt-4o", "Paris, cut", finish="length"))
    r = router_for(policy, script).route(Q)
    assert r.attempts[0].outcome == "unusable" and r.attempts[0].finish_reason == "length"
    assert r.tier == "top" and r.finish_reason == "length" and not r.fallback


def test_an_unusable_final_answer_falls_back_to_the_usable_one_with_a_flag() -> None:
    script = Script().add("gpt-4o-mini", ok("gpt-4o-mini", "Paris", "Lyon maybe")).add("gpt-4o", ok("gpt-4o", ""))
    r = router_for(ladder(CHEAP, TOP), script).route(Q)
    assert (r.tier, r.text, r.fallback) == ("cheap", "Paris", True)


# ---------------------------------------------------------------- nothing leaks, nothing sticks


def test_a_401_echoing_the_key_leaves_no_trace_of_it(caplog: pytest.LogCaptureFixture) -> None:
    echo = {
        "error": {
            "message": f"Incorrect API key provided: {HEX_KEY}. Or {GOOGLE_KEY}?",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    script = Script().add("gpt-4o-mini", httpx.Response(401, json=echo)).add("gpt-4o", httpx.Response(401, json=echo))
    caplog.set_level(logging.DEBUG, logger="routerlab.router")
    with pytest.raises(CascadeExhaustedError) as ei:
        router_for(ladder(CHEAP, TOP), script).route(Q)
    err = ei.value
    blobs = [str(err), repr(err.attempts)] + [r.getMessage() for r in caplog.records]
    for a in err.attempts:
        blobs.append(str(a.error_message))
    for key in (HEX_KEY, GOOGLE_KEY):
        assert not any(key in b for b in blobs)
    assert "REDACTED" in err.attempts[0].error_message


def test_a_bad_gzip_body_is_a_provider_error_not_a_bare_decoding_error() -> None:
    bad = httpx.Response(
        200,
        headers={"content-encoding": "gzip", "content-type": "application/json"},
        stream=httpx.ByteStream(b"definitely not gzip"),
    )
    script = Script().add("gpt-4o-mini", bad).add("gpt-4o", ok("gpt-4o", "Paris"))
    r = router_for(ladder(CHEAP, TOP), script).route(Q)
    assert r.tier == "top" and r.attempts[0].error_kind == "malformed"
    good = httpx.Response(
        200,
        content=gzip.compress(json.dumps(openai_completion("gpt-4o-mini", ["P", "P"], 3, 2)).encode()),
        headers={"content-encoding": "gzip"},
    )
    assert router_for(ladder(CHEAP, TOP), Script().add("gpt-4o-mini", good)).route(Q).tier == "cheap"


def test_a_body_over_the_size_limit_is_not_read_whole() -> None:
    big = httpx.Response(200, content=b"x" * 3_000_000, headers={"content-type": "application/json"})
    script = Script().add("gpt-4o-mini", big).add("gpt-4o", ok("gpt-4o", "Paris"))
    r = router_for(ladder(CHEAP, TOP, max_response_bytes=1_000_000), script).route(Q)
    assert r.tier == "top" and "max_response_bytes" in r.attempts[0].error_message


def test_an_unexpected_error_inside_is_wrapped_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from routerlab import decision

    def boom(*a: Any, **k: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(decision, "account_replies", boom)
    caplog.set_level(logging.INFO, logger="routerlab.router")
    with pytest.raises(RouterlabError, match="internal error"):
        router_for(ladder(CHEAP, TOP), Script().add("gpt-4o-mini", ok("gpt-4o-mini", "a", "a"))).route(Q)
    assert len([r for r in caplog.records if '"event": "route"' in r.getMessage()]) == 1


def test_retry_after_sets_the_cooldown_and_bounded_retries_wait_for_it() -> None:
    limited = httpx.Response(
        429, json={"error": {"message": "slow down", "type": "requests"}}, headers={"retry-after": "1"}
    )
    clock = FakeClock()
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.advance(s)

    # without retries: the tier is skipped by the next route until the retry-after passed
    script = Script().add("gpt-4o-mini", limited).add("gpt-4o", ok("gpt-4o", "a"), ok("gpt-4o", "b"))
    router = router_for(ladder(CHEAP, TOP), script, clock=clock, sleep=sleep)
    assert router.route(Q).tier == "top"
    assert router.route(Q).attempts[0].outcome == "skipped_breaker"
    # with one retry: the route waits the retry-after and the same tier answers
    script = Script().add("gpt-4o-mini", limited, ok("gpt-4o-mini", "P", "P"))
    router = router_for(
        ladder(CHEAP, TOP, retries={"max_retries": 1, "max_wait_s": 2}), script, clock=clock, sleep=sleep
    )
    r = router.route(Q)
    assert r.tier == "cheap" and slept == [1.0] and [a.outcome for a in r.attempts] == ["error", "accepted"]


def test_spent_cap_mode_stops_once_the_real_spend_reaches_the_cap() -> None:
    from routerlab import CostCapError

    # a call costs about $0.00004 (10 in, 10-20 out tokens at $1/$2 per Mtok); its worst case at
    # max_tokens 64 x 2 samples is about $0.0003, over a $0.0001 cap: worst_case mode calls nothing
    script = Script()
    with pytest.raises(CostCapError):
        router_for(ladder(CHEAP, TOP, max_cost_per_query_usd="0.0001"), script).route(Q)
    assert script.requests == []
    # spent mode calls while the real spend is under the cap, and stops once it is reached
    script = Script().add("gpt-4o-mini", ok("gpt-4o-mini", "a", "totally different answer"))
    script.add("gpt-4o", ok("gpt-4o", "b"))
    spent = ladder(CHEAP, TOP, max_cost_per_query_usd="0.0001", cost_cap_mode="spent")
    r = router_for(spent, script).route(Q)
    assert r.tier == "top" and r.cost_usd > 0
    tiny = ladder(CHEAP, TOP, max_cost_per_query_usd="0.00001", cost_cap_mode="spent")
    script = Script().add("gpt-4o-mini", ok("gpt-4o-mini", "a", "totally different answer"))
    r = router_for(tiny, script).route(Q)
    assert r.fallback and r.tier == "cheap" and r.attempts[1].outcome == "skipped_cost_cap"
    assert r.cost_usd > Decimal("0.00001")  # over the cap by at most the one call that reached it


def test_the_classifier_reads_every_user_message_by_default() -> None:
    convo = [
        {"role": "user", "content": "Analyze and compare these two architectures in depth: ..."},
        {"role": "assistant", "content": "Here is a long comparison..."},
        {"role": "user", "content": "Summarize that."},
    ]
    script = Script().add("gpt-4o", ok("gpt-4o", "done"))
    policy = ladder(CHEAP, TOP, routing={"complex": {"start_tier": 1}})
    r = router_for(policy, script).route(convo)
    assert r.complexity == "complex" and r.tier == "top" and r.classification is not None
    last = ladder(CHEAP, TOP, routing={"complex": {"start_tier": 1}}, classifier={"read": "last_user"})
    script = Script().add("gpt-4o-mini", ok("gpt-4o-mini", "s"))
    assert router_for(last, script).route(convo).complexity == "simple"


# ---------------------------------------------------------------- probes, deadlines, streams (real sockets)


@contextmanager
def serve(handler: Callable[[socket.socket, bytes], None]) -> Iterator[int]:
    """A tiny HTTP server on 127.0.0.1: ``handler(conn, request_bytes)`` writes the raw response."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    def one(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    (ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")), b"0"
                )
            )
            while len(body) < length:
                body += conn.recv(65536)
            try:
                handler(conn, body)
            except OSError:
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(2)
        srv.close()


def _drip(conn: socket.socket, body: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
    for _ in range(200):  # 8 bytes every 0.1 s: every read is quick, the whole answer never is
        conn.sendall(b'{"a":1} ')
        time.sleep(0.1)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_drip_feeding_server_is_cut_off_at_the_tier_deadline(mode: str) -> None:
    with serve(_drip) as port:
        slow = tier("cheap", "openai", "drip", f"http://127.0.0.1:{port}/v1", "CHEAP_KEY", timeout_s=0.5)
        policy = ladder(slow, TOP, confidence={"classes": []})
        script = Script().add("gpt-4o", ok("gpt-4o", "Paris"))
        top = httpx.MockTransport(script)
        t0 = time.monotonic()
        if mode == "sync":
            mounts = {"https://top.example": top}
            client = httpx.Client(mounts=mounts)
            r = CascadeRouter(policy, client=client, api_keys=KEYS).route(Q)
        else:

            async def handler(request: httpx.Request) -> httpx.Response:
                return script(request)

            async def go() -> Any:
                async with httpx.AsyncClient(mounts={"https://top.example": httpx.MockTransport(handler)}) as c:
                    return await AsyncCascadeRouter(policy, client=c, api_keys=KEYS).route(Q)

            r = asyncio.run(go())
        elapsed = time.monotonic() - t0
    assert r.tier == "top" and r.attempts[0].error_kind == "timeout"
    assert elapsed < 1.5, f"the 0.5 s tier held the route {elapsed:.2f} s"


def _sse(conn: socket.socket, gate: threading.Event, events: list[bytes], sent_last: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for i, ev in enumerate(events):
        if i == 2:
            gate.wait(5)  # hold the rest until the client has seen a delta
        if i == len(events) - 1:
            sent_last.set()
        conn.sendall(f"{len(ev):x}\r\n".encode() + ev + b"\r\n")
    conn.sendall(b"0\r\n\r\n")


def _openai_events() -> list[bytes]:
    chunks = []
    for piece in ("Par", "is", "."):
        c = {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        chunks.append(b"data: " + json.dumps(c).encode() + b"\n\n")
    end = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    usage = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    return chunks + [
        b"data: " + json.dumps(end).encode() + b"\n\n",
        b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n",
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_streamed_route_yields_deltas_before_the_last_byte_is_sent(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    gate, sent_last = threading.Event(), threading.Event()
    seen_before_last: list[bool] = []
    caplog.set_level(logging.INFO, logger="routerlab.router")
    with serve(lambda conn, body: _sse(conn, gate, _openai_events(), sent_last)) as port:
        only = tier("top", "openai", "gpt-4o", f"http://127.0.0.1:{port}/v1", "TOP_KEY")
        policy = ladder(only)
        deltas: list[str] = []
        if mode == "sync":
            with CascadeRouter(policy, client=httpx.Client(), api_keys=KEYS).route_stream(Q) as s:
                for d in s:
                    seen_before_last.append(not sent_last.is_set())
                    deltas.append(d)
                    gate.set()
                result = s.result
        else:

            async def go() -> Any:
                async with httpx.AsyncClient() as c:
                    async with AsyncCascadeRouter(policy, client=c, api_keys=KEYS).route_stream(Q) as s:
                        async for d in s:
                            seen_before_last.append(not sent_last.is_set())
                            deltas.append(d)
                            gate.set()
                        return s.result

            result = asyncio.run(go())
    assert "".join(deltas) == "Paris." and seen_before_last[0]
    assert result is not None and result.text == "Paris." and result.usage.output_tokens == 3 and result.cost_usd > 0
    lines = [r for r in caplog.records if '"event": "route"' in r.getMessage()]
    assert len(lines) == 1


def test_a_stream_closed_early_writes_its_log_line_and_frees_the_tier(caplog: pytest.LogCaptureFixture) -> None:
    gate, sent_last = threading.Event(), threading.Event()
    caplog.set_level(logging.INFO, logger="routerlab.router")
    with serve(lambda conn, body: _sse(conn, gate, _openai_events(), sent_last)) as port:
        only = tier("top", "openai", "gpt-4o", f"http://127.0.0.1:{port}/v1", "TOP_KEY")
        router = CascadeRouter(ladder(only), client=httpx.Client(), api_keys=KEYS)
        s = router.route_stream(Q)
        assert next(iter(s)) == "Par"
        s.close()
        gate.set()
    lines = [json.loads(r.getMessage()) for r in caplog.records if '"event": "route"' in r.getMessage()]
    assert len(lines) == 1 and lines[0]["ok"] is False and lines[0]["error"] == "StreamClosedError"
    assert router.breaker(router.policy.tiers[0]).allow()


def test_a_checked_tier_streams_the_accepted_answer_once() -> None:
    script = Script().add("gpt-4o-mini", ok("gpt-4o-mini", "Paris", "Paris"))
    s = router_for(ladder(CHEAP, TOP), script).route_stream(Q)
    assert list(s) == ["Paris"] and s.result is not None and s.result.tier == "cheap"
    assert "stream" not in script.bodies("gpt-4o-mini")[0]


def test_a_cancelled_route_during_a_half_open_probe_leaves_the_breaker_usable() -> None:
    clock = FakeClock()

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("not reached")

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as c:
            router = AsyncCascadeRouter(ladder(CHEAP, TOP), client=c, api_keys=KEYS, clock=clock)
            b = router.breaker(router.policy.tiers[0])
            b.record_failure()
            b.record_failure()  # open
            clock.advance(31)  # half-open: the next route holds the probe
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(router.route(Q), 0.2)
            assert b.allow()  # the probe was handed back: the tier is usable again

    asyncio.run(go())


# ---------------------------------------------------------------- the policy's new settings


@pytest.mark.parametrize(
    ("base_url", "ok_"),
    [
        ("https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01", True),
        ("http://127.0.0.1:8000/v1", True),
        ("http://", False),
        ("https://", False),
        ("ftp://host/v1", False),
        ("https://host/v1#frag", False),
        ("https://host:99999/v1", False),
    ],
)
def test_base_url_is_validated_at_load(base_url: str, ok_: bool) -> None:
    from routerlab import PolicyError

    t = tier("only", "openai", "gpt-4o", base_url, None)
    if ok_:
        assert ladder(t).tiers[0].base_url == base_url
    else:
        with pytest.raises(PolicyError, match=r"tiers\[0\]\.base_url"):
            ladder(t)


@pytest.mark.parametrize(
    ("base_url", "n"),
    [
        ("https://api.openai.com/v1", True),
        ("https://api.groq.com/openai/v1", False),
        ("http://localhost:11434/v1", False),
        ("https://openrouter.ai/api/v1", False),
        ("https://api.deepseek.com", False),
        ("https://api.together.xyz/v1", True),
        ("https://api.mistral.ai/v1", True),
        ("http://10.0.0.5:8000/v1", True),
    ],
)
def test_n_support_defaults_follow_the_host_and_round_trip(base_url: str, n: bool) -> None:
    from routerlab.policy import policy_to_dict

    p = ladder(tier("only", "openai", "m", base_url, None))
    assert p.tiers[0].supports_n is n
    assert "supports_n" not in policy_to_dict(p)["tiers"][0]  # defaults stay implicit
    flipped = ladder(tier("only", "openai", "m", base_url, None, supports_n=not n))
    assert policy_to_dict(flipped)["tiers"][0]["supports_n"] is (not n)
    assert policy_from_dict(policy_to_dict(flipped)) == flipped


def test_reasoning_settings_are_checked() -> None:
    from routerlab import PolicyError

    assert ladder(tier("a", "openai", "o4-mini", "https://api.openai.com/v1", None)).tiers[0].reasoning
    assert not ladder(tier("a", "openai", "gpt-5-chat-latest", "https://api.openai.com/v1", None)).tiers[0].reasoning
    with pytest.raises(PolicyError, match="reasoning_effort"):
        ladder(tier("a", "openai", "gpt-4o", "https://api.openai.com/v1", None, reasoning_effort="low"))
    with pytest.raises(PolicyError, match="reasoning"):
        ladder(tier("a", "anthropic", "claude", "https://api.anthropic.com", None, reasoning=True))
    with pytest.raises(PolicyError, match="logprob"):
        ladder(
            tier("a", "openai", "o3", "https://api.openai.com/v1", None),
            TOP,
            confidence={"signal": "logprob", "classes": ["medium"]},
        )


def test_new_top_level_settings_validate_and_stay_implicit_when_default() -> None:
    from routerlab import PolicyError
    from routerlab.policy import policy_to_dict

    plain = policy_to_dict(ladder(CHEAP, TOP, breaker={}))
    for key in ("cost_cap_mode", "retries", "route_deadline_s", "max_response_bytes"):
        assert key not in plain  # policy ids of files written before these existed do not change
    assert "escalate_on" not in plain["confidence"] and "disable_s" not in plain["breaker"]
    full = ladder(
        CHEAP,
        TOP,
        cost_cap_mode="spent",
        retries={"max_retries": 2, "backoff_s": 0.25, "max_wait_s": 1},
        route_deadline_s=3,
        max_response_bytes=2048,
        confidence={"classes": ["medium"], "escalate_on": ["length"]},
    )
    assert policy_from_dict(policy_to_dict(full)) == full and full.confidence.escalate_on == ("length",)
    for bad, field in [
        ({"cost_cap_mode": "sometimes"}, "cost_cap_mode"),
        ({"retries": {"max_retries": 11}}, "retries.max_retries"),
        ({"retries": {"tries": 1}}, "retries.tries"),
        ({"route_deadline_s": 0}, "route_deadline_s"),
        ({"confidence": {"escalate_on": ["empty", "empty"]}}, "confidence.escalate_on"),
        ({"confidence": {"escalate_on": ["short"]}}, r"confidence.escalate_on\[0\]"),
        ({"classifier": {"read": "everything"}}, "classifier.read"),
    ]:
        with pytest.raises(PolicyError, match=field):
            ladder(CHEAP, TOP, **bad)


def test_an_anthropic_stream_prices_from_its_message_delta_usage() -> None:
    record = wire("anthropic/messages_stream__1.json")
    only = tier("only", "anthropic", "claude-sonnet-4-0", "https://api.anthropic.com", "MID_KEY")
    script = Script().add("claude-sonnet-4-0", wire_response("anthropic/messages_stream__1.json"))
    with router_for(ladder(only), script).route_stream(Q) as s:
        text = "".join(s)
    sent = script.bodies("claude-sonnet-4-0")[0]
    assert sent["stream"] is True
    result = s.result
    assert result is not None and text == result.text and text
    usage = [json.loads(line[5:]) for line in record["response"]["body"].splitlines() if line.startswith("data:")]
    final = [u for u in usage if u.get("type") == "message_delta"][-1]["usage"]
    assert result.usage.output_tokens == final["output_tokens"] and result.cost_usd > 0


def test_the_route_deadline_stops_calling_tiers_and_shortens_each_call() -> None:
    clock = FakeClock()

    def slow(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        clock.advance(0.8)  # the cheap tier takes 0.8 s of a 1 s route deadline
        return ok("gpt-4o-mini", "Paris", "Lyon, probably not Paris at all")

    seen: list[float] = []

    def top(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])
        return ok("gpt-4o", "Paris")

    script = Script().add("gpt-4o-mini", slow).add("gpt-4o", top)
    r = router_for(ladder(CHEAP, TOP, route_deadline_s=1.0), script, clock=clock).route(Q)
    assert r.tier == "top" and seen and seen[0] == pytest.approx(0.2, abs=1e-6)  # what was left, not 5 s
    script = Script().add("gpt-4o-mini", slow)
    clock.advance(100)
    with pytest.raises(CascadeExhaustedError) as ei:  # 0.8 s > the 0.5 s left: cut off, and no time for more
        router_for(ladder(CHEAP, TOP, route_deadline_s=0.5), script, clock=clock).route(Q)
    assert [(a.outcome, a.error_kind) for a in ei.value.attempts] == [("error", "timeout"), ("skipped_deadline", None)]


def test_a_cancelled_async_route_still_writes_its_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Cancelled in the call (a hung upstream) and cancelled in a retry's pause: one line each, and the
    tier is not left holding a probe."""
    caplog.set_level(logging.INFO, logger="routerlab.router")

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("not reached")

    async def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"message": "slow", "type": "requests"}}, headers={"retry-after": "1"}
        )

    async def go(handler: Any, policy: Any, qid: str) -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as c:
            router = AsyncCascadeRouter(policy, client=c, api_keys=KEYS, sleep=lambda s: asyncio.sleep(10))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(router.route(Q, query_id=qid), 0.2)
            with pytest.raises(TimeoutError):
                s = router.route_stream(Q, query_id=qid + "-stream")
                await asyncio.wait_for(s.__anext__(), 0.2)
            assert router.breaker(router.policy.tiers[0]).allow() or qid == "pause"

    asyncio.run(go(hang, ladder(CHEAP, TOP), "call"))
    asyncio.run(go(limited, ladder(CHEAP, TOP, retries={"max_retries": 1, "max_wait_s": 5}), "pause"))
    lines = [json.loads(r.getMessage()) for r in caplog.records if '"event": "route"' in r.getMessage()]
    assert sorted(x["query_id"] for x in lines) == ["call", "call-stream", "pause", "pause-stream"]
    assert all(x["ok"] is False for x in lines)
    assert [x["error"] for x in lines if x["query_id"] == "call"] == ["StreamClosedError"]  # the call in flight
