"""The cascade router: the sync and async drivers of the decision procedure.

How a route decides is defined once, in :mod:`routerlab.decision`
(:func:`~routerlab.decision.plan_route`, a sans-I/O generator). This module
only drives it: it reads the policy once per route (a hot-reloading
:class:`PolicyHolder` never mixes two versions within a route), reads the API
keys from the environment, answers the plan's breaker gates and effects with
one :class:`CircuitBreaker` per (provider, endpoint, model), sends its calls
through the injected ``httpx.Client`` (:class:`CascadeRouter`) or
``httpx.AsyncClient`` (:class:`AsyncCascadeRouter`, a tier's k requests
concurrently) under each call's whole-call deadline and the policy's response
size limit, streams answers (``route_stream``), and logs one JSON line per
route. Both decide identically.

Whatever happens inside, ``route()`` raises only :class:`RouterlabError`
(an unexpected error is wrapped in a :class:`RoutingError`; cancellation
propagates), and a half-open breaker probe is handed back on every exit path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any

import httpx

from routerlab.breaker import BreakerSettings, CircuitBreaker
from routerlab.consistency import require_similarity
from routerlab.decision import (
    BreakerEffect,
    Clock,
    Gate,
    Messages,
    Pause,
    Plan,
    PreparedQuery,
    Reply,
    RouteOutcome,
    TierCall,
    plan_route,
    prepare_query,
)
from routerlab.errors import (
    ConnectionFailedError,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    RouterlabError,
    RoutingError,
    StreamClosedError,
)
from routerlab.policy import PolicyHolder, RouterPolicy, Tier
from routerlab.pricing import PriceBook
from routerlab.providers import RequestSpec, get_adapter, scrub
from routerlab.types import RouteResult, Usage

logger = logging.getLogger("routerlab.router")

Query = str | Messages | Mapping[str, Any]

# Transport failures after the request was sent: the provider may have run (and billed) it.
_MAYBE_BILLED = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError, httpx.DecodingError)


class _RouterCore:
    """State shared by the sync and async routers: policy source, breakers, prices, keys."""

    def __init__(
        self,
        policy: RouterPolicy | PolicyHolder,
        *,
        clock: Clock = time.monotonic,
        api_keys: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        price_book: PriceBook | None = None,
        log_prompts: bool = False,
    ) -> None:
        self._source = policy
        self._clock = clock
        self._api_keys = dict(api_keys or {})
        self._environ = environ if environ is not None else os.environ
        self._prices = price_book or PriceBook()
        self._log_prompts = log_prompts
        self._breakers: dict[tuple[str, str, str], CircuitBreaker] = {}
        self._latest_breaker = self.policy.breaker
        self._lock = threading.Lock()
        if isinstance(policy, PolicyHolder):
            policy.add_check(self._check_policy)  # a reload naming an unpriced model is refused too
        else:
            self._check_policy(policy)

    @property
    def policy(self) -> RouterPolicy:
        """The policy in force (a reloading holder is re-checked on each access)."""
        src = self._source
        return src.get() if isinstance(src, PolicyHolder) else src

    def _check_policy(self, policy: RouterPolicy) -> None:
        """What must hold before a route runs: every model priced (an error now, not $0 later), and the
        similarity the consistency check uses installed."""
        for t in policy.tiers:
            self._prices.price(t.model, provider=t.price_provider, override=t.price)
        conf = policy.confidence
        if policy.cascade and conf.classes and conf.signal == "consistency":
            require_similarity(conf.similarity)

    def reset_breakers(self) -> None:
        """Forget every breaker's history (replays do this between items to keep items independent)."""
        with self._lock:
            self._breakers.clear()

    def breaker(self, tier: Tier, settings: BreakerSettings | None = None) -> CircuitBreaker:
        """The breaker of ``tier``'s (provider, endpoint, model). A new one is made under ``settings``
        (default: the policy in force); an existing one is started afresh only when the policy in force
        has other settings, so routes still running on an older policy never reset it."""
        live = self._latest_breaker if settings is not None else self.policy.breaker
        settings = settings or live
        key = (tier.provider, tier.base_url, tier.model)
        with self._lock:
            b = self._breakers.get(key)
            if b is None or (b.settings != settings and settings == live):
                b = CircuitBreaker(settings, self._clock)
                self._breakers[key] = b
            return b

    def _keys(self, policy: RouterPolicy) -> dict[str, str]:
        """The API keys the policy's tiers name, read once for this route (explicit keys first)."""
        out: dict[str, str] = {}
        for t in policy.tiers:
            env = t.api_key_env
            if env is not None and env not in out:
                key = self._api_keys.get(env) or self._environ.get(env)
                if key:
                    out[env] = key
        return out

    def _new_route(self) -> _RouteState:
        policy = self.policy  # one snapshot for the whole route
        self._latest_breaker = policy.breaker  # the newest settings seen, without another stat per tier
        keys = self._keys(policy)
        return _RouteState(policy, keys, self._clock())

    def _plan(self, route: _RouteState, query: Query, options: Mapping[str, Any], stream: bool) -> Plan:
        """Prepare the query (a malformed request raises :class:`RequestError` here) and start its plan."""
        policy = route.policy
        prepared = prepare_query(query, policy.classifier, options=options, stream=stream)
        route.prepared = prepared
        route.plan = plan_route(policy, prepared, prices=self._prices, api_keys=route.keys, clock=self._clock)
        return route.plan

    def _effect(self, route: _RouteState, cmd: Gate | BreakerEffect) -> bool | None:
        """Answer a breaker command with the breaker this route gated that tier on."""
        if isinstance(cmd, Gate):
            b = self.breaker(route.policy.tiers[cmd.tier_index], route.policy.breaker)
            allowed = b.allow()
            if allowed:  # this route now holds the tier (in half-open state: the probe) until its effect
                route.gated[cmd.tier_index] = b
            return allowed
        b = route.gated.pop(cmd.tier_index)
        if cmd.effect == "success":
            b.record_success()
        elif cmd.effect == "failure":
            b.record_failure(cmd.cooldown_s)
        elif cmd.effect == "disable":
            b.disable()
        else:
            b.release_probe()
        return None

    @staticmethod
    def _abandon(route: _RouteState) -> None:
        """The route stopped between a gate and its effect (cancelled, or an error building or sending a
        request): hand any half-open probe back, or the tier would stay skipped until restart."""
        for b in route.gated.values():
            b.release_probe()
        route.gated.clear()

    def _end(self, route: _RouteState, query_id: str | None, out: RouteOutcome) -> RouteResult:
        for a in out.attempts:
            if a.error_kind == "missing_api_key":  # a deployment mistake: say so loudly
                logger.warning("%s", a.error_message)
        self._log(route, query_id, out)
        if out.error is not None:
            raise out.error
        assert out.result is not None
        return out.result

    def _stream_tail(
        self, route: _RouteState, query_id: str | None, outcome: RouteOutcome, stream: RouteStream | AsyncRouteStream
    ) -> str:
        """End a streamed route (log line, result on the stream); the text still to yield: the answer, when
        its tier did not stream it live (a checked tier's accepted answer)."""
        result = self._end(route, query_id, outcome)
        stream.result = result
        return "" if result.tier_index in route.live else result.text

    def _failed_route(self, route: _RouteState, query_id: str | None, exc: Exception) -> RouterlabError:
        """Log the one line of a route that ended in an error outside the plan, and the error to raise:
        a RouterlabError as it is, anything else wrapped (scrubbed of the keys in use)."""
        self._abandon(route)
        err: RouterlabError
        if isinstance(exc, RouterlabError):
            err = exc
        else:
            err = RoutingError(
                scrub(f"internal error in routerlab: {type(exc).__name__}: {exc}", secrets=route.secrets)
            )
        cls = route.prepared.complexity if route.prepared is not None else ""
        elapsed = (self._clock() - route.started) * 1e3
        out = RouteOutcome(cls, None, err, err.attempts, (), _spent(err), Usage(), elapsed)
        self._log(route, query_id, out)
        return err

    def _log(self, route: _RouteState | None, query_id: str | None, out: RouteOutcome) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        secrets = route.secrets if route is not None else ()
        if logger.isEnabledFor(logging.DEBUG):
            for a in out.attempts:
                logger.debug(
                    scrub(json.dumps({"event": "attempt", "query_id": query_id, **a.to_dict()}), secrets=secrets)
                )
        result = out.result
        u = out.usage
        record: dict[str, Any] = {
            "event": "route",
            "query_id": query_id,
            "ok": result is not None,
            "complexity": out.complexity,
            "tier": result.tier if result else None,
            "model": result.model if result else None,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_tokens": u.cache_read_tokens,
            "reasoning_tokens": u.reasoning_tokens,
            "cost_usd": str(out.spent_usd),
            "escalations": len(out.reasons),
            "reasons": list(out.reasons),
            "attempts": len(out.attempts),
            "latency_ms": round(out.latency_ms, 3),
            "ts": time.time(),
        }
        if result is not None:
            record["finish_reason"] = result.finish_reason
            if result.fallback:
                record["fallback"] = True
        if out.error is not None:
            record["error"] = type(out.error).__name__
        if route is not None and route.prepared is not None and route.prepared.metadata:
            record["metadata"] = dict(route.prepared.metadata)
        user_text = "metadata" in record
        if self._log_prompts and route is not None and route.prepared is not None:
            record["messages"] = [dict(m) for m in route.prepared.messages]
            user_text = True
        line = json.dumps(record, ensure_ascii=False, default=str)
        # the rest of the line is routerlab's own words (tier and model names, error kinds); what the
        # caller wrote (metadata, prompts) may hold a key and is scrubbed
        logger.info(scrub(line, secrets=secrets) if user_text else line)


