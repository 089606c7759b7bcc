"""Cost in USD (``Decimal``) of provider-reported usage, priced with ``genai-prices``.

Prices come from the ``genai-prices`` package's bundled data, or from a tier's
:class:`PriceOverride`. A model with no known price raises
:class:`~routerlab.errors.PricingError`; nothing is ever priced as $0.

Network: genai-prices fetches remote prices only if ``UpdatePrices`` is started (its background thread
GETs a JSON file from GitHub via httpx2 and installs it with ``set_custom_snapshot``); nothing fetches on
import or in ``calc_price``; we never start it, and we price against our own ``DataSnapshot`` of the
bundled ``genai_prices.data.providers``, so even an updater started elsewhere in the process cannot
change our prices.

Usage semantics: genai-prices' ``input_tokens`` is, like ours, *all* input tokens; its
``cache_read_tokens`` / ``cache_write_tokens`` are parts of it that, where the model has a cache price,
are subtracted from ``input_tokens`` and priced at that price (else priced as plain input). So our
fields map one to one (``reasoning_tokens`` -> ``output_reasoning_tokens``, likewise a part of
``output_tokens``) and nothing is counted twice. Cache writes are priced at the model's
``cache_write_mtok`` (Anthropic's 5-minute rate): :class:`~routerlab.types.Usage` does not say which
writes used the 1-hour TTL.

Cost: ``import genai_prices`` takes about 0.35 s (it imports pydantic and httpx2) and the first lookup
another ~0.05 s to load the bundled data, so this module imports it lazily, on the first lookup that
needs it (never for overrides). ``calc_price`` runs about 5,000-20,000 calls/s (50-200 us each), so
:class:`PriceBook` prices from cached per-million-token prices (microseconds) for models whose
genai-prices entry is a flat price for input/output/cache tokens only; it falls back to ``calc_price``
for everything else: prices tiered by prompt size, prices that change with date or time of day,
per-request fees, separately priced reasoning tokens and other units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import TYPE_CHECKING

from routerlab.errors import ConfigError, PricingError
from routerlab.types import Usage

if TYPE_CHECKING:
    from genai_prices import types as gp_types
    from genai_prices.data_snapshot import DataSnapshot

__all__ = [
    "ModelPrice",
    "PriceBook",
    "PriceOverride",
    "cost_usd",
    "lookup_price",
    "price_source_version",
]

_MTOK = Decimal(1_000_000)

# genai-prices price keys that PriceBook's fast path prices exactly like calc_price does, given the
# usage keys we report: the four token prices, plus units we never report (their count is 0 and they
# do not change how input/cache tokens split).
_FAST_PATH_PRICE_KEYS = frozenset(
    {
        "input_mtok",
        "output_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "cache_write_5m_mtok",
        "cache_write_1h_mtok",
        "web_searches_kcount",
        "storage_searches_kcount",
    }
)


def _as_price(name: str, value: object, *, optional: bool) -> Decimal | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        raise ConfigError(f"Price override field '{name}' must be a number of USD per million tokens, got {value!r}.")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"Price override field '{name}' must be finite, got {value!r}.")
        value = repr(value)  # 0.15 -> Decimal('0.15'), not the binary float's expansion
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise ConfigError(
            f"Price override field '{name}' must be a number of USD per million tokens, got {value!r}."
        ) from None
    if not price.is_finite() or price < 0:
        raise ConfigError(f"Price override field '{name}' must be a finite price >= 0, got {value!r}.")
    return price


@dataclass(frozen=True)
class PriceOverride:
    """Prices a tier's config sets for its model, in USD per million tokens; they win over genai-prices.

    A missing cache price means cache tokens cost the same as plain input tokens. Values given as
    ``int``, ``str`` or ``float`` are converted to ``Decimal`` (a float via its shortest repr).
    """

    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cache_read_usd_per_mtok: Decimal | None = None  # None -> same as input price
    cache_write_usd_per_mtok: Decimal | None = None  # None -> same as input price

    def __post_init__(self) -> None:
        for name in ("input_usd_per_mtok", "output_usd_per_mtok"):
            object.__setattr__(self, name, _as_price(name, getattr(self, name), optional=False))
        for name in ("cache_read_usd_per_mtok", "cache_write_usd_per_mtok"):
            object.__setattr__(self, name, _as_price(name, getattr(self, name), optional=True))


@dataclass(frozen=True)
class ModelPrice:
    """The per-million-token prices used for a model (for worst-case estimates and reports).

    Cache prices are the effective ones: the input price where the model has no cache price. For a
    genai-prices entry tiered by prompt size, each field holds its highest tier (an upper bound); costs
    of such models are still computed tier-exactly by ``calc_price``.
    """

    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cache_read_usd_per_mtok: Decimal
    cache_write_usd_per_mtok: Decimal
    source: str  # e.g. "genai-prices 0.2.3: openai/gpt-4o-mini" or "override"


# --------------------------------------------------------------------------- genai-prices access


@cache
def _snapshot() -> DataSnapshot:
    """Our own snapshot of the bundled data: immune to ``UpdatePrices``/``set_custom_snapshot``."""
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


@cache
def price_source_version() -> str:
    """Where genai-based prices come from, e.g. ``"genai-prices 0.2.3"``."""
    from genai_prices import __version__

    return f"genai-prices {__version__}"


def _unknown(model: str, provider: str | None, why: str) -> PricingError:
    where = f"provider '{provider}'" if provider else "provider not given"
    return PricingError(
        f"No price known for model '{model}' ({where}) in {price_source_version()} bundled data: {why}. "
        "routerlab never prices a call as $0; add a `price` override (input_usd_per_mtok, "
        "output_usd_per_mtok and optionally cache_read_usd_per_mtok, cache_write_usd_per_mtok) to "
        "this tier's config."
    )


def _resolve(model: str, provider: str | None) -> tuple[gp_types.Provider, gp_types.ModelInfo]:
    try:
        return _snapshot().find_provider_model(model, None, provider, None)
    except LookupError as exc:
        raise _unknown(model, provider, str(exc)) from None


def _top(value: Decimal | gp_types.TieredPrices | None) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    return max([value.base, *(tier.price for tier in value.tiers)])


def _model_price_from(
    model: str,
    provider: str | None,
    gp_provider: gp_types.Provider,
    info: gp_types.ModelInfo,
    prices: gp_types.ModelPrice,
) -> ModelPrice:
    input_price = _top(prices.input_mtok)
    output_price = _top(prices.output_mtok)
    if input_price is None or output_price is None:
        missing = "input" if input_price is None else "output"
        raise _unknown(model, provider, f"{gp_provider.id}/{info.id} has no {missing} token price")
    cache_read = _top(prices.cache_read_mtok)
    cache_write = _top(prices.cache_write_mtok)
    return ModelPrice(
        input_usd_per_mtok=input_price,
        output_usd_per_mtok=output_price,
        cache_read_usd_per_mtok=input_price if cache_read is None else cache_read,
        cache_write_usd_per_mtok=input_price if cache_write is None else cache_write,
        source=f"{price_source_version()}: {gp_provider.id}/{info.id}",
    )


def _override_price(override: PriceOverride) -> ModelPrice:
    inp = override.input_usd_per_mtok
    return ModelPrice(
        input_usd_per_mtok=inp,
        output_usd_per_mtok=override.output_usd_per_mtok,
        cache_read_usd_per_mtok=inp if override.cache_read_usd_per_mtok is None else override.cache_read_usd_per_mtok,
        cache_write_usd_per_mtok=inp
        if override.cache_write_usd_per_mtok is None
        else override.cache_write_usd_per_mtok,
        source="override",
    )


def _check_usage(usage: Usage, model: str) -> None:
    u = usage
    if (
        type(u.input_tokens) is int
        and type(u.output_tokens) is int
        and type(u.cache_read_tokens) is int
        and type(u.cache_write_tokens) is int
        and type(u.reasoning_tokens) is int
        and min(u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, u.reasoning_tokens) >= 0
        and u.cache_read_tokens + u.cache_write_tokens <= u.input_tokens
        and u.reasoning_tokens <= u.output_tokens
    ):
        return  # the common case, checked without building anything
    counts = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise PricingError(f"Cannot price usage of model '{model}': {name} must be an int >= 0, got {count!r}.")
    if usage.cache_read_tokens + usage.cache_write_tokens > usage.input_tokens:
        raise PricingError(
            f"Cannot price usage of model '{model}': cache_read_tokens ({usage.cache_read_tokens}) + "
            f"cache_write_tokens ({usage.cache_write_tokens}) exceed input_tokens ({usage.input_tokens}), "
            "which must include them."
        )
    if usage.reasoning_tokens > usage.output_tokens:
        raise PricingError(
            f"Cannot price usage of model '{model}': reasoning_tokens ({usage.reasoning_tokens}) exceed "
            f"output_tokens ({usage.output_tokens}), which must include them."
        )


def _cost_from_price(usage: Usage, price: ModelPrice) -> Decimal:
    """The cost at flat per-million-token prices; each part computed as genai-prices does."""
    plain_input = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    return (
        price.input_usd_per_mtok * plain_input / _MTOK
        + price.cache_read_usd_per_mtok * usage.cache_read_tokens / _MTOK
        + price.cache_write_usd_per_mtok * usage.cache_write_tokens / _MTOK
        + price.output_usd_per_mtok * usage.output_tokens / _MTOK
    )


def _calc_price(usage: Usage, model: str, provider: str | None) -> Decimal:
    """The reference path: genai-prices' own calculation on the bundled data."""
    from genai_prices import Usage as GpUsage

    gp_usage = GpUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_reasoning_tokens=usage.reasoning_tokens,
    )
    gp_provider, info = _resolve(model, provider)
    now = datetime.now(tz=UTC)
    # Refuse a model genai-prices knows but has no token prices for (it would price it as $0).
    _model_price_from(model, provider, gp_provider, info, info.get_prices(now))
    try:
        result = _snapshot().calc(gp_usage, model, provider, None, now)
    except (LookupError, ValueError) as exc:
        raise PricingError(
            f"genai-prices could not price usage of model '{model}' ({gp_provider.id}/{info.id}): {exc}"
        ) from exc
    return result.total_price


