"""Frozen value types shared by the router, the adapters and the workbench.

Units live in the names: ``cost_usd`` (a ``Decimal``), ``latency_ms``,
``*_tokens``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from routerlab.classifier import Classification

Signal = Literal["none", "consistency", "logprob"]
"""The confidence signal of one tier's call: none (one sample), k samples, or token log-probabilities."""

AttemptOutcome = Literal[
    "accepted",
    "low_confidence",
    "unusable",
    "error",
    "skipped_breaker",
    "skipped_cost_cap",
    "skipped_deadline",
    "fallback",
]
"""How one step of a route ended (see :class:`Attempt`)."""

ErrorKind = Literal[
    "rate_limit",
    "server",
    "overloaded",
    "timeout",
    "connection",
    "malformed",
    "invalid_request",
    "context_length",
    "payload_too_large",
    "unsupported_parameter",
    "auth",
    "permission",
    "not_found",
    "quota",
    "missing_api_key",
    "closed",
    "provider",
    "retryable",
    "fatal",
]
"""The stable name of a failed step (``ProviderError.kind``, or ``missing_api_key``); the last three
name the untyped base classes."""

BreakerEffectKind = Literal["success", "failure", "disable", "release"]
"""What a step does to its tier's circuit breaker (``disable``: open it for its ``disable_s``;
``release``: hand an unused half-open probe back)."""


@dataclass(frozen=True)
class Usage:
    """Token counts one provider call reported, normalised across providers.

    ``input_tokens`` is *all* input tokens of the call, cache reads and cache
    writes included (OpenAI's ``prompt_tokens``; Anthropic's ``input_tokens +
    cache_read_input_tokens + cache_creation_input_tokens``).
    ``cache_read_tokens`` and ``cache_write_tokens`` are the parts of it read
    from / written to the provider's prompt cache. ``output_tokens`` includes
    reasoning tokens, of which ``reasoning_tokens`` says how many.
    ``estimated`` marks counts that were computed locally (e.g. by a
    tokenizer for imported public outputs), not reported by the provider.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )


@dataclass(frozen=True)
class ToolCall:
    """One tool (function) call a model asked for.

    ``arguments`` is the JSON text of the arguments as the model produced it (OpenAI's
    ``function.arguments``; Anthropic's ``input`` object, dumped compactly). :meth:`key` is what two
    samples are compared by: the same tool with equal arguments (parsed JSON, key order ignored)."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        """The arguments as JSON, or the raw text when it is not valid JSON."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments

    def key(self) -> str:
        """A canonical form of (name, arguments): equal for calls of the same tool with equal arguments."""
        return json.dumps([self.name, self.parsed_arguments()], sort_keys=True, separators=(",", ":"))

    def to_openai(self) -> dict[str, Any]:
        """This call in OpenAI's ``message.tool_calls`` shape."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Completion:
    """A parsed successful provider response.

    ``texts`` holds one text per returned sample/choice (``n`` > 1 gives
    several), in the provider's order. ``finish_reasons`` is aligned with it.
    ``mean_logprobs`` is aligned too where token log-probabilities came back,
    else empty. ``usage`` covers the whole call (all choices).
    ``finish_reasons`` use OpenAI's words for every provider (``stop``,
    ``length``, ``tool_calls``, ``content_filter``; Anthropic's ``max_tokens``
    becomes ``length``, ``end_turn``/``stop_sequence`` become ``stop``,
    ``tool_use`` becomes ``tool_calls``, ``refusal`` becomes
    ``content_filter``). ``tool_calls`` and ``refusals`` are aligned with
    ``texts`` too (or empty when no choice has any).
    """

    texts: tuple[str, ...]
    finish_reasons: tuple[str | None, ...]
    usage: Usage
    model: str = ""
    response_id: str = ""
    mean_logprobs: tuple[float, ...] = ()
    tool_calls: tuple[tuple[ToolCall, ...], ...] = ()
    refusals: tuple[str | None, ...] = ()

    def tool_calls_of(self, i: int) -> tuple[ToolCall, ...]:
        """The tool calls of choice ``i`` (empty when it called none)."""
        return self.tool_calls[i] if i < len(self.tool_calls) else ()

    def refusal_of(self, i: int) -> str | None:
        """The refusal text of choice ``i`` (OpenAI structured outputs), or None."""
        return self.refusals[i] if i < len(self.refusals) else None

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


@dataclass(frozen=True)
class Attempt:
    """One step of a route at one tier.

    ``outcome`` is one of: ``accepted`` (this tier's answer was returned),
    ``low_confidence`` (answer obtained but not trusted: escalated),
    ``unusable`` (the answer was empty, cut off at max_tokens or filtered: escalated),
    ``error`` (the call failed; ``error_kind`` says how),
    ``skipped_breaker`` (the tier's circuit breaker was open),
    ``skipped_cost_cap`` (the call could exceed the per-query cost cap),
    ``skipped_deadline`` (the route's deadline had passed),
    ``fallback`` (an earlier answer returned after later tiers were blocked).
    ``calls`` is the number of HTTP requests made (k for Anthropic samples).
    """

    tier: str
    tier_index: int
    model: str
    outcome: AttemptOutcome
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0
    calls: int = 0
    texts: tuple[str, ...] = ()
    similarity: float | None = None
    confidence: float | None = None
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "tier_index": self.tier_index,
            "model": self.model,
            "outcome": self.outcome,
            "calls": self.calls,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cache_read_tokens": self.usage.cache_read_tokens,
            "cache_write_tokens": self.usage.cache_write_tokens,
            "reasoning_tokens": self.usage.reasoning_tokens,
            "cost_usd": str(self.cost_usd),
            "latency_ms": round(self.latency_ms, 3),
            "similarity": self.similarity,
            "confidence": self.confidence,
            "error_kind": self.error_kind,
            "finish_reason": self.finish_reason,
        }


@dataclass(frozen=True)
class RouteResult:
    """What one route returns: the answer and everything it cost."""

    text: str
    tier: str
    tier_index: int
    model: str
    complexity: str
    usage: Usage
    cost_usd: Decimal
    escalations: int
    escalation_reasons: tuple[str, ...]
    latency_ms: float
    attempts: tuple[Attempt, ...]
    tool_calls: tuple[ToolCall, ...] = ()  # the answer's tool calls (its text may then be empty)
    finish_reason: str | None = None  # of the returned answer, in OpenAI's words (stop, length, ...)
    fallback: bool = False  # the answer was not accepted: the best one paid for, returned when the ladder ran out
    classification: Classification | None = None  # the classifier's verdict and the signals behind it

    @property
    def input_tokens(self) -> int:
        return self.usage.input_tokens

    @property
    def output_tokens(self) -> int:
        return self.usage.output_tokens