def close_plan_early(core: _RouterCore, route: _RouteState, query_id: str | None, *, cancelled: bool = False) -> None:
    """A streamed route closed by its caller: finish the plan without another call going out (the call
    in flight, and any later one, is answered with :class:`StreamClosedError`, emitted and maybe billed,
    so the plan stops), log its line and hand back any breaker probe. Nothing is raised."""
    plan = route.plan
    if plan is not None:

        def closed(n: int) -> list[Reply]:
            err = StreamClosedError("the caller cancelled the route" if cancelled else "the caller closed the stream")
            return [Reply(error=err, maybe_billed=True, emitted=True) for _ in range(max(n, 1))]

        # suspended in a call: answer it; in a retry's pause, or not started yet: answer None
        answer: Any = closed(route.pending) if route.pending is not None else None
        try:
            for _ in range(10_000):  # the plan ends after the first closed call; this only bounds a bug
                cmd = plan.send(answer)
                if isinstance(cmd, Gate | BreakerEffect):
                    answer = core._effect(route, cmd)
                elif isinstance(cmd, Pause):
                    answer = None
                else:
                    answer = closed(cmd.n_requests)
        except StopIteration as stop:
            if stop.value is not None:
                core._log(route, query_id, stop.value)
        except ValueError:  # the plan is running (cannot happen on one thread); nothing to finish
            pass
    core._abandon(route)


