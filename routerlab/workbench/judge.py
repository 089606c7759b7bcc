"""An LLM-judge scorer: a judge model grades each tier's answer, through the same provider adapters.

The judge is set up in a small JSON file (:func:`load_judge_config`)::

    {
      "provider": "openai",
      "model": "gpt-4o-mini",
      "base_url": "https://api.openai.com/v1",
      "api_key_env": "OPENAI_API_KEY",
      "price": {"input_usd_per_mtok": "0.15", "output_usd_per_mtok": "0.60"},
      "max_tokens": 16,
      "temperature": 0,
      "system": "You are a strict grader.",
      "prompt": "Question: {question}\\nReference: {reference}\\nAnswer: {answer}\\nReply 'Score: N' (1-10).",
      "scale": [1, 10]
    }

Keys: ``provider`` (``openai`` or ``anthropic``), ``model``, ``base_url`` and ``prompt`` are required;
``api_key_env`` (null: send no key, e.g. a local server), ``price`` (as in a policy tier; without it the
judge model must be known to genai-prices), ``price_provider`` (a genai-prices provider id),
``max_tokens`` (default 16), ``temperature`` (default 0; null: leave it to the provider), ``system``
(a system message), ``timeout_s`` (default 60), ``scale`` (``[min, max]``, default ``[1, 10]``) and
``score_pattern`` (a regex whose first group is the score; default: the number after ``score`` or
``rating``, else the only number in the reply). The prompt's placeholders are ``{question}`` (the item's
last user message) and ``{answer}`` (both required) and ``{reference}`` (optional; an item without a
reference then gets None from the judge: not applicable); write a literal brace as ``{{`` or ``}}``.
Unknown keys and bad values raise :class:`~routerlab.errors.DataError` naming the file and the field.

:class:`JudgeScorer` (from :func:`make_judge_scorer`) is a scorer ``(item, text, model) -> float | None``.
For each answer it builds the judge request with the provider adapter and looks it up in its cassette, a
JSON file of recorded exchanges keyed by a SHA-256 of method, URL (secret query parameters removed) and
canonical JSON body. A miss is sent once (when ``record`` is true) and stored; the cassette is rewritten
atomically (readers and crashes see the old file or the new one), by default after every new exchange
(``flush_interval_s`` batches them; :meth:`JudgeScorer.flush` or leaving a ``with`` block writes the rest).
API keys and auth headers are never stored. With ``record=False`` a miss is a
:class:`~routerlab.errors.ReplayMissError` naming the item. So a study's judge scores are paid for once
and re-run offline, free and identical.

The reply's text becomes ``(score - min) / (max - min)``; a reply with no score in the scale is None (not
0) and counted in :attr:`JudgeStats.unparseable`. An empty answer scores 0.0 without a call. The tier's
model is not shown to the judge.

:func:`register_judge` registers the judge as a named scorer for ``build_outcomes(..., scorers=[name])``.
It registers a ``functools.partial`` binding the scorer, whose ``repr`` holds :meth:`JudgeScorer.fingerprint`
(the judge config and the cassette's bytes), so :func:`~routerlab.workbench.scoring.scorer_fingerprint`
and with it the outcome table's cache key change when the judge config or its recordings change (after a
recording run the next build replays into a table of its own, once).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import string
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from routerlab.data.cassettes import SECRET_HEADERS, request_key
from routerlab.data.evalset import EvalItem
from routerlab.errors import (
    ConfigError,
    ConnectionFailedError,
    DataError,
    MissingApiKeyError,
    PricingError,
    ProviderError,
    ProviderTimeoutError,
    ReplayMissError,
)
from routerlab.jsonio import atomic_write_text, read_json
from routerlab.pricing import PriceBook, PriceOverride
from routerlab.providers import ADAPTERS, RequestSpec, get_adapter, scrub
from routerlab.types import Completion, Usage
from routerlab.workbench.scoring import register_scorer

__all__ = [
    "CASSETTE_FORMAT",
    "JudgeConfig",
    "JudgeScorer",
    "JudgeStats",
    "judge_config_from_dict",
    "load_judge_config",
    "make_judge_scorer",
    "parse_score",
    "register_judge",
]

CASSETTE_FORMAT = "routerlab-judge-cassette/1"
PLACEHOLDERS = ("question", "answer", "reference")
_KEYS = (
    "provider",
    "model",
    "base_url",
    "api_key_env",
    "price",
    "price_provider",
    "max_tokens",
    "temperature",
    "timeout_s",
    "system",
    "prompt",
    "scale",
    "score_pattern",
)
_REQUIRED = ("provider", "model", "base_url", "prompt")
_PRICE_KEYS = ("input_usd_per_mtok", "output_usd_per_mtok", "cache_read_usd_per_mtok", "cache_write_usd_per_mtok")
_DEFAULT_PRICE_PROVIDER = {"anthropic": "anthropic"}  # as policy tiers: openai-compatible hosts match by model
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_LABELLED = re.compile(rf"\b(?:score|rating|grade)\b\W{{0,3}}?\s*({_NUMBER})", re.IGNORECASE)
_ANY_NUMBER = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w])")
_KEEP_RESPONSE_HEADERS = ("content-type", "retry-after", "retry-after-ms")
RETRY_BACKOFF_S = 1.0
RETRY_AFTER_MAX_S = 60.0


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class JudgeConfig:
    """The judge: which model grades, how it is asked and how its reply is read (see the module docstring)."""

    provider: str
    model: str
    base_url: str
    prompt: str
    api_key_env: str | None = None
    price: PriceOverride | None = None
    price_provider: str | None = None
    max_tokens: int = 16
    temperature: float | None = 0.0
    timeout_s: float = 60.0
    system: str | None = None
    scale: tuple[float, float] = (1.0, 10.0)
    score_pattern: str | None = None
    source: str = field(default="", compare=False)  # the file it came from (for messages)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON (what :func:`judge_config_from_dict` reads; without ``source``)."""
        out: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "price": None
            if self.price is None
            else {k: str(getattr(self.price, k)) for k in _PRICE_KEYS if getattr(self.price, k) is not None},
            "price_provider": self.price_provider,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "timeout_s": self.timeout_s,
            "system": self.system,
            "prompt": self.prompt,
            "scale": list(self.scale),
            "score_pattern": self.score_pattern,
        }
        return out

    @property
    def uses_reference(self) -> bool:
        return "reference" in _fields_of(self.prompt)


