"""Tests for routerlab.pricing (offline: genai-prices' bundled data only)."""

from __future__ import annotations

import importlib.metadata
import socket
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from routerlab.errors import ConfigError, PricingError
from routerlab.pricing import (
    ModelPrice,
    PriceBook,
    PriceOverride,
    cost_usd,
    lookup_price,
    price_source_version,
)
from routerlab.types import Usage

ROOT = Path(__file__).resolve().parents[1]
# the installed release (pyproject admits any 0.2.x from 0.2.3): the source string names it, whichever it is
GP = f"genai-prices {importlib.metadata.version('genai-prices')}"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# (provider, model, input USD/MTok, output USD/MTok) from genai-prices 0.2.3 (unchanged in 0.2.5)
FACTS = [
    ("openai", "gpt-4o-mini-2024-07-18", "0.15", "0.60"),
    ("openai", "gpt-4o-2024-05-13", "5", "15"),
    ("openai", "gpt-4-1106-preview", "10", "30"),
    ("openai", "gpt-4", "30", "60"),
    ("openai", "gpt-4-0314", "30", "60"),
    ("openai", "gpt-3.5-turbo", "0.5", "1.5"),
    ("openai", "gpt-3.5-turbo-1106", "1", "2"),
    ("anthropic", "claude-3-opus-20240229", "15", "75"),
    ("anthropic", "claude-3-5-sonnet-20240620", "3", "15"),
    ("anthropic", "claude-2.1", "8", "24"),
    ("together", "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", "0.18", "0.18"),
    ("together", "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo", "0.88", "0.88"),
    ("together", "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo", "3.5", "3.5"),
    ("together", "mistralai/Mixtral-8x7B-Instruct-v0.1", "0.9", "0.9"),
    ("together", "mistralai/Mistral-7B-Instruct-v0.1", "0.2", "0.2"),
    ("together", "meta-llama/Llama-2-13b-chat-hf", "0.225", "0.225"),
]

USAGES = [
    Usage(),
    Usage(input_tokens=1),
    Usage(input_tokens=1_234, output_tokens=567),
    Usage(
        input_tokens=10_000,
        cache_read_tokens=6_000,
        cache_write_tokens=2_000,
        output_tokens=1_000,
    ),
    Usage(input_tokens=5_000, cache_read_tokens=5_000, output_tokens=3, reasoning_tokens=2),
    Usage(input_tokens=7_777, cache_write_tokens=7_000, output_tokens=0),
    Usage(
        input_tokens=250_000,
        cache_read_tokens=100_000,
        cache_write_tokens=20_000,
        output_tokens=4_321,
    ),
]


def test_price_source_version() -> None:
    assert price_source_version() == GP


@pytest.mark.parametrize(("provider", "model", "inp", "out"), FACTS)
def test_known_prices(provider: str, model: str, inp: str, out: str) -> None:
    book = PriceBook()
    million_in = Usage(input_tokens=1_000_000, output_tokens=0)
    million_out = Usage(input_tokens=0, output_tokens=1_000_000)
    assert cost_usd(million_in, model, provider=provider) == Decimal(inp)
    assert cost_usd(million_out, model, provider=provider) == Decimal(out)
    assert book.cost_usd(million_in, model, provider=provider) == Decimal(inp)
    assert book.cost_usd(million_out, model, provider=provider) == Decimal(out)
    price = lookup_price(model, provider=provider)
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok) == (
        Decimal(inp),
        Decimal(out),
    )
    assert price.source.startswith(f"{GP}: ")
    assert book.price(model, provider=provider) == price


def test_source_names_provider_and_model() -> None:
    assert lookup_price("gpt-4o-mini-2024-07-18", provider="openai").source == f"{GP}: openai/gpt-4o-mini"


def test_result_type_is_decimal() -> None:
    usage = Usage(input_tokens=123, output_tokens=45)
    assert type(cost_usd(usage, "gpt-4o-mini", provider="openai")) is Decimal
    assert type(PriceBook().cost_usd(usage, "gpt-4o-mini", provider="openai")) is Decimal
    override = PriceOverride(input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(2))
    assert type(cost_usd(usage, "anything", override=override)) is Decimal
    assert type(PriceBook().worst_case_cost_usd(input_tokens=1, output_tokens=1, model="gpt-4")) is Decimal