def _spent(err: RouterlabError) -> Decimal:
    return sum((getattr(a, "cost_usd", Decimal(0)) for a in err.attempts), Decimal(0))


class _RouteState:
    """One route's policy snapshot, its plan, and the breakers it has gated and not yet reported on."""

    __slots__ = ("policy", "keys", "secrets", "started", "gated", "prepared", "plan", "live", "pending")

    def __init__(self, policy: RouterPolicy, keys: dict[str, str], started: float) -> None:
        self.policy = policy
        self.keys = keys
        self.secrets = tuple(v for v in keys.values() if len(v) >= 6)
        self.started = started
        self.pending: int | None = None  # requests of the call in flight
        self.gated: dict[int, CircuitBreaker] = {}
        self.prepared: PreparedQuery | None = None
        self.plan: Plan | None = None
        self.live: set[int] = set()  # tiers whose answer was streamed to the caller as it came


def _failed(exc: Exception, tier: Tier, secrets: tuple[str, ...], *, emitted: bool = False) -> Reply:
    """The reply for a request whose transport (or body decoding) failed."""
    err: ProviderError
    if isinstance(exc, httpx.TimeoutException | _Deadline):
        err = ProviderTimeoutError(
            f"no complete answer within {exc.seconds if isinstance(exc, _Deadline) else tier.timeout_s} s "
            f"({type(exc).__name__})",
            provider=tier.provider,
            model=tier.model,
        )
    elif isinstance(exc, httpx.DecodingError):
        err = MalformedResponseError(
            scrub(f"the response body could not be decoded: {exc}", secrets=secrets),
            provider=tier.provider,
            model=tier.model,
        )
    elif isinstance(exc, _TooLarge):
        err = MalformedResponseError(str(exc), provider=tier.provider, model=tier.model)
    else:
        err = ConnectionFailedError(
            scrub(f"{type(exc).__name__}: {exc}", secrets=secrets), provider=tier.provider, model=tier.model
        )
    billed = isinstance(exc, (*_MAYBE_BILLED, _Deadline, _TooLarge))
    return Reply(error=err, maybe_billed=billed, emitted=emitted)


