"""The vectorised sweep equals the decision procedure itself, on random policies and random outcome tables.

The reference is :func:`routerlab.workbench.reference.simulate_reference`: the
router's own ``plan_route`` generator answered from the outcome table. The
tables here are synthetic and full of everything the router tells apart:
429, 5xx, 529, timeouts (maybe billed), unparseable 2xx replies, tier-local
4xx (auth, permission, not found, context length, too large, unsupported
parameter, quota), request-level 400s, fewer samples than asked (and short
n=k replies completed by single requests, or kept short by the cap), empty /
cut-off / filtered answers, unpriced replies, agreements exactly at the
threshold, and cost caps that bind in both cap modes. Every comparison names
its seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from routerlab.classifier import COMPLEXITY_CLASSES
from routerlab.errors import PROVIDER_ERRORS, DataError
from routerlab.learned import DENSE_FEATURES, Hashing, StartRouter, TierModel
from routerlab.policy import policy_from_dict
from routerlab.workbench import reference
from routerlab.workbench.outcomes import PICO, Outcomes
from routerlab.workbench.reference import simulate_reference
from routerlab.workbench.sweep import NO_CHECK, PolicyPoint, SimResult, simulate, simulate_cut

SEEDS = list(range(40))
LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)  # agreements and thresholds share values: ties at the threshold happen
SIMS = ["answer", "difflib"]
SCORERS = ["s1", "s2"]
# every concrete provider error kind the router tells apart (the untyped base classes left out)
RETRYABLE = [k for k, c in PROVIDER_ERRORS.items() if c.retryable and k != "retryable"]
FATAL = [k for k, c in PROVIDER_ERRORS.items() if not c.retryable and k != "fatal"]
ESCALATE = ["empty", "length", "content_filter"]


def random_router(n_tiers: int, seed: int) -> StartRouter:
    """A learned start router with random weights on the hashed features (no training needed)."""
    rng = random.Random(seed)
    h = Hashing(n_features=64, word_ngrams=(1, 2), char_ngrams=(2, 3))
    top = h.n_features + len(DENSE_FEATURES)
    tiers = tuple(
        TierModel(rng.uniform(-1, 1), tuple((i, rng.uniform(-3, 3)) for i in sorted(rng.sample(range(top), 30))), 0.5)
        for _ in range(n_tiers - 1)
    )
    return StartRouter(h, tiers)


WORDS = "what is the capital explain why compare design a proof step by step list three".split()


def _ladder(n_tiers: int) -> Any:
    tiers = [
        {
            "name": f"t{i}",
            "provider": "openai" if i % 2 == 0 else "anthropic",
            "model": f"model-{i}",
            "base_url": f"https://host-{i}.example/v1",
            "price": {"input_usd_per_mtok": str(i + 1), "output_usd_per_mtok": str(2 * i + 2)},
        }
        for i in range(n_tiers)
    ]
    return policy_from_dict({"schema_version": 1, "tiers": tiers})


def _reply(rng: random.Random, worst: int) -> dict[str, Any]:
    """One call's recorded outcome, drawn over every kind the router distinguishes."""
    u = rng.random()
    cost, reserve, kind = rng.randint(1, max(worst, 1)), 0, None
    if u < 0.55:
        pass  # an answer
    elif u < 0.65:
        kind, cost = rng.choice(["rate_limit", "server", "overloaded", "connection"]), 0
    elif u < 0.72:  # a timeout: maybe billed (the cap reserves it), nothing parsed
        kind, cost, reserve = "timeout", 0, rng.choice([0, worst // 2, worst])
    elif u < 0.80:  # an unparseable 2xx (alone, or beside parsed samples that were paid for)
        kind, reserve = "malformed", rng.randint(1, max(worst, 1))
        cost = rng.choice([0, cost])
    elif u < 0.85:  # fewer samples than asked: paid, not reserved
        kind = "malformed"
    elif u < 0.93:
        kind, cost = rng.choice(FATAL), 0
    else:  # an answer whose other request went unpriced
        reserve = rng.randint(0, max(worst, 1))
    return {
        "error_kind": kind,
        "fatal": kind in FATAL,
        "cost_pico": cost,
        "worst_pico": worst,
        "reserve_pico": reserve,
    }


def _votes(rng: random.Random, m: int, bits0: int) -> dict[str, Any]:
    """A majority pick among ``m`` samples per similarity: index, its agreement, its unusable bits."""
    out: dict[str, Any] = {}
    for s in SIMS:
        j = rng.randrange(m)
        out[f"pick_{s}"] = j
        out[f"agree_pick_{s}"] = rng.choice(LEVELS)
        out[f"pbits_{s}"] = bits0 if j == 0 else (0 if rng.random() < 0.7 else rng.choice([1, 2, 4]))
    return out


def _no_votes() -> dict[str, Any]:
    return {c: v for s in SIMS for c, v in ((f"pick_{s}", -1), (f"agree_pick_{s}", np.nan), (f"pbits_{s}", 0))}


def random_table(seed: int, *, variant_of: Outcomes | None = None) -> Outcomes:
    """A synthetic outcome table: 1-4 tiers, k in {2, 3}, adaptive-k draws to 3-5 samples after k=2 (failed
    draws included), majority picks, every failure kind, NaN qualities; on about half the tables with two
    or more tiers, a temperature variant (the same items and shape, other draws, a non-final tier's samples
    at another temperature). ``variant_of``: build that variant of the given table."""
    rng = random.Random(seed)
    if variant_of is None:
        n_tiers = rng.randint(1, 4)
        n_items = rng.randint(5, 30)
        ks = [2, 3] if n_tiers > 1 else []
        k_max = rng.choice([2, 3, 5, 5]) if ks else 2
        classes = [rng.choice(COMPLEXITY_CLASSES) for _ in range(n_items)]
        # sometimes one non-final tier was logged greedy-only (no k samples): policies check the others only
        gap = rng.randrange(n_tiers - 1) if n_tiers >= 3 and rng.random() < 0.4 else None
    else:
        n_tiers, n_items, ks = len(variant_of.tiers), variant_of.n_items, list(variant_of.ks)
        k_max, gap = variant_of.dense().k_max, SHAPES[variant_of.key]
        classes = list(variant_of.items["complexity"])
    policy = _ladder(n_tiers)
    rows: list[dict[str, Any]] = []
    sample_rows: list[dict[str, Any]] = []
    for i in range(n_items):
        bad_request = rng.random() < 0.08  # every tier rejects it: the route raises the invalid-request error
        for t in range(n_tiers):
            sampled = t < n_tiers - 1 and t != gap
            variants = [("single", 1)] + ([(f"k{k}", k) for k in ks] if sampled else [])
            for variant, k in variants:
                worst = rng.randint(1, 10**6) * (t + 1) * k
                r = _reply(rng, worst)
                if bad_request:
                    r = {**r, "error_kind": "invalid_request", "fatal": True, "cost_pico": 0, "reserve_pico": 0}
                failed = r["error_kind"] is not None
                short = {"missing": 0, "topup_worst_pico": 0, "short_cost_pico": 0, "short_reserve_pico": 0}
                short_lat = 0.0
                if k > 1 and t % 2 == 0 and not failed and rng.random() < 0.5:  # n=k answered short, completed
                    part = rng.randint(0, r["cost_pico"])
                    short = {
                        "missing": rng.randint(1, k - 1),
                        "topup_worst_pico": rng.randint(1, 6 * worst),
                        "short_cost_pico": part,
                        "short_reserve_pico": rng.choice([0, r["reserve_pico"]]),
                    }
                    short_lat = round(rng.uniform(1, 1000), 3)
                bits = 0 if failed or rng.random() < 0.7 else rng.choice([1, 2, 3, 4, 6])
                q = {f"q_{s}": (np.nan if rng.random() < 0.1 else rng.choice([0.0, 0.5, 1.0])) for s in SCORERS}
                agree = {f"agree_{s}": (np.nan if k == 1 else rng.choice(LEVELS)) for s in SIMS}
                text = "" if failed else f"answer {rng.randint(0, 3)}"
                votes = _votes(rng, k, bits) if k > 1 and not failed else _no_votes()
                for j in range(k if not failed else 0):  # the samples: the first is the row's answer
                    sq = q if j == 0 else {f"q_{s}": rng.choice([0.0, 0.5, 1.0, np.nan]) for s in SCORERS}
                    st = text if j == 0 else f"answer {rng.randint(0, 3)}"
                    sample_rows.append({"item_id": f"i{i}", "tier_index": t, "variant": variant, "sample": j,
                                        "text": st, **sq})  # fmt: skip
                rows.append(
                    {
                        "item_id": f"i{i}",
                        "complexity": classes[i],
                        "tier_index": t,
                        "tier": f"t{t}",
                        "model": f"model-{t}",
                        "variant": variant,
                        "k": k,
                        "draw": 0,
                        "n_requests": k if t % 2 else 1,
                        **r,
                        "cost_usd": r["cost_pico"] / 1e12,
                        "input_tokens": rng.randint(0, 500),
                        "output_tokens": 0 if failed else rng.randint(1, 300),
                        "cached_tokens": 0,
                        "usage_estimated": False,
                        "latency_ms": round(rng.uniform(5, 3000), 3) + short_lat,
                        "latency_estimated": False,
                        "unusable": bits,
                        "finish_reason": "length" if bits & 2 else "stop",
                        **short,
                        "short_latency_ms": short_lat,
                        **agree,
                        **votes,
                        **q,
                        "text": text,
                    }
                )
                if variant != "k2" or failed:
                    continue
                for m in range(3, k_max + 1):  # adaptive k's draws, each one single request; a failure ends them
                    dw = rng.randint(1, 10**6) * (t + 1)
                    dr = _reply(rng, dw)
                    if dr["error_kind"] == "malformed" and dr["cost_pico"] and rng.random() < 0.5:
                        dr = {**dr, "error_kind": None, "reserve_pico": 0}
                    dfail = dr["error_kind"] is not None
                    dbits = 0 if dfail or rng.random() < 0.7 else rng.choice([1, 2, 4])
                    dq = {f"q_{s}": (np.nan if rng.random() < 0.1 else rng.choice([0.0, 0.5, 1.0])) for s in SCORERS}
                    dtext = "" if dfail else f"answer {rng.randint(0, 3)}"
                    rows.append(
                        {
                            "item_id": f"i{i}", "complexity": classes[i], "tier_index": t, "tier": f"t{t}",
                            "model": f"model-{t}", "variant": f"d{m}", "k": 1, "draw": m, "n_requests": 1, **dr,
                            "cost_usd": dr["cost_pico"] / 1e12, "input_tokens": rng.randint(0, 500),
                            "output_tokens": 0 if dfail else rng.randint(1, 300), "cached_tokens": 0,
                            "usage_estimated": False, "latency_ms": round(rng.uniform(5, 3000), 3),
                            "latency_estimated": False, "unusable": dbits, "finish_reason": "stop", "missing": 0,
                            "topup_worst_pico": 0, "short_cost_pico": 0, "short_reserve_pico": 0,
                            "short_latency_ms": 0.0,
                            **{f"agree_{s}": (np.nan if dfail else rng.choice(LEVELS)) for s in SIMS},
                            **(_no_votes() if dfail else _votes(rng, m, bits)),
                            **dq, "text": dtext,
                        }
                    )  # fmt: skip
                    if dfail:
                        break
                    sample_rows.append({"item_id": f"i{i}", "tier_index": t, "variant": f"d{m}", "sample": m - 1,
                                        "text": dtext, **dq})  # fmt: skip
    calls = pd.DataFrame(rows)
    for c in ("cost_pico", "worst_pico", "reserve_pico", "topup_worst_pico", "short_cost_pico", "short_reserve_pico"):
        calls[c] = calls[c].astype("int64")
    samples = pd.DataFrame(
        sample_rows, columns=["item_id", "tier_index", "variant", "sample", "text", *[f"q_{s}" for s in SCORERS]]
    )
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "complexity": classes,
            "class_index": [COMPLEXITY_CLASSES.index(c) for c in classes],
            "position": np.arange(n_items),
            "request_text": [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(n_items)],
        }
    )
    if variant_of is not None:
        items["request_text"] = variant_of.items["request_text"]
    o = Outcomes(
        calls=calls,
        samples=samples,
        items=items,
        tiers=[t.name for t in policy.tiers],
        models=[t.model for t in policy.tiers],
        ks=ks,
        similarities=list(SIMS),
        scorers=list(SCORERS),
        policy=policy,
        key=f"synthetic-{seed}" + ("" if variant_of is None else "-variant"),
    )
    SHAPES[o.key] = gap
    if variant_of is None and n_tiers > 1 and rng.random() < 0.5:
        hot = random_table(seed + 7919, variant_of=o)
        tier = rng.randrange(n_tiers - 1)
        hot.policy = policy.with_sample_temperatures([1.3 if i == tier else None for i in range(n_tiers - 1)])
        o.variants[hot.temperatures] = hot
    return o


