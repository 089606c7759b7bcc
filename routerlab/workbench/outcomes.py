"""The outcome table: every recorded (item, tier, variant, sample), replayed once.

For each item of an eval set and each tier of the ladder, the cassettes hold
the answer to the router's *single* call and, on non-final tiers, to its
*k-sample* call(s). :func:`build_outcomes` replays each of them once through
the real adapters and prices it with the real price book, giving two tables:

``calls`` (one row per item, tier and variant)
    item_id, complexity, tier_index, tier, model, variant (``single`` or
    ``k2``, ``k3`` ...), k, n_requests, error_kind, fatal, unusable (bits:
    1 empty, 2 cut off at max_tokens, 4 filtered or refused; of the answer the
    router would return), finish_reason, cost_usd,
    cost_pico (the exact cost in 1e-12 USD, an integer), worst_pico (the
    router's worst-case estimate for the cost cap), reserve_pico (what the
    router counts against the cap beyond cost_pico: one request's share of the
    worst case for each 2xx reply whose body could not be parsed), missing,
    topup_worst_pico, short_cost_pico, short_reserve_pico, short_latency_ms
    (a server that answered ``n=k`` with fewer choices: how many were missing,
    the cap's worst case for the single requests that completed them, and the
    call as it stood before they were sent; 0 otherwise), input_tokens,
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
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routerlab.classifier import COMPLEXITY_CLASSES
from routerlab.consistency import SIMILARITY_NAMES, agreement, get_similarity
from routerlab.data.cassettes import (
    ESTIMATED_HEADER,
    LATENCY_HEADER,
    RecordedResponse,
    cassette_name,
    load_cassette_index,
    read_manifest,
    replay_keys,
    request_key,
)
from routerlab.data.evalset import EvalItem
from routerlab.data.paths import default_cache_dir
from routerlab.decision import (
    PreparedQuery,
    Reply,
    TierCall,
    TierReply,
    account_replies,
    call_shape,
    effective_max_tokens,
    prepare_query,
    quote_worst_case,
    reply_unusable_bits,
    sample_agreement,
)
from routerlab.errors import DataError, ReplayMissError
from routerlab.jsonio import atomic_write
from routerlab.policy import RouterPolicy, policy_to_dict
from routerlab.pricing import PriceBook, price_source_version
from routerlab.types import Signal, Usage
from routerlab.workbench.scoring import get_scorer, scorer_fingerprint

PICO = Decimal(10) ** 12
TABLE_VERSION = "5"  # 2: per-character-class input estimate, reserve_pico; 3: letter runs count >= 1; 4: decision
# 5: unusable answers (empty / cut off / filtered), completed short n=k replies, tool-call agreement
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
    _dense: tuple[pd.DataFrame, DenseTable] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def dense(self) -> DenseTable:
        """The calls table as dense arrays (built once; rebuilt if ``calls`` is replaced)."""
        if self._dense is None or self._dense[0] is not self.calls:
            self._dense = (self.calls, _build_dense(self))
        return self._dense[1]


@dataclass
class DenseTable:
    """The calls table as dense arrays over (item, tier) and (k, item, non-final tier), for the sweep."""

    n: int
    t: int
    cls: np.ndarray  # (N,)
    s_cost: np.ndarray  # (N, T) int64 pico
    s_worst: np.ndarray
    s_res: np.ndarray  # reserve counted against the cap beyond the cost (unparsed 2xx replies)
    s_err: np.ndarray  # 0 ok, 1 retryable, 2 fatal
    s_bad: np.ndarray  # unusable bits of the answer (1 empty, 2 length, 4 filtered)
    s_lat: np.ndarray
    s_q: dict[str, np.ndarray]
    ks: list[int]
    sims: list[str]
    k_cost: np.ndarray  # (nk, N, T-1)
    k_worst: np.ndarray
    k_res: np.ndarray
    k_err: np.ndarray
    k_bad: np.ndarray
    k_lat: np.ndarray
    k_tuw: np.ndarray  # worst case of the requests that completed a short n=k reply (0: none)
    k_scost: np.ndarray  # the call's cost, reserve and latency before that completion
    k_sres: np.ndarray
    k_slat: np.ndarray
    k_q: dict[str, np.ndarray]
    agree: np.ndarray  # (nsim, nk, N, T-1)
    k_count: np.ndarray  # (nk, T-1) int: items with that k recorded at that non-final tier

    @property
    def k_present(self) -> np.ndarray:
        """(nk,) bool: that k is recorded for every item at every non-final tier."""
        present: np.ndarray = self.k_count.sum(axis=1) == self.n * (self.t - 1)
        return present

    def k_tiers(self, j: int) -> tuple[int, ...]:
        """The non-final tiers where k number ``j`` is recorded for every item."""
        return tuple(int(ti) for ti in np.flatnonzero(self.k_count[j, : self.t - 1] == self.n))


def _build_dense(o: Outcomes) -> DenseTable:
    calls = o.calls
    pos = {iid: i for i, iid in enumerate(o.items["item_id"])}
    n, t = len(pos), len(o.tiers)
    _check_complete(calls, n, t)
    ii = calls["item_id"].map(pos).to_numpy()
    ti = calls["tier_index"].to_numpy()
    err = np.where(calls["error_kind"].isna(), 0, np.where(calls["fatal"], 2, 1))
    single = (calls["variant"] == "single").to_numpy()

    def grid(values: np.ndarray, mask: np.ndarray, shape: tuple[int, ...], fill: Any, dtype: Any) -> np.ndarray:
        out = np.full(shape, fill, dtype=dtype)
        out[ii[mask], ti[mask]] = values[mask]
        return out

    s_cost = grid(calls["cost_pico"].to_numpy(), single, (n, t), 0, np.int64)
    s_worst = grid(calls["worst_pico"].to_numpy(), single, (n, t), 0, np.int64)
    s_res = grid(calls["reserve_pico"].to_numpy(), single, (n, t), 0, np.int64)
    s_err = grid(err, single, (n, t), 0, np.int8)
    bad = calls["unusable"].to_numpy().astype(np.int8)
    s_bad = grid(bad, single, (n, t), 0, np.int8)
    s_lat = grid(calls["latency_ms"].to_numpy(), single, (n, t), 0.0, float)
    s_q = {sc: grid(calls[f"q_{sc}"].to_numpy(dtype=float), single, (n, t), np.nan, float) for sc in o.scorers}
    ks = list(o.ks)
    sims = list(o.similarities)
    tk = max(t - 1, 1)
    nk = max(len(ks), 1)
    k_cost = np.zeros((nk, n, tk), np.int64)
    k_worst = np.zeros((nk, n, tk), np.int64)
    k_res = np.zeros((nk, n, tk), np.int64)
    k_err = np.zeros((nk, n, tk), np.int8)
    k_bad = np.zeros((nk, n, tk), np.int8)
    k_lat = np.zeros((nk, n, tk))
    k_tuw = np.zeros((nk, n, tk), np.int64)
    k_scost = np.zeros((nk, n, tk), np.int64)
    k_sres = np.zeros((nk, n, tk), np.int64)
    k_slat = np.zeros((nk, n, tk))
    k_q = {sc: np.full((nk, n, tk), np.nan) for sc in o.scorers}
    agree = np.full((len(sims), nk, n, tk), np.nan)
    k_count = np.zeros((nk, tk), np.int64)
    for j, k in enumerate(ks):
        m = (calls["variant"] == f"k{k}").to_numpy()
        k_cost[j][ii[m], ti[m]] = calls["cost_pico"].to_numpy()[m]
        k_worst[j][ii[m], ti[m]] = calls["worst_pico"].to_numpy()[m]
        k_res[j][ii[m], ti[m]] = calls["reserve_pico"].to_numpy()[m]
        k_err[j][ii[m], ti[m]] = err[m]
        k_bad[j][ii[m], ti[m]] = bad[m]
        k_lat[j][ii[m], ti[m]] = calls["latency_ms"].to_numpy()[m]
        k_tuw[j][ii[m], ti[m]] = calls["topup_worst_pico"].to_numpy()[m]
        k_scost[j][ii[m], ti[m]] = calls["short_cost_pico"].to_numpy()[m]
        k_sres[j][ii[m], ti[m]] = calls["short_reserve_pico"].to_numpy()[m]
        k_slat[j][ii[m], ti[m]] = calls["short_latency_ms"].to_numpy()[m]
        for sc in o.scorers:
            k_q[sc][j][ii[m], ti[m]] = calls[f"q_{sc}"].to_numpy(dtype=float)[m]
        for si, sim in enumerate(sims):
            agree[si, j][ii[m], ti[m]] = calls[f"agree_{sim}"].to_numpy(dtype=float)[m]
        k_count[j] = np.bincount(ti[m], minlength=tk)[:tk]
    cls = o.items["class_index"].to_numpy()
    return DenseTable(
        n,
        t,
        cls,
        s_cost,
        s_worst,
        s_res,
        s_err,
        s_bad,
        s_lat,
        s_q,
        ks,
        sims,
        k_cost,
        k_worst,
        k_res,
        k_err,
        k_bad,
        k_lat,
        k_tuw,
        k_scost,
        k_sres,
        k_slat,
        k_q,
        agree,
        k_count,
    )


def _check_complete(calls: pd.DataFrame, n_items: int, n_tiers: int) -> None:
    """Every (item, tier) has one single-call row and at most one row per k variant, k rows only at
    non-final tiers: a gap or a duplicate would otherwise read as a free, successful call."""
    dup = calls.duplicated(["item_id", "tier_index", "variant"])
    if dup.any():
        r = calls[dup].iloc[0]
        raise DataError(f"outcome table: item {r['item_id']!r}, tier {r['tier_index']}, {r['variant']} appears twice")
    single = calls[calls["variant"] == "single"]
    if len(single) != n_items * n_tiers:
        have = set(zip(single["item_id"], single["tier_index"], strict=True))
        missing = next(((i, t) for i in calls["item_id"].unique() for t in range(n_tiers) if (i, t) not in have), None)
        raise DataError(
            f"outcome table: {n_items * n_tiers - len(single)} (item, tier) single calls are missing"
            + (f", e.g. item {missing[0]!r} at tier {missing[1]}" if missing else "")
        )
    if ((calls["variant"] != "single") & (calls["tier_index"] >= n_tiers - 1)).any():
        raise DataError("outcome table: k-sample rows at the final tier (the router never checks there)")


def to_pico(cost: Decimal) -> int:
    """``cost`` in whole 1e-12 USD (the sweep's exact integer unit); finer amounts are a DataError."""
    scaled = cost * PICO
    if scaled != scaled.to_integral_value():
        raise DataError(f"cost {cost} USD is not a whole number of 1e-12 USD; the exact sweep cannot represent it")
    return int(scaled)


def _header(r: Reply, name: str) -> str | None:
    return next((v for k, v in (r.headers or {}).items() if k.lower() == name), None)


def _latency(replies: Sequence[Reply], usage: Sequence[Usage | None]) -> tuple[float, bool]:
    """A call's latency: the sum of each reply's recorded ``x-routerlab-latency-ms``; a reply without
    one (imported outputs) counts ``400 ms + 15 ms per output token`` of its own and flags the sum
    as estimated."""
    total, estimated = 0.0, False
    for r, u in zip(replies, usage, strict=True):
        v = _header(r, LATENCY_HEADER)
        if v is None:
            total += LATENCY_BASE_MS + LATENCY_PER_TOKEN_MS * (u.output_tokens if u is not None else 0)
            estimated = True
        else:
            total += float(v)
    return total, estimated


def _variant_row(
    item: EvalItem,
    query: PreparedQuery,
    policy: RouterPolicy,
    index: dict[tuple[str, str, str], list[RecordedResponse]],
    tier_index: int,
    signal: Signal,
    k: int,
    prices: PriceBook,
    keys: dict[str, str],
) -> tuple[dict[str, Any], TierReply] | None:
    """One (item, tier, variant) row and the accounted call, by the router's own functions
    (:func:`~routerlab.decision.account_replies`, :func:`~routerlab.decision.quote_worst_case`);
    None when a k-sample variant (or the single requests completing a short n=k reply) was not
    recorded."""
    tier = policy.tiers[tier_index]
    n_requests, samples = call_shape(tier, signal, k)
    api_key = keys.get(tier.api_key_env) if tier.api_key_env else None
    max_tokens = effective_max_tokens(policy, tier_index, query.complexity)
    call = TierCall(tier_index, tier, signal, k, max_tokens, n_requests, samples, policy, query.messages, api_key)
    played: Counter[tuple[str, str, str]] = Counter()

    def play(specs: Sequence[Any]) -> list[Reply] | None:
        out: list[Reply] = []
        for s in specs:
            key = request_key(s.method, s.url, s.content())
            recorded = index.get(key, [])
            n = played[key]
            if n >= len(recorded):
                return None
            played[key] = n + 1
            r = recorded[n]
            out.append(Reply(r.status, dict(r.headers), r.body))
        return out

    got = play(call.requests())
    if got is None:
        if signal == "none":
            raise ReplayMissError(
                f"item {item.id!r}, tier {tier.name!r}, model {tier.model!r}: the single call is not recorded",
                item_id=item.id,
                tier=tier.name,
                model=tier.model,
            )
        return None  # this k-sample variant was not recorded (e.g. a single-answer dataset)
    replies = got
    worst = quote_worst_case(prices, call, query)
    tr = account_replies(prices, tier, replies, samples, worst, allow_short=True)
    short = {"missing": 0, "topup_worst_pico": 0, "short_cost_pico": 0, "short_reserve_pico": 0}
    short_latency = 0.0
    if tr.error is None and tr.missing > 0:  # completed by single requests, as the router does
        top_call = replace(call, top_up=tr.missing, n_requests=tr.missing, samples=tr.missing)
        more = play(top_call.requests())
        if more is None:
            return None
        top_worst = quote_worst_case(prices, top_call, query)
        short_latency = _latency(replies, tr.reply_usage)[0]
        short = {
            "missing": tr.missing,
            "topup_worst_pico": to_pico(top_worst),
            "short_cost_pico": to_pico(tr.cost_usd),
            "short_reserve_pico": to_pico(tr.reserve_usd),
        }
        replies = replies + more
        tr = account_replies(prices, tier, replies, samples, worst + top_worst)
    latency, lat_est = _latency(replies, tr.reply_usage)
    row = {
        "variant": "single" if signal == "none" else f"k{k}",
        "k": samples,
        "n_requests": tr.n_requests,  # every request made, completions included
        "error_kind": None if tr.error is None else tr.error.kind,
        "fatal": bool(tr.error is not None and not tr.error.retryable),
        "unusable": reply_unusable_bits(tr) if tr.error is None else 0,
        "finish_reason": tr.first_finish_reason(),
        "cost_usd": float(tr.cost_usd),
        "cost_pico": to_pico(tr.cost_usd),
        "worst_pico": to_pico(worst),
        "reserve_pico": to_pico(tr.reserve_usd),
        "input_tokens": tr.usage.input_tokens,
        "output_tokens": tr.usage.output_tokens,
        "cached_tokens": tr.usage.cache_read_tokens,
        "usage_estimated": any(
            u is not None and _header(r, ESTIMATED_HEADER) is not None
            for r, u in zip(replies, tr.reply_usage, strict=True)
        ),
        "latency_ms": latency,
        "latency_estimated": lat_est,
        **short,
        "short_latency_ms": short_latency,
    }
    return row, tr


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
    return default_cache_dir() / "outcomes"


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


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
    answer_pattern = policy.confidence.answer_pattern
    sims = {name: get_similarity(name, answer_pattern=answer_pattern) for name in SIMILARITY_NAMES}
    scorer_fns = {name: get_scorer(name, answer_pattern=policy.confidence.answer_pattern) for name in scorers}
    call_rows: list[dict[str, Any]] = []
    sample_rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="outcome table", unit="item")
    n_tiers = len(policy.tiers)
    for it in items:
        index = load_cassette_index(cdir / cassette_name(it.id))
        query = prepare_query(it.messages, policy.classifier)
        for t in range(n_tiers):
            variants: list[tuple[Signal, int]] = [("none", 1)]
            if t < n_tiers - 1:
                variants += [("consistency", k) for k in ks]
            for signal, k in variants:
                got = _variant_row(it, query, policy, index, t, signal, k, prices, keys)
                if got is None:
                    continue
                row, tr = got
                texts = tr.texts
                tier = policy.tiers[t]
                base = {
                    "item_id": it.id,
                    "complexity": query.complexity,
                    "tier_index": t,
                    "tier": tier.name,
                    "model": tier.model,
                }
                for name, sim in sims.items():
                    if signal == "none" or len(texts) < 2:
                        row[f"agree_{name}"] = np.nan
                    elif tr.tool_calls:  # the router compares tool calls, not texts
                        row[f"agree_{name}"] = sample_agreement(texts, tr.tool_calls, name, answer_pattern)
                    else:
                        row[f"agree_{name}"] = agreement(texts, sim)
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
    for col in ("reserve_pico", "topup_worst_pico", "short_cost_pico", "short_reserve_pico", "missing", "unusable"):
        calls[col] = calls[col].astype("int64")
    return calls, pd.DataFrame(sample_rows)