class _Deadline(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"the call's deadline of {seconds:g} s passed")
        self.seconds = seconds


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the response is larger than the policy's max_response_bytes ({limit} bytes); not read")


def _to_request(client: httpx.Client | httpx.AsyncClient, spec: RequestSpec, timeout_s: float) -> httpx.Request:
    return client.build_request(
        spec.method, spec.url, headers=spec.headers, content=spec.content(), timeout=httpx.Timeout(timeout_s)
    )


def _is_sse(resp: httpx.Response) -> bool:
    return "text/event-stream" in resp.headers.get("content-type", "")


class RouteStream:
    """A streamed route (``CascadeRouter.route_stream``): iterate it for the answer's text deltas;
    ``result`` holds the :class:`RouteResult` once it ended. Closing it early (``close()``, leaving a
    ``with`` block, or dropping it) stops the call, releases the breaker and writes the log line."""

    def __init__(self) -> None:
        self._gen: Generator[str, None, None] | None = None  # set by route_stream
        self.result: RouteResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        assert self._gen is not None
        return next(self._gen)

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()

    def __enter__(self) -> RouteStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def text(self) -> str:
        """Read the whole stream and return the answer's text."""
        return "".join(self)


class AsyncRouteStream:
    """The asyncio twin of :class:`RouteStream`: ``async for delta in stream``; ``async with``."""

    def __init__(self) -> None:
        self._gen: AsyncGenerator[str, None] | None = None  # set by route_stream
        self.result: RouteResult | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        assert self._gen is not None
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()

    async def __aenter__(self) -> AsyncRouteStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def text(self) -> str:
        return "".join([d async for d in self])