SHAPES: dict[str, int | None] = {}  # table key -> its greedy-only tier (a variant keeps its table's)


def random_points(o: Outcomes, n: int, seed: int) -> list[PolicyPoint]:
    """Random policies over every knob; caps drawn from the table's worst cases so that they bind; the
    tiers that check drawn among those with samples (all of them, or a subset)."""
    rng = random.Random(seed)
    t = len(o.tiers)
    sampled = sorted(set(o.calls.loc[o.calls["variant"] != "single", "tier_index"]))
    worst = o.calls["worst_pico"].to_numpy()
    pts = []
    for _ in range(n):
        start = tuple(rng.randrange(t) for _ in range(3))
        cap = None
        if rng.random() < 0.6:
            cap = Decimal(int(rng.choice(worst) * rng.choice([0.5, 1, 1.5, 2, 3]))) / PICO
        cascade = rng.random() < 0.8
        mode = rng.choice(["worst_case", "spent"])
        esc = None if rng.random() < 0.5 else tuple(x for x in ESCALATE if rng.random() < 0.5)
        if rng.random() < 0.85:  # a one-tier ladder gets checked policies too: nothing to check, same as none
            classes = tuple(c for c in COMPLEXITY_CLASSES if rng.random() < 0.7) or ("medium",)
            thr = tuple(rng.choice(LEVELS) for _ in range(t - 1))
            k = rng.choice(o.ks) if o.ks else 2
            tiers: tuple[int, ...] | None = None
            if t > 1 and (len(sampled) < t - 1 or rng.random() < 0.3):
                tiers = tuple(x for x in sampled if rng.random() < 0.7) or tuple(sampled[:1]) or None
            if t > 1 and not sampled:
                continue
            answer = rng.choice(["first", "majority"])
            top = o.dense().k_max
            k_max = rng.randint(3, top) if k == 2 and top > 2 and rng.random() < 0.75 else None
            share = rng.choice([*LEVELS[1:], 0.6, 0.7])
            pts.append(
                PolicyPoint(
                    start, cascade, rng.choice(SIMS), k, classes, thr, cap, tiers, mode, esc, answer, k_max, share
                )
            )
        else:
            pts.append(PolicyPoint(start, cascade, NO_CHECK, 2, COMPLEXITY_CLASSES, (), cap, None, mode, esc))
        if o.variants and rng.random() < 0.4:  # the temperature knob: simulated on the table's variant
            vec = rng.choice(sorted(o.variants))
            temps = tuple(None if a == b else a for a, b in zip(vec, o.temperatures, strict=True))
            pts[-1] = replace(pts[-1], temperatures=temps)
        if t > 1 and rng.random() < 0.25:  # a learned start router picks each item's start tier instead
            thr = tuple(rng.choice([0.0, 0.3, 0.5, 0.7, 1.01]) for _ in range(t - 1))
            pts[-1] = replace(pts[-1], router=random_router(t, seed), router_thresholds=thr)
    return pts


