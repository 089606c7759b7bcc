"""The cascade router: the sync and async drivers of the decision procedure.

How a route decides is defined once, in :mod:`routerlab.decision`
(:func:`~routerlab.decision.plan_route`, a sans-I/O generator). This module
only drives it: it reads the policy once per route (a hot-reloading
:class:`PolicyHolder` never mixes two versions within a route), reads the API
keys from the environment, answers the plan's breaker gates and effects with
one :class:`CircuitBreaker` per (provider, endpoint, model), sends its calls
through the injected ``httpx.Client`` (:class:`CascadeRouter`) or
``httpx.AsyncClient`` (:class:`AsyncCascadeRouter`, a tier's k requests
concurrently), and logs one JSON line per route. Both decide identically.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import httpx

from routerlab.breaker import BreakerSettings, CircuitBreaker
from routerlab.consistency import require_similarity
from routerlab.decision import (
    BreakerEffect,
    Clock,
    Gate,
    Messages,
    Plan,
    Reply,
    RouteOutcome,
    TierCall,
    as_messages,
    plan_route,
    prepare_query,
)
from routerlab.errors import ConnectionFailedError, ProviderError, ProviderTimeoutError
from routerlab.policy import PolicyHolder, RouterPolicy, Tier
from routerlab.pricing import PriceBook
from routerlab.providers import RequestSpec
from routerlab.types import RouteResult

logger = logging.getLogger("routerlab.router")

# Transport failures after the request was sent: the provider may have run (and billed) it.
_MAYBE_BILLED = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


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

    def _start(self, query: str | Messages) -> tuple[_RouteState, Plan]:
        policy = self.policy  # one snapshot for the whole route
        self._latest_breaker = policy.breaker  # the newest settings seen, without another stat per tier
        plan = plan_route(
            policy,
            prepare_query(query, policy.classifier),
            prices=self._prices,
            api_keys=self._keys(policy),
            clock=self._clock,
        )
        return _RouteState(policy), plan

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
            b.record_failure()
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

    def _end(self, query: str | Messages, query_id: str | None, out: RouteOutcome) -> RouteResult:
        for a in out.attempts:
            if a.error_kind == "missing_api_key":  # a deployment mistake: say so loudly
                logger.warning("%s", a.error_message)
        self._log(query, query_id, out)
        if out.error is not None:
            raise out.error
        assert out.result is not None
        return out.result

    def _log(self, query: str | Messages, query_id: str | None, out: RouteOutcome) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        if logger.isEnabledFor(logging.DEBUG):
            for a in out.attempts:
                logger.debug(json.dumps({"event": "attempt", "query_id": query_id, **a.to_dict()}))
        result = out.result
        record: dict[str, Any] = {
            "event": "route",
            "query_id": query_id,
            "ok": result is not None,
            "complexity": out.complexity,
            "tier": result.tier if result else None,
            "model": result.model if result else None,
            "input_tokens": out.usage.input_tokens,
            "output_tokens": out.usage.output_tokens,
            "cache_read_tokens": out.usage.cache_read_tokens,
            "cost_usd": str(out.spent_usd),
            "escalations": len(out.reasons),
            "reasons": list(out.reasons),
            "attempts": len(out.attempts),
            "latency_ms": round(out.latency_ms, 3),
            "ts": time.time(),
        }
        if self._log_prompts:
            record["messages"] = [dict(m) for m in as_messages(query)]
        logger.info(json.dumps(record, ensure_ascii=False))


class _RouteState:
    """One route's policy snapshot and the breakers it has gated and not yet reported on."""

    def __init__(self, policy: RouterPolicy) -> None:
        self.policy = policy
        self.gated: dict[int, CircuitBreaker] = {}