# --------------------------------------------------------------------------- public functions


def lookup_price(model: str, *, provider: str | None = None, override: PriceOverride | None = None) -> ModelPrice:
    """The per-million-token prices for ``model``: ``override`` if given, else genai-prices' (today's).

    ``provider`` is a genai-prices provider id (``"openai"``, ``"anthropic"``, ``"together"``, ...); if
    ``None`` genai-prices guesses it from the model name. Raises :class:`PricingError` for an unknown
    model or provider.
    """
    if override is not None:
        return _override_price(override)
    gp_provider, info = _resolve(model, provider)
    return _model_price_from(model, provider, gp_provider, info, info.get_prices(datetime.now(tz=UTC)))


def cost_usd(
    usage: Usage,
    model: str,
    *,
    provider: str | None = None,
    override: PriceOverride | None = None,
) -> Decimal:
    """The exact cost of ``usage`` in USD.

    With ``override``: plain input, cache-read, cache-write and output tokens each at their price.
    Else genai-prices' ``calc_price`` on the bundled data (tiers, dated prices and all).
    """
    _check_usage(usage, model)
    if override is not None:
        return _cost_from_price(usage, _override_price(override))
    return _calc_price(usage, model, provider)


# --------------------------------------------------------------------------- PriceBook


@dataclass(frozen=True)
class _Entry:
    price: ModelPrice
    fast: bool  # True: cost from ``price`` is exactly calc_price's; False: call calc_price