def mismatches(fast: SimResult, ref: SimResult) -> list[str]:
    """What differs between two simulations (empty: identical)."""
    out = []
    for name in ("tier", "variant", "cost_pico", "escalations", "premium_call", "sample"):
        a, b = getattr(fast, name), getattr(ref, name)
        if name in ("variant", "sample"):  # these only mean something where a tier answered
            a, b = np.where(ref.tier >= 0, a, 0), np.where(ref.tier >= 0, b, 0)
        bad = np.argwhere(a != b)
        if len(bad):
            p, n = bad[0]
            out.append(f"{name} differs at policy {p}, item {n}: sweep {a[p, n]} vs reference {b[p, n]}")
    if not np.allclose(fast.latency_ms, ref.latency_ms, rtol=1e-9, atol=1e-6):
        out.append("latency_ms differs")
    for s in ref.quality:
        if not np.array_equal(fast.quality[s], ref.quality[s], equal_nan=True):
            out.append(f"quality {s} differs")
    return out


def check(seed: int, n_points: int = 40, sim: Callable[..., SimResult] = simulate) -> tuple[list[str], int]:
    o = random_table(seed)
    points = random_points(o, n_points, seed)
    return mismatches(sim(o, points), simulate_reference(o, points)), len(points) * o.n_items