class CascadeRouter(_RouterCore):
    """The synchronous router; all I/O goes through the injected ``httpx.Client``."""

    def __init__(
        self,
        policy: RouterPolicy | PolicyHolder,
        *,
        client: httpx.Client,
        sleep: Callable[[float], None] = time.sleep,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, **kwargs)
        self.client = client
        self._sleep = sleep

    @classmethod
    def from_policy(cls, policy: RouterPolicy | PolicyHolder, *, client: httpx.Client, **kwargs: Any) -> CascadeRouter:
        """Build a router for ``policy`` (a :class:`RouterPolicy`, or a :class:`PolicyHolder` to hot-reload)."""
        return cls(policy, client=client, **kwargs)

    @classmethod
    def from_policy_file(cls, path: str | os.PathLike[str], *, client: httpx.Client, **kwargs: Any) -> CascadeRouter:
        """A router that reloads ``path`` whenever the file changes (keeping the last good policy)."""
        return cls(PolicyHolder(path), client=client, **kwargs)

    def route(self, query: Query, *, query_id: str | None = None, **options: Any) -> RouteResult:
        """Route one query: a prompt string, a list of chat messages, or an OpenAI-style chat request
        (``{"messages": [...], "tools": [...], ...}``). ``options`` adds request fields (``tools``,
        ``tool_choice``, ``parallel_tool_calls``, ``response_format``, ``stop``, ``seed``, ``top_p``,
        ``user``; ``metadata`` is logged, not sent)."""
        route = self._new_route()
        try:
            for _ in self._drive(route, self._plan(route, query, options, False)):
                pass
            raise AssertionError("unreachable: _drive ends by raising _Done")
        except _Done as done:
            outcome = done.outcome
        except Exception as e:
            raise self._failed_route(route, query_id, e) from (None if isinstance(e, RouterlabError) else e)
        except BaseException:
            self._abandon(route)
            raise
        return self._end(route, query_id, outcome)

    def route_stream(self, query: Query, *, query_id: str | None = None, **options: Any) -> RouteStream:
        """Route one query, streaming: iterate the result for text deltas. A tier that needs no confidence
        check (the final tier, or a class without a check) streams its answer as it arrives; otherwise
        the accepted answer is yielded once it is known. Usage and cost come from the stream."""
        stream = RouteStream()

        def gen() -> Generator[str, None, None]:
            route = self._new_route()
            try:
                yield from self._drive(route, self._plan(route, query, options, True))
                raise AssertionError("unreachable: _drive ends by raising _Done")
            except _Done as done:
                outcome = done.outcome
            except GeneratorExit:
                close_plan_early(self, route, query_id)
                raise
            except Exception as e:
                raise self._failed_route(route, query_id, e) from (None if isinstance(e, RouterlabError) else e)
            except BaseException:
                self._abandon(route)
                raise
            tail = self._stream_tail(route, query_id, outcome, stream)
            if tail:
                yield tail

        stream._gen = gen()
        return stream

    def _drive(self, route: _RouteState, plan: Plan) -> Iterator[str]:
        """Run the plan; yields the text deltas of live-streamed tiers; ends by raising :class:`_Done`."""
        answer: Any = None
        while True:
            try:
                cmd = plan.send(answer)
            except StopIteration as stop:
                raise _Done(stop.value) from None
            if isinstance(cmd, TierCall):
                specs = cmd.requests()
                route.pending = len(specs)
                if cmd.stream:
                    reply = yield from self._send_stream(specs[0], cmd, route)
                    answer = [reply]
                else:
                    deadline = self._clock() + cmd.deadline_s
                    answer = [self._send(s, cmd, route, deadline) for s in specs]
                route.pending = None
            elif isinstance(cmd, Pause):
                self._sleep(cmd.seconds)
                answer = None
            else:
                answer = self._effect(route, cmd)

    def _read(self, resp: httpx.Response, deadline: float, limit: int, seconds: float) -> bytes:
        """The whole (decoded) body, cut off at ``deadline`` (checked as each chunk arrives) or ``limit``."""
        parts: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise _TooLarge(limit)
            parts.append(chunk)
            if self._clock() > deadline:
                raise _Deadline(seconds)
        return b"".join(parts)

    def _send(self, spec: RequestSpec, call: TierCall, route: _RouteState, deadline: float) -> Reply:
        tier = call.tier
        remaining = deadline - self._clock()
        if remaining <= 0:
            return _failed(_Deadline(call.deadline_s), tier, route.secrets)
        try:
            resp = self.client.send(_to_request(self.client, spec, remaining), stream=True)
            try:
                content = self._read(resp, deadline, route.policy.max_response_bytes, call.deadline_s)
            finally:
                resp.close()
        except (httpx.HTTPError, _TooLarge, _Deadline) as e:
            return _failed(e, tier, route.secrets)
        return Reply(resp.status_code, resp.headers, content)

    def _send_stream(self, spec: RequestSpec, call: TierCall, route: _RouteState) -> Generator[str, None, Reply]:
        """Send one streaming request, yielding its text deltas as they arrive; returns the Reply."""
        tier = call.tier
        deadline = self._clock() + call.deadline_s
        decoder = get_adapter(tier.provider).delta_decoder()
        emitted = False
        try:
            resp = self.client.send(_to_request(self.client, spec, call.deadline_s), stream=True)
        except httpx.HTTPError as e:
            return _failed(e, tier, route.secrets)
        try:
            if not (200 <= resp.status_code < 300 and _is_sse(resp)):
                content = self._read(resp, deadline, route.policy.max_response_bytes, call.deadline_s)
                return Reply(resp.status_code, resp.headers, content, stream=False)
            parts: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > route.policy.max_response_bytes:
                    raise _TooLarge(route.policy.max_response_bytes)
                parts.append(chunk)
                for delta in decoder.feed(chunk):
                    if delta:
                        emitted = True
                        route.live.add(call.tier_index)
                        yield delta
                if self._clock() > deadline:
                    raise _Deadline(call.deadline_s)
            return Reply(resp.status_code, resp.headers, b"".join(parts), stream=True, emitted=emitted)
        except (_Deadline, _TooLarge, httpx.HTTPError) as e:
            return _failed(e, tier, route.secrets, emitted=emitted)
        finally:
            resp.close()


