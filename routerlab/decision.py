"""The decision procedure: how one route decides, and nothing else.

This module is the single definition of a route. :func:`plan_route` is a
sans-I/O generator: it never opens a socket, reads the environment, logs,
sleeps, touches a circuit breaker or imports an HTTP library. It *yields* commands and *receives*
their answers:

======================  ==========================================  =====================
yielded                 meaning                                     the driver sends back
======================  ==========================================  =====================
:class:`Gate`           may tier ``i`` be called now? (its breaker)  ``bool``
:class:`TierCall`       make this tier's call(s)                     ``list[Reply]`` (the
                                                                    raw replies of
                                                                    ``call.requests()``)
                                                                    or a :class:`TierReply`
                                                                    (already accounted)
:class:`BreakerEffect`  record ``success`` / ``failure`` /          ``None``
                        ``release`` on tier ``i``'s breaker
======================  ==========================================  =====================

and finally returns a :class:`RouteOutcome` (the result, or the error to
raise, with everything a log line needs). Time is read only through the
``clock`` it is given. Three drivers run it: :class:`routerlab.CascadeRouter`
(an ``httpx.Client``), :class:`routerlab.AsyncCascadeRouter` (an
``httpx.AsyncClient``; a tier's k requests go out concurrently) and the
workbench's reference simulator (``routerlab.workbench.reference``), which
answers each :class:`TierCall` with the :class:`TierReply` recorded in the
outcome table. The outcome table itself is built with :func:`account_replies`
and :func:`quote_worst_case`, the functions the live route uses.

One route, tier by tier from the class's start tier:

1. skip the tier if its circuit breaker is open (:class:`Gate` answered no);
2. stop (keeping any answer already paid for) if its API key is missing;
3. skip it if the worst case of the call (estimated input tokens, output at
   max_tokens, for every sample) could push the query's spend over the cap;
4. call it: one sample, or k samples at the confidence temperature where the
   confidence check applies (cascade on, non-final tier, class listed), or one
   sample with token log-probabilities for the ``logprob`` signal;
5. a retryable failure (429, 5xx, 529, timeout, unreachable, unparseable
   body, fewer samples than asked) moves on to the next tier; a fatal one
   (400, 401, 404) stops;
6. samples that agree (similarity >= the tier's threshold) or a confident
   mean log-probability accept the first sample; otherwise escalate.

When the ladder runs out the best answer already paid for (from the highest
tier that answered) is returned; with none, :class:`CascadeExhaustedError`
(or :class:`CostCapError` when the cap blocked the way). ``cascade: false``
turns off quality escalation but still falls back on failures.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from routerlab.classifier import ClassifierSettings, classify_complexity
from routerlab.consistency import agreement, get_similarity
from routerlab.errors import (
    CascadeExhaustedError,
    CostCapError,
    MalformedResponseError,
    MissingApiKeyError,
    ProviderError,
    RouterlabError,
)
from routerlab.policy import RouterPolicy, Tier
from routerlab.pricing import PriceBook
from routerlab.providers import RequestSpec, get_adapter
from routerlab.types import Attempt, AttemptOutcome, BreakerEffectKind, Completion, RouteResult, Signal, Usage

Clock = Callable[[], float]
Messages = Sequence[Mapping[str, Any]]

# ---------------------------------------------------------------- the query, prepared once


@dataclass(frozen=True)
class PreparedQuery:
    """What the decision needs of a query, computed once (:func:`prepare_query`)."""

    messages: tuple[Mapping[str, Any], ...]
    complexity: str
    input_estimate: int  # estimate_input_tokens(messages): the cost cap's input count
    cache_writes: bool  # the messages ask for prompt caching (input may cost the cache-write price)


def as_messages(query: str | Messages) -> tuple[dict[str, Any], ...]:
    """A prompt string as one user message; a message list copied."""
    if isinstance(query, str):
        return ({"role": "user", "content": query},)
    return tuple(dict(m) for m in query)


def last_user_text(messages: Messages) -> str:
    """The text the classifier reads: the last user message (JSON for structured content)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content", "")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


def complexity_of(messages: Messages, classifier: ClassifierSettings) -> str:
    """The complexity class of a conversation: the classifier on its last user message."""
    return classify_complexity(last_user_text(messages), classifier).value


def prepare_query(query: str | Messages, classifier: ClassifierSettings) -> PreparedQuery:
    """Classify the query and estimate its input once."""
    messages = as_messages(query)
    return PreparedQuery(
        messages, complexity_of(messages, classifier), estimate_input_tokens(messages), writes_prompt_cache(messages)
    )