def test_openai_cached_tokens() -> None:
    # gpt-4o: input 2.5, cache read 1.25, output 10 USD/MTok; no cache-write price (-> input price)
    price = lookup_price("gpt-4o", provider="openai")
    assert price.cache_read_usd_per_mtok == Decimal("1.25") < price.input_usd_per_mtok == Decimal("2.5")
    assert price.cache_write_usd_per_mtok == Decimal("2.5")
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=500)
    # 6_000 * 2.5 + 4_000 * 1.25 + 500 * 10 = 15_000 + 5_000 + 5_000 micro-USD
    expected = Decimal("0.025")
    assert cost_usd(usage, "gpt-4o", provider="openai") == expected
    assert PriceBook().cost_usd(usage, "gpt-4o", provider="openai") == expected


def test_anthropic_cached_tokens() -> None:
    # claude-3-5-sonnet: input 3, cache write 3.75, cache read 0.3, output 15 USD/MTok
    model = "claude-3-5-sonnet-20240620"
    price = lookup_price(model, provider="anthropic")
    assert price.cache_write_usd_per_mtok == Decimal("3.75") > price.input_usd_per_mtok == Decimal(3)
    assert price.cache_read_usd_per_mtok == Decimal("0.3")
    usage = Usage(
        input_tokens=10_000,
        cache_read_tokens=6_000,
        cache_write_tokens=2_000,
        output_tokens=1_000,
    )
    # 2_000 * 3 + 6_000 * 0.3 + 2_000 * 3.75 + 1_000 * 15 = 6_000 + 1_800 + 7_500 + 15_000 micro-USD
    expected = Decimal("0.0303")
    assert cost_usd(usage, model, provider="anthropic") == expected
    assert PriceBook().cost_usd(usage, model, provider="anthropic") == expected


def test_cache_reads_without_cache_price_cost_input_price() -> None:
    usage = Usage(input_tokens=1_000_000, cache_read_tokens=400_000)
    assert cost_usd(usage, "gpt-3.5-turbo", provider="openai") == Decimal("0.5")
    assert PriceBook().cost_usd(usage, "gpt-3.5-turbo", provider="openai") == Decimal("0.5")


OVERRIDE = PriceOverride(
    input_usd_per_mtok=Decimal(2),
    output_usd_per_mtok=Decimal(8),
    cache_read_usd_per_mtok=Decimal("0.5"),
)
OVERRIDE_USAGE = Usage(
    input_tokens=1_000_000,
    cache_read_tokens=400_000,
    cache_write_tokens=100_000,
    output_tokens=250_000,
)


@pytest.mark.parametrize(("model", "provider"), [("my-local-model", None), ("gpt-4o", "openai")])
def test_override(model: str, provider: str | None) -> None:
    # 500_000 * 2 + 400_000 * 0.5 + 100_000 * 2 (write: input price) + 250_000 * 8 = 1 + 0.2 + 0.2 + 2
    expected = Decimal("3.4")
    assert cost_usd(OVERRIDE_USAGE, model, provider=provider, override=OVERRIDE) == expected
    assert PriceBook().cost_usd(OVERRIDE_USAGE, model, provider=provider, override=OVERRIDE) == expected
    price = lookup_price(model, provider=provider, override=OVERRIDE)
    assert price == ModelPrice(Decimal(2), Decimal(8), Decimal("0.5"), Decimal(2), "override")


def test_override_cache_write_price() -> None:
    override = PriceOverride(
        input_usd_per_mtok=Decimal(1),
        output_usd_per_mtok=Decimal(1),
        cache_read_usd_per_mtok=Decimal("0.1"),
        cache_write_usd_per_mtok=Decimal("1.25"),
    )
    usage = Usage(
        input_tokens=1_000,
        cache_read_tokens=100,
        cache_write_tokens=800,
        output_tokens=10,
    )
    # 100 * 1 + 100 * 0.1 + 800 * 1.25 + 10 * 1 = 100 + 10 + 1000 + 10 micro-USD
    assert cost_usd(usage, "m", override=override) == Decimal("0.00112")


