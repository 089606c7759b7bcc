"""An OpenAI-compatible provider on 127.0.0.1 for end-to-end tests: three models of different quality.

``POST /v1/chat/completions`` answers "What is A + B?" prompts with "Answer: N" lines. Each model is
right with its own probability; at temperature 0 the answer is a fixed function of the prompt, at a
higher temperature every choice is drawn afresh (seeded by the prompt, the choice and a per-prompt
counter, so a run is reproducible). ``n`` is honoured; usage is reported per call.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCURACY = {"small-1": 0.55, "medium-1": 0.8, "large-1": 0.97}
_SUM = re.compile(r"(\d+)\s*\+\s*(\d+)")


def _uniform(*parts: object) -> float:
    h = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        self.server.requests.append(body)
        model = body.get("model", "")
        if self.path != "/v1/chat/completions" or model not in ACCURACY:
            self._send(404, {"error": {"message": f"no model {model!r}", "type": "invalid_request_error"}})
            return
        prompt = body["messages"][-1]["content"]
        m = _SUM.search(prompt)
        truth = int(m.group(1)) + int(m.group(2)) if m else 0
        temp = float(body.get("temperature") or 0)
        n = int(body.get("n", 1))
        with self.server.lock:
            call = self.server.calls[(model, prompt, temp)]
            self.server.calls[(model, prompt, temp)] += 1
        choices = []
        for i in range(n):
            u = _uniform(model, prompt, "greedy") if temp == 0 else _uniform(model, prompt, temp, call, i)
            wrong = 1 + int(_uniform(model, prompt, temp, call, i, "off") * 3)
            value = truth if u < ACCURACY[model] else truth + wrong
            text = f"Adding the two numbers.\nAnswer: {value}"
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
        usage = {"prompt_tokens": len(prompt.split()) + 9, "completion_tokens": 8 * n, "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        payload = {"id": f"cmpl-{len(self.server.requests)}", "object": "chat.completion", "created": 1,
                   "model": model, "choices": choices, "usage": usage}  # fmt: skip
        self._send(200, payload)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.calls: Counter[tuple[str, str, float]] = Counter()
        self.lock = threading.Lock()


@contextmanager
def loopback_provider() -> Iterator[_Server]:
    """Start the provider on a free port of 127.0.0.1; ``server.server_address[1]`` is the port."""
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def ladder_policy_dict(port: int, *, cap: str | None = "0.05") -> dict[str, Any]:
    """A three-tier policy on the loopback provider with explicit prices."""
    tiers = []
    for name, model, price in (("cheap", "small-1", "0.1"), ("mid", "medium-1", "1"), ("premium", "large-1", "10")):
        tiers.append({
            "name": name, "provider": "openai", "model": model, "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key_env": "LOOPBACK_API_KEY", "timeout_s": 10, "max_tokens": 64,
            "price": {"input_usd_per_mtok": price, "output_usd_per_mtok": str(4 * float(price))},
        })  # fmt: skip
    return {
        "schema_version": 1,
        "name": "loopback",
        "tiers": tiers,
        "confidence": {"k": 3, "similarity": "answer", "temperature": 0.8, "thresholds": [1.0, 1.0]},
        "max_cost_per_query_usd": cap,
    }