@pytest.mark.parametrize("seed", SEEDS)
def test_sweep_equals_the_decision_procedure_on_random_tables(seed: int) -> None:
    print(f"seed={seed} (reproduce: check({seed}) in tests/test_reference.py)")
    problems, pairs = check(seed)
    assert pairs > 0
    assert not problems, f"seed {seed}: {problems}"


def test_the_random_tables_exercise_every_branch() -> None:
    """The property above means something only if the tables hit the cases it is about."""
    kinds: set[str] = set()
    seen = {"fallback": 0, "failed": 0, "cap_blocked": 0, "accepted_k": 0, "low_confidence": 0, "unusable": 0}
    seen |= {"short_kept": 0, "topped_up": 0, "answer_after_fatal": 0, "request_error": 0}
    seen |= {"draw_failed": 0, "draw_capped": 0, "draws_short_of_share": 0, "drawn_answer": 0, "majority_pick": 0}
    seen |= {"temperature_points": 0}
    for seed in SEEDS[:20]:
        o = random_table(seed)
        kinds |= set(o.calls["error_kind"].dropna())
        pts = random_points(o, 40, seed)
        seen["temperature_points"] += sum(p.temperatures is not None for p in pts)
        table = reference.recorded_replies(o)
        for pt in pts:
            policy = pt.to_policy(o.policy)
            for iid, cls in zip(o.items["item_id"], o.items["complexity"], strict=True):
                out, _, _ = reference.route_recorded(policy, iid, cls, table, reference.PriceBook())
                outcomes = [a.outcome for a in out.attempts]
                seen["fallback"] += "fallback" in outcomes
                seen["failed"] += out.result is None
                seen["cap_blocked"] += "skipped_cost_cap" in outcomes
                seen["low_confidence"] += "low_confidence" in outcomes
                seen["unusable"] += "unusable" in outcomes
                messages = [a.error_message or "" for a in out.attempts]
                seen["short_kept"] += any("completing them could exceed" in m for m in messages)
                seen["topped_up"] += any(table[(iid, a.tier_index, f"k{pt.k}")].short is not None
                                         for a in out.attempts if a.outcome in ("accepted", "low_confidence")
                                         and a.similarity is not None)  # fmt: skip
                seen["answer_after_fatal"] += out.result is not None and any(
                    a.error_kind in FATAL for a in out.attempts
                )
                seen["request_error"] += type(out.error).__name__ == "InvalidRequestError"
                seen["draw_failed"] += any("drawing sample" in m for m in messages)
                seen["draw_capped"] += any("another draw could exceed" in m for m in messages)
                seen["draws_short_of_share"] += any("samples behind the answer" in m for m in messages)
                seen["drawn_answer"] += out.result is not None and out.answer_sample >= 2
                seen["majority_pick"] += out.result is not None and out.answer_sample == 1
                seen["accepted_k"] += any(a.outcome == "accepted" and a.calls > 0 and a.similarity is not None
                                          for a in out.attempts)  # fmt: skip
    assert kinds == set(RETRYABLE) | set(FATAL)
    assert all(v > 20 for v in seen.values()), f"too few: {[(k, v) for k, v in seen.items() if v <= 20]}"
    gaps = [s for s in SEEDS if len(set(random_table(s).calls.query("variant != 'single'")["tier_index"]))
            < len(random_table(s).tiers) - 1]  # fmt: skip
    assert len(gaps) >= 3  # greedy-only non-final tiers, with points that check the other tiers only


