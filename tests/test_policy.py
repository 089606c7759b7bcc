"""Tests for routerlab.policy: reading, validating, writing and hot-reloading policy files."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from routerlab.breaker import BreakerSettings
from routerlab.classifier import DEFAULT_COMPLEX_PATTERNS, DEFAULT_SIMPLE_PATTERNS, ClassifierSettings
from routerlab.consistency import DEFAULT_ANSWER_PATTERN
from routerlab.errors import ConfigError, ModelMismatchError, PolicyError
from routerlab.policy import (
    ClassRoute,
    ConfidenceSettings,
    PolicyHolder,
    RouterPolicy,
    Tier,
    dump_policy,
    load_policy,
    policy_from_dict,
    policy_to_dict,
)
from routerlab.pricing import PriceOverride

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "policies" / "example.json"
EXAMPLE_MODELS = ("gpt-4o-mini", "claude-3-5-sonnet-20240620", "gpt-4o")


def example_dict() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return data


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def policy_error(data: Any) -> PolicyError:
    with pytest.raises(PolicyError) as ei:
        policy_from_dict(data)
    return ei.value


def only_file(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- the example file


def test_load_example_policy() -> None:
    p = load_policy(EXAMPLE)
    assert p.name == "example"
    assert p.schema_version == 1
    assert [t.name for t in p.tiers] == ["cheap", "mid", "premium"]
    assert tuple(t.model for t in p.tiers) == EXAMPLE_MODELS
    assert [t.provider for t in p.tiers] == ["openai", "anthropic", "openai"]
    cheap, mid, premium = p.tiers
    assert cheap.base_url == "https://api.openai.com/v1" and cheap.api_key_env == "OPENAI_API_KEY"
    assert (cheap.timeout_s, cheap.max_tokens, cheap.temperature) == (8.0, 512, 0.0)
    assert isinstance(cheap.timeout_s, float)
    assert (mid.timeout_s, premium.timeout_s) == (15.0, 30.0)
    assert cheap.supports_n and not mid.supports_n and premium.supports_n
    assert mid.price_provider == "anthropic" and cheap.price_provider is None
    assert cheap.price is None and cheap.supports_n is True  # the provider default, resolved on load
    assert dict(p.routing) == {
        "simple": ClassRoute(start_tier=0, max_tokens=512),
        "medium": ClassRoute(start_tier=0, max_tokens=None),
        "complex": ClassRoute(start_tier=1, max_tokens=None),
    }
    c = p.confidence
    assert (c.signal, c.k, c.similarity, c.temperature) == ("consistency", 2, "difflib", 0.7)
    assert c.classes == ("simple", "medium", "complex")
    assert c.thresholds == (0.75, 0.75)
    assert c.logprob_thresholds == (-0.5, -0.5)  # default, one per non-final tier
    assert c.answer_pattern == DEFAULT_ANSWER_PATTERN
    assert p.cascade is True
    assert p.max_cost_per_query_usd == Decimal("0.05") and isinstance(p.max_cost_per_query_usd, Decimal)
    assert p.breaker == BreakerSettings(failure_threshold=5, window_s=60.0, recovery_s=60.0)
    assert p.classifier == ClassifierSettings()
    assert dict(p.provenance) == {}
    assert p.tier_index("mid") == 1
    with pytest.raises(KeyError):
        p.tier_index("nope")
    assert p.confidence.thresholds[1] == 0.75


def test_sections_default_when_left_out() -> None:
    d = {"schema_version": 1, "tiers": example_dict()["tiers"][:2]}
    p = policy_from_dict(d)
    assert p.name == ""
    assert all(p.routing[c] == ClassRoute() for c in ("simple", "medium", "complex"))
    assert p.confidence.thresholds == (0.75,) and p.confidence.logprob_thresholds == (-0.5,)
    assert p.confidence == ConfidenceSettings(thresholds=(0.75,), logprob_thresholds=(-0.5,))
    assert p.cascade is True and p.max_cost_per_query_usd is None
    assert p.breaker == BreakerSettings() and p.classifier == ClassifierSettings()
    assert p.classifier.simple_patterns == DEFAULT_SIMPLE_PATTERNS
    assert p.classifier.complex_patterns == DEFAULT_COMPLEX_PATTERNS


def roundtrip(p: RouterPolicy, folder: Path) -> RouterPolicy:
    """dump -> load is the identity and dump(load(dump(p))) is byte-identical to dump(p)."""
    first, second = folder / "first.json", folder / "second.json"
    dump_policy(p, first)
    q = load_policy(first)
    assert q == p
    assert policy_to_dict(q) == policy_to_dict(p)
    assert hash(q) == hash(p)
    dump_policy(q, second)
    assert second.read_bytes() == first.read_bytes()
    assert first.read_bytes().endswith(b"}\n")
    return q


def test_example_roundtrip_is_identity(tmp_path: Path) -> None:
    p = load_policy(EXAMPLE)
    q = roundtrip(p, tmp_path)
    assert q.tiers == p.tiers and dict(q.routing) == dict(p.routing)
    assert q.confidence == p.confidence and q.breaker == p.breaker and q.classifier == p.classifier
    dumped = json.loads((tmp_path / "first.json").read_text(encoding="utf-8"))
    assert dumped["max_cost_per_query_usd"] == "0.05"  # Decimals are written as strings
    assert dumped["schema_version"] == 1


def rich_dict() -> dict[str, Any]:
    d = example_dict()
    d["name"] = "support-bot ✓"
    d["tiers"][0]["price"] = {
        "input_usd_per_mtok": "0.15",
        "output_usd_per_mtok": "0.60",
        "cache_read_usd_per_mtok": "0.075",
        "cache_write_usd_per_mtok": "0.1875",
    }
    d["tiers"][0]["supports_n"] = True
    d["tiers"][1]["price"] = {"input_usd_per_mtok": 3, "output_usd_per_mtok": 15.5}
    d["tiers"][1]["supports_n"] = False
    d["tiers"][1]["temperature"] = None
    d["tiers"][2]["price_provider"] = "openai"
    del d["tiers"][2]["api_key_env"]
    d["provenance"] = {
        "tuned_on": "2024-07-01T12:00:00Z",
        "tier_models": list(EXAMPLE_MODELS),
        "sweep": {"grid": {"k": [2, 3], "thresholds": [[0.6, 0.7], [0.8, 0.9]]}, "best": {"cost": "0.0123"}},
        "notes": ["naïve", None, True, 1.5],
    }
    d["classifier"] = {
        "simple_patterns": [r"\bping\b", r"^(yes|no)\?$"],
        "complex_patterns": [r"\bprove\b", r"(?i)théorème"],
        "complex_min_words": 80,
        "simple_max_words": 10,
    }
    d["confidence"].update(
        {"similarity": "answer", "k": 3, "classes": ["medium"], "answer_pattern": r"(?m)^RESULT: (?P<answer>.+)$"}
    )
    d["routing"]["medium"]["max_tokens"] = 300
    d["breaker"] = {"failure_threshold": 2, "window_s": 12.5, "recovery_s": 90}
    d["cascade"] = False
    return d


@pytest.mark.parametrize("cap", [None, "0", "0.05", "12.3400", 1, 0.25, "1E-7"])
def test_roundtrip_rich_policy(tmp_path: Path, cap: Any) -> None:
    d = rich_dict()
    d["max_cost_per_query_usd"] = cap
    p = policy_from_dict(d)
    q = roundtrip(p, tmp_path)
    assert q.max_cost_per_query_usd == (None if cap is None else Decimal(str(cap)))
    t0, t1, t2 = q.tiers
    assert t0.price == PriceOverride(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"), Decimal("0.1875"))
    assert t1.price == PriceOverride(Decimal("3"), Decimal("15.5"))
    assert t1.price is not None and t1.price.cache_read_usd_per_mtok is None
    assert t0.supports_n is True and t1.supports_n is False and t2.supports_n is True  # unset: openai default
    assert t1.temperature is None
    assert t2.api_key_env is None and t2.price_provider == "openai"
    assert q.provenance["sweep"] == {
        "grid": {"k": [2, 3], "thresholds": [[0.6, 0.7], [0.8, 0.9]]},
        "best": {"cost": "0.0123"},
    }
    assert q.provenance["notes"] == ["naïve", None, True, 1.5]
    assert q.classifier == ClassifierSettings(
        simple_patterns=(r"\bping\b", r"^(yes|no)\?$"),
        complex_patterns=(r"\bprove\b", r"(?i)théorème"),
        complex_min_words=80,
        simple_max_words=10,
    )
    assert q.confidence.classes == ("medium",) and q.confidence.k == 3
    assert q.confidence.answer_pattern == r"(?m)^RESULT: (?P<answer>.+)$"
    assert q.routing["medium"] == ClassRoute(0, 300)
    assert q.breaker == BreakerSettings(2, 12.5, 90.0)
    assert q.cascade is False and q.name == "support-bot ✓"
    text = (tmp_path / "first.json").read_text(encoding="utf-8")
    assert "support-bot ✓" in text and "naïve" in text  # written as UTF-8, not \u escapes
    dumped = json.loads(text)
    assert dumped["tiers"][0]["price"]["output_usd_per_mtok"] == "0.60"
    assert dumped["tiers"][1]["price"] == {"input_usd_per_mtok": "3", "output_usd_per_mtok": "15.5"}


def test_roundtrip_logprob_signal_with_openai_non_final_tiers(tmp_path: Path) -> None:
    d = example_dict()
    # non-final tiers are openai; the final tier may be anthropic
    d["tiers"] = [d["tiers"][0], d["tiers"][2], d["tiers"][1]]
    d["confidence"] = {"signal": "logprob", "logprob_thresholds": [-0.2, -0.9], "classes": ["simple", "medium"]}
    p = policy_from_dict(d)
    assert [t.provider for t in p.tiers] == ["openai", "openai", "anthropic"]
    assert p.confidence.signal == "logprob"
    assert p.confidence.logprob_thresholds == (-0.2, -0.9)
    roundtrip(p, tmp_path)


def test_equality_and_hash_follow_content() -> None:
    p = load_policy(EXAMPLE)
    d = example_dict()
    assert policy_from_dict(d) == p and hash(policy_from_dict(d)) == hash(p)
    d["confidence"]["thresholds"] = [0.75, 0.8]
    assert policy_from_dict(d) != p
    assert p != "not a policy"
    assert len({p, load_policy(EXAMPLE)}) == 1


def test_policy_built_in_code_roundtrips_and_hashes_like_the_loaded_one(tmp_path: Path) -> None:
    # integers where the reader returns floats: the file must still round-trip byte for byte
    cheap = Tier(name="cheap", provider="openai", model="gpt-4o-mini", base_url="http://localhost:8000/v1", timeout_s=8)
    top = Tier(
        name="top", provider="anthropic", model="claude-3-5-sonnet-20240620", base_url="https://x", temperature=1
    )
    p = RouterPolicy(
        tiers=(cheap, top),
        name="code",
        confidence=ConfidenceSettings(temperature=1, thresholds=(1,), logprob_thresholds=(-2,)),
        breaker=BreakerSettings(failure_threshold=3, window_s=30, recovery_s=120),
        provenance={"tier_models": ["gpt-4o-mini", "claude-3-5-sonnet-20240620"], "cost": Decimal("0.5")},
    )
    q = roundtrip(p, tmp_path)
    assert q.tiers[0].timeout_s == 8.0 and isinstance(q.tiers[0].timeout_s, float)
    assert q.breaker == BreakerSettings(3, 30.0, 120.0) and q.confidence.thresholds == (1.0,)
    assert q.provenance["cost"] == "0.5"
    # equal policies must hash alike (8 in code vs 8.0 from JSON)
    assert q == p and hash(q) == hash(p)
    assert len({p, q}) == 1


@pytest.mark.parametrize("value", [True, "8", None])
def test_policy_built_in_code_with_a_non_number_timeout_raises(value: Any) -> None:
    tier = Tier(name="solo", provider="openai", model="m", base_url="https://x", timeout_s=value)
    with pytest.raises(PolicyError) as ei:
        RouterPolicy(tiers=(tier,))
    assert ei.value.field == "tiers[0].timeout_s"


def test_policy_built_in_code_with_partial_routing_fills_the_other_classes() -> None:
    base = load_policy(EXAMPLE)
    p = dataclasses.replace(base, routing={"complex": ClassRoute(start_tier=2)})
    assert dict(p.routing) == {
        "simple": ClassRoute(),
        "medium": ClassRoute(),
        "complex": ClassRoute(start_tier=2),
    }
    assert list(p.routing) == ["simple", "medium", "complex"]


# ---------------------------------------------------------------- unknown keys

_TOP = (
    "schema_version, name, tiers, routing, confidence, cascade, max_cost_per_query_usd, breaker, classifier, "
    "cost_cap_mode, retries, route_deadline_s, max_response_bytes, provenance"
)
_TIER = (
    "name, provider, model, base_url, api_key_env, timeout_s, max_tokens, temperature, price, price_provider, "
    "supports_n, reasoning, reasoning_effort"
)
_PRICE = "input_usd_per_mtok, output_usd_per_mtok, cache_read_usd_per_mtok, cache_write_usd_per_mtok"
_CONF = (
    "signal, classes, k, similarity, temperature, thresholds, logprob_thresholds, answer_pattern, tiers, escalate_on"
)


def _set_price_extra(d: dict[str, Any]) -> None:
    d["tiers"][0]["price"] = {"input_usd_per_mtok": "1", "output_usd_per_mtok": "2", "foo": "3"}


@pytest.mark.parametrize(
    ("mutate", "field", "allowed"),
    [
        (lambda d: d.update(foo=1), "foo", _TOP),
        (lambda d: d["tiers"][1].update(foo=1), "tiers[1].foo", _TIER),
        (_set_price_extra, "tiers[0].price.foo", _PRICE),
        (lambda d: d["routing"].update(trivial={"start_tier": 0}), "routing.trivial", "simple, medium, complex"),
        (lambda d: d["routing"]["medium"].update(foo=1), "routing.medium.foo", "start_tier, max_tokens"),
        (lambda d: d["confidence"].update(bogus=1), "confidence.bogus", _CONF),
        (lambda d: d["breaker"].update(foo=1), "breaker.foo", "failure_threshold, window_s, recovery_s, disable_s"),
        (
            lambda d: d.update(classifier={"foo": 1}),
            "classifier.foo",
            "simple_patterns, complex_patterns, complex_min_words, simple_max_words, read",
        ),
    ],
)
def test_unknown_keys_are_rejected_with_dotted_path(
    mutate: Callable[[dict[str, Any]], None], field: str, allowed: str
) -> None:
    d = example_dict()
    mutate(d)
    e = policy_error(d)
    assert e.field == field
    assert e.source is None
    assert "unknown key" in str(e)
    assert f"allowed keys are {allowed}" in str(e)
    assert f"field '{field}'" in str(e)


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    d = example_dict()
    d["confidence"]["bogus"] = True
    path = write_json(tmp_path / "p.json", d)
    with pytest.raises(PolicyError) as ei:
        load_policy(path)
    assert ei.value.field == "confidence.bogus" and ei.value.source == str(path)
    assert str(ei.value).startswith(f"{path}: field 'confidence.bogus': ")


# ---------------------------------------------------------------- out-of-range and malformed values


def _set(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        node: Any = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return mutate


def _dup_names(d: dict[str, Any]) -> None:
    d["tiers"][2]["name"] = "cheap"


def _anthropic_non_final_logprob(d: dict[str, Any]) -> None:
    d["confidence"]["signal"] = "logprob"


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, tuple[str, ...]]] = [
    (
        "threshold 1.5",
        _set("confidence", "thresholds", value=[0.75, 1.5]),
        "confidence.thresholds[1]",
        ("[0.0, 1.0]", "1.5"),
    ),
    (
        "threshold -0.1",
        _set("confidence", "thresholds", value=[-0.1, 0.5]),
        "confidence.thresholds[0]",
        ("[0.0, 1.0]",),
    ),
    ("k=1", _set("confidence", "k", value=1), "confidence.k", ("[2, 16]", "got 1")),
    ("k=17", _set("confidence", "k", value=17), "confidence.k", ("[2, 16]",)),
    ("k float", _set("confidence", "k", value=2.5), "confidence.k", ("must be an integer",)),
    ("timeout 0", _set("tiers", 0, "timeout_s", value=0), "tiers[0].timeout_s", ("(0.0, 3600.0]", "got 0")),
    ("timeout neg", _set("tiers", 1, "timeout_s", value=-5), "tiers[1].timeout_s", ("(0.0, 3600.0]",)),
    ("max_tokens 0", _set("tiers", 0, "max_tokens", value=0), "tiers[0].max_tokens", ("[1, 1000000]", "got 0")),
    ("temperature 3", _set("tiers", 2, "temperature", value=3), "tiers[2].temperature", ("[0.0, 2.0]", "got 3")),
    ("conf temperature 3", _set("confidence", "temperature", value=3), "confidence.temperature", ("[0.0, 2.0]",)),
    (
        "start_tier 3",
        _set("routing", "complex", "start_tier", value=3),
        "routing.complex.start_tier",
        ("[0, 2]", "got 3"),
    ),
    ("start_tier -1", _set("routing", "simple", "start_tier", value=-1), "routing.simple.start_tier", ("[0, 2]",)),
    (
        "route max_tokens 0",
        _set("routing", "simple", "max_tokens", value=0),
        "routing.simple.max_tokens",
        ("[1, 1000000]",),
    ),
    ("negative cap", _set("max_cost_per_query_usd", value="-0.01"), "max_cost_per_query_usd", ("[0, inf)",)),
    ("negative cap number", _set("max_cost_per_query_usd", value=-1), "max_cost_per_query_usd", ("[0, inf)",)),
    ("cap not a number", _set("max_cost_per_query_usd", value="cheap"), "max_cost_per_query_usd", ("decimal number",)),
    ("cap NaN", _set("max_cost_per_query_usd", value="NaN"), "max_cost_per_query_usd", ("[0, inf)",)),
    (
        "negative price",
        _set("tiers", 0, "price", value={"input_usd_per_mtok": "-1", "output_usd_per_mtok": "1"}),
        "tiers[0].price.input_usd_per_mtok",
        ("[0, inf)",),
    ),
    (
        "price missing output",
        _set("tiers", 0, "price", value={"input_usd_per_mtok": "1"}),
        "tiers[0].price.output_usd_per_mtok",
        ("is required",),
    ),
    (
        "thresholds too short",
        _set("confidence", "thresholds", value=[0.5]),
        "confidence.thresholds",
        ("list of 2 numbers", "non-final"),
    ),
    (
        "thresholds too long",
        _set("confidence", "thresholds", value=[0.5, 0.5, 0.5]),
        "confidence.thresholds",
        ("list of 2 numbers",),
    ),
    (
        "thresholds not list",
        _set("confidence", "thresholds", value=0.5),
        "confidence.thresholds",
        ("list of 2 numbers",),
    ),
    (
        "logprob threshold > 0",
        _set("confidence", "logprob_thresholds", value=[0.5, -1]),
        "confidence.logprob_thresholds[0]",
        ("[-1000.0, 0.0]",),
    ),
    (
        "bad provider",
        _set("tiers", 1, "provider", value="azure"),
        "tiers[1].provider",
        ("one of anthropic, openai", "'azure'"),
    ),
    (
        "bad similarity",
        _set("confidence", "similarity", value="cosine"),
        "confidence.similarity",
        ("one of answer, difflib, rougeL", "'cosine'"),
    ),
    ("bad signal", _set("confidence", "signal", value="vibes"), "confidence.signal", ("one of consistency, logprob",)),
    (
        "bad class",
        _set("confidence", "classes", value=["medium", "trivial"]),
        "confidence.classes[1]",
        ("one of simple, medium, complex",),
    ),
    (
        "bad answer regex",
        _set("confidence", "answer_pattern", value="(unclosed"),
        "confidence.answer_pattern",
        ("not a valid regular expression",),
    ),
    (
        "bad classifier regex",
        _set("classifier", value={"complex_patterns": ["ok", "[z-a]"]}),
        "classifier.complex_patterns[1]",
        ("not a valid regular expression",),
    ),
    (
        "classifier min words 0",
        _set("classifier", value={"complex_min_words": 0}),
        "classifier.complex_min_words",
        ("[1, inf]",),
    ),
    (
        "classifier max words -1",
        _set("classifier", value={"simple_max_words": -1}),
        "classifier.simple_max_words",
        ("[0, inf]",),
    ),
    ("schema_version 2", _set("schema_version", value=2), "schema_version", ("must be 1", "got 2")),
    ("schema_version '1'", _set("schema_version", value="1"), "schema_version", ("must be 1",)),
    ("schema_version true", _set("schema_version", value=True), "schema_version", ("must be 1", "got True")),
    ("schema_version 1.0", _set("schema_version", value=1.0), "schema_version", ("must be 1",)),
    ("tiers empty", _set("tiers", value=[]), "tiers", ("non-empty list",)),
    ("tiers not a list", _set("tiers", value={"name": "x"}), "tiers", ("non-empty list",)),
    ("tier not an object", _set("tiers", 1, value="mid"), "tiers[1]", ("JSON object", "str")),
    ("tier missing model", lambda d: d["tiers"][0].pop("model"), "tiers[0].model", ("is required",)),
    ("empty tier name", _set("tiers", 0, "name", value=""), "tiers[0].name", ("non-empty string",)),
    ("duplicate tier names", _dup_names, "tiers[2].name", ("duplicate tier name 'cheap'", "unique")),
    (
        "anthropic supports_n",
        _set("tiers", 1, "supports_n", value=True),
        "tiers[1].supports_n",
        ("anthropic", "must be false"),
    ),
    ("supports_n string", _set("tiers", 0, "supports_n", value="yes"), "tiers[0].supports_n", ("true or false",)),
    (
        "base_url no scheme",
        _set("tiers", 0, "base_url", value="api.openai.com/v1"),
        "tiers[0].base_url",
        ("http:// or https://", "'api.openai.com/v1'"),
    ),
    (
        "base_url ftp",
        _set("tiers", 2, "base_url", value="ftp://example.com"),
        "tiers[2].base_url",
        ("http:// or https://",),
    ),
    (
        "bool max_tokens",
        _set("tiers", 0, "max_tokens", value=True),
        "tiers[0].max_tokens",
        ("must be an integer", "True"),
    ),
    ("bool k", _set("confidence", "k", value=True), "confidence.k", ("must be an integer",)),
    (
        "bool failure_threshold",
        _set("breaker", "failure_threshold", value=False),
        "breaker.failure_threshold",
        ("must be an integer",),
    ),
    (
        "bool start_tier",
        _set("routing", "medium", "start_tier", value=True),
        "routing.medium.start_tier",
        ("must be an integer",),
    ),
    ("bool timeout", _set("tiers", 0, "timeout_s", value=True), "tiers[0].timeout_s", ("must be a number",)),
    (
        "bool threshold",
        _set("confidence", "thresholds", value=[True, 0.5]),
        "confidence.thresholds[0]",
        ("must be a number",),
    ),
    ("bool cap", _set("max_cost_per_query_usd", value=True), "max_cost_per_query_usd", ("decimal number",)),
    ("cascade string", _set("cascade", value="yes"), "cascade", ("true or false",)),
    ("window 0", _set("breaker", "window_s", value=0), "breaker.window_s", ("(0.0, 86400.0]",)),
    ("recovery too long", _set("breaker", "recovery_s", value=86_401), "breaker.recovery_s", ("(0.0, 86400.0]",)),
    (
        "threshold 0 failures",
        _set("breaker", "failure_threshold", value=0),
        "breaker.failure_threshold",
        ("[1, 10000]",),
    ),
    (
        "logprob with anthropic non-final",
        _anthropic_non_final_logprob,
        "confidence.signal",
        ("tier 1", "anthropic", "consistency"),
    ),
    ("provenance not object", _set("provenance", value=["x"]), "provenance", ("JSON object",)),
    ("routing not object", _set("routing", value=[]), "routing", ("JSON object", "list")),
    ("name not string", _set("name", value=3), "name", ("string",)),
]


@pytest.mark.parametrize(("mutate", "field", "fragments"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid_values_name_the_field_and_the_valid_range(
    mutate: Callable[[dict[str, Any]], None], field: str, fragments: tuple[str, ...]
) -> None:
    d = example_dict()
    mutate(d)
    e = policy_error(d)
    assert e.field == field, str(e)
    assert f"field '{field}'" in str(e)
    for frag in fragments:
        assert frag in str(e), (frag, str(e))


def test_missing_tiers_and_schema_version_are_required() -> None:
    d = example_dict()
    del d["tiers"]
    e = policy_error(d)
    assert e.field == "tiers" and "is required" in str(e)
    d = example_dict()
    del d["schema_version"]
    e = policy_error(d)
    assert e.field == "schema_version" and "is required" in str(e)


@pytest.mark.parametrize("data", [[], "policy", 1, None])
def test_top_level_must_be_an_object(data: Any) -> None:
    e = policy_error(data)
    assert "must be a JSON object" in str(e)


def test_policy_errors_are_config_errors() -> None:
    assert issubclass(PolicyError, ConfigError) and issubclass(ModelMismatchError, ConfigError)


# ---------------------------------------------------------------- reading files


def test_invalid_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "schema_version": 1,\n  "tiers": [,]\n}\n', encoding="utf-8")
    with pytest.raises(PolicyError) as ei:
        load_policy(path)
    msg = str(ei.value)
    assert "invalid JSON at line 3, column 13" in msg
    assert ei.value.source == str(path) and msg.startswith(str(path))


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.json"
    with pytest.raises(PolicyError) as ei:
        load_policy(path)
    assert ei.value.source == str(path)
    assert str(path) in str(ei.value) and "cannot read policy file" in str(ei.value)
    assert not path.parent.exists()  # reading creates nothing


def test_load_accepts_str_paths() -> None:
    assert load_policy(str(EXAMPLE)) == load_policy(EXAMPLE)


# ---------------------------------------------------------------- atomic writes


def test_dump_creates_folders_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "policy.json"
    dump_policy(load_policy(EXAMPLE), target)
    assert only_file(target.parent) == ["policy.json"]
    assert load_policy(target) == load_policy(EXAMPLE)


def test_dump_overwrites_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "policy.json"
    target.write_text("old contents that are not even JSON", encoding="utf-8")
    p = load_policy(EXAMPLE).with_changes(name="new")
    dump_policy(p, target)
    assert load_policy(target).name == "new"
    assert only_file(tmp_path) == ["policy.json"]


@pytest.mark.parametrize("fail_at", ["replace", "fsync"])
def test_dump_is_atomic_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str) -> None:
    target = tmp_path / "policy.json"
    old = load_policy(EXAMPLE)
    dump_policy(old, target)
    before = target.read_bytes()
    calls: list[Any] = []

    def boom(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fail_at, boom)  # the os module routerlab.policy writes through
    with pytest.raises(OSError, match="No space left"):
        dump_policy(old.with_changes(name="new"), target)
    monkeypatch.undo()
    assert calls, "the patched step was never reached"
    assert target.read_bytes() == before
    assert load_policy(target) == old
    assert only_file(tmp_path) == ["policy.json"]


# ---------------------------------------------------------------- hot reload


def bump_mtime(path: Path, step: int) -> None:
    """Give ``path`` a distinct mtime so the holder's (mtime_ns, size) stamp changes."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + step * 1_000_000_000))


