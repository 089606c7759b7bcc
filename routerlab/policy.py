"""The versioned routing policy: the one reader and the one writer of policy JSON.

A policy file looks like this (``schema_version`` 1)::

    {"schema_version": 1, "name": "support-bot",
     "tiers": [{"name": "cheap", "provider": "openai", "model": "gpt-4o-mini",
                "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY",
                "timeout_s": 8, "max_tokens": 1024, "temperature": 0.0}, ...],
     "routing": {"simple": {"start_tier": 0, "max_tokens": 512},
                 "medium": {"start_tier": 0}, "complex": {"start_tier": 1}},
     "confidence": {"signal": "consistency", "classes": ["medium"], "k": 2,
                    "similarity": "difflib", "temperature": 0.7,
                    "thresholds": [0.75, 0.75]},
     "cascade": true, "max_cost_per_query_usd": "0.05",
     "breaker": {"failure_threshold": 5, "window_s": 60, "recovery_s": 60, "disable_s": 300},
     "classifier": {..., "read": "user"}, "provenance": {...}}

Settings added later, each optional and written only when set: per tier
``supports_n``, ``reasoning``, ``reasoning_effort``; ``confidence.escalate_on``
(``["empty", "length", "content_filter"]``); ``cost_cap_mode`` (``worst_case``
or ``spent``); ``retries`` (``{"max_retries": 0, "backoff_s": 0.5,
"max_wait_s": 2}``); ``route_deadline_s``; ``max_response_bytes``
(10,000,000); ``confidence.answer`` (``first``, or ``majority``: return the
samples' medoid), ``confidence.k_max`` and ``confidence.stop_share`` (adaptive
k: after the first k samples disagree, draw one more at a time up to k_max and
accept once the returned answer's share of the samples reaches stop_share).

Every section but ``tiers`` may be left out (defaults below). Unknown keys
and out-of-range values are errors that name the field and the valid range.
``thresholds`` (and ``logprob_thresholds``) hold one value per non-final tier.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from routerlab.breaker import BreakerSettings
from routerlab.classifier import CLASSIFIER_READS, COMPLEXITY_CLASSES, ClassifierRead, ClassifierSettings
from routerlab.consistency import DEFAULT_ANSWER_PATTERN, SIMILARITY_NAMES
from routerlab.errors import ModelMismatchError, PolicyError
from routerlab.jsonio import atomic_write_text, read_json
from routerlab.learned import StartRouter, start_router_from_json
from routerlab.pricing import PriceOverride

SCHEMA_VERSION = 1
PROVIDERS = ("anthropic", "openai")
SIGNALS = ("consistency", "logprob")
ConfidenceSignal = Literal["consistency", "logprob"]

logger = logging.getLogger("routerlab.policy")


@dataclass(frozen=True)
class Tier:
    """One rung of the ladder: a model behind a provider endpoint.

    ``price_provider``, ``supports_n`` and ``reasoning`` left as None take the defaults when the tier
    is built: anthropic is priced as anthropic and has no ``n``; an OpenAI-compatible tier is priced by
    model and sends ``n`` unless its host is known not to take it (:func:`default_supports_n`); OpenAI
    reasoning models (o1, o3, o4-mini, gpt-5...) get the reasoning request shape
    (:func:`default_reasoning`: ``max_completion_tokens``, no temperature, ``reasoning_effort``).
    ``dataclasses.replace(tier, provider=...)`` keeps the resolved values: pass ``price_provider=None,
    supports_n=None, reasoning=None`` with it to take the new defaults.
    """

    name: str
    provider: str
    model: str
    base_url: str
    api_key_env: str | None = None
    timeout_s: float = 15.0
    max_tokens: int = 1024
    temperature: float | None = 0.0
    price: PriceOverride | None = None
    price_provider: str | None = None  # genai-prices provider id; None in a file: the provider's default
    supports_n: bool | None = None  # one request with n=k for k samples; None in a file: the host's default
    reasoning: bool | None = None  # OpenAI reasoning-model request shape; None in a file: by model name
    reasoning_effort: str | None = None  # sent as reasoning_effort (reasoning tiers only)
    sample_temperature: float | None = None  # this tier's consistency samples (None: confidence.temperature)

    def __post_init__(self) -> None:
        # resolve the defaults once, so every reader sees one value under one name
        if self.price_provider is None:
            object.__setattr__(self, "price_provider", _DEFAULT_PRICE_PROVIDER.get(self.provider))
        if self.supports_n is None:
            object.__setattr__(self, "supports_n", default_supports_n(self.provider, self.base_url))
        if self.reasoning is None:
            object.__setattr__(self, "reasoning", default_reasoning(self.provider, self.model))


#: OpenAI-compatible hosts and whether they answer ``n`` > 1 with that many choices. Groq rejects ``n``
#: (400); Ollama, OpenRouter and DeepSeek ignore it (one choice comes back); OpenAI, Azure OpenAI,
#: Together, Mistral and vLLM/LiteLLM servers honour it. Unknown hosts are assumed to honour it: a reply
#: with fewer choices than asked is completed by single requests, so a wrong guess costs input tokens,
#: never an answer. Set ``supports_n`` on the tier to override.
N_SUPPORT_BY_HOST: tuple[tuple[str, bool], ...] = (
    ("api.groq.com", False),
    ("openrouter.ai", False),
    ("api.deepseek.com", False),
    ("ollama", False),
    (":11434", False),  # Ollama's default port
    ("api.openai.com", True),
    ("openai.azure.com", True),
    ("api.together.xyz", True),
    ("api.together.ai", True),
    ("api.mistral.ai", True),
)

_REASONING_MODEL = re.compile(r"^(?:openai/)?(?:o[1-9](?:$|[-.])|gpt-5(?!.*chat))", re.IGNORECASE)
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def default_supports_n(provider: str, base_url: str) -> bool:
    """Whether a tier sends ``n`` by default: never for anthropic; for OpenAI-compatible hosts by
    :data:`N_SUPPORT_BY_HOST` (unknown hosts: yes)."""
    if provider != "openai":
        return False
    netloc = urlsplit(base_url).netloc.lower()
    for needle, ok in N_SUPPORT_BY_HOST:
        if needle in netloc:
            return ok
    return True


def default_reasoning(provider: str, model: str) -> bool:
    """Whether an OpenAI-format tier's model is a reasoning model (o1, o3, o4-mini, gpt-5, not
    gpt-5-chat): it takes ``max_completion_tokens`` and no temperature."""
    return provider == "openai" and bool(_REASONING_MODEL.match(model))


_DEFAULT_PRICE_PROVIDER = {"anthropic": "anthropic"}  # openai-compatible hosts: genai-prices matches by model


@dataclass(frozen=True)
class ClassRoute:
    """Where a complexity class starts and how long its answers may be."""

    start_tier: int = 0
    max_tokens: int | None = None


@dataclass(frozen=True)
class ConfidenceSettings:
    """When and how a non-final tier's answer is trusted."""

    signal: ConfidenceSignal = "consistency"
    classes: tuple[str, ...] = COMPLEXITY_CLASSES
    k: int = 2
    similarity: str = "difflib"
    temperature: float = 0.7
    thresholds: tuple[float, ...] = ()
    logprob_thresholds: tuple[float, ...] = ()
    answer_pattern: str = DEFAULT_ANSWER_PATTERN
    tiers: tuple[int, ...] | None = None  # the non-final tiers that check (None: every one)
    escalate_on: tuple[str, ...] = ("empty", "length", "content_filter")  # unusable answers: never confident
    answer: str = "first"  # which sample a consistency check returns: first | majority (the medoid)
    k_max: int | None = None  # adaptive k: draw single samples after the first k, up to k_max (None: no draws)
    stop_share: float = 0.5  # adaptive k: accept once the returned answer's share of the samples reaches this

    @property
    def draws_to(self) -> int:
        """The most samples a consistency check may take (k without adaptive draws)."""
        return self.k if self.k_max is None else self.k_max