def _failed(exc: httpx.TransportError, tier: Tier) -> Reply:
    """The reply for a request whose transport failed."""
    err: ProviderError
    if isinstance(exc, httpx.TimeoutException):
        err = ProviderTimeoutError(
            f"no answer within {tier.timeout_s} s ({type(exc).__name__})", provider=tier.provider, model=tier.model
        )
    else:
        err = ConnectionFailedError(f"{type(exc).__name__}: {exc}", provider=tier.provider, model=tier.model)
    return Reply(error=err, maybe_billed=isinstance(exc, _MAYBE_BILLED))


def _to_request(client: httpx.Client | httpx.AsyncClient, spec: RequestSpec, timeout_s: float) -> httpx.Request:
    return client.build_request(
        spec.method, spec.url, headers=spec.headers, content=spec.content(), timeout=httpx.Timeout(timeout_s)
    )


class CascadeRouter(_RouterCore):
    """The synchronous router; all I/O goes through the injected ``httpx.Client``."""

    def __init__(self, policy: RouterPolicy | PolicyHolder, *, client: httpx.Client, **kwargs: Any) -> None:
        super().__init__(policy, **kwargs)
        self.client = client

    @classmethod
    def from_policy(cls, policy: RouterPolicy | PolicyHolder, *, client: httpx.Client, **kwargs: Any) -> CascadeRouter:
        """Build a router for ``policy`` (a :class:`RouterPolicy`, or a :class:`PolicyHolder` to hot-reload)."""
        return cls(policy, client=client, **kwargs)

    @classmethod
    def from_policy_file(cls, path: str | os.PathLike[str], *, client: httpx.Client, **kwargs: Any) -> CascadeRouter:
        """A router that reloads ``path`` whenever the file changes (keeping the last good policy)."""
        return cls(PolicyHolder(path), client=client, **kwargs)

    def route(self, query: str | Messages, *, query_id: str | None = None) -> RouteResult:
        """Route one query (a prompt string or a list of chat messages)."""
        route, plan = self._start(query)
        answer: Any = None
        try:
            while True:
                cmd = plan.send(answer)
                if isinstance(cmd, TierCall):
                    answer = [self._send(s, cmd.tier) for s in cmd.requests()]
                else:
                    answer = self._effect(route, cmd)
        except StopIteration as done:
            return self._end(query, query_id, done.value)
        except BaseException:
            self._abandon(route)
            raise

    def _send(self, spec: RequestSpec, tier: Tier) -> Reply:
        try:
            resp = self.client.send(_to_request(self.client, spec, tier.timeout_s))
            content = resp.read()
        except httpx.TransportError as e:
            return _failed(e, tier)
        return Reply(resp.status_code, resp.headers, content)


class AsyncCascadeRouter(_RouterCore):
    """The asyncio router; k sample requests of one tier go out concurrently."""

    def __init__(self, policy: RouterPolicy | PolicyHolder, *, client: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(policy, **kwargs)
        self.client = client

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

    async def route(self, query: str | Messages, *, query_id: str | None = None) -> RouteResult:
        """Route one query; decides exactly as :meth:`CascadeRouter.route`."""
        route, plan = self._start(query)
        answer: Any = None
        try:
            while True:
                cmd = plan.send(answer)
                if isinstance(cmd, TierCall):
                    sends: list[Awaitable[Reply]] = [self._send(s, cmd.tier) for s in cmd.requests()]
                    answer = list(await asyncio.gather(*sends))
                else:
                    answer = self._effect(route, cmd)
        except StopIteration as done:
            return self._end(query, query_id, done.value)
        except BaseException:  # cancelled (e.g. asyncio.wait_for) or failed mid-route
            self._abandon(route)
            raise

    async def _send(self, spec: RequestSpec, tier: Tier) -> Reply:
        try:
            resp = await self.client.send(_to_request(self.client, spec, tier.timeout_s))
            content = await resp.aread()
        except httpx.TransportError as e:
            return _failed(e, tier)
        return Reply(resp.status_code, resp.headers, content)


__all__ = ["AsyncCascadeRouter", "CascadeRouter"]