def test_holder_picks_up_a_valid_change(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    dump_policy(load_policy(EXAMPLE), path)
    holder = PolicyHolder(path)
    first = holder.get()
    assert first == load_policy(EXAMPLE) and holder.last_error is None
    assert holder.get() is first  # unchanged file: same object, no reload

    d = example_dict()
    d["name"] = "v2"
    d["confidence"]["thresholds"] = [0.9, 0.6]
    write_json(path, d)
    bump_mtime(path, 1)
    second = holder.get()
    assert second.name == "v2" and second.confidence.thresholds == (0.9, 0.6)
    assert holder.last_error is None
    assert holder.get() is second


def test_holder_detects_a_change_with_same_size_by_mtime(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    d = example_dict()
    d["name"] = "aaaa"
    write_json(path, d)
    holder = PolicyHolder(path)
    size = path.stat().st_size
    d["name"] = "bbbb"
    write_json(path, d)
    assert path.stat().st_size == size
    bump_mtime(path, 1)
    assert holder.get().name == "bbbb"


def test_holder_keeps_last_good_policy_on_invalid_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.json"
    dump_policy(load_policy(EXAMPLE), path)
    holder = PolicyHolder(path)
    good = holder.get()

    path.write_text("{ not json", encoding="utf-8")
    bump_mtime(path, 1)
    with caplog.at_level(logging.ERROR, logger="routerlab.policy"):
        assert holder.get() is good
    assert holder.last_error is not None and "invalid JSON" in holder.last_error
    assert str(path) in holder.last_error
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "routerlab.policy"]
    assert events and events[-1]["event"] == "policy_reload_failed" and events[-1]["kept"] == "last good policy"

    d = example_dict()
    d["confidence"]["k"] = 1
    write_json(path, d)
    bump_mtime(path, 2)
    assert holder.get() is good
    assert holder.last_error is not None and "confidence.k" in holder.last_error

    path.unlink()
    assert holder.get() is good
    assert holder.last_error is not None and "cannot read" in holder.last_error

    d = example_dict()
    d["name"] = "fixed"
    write_json(path, d)
    bump_mtime(path, 3)
    fixed = holder.get()
    assert fixed.name == "fixed" and holder.last_error is None


def test_holder_refuses_an_invalid_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(PolicyError):
        PolicyHolder(path)


# ---------------------------------------------------------------- model mismatch


def with_provenance_models(models: list[str]) -> dict[str, Any]:
    d = example_dict()
    d["provenance"] = {"tier_models": models, "tuned_on": "2024-07-01"}
    return d


def test_tuned_models_differing_from_tiers_raise_unless_forced(tmp_path: Path) -> None:
    tuned = ["gpt-4o-mini", "claude-3-haiku-20240307", "gpt-4o"]
    path = write_json(tmp_path / "tuned.json", with_provenance_models(tuned))
    with pytest.raises(ModelMismatchError) as ei:
        load_policy(path)
    msg = str(ei.value)
    assert str(path) in msg and "claude-3-haiku-20240307" in msg and "claude-3-5-sonnet-20240620" in msg
    assert "force=True" in msg
    p = load_policy(path, force=True)
    assert list(p.provenance["tier_models"]) == tuned
    assert tuple(t.model for t in p.tiers) == EXAMPLE_MODELS


def test_tuned_models_matching_tiers_load(tmp_path: Path) -> None:
    path = write_json(tmp_path / "tuned.json", with_provenance_models(list(EXAMPLE_MODELS)))
    p = load_policy(path)
    assert p.provenance["tier_models"] == list(EXAMPLE_MODELS)
    assert load_policy(path, expect_models=EXAMPLE_MODELS) == p


def test_expect_models_mismatch_raises_unless_forced(tmp_path: Path) -> None:
    path = write_json(tmp_path / "p.json", example_dict())  # no provenance: the tiers' models are the reference
    other = ("gpt-4o-mini", "gpt-4o", "gpt-4o")
    with pytest.raises(ModelMismatchError) as ei:
        load_policy(path, expect_models=other)
    assert "gpt-4o-mini" in str(ei.value) and "force=True" in str(ei.value)
    assert load_policy(path, expect_models=other, force=True) == load_policy(path)
    assert load_policy(path, expect_models=EXAMPLE_MODELS) == load_policy(path)
    with pytest.raises(ModelMismatchError):
        load_policy(path, expect_models=EXAMPLE_MODELS[:2])


def test_expect_models_compares_with_tuned_models_when_present(tmp_path: Path) -> None:
    tuned = ["m-a", "m-b", "m-c"]
    path = write_json(tmp_path / "tuned.json", with_provenance_models(tuned))
    # tuned models differ from tiers, so force is needed anyway; expect_models is checked against the tuned ones
    assert load_policy(path, expect_models=tuple(tuned), force=True).provenance["tier_models"] == tuned
    with pytest.raises(ModelMismatchError):
        load_policy(path, expect_models=tuple(tuned))


# ---------------------------------------------------------------- policies built in code


def test_replace_with_invalid_start_tier_raises() -> None:
    p = load_policy(EXAMPLE)
    routing = dict(p.routing) | {"medium": ClassRoute(start_tier=9)}
    with pytest.raises(PolicyError) as ei:
        dataclasses.replace(p, routing=routing)
    assert ei.value.field == "routing.medium.start_tier" and "[0, 2]" in str(ei.value)
    with pytest.raises(PolicyError) as ei:
        p.with_changes(routing=routing)
    assert ei.value.field == "routing.medium.start_tier"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: {"confidence": dataclasses.replace(p.confidence, k=1)}, "confidence.k"),
        (lambda p: {"confidence": dataclasses.replace(p.confidence, thresholds=(0.5,))}, "confidence.thresholds"),
        (lambda p: {"confidence": dataclasses.replace(p.confidence, similarity="jaccard")}, "confidence.similarity"),
        (lambda p: {"breaker": BreakerSettings(failure_threshold=0)}, "breaker.failure_threshold"),
        (lambda p: {"classifier": ClassifierSettings(complex_patterns=("(",))}, "classifier.complex_patterns[0]"),
        (lambda p: {"max_cost_per_query_usd": Decimal("-1")}, "max_cost_per_query_usd"),
        (
            lambda p: {"tiers": (dataclasses.replace(p.tiers[0], base_url="localhost"),) + p.tiers[1:]},
            "tiers[0].base_url",
        ),
        (lambda p: {"tiers": (p.tiers[0], p.tiers[0], p.tiers[2])}, "tiers[1].name"),
        (lambda p: {"tiers": ()}, "tiers"),
        (lambda p: {"schema_version": 2}, "schema_version"),
    ],
)
def test_invalid_policies_built_in_code_raise(change: Callable[[RouterPolicy], dict[str, Any]], field: str) -> None:
    p = load_policy(EXAMPLE)
    with pytest.raises(PolicyError) as ei:
        dataclasses.replace(p, **change(p))
    assert ei.value.field == field, str(ei.value)


