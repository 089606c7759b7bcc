"""The outcome table: every recorded (item, tier, variant, sample), replayed once.

For each item of an eval set and each tier of the ladder, the cassettes hold
the answer to the router's *single* call and, on non-final tiers, to its
*k-sample* call(s). :func:`build_outcomes` replays each of them once through
the real adapters and prices it with the real price book, giving two tables:

``calls`` (one row per item, tier and variant)
    item_id, complexity, tier_index, tier, model, variant (``single`` or
    ``k2``, ``k3`` ...), k, n_requests, error_kind, fatal, cost_usd,
    cost_pico (the exact cost in 1e-12 USD, an integer), worst_pico (the
    router's worst-case estimate for the cost cap), reserve_pico (what the
    router counts against the cap beyond cost_pico: the worst case of each
    2xx reply whose body could not be parsed), input_tokens,
    output_tokens, cached_tokens, usage_estimated, latency_ms,
    latency_estimated, agree_<similarity> (agreement of the samples; NaN for
    single), q_<scorer> (quality of the answer the router would return: the
    first sample), text.
``samples`` (one row per item, tier, variant and sample)
    item_id, tier_index, variant, sample, text, q_<scorer>.

Latency comes from the ``x-routerlab-latency-ms`` header recorded with each
response; imported outputs have none, so it is estimated as
``400 ms + 15 ms per output token`` and marked ``latency_estimated``.

Tables are cached as Parquet under the data directory, keyed by a hash of
the cassette files, the ladder and the settings; any change rebuilds them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routerlab.cassettes import (
    ESTIMATED_HEADER,
    LATENCY_HEADER,
    RecordedResponse,
    _request_key,
    cassette_name,
    load_cassette_index,
    read_manifest,
    replay_keys,
)
from routerlab.classifier import COMPLEXITY_CLASSES, classify_complexity
from routerlab.consistency import SIMILARITY_NAMES, agreement, get_similarity
from routerlab.errors import DataError, MalformedResponseError, ProviderError, ReplayMissError
from routerlab.evalset import EvalItem
from routerlab.policy import RouterPolicy, policy_to_dict
from routerlab.pricing import PriceBook, price_source_version
from routerlab.providers import get_adapter
from routerlab.router import (
    effective_max_tokens,
    estimate_input_tokens,
    tier_requests,
    unpriced_reserve_usd,
    worst_case_cost_usd,
    writes_prompt_cache,
)
from routerlab.scoring import get_scorer, scorer_fingerprint
from routerlab.types import Completion, Usage

PICO = Decimal(10) ** 12
TABLE_VERSION = "3"  # 2: per-character-class input estimate, reserve_pico; 3: letter runs count >= 1
LATENCY_BASE_MS, LATENCY_PER_TOKEN_MS = 400.0, 15.0


@dataclass
class Outcomes:
    """The outcome tables of one eval set replayed from its cassettes."""

    calls: pd.DataFrame
    samples: pd.DataFrame
    items: pd.DataFrame  # item_id, complexity, class_index, position
    tiers: list[str]
    models: list[str]
    ks: list[int]
    similarities: list[str]
    scorers: list[str]
    policy: RouterPolicy
    key: str
    cassettes_sha256: str = ""  # sha256 over the items' cassette files (name and bytes, in item order)

    @property
    def n_items(self) -> int:
        return len(self.items)


def _to_pico(cost: Decimal) -> int:
    scaled = cost * PICO
    if scaled != scaled.to_integral_value():
        raise DataError(f"cost {cost} USD is not a whole number of 1e-12 USD; the exact sweep cannot represent it")
    return int(scaled)


def _latency(headers: dict[str, str], output_tokens: int) -> tuple[float, bool]:
    for k, v in headers.items():
        if k.lower() == LATENCY_HEADER:
            return float(v), False
    return LATENCY_BASE_MS + LATENCY_PER_TOKEN_MS * output_tokens, True


def _variant_rows(
    item: EvalItem,
    policy: RouterPolicy,
    index: dict[tuple[str, str, str], list[RecordedResponse]],
    tier_index: int,
    cls: str,
    signal: str,
    k: int | None,
    prices: PriceBook,
    keys: dict[str, str],
    input_estimate: tuple[int, bool],
) -> dict[str, Any] | None:
    """One (item, tier, variant) row; ``input_estimate`` is the item's (estimated input tokens, cache writes)."""
    tier = policy.tiers[tier_index]
    max_tokens = effective_max_tokens(policy, tier_index, cls)
    api_key = keys.get(tier.api_key_env) if tier.api_key_env else None
    specs, samples = tier_requests(policy, tier_index, list(item.messages), signal, max_tokens, api_key, k=k)
    played: Counter[tuple[str, str, str]] = Counter()
    completions: list[Completion] = []
    unpriced = 0  # 2xx replies whose body could not be parsed (maybe billed; the router reserves their worst case)
    error: ProviderError | None = None
    latency = 0.0
    lat_est = False
    usage_est = False
    for s in specs:
        key = _request_key(s.method, s.url, s.content())
        recorded = index.get(key, [])
        n = played[key]
        if n >= len(recorded):
            if signal == "none":
                raise ReplayMissError(
                    f"item {item.id!r}, tier {tier.name!r}, model {tier.model!r}: the single call is not recorded",
                    item_id=item.id,
                    tier=tier.name,
                    model=tier.model,
                )
            return None  # this k-sample variant was not recorded (e.g. a single-answer dataset)
        played[key] = n + 1
        r = recorded[n]
        headers = dict(r.headers)
        adapter = get_adapter(tier.provider)
        try:
            c = adapter.parse_response(r.status, headers, r.body, model=tier.model)
            completions.append(c)
            lat, est = _latency(headers, c.usage.output_tokens)
            usage_est = usage_est or any(h.lower() == ESTIMATED_HEADER for h in headers)
        except ProviderError as e:
            error = error or e
            lat, est = _latency(headers, 0)
            unpriced += 200 <= r.status < 300
        latency += lat
        lat_est = lat_est or est
    usage = sum((c.usage for c in completions), Usage())
    cost = (
        prices.cost_usd(usage, tier.model, provider=tier.pricing_provider, override=tier.price)
        if completions
        else Decimal(0)
    )
    texts = tuple(t for c in completions for t in c.texts)
    if error is None and len(texts) < samples:
        error = MalformedResponseError(f"asked for {samples} samples, got {len(texts)}")
    est_in, cache_writes = input_estimate
    worst = worst_case_cost_usd(prices, tier, est_in, max_tokens, len(specs), samples, cache_writes=cache_writes)
    return {
        "variant": "single" if signal == "none" else f"k{k}",
        "k": 1 if signal == "none" else k,
        "n_requests": len(specs),
        "error_kind": None if error is None else error.kind,
        "fatal": bool(error is not None and not error.retryable),
        "cost_usd": float(cost),
        "cost_pico": _to_pico(cost),
        "worst_pico": _to_pico(worst),
        "reserve_pico": _to_pico(unpriced_reserve_usd(worst, len(specs), unpriced)),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cache_read_tokens,
        "usage_estimated": usage_est,
        "latency_ms": latency,
        "latency_estimated": lat_est,
        "texts": texts,
    }