ESCALATE_REASONS = ("empty", "length", "content_filter")
ANSWER_CHOICES = ("first", "majority")
COST_CAP_MODES = ("worst_case", "spent")
CostCapMode = Literal["worst_case", "spent"]


@dataclass(frozen=True)
class RetrySettings:
    """Same-tier retries of a transient failure (429, 5xx, 529, timeout, connection), before the route
    moves on: at most ``max_retries`` per tier, each after ``retry-after`` (or ``backoff_s`` doubling),
    never waiting longer than ``max_wait_s``, and only while the cost cap allows another call."""

    max_retries: int = 0
    backoff_s: float = 0.5
    max_wait_s: float = 2.0


def _default_routing() -> Mapping[str, ClassRoute]:
    return MappingProxyType({c: ClassRoute() for c in COMPLEXITY_CLASSES})


@dataclass(frozen=True)
class RouterPolicy:
    """Everything that sets a router's behaviour; load and dump with this module."""

    tiers: tuple[Tier, ...]
    routing: Mapping[str, ClassRoute] = field(default_factory=_default_routing)
    confidence: ConfidenceSettings = field(default_factory=ConfidenceSettings)
    cascade: bool = True
    max_cost_per_query_usd: Decimal | None = None
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    cost_cap_mode: CostCapMode = "worst_case"
    retries: RetrySettings = field(default_factory=RetrySettings)
    route_deadline_s: float | None = None
    max_response_bytes: int = 10_000_000
    name: str = ""
    provenance: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    schema_version: int = SCHEMA_VERSION
    start_router: StartRouter | None = None  # a learned start tier (routerlab.learned); None: routing's mapping

    def __post_init__(self) -> None:
        # a class left out of ``routing`` starts at tier 0, as in a file (the router looks up every class)
        if isinstance(self.routing, Mapping) and any(c not in self.routing for c in COMPLEXITY_CLASSES):
            filled = {c: ClassRoute() for c in COMPLEXITY_CLASSES} | dict(self.routing)
            object.__setattr__(self, "routing", MappingProxyType(filled))
        # re-validate through the dict form so that objects built in code obey the same rules
        validate_policy(self)

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # the read-only mappings cannot be pickled: send them as dicts (sweep shards go to other processes)
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["routing"], state["provenance"] = dict(self.routing), dict(self.provenance)
        return (_unpickle_policy, (state,))

    def tier_index(self, name: str) -> int:
        for i, t in enumerate(self.tiers):
            if t.name == name:
                return i
        raise KeyError(name)

    def with_changes(self, **changes: Any) -> RouterPolicy:
        return replace(self, **changes)

    def sample_temperature(self, tier_index: int) -> float:
        """The temperature of a tier's consistency samples: its own ``sample_temperature``, else
        ``confidence.temperature``."""
        t = self.tiers[tier_index].sample_temperature
        return self.confidence.temperature if t is None else t

    def with_sample_temperatures(self, temps: Sequence[float | None]) -> RouterPolicy:
        """The policy with the non-final tiers' sample temperatures set (None: leave that tier as it is)."""
        tiers = list(self.tiers)
        for i, t in enumerate(temps):
            if t is not None:
                tiers[i] = replace(tiers[i], sample_temperature=float(t))
        return replace(self, tiers=tuple(tiers))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RouterPolicy) and policy_to_dict(self) == policy_to_dict(other)

    def __hash__(self) -> int:
        # numbers hashed as floats: equal policies (timeout_s 8 in code, 8.0 from JSON) must hash alike
        return hash(json.dumps(_hash_form(policy_to_dict(self)), sort_keys=True))