def test_valid_changes_in_code_are_accepted() -> None:
    p = load_policy(EXAMPLE)
    q = p.with_changes(cascade=False, max_cost_per_query_usd=Decimal("1.25"))
    assert q.cascade is False and q.max_cost_per_query_usd == Decimal("1.25")
    assert q != p and p.cascade is True  # the original is untouched (frozen)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # type: ignore[misc]


def test_policy_from_dict_does_not_mutate_its_input() -> None:
    d = rich_dict()
    snapshot = copy.deepcopy(d)
    p = policy_from_dict(d)
    assert d == snapshot
    assert p == policy_from_dict(snapshot)


def test_two_tiers_on_the_same_endpoint_and_model_are_refused() -> None:
    data = example_dict()
    data["tiers"][2] = {**data["tiers"][0], "name": "again", "base_url": data["tiers"][0]["base_url"] + "/"}
    err = policy_error(data)
    assert err.field == "tiers[2].model"
    assert "same model 'gpt-4o-mini'" in str(err) and "breaker" in str(err)
    data["tiers"][2]["base_url"] = "https://other.example/v1"  # another endpoint serving the same model is fine
    assert policy_from_dict(data).tiers[2].name == "again"


@pytest.mark.parametrize("value", ["sk-proj-abc123", "openai_api_key", "1KEY", "MY KEY", ""])
def test_api_key_env_must_be_a_variable_name_and_is_not_echoed(value: str) -> None:
    data = example_dict()
    data["tiers"][0]["api_key_env"] = value
    err = policy_error(data)
    assert err.field == "tiers[0].api_key_env"
    if value:
        assert value not in str(err)


def test_files_that_break_the_reader_get_a_policy_error_naming_the_place(tmp_path: Path) -> None:
    data = example_dict()
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(json.dumps(data, indent=1).replace('"name"', '"n\u00e9me"', 1).encode("latin-1"))
    with pytest.raises(PolicyError, match=r"latin1\.json: is not UTF-8 text: byte 0xe9 on line \d+"):
        load_policy(latin1)
    huge = copy.deepcopy(data)
    huge["tiers"][0]["timeout_s"] = 10**400
    with pytest.raises(PolicyError, match=r"tiers\[0\]\.timeout_s.*too large"):
        load_policy(write_json(tmp_path / "huge.json", huge))
    for bad in ("gpt-4o", [1, 2, 3], {"a": 1}):
        prov = copy.deepcopy(data)
        prov["provenance"] = {"tier_models": bad}
        with pytest.raises(PolicyError, match=r"provenance\.tier_models.*list of model names"):
            load_policy(write_json(tmp_path / "prov.json", prov))
