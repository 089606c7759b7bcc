"""``routerlab serve``: tuned policies behind an OpenAI-compatible HTTP endpoint (the ``serve`` extra).

An ASGI app (Starlette, run by uvicorn) in front of one :class:`AsyncCascadeRouter` per policy file:

- ``POST /v1/chat/completions``: an OpenAI chat-completions request whose ``model`` names a policy;
  answered in OpenAI's format whatever the tier's provider, streamed as ``chat.completion.chunk``
  server-sent events with ``"stream": true`` (a usage chunk with ``stream_options.include_usage``).
  Response headers ``x-routerlab-tier``, ``-model``, ``-cost-usd``, ``-escalations`` describe the route.
  Errors use OpenAI's error JSON and status codes; the body is checked (size, JSON, fields) before any
  provider call. ``temperature``, ``max_tokens`` and ``max_completion_tokens`` from clients are ignored:
  each tier's settings in the policy decide them.
- ``GET /v1/models``; ``GET /healthz`` (the process is up); ``GET /readyz`` (every policy loaded, the
  last reload error if any, breaker states); ``GET /metrics`` (Prometheus text format).

Policy files are reloaded when they change (a broken file keeps the last good policy). All routes share
one ``httpx.AsyncClient``; by default its transport is aiohttp's (``httpx-aiohttp``), because httpx's
own connection pool loses most of its throughput under high concurrency (encode/httpx#3215); httpx
stays the API seam either way. The client is closed at shutdown, after in-flight requests finish.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from routerlab.errors import (
    CostCapError,
    InvalidRequestError,
    MissingApiKeyError,
    RequestError,
    RouterlabError,
    RoutingError,
)
from routerlab.policy import PolicyHolder
from routerlab.router import AsyncCascadeRouter
from routerlab.types import RouteResult

logger = logging.getLogger("routerlab.serve")

#: Fields of a chat request the server takes off before routing: the policy decides them per tier.
IGNORED_FIELDS = ("temperature", "max_tokens", "max_completion_tokens", "logprobs", "top_logprobs")
_BREAKER_STATE = {"closed": 0, "half_open": 1, "open": 2}


def openai_error(
    status: int, message: str, etype: str, *, code: str | None = None, param: str | None = None
) -> JSONResponse:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return JSONResponse(
        {"error": {"message": message, "type": etype, "param": param, "code": code}}, status_code=status
    )


@dataclass
class _Served:
    name: str
    path: Path
    holder: PolicyHolder
    router: AsyncCascadeRouter


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.routes = Counter(
            "routerlab_routes",
            "Routes by policy, answering tier and outcome",
            ["policy", "tier", "outcome"],
            registry=r,
        )
        self.escalations = Counter(
            "routerlab_escalations", "Escalations by policy and reason", ["policy", "reason"], registry=r
        )
        self.cost = Counter("routerlab_cost_usd", "Spend in USD by policy and tier", ["policy", "tier"], registry=r)
        self.tokens = Counter("routerlab_tokens", "Tokens by policy and direction", ["policy", "direction"], registry=r)
        self.latency = Histogram(
            "routerlab_route_latency_seconds",
            "Route latency by policy",
            ["policy"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.breakers = Gauge(
            "routerlab_breaker_state", "0 closed, 1 half-open, 2 open", ["policy", "tier"], registry=r
        )
        self.http = Counter(
            "routerlab_http_requests", "HTTP requests by path and status", ["path", "status"], registry=r
        )

    def route(self, policy: str, result: RouteResult | None, error: RouterlabError | None, seconds: float) -> None:
        attempts = result.attempts if result is not None else (error.attempts if error is not None else ())
        tier = result.tier if result is not None else "none"
        outcome = ("fallback" if result.fallback else "ok") if result is not None else type(error).__name__
        self.routes.labels(policy, tier, outcome).inc()
        for a in attempts:
            if a.cost_usd:
                self.cost.labels(policy, a.tier).inc(float(a.cost_usd))
            self.tokens.labels(policy, "input").inc(a.usage.input_tokens)
            self.tokens.labels(policy, "output").inc(a.usage.output_tokens)
            if a.outcome in ("error", "low_confidence", "unusable", "skipped_breaker", "skipped_cost_cap"):
                self.escalations.labels(policy, a.error_kind or a.outcome).inc()
        self.latency.labels(policy).observe(seconds)


def default_client(*, transport: str = "aiohttp", max_connections: int = 200) -> httpx.AsyncClient:
    """The shared upstream client: aiohttp's transport (``httpx-aiohttp``) with ``max_connections`` by default;
    ``transport="httpx"`` is a default ``httpx.AsyncClient`` (httpx's own pool and limits), what a caller
    who builds their own client gets."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), limits=limits)
    if transport == "httpx":
        return httpx.AsyncClient()
    raise ValueError(f"transport must be aiohttp or httpx, got {transport!r}")


def create_app(
    policy_files: Sequence[str | os.PathLike[str]],
    *,
    client: httpx.AsyncClient | None = None,
    api_keys: Mapping[str, str] | None = None,
    client_keys: Sequence[str] | None = None,
    max_body_bytes: int = 2_000_000,
    transport: str = "aiohttp",
) -> Starlette:
    """The ASGI app serving ``policy_files`` (each named by its policy's ``name``, else its file stem).

    ``client_keys``: the bearer tokens clients must send (default: ``$ROUTERLAB_SERVE_KEYS``,
    comma-separated; none set means no check). ``api_keys``: provider keys by variable name (default:
    the environment)."""
    if client_keys is None:
        env = os.environ.get("ROUTERLAB_SERVE_KEYS", "")
        client_keys = [k.strip() for k in env.split(",") if k.strip()]
    keys = frozenset(client_keys)
    owns_client = client is None
    http = client or default_client(transport=transport)
    served: dict[str, _Served] = {}
    for f in policy_files:
        path = Path(f)
        holder = PolicyHolder(path)
        name = holder.get().name or path.stem
        if name in served:
            raise RouterlabError(f"two policy files are named {name!r} ({served[name].path} and {path}); rename one")
        router = AsyncCascadeRouter(holder, client=http, api_keys=api_keys)
        served[name] = _Served(name, path, holder, router)
    metrics = _Metrics()

    def authorized(request: Request) -> bool:
        if not keys:
            return True
        auth = request.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:].strip() in keys

    async def read_body(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return None, openai_error(413, f"request body larger than {max_body_bytes} bytes", "invalid_request_error")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > max_body_bytes:
                return None, openai_error(
                    413, f"request body larger than {max_body_bytes} bytes", "invalid_request_error"
                )
        try:
            body = json.loads(raw)
        except ValueError:
            return None, openai_error(400, "the request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return None, openai_error(400, "the request body must be a JSON object", "invalid_request_error")
        return body, None

    async def chat(request: Request) -> Response:
        if not authorized(request):
            return openai_error(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        body, bad = await read_body(request)
        if bad is not None or body is None:
            return bad or openai_error(400, "empty body", "invalid_request_error")
        model = body.pop("model", None)
        if not isinstance(model, str) or model not in served:
            names = ", ".join(sorted(served))
            return openai_error(
                404, f"The model {model!r} does not exist; this server routes: {names}", "invalid_request_error",
                code="model_not_found", param="model",
            )  # fmt: skip
        n = body.pop("n", 1)
        if n not in (1, None):
            return openai_error(400, "n > 1 is not supported by routerlab serve", "invalid_request_error", param="n")
        stream = bool(body.pop("stream", False))
        options = body.pop("stream_options", None) or {}
        include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
        for f in IGNORED_FIELDS:
            body.pop(f, None)
        s = served[model]
        if stream:
            return await chat_stream(s, body, include_usage)
        t0 = time.monotonic()
        try:
            result = await s.router.route(body, query_id=request.headers.get("x-request-id"))
        except RouterlabError as e:
            metrics.route(s.name, None, e, time.monotonic() - t0)
            return error_response(e)
        metrics.route(s.name, result, None, time.monotonic() - t0)
        return JSONResponse(completion_body(result, s.name), headers=route_headers(result))

    async def chat_stream(s: _Served, body: dict[str, Any], include_usage: bool) -> Response:
        t0 = time.monotonic()
        stream = s.router.route_stream(body)
        it = stream.__aiter__()
        cid = f"chatcmpl-rl{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        try:  # the first delta (or the end) before any byte is sent, so that errors keep their status
            first: str | None = await it.__anext__()
        except StopAsyncIteration:
            first = None
        except RouterlabError as e:
            metrics.route(s.name, None, e, time.monotonic() - t0)
            return error_response(e)

        def chunk(delta: dict[str, Any], finish: str | None = None, model: str = s.name) -> bytes:
            c = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            try:
                yield chunk({"role": "assistant", "content": ""})
                if first is not None:
                    yield chunk({"content": first})
                    async for delta in it:
                        yield chunk({"content": delta})
            except RouterlabError as e:  # the answer had started: report in the stream, OpenAI-style
                metrics.route(s.name, None, e, time.monotonic() - t0)
                err = {"error": {"message": str(e), "type": "upstream_error", "param": None, "code": None}}
                yield b"data: " + json.dumps(err).encode() + b"\n\n"
                return
            finally:
                await stream.aclose()
            result = stream.result
            assert result is not None
            metrics.route(s.name, result, None, time.monotonic() - t0)
            if result.tool_calls:
                calls = [{"index": i, **c.to_openai()} for i, c in enumerate(result.tool_calls)]
                yield chunk({"tool_calls": calls}, model=result.model)
            yield chunk({}, result.finish_reason or "stop", model=result.model)
            if include_usage:
                u = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": result.model,
                     "choices": [], "usage": usage_body(result)}  # fmt: skip
                yield b"data: " + json.dumps(u).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def models(request: Request) -> Response:
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "routerlab"} for n in sorted(served)]
        return JSONResponse({"object": "list", "data": data})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        report: dict[str, Any] = {}
        ready = True
        for n, s in served.items():
            policy = s.holder.get()
            breakers = {t.name: s.router.breaker(t, policy.breaker).state for t in policy.tiers}
            report[n] = {"file": str(s.path), "last_reload_error": s.holder.last_error, "breakers": breakers}
            ready &= any(state != "open" for state in breakers.values())
        return JSONResponse({"ready": ready, "policies": report}, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        for n, s in served.items():
            policy = s.holder.get()
            for t in policy.tiers:
                metrics.breakers.labels(n, t.name).set(_BREAKER_STATE[s.router.breaker(t, policy.breaker).state])
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if owns_client:  # uvicorn lets in-flight requests finish before the lifespan ends
            await http.aclose()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.served = served
    app.state.metrics = metrics
    return app


def error_response(e: RouterlabError) -> JSONResponse:
    """A route's error as an OpenAI error response with a fitting status."""
    if isinstance(e, RequestError):
        return openai_error(400, str(e), "invalid_request_error", param=e.field)
    if isinstance(e, InvalidRequestError):  # every tier rejected the request
        return openai_error(400, str(e), "invalid_request_error")
    if isinstance(e, CostCapError):
        return openai_error(402, str(e), "cost_cap_exceeded", code="cost_cap")
    if isinstance(e, MissingApiKeyError):
        return openai_error(500, "the server is missing a provider key (see its log)", "server_error")
    if isinstance(e, RoutingError):
        return openai_error(502, str(e), "upstream_error", code="cascade_exhausted")
    return openai_error(500, str(e), "server_error")


def usage_body(result: RouteResult) -> dict[str, Any]:
    u = result.usage
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def completion_body(result: RouteResult, policy: str) -> dict[str, Any]:
    """A route's answer as an OpenAI ``chat.completion`` object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.text if (result.text or not result.tool_calls) else None,
    }
    if result.tool_calls:
        message["tool_calls"] = [c.to_openai() for c in result.tool_calls]
    return {
        "id": f"chatcmpl-rl{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": result.finish_reason or "stop", "logprobs": None}
        ],
        "usage": usage_body(result),
        "system_fingerprint": None,
    }


def route_headers(result: RouteResult) -> dict[str, str]:
    return {
        "x-routerlab-tier": result.tier,
        "x-routerlab-model": result.model,
        "x-routerlab-cost-usd": str(result.cost_usd),
        "x-routerlab-escalations": str(result.escalations),
    }


def serve(
    policy_files: Sequence[str | os.PathLike[str]],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    transport: str = "aiohttp",
) -> None:
    """Run the app with uvicorn until interrupted (graceful shutdown on SIGINT/SIGTERM)."""
    import uvicorn

    uvicorn.run(create_app(policy_files, transport=transport), host=host, port=port, log_level="info")


__all__ = ["IGNORED_FIELDS", "completion_body", "create_app", "default_client", "error_response", "serve"]
