"""``routerlab serve`` on 127.0.0.1 against a loopback fake upstream, driven by the official ``openai``
package and by raw HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from routerlab.fakes import openai_completion  # noqa: E402
from routerlab.serve import create_app  # noqa: E402

CLIENT_KEY = "rl-client-key-0123456789"


class Upstream(ThreadingHTTPServer):
    """A fake OpenAI-compatible provider: per model, a queue of behaviours (default: answer "Paris")."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)
        self.queues: dict[str, list[Any]] = {}
        self.seen: Counter[str] = Counter()
        self.gate = threading.Event()
        self.finished = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: Any, **headers: str) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        model = body["model"]
        self.server.seen[model] += 1
        q = self.server.queues.get(model) or []
        kind = q.pop(0) if q else "ok"
        if kind == "slow":
            time.sleep(0.6)
            kind = "ok"
        if kind == "429":
            self._json(429, {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}})
        elif kind == "tool":
            p = openai_completion(model, [""], 30, 12)
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
            p["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
            p["choices"][0]["finish_reason"] = "tool_calls"
            self._json(200, p)
        elif kind == "ok" and not body.get("stream"):
            n = int(body.get("n", 1))
            self._json(200, openai_completion(model, ["Paris"] * n, 20, 3 * n))
        elif body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            pieces = ["Par", "is", "."]
            for i, piece in enumerate(pieces):
                if i == 1:
                    self.server.gate.wait(5)  # the rest only once the client has seen a delta
                c = {"id": "x", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}  # fmt: skip
                self._chunk(b"data: " + json.dumps(c).encode() + b"\n\n")
            end = {"id": "x", "object": "chat.completion.chunk", "model": model,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}  # fmt: skip
            usage = {"id": "x", "object": "chat.completion.chunk", "model": model, "choices": [],
                     "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}  # fmt: skip
            self.server.finished.set()
            self._chunk(b"data: " + json.dumps(end).encode() + b"\n\ndata: " + json.dumps(usage).encode() + b"\n\n")
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            n = int(body.get("n", 1))
            self._json(200, openai_completion(model, ["Paris"] * n, 20, 3 * n))

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def policy_file(path: Path, upstream: Upstream, name: str = "support") -> Path:
    tier = {"provider": "openai", "base_url": upstream.url, "api_key_env": "UPSTREAM_KEY", "max_tokens": 64,
            "price": {"input_usd_per_mtok": "1", "output_usd_per_mtok": "2"}}  # fmt: skip
    policy = {
        "schema_version": 1,
        "name": name,
        "tiers": [{**tier, "name": "cheap", "model": "cheap-m"}, {**tier, "name": "top", "model": "top-m"}],
        "confidence": {"classes": []},
    }
    path.write_text(json.dumps(policy))
    return path


class Served:
    def __init__(self, base: str, upstream: Upstream, policy: Path, app: Any) -> None:
        self.base, self.upstream, self.policy, self.app = base, upstream, policy, app

    def sdk(self, key: str = CLIENT_KEY) -> Any:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    upstream = Upstream()
    threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    pfile = policy_file(tmp_path / "support.json", upstream)
    app = create_app([pfile], api_keys={"UPSTREAM_KEY": "sk-upstream-0123456789"}, client_keys=[CLIENT_KEY])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", upstream, pfile, app)
    finally:
        server.should_exit = True
        t.join(10)
        upstream.shutdown()
        upstream.server_close()


def test_a_plain_completion_through_the_openai_sdk(served: Served) -> None:
    raw = served.sdk().chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "Capital of France?"}], temperature=0.3
    )
    r = raw.parse()
    assert r.choices[0].message.content == "Paris" and r.choices[0].finish_reason == "stop"
    assert r.model == "cheap-m" and r.usage.prompt_tokens == 20 and r.usage.completion_tokens == 3
    assert raw.headers["x-routerlab-tier"] == "cheap" and float(raw.headers["x-routerlab-cost-usd"]) > 0
    assert [m.id for m in served.sdk().models.list().data] == ["support"]


def test_a_streamed_completion_arrives_before_the_upstream_finishes(served: Served) -> None:
    stream = served.sdk().chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "Capital of France?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, early, usage = [], [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            early.append(not served.upstream.finished.is_set())
            text.append(chunk.choices[0].delta.content)
            served.upstream.gate.set()
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text) == "Paris." and early[0]
    assert usage is not None and usage.completion_tokens == 3


def test_a_tool_call_comes_back_as_a_tool_call(served: Served) -> None:
    served.upstream.queues["cheap-m"] = ["tool"]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = served.sdk().chat.completions.create(
        model="support", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools
    )
    call = r.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert r.choices[0].finish_reason == "tool_calls"