def _hash_form(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _hash_form(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_hash_form(x) for x in v]
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            return v
    return v


# ---------------------------------------------------------------- validation helpers


class _Reader:
    """Walks a JSON object, checking keys, types and ranges; errors name the field."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(self, path: str, msg: str) -> PolicyError:
        return PolicyError(msg, field=path, source=self.source)

    def obj(self, v: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(path, f"must be a JSON object, got {type(v).__name__}")
        unknown = sorted(set(v) - set(allowed))
        if unknown:
            raise self.fail(
                f"{path}.{unknown[0]}" if path else unknown[0], f"unknown key; allowed keys are {', '.join(allowed)}"
            )
        for r in required:
            if r not in v:
                raise self.fail(f"{path}.{r}" if path else r, "is required")
        return v

    def integer(self, v: Any, path: str, lo: int, hi: int | None = None) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(path, f"must be an integer, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            raise self.fail(path, f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {v}")
        return v

    def number(self, v: Any, path: str, lo: float, hi: float | None = None, *, lo_open: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(path, f"must be a number, got {v!r}")
        try:
            x = float(v)
        except OverflowError:
            raise self.fail(
                path, f"must be in [{lo}, {hi if hi is not None else 'inf'}], got a number too large"
            ) from None
        bad_lo = x <= lo if lo_open else x < lo
        if bad_lo or (hi is not None and x > hi) or x != x:
            rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
            raise self.fail(path, f"must be in {rng}, got {v}")
        return x

    def string(self, v: Any, path: str, *, choices: tuple[str, ...] | None = None, empty_ok: bool = False) -> str:
        if not isinstance(v, str) or (not empty_ok and not v):
            raise self.fail(path, f"must be a non-empty string, got {v!r}")
        if choices is not None and v not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def boolean(self, v: Any, path: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(path, f"must be true or false, got {v!r}")
        return v

    def money(self, v: Any, path: str) -> Decimal:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise self.fail(path, f"must be a decimal number (string or number), got {v!r}")
        try:
            d = Decimal(str(v))
        except InvalidOperation:
            raise self.fail(path, f"must be a decimal number, got {v!r}") from None
        if not d.is_finite() or d < 0:
            raise self.fail(path, f"must be in [0, inf), got {v!r}")
        return d

    def strings(self, v: Any, path: str, *, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
        if not isinstance(v, list):
            raise self.fail(path, f"must be a list of strings, got {type(v).__name__}")
        return tuple(self.string(x, f"{path}[{i}]", choices=choices) for i, x in enumerate(v))


_TIER_KEYS = (
    "name",
    "provider",
    "model",
    "base_url",
    "api_key_env",
    "timeout_s",
    "max_tokens",
    "temperature",
    "price",
    "price_provider",
    "supports_n",
    "reasoning",
    "reasoning_effort",
    "sample_temperature",
)
_PRICE_KEYS = ("input_usd_per_mtok", "output_usd_per_mtok", "cache_read_usd_per_mtok", "cache_write_usd_per_mtok")
_CONF_KEYS = (
    "signal",
    "classes",
    "k",
    "similarity",
    "temperature",
    "thresholds",
    "logprob_thresholds",
    "answer_pattern",
    "tiers",
    "escalate_on",
    "answer",
    "k_max",
    "stop_share",
)
_TOP_KEYS = (
    "schema_version",
    "name",
    "tiers",
    "routing",
    "confidence",
    "cascade",
    "max_cost_per_query_usd",
    "breaker",
    "classifier",
    "cost_cap_mode",
    "retries",
    "route_deadline_s",
    "max_response_bytes",
    "provenance",
    "start_router",
)


def _read_tier(r: _Reader, v: Any, path: str) -> Tier:
    d = r.obj(v, path, _TIER_KEYS, ("name", "provider", "model", "base_url"))
    price = None
    if d.get("price") is not None:
        p = r.obj(d["price"], f"{path}.price", _PRICE_KEYS, _PRICE_KEYS[:2])
        opt = {k: r.money(p[k], f"{path}.price.{k}") for k in _PRICE_KEYS[2:] if p.get(k) is not None}
        price = PriceOverride(
            r.money(p["input_usd_per_mtok"], f"{path}.price.input_usd_per_mtok"),
            r.money(p["output_usd_per_mtok"], f"{path}.price.output_usd_per_mtok"),
            **opt,
        )
    provider = r.string(d["provider"], f"{path}.provider", choices=PROVIDERS)
    supports_n = None if d.get("supports_n") is None else r.boolean(d["supports_n"], f"{path}.supports_n")
    if provider == "anthropic" and supports_n:
        raise r.fail(f"{path}.supports_n", "must be false for provider anthropic (the Messages API has no n)")
    temp = d.get("temperature", 0.0)
    base_url = _base_url(r, d["base_url"], f"{path}.base_url")
    reasoning = None if d.get("reasoning") is None else r.boolean(d["reasoning"], f"{path}.reasoning")
    if provider == "anthropic" and reasoning:
        raise r.fail(f"{path}.reasoning", "is for OpenAI reasoning models; anthropic tiers take the usual shape")
    effort = d.get("reasoning_effort")
    if effort is not None:
        effort = r.string(effort, f"{path}.reasoning_effort", choices=REASONING_EFFORTS)
        model_name = str(d.get("model") or "")
        if not (reasoning if reasoning is not None else default_reasoning(provider, model_name)):
            raise r.fail(f"{path}.reasoning_effort", "applies to reasoning tiers only (set reasoning: true)")
    return Tier(
        name=r.string(d["name"], f"{path}.name"),
        provider=provider,
        model=r.string(d["model"], f"{path}.model"),
        base_url=base_url,
        api_key_env=_env_name(r, d.get("api_key_env"), f"{path}.api_key_env"),
        timeout_s=r.number(d.get("timeout_s", 15.0), f"{path}.timeout_s", 0.0, 3600.0, lo_open=True),
        max_tokens=r.integer(d.get("max_tokens", 1024), f"{path}.max_tokens", 1, 1_000_000),
        temperature=None if temp is None else r.number(temp, f"{path}.temperature", 0.0, 2.0),
        price=price,
        price_provider=None
        if d.get("price_provider") is None
        else r.string(d["price_provider"], f"{path}.price_provider"),
        supports_n=supports_n,
        reasoning=reasoning,
        reasoning_effort=effort,
        sample_temperature=None
        if d.get("sample_temperature") is None
        else r.number(d["sample_temperature"], f"{path}.sample_temperature", 0.0, 2.0),
    )


def _base_url(r: _Reader, v: Any, path: str) -> str:
    """An http(s) URL with a host; it may carry a query string (Azure's ``?api-version=...``)."""
    url = r.string(v, path)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it raises on a bad port
    except ValueError as e:
        raise r.fail(path, f"is not a valid URL ({e}): {url!r}") from None
    if parts.scheme not in ("http", "https"):
        raise r.fail(path, f"must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise r.fail(path, f"must name a host (e.g. https://api.openai.com/v1), got {url!r}")
    if parts.fragment:
        raise r.fail(path, f"must not carry a #fragment, got {url!r}")
    return url


def _check_tiers(r: _Reader, v: Any, n_tiers: int) -> tuple[int, ...] | None:
    """``confidence.tiers``: distinct non-final tier indexes, ascending (a tier without recorded samples
    can then stay unchecked while the others check)."""
    if v is None:
        return None
    if not isinstance(v, list):
        raise r.fail("confidence.tiers", f"must be a list of non-final tier indexes (0..{n_tiers - 2}), or left out")
    out = tuple(r.integer(x, f"confidence.tiers[{i}]", 0, max(n_tiers - 2, 0)) for i, x in enumerate(v))
    if n_tiers < 2 and out:
        raise r.fail("confidence.tiers", "a one-tier ladder has no tier to check")
    if list(out) != sorted(set(out)):
        raise r.fail("confidence.tiers", f"must list distinct tier indexes in ascending order, got {list(out)}")
    return out


def _escalate_on(r: _Reader, v: Any) -> tuple[str, ...]:
    if v is None:
        return ESCALATE_REASONS
    out = r.strings(v, "confidence.escalate_on", choices=ESCALATE_REASONS)
    if len(set(out)) != len(out):
        raise r.fail("confidence.escalate_on", f"lists a reason twice: {list(out)}")
    return tuple(x for x in ESCALATE_REASONS if x in out)  # one canonical order


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def _env_name(r: _Reader, v: Any, path: str) -> str | None:
    if v is None:
        return None
    name = r.string(v, path)
    if not _ENV_NAME.fullmatch(name):
        # Say what is wrong without echoing the value: a pasted key must not land in an error or a log.
        raise r.fail(path, "must name an environment variable (A-Z, 0-9, _; e.g. OPENAI_API_KEY), not hold a key")
    return name


def _read_policy(data: Any, source: str | None) -> RouterPolicy:
    r = _Reader(source)
    d = r.obj(data, "", _TOP_KEYS, ("schema_version", "tiers"))
    version = d["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != SCHEMA_VERSION:
        raise r.fail(
            "schema_version",
            f"must be {SCHEMA_VERSION} (this routerlab reads version {SCHEMA_VERSION}), got {version!r}",
        )
    if not isinstance(d["tiers"], list) or not d["tiers"]:
        raise r.fail("tiers", "must be a non-empty list of tier objects")
    tiers = tuple(_read_tier(r, t, f"tiers[{i}]") for i, t in enumerate(d["tiers"]))
    n = len(tiers)

    routing: dict[str, ClassRoute] = {}
    rd = r.obj(d.get("routing", {}), "routing", COMPLEXITY_CLASSES)
    for c in COMPLEXITY_CLASSES:
        cd = r.obj(rd.get(c, {}), f"routing.{c}", ("start_tier", "max_tokens"))
        mt = cd.get("max_tokens")
        routing[c] = ClassRoute(
            start_tier=r.integer(cd.get("start_tier", 0), f"routing.{c}.start_tier", 0, n - 1),
            max_tokens=None if mt is None else r.integer(mt, f"routing.{c}.max_tokens", 1, 1_000_000),
        )

    cf = r.obj(d.get("confidence", {}), "confidence", _CONF_KEYS)
    signal = r.string(cf.get("signal", "consistency"), "confidence.signal", choices=SIGNALS)

    def per_tier(key: str, default: float, lo: float, hi: float) -> tuple[float, ...]:
        v = cf.get(key)
        if v is None:
            return tuple([default] * (n - 1))
        if not isinstance(v, list) or len(v) != n - 1:
            raise r.fail(f"confidence.{key}", f"must be a list of {n - 1} numbers, one per non-final tier")
        return tuple(r.number(x, f"confidence.{key}[{i}]", lo, hi) for i, x in enumerate(v))

    conf = ConfidenceSettings(
        signal=cast(ConfidenceSignal, signal),
        classes=r.strings(
            cf.get("classes", list(COMPLEXITY_CLASSES)), "confidence.classes", choices=COMPLEXITY_CLASSES
        ),
        k=r.integer(cf.get("k", 2), "confidence.k", 2, 16),
        similarity=r.string(cf.get("similarity", "difflib"), "confidence.similarity", choices=SIMILARITY_NAMES),
        temperature=r.number(cf.get("temperature", 0.7), "confidence.temperature", 0.0, 2.0),
        thresholds=per_tier("thresholds", 0.75, 0.0, 1.0),
        logprob_thresholds=per_tier("logprob_thresholds", -0.5, -1000.0, 0.0),
        answer_pattern=r.string(cf.get("answer_pattern", DEFAULT_ANSWER_PATTERN), "confidence.answer_pattern"),
        tiers=_check_tiers(r, cf.get("tiers"), n),
        escalate_on=_escalate_on(r, cf.get("escalate_on")),
        answer=r.string(cf.get("answer", "first"), "confidence.answer", choices=ANSWER_CHOICES),
        k_max=None if cf.get("k_max") is None else r.integer(cf["k_max"], "confidence.k_max", 2, 64),
        stop_share=r.number(cf.get("stop_share", 0.5), "confidence.stop_share", 0.0, 1.0, lo_open=True),
    )
    if conf.k_max is not None and conf.k_max < conf.k:
        raise r.fail("confidence.k_max", f"must be at least confidence.k ({conf.k}), got {conf.k_max}")
    if signal == "logprob":
        for i, t in enumerate(tiers[:-1]):
            if t.reasoning:
                raise r.fail(
                    "confidence.signal",
                    f"logprob needs token log-probabilities, which tier {i} ({t.name!r}, a reasoning model) "
                    "cannot return; use consistency",
                )
            if t.provider == "anthropic":
                raise r.fail(
                    "confidence.signal",
                    f"logprob needs token log-probabilities, which tier {i} "
                    f"({t.name!r}, anthropic) cannot return; use consistency",
                )
    from routerlab.consistency import ANSWER_EXTRACTORS  # a name (boxed, letter, ...) or a regex

    if conf.answer_pattern not in ANSWER_EXTRACTORS:
        try:
            re.compile(conf.answer_pattern)
        except re.error as e:
            raise r.fail(
                "confidence.answer_pattern",
                f"is not a valid regular expression: {e}; nor is it an extractor name "
                f"(one of {', '.join(ANSWER_EXTRACTORS)})",
            ) from None

    bd = r.obj(d.get("breaker", {}), "breaker", ("failure_threshold", "window_s", "recovery_s", "disable_s"))
    breaker = BreakerSettings(
        failure_threshold=r.integer(bd.get("failure_threshold", 5), "breaker.failure_threshold", 1, 10_000),
        window_s=r.number(bd.get("window_s", 60.0), "breaker.window_s", 0.0, 86_400.0, lo_open=True),
        recovery_s=r.number(bd.get("recovery_s", 60.0), "breaker.recovery_s", 0.0, 86_400.0, lo_open=True),
        disable_s=r.number(bd.get("disable_s", 300.0), "breaker.disable_s", 0.0, 86_400.0, lo_open=True),
    )
    kd = r.obj(
        d.get("classifier", {}),
        "classifier",
        ("simple_patterns", "complex_patterns", "complex_min_words", "simple_max_words", "read"),
    )
    defaults = ClassifierSettings()
    classifier = ClassifierSettings(
        simple_patterns=r.strings(
            kd.get("simple_patterns", list(defaults.simple_patterns)), "classifier.simple_patterns"
        ),
        complex_patterns=r.strings(
            kd.get("complex_patterns", list(defaults.complex_patterns)), "classifier.complex_patterns"
        ),
        complex_min_words=r.integer(
            kd.get("complex_min_words", defaults.complex_min_words), "classifier.complex_min_words", 1
        ),
        simple_max_words=r.integer(
            kd.get("simple_max_words", defaults.simple_max_words), "classifier.simple_max_words", 0
        ),
        read=cast(ClassifierRead, r.string(kd.get("read", defaults.read), "classifier.read", choices=CLASSIFIER_READS)),
    )
    for key in ("simple_patterns", "complex_patterns"):
        for i, pat in enumerate(getattr(classifier, key)):
            try:
                re.compile(pat)
            except re.error as e:
                raise r.fail(f"classifier.{key}[{i}]", f"is not a valid regular expression: {e}") from None

    cap = d.get("max_cost_per_query_usd")
    rt = r.obj(d.get("retries", {}), "retries", ("max_retries", "backoff_s", "max_wait_s"))
    retries = RetrySettings(
        max_retries=r.integer(rt.get("max_retries", 0), "retries.max_retries", 0, 10),
        backoff_s=r.number(rt.get("backoff_s", 0.5), "retries.backoff_s", 0.0, 600.0),
        max_wait_s=r.number(rt.get("max_wait_s", 2.0), "retries.max_wait_s", 0.0, 600.0),
    )
    deadline = d.get("route_deadline_s")
    prov = d.get("provenance", {})
    if not isinstance(prov, dict):
        raise r.fail("provenance", "must be a JSON object")
    return _build(
        tiers=tiers,
        routing=MappingProxyType(routing),
        confidence=conf,
        cascade=r.boolean(d.get("cascade", True), "cascade"),
        max_cost_per_query_usd=None if cap is None else r.money(cap, "max_cost_per_query_usd"),
        breaker=breaker,
        classifier=classifier,
        cost_cap_mode=cast(
            CostCapMode, r.string(d.get("cost_cap_mode", "worst_case"), "cost_cap_mode", choices=COST_CAP_MODES)
        ),
        retries=retries,
        route_deadline_s=None
        if deadline is None
        else r.number(deadline, "route_deadline_s", 0.0, 86_400.0, lo_open=True),
        max_response_bytes=r.integer(d.get("max_response_bytes", 10_000_000), "max_response_bytes", 1024),
        name=r.string(d.get("name", ""), "name", empty_ok=True),
        provenance=MappingProxyType(dict(prov)),
        schema_version=SCHEMA_VERSION,
        start_router=None if d.get("start_router") is None else _read_start_router(r, d["start_router"], len(tiers)),
        source=source,
    )


def _read_start_router(r: _Reader, v: Any, n_tiers: int) -> StartRouter:
    if n_tiers < 2:
        raise r.fail("start_router", "a one-tier ladder has no start tier to choose")
    try:
        return start_router_from_json(v, n_tiers)
    except ValueError as e:
        where, _, msg = str(e).partition(": ")
        raise r.fail(where, msg) from None


_BUILDING = threading.local()


def _build(source: str | None, **kw: Any) -> RouterPolicy:
    _BUILDING.active = True
    try:
        p = RouterPolicy(**kw)
    finally:
        _BUILDING.active = False
    _check_cross(p, source)
    return p


def _check_cross(p: RouterPolicy, source: str | None) -> None:
    names = [t.name for t in p.tiers]
    for i, nm in enumerate(names):
        if nm in names[:i]:
            raise PolicyError(
                f"duplicate tier name {nm!r}; tier names must be unique", field=f"tiers[{i}].name", source=source
            )
    endpoints = [(t.provider, t.base_url.rstrip("/"), t.model) for t in p.tiers]
    for i, ep in enumerate(endpoints):
        if ep in endpoints[:i]:
            j = endpoints.index(ep)
            raise PolicyError(
                f"tiers {p.tiers[j].name!r} and {p.tiers[i].name!r} call the same model {ep[2]!r} at the same "
                "endpoint; a ladder needs a different model per tier (one model's health is one breaker's "
                "business, and the sweep could not tell the two apart)",
                field=f"tiers[{i}].model",
                source=source,
            )


def validate_policy(p: RouterPolicy) -> None:
    """Check a policy built in code by the same rules as a file (round trip through JSON)."""
    if getattr(_BUILDING, "active", False):
        return
    _read_policy(json.loads(json.dumps(policy_to_dict(p))), None)


# ---------------------------------------------------------------- writer


def _real(x: Any) -> Any:
    """A float field as the reader returns it (8 set in code is written 8.0, like a loaded 8);
    anything else (bool, None, junk) unchanged so validation still sees it."""
    if isinstance(x, int) and not isinstance(x, bool):
        try:
            return float(x)
        except OverflowError:
            return x
    return x


def policy_to_dict(p: RouterPolicy) -> dict[str, Any]:
    """The JSON object for ``p`` (Decimals as strings, tuples as lists)."""

    def tier(t: Tier) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": t.name,
            "provider": t.provider,
            "model": t.model,
            "base_url": t.base_url,
            "api_key_env": t.api_key_env,
            "timeout_s": _real(t.timeout_s),
            "max_tokens": t.max_tokens,
            "temperature": _real(t.temperature),
        }
        if t.price is not None:
            out["price"] = {k: str(getattr(t.price, k)) for k in _PRICE_KEYS if getattr(t.price, k) is not None}
        if t.price_provider != _DEFAULT_PRICE_PROVIDER.get(t.provider):  # defaults stay implicit in files
            out["price_provider"] = t.price_provider
        if t.supports_n != default_supports_n(t.provider, t.base_url):
            out["supports_n"] = t.supports_n
        if t.reasoning != default_reasoning(t.provider, t.model):
            out["reasoning"] = t.reasoning
        if t.reasoning_effort is not None:
            out["reasoning_effort"] = t.reasoning_effort
        if t.sample_temperature is not None:
            out["sample_temperature"] = _real(t.sample_temperature)
        return out

    c = p.confidence
    return {
        "schema_version": p.schema_version,
        "name": p.name,
        "tiers": [tier(t) for t in p.tiers],
        "routing": {
            k: ({"start_tier": v.start_tier} | ({} if v.max_tokens is None else {"max_tokens": v.max_tokens}))
            for k, v in p.routing.items()
        },
        "confidence": {
            "signal": c.signal,
            "classes": list(c.classes),
            "k": c.k,
            "similarity": c.similarity,
            "temperature": _real(c.temperature),
            "thresholds": [_real(x) for x in c.thresholds],
            "logprob_thresholds": [_real(x) for x in c.logprob_thresholds],
            "answer_pattern": c.answer_pattern,
            **({} if c.tiers is None else {"tiers": list(c.tiers)}),
            **({} if c.escalate_on == ESCALATE_REASONS else {"escalate_on": list(c.escalate_on)}),
            **({} if c.answer == "first" else {"answer": c.answer}),
            **({} if c.k_max is None else {"k_max": c.k_max, "stop_share": _real(c.stop_share)}),
        },
        "cascade": p.cascade,
        "max_cost_per_query_usd": None if p.max_cost_per_query_usd is None else str(p.max_cost_per_query_usd),
        "breaker": {
            "failure_threshold": p.breaker.failure_threshold,
            "window_s": _real(p.breaker.window_s),
            "recovery_s": _real(p.breaker.recovery_s),
            **({} if p.breaker.disable_s == 300.0 else {"disable_s": _real(p.breaker.disable_s)}),
        },
        "classifier": {
            "simple_patterns": list(p.classifier.simple_patterns),
            "complex_patterns": list(p.classifier.complex_patterns),
            "complex_min_words": p.classifier.complex_min_words,
            "simple_max_words": p.classifier.simple_max_words,
            **({} if p.classifier.read == "user" else {"read": p.classifier.read}),
        },
        # settings added after schema 1 shipped are written only when set, so older files keep their ids
        **({} if p.cost_cap_mode == "worst_case" else {"cost_cap_mode": p.cost_cap_mode}),
        **(
            {}
            if p.retries == RetrySettings()
            else {
                "retries": {
                    "max_retries": p.retries.max_retries,
                    "backoff_s": _real(p.retries.backoff_s),
                    "max_wait_s": _real(p.retries.max_wait_s),
                }
            }
        ),
        **({} if p.route_deadline_s is None else {"route_deadline_s": _real(p.route_deadline_s)}),
        **({} if p.max_response_bytes == 10_000_000 else {"max_response_bytes": p.max_response_bytes}),
        **({} if p.start_router is None else {"start_router": p.start_router.to_json()}),
        "provenance": _plain(p.provenance),
    }


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Decimal):
        return str(v)
    return v


def policy_from_dict(data: Any, *, source: str | None = None) -> RouterPolicy:
    """Validate a JSON object and build the policy (errors name the field)."""
    return _read_policy(data, source)


def load_policy(
    path: str | os.PathLike[str], *, expect_models: tuple[str, ...] | None = None, force: bool = False
) -> RouterPolicy:
    """Read and validate a policy file.

    With ``expect_models`` (the tier models of the router that will use it), a
    policy whose provenance says it was tuned on other models is refused with
    :class:`ModelMismatchError` unless ``force`` is true.
    """
    src = str(path)

    def error(message: str, line: int | None, fieldname: str | None) -> PolicyError:
        return PolicyError(message, field=fieldname, source=src)

    policy = _read_policy(read_json(path, error, what="policy file"), src)
    tuned = policy.provenance.get("tier_models")
    if tuned is not None:
        if not isinstance(tuned, list) or not all(isinstance(m, str) for m in tuned):
            raise PolicyError(
                f"must be a list of model names, got {tuned!r}", field="provenance.tier_models", source=src
            )
        tuned_t = tuple(tuned)
        current = tuple(t.model for t in policy.tiers)
        if tuned_t != current and not force:
            raise ModelMismatchError(
                f"{src}: this policy was tuned on tier models {list(tuned_t)} but its tiers now name "
                f"{list(current)}; re-tune it, or pass force=True to use it anyway"
            )
    if expect_models is not None:
        reference = tuple(tuned) if tuned is not None else tuple(t.model for t in policy.tiers)
        if tuple(expect_models) != reference and not force:
            raise ModelMismatchError(
                f"{src}: this policy was tuned on tier models {list(reference)}, not {list(expect_models)}; "
                f"re-tune it for these models, or pass force=True to use it anyway"
            )
    return policy


def dump_policy(policy: RouterPolicy, path: str | os.PathLike[str]) -> None:
    """Write ``policy`` as JSON atomically (temp file in the same folder, then rename)."""
    text = json.dumps(policy_to_dict(policy), indent=2, ensure_ascii=False) + "\n"
    atomic_write_text(path, text)


class PolicyHolder:
    """Holds the policy of a file and reloads it when the file changes.

    ``get()`` checks the file's mtime and size (cheap ``stat``); on a change it
    reloads. An invalid new file is logged and the last good policy is kept.
    ``add_check(fn)`` adds a check that a new policy must also pass (the
    routers add "every tier's model has a price"), run on the current policy
    at once and on every reload.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._policy = load_policy(self.path)
        self._checks: list[Callable[[RouterPolicy], None]] = []
        self.last_error: str | None = None

    def add_check(self, check: Callable[[RouterPolicy], None]) -> None:
        """Run ``check`` on the current policy (raising if it fails) and on every reloaded one."""
        with self._lock:
            check(self._policy)
            self._checks.append(check)

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def get(self) -> RouterPolicy:
        stamp = self._stat()
        if stamp == self._stamp:
            return self._policy
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    new = load_policy(self.path)
                    for check in self._checks:
                        check(new)
                    self._policy = new
                    self.last_error = None
                    logger.info(json.dumps({"event": "policy_reloaded", "path": str(self.path)}))
                except Exception as e:  # keep serving the last good policy
                    self.last_error = str(e)
                    logger.error(
                        json.dumps(
                            {
                                "event": "policy_reload_failed",
                                "path": str(self.path),
                                "error": str(e),
                                "kept": "last good policy",
                            }
                        )
                    )
            return self._policy


def _unpickle_policy(state: dict[str, Any]) -> RouterPolicy:
    proxies = {k: MappingProxyType(state[k]) for k in ("routing", "provenance")}
    return RouterPolicy(**{**state, **proxies})