def outcome_key(
    policy: RouterPolicy, cassette_dir: Path, items: Sequence[EvalItem], ks: Sequence[int], scorers: Sequence[str]
) -> str:
    """A hash of everything the tables depend on: cassettes, eval items, ladder, ks, scorers, prices."""
    return _hashes(policy, cassette_dir, items, ks, scorers)[0]


def _hashes(
    policy: RouterPolicy, cassette_dir: Path, items: Sequence[EvalItem], ks: Sequence[int], scorers: Sequence[str]
) -> tuple[str, str]:
    """(outcome table key, sha256 of the cassette files alone)."""
    h = hashlib.sha256()
    cas = hashlib.sha256()
    h.update(TABLE_VERSION.encode())
    h.update(price_source_version().encode())
    pd_ = policy_to_dict(policy)
    pd_.pop("provenance", None)
    pd_.pop("name", None)
    for k in ("routing", "confidence", "cascade", "max_cost_per_query_usd", "breaker"):
        pd_.pop(k, None)  # the sweep varies these; the tables do not depend on them...
    pd_["max_tokens_by_class"] = {c: r.max_tokens for c, r in policy.routing.items()}  # ...except max_tokens
    pd_["confidence_temperature"] = policy.confidence.temperature
    pd_["confidence_answer_pattern"] = policy.confidence.answer_pattern  # the "answer" similarity uses it
    h.update(json.dumps(pd_, sort_keys=True).encode())
    h.update(json.dumps([list(ks), [scorer_fingerprint(s) for s in scorers]]).encode())
    for it in items:
        h.update(json.dumps(it.to_json(), sort_keys=True, ensure_ascii=False).encode())
        p = cassette_dir / cassette_name(it.id)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise ReplayMissError(f"no cassette for item {it.id!r} (expected {p})", item_id=it.id) from None
        h.update(data)
        cas.update(f"{p.name}\0{len(data)}\0".encode())
        cas.update(data)
    return h.hexdigest()[:24], cas.hexdigest()