def test_an_upstream_429_at_the_cheap_tier_is_answered_by_the_next(served: Served) -> None:
    served.upstream.queues["cheap-m"] = ["429"]
    raw = served.sdk().chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert raw.headers["x-routerlab-tier"] == "top" and raw.headers["x-routerlab-escalations"] == "1"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"model": "support", "messages": "hi"}', 400),
        (b'{"model": "support", "messages": [{"role": "robot", "content": "x"}]}', 400),
        (b'{"model": "support", "messages": [{"role": "user", "content": "x"}], "n": 3}', 400),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404),
        (b'{"model": "support", "messages": [{"role": "user", "content": "' + b"x" * 3_000_000 + b'"}]}', 413),
    ],
)
def test_a_malformed_request_is_an_openai_style_error_with_no_upstream_call(
    served: Served, body: bytes, status: int
) -> None:
    r = httpx.post(
        f"{served.base}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
    )
    assert r.status_code == status
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error"
    assert sum(served.upstream.seen.values()) == 0


def test_a_wrong_client_key_is_a_401(served: Served) -> None:
    with pytest.raises(openai.AuthenticationError):
        served.sdk(key="wrong").chat.completions.create(model="support", messages=[{"role": "user", "content": "x"}])
    assert sum(served.upstream.seen.values()) == 0


def test_a_broken_policy_file_keeps_the_last_good_policy(served: Served) -> None:
    time.sleep(0.01)
    served.policy.write_text("{ broken")
    r = served.sdk().chat.completions.create(model="support", messages=[{"role": "user", "content": "Capital?"}])
    assert r.choices[0].message.content == "Paris"
    ready = httpx.get(f"{served.base}/readyz").json()
    assert ready["ready"] and "support.json" in ready["policies"]["support"]["last_reload_error"]
    assert httpx.get(f"{served.base}/healthz").json() == {"status": "ok"}


def test_metrics_count_the_requests_sent(served: Served) -> None:
    sdk = served.sdk()
    for _ in range(3):
        sdk.chat.completions.create(model="support", messages=[{"role": "user", "content": "Capital?"}])
    served.upstream.queues["cheap-m"] = ["429"]
    sdk.chat.completions.create(model="support", messages=[{"role": "user", "content": "Capital?"}])
    text = httpx.get(f"{served.base}/metrics").text
    assert 'routerlab_routes_total{outcome="ok",policy="support",tier="cheap"} 3.0' in text
    assert 'routerlab_routes_total{outcome="ok",policy="support",tier="top"} 1.0' in text
    assert 'routerlab_escalations_total{policy="support",reason="rate_limit"} 1.0' in text
    assert 'routerlab_breaker_state{policy="support",tier="cheap"} 0.0' in text  # one failure: still closed
    assert "routerlab_route_latency_seconds_count" in text


def test_routerlab_route_prints_the_answer_its_attempts_and_cost(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from routerlab.cli import main

    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream-0123456789")
    served.upstream.queues["cheap-m"] = ["429"]
    assert main(["route", "What is the capital of France?", "--policy", str(served.policy)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "Paris"
    assert "cheap" in err and "rate_limit" in err and "answered by top (top-m)" in err and "$" in err


def test_serve_needs_a_policy_and_says_how_to_install() -> None:
    from routerlab.cli import build_parser

    help_text = build_parser().parse_args(["serve", "--policy", "p.json"])
    assert help_text.transport == "aiohttp" and help_text.port == 8000


def test_shutdown_lets_the_request_in_flight_finish_then_closes_the_upstream_client(tmp_path: Path) -> None:
    upstream = Upstream()
    threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    upstream.queues["cheap-m"] = ["slow"]
    app = create_app([policy_file(tmp_path / "p.json", upstream)], api_keys={"UPSTREAM_KEY": "sk-up-0123456"},
                     client_keys=[])  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    got: list[int] = []

    def call() -> None:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=10,
                       json={"model": "support", "messages": [{"role": "user", "content": "Capital?"}]})  # fmt: skip
        got.append(r.status_code)

    caller = threading.Thread(target=call)
    caller.start()
    while upstream.seen["cheap-m"] == 0:  # the request reached the upstream: it is in flight
        time.sleep(0.01)
    server.should_exit = True  # what SIGTERM does
    caller.join(10)
    t.join(10)
    assert got == [200]
    client = next(iter(app.state.served.values())).router.client
    assert client.is_closed
    upstream.shutdown()
    upstream.server_close()