def test_override_coerces_and_validates() -> None:
    override = PriceOverride(input_usd_per_mtok=0.15, output_usd_per_mtok="0.6")  # type: ignore[arg-type]
    assert override.input_usd_per_mtok == Decimal("0.15")
    assert override.output_usd_per_mtok == Decimal("0.6")
    with pytest.raises(ConfigError, match="input_usd_per_mtok"):
        PriceOverride(input_usd_per_mtok=Decimal(-1), output_usd_per_mtok=Decimal(1))
    with pytest.raises(ConfigError, match="cache_read_usd_per_mtok"):
        PriceOverride(Decimal(1), Decimal(1), cache_read_usd_per_mtok="abc")  # type: ignore[arg-type]


def test_unknown_model_raises() -> None:
    with pytest.raises(PricingError) as info:
        cost_usd(Usage(input_tokens=10), "claude-instant-1", provider="anthropic")
    message = str(info.value)
    assert "claude-instant-1" in message and "anthropic" in message and "override" in message
    with pytest.raises(PricingError, match="claude-instant-1"):
        lookup_price("claude-instant-1", provider="anthropic")
    with pytest.raises(PricingError, match="claude-instant-1"):
        PriceBook().cost_usd(Usage(), "claude-instant-1", provider="anthropic")
    with pytest.raises(PricingError, match="claude-instant-1"):
        PriceBook().worst_case_cost_usd(input_tokens=1, output_tokens=1, model="claude-instant-1")


def test_unknown_provider_raises() -> None:
    with pytest.raises(PricingError, match="no-such-provider") as info:
        lookup_price("gpt-4o", provider="no-such-provider")
    assert "gpt-4o" in str(info.value)


def test_inconsistent_usage_raises() -> None:
    bad = Usage(input_tokens=10, cache_read_tokens=8, cache_write_tokens=8)
    with pytest.raises(PricingError, match="exceed input_tokens"):
        cost_usd(bad, "gpt-4o", provider="openai")
    with pytest.raises(PricingError, match="exceed input_tokens"):
        PriceBook().cost_usd(bad, "gpt-4o", provider="openai")
    with pytest.raises(PricingError, match="exceed input_tokens"):
        cost_usd(bad, "m", override=OVERRIDE)


def _facts_and_specials() -> list[tuple[str | None, str]]:
    return [(provider, model) for provider, model, _, _ in FACTS] + [
        ("openai", "gpt-4o"),
        (None, "gpt-4o-mini"),  # provider guessed from the name
        ("anthropic", "claude-sonnet-4-5"),  # tiered by prompt size
        ("anthropic", "claude-sonnet-4-6"),  # dated prices
        ("openai", "o3"),  # dated prices
        ("perplexity", "sonar"),  # per-request fee
        ("perplexity", "sonar-deep-research"),  # reasoning tokens priced separately
    ]


@pytest.mark.parametrize(("provider", "model"), _facts_and_specials())
def test_price_book_matches_cost_usd(provider: str | None, model: str) -> None:
    book = PriceBook()
    for usage in USAGES:
        assert book.cost_usd(usage, model, provider=provider) == cost_usd(usage, model, provider=provider)
        assert book.cost_usd(usage, model, provider=provider, override=OVERRIDE) == cost_usd(
            usage, model, provider=provider, override=OVERRIDE
        )


def test_price_book_fast_path_matches_calc_price_for_all_bundled_models() -> None:
    """Every bundled model the fast path takes prices exactly like genai-prices' calc_price."""
    from genai_prices.data import providers

    book = PriceBook()
    fast = 0
    for gp_provider in providers:
        for info in gp_provider.models:
            try:
                entry = book._entry(info.id, gp_provider.id, None)
            except PricingError:
                continue  # no token price, or the id does not match its own model
            if not entry.fast:
                continue
            fast += 1
            for usage in USAGES:
                assert book.cost_usd(usage, info.id, provider=gp_provider.id) == cost_usd(
                    usage, info.id, provider=gp_provider.id
                ), (
                    gp_provider.id,
                    info.id,
                    usage,
                )
    assert fast > 500