class _Done(Exception):  # noqa: N818 - control flow, never leaves this module
    def __init__(self, outcome: RouteOutcome) -> None:
        self.outcome = outcome


class AsyncCascadeRouter(_RouterCore):
    """The asyncio router; k sample requests of one tier go out concurrently."""

    def __init__(
        self,
        policy: RouterPolicy | PolicyHolder,
        *,
        client: httpx.AsyncClient,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, **kwargs)
        self.client = client
        self._sleep = sleep

    @classmethod
    def from_policy(
        cls, policy: RouterPolicy | PolicyHolder, *, client: httpx.AsyncClient, **kwargs: Any
    ) -> AsyncCascadeRouter:
        return cls(policy, client=client, **kwargs)

    @classmethod
    def from_policy_file(
        cls, path: str | os.PathLike[str], *, client: httpx.AsyncClient, **kwargs: Any
    ) -> AsyncCascadeRouter:
        return cls(PolicyHolder(path), client=client, **kwargs)

    async def route(self, query: Query, *, query_id: str | None = None, **options: Any) -> RouteResult:
        """Route one query; decides exactly as :meth:`CascadeRouter.route`."""
        route = self._new_route()
        try:
            outcome = await self._run(route, self._plan(route, query, options, False), None)
        except Exception as e:
            raise self._failed_route(route, query_id, e) from (None if isinstance(e, RouterlabError) else e)
        except asyncio.CancelledError:  # e.g. asyncio.wait_for: finish the plan's books, log, free the probe
            close_plan_early(self, route, query_id, cancelled=True)
            raise
        except BaseException:  # interrupted mid-route
            self._abandon(route)
            raise
        return self._end(route, query_id, outcome)

    def route_stream(self, query: Query, *, query_id: str | None = None, **options: Any) -> AsyncRouteStream:
        """Route one query, streaming (see :meth:`CascadeRouter.route_stream`)."""
        stream = AsyncRouteStream()

        async def gen() -> AsyncGenerator[str, None]:
            route = self._new_route()
            queue: asyncio.Queue[str | None] = asyncio.Queue()
            task: asyncio.Task[RouteOutcome] | None = None
            try:
                task = asyncio.ensure_future(self._run(route, self._plan(route, query, options, True), queue))
                task.add_done_callback(lambda _t: queue.put_nowait(None))
                while True:
                    delta = await queue.get()
                    if delta is None:
                        break
                    yield delta
                outcome = await task
            except GeneratorExit:
                if task is not None and not task.done():
                    task.cancel()
                close_plan_early(self, route, query_id)
                raise
            except Exception as e:
                raise self._failed_route(route, query_id, e) from (None if isinstance(e, RouterlabError) else e)
            except BaseException as e:
                if task is not None and not task.done():
                    task.cancel()
                if isinstance(e, asyncio.CancelledError):
                    close_plan_early(self, route, query_id)
                else:
                    self._abandon(route)
                raise
            tail = self._stream_tail(route, query_id, outcome, stream)
            if tail:
                yield tail

        stream._gen = gen()
        return stream

    async def _run(self, route: _RouteState, plan: Plan, queue: asyncio.Queue[str | None] | None) -> RouteOutcome:
        answer: Any = None
        while True:
            try:
                cmd = plan.send(answer)
            except StopIteration as stop:
                out: RouteOutcome = stop.value
                return out
            if isinstance(cmd, TierCall):
                specs = cmd.requests()
                route.pending = len(specs)
                if cmd.stream and queue is not None:
                    answer = [await self._send_stream(specs[0], cmd, route, queue)]
                elif len(specs) == 1:  # no task to spawn for a single request
                    answer = [await self._send(specs[0], cmd, route)]
                else:
                    sends = [self._send(s, cmd, route) for s in specs]
                    answer = list(await asyncio.gather(*sends))
                route.pending = None
            elif isinstance(cmd, Pause):
                await self._sleep(cmd.seconds)
                answer = None
            else:
                answer = self._effect(route, cmd)

    async def _read(self, resp: httpx.Response, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise _TooLarge(limit)
            parts.append(chunk)
        return b"".join(parts)

    async def _send(self, spec: RequestSpec, call: TierCall, route: _RouteState) -> Reply:
        tier = call.tier

        async def attempt() -> Reply:
            resp = await self.client.send(_to_request(self.client, spec, call.deadline_s), stream=True)
            try:
                content = await self._read(resp, route.policy.max_response_bytes)
            finally:
                await resp.aclose()
            return Reply(resp.status_code, resp.headers, content)

        try:
            async with asyncio.timeout(call.deadline_s):  # the whole call, not each read
                return await attempt()
        except TimeoutError:
            return _failed(_Deadline(call.deadline_s), tier, route.secrets)
        except (httpx.HTTPError, _TooLarge) as e:
            return _failed(e, tier, route.secrets)

    async def _send_stream(
        self, spec: RequestSpec, call: TierCall, route: _RouteState, queue: asyncio.Queue[str | None]
    ) -> Reply:
        tier = call.tier
        decoder = get_adapter(tier.provider).delta_decoder()
        state = {"emitted": False}

        async def attempt() -> Reply:
            resp = await self.client.send(_to_request(self.client, spec, call.deadline_s), stream=True)
            try:
                if not (200 <= resp.status_code < 300 and _is_sse(resp)):
                    content = await self._read(resp, route.policy.max_response_bytes)
                    return Reply(resp.status_code, resp.headers, content)
                parts: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > route.policy.max_response_bytes:
                        raise _TooLarge(route.policy.max_response_bytes)
                    parts.append(chunk)
                    for delta in decoder.feed(chunk):
                        if delta:
                            state["emitted"] = True
                            route.live.add(call.tier_index)
                            queue.put_nowait(delta)
                return Reply(resp.status_code, resp.headers, b"".join(parts), stream=True, emitted=state["emitted"])
            finally:
                await resp.aclose()

        try:
            async with asyncio.timeout(call.deadline_s):
                return await attempt()
        except TimeoutError:
            return _failed(_Deadline(call.deadline_s), tier, route.secrets, emitted=state["emitted"])
        except (httpx.HTTPError, _TooLarge) as e:
            return _failed(e, tier, route.secrets, emitted=state["emitted"])


__all__ = ["AsyncCascadeRouter", "AsyncRouteStream", "CascadeRouter", "RouteStream"]