def build_outcomes(
    items: Sequence[EvalItem],
    policy: RouterPolicy,
    cassette_dir: str | os.PathLike[str],
    *,
    scorers: Sequence[str],
    ks: Sequence[int] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Outcomes:
    """Replay every recorded call once and score it; cached as Parquet (see the module docstring)."""
    cdir = Path(cassette_dir)
    if ks is None:
        try:
            ks = list(read_manifest(cdir).get("ks", [policy.confidence.k]))
        except DataError:
            ks = [policy.confidence.k]
    ks = sorted(set(ks))
    key, cassettes_sha256 = _hashes(policy, cdir, items, ks, scorers)
    cache = Path(cache_dir) if cache_dir is not None else _default_cache()
    calls_p, samples_p = cache / f"{key}-calls.parquet", cache / f"{key}-samples.parquet"
    if calls_p.exists() and samples_p.exists():
        calls, samples = pd.read_parquet(calls_p), pd.read_parquet(samples_p)
    else:
        calls, samples = _build(items, policy, cdir, scorers, ks, progress)
        cache.mkdir(parents=True, exist_ok=True)
        _atomic_parquet(calls, calls_p)
        _atomic_parquet(samples, samples_p)
    item_df = (
        calls[["item_id", "complexity"]]
        .drop_duplicates("item_id")
        .reset_index(drop=True)
        .assign(
            class_index=lambda d: d["complexity"].map({c: i for i, c in enumerate(COMPLEXITY_CLASSES)}),
            position=lambda d: np.arange(len(d)),
        )
    )
    present_ks = sorted({int(v[1:]) for v in calls["variant"].unique() if v != "single"})
    return Outcomes(
        calls,
        samples,
        item_df,
        [t.name for t in policy.tiers],
        [t.model for t in policy.tiers],
        present_ks,
        list(SIMILARITY_NAMES),
        list(scorers),
        policy,
        key,
        cassettes_sha256,
    )


def _default_cache() -> Path:
    from routerlab.datasets import default_cache_dir

    return default_cache_dir() / "outcomes"


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _build(
    items: Sequence[EvalItem],
    policy: RouterPolicy,
    cdir: Path,
    scorers: Sequence[str],
    ks: Sequence[int],
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    prices = PriceBook()
    keys = replay_keys(policy)
    sims = {name: get_similarity(name, answer_pattern=policy.confidence.answer_pattern) for name in SIMILARITY_NAMES}
    scorer_fns = {name: get_scorer(name) for name in scorers}
    call_rows: list[dict[str, Any]] = []
    sample_rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="outcome table", unit="item")
    n_tiers = len(policy.tiers)
    for it in items:
        index = load_cassette_index(cdir / cassette_name(it.id))
        cls = classify_complexity(it.prompt, policy.classifier).value
        input_estimate = (estimate_input_tokens(it.messages), writes_prompt_cache(it.messages))
        for t in range(n_tiers):
            variants: list[tuple[str, int | None]] = [("none", None)]
            if t < n_tiers - 1:
                variants += [("consistency", k) for k in ks]
            for signal, k in variants:
                row = _variant_rows(it, policy, index, t, cls, signal, k, prices, keys, input_estimate)
                if row is None:
                    continue
                texts = row.pop("texts")
                tier = policy.tiers[t]
                base = {"item_id": it.id, "complexity": cls, "tier_index": t, "tier": tier.name, "model": tier.model}
                for name, sim in sims.items():
                    row[f"agree_{name}"] = agreement(texts, sim) if signal != "none" and len(texts) >= 2 else np.nan
                for name, fn in scorer_fns.items():
                    v = fn(it, texts[0], tier.model) if texts else None
                    row[f"q_{name}"] = np.nan if v is None else float(v)
                row["text"] = texts[0] if texts else ""
                call_rows.append({**base, **row})
                for j, text in enumerate(texts):
                    srow: dict[str, Any] = {
                        "item_id": it.id,
                        "tier_index": t,
                        "variant": row["variant"],
                        "sample": j,
                        "text": text,
                    }
                    for name, sfn in scorer_fns.items():
                        v = sfn(it, text, tier.model)
                        srow[f"q_{name}"] = np.nan if v is None else float(v)
                    sample_rows.append(srow)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    calls = pd.DataFrame(call_rows)
    calls["cost_pico"] = calls["cost_pico"].astype("int64")
    calls["worst_pico"] = calls["worst_pico"].astype("int64")
    calls["reserve_pico"] = calls["reserve_pico"].astype("int64")
    return calls, pd.DataFrame(sample_rows)