def _fields_of(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, fieldname: str | None, message: str) -> DataError:
        where = f"{self.source}: " if self.source else "judge config: "
        at = f"field '{fieldname}': " if fieldname else ""
        return DataError(f"{where}{at}{message}")

    def text(self, d: Mapping[str, Any], key: str) -> str:
        v = d[key]
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, f"must be a non-empty string, got {v!r}")
        return v

    def number(self, v: Any, key: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(key, f"must be a number, got {v!r}")
        if v < lo or v > hi or (lo_open and v == lo):
            raise self.fail(key, f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {v!r}")
        return float(v)


def judge_config_from_dict(data: Any, *, source: str = "") -> JudgeConfig:
    """Validate a decoded judge config; problems raise :class:`DataError` naming ``source`` and the field."""
    r = _Reader(source)
    if not isinstance(data, dict):
        raise r.fail(None, f"must be a JSON object, got {type(data).__name__}")
    for key in data:
        if key not in _KEYS:
            raise r.fail(key, f"unknown key; allowed keys are {', '.join(_KEYS)}")
    for key in _REQUIRED:
        if data.get(key) is None:
            raise r.fail(key, "missing required key")
    provider = r.text(data, "provider")
    if provider not in ADAPTERS:
        raise r.fail("provider", f"must be one of {', '.join(sorted(ADAPTERS))}, got {provider!r}")
    base_url = r.text(data, "base_url")
    if not base_url.startswith(("http://", "https://")):
        raise r.fail("base_url", f"must start with http:// or https://, got {base_url!r}")
    api_key_env = data.get("api_key_env")
    if api_key_env is not None and (not isinstance(api_key_env, str) or not _ENV_NAME.fullmatch(api_key_env)):
        # never echo the value: a pasted key must not land in an error message or a log
        raise r.fail(
            "api_key_env", "must name an environment variable (A-Z, 0-9, _; e.g. OPENAI_API_KEY), not hold a key"
        )
    price = None
    if data.get("price") is not None:
        p = data["price"]
        if not isinstance(p, dict):
            raise r.fail("price", f"must be an object with {_PRICE_KEYS[0]} and {_PRICE_KEYS[1]}, got {p!r}")
        for k in p:
            if k not in _PRICE_KEYS:
                raise r.fail(f"price.{k}", f"unknown key; allowed keys are {', '.join(_PRICE_KEYS)}")
        for k in _PRICE_KEYS[:2]:
            if p.get(k) is None:
                raise r.fail(f"price.{k}", "missing required key")
        for k, v in p.items():
            if isinstance(v, float) or v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise r.fail(f"price.{k}", f"must be a number of USD per million tokens, got {v!r}")
        try:
            price = PriceOverride(**{k: v for k, v in p.items() if v is not None})
        except ConfigError as e:
            bad = next((k for k in _PRICE_KEYS if f"'{k}'" in str(e)), None)
            raise r.fail(f"price.{bad}" if bad else "price", str(e)) from None
    price_provider = data.get("price_provider")
    if price_provider is None:
        price_provider = _DEFAULT_PRICE_PROVIDER.get(provider)
    elif not isinstance(price_provider, str) or not price_provider.strip():
        raise r.fail("price_provider", f"must be a genai-prices provider id (a string), got {price_provider!r}")
    max_tokens = data.get("max_tokens", 16)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 1_000_000:
        raise r.fail("max_tokens", f"must be an integer from 1 to 1000000, got {max_tokens!r}")
    temp = data.get("temperature", 0.0)
    temperature = None if temp is None else r.number(temp, "temperature", 0.0, 2.0)
    timeout_s = r.number(data.get("timeout_s", 60.0), "timeout_s", 0.0, 3600.0, lo_open=True)
    system = data.get("system")
    if system is not None:
        system = r.text(data, "system")
    prompt = r.text(data, "prompt")
    try:
        parsed = list(string.Formatter().parse(prompt))
    except ValueError as e:
        raise r.fail("prompt", f"is not a valid template ({e}); write a literal brace as {{{{ or }}}}") from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            raise r.fail(
                "prompt", f"unknown placeholder {{{name}}}; placeholders are {{question}}, {{answer}}, {{reference}}"
            )
        if spec or conv:
            raise r.fail("prompt", f"placeholder {{{name}}} must be plain (no conversion or format spec)")
    names = {name for _, name, _, _ in parsed if name is not None}
    for needed in ("question", "answer"):
        if needed not in names:
            raise r.fail("prompt", f"must contain the placeholder {{{needed}}}")
    scale_v = data.get("scale", [1, 10])
    if not isinstance(scale_v, list) or len(scale_v) != 2:
        raise r.fail("scale", f"must be [min, max], two numbers, got {scale_v!r}")
    lo = r.number(scale_v[0], "scale", -1e9, 1e9)
    hi = r.number(scale_v[1], "scale", -1e9, 1e9)
    if not lo < hi:
        raise r.fail("scale", f"min must be below max, got {scale_v!r}")
    pattern = data.get("score_pattern")
    if pattern is not None:
        if not isinstance(pattern, str) or not pattern:
            raise r.fail("score_pattern", f"must be a regex string, got {pattern!r}")
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise r.fail("score_pattern", f"is not a valid regex: {e}") from None
        if compiled.groups < 1:
            raise r.fail("score_pattern", "must have a group capturing the score, e.g. 'Score: (\\d+)'")
    return JudgeConfig(
        provider=provider,
        model=r.text(data, "model"),
        base_url=base_url,
        prompt=prompt,
        api_key_env=api_key_env,
        price=price,
        price_provider=price_provider,
        max_tokens=max_tokens,
        temperature=temperature,
        timeout_s=timeout_s,
        system=system,
        scale=(lo, hi),
        score_pattern=pattern,
        source=source,
    )


def load_judge_config(path: str | os.PathLike[str]) -> JudgeConfig:
    """Read and validate a judge config file (see the module docstring for its keys)."""
    where = os.fspath(path)

    def error(message: str, line: int | None, fieldname: str | None) -> DataError:
        at = f"field '{fieldname}': " if fieldname else ""
        return DataError(f"{where}: {at}{message}")

    return judge_config_from_dict(read_json(path, error, what="judge config"), source=where)


# ---------------------------------------------------------------- reading a reply


def parse_score(text: str, scale: tuple[float, float], pattern: str | None = None) -> float | None:
    """The reply's score mapped to [0, 1] by ``scale`` (``"Score: 7"`` on 1-10 -> 2/3); None without one.

    With ``pattern`` its first group is the score; else the number after ``score``/``rating``/``grade``,
    else the only number in the reply (a ``/max`` or ``out of max`` after it is allowed). A score
    outside the scale is None."""
    lo, hi = scale
    raw: str | None = None
    if pattern is not None:
        m = re.search(pattern, text)
        raw = m.group(1) if m else None
    else:
        m = _LABELLED.search(text)
        if m:
            raw = m.group(1)
        else:
            cleaned = re.sub(rf"\s*(?:/|\bout of\b)\s*{_NUMBER}", "", text, flags=re.IGNORECASE)
            numbers = _ANY_NUMBER.findall(cleaned)
            raw = numbers[0] if len(numbers) == 1 else None
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value) or value < lo or value > hi:
        return None
    return (value - lo) / (hi - lo)


# ---------------------------------------------------------------- the scorer


@dataclass(frozen=True)
class JudgeStats:
    """What a :class:`JudgeScorer` did: HTTP requests sent (retries included), exchanges recorded, scorer
    calls answered from the cassette, calls whose reply had no score, and the USD this object paid."""

    sent: int
    recorded: int
    replayed: int
    unparseable: int
    spend_usd: Decimal


def _canonical_hash(spec: RequestSpec) -> str:
    return hashlib.sha256(json.dumps(list(request_key(spec.method, spec.url, spec.content()))).encode()).hexdigest()


class JudgeScorer:
    """A scorer ``(item, text, model) -> float | None`` backed by a judge model and a cassette.

    Build it with :func:`make_judge_scorer`. Not for use from several threads at once beyond what its lock
    serialises (calls are serialised)."""

    def __init__(
        self,
        config: JudgeConfig,
        cassette_path: str | os.PathLike[str],
        *,
        client: httpx.Client | None = None,
        environ: Mapping[str, str] | None = None,
        record: bool = True,
        flush_interval_s: float = 0.0,
        max_retries: int = 2,
    ) -> None:
        self.config = config
        self.cassette_path = Path(cassette_path)
        self.record = record
        self.flush_interval_s = flush_interval_s
        self.max_retries = max_retries
        self.sleep: Callable[[float], None] = time.sleep
        self._adapter = get_adapter(config.provider)
        self._client = client
        self._own_client = False
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._prices = PriceBook()
        self._lock = threading.RLock()
        self._secrets: set[str] = set()
        self._interactions: dict[str, dict[str, Any]] = self._load()
        self._dirty = 0
        self._last_flush = -math.inf
        self.sent = 0
        self.recorded = 0
        self.replayed = 0
        self.unparseable = 0
        self.spend_usd = Decimal(0)
        self.unparseable_items: list[str] = []
        self._check_price()

    # -- cassette file

    def _fail(self, message: str) -> DataError:
        return DataError(f"judge cassette {self.cassette_path}: {message}")

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.cassette_path.exists():
            return {}

        def error(message: str, line: int | None, fieldname: str | None) -> DataError:
            return self._fail(message)

        data = read_json(self.cassette_path, error, what="judge cassette")
        if not isinstance(data, dict) or data.get("format") != CASSETTE_FORMAT:
            raise self._fail(f'is not a judge cassette (expected "format": {CASSETTE_FORMAT!r})')
        interactions = data.get("interactions")
        if not isinstance(interactions, dict):
            raise self._fail("'interactions' must be an object keyed by request hash")
        for key, ex in interactions.items():
            try:
                req, resp = ex["request"], ex["response"]
                spec = RequestSpec(req["method"], req["url"], {}, req["body"])
                ok = isinstance(resp["status"], int) and isinstance(resp["body"], str)
                ok = ok and isinstance(resp.get("headers", {}), dict)
            except (KeyError, TypeError):
                raise self._fail(f"exchange {key[:12]} lacks request method/url/body or response status/body") from None
            if not ok:
                raise self._fail(f"exchange {key[:12]}: response status must be an int and body a string")
            if _canonical_hash(spec) != key:
                raise self._fail(f"exchange {key[:12]} does not match its request (edited by hand?)")
        return dict(interactions)

    def _serialize(self) -> str:
        doc = {
            "format": CASSETTE_FORMAT,
            "judge": {k: v for k, v in self.config.to_dict().items() if k != "api_key_env"},
            "interactions": self._interactions,
        }
        text = json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        for secret in self._secrets:  # belt and braces: a key that found its way anywhere is cut out
            text = text.replace(secret, "REDACTED")
        return text

    def flush(self) -> None:
        """Write the recorded exchanges not yet on disk (atomically)."""
        with self._lock:
            if self._dirty:
                atomic_write_text(self.cassette_path, self._serialize())
                self._dirty = 0
            self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close the HTTP client this object opened (not one it was given)."""
        self.flush()
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None
            self._own_client = False

    def __enter__(self) -> JudgeScorer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- identity

    def fingerprint(self) -> str:
        """A hash of everything the scores depend on: the judge config and the cassette's recordings."""
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        with self._lock:
            h.update(json.dumps(self._interactions, sort_keys=True, ensure_ascii=False).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        # scorer_fingerprint hashes the repr of what a partial binds: keep it stable and complete
        return f"JudgeScorer(model={self.config.model!r}, fingerprint={self.fingerprint()!r})"

    def stats(self) -> JudgeStats:
        return JudgeStats(self.sent, self.recorded, self.replayed, self.unparseable, self.spend_usd)

    def cassette_cost_usd(self) -> Decimal:
        """What every exchange in the cassette cost when it was recorded (the study's judge spend)."""
        with self._lock:
            exchanges = list(self._interactions.values())
        total = Decimal(0)
        for ex in exchanges:
            completion = self._parse(ex, "")
            total += self._cost(completion.usage)
        return total

    # -- scoring

    def _messages(self, item: EvalItem, text: str) -> list[dict[str, str]] | None:
        if self.config.uses_reference and item.reference is None:
            return None
        values = {"question": item.prompt, "answer": text, "reference": item.reference or ""}
        messages: list[dict[str, str]] = []
        if self.config.system is not None:
            messages.append({"role": "system", "content": self.config.system})
        messages.append({"role": "user", "content": self.config.prompt.format_map(values)})
        return messages

    def _build(self, messages: list[dict[str, str]], api_key: str | None) -> RequestSpec:
        return self._adapter.build_request(
            base_url=self.config.base_url,
            model=self.config.model,
            messages=messages,
            max_tokens=self.config.max_tokens,
            temperature=self.config.temperature,
            api_key=api_key,
        )

    def request_for(self, item: EvalItem, text: str) -> RequestSpec | None:
        """The judge request for ``text`` as the answer to ``item`` (without credentials); None when the
        prompt needs a reference the item does not have."""
        messages = self._messages(item, text)
        return None if messages is None else self._build(messages, None)

    def __call__(self, item: EvalItem, text: str, model: str) -> float | None:
        if not text.strip():
            return 0.0  # nothing to judge: the bottom of the scale, for free
        messages = self._messages(item, text)
        if messages is None:
            return None
        spec = self._build(messages, None)
        key = _canonical_hash(spec)
        with self._lock:
            exchange = self._interactions.get(key)
            if exchange is not None:
                self.replayed += 1
            else:
                if not self.record:
                    raise ReplayMissError(
                        f"judge cassette {self.cassette_path} has no judgement of item {item.id!r} "
                        f"(answer of {model or 'a tier'}: {text[:40]!r}); record it (record=True) or "
                        "use the cassette recorded for this judge config",
                        item_id=item.id,
                        model=model,
                    )
                exchange = self._send(spec, messages, item)
            completion = self._parse(exchange, item.id)
            score = parse_score(completion.text, self.config.scale, self.config.score_pattern)
            if score is None:
                self.unparseable += 1
                self.unparseable_items.append(item.id)
            return score

    def _parse(self, exchange: Mapping[str, Any], item_id: str) -> Completion:
        resp = exchange["response"]
        try:
            return self._adapter.parse_response(
                resp["status"], resp.get("headers", {}), resp["body"].encode("utf-8"), model=self.config.model
            )
        except ProviderError as e:
            raise self._fail(
                f"the recorded judgement{f' of item {item_id!r}' if item_id else ''} is unusable: {e}"
            ) from None

    def _cost(self, usage: Usage) -> Decimal:
        return self._prices.cost_usd(
            usage, self.config.model, provider=self.config.price_provider, override=self.config.price
        )

    def _check_price(self) -> None:
        try:
            self._prices.price(self.config.model, provider=self.config.price_provider, override=self.config.price)
        except PricingError as e:
            where = self.config.source or "the judge config"
            raise PricingError(
                f"judge model {self.config.model!r} needs a price to count the judge's spend: {e} "
                f'(give {where} a "price"); nothing was sent'
            ) from None

    def _api_key(self) -> str | None:
        env = self.config.api_key_env
        if env is None:
            return None
        key = self._environ.get(env)
        if not key:
            where = f" ({self.config.source})" if self.config.source else ""
            raise MissingApiKeyError(
                f"the judge{where} reads its API key from the environment variable {env}, which is not set; "
                "nothing was sent (set it, or replay a recorded cassette with record=False)"
            )
        self._secrets.add(key)
        return key

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.config.timeout_s)
            self._own_client = True
        return self._client

    def _send(self, spec: RequestSpec, messages: list[dict[str, str]], item: EvalItem) -> dict[str, Any]:
        """Send the judge request (with retries on retryable failures), store the exchange, flush."""
        sendable = self._build(messages, self._api_key())
        attempt = 0
        while True:
            self.sent += 1
            try:
                resp = self._http().request(
                    sendable.method,
                    sendable.url,
                    headers=sendable.headers,
                    content=sendable.content(),
                    timeout=self.config.timeout_s,
                )
                status, headers, body = resp.status_code, dict(resp.headers), resp.content
                completion = self._adapter.parse_response(status, headers, body, model=self.config.model)
                break
            except (ProviderError, httpx.TimeoutException, httpx.TransportError) as e:
                err = _typed(e, self.config)
                if not err.retryable or attempt >= self.max_retries:
                    self.flush()
                    raise type(err)(
                        f"judging item {item.id!r}: {err.message}",
                        provider=err.provider,
                        model=err.model,
                        status=err.status,
                        error_type=err.error_type,
                    ) from None
                wait = err.retry_after_s if err.retry_after_s is not None else RETRY_BACKOFF_S * 2**attempt
                self.sleep(min(wait, RETRY_AFTER_MAX_S))
                attempt += 1
        self.spend_usd += self._cost(completion.usage)
        exchange = {
            "item_id": item.id,
            "request": {
                "method": spec.method,
                "url": request_key(spec.method, spec.url, None)[1],
                "headers": {k: v for k, v in spec.headers.items() if k.lower() not in SECRET_HEADERS},
                "body": spec.body,
            },
            "response": {
                "status": status,
                "headers": {k.lower(): scrub(v) for k, v in headers.items() if k.lower() in _KEEP_RESPONSE_HEADERS},
                "body": scrub(body.decode("utf-8", errors="replace")),
            },
        }
        self._interactions[_canonical_hash(spec)] = exchange
        self.recorded += 1
        self._dirty += 1
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()
        return exchange


def _typed(e: Exception, config: JudgeConfig) -> ProviderError:
    if isinstance(e, ProviderError):
        return e
    if isinstance(e, httpx.TimeoutException):
        return ProviderTimeoutError(
            f"no reply within {config.timeout_s:g} s", provider=config.provider, model=config.model
        )
    return ConnectionFailedError(
        f"cannot reach {config.base_url}: {type(e).__name__}", provider=config.provider, model=config.model
    )


def make_judge_scorer(
    config: JudgeConfig,
    cassette_path: str | os.PathLike[str],
    *,
    client: httpx.Client | None = None,
    environ: Mapping[str, str] | None = None,
    record: bool = True,
    flush_interval_s: float = 0.0,
    max_retries: int = 2,
) -> JudgeScorer:
    """A judge scorer over ``cassette_path`` (created on the first recording). ``client`` sends the judge
    requests (default: a new ``httpx.Client``); ``environ`` holds the API key (default ``os.environ``);
    with ``record=False`` nothing is ever sent and a miss is a :class:`ReplayMissError`."""
    return JudgeScorer(
        config,
        cassette_path,
        client=client,
        environ=environ,
        record=record,
        flush_interval_s=flush_interval_s,
        max_retries=max_retries,
    )


def _judge_score(item: EvalItem, text: str, model: str, *, judge: JudgeScorer) -> float | None:
    """The registered scorer: ``judge`` bound by a partial, so its repr (config and recordings) is part of
    :func:`~routerlab.workbench.scoring.scorer_fingerprint`."""
    return judge(item, text, model)


def register_judge(
    name: str, config_path: str | os.PathLike[str], cassette_path: str | os.PathLike[str], **kw: Any
) -> JudgeScorer:
    """Load the judge config at ``config_path``, build its scorer (``kw`` as for :func:`make_judge_scorer`)
    and register it as scorer ``name`` (replacing one of that name); returns the scorer (its counters,
    :meth:`~JudgeScorer.flush`)."""
    judge = make_judge_scorer(load_judge_config(config_path), cassette_path, **kw)
    register_scorer(name, functools.partial(_judge_score, judge=judge), replace=True)
    return judge