_LETTERS_AND_SPACE = str.maketrans("", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ")
_LETTER_RUN = re.compile(r"[A-Za-z]+")


def estimate_input_tokens(messages: Messages) -> int:
    """A deliberately generous input-token estimate for the cost cap.

    ASCII letters and spaces count one token per three characters, but every
    run of letters at least one; every other ASCII character (digits,
    punctuation, newlines) counts one token; every UTF-8 byte of non-ASCII
    text counts one token (a byte-level BPE never needs more, so Chinese,
    Cyrillic or emoji cannot slip under the cap); plus 8 per message for the
    chat template. On the 1,510 prompts of the example set and the three
    public datasets this is at or above cl100k_base's count plus 4 per
    message for every prompt (min 1.04x, median 1.65x). It is an estimate,
    not a proof: long runs of letters that are not words (DNA, hex, base64)
    tokenize denser.
    """
    total = 8 * len(messages)
    for m in messages:
        content = m.get("content", "")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        raw = text.encode("utf-8")
        ascii_text = raw.decode("ascii", "ignore")
        other = len(ascii_text.translate(_LETTERS_AND_SPACE))
        words = max(math.ceil((len(ascii_text) - other) / 3), len(_LETTER_RUN.findall(ascii_text)))
        total += words + other + (len(raw) - len(ascii_text))
    return total


def writes_prompt_cache(messages: Messages) -> bool:
    """Whether the messages carry ``cache_control`` markers (Anthropic prompt caching: input may be
    billed at the cache-write price, above the input price)."""

    def walk(x: Any) -> bool:
        if isinstance(x, Mapping):
            return "cache_control" in x or any(walk(v) for v in x.values())
        if isinstance(x, list | tuple):
            return any(walk(v) for v in x)
        return False

    return any(walk(m) for m in messages)


# ---------------------------------------------------------------- what one tier's call is


def effective_max_tokens(policy: RouterPolicy, tier_index: int, complexity: str) -> int:
    """The tier's max_tokens, capped by the complexity class's max_tokens when it sets one."""
    tier = policy.tiers[tier_index]
    cap = policy.routing[complexity].max_tokens
    return tier.max_tokens if cap is None else min(tier.max_tokens, cap)


def tier_signal(policy: RouterPolicy, tier_index: int, complexity: str) -> Signal:
    """Which confidence signal the route uses at this tier (``none`` where no check applies)."""
    conf = policy.confidence
    check = (
        policy.cascade
        and tier_index < len(policy.tiers) - 1
        and complexity in conf.classes
        and (conf.tiers is None or tier_index in conf.tiers)
    )
    return conf.signal if check else "none"


def call_shape(tier: Tier, signal: Signal, k: int) -> tuple[int, int]:
    """(HTTP requests, samples) of one tier's call: k samples are one request with ``n=k`` where the
    tier accepts ``n``, else k requests."""
    if signal == "consistency":
        return (1 if tier.supports_n else k), k
    return 1, 1


def tier_requests(
    policy: RouterPolicy,
    tier_index: int,
    messages: Messages,
    signal: Signal,
    max_tokens: int,
    api_key: str | None,
    k: int | None = None,
) -> tuple[list[RequestSpec], int]:
    """The request(s) the router sends to one tier, and how many samples they yield.

    ``signal`` is ``none`` (one sample at the tier's temperature),
    ``consistency`` (k samples at the confidence temperature: one request with
    ``n=k`` where the tier accepts ``n``, else k identical requests) or
    ``logprob`` (one sample with token log-probabilities). The recorder builds
    its requests with this same function, so replays match byte for byte.
    """
    tier = policy.tiers[tier_index]
    adapter = get_adapter(tier.provider)
    k = policy.confidence.k if k is None else k
    n_requests, samples = call_shape(tier, signal, k)
    common: dict[str, Any] = dict(
        base_url=tier.base_url, model=tier.model, messages=messages, max_tokens=max_tokens, api_key=api_key
    )
    if signal == "consistency":
        temp = policy.confidence.temperature
        if n_requests == 1:
            return [adapter.build_request(**common, temperature=temp, n=k)], samples
        return [adapter.build_request(**common, temperature=temp) for _ in range(n_requests)], samples
    if signal == "logprob":
        return [adapter.build_request(**common, temperature=tier.temperature, logprobs=True)], samples
    return [adapter.build_request(**common, temperature=tier.temperature)], samples


def worst_case_cost_usd(
    prices: PriceBook,
    tier: Tier,
    input_tokens: int,
    max_tokens: int,
    n_requests: int,
    samples: int,
    *,
    cache_writes: bool = False,
) -> Decimal:
    """The most a tier's call(s) can cost: full input per request, ``max_tokens`` per sample, no cache
    discount; with ``cache_writes``, input at the higher of the input and cache-write prices."""
    out_per_request = max_tokens * (samples if n_requests == 1 else 1)
    one = prices.worst_case_cost_usd(
        input_tokens=input_tokens,
        output_tokens=out_per_request,
        model=tier.model,
        provider=tier.price_provider,
        override=tier.price,
        cache_writes=cache_writes,
    )
    return one * n_requests


def quote_worst_case(prices: PriceBook, call: TierCall, query: PreparedQuery) -> Decimal:
    """The cost cap's worst case for ``call`` (what the live route checks, and the outcome table stores)."""
    return worst_case_cost_usd(
        prices,
        call.tier,
        query.input_estimate,
        call.max_tokens,
        call.n_requests,
        call.samples,
        cache_writes=query.cache_writes,
    )


def unpriced_reserve_usd(worst: Decimal, n_requests: int, unpriced: int) -> Decimal:
    """What the cost cap counts for ``unpriced`` of a tier's ``n_requests`` requests that may have been
    billed but could not be priced: each at one request's share of the tier's worst case."""
    return worst / n_requests * unpriced


# ---------------------------------------------------------------- commands and replies


@dataclass(frozen=True)
class Gate:
    """Ask whether tier ``tier_index`` may be called now (the driver asks its breaker; half-open
    breakers hand out one probe). Answer: ``bool``."""

    tier_index: int


@dataclass(frozen=True)
class BreakerEffect:
    """Record ``effect`` on tier ``tier_index``'s breaker (``release`` hands an unused probe back).
    Answer: ``None``."""

    tier_index: int
    effect: BreakerEffectKind


@dataclass(frozen=True)
class TierCall:
    """Make tier ``tier_index``'s call. Answer: the :class:`Reply` of each of :meth:`requests`, or a
    :class:`TierReply` (what a simulator that already holds the accounted outcome sends)."""

    tier_index: int
    tier: Tier
    signal: Signal
    k: int
    max_tokens: int
    n_requests: int
    samples: int
    policy: RouterPolicy = field(repr=False)
    messages: Messages = field(repr=False)
    api_key: str | None = field(default=None, repr=False)

    def requests(self) -> list[RequestSpec]:
        """The HTTP requests to send (built on demand: a simulator never needs them)."""
        specs, _ = tier_requests(
            self.policy, self.tier_index, self.messages, self.signal, self.max_tokens, self.api_key, k=self.k
        )
        return specs


@dataclass(frozen=True)
class Reply:
    """What came back for one request: a response, or the provider error the driver made of a
    transport failure (``maybe_billed``: the request went out, so the provider may have run it)."""

    status: int = 0
    headers: Mapping[str, str] | None = None
    content: bytes = b""
    error: ProviderError | None = None
    maybe_billed: bool = False


@dataclass(frozen=True)
class TierReply:
    """One tier's call, accounted: its samples, usage, exact cost, the cost cap's reserve for replies
    that may be billed but could not be priced, and the error (if any) that decides the step.

    ``agreements`` (similarity name -> agreement of the samples) may be given by a driver that has
    them already (the outcome table); otherwise they are computed from ``texts``."""

    texts: tuple[str, ...]
    usage: Usage
    cost_usd: Decimal
    reserve_usd: Decimal
    error: ProviderError | None
    n_requests: int
    mean_logprobs: tuple[float, ...] = ()
    agreements: Mapping[str, float] | None = None
    reply_usage: tuple[Usage | None, ...] = ()  # per reply: its usage, None where it failed


@dataclass(frozen=True)
class RouteOutcome:
    """What a route decided: the result or the error to raise, with what a log line needs."""

    complexity: str
    result: RouteResult | None
    error: RouterlabError | None
    attempts: tuple[Attempt, ...]
    reasons: tuple[str, ...]
    spent_usd: Decimal
    usage: Usage
    latency_ms: float


Command = Gate | TierCall | BreakerEffect
Plan = Generator[Command, Any, RouteOutcome]
Quote = Callable[[TierCall], Decimal]


# ---------------------------------------------------------------- accounting (shared with the outcome table)


def account_replies(
    prices: PriceBook, tier: Tier, replies: Sequence[Reply], samples: int, worst: Decimal | None
) -> TierReply:
    """Parse and price one tier's replies: the one definition of what a call cost and whether it failed.

    Every reply is parsed; the first failure decides the step, but what the others returned is kept
    (and paid for). A 2xx body that cannot be parsed, and an answer lost after the request went out
    (read timeout, dropped connection), may still be billed: with a cap (``worst`` given) each counts
    one request's share of the worst case against it. Fewer samples than asked is a malformed reply.
    """
    adapter = get_adapter(tier.provider)
    done: list[Completion] = []
    error: ProviderError | None = None
    unpriced = 0
    per_reply: list[Usage | None] = []
    for r in replies:
        try:
            if r.error is not None:
                unpriced += r.maybe_billed
                raise r.error
            done.append(adapter.parse_response(r.status, r.headers or {}, r.content, model=tier.model))
            per_reply.append(done[-1].usage)
        except ProviderError as e:
            error = error or e
            unpriced += r.error is None and 200 <= r.status < 300
            per_reply.append(None)
    usage = sum((c.usage for c in done), Usage())
    cost = prices.cost_usd(usage, tier.model, provider=tier.price_provider, override=tier.price) if done else Decimal(0)
    texts = tuple(t for c in done for t in c.texts)
    if error is None and len(texts) < samples:
        error = MalformedResponseError(
            f"asked for {samples} samples, got {len(texts)}", provider=tier.provider, model=tier.model
        )
    reserve = Decimal(0)
    if worst is not None and unpriced > 0:
        reserve = unpriced_reserve_usd(worst, len(replies), unpriced)
    logprobs = done[0].mean_logprobs if done else ()
    return TierReply(texts, usage, cost, reserve, error, len(replies), logprobs, reply_usage=tuple(per_reply))


# ---------------------------------------------------------------- the plan


def plan_route(
    policy: RouterPolicy,
    query: PreparedQuery,
    *,
    prices: PriceBook,
    api_keys: Mapping[str, str],
    clock: Clock,
    quote: Quote | None = None,
) -> Plan:
    """Decide one route under ``policy`` (one snapshot for the whole route); see the module docstring.

    ``api_keys`` maps environment-variable names to their values, as the driver read them for this
    route. ``quote`` gives a call's worst-case cost for the cap (default: :func:`quote_worst_case`
    with ``prices``).
    """
    t_start = clock()
    cls = query.complexity
    route = policy.routing[cls]
    conf = policy.confidence
    cap = policy.max_cost_per_query_usd
    quote = quote or (lambda c: quote_worst_case(prices, c, query))

    spent = Decimal(0)  # what the parsed usage says was spent
    charged = Decimal(0)  # spent, plus the worst case of replies that may be billed but went unpriced
    usage_total = Usage()
    attempts: list[Attempt] = []
    reasons: list[str] = []
    best: tuple[str, int] | None = None  # (text, tier index) of the best unaccepted answer
    blocked_by_cap = False

    def finish(text_tier: tuple[str, int] | None, error: RouterlabError | None, fallback: bool) -> RouteOutcome:
        result = None
        if text_tier is not None:
            text, i = text_tier
            tier = policy.tiers[i]
            if fallback:
                attempts.append(Attempt(tier.name, i, tier.model, "fallback"))
            result = RouteResult(
                text=text,
                tier=tier.name,
                tier_index=i,
                model=tier.model,
                complexity=cls,
                usage=usage_total,
                cost_usd=spent,
                escalations=len(reasons),
                escalation_reasons=tuple(reasons),
                latency_ms=(clock() - t_start) * 1000.0,
                attempts=tuple(attempts),
            )
        if error is not None:
            error.attempts = tuple(attempts)
        return RouteOutcome(
            cls, result, error, tuple(attempts), tuple(reasons), spent, usage_total, (clock() - t_start) * 1000.0
        )

    for i in range(route.start_tier, len(policy.tiers)):
        tier = policy.tiers[i]
        if not (yield Gate(i)):
            attempts.append(Attempt(tier.name, i, tier.model, "skipped_breaker"))
            reasons.append(f"{tier.name}: circuit breaker open")
            continue

        api_key = None
        if tier.api_key_env is not None:
            api_key = api_keys.get(tier.api_key_env) or None
            if api_key is None:
                # A deployment mistake: stop like a 401 would, but keep what was already paid for.
                yield BreakerEffect(i, "release")
                err = MissingApiKeyError(
                    f"tier {tier.name!r} ({tier.model}) reads its API key from the environment variable "
                    f"{tier.api_key_env}, which is not set"
                )
                attempts.append(
                    Attempt(tier.name, i, tier.model, "error", error_kind="missing_api_key", error_message=str(err))
                )
                reasons.append(f"{tier.name}: missing_api_key")
                if best is None:
                    return finish(None, err, False)
                break

        signal = tier_signal(policy, i, cls)
        n_requests, samples = call_shape(tier, signal, conf.k)
        call = TierCall(
            i, tier, signal, conf.k, effective_max_tokens(policy, i, cls), n_requests, samples, policy,
            query.messages, api_key,
        )  # fmt: skip
        worst: Decimal | None = None
        if cap is not None:
            worst = quote(call)
            if charged + worst > cap:
                yield BreakerEffect(i, "release")
                blocked_by_cap = True
                attempts.append(
                    Attempt(
                        tier.name,
                        i,
                        tier.model,
                        "skipped_cost_cap",
                        error_message=f"worst case ${worst} + spent ${charged} > cap ${cap}",
                    )
                )
                reasons.append(f"{tier.name}: could exceed the cost cap")
                continue

        t0 = clock()
        answer = yield call
        latency = (clock() - t0) * 1000.0
        tr = answer if isinstance(answer, TierReply) else account_replies(prices, tier, answer, samples, worst)
        spent += tr.cost_usd
        charged += tr.cost_usd + (tr.reserve_usd if worst is not None else Decimal(0))
        usage_total = usage_total + tr.usage
        error = tr.error

        if error is not None:
            yield BreakerEffect(i, "failure" if error.retryable else "release")
            attempts.append(
                Attempt(
                    tier.name,
                    i,
                    tier.model,
                    "error",
                    tr.usage,
                    tr.cost_usd,
                    latency,
                    tr.n_requests,
                    tr.texts,
                    error_kind=error.kind,
                    error_message=str(error),
                )
            )
            reasons.append(f"{tier.name}: {error.kind}")
            if error.retryable:
                continue
            if best is None:
                return finish(None, error, False)
            break
        yield BreakerEffect(i, "success")

        sim = conf_value = None
        accepted = True
        why = ""
        if signal == "consistency":
            if tr.agreements is not None and conf.similarity in tr.agreements:
                sim = tr.agreements[conf.similarity]
            else:
                sim = agreement(tr.texts[:samples], get_similarity(conf.similarity, answer_pattern=conf.answer_pattern))
            accepted = sim >= conf.thresholds[i]
            why = f"{tier.name}: similarity {sim:.3f} < {conf.thresholds[i]}"
        elif signal == "logprob":
            conf_value = tr.mean_logprobs[0] if tr.mean_logprobs else None
            accepted = conf_value is not None and conf_value >= conf.logprob_thresholds[i]
            why = (
                f"{tier.name}: no log-probabilities returned"
                if conf_value is None
                else f"{tier.name}: mean logprob {conf_value:.3f} < {conf.logprob_thresholds[i]}"
            )
        outcome: AttemptOutcome = "accepted" if accepted else "low_confidence"
        attempts.append(
            Attempt(
                tier.name,
                i,
                tier.model,
                outcome,
                tr.usage,
                tr.cost_usd,
                latency,
                tr.n_requests,
                tr.texts,
                similarity=sim,
                confidence=conf_value,
            )
        )
        if accepted:
            return finish((tr.texts[0], i), None, False)
        reasons.append(why)
        best = (tr.texts[0], i)

    if best is not None:
        return finish(best, None, True)
    err_cls = CostCapError if blocked_by_cap else CascadeExhaustedError
    return finish(
        None,
        err_cls(
            f"no tier produced an answer for this query ({'; '.join(reasons) or 'no tier was tried'})",
            attempts=tuple(attempts),
        ),
        False,
    )


__all__ = [
    "BreakerEffect",
    "Command",
    "Gate",
    "Plan",
    "PreparedQuery",
    "Reply",
    "RouteOutcome",
    "TierCall",
    "TierReply",
    "account_replies",
    "as_messages",
    "call_shape",
    "complexity_of",
    "effective_max_tokens",
    "estimate_input_tokens",
    "last_user_text",
    "plan_route",
    "prepare_query",
    "quote_worst_case",
    "tier_requests",
    "tier_signal",
    "unpriced_reserve_usd",
    "worst_case_cost_usd",
    "writes_prompt_cache",
]
