"""A fault-injecting provider on 127.0.0.1 for load runs of the async router.

It speaks OpenAI ``/chat/completions`` and Anthropic ``/v1/messages`` under one
path prefix per tier (``http://127.0.0.1:PORT/t0``, ``/t1``, ...) and answers
each request with a fault chosen deterministically from the seed, the route
token in the prompt and how many requests that token has made. Bodies are the
real recordings in ``../shared/provider-wire/`` (read at run time; path from
``ROUTERLAB_PROVIDER_WIRE``). It counts the requests it received per route
token, so a test can check every request against the routes' attempts.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from wire import WIRE  # noqa: E402 - the recordings' folder, as every wire test reads it

TOKEN = re.compile(r"route-\d+")

#: Every fault kind and its weight in the mix.
FAULTS: dict[str, int] = {
    "success": 40,
    "rate_limit": 4,
    "server_500": 3,
    "server_503": 3,
    "overloaded_529": 3,
    "context_length": 3,
    "auth_401": 2,
    "not_found_404": 2,
    "not_json": 2,
    "no_usage": 2,
    "bad_gzip": 2,
    "slow": 2,
    "drip": 2,
    "cut_mid_body": 2,
    "one_choice": 4,
    "empty_length": 3,
    "huge_body": 1,
}


def _wire(rel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WIRE / rel).read_text(encoding="utf-8"))
    return data


class Bodies:
    """The recorded bodies the server answers with."""

    def __init__(self) -> None:
        self.openai_ok = _wire("openai/chat_completions_success__1.json")["response"]["body"]
        self.anthropic_ok = _wire("anthropic/messages_success__5.json")["response"]["body"]
        self.empty_length = _wire("openai/chat_completions_reasoning__3.json")["response"]["body"]
        self.errors = {
            "rate_limit": _wire("openai/error_429__1.json")["response"]["body"],
            "server_500": _wire("openai/error_500__1.json")["response"]["body"],
            "overloaded_529": _wire("anthropic/error_529__1.json")["response"]["body"],
            "context_length": _wire("deepseek/error_400__1.json")["response"]["body"],
            "auth_401": _wire("openai/error_401__1.json")["response"]["body"],
            "not_found_404": _wire("openai/error_404__1.json")["response"]["body"],
        }
        self.anthropic_errors = {
            "rate_limit": _wire("anthropic/error_429__1.json")["response"]["body"],
            "server_500": _wire("anthropic/error_500__1.json")["response"]["body"],
            "context_length": _wire("anthropic/error_400__1.json")["response"]["body"],
            "auth_401": _wire("anthropic/error_401__1.json")["response"]["body"],
            "not_found_404": _wire("anthropic/error_404__1.json")["response"]["body"],
        }

    def openai(self, n: int, text: str) -> dict[str, Any]:
        body = copy.deepcopy(self.openai_ok)
        choice = body["choices"][0]
        body["choices"] = []
        for i in range(n):
            c = copy.deepcopy(choice)
            c["index"] = i
            c["message"]["content"] = text
            body["choices"].append(c)
        return body

    def anthropic(self, text: str) -> dict[str, Any]:
        body = copy.deepcopy(self.anthropic_ok)
        body["content"] = [{"type": "text", "text": text}]
        return body


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, seed: int, *, slow_s: float = 0.8) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seed = seed
        self.slow_s = slow_s
        self.bodies = Bodies()
        self.seen: Counter[str] = Counter()  # route token -> requests received
        self.faults: Counter[str] = Counter()  # fault kind -> times served
        self.lock = threading.Lock()
        self.kinds = [k for k, w in FAULTS.items() for _ in range(w)]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (its deadline passed) is part of the run, not an error to print."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def choose(self, token: str, tier: str) -> tuple[str, int]:
        with self.lock:
            self.seen[token] += 1
            nth = self.seen[token]
        h = hashlib.sha256(f"{self.seed}:{token}:{tier}:{nth}".encode()).digest()
        kind = self.kinds[int.from_bytes(h[:4], "big") % len(self.kinds)]
        with self.lock:
            self.faults[kind] += 1
        return kind, h[4]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            req = json.loads(raw)
        except ValueError:
            req = {}
        m = TOKEN.search(json.dumps(req.get("messages", [])))
        token = m.group() if m else "unknown"
        tier = self.path.split("/")[1]
        anthropic = self.path.endswith("/v1/messages")
        kind, byte = self.server.choose(token, tier)
        n = int(req.get("n") or 1)
        text = "Paris" if byte % 3 else f"answer {byte % 5}"
        b = self.server.bodies
        try:
            self._answer(kind, anthropic, n, text, b)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, status: int, payload: Any, **headers: str) -> None:
        data = json.dumps(payload).encode()
        self._raw(status, data, {"content-type": "application/json", **headers})

    def _raw(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _answer(self, kind: str, anthropic: bool, n: int, text: str, b: Bodies) -> None:
        ok = b.anthropic(text) if anthropic else b.openai(n, text)
        errors = b.anthropic_errors if anthropic else b.errors
        if kind == "success":
            self._json(200, ok)
        elif kind == "rate_limit":
            self._json(429, errors["rate_limit"], **{"retry-after": "1"})
        elif kind in ("server_500", "server_503"):
            self._json(500 if kind == "server_500" else 503, errors["server_500"])
        elif kind == "overloaded_529":
            self._json(529, b.errors["overloaded_529"])
        elif kind in ("context_length", "auth_401", "not_found_404"):
            status = {"context_length": 400, "auth_401": 401, "not_found_404": 404}[kind]
            self._json(status, errors[kind])
        elif kind == "not_json":
            self._raw(200, b"<html>upstream exploded</html>", {"content-type": "text/html"})
        elif kind == "no_usage":
            ok.pop("usage", None)
            self._json(200, ok)
        elif kind == "bad_gzip":
            self._raw(200, json.dumps(ok).encode(), {"content-type": "application/json", "content-encoding": "gzip"})
        elif kind == "slow":
            time.sleep(self.server.slow_s)
            self._json(200, ok)
        elif kind == "drip":
            data = json.dumps(ok).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            for i in range(0, len(data), 8):
                self.wfile.write(data[i : i + 8])
                self.wfile.flush()
                time.sleep(0.05)
                if i > 8 * 40:  # about 2 s of dripping: far past any tier deadline, then give up
                    break
            self.close_connection = True
        elif kind == "cut_mid_body":
            data = json.dumps(ok).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data) + 500))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif kind == "one_choice":
            self._json(200, b.anthropic(text) if anthropic else b.openai(1, text))
        elif kind == "empty_length":
            if anthropic:
                ok["content"] = []
                ok["stop_reason"] = "max_tokens"
                self._json(200, ok)
            else:
                self._json(200, b.empty_length)
        elif kind == "huge_body":
            ok["padding"] = "x" * 5_000_000
            self._json(200, ok)
        else:  # pragma: no cover - FAULTS and this switch are kept in step
            raise AssertionError(kind)


@contextmanager
def fault_server(seed: int, **kw: Any) -> Iterator[FaultServer]:
    srv = FaultServer(seed, **kw)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def ladder(port: int) -> dict[str, Any]:
    """A three-tier ladder on the fault server: openai, anthropic, openai; k=2 checks on medium/complex."""

    def tier(i: int, provider: str, model: str) -> dict[str, Any]:
        return {
            "name": f"t{i}",
            "provider": provider,
            "model": model,
            "base_url": f"http://127.0.0.1:{port}/t{i}",
            "api_key_env": f"FAULT_KEY_{i}",
            "timeout_s": 0.4,
            "max_tokens": 64,
            "temperature": 0,
            "price": {"input_usd_per_mtok": str(i + 1), "output_usd_per_mtok": str(2 * i + 2)},
        }

    return {
        "schema_version": 1,
        "name": "fault-load",
        "tiers": [tier(0, "openai", "gpt-4o-mini"), tier(1, "anthropic", "claude-3-opus"), tier(2, "openai", "gpt-4o")],
        "routing": {"simple": {"start_tier": 0}, "medium": {"start_tier": 0}, "complex": {"start_tier": 1}},
        "confidence": {"classes": ["medium", "complex"], "k": 2, "similarity": "difflib", "thresholds": [0.8, 0.8]},
        "max_cost_per_query_usd": "0.01",
        "breaker": {"failure_threshold": 50, "window_s": 1, "recovery_s": 0.2, "disable_s": 0.2},
        "max_response_bytes": 1_000_000,
    }


#: Distinctive key values: none may appear in a log line or an error message.
KEYS = {
    "FAULT_KEY_0": "0123456789abcdef0123456789abcdef",
    "FAULT_KEY_1": "sk-ant-fault-key-never-shown-0001",
    "FAULT_KEY_2": "AIzaSyFAULTkeyNEVERshown0123456789abc",
}

PROMPTS = (
    "Tell me the capital city of France in one word",  # medium
    "What is the boiling point of water?",  # simple
    "Compare the tradeoffs of two database designs",  # complex
)


def prompt(i: int) -> str:
    return f"{PROMPTS[i % len(PROMPTS)]} (route-{i})"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run_load(routes: int = 2000, concurrency: int = 50, seed: int = 0) -> dict[str, Any]:
    """Route ``routes`` queries through ``AsyncCascadeRouter`` at ``concurrency`` over the fault server;
    returns the summary and every check's failures (empty lists: all good)."""
    import httpx

    from routerlab import AsyncCascadeRouter, RouterlabError
    from routerlab.policy import policy_from_dict

    handler = _Lines()
    log = logging.getLogger("routerlab.router")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    outcomes: dict[int, Any] = {}
    foreign: list[str] = []
    t0 = time.monotonic()
    try:
        with fault_server(seed) as srv:
            fds_before = _open_fds()

            async def main() -> None:
                sem = asyncio.Semaphore(concurrency)
                limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
                async with httpx.AsyncClient(limits=limits) as client:
                    router = AsyncCascadeRouter(policy_from_dict(ladder(srv.port)), client=client, api_keys=KEYS)

                    async def one(i: int) -> None:
                        async with sem:
                            try:
                                outcomes[i] = await router.route(prompt(i), query_id=f"q{i}")
                            except RouterlabError as e:
                                outcomes[i] = e
                            except Exception as e:  # noqa: BLE001 - what the run is looking for
                                foreign.append(f"route {i}: {type(e).__name__}: {e}")

                    await asyncio.gather(*(one(i) for i in range(routes)))

            asyncio.run(main())
            time.sleep(0.3)  # let the server's handler threads finish their last drip
            fds_after = _open_fds()
            seen = dict(srv.seen)
            faults = dict(srv.faults)
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    seconds = time.monotonic() - t0

    mismatched: list[str] = []
    unseen = 0
    lost: Counter[str] = Counter()
    by_outcome: Counter[str] = Counter()
    for i in range(routes):
        out = outcomes.get(i)
        if out is None:
            continue
        by_outcome["ok" if not isinstance(out, Exception) else type(out).__name__] += 1
        calls = sum(a.calls for a in out.attempts)
        got = seen.get(f"route-{i}", 0)
        if got > calls:  # a request the server saw that no attempt accounts for
            mismatched.append(f"route {i}: attempts count {calls} requests, the server saw {got}")
        elif got < calls:  # sent but never received (a connection the server had closed, refused)
            unseen += calls - got
            lost.update(a.error_kind or a.outcome for a in out.attempts if a.calls)
    # A route that ends in an error must have tried every tier from its start to the last: the load only
    # decides which tiers fail (timeouts under a busy server), never whether the route gives up early.
    start = {i: (1 if i % len(PROMPTS) == 2 else 0) for i in range(routes)}  # the ladder's start tiers
    gave_up: list[str] = []
    for i, out in outcomes.items():
        if isinstance(out, Exception):
            tried = [a.tier_index for a in out.attempts]
            if tried != list(range(start[i], 3)) or any(a.outcome == "accepted" for a in out.attempts):
                gave_up.append(f"route {i}: tiers {tried}, outcomes {[a.outcome for a in out.attempts]}")
    lines = [json.loads(x) for x in handler.lines if x.startswith("{")]
    route_lines = Counter(x["query_id"] for x in lines if x.get("event") == "route")
    line_problems = [f"{q}: {c} lines" for q, c in route_lines.items() if c != 1]
    line_problems += [f"q{i}: no line" for i in range(routes) if f"q{i}" not in route_lines]
    texts = handler.lines + [str(o) for o in outcomes.values() if isinstance(o, Exception)]
    texts += [str(a.error_message) for o in outcomes.values() for a in o.attempts]
    leaks = [k for k in KEYS.values() if any(k in t for t in texts)]
    return {
        "routes": routes,
        "concurrency": concurrency,
        "seed": seed,
        "seconds": seconds,
        "server_requests": sum(seen.values()),
        "unseen": unseen,
        "unseen_kinds": dict(lost),
        "faults": faults,
        "outcomes": dict(by_outcome),
        "fds_before": fds_before,
        "fds_after": fds_after,
        "failures": {
            "exceptions outside the error tree": foreign,
            "requests not accounted for in attempts": mismatched,
            "routes without exactly one log line": line_problems,
            "failed routes that did not try every tier": gave_up,
            "no route answered": [] if by_outcome.get("ok", 0) else ["0 of the routes got an answer"],
            "keys leaked": leaks,
            "fault kinds never served": [k for k in FAULTS if not faults.get(k)],
            "file descriptors grew": [] if fds_after <= fds_before + 5 else [f"{fds_before} -> {fds_after}"],
        },
    }


def summary(report: dict[str, Any]) -> str:
    rows = [
        "| measure | value |",
        "|---|---|",
        f"| routes / concurrency / seed | {report['routes']} / {report['concurrency']} / {report['seed']} |",
        f"| seconds | {report['seconds']:.1f} |",
        f"| requests the server saw | {report['server_requests']} |",
        f"| requests sent that never reached it | {report['unseen']} (in attempts ending {report['unseen_kinds']}) |",
        f"| open fds before / after | {report['fds_before']} / {report['fds_after']} |",
    ]
    for k, v in sorted(report["outcomes"].items()):
        rows.append(f"| routes ending {k} | {v} |")
    for k, v in sorted(report["faults"].items()):
        rows.append(f"| fault served: {k} | {v} |")
    for k, v in report["failures"].items():
        rows.append(f"| check: {k} | {'none' if not v else f'{len(v)}: {v[:3]}'} |")
    return "\n".join(rows)