def test_tiered_model() -> None:
    # claude-sonnet-4-5: 3 / 0.3 / 3.75 / 15 USD/MTok; above 200k input tokens 6 / 0.6 / 7.5 / 22.5 (all tokens)
    model, provider = "claude-sonnet-4-5", "anthropic"
    book = PriceBook()
    small = Usage(input_tokens=100_000, output_tokens=1_000)
    large = Usage(input_tokens=300_000, cache_read_tokens=100_000, output_tokens=1_000)
    assert cost_usd(small, model, provider=provider) == Decimal("0.315")
    # 200_000 * 6 + 100_000 * 0.6 + 1_000 * 22.5 micro-USD
    assert cost_usd(large, model, provider=provider) == Decimal("1.2825")
    assert book.cost_usd(large, model, provider=provider) == Decimal("1.2825")
    assert book.worst_case_cost_usd(
        input_tokens=300_000, output_tokens=1_000, model=model, provider=provider
    ) == Decimal("1.8225")
    price = book.price(model, provider=provider)  # highest tier: an upper bound
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok) == (
        Decimal(6),
        Decimal("22.5"),
    )


def test_worst_case_bounds_cost_with_cache_reads() -> None:
    book = PriceBook()
    for provider, model in [
        ("openai", "gpt-4o"),
        ("anthropic", "claude-3-5-sonnet-20240620"),
    ]:
        usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=500)
        worst = book.worst_case_cost_usd(input_tokens=10_000, output_tokens=500, model=model, provider=provider)
        assert worst >= book.cost_usd(usage, model, provider=provider)
        assert worst == cost_usd(Usage(input_tokens=10_000, output_tokens=500), model, provider=provider)
    # gpt-4o: 10_000 * 2.5 + 500 * 10 micro-USD
    assert book.worst_case_cost_usd(
        input_tokens=10_000, output_tokens=500, model="gpt-4o", provider="openai"
    ) == Decimal("0.03")
    assert book.worst_case_cost_usd(
        input_tokens=1_000_000, output_tokens=250_000, model="m", override=OVERRIDE
    ) == Decimal(4)


def test_price_book_caches() -> None:
    book = PriceBook()
    first = book.price("gpt-4o", provider="openai")
    assert book.price("gpt-4o", provider="openai") is first
    assert book.price("gpt-4o", provider="openai", override=OVERRIDE).source == "override"


@pytest.fixture
def _remote_snapshot() -> Iterator[None]:
    """Simulate another library having installed auto-updated (here: empty) prices."""
    from genai_prices import data_snapshot

    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers=[], from_auto_update=True))
    try:
        yield
    finally:
        data_snapshot.set_custom_snapshot(None)


@pytest.mark.usefixtures("_remote_snapshot")
def test_only_bundled_data_is_used() -> None:
    from genai_prices import Usage as GpUsage
    from genai_prices import calc_price

    with pytest.raises(LookupError):  # genai-prices' global snapshot is now the "remote" one
        calc_price(GpUsage(input_tokens=1), "gpt-4o", provider_id="openai")
    usage = Usage(input_tokens=1_000_000)
    assert cost_usd(usage, "gpt-4o", provider="openai") == Decimal("2.5")
    assert PriceBook().cost_usd(usage, "claude-2.1", provider="anthropic") == Decimal(8)


def test_import_is_lazy() -> None:
    code = (
        "import sys\n"
        "from decimal import Decimal\n"
        "from routerlab.pricing import PriceBook, PriceOverride, cost_usd\n"
        "from routerlab.types import Usage\n"
        "o = PriceOverride(Decimal(1), Decimal(2))\n"
        "assert cost_usd(Usage(input_tokens=1_000_000), 'm', override=o) == 1\n"
        "assert PriceBook().worst_case_cost_usd(input_tokens=0, output_tokens=10**6, model='m', override=o) == 2\n"
        "assert 'genai_prices' not in sys.modules, 'genai_prices imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