@pytest.mark.parametrize(
    "plant",
    [
        "ignore_unusable",
        "ignore_top_up",
        "ignore_reserve",
        "strict_threshold",
        "fallback_to_single",
        "free_draws",
        "first_not_majority",
        "draws_always_agree",
        "temperature_ignored",
    ],
)
def test_a_planted_divergence_is_caught(plant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant a bug in the sweep's inputs or logic; the property check must notice within a few seeds."""
    from routerlab.workbench import kernel as kernel_mod
    from routerlab.workbench import sweep as sweep_mod

    real_dense = Outcomes.dense

    def dense(self: Outcomes) -> Any:
        a = real_dense(self)
        if plant == "ignore_unusable":
            a = replace(a, s_bad=np.zeros_like(a.s_bad), k_bad=np.zeros_like(a.k_bad))
        elif plant == "ignore_top_up":  # a short n=k reply always completed, whatever the cap says
            a = replace(a, k_tuw=np.zeros_like(a.k_tuw))
        elif plant == "ignore_reserve":
            a = replace(a, s_res=np.zeros_like(a.s_res), k_res=np.zeros_like(a.k_res))
        elif plant == "strict_threshold":  # agree > thr instead of agree >= thr
            a = replace(a, agree=np.nextafter(a.agree, -np.inf))
        elif plant == "free_draws":  # adaptive k's draws cost nothing
            a = replace(a, d_cost=np.zeros_like(a.d_cost))
        elif plant == "first_not_majority":  # the majority answer read as the first sample
            a = replace(a, k_pick=np.zeros_like(a.k_pick), d_pick=np.zeros_like(a.d_pick))
        elif plant == "draws_always_agree":  # the share after each draw read as unanimous
            a = replace(
                a,
                d_agree=np.where(np.isnan(a.d_agree), np.nan, 1.0),
                d_pagree=np.where(np.isnan(a.d_pagree), np.nan, 1.0),
            )
        return a

    if plant == "temperature_ignored":  # the sweep simulates every point on the table's own temperatures
        monkeypatch.setattr(kernel_mod, "by_temperature", lambda o, pts: None)
        caught = [seed for seed in SEEDS[:8] if check(seed)[0]]
    elif plant == "fallback_to_single":
        real_simulate = sweep_mod.simulate

        def simulate_bug(o: Outcomes, points: Any, **kw: Any) -> SimResult:
            r = real_simulate(o, points, **kw)
            return replace(r, variant=np.zeros_like(r.variant), quality={s: q * 0 for s, q in r.quality.items()})

        caught = [seed for seed in SEEDS[:8] if check(seed, sim=simulate_bug)[0]]
    else:
        monkeypatch.setattr(Outcomes, "dense", dense)
        caught = [seed for seed in SEEDS[:8] if check(seed)[0]]
    assert caught, f"planted divergence {plant!r} went unnoticed"


def test_reference_refuses_a_table_whose_error_kind_contradicts_its_fatal_flag() -> None:
    o = random_table(1)
    calls = o.calls.copy()
    i = calls.index[calls["error_kind"].isin(RETRYABLE)][0]
    calls.loc[i, "fatal"] = True
    with pytest.raises(DataError, match="the table says otherwise"):
        simulate_reference(replace(o, calls=calls), [replace(p, temperatures=None) for p in random_points(o, 1, 1)])


@pytest.mark.parametrize("damage", ["drop_single", "duplicate_k", "k_at_final_tier"])
def test_an_incomplete_table_is_refused_not_read_as_free_calls(damage: str) -> None:
    o = random_table(3)
    calls = o.calls
    final = len(o.tiers) - 1
    if damage == "drop_single":
        calls = calls.drop(calls.index[calls["variant"] == "single"][0])
    elif damage == "duplicate_k":
        k2 = calls[calls["variant"] == "k2"]
        calls = pd.concat([calls.drop(k2.index[1]), k2.iloc[[0]]], ignore_index=True)  # count unchanged
    else:
        extra = calls[calls["variant"] == "k2"].iloc[[0]].assign(tier_index=final)
        calls = pd.concat([calls, extra], ignore_index=True)
    broken = replace(o, calls=calls)
    with pytest.raises(DataError, match="outcome table"):
        simulate(broken, random_points(o, 3, 3))


def test_classes_without_an_item_in_the_split_start_at_the_final_tier() -> None:
    """A policy is never exported with cheap settings for a class the split had no item of."""
    from routerlab.workbench.sweep import Grid, absent_classes, monotone_starts

    o = random_table(2)
    only_simple = (o.items["complexity"] == "simple").to_numpy()
    if not only_simple.any():
        pytest.skip("seed 2 has no simple item")
    assert set(absent_classes(o, only_simple)) == {"medium", "complex"}  # only simple items selected
    grid = Grid(tuple(monotone_starts(len(o.tiers))), ("answer",), tuple(o.ks) or (2,))
    last = len(o.tiers) - 1
    for pt in grid.points(o, mask=only_simple):
        assert pt.start[1] == last and pt.start[2] == last


def threshold_families(o: Outcomes, n_bases: int, seed: int) -> list[PolicyPoint]:
    """Random policies, each with every threshold combination of LEVELS (ties with the agreements
    included), shuffled among policies without a check: the groups the cut-point path shares."""
    rng = random.Random(seed)
    t = len(o.tiers)
    pts = []
    for base in random_points(o, n_bases, seed):
        if base.similarity == NO_CHECK or t == 1:
            pts.append(base)
            continue
        combos = list(itertools.product(LEVELS, repeat=t - 1))
        pts += [replace(base, thresholds=tuple(c)) for c in rng.sample(combos, min(len(combos), 9))]
    rng.shuffle(pts)
    return pts


@pytest.mark.parametrize("seed", SEEDS[:20])
def test_the_cut_point_sweep_equals_the_decision_procedure(seed: int) -> None:
    print(f"seed={seed}")
    o = random_table(seed)
    points = threshold_families(o, 12, seed)
    if len(o.tiers) > 1:  # families larger than their 2^(T-1) branch simulations: the shared path runs
        sizes: dict[PolicyPoint, int] = {}
        for p in points:
            if p.similarity != NO_CHECK and p.cascade:
                sizes[replace(p, thresholds=())] = sizes.get(replace(p, thresholds=()), 0) + 1
        assert any(v > 2 ** (len(o.tiers) - 1) for v in sizes.values()) or not sizes
    fast = simulate_cut(o, points)
    assert not mismatches(fast, simulate_reference(o, points)), seed
    assert not mismatches(fast, simulate(o, points)), seed


# ---------------------------------------------------------------- the per-class decomposition (issue 15)

LATENCY = ["latency_p50_ms", "latency_p95_ms"]


def decomposed_check(seed: int) -> list[str]:
    """What differs between the decomposed sweep's table and the reference's routes summarised alike, on a
    random table, random policies (threshold families and repeats among them) and a random item mask."""
    from routerlab.workbench.sweep import summarize, sweep

    o = random_table(seed)
    pts = random_points(o, 30, seed) + threshold_families(o, 6, seed + 1)
    rng = random.Random(seed)
    pts += rng.sample(pts, 5)  # repeated policies: one projection each, the same rows
    mask = np.array([rng.random() < 0.7 for _ in range(o.n_items)])
    mask[rng.randrange(o.n_items)] = True
    fast = sweep(o, pts, mask=mask, bootstrap=25, seed=seed)
    ref = summarize(o, pts, simulate_reference(o, pts), mask=mask, bootstrap=25, seed=seed)
    out = []
    for col in ref.columns:  # every column exact (integer sums), latency to float rounding (summed in steps)
        a, b = fast[col], ref[col]
        same = np.allclose(a, b, rtol=1e-9, atol=1e-6) if col in LATENCY else a.equals(b)
        if not same:
            out.append(col)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_the_decomposed_sweep_equals_the_decision_procedure(seed: int) -> None:
    print(f"seed={seed} (reproduce: decomposed_check({seed}) in tests/test_reference.py)")
    assert decomposed_check(seed) == [], seed


def test_the_decomposed_sweep_equals_the_undecomposed_one_bit_for_bit() -> None:
    from routerlab.workbench.sweep import sweep

    for seed in SEEDS[:10]:
        print(f"seed={seed}")
        o = random_table(seed)
        pts = random_points(o, 30, seed)
        a = sweep(o, pts, bootstrap=25, seed=seed)
        b = sweep(o, pts, bootstrap=25, seed=seed, decompose=False)
        pd.testing.assert_frame_equal(a, b, check_exact=True)  # latency too: the same per-item sums


@pytest.mark.parametrize("work", [1, 200, 10**6])
def test_above_the_latency_work_the_frontier_gets_the_exact_latencies(
    work: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ``LATENCY_WORK`` policy-items the default sweep still gives every frontier policy (of any
    scorer) the latencies ``latency=True`` gives, in passes of a few policies; the rest are NaN."""
    from routerlab.workbench import decompose
    from routerlab.workbench.frontier import frontier_positions
    from routerlab.workbench.sweep import sweep

    monkeypatch.setattr(decompose, "LATENCY_WORK", work)
    passes: list[int] = []
    real = decompose.sweep_sums

    def counted(o: Outcomes, pts: list[PolicyPoint], **kw: object) -> pd.DataFrame:
        if kw.get("latency") is True:
            passes.append(len(pts))
        return real(o, pts, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(decompose, "sweep_sums", counted)
    for seed in SEEDS[:8]:
        print(f"seed={seed}")
        o = random_table(seed)
        pts = random_points(o, 30, seed) + threshold_families(o, 4, seed + 1)
        rng = random.Random(seed)
        mask = np.array([rng.random() < 0.7 for _ in range(o.n_items)])
        mask[rng.randrange(o.n_items)] = True
        passes.clear()
        got = sweep(o, pts, mask=mask, bootstrap=0, seed=seed)
        full = sweep(o, pts, mask=mask, bootstrap=0, seed=seed, latency=True)
        front = sorted({i for sc in o.scorers for i in frontier_positions(full, quality=f"quality_{sc}")})
        n = int(mask.sum())
        if len(pts) * n <= work:  # below the work: every policy's, in the sweep itself
            assert not passes
            pd.testing.assert_frame_equal(got, full, check_exact=True)
            continue
        assert front and sum(passes) == len(front) and max(passes) <= max(1, work // n), (passes, front)
        other = np.setdiff1d(np.arange(len(pts)), front)
        for col in LATENCY:
            assert np.allclose(got[col].iloc[front], full[col].iloc[front], rtol=1e-12, atol=1e-9), (seed, col)
            assert got[col].iloc[other].isna().all(), (seed, col)
        pd.testing.assert_frame_equal(got.drop(columns=LATENCY), full.drop(columns=LATENCY), check_exact=True)
        assert not sweep(o, pts, mask=mask, bootstrap=0, latency=False)[LATENCY].notna().any().any()


@pytest.mark.parametrize("plant", ["membership_ignored", "start_of_another_class", "cap_dropped_at_final"])
def test_a_planted_projection_bug_is_caught(plant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A projection that merges policies an item can tell apart must be caught by the property check."""
    from routerlab.workbench import decompose

    real = decompose.project

    def project(pt: PolicyPoint, cls: int, n_tiers: int, base_mask: int) -> PolicyPoint:
        if plant == "membership_ignored":  # the class read as checked whenever any class is
            pt = replace(pt, classes=COMPLEXITY_CLASSES)
        elif plant == "start_of_another_class":
            cls = (cls + 1) % 3
        elif plant == "cap_dropped_at_final" and pt.start[cls] >= n_tiers - 1:
            pt = replace(pt, cap_usd=None)
        return real(pt, cls, n_tiers, base_mask)

    monkeypatch.setattr(decompose, "project", project)
    caught = [seed for seed in SEEDS[:12] if decomposed_check(seed)]
    assert caught, f"planted projection bug {plant!r} went unnoticed"


def test_classes_without_items_are_not_simulated() -> None:
    from routerlab.decision import escalate_mask
    from routerlab.workbench.decompose import plan, project

    o = random_table(3)
    t = len(o.tiers)
    pts = random_points(o, 40, 3)
    only = np.asarray(o.items["class_index"] == o.items["class_index"].iloc[0])
    got = plan(o, pts, mask=only)
    present = COMPLEXITY_CLASSES[int(o.items["class_index"].iloc[0])]
    for name, c in got["classes"].items():
        assert (c["items"] > 0) == (name == present), got
        assert (c["projections"] > 0) == (name == present), got
    # a projection never depends on another class's settings
    base = escalate_mask(o.policy.confidence.escalate_on)
    pt = next(p for p in pts if p.router is None)
    for c in range(3):
        other = tuple(x if i == c else (x + 1) % t for i, x in enumerate(pt.start))
        assert project(pt, c, t, base) == project(replace(pt, start=other), c, t, base)