class PriceBook:
    """Cached price lookups per ``(model, provider, override)`` for the router's hot path.

    ``cost_usd`` equals the module-level :func:`cost_usd` exactly; for models with flat token prices
    it is computed from the cached prices instead of calling ``calc_price``.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str | None, PriceOverride | None], _Entry] = {}

    def _entry(self, model: str, provider: str | None, override: PriceOverride | None) -> _Entry:
        key = (model, provider, override)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._build(model, provider, override)
            self._entries[key] = entry
        return entry

    @staticmethod
    def _build(model: str, provider: str | None, override: PriceOverride | None) -> _Entry:
        if override is not None:
            return _Entry(_override_price(override), fast=True)
        from genai_prices.types import ModelPrice as GpModelPrice

        gp_provider, info = _resolve(model, provider)
        prices = info.get_prices(datetime.now(tz=UTC))
        price = _model_price_from(model, provider, gp_provider, info, prices)
        keys = {k: v for k, v in prices.__dict__.items() if not k.startswith("_") and v is not None}
        fast = (
            isinstance(info.prices, GpModelPrice)  # not dated / time-of-day prices
            and keys.keys() <= _FAST_PATH_PRICE_KEYS
            and all(isinstance(v, Decimal) for v in keys.values())  # not tiered
        )
        return _Entry(price, fast=fast)

    def price(
        self,
        model: str,
        *,
        provider: str | None = None,
        override: PriceOverride | None = None,
    ) -> ModelPrice:
        """Like :func:`lookup_price`, cached."""
        return self._entry(model, provider, override).price

    def cost_usd(
        self,
        usage: Usage,
        model: str,
        *,
        provider: str | None = None,
        override: PriceOverride | None = None,
    ) -> Decimal:
        """Like :func:`cost_usd` (identical results), cached."""
        entry = self._entry(model, provider, override)
        _check_usage(usage, model)
        if entry.fast:
            return _cost_from_price(usage, entry.price)
        return _calc_price(usage, model, provider)

    def worst_case_cost_usd(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        model: str,
        provider: str | None = None,
        override: PriceOverride | None = None,
        cache_writes: bool = False,
    ) -> Decimal:
        """The cost of a call with no cache discount: all input at the input price, plus output.

        With ``cache_writes`` (the request asks for prompt caching), the input is priced at the higher
        of the input and cache-write prices (cache writes cost 1.25x input at Anthropic). A model whose
        prices are tiered by prompt size is priced at the tier ``input_tokens`` selects.
        """
        plain = self.cost_usd(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens), model, provider=provider, override=override
        )
        if not cache_writes:
            return plain
        written = self.cost_usd(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_write_tokens=input_tokens),
            model,
            provider=provider,
            override=override,
        )
        return max(plain, written)
