"""Tests for routerlab.workbench.frontier on hand-made tables; expected values are worked out in comments."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from routerlab.errors import DataError
from routerlab.workbench.frontier import (
    apgr,
    cost_reduction_at,
    cpt,
    floor_oracle,
    gap_evidence,
    metrics_table,
    oracle,
    oracle_point,
    oracle_savings_share,
    pareto_frontier,
    pgr,
    price_quality_inversions,
    quality_share,
    random_mix,
    rank_agreement,
    single_tier_baselines,
    with_cost_share,
)

Q = "quality_rougeL"


def sweep_table(rows: list[tuple[int, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["policy_id", "cost_per_1k_usd", Q])


def per_item_table(rows: list[tuple[str, int, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "tier_index", "cost_usd", "quality"])


def baselines_table(rows: list[tuple[int, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["tier_index", "tier", "cost_per_1k_usd", "quality"])


# ---------------------------------------------------------------------------
# pareto_frontier


def test_frontier_by_hand() -> None:
    df = sweep_table(
        [
            (0, 1.0, 0.50),  # cheapest: on the frontier
            (1, 2.0, 0.70),  # on the frontier
            (2, 2.0, 0.60),  # same cost as 1, worse: dominated
            (3, 3.0, 0.70),  # same quality as 1, dearer: dominated
            (4, 4.0, 0.90),  # best: on the frontier
            (5, 1.5, 0.40),  # dearer and worse than 0: dominated
            (6, 2.0, 0.70),  # exact tie with 1: 1 kept (the earlier row)
            (7, 0.5, float("nan")),  # no quality: ignored
        ]
    )
    front = pareto_frontier(df, quality=Q)
    assert front["policy_id"].tolist() == [0, 1, 4]
    assert list(front.columns) == list(df.columns)
    assert front.index.tolist() == [0, 1, 2]
    assert front[Q].is_monotonic_increasing
    front.loc[0, Q] = 99.0  # a copy: the input is untouched
    assert df.loc[0, Q] == 0.50


def test_frontier_tie_keeps_the_first_row() -> None:
    # Rows (9, 1.0, 0.5) and (3, 1.0, 0.5) are identical in cost and quality: policy ids are content
    # hashes, not an order, so the first row in table order (the sweep's grid order) is kept.
    df = sweep_table([(9, 1.0, 0.5), (3, 1.0, 0.5), (5, 2.0, 0.8)])
    assert pareto_frontier(df, quality=Q)["policy_id"].tolist() == [9, 5]
    plain = df.drop(columns="policy_id").assign(tag=["first", "second", "third"])
    assert pareto_frontier(plain, quality=Q)["tag"].tolist() == ["first", "third"]


def test_frontier_missing_column_is_a_data_error() -> None:
    with pytest.raises(DataError, match="quality_exact"):
        pareto_frontier(sweep_table([(0, 1.0, 0.5)]), quality="quality_exact")


def _dominates(a: pd.Series, b: pd.Series) -> bool:
    c, q = "cost_per_1k_usd", Q
    return bool(a[c] <= b[c] and a[q] >= b[q] and (a[c] < b[c] or a[q] > b[q]))


def test_frontier_property_random_tables() -> None:
    rng = np.random.default_rng(20240601)
    for _ in range(60):
        n = int(rng.integers(1, 40))
        # Coarse rounding makes ties in cost, in quality and in both common.
        df = pd.DataFrame(
            {
                "policy_id": rng.permutation(n),
                "cost_per_1k_usd": np.round(rng.uniform(0, 5, n), 0),
                Q: np.round(rng.uniform(0, 1, n), 1),
            }
        )
        front = pareto_frontier(df, quality=Q)
        assert len(front) >= 1
        # Sorted by cost with strictly increasing cost and quality.
        assert (np.diff(front["cost_per_1k_usd"]) > 0).all()
        assert (np.diff(front[Q]) > 0).all()
        ids = set(front["policy_id"])
        for _, f in front.iterrows():
            assert not any(_dominates(r, f) for _, r in df.iterrows())
            # Of each group of exact ties, the first row is the one kept.
            same = df[(df["cost_per_1k_usd"] == f["cost_per_1k_usd"]) & (df[Q] == f[Q])]
            assert f["policy_id"] == same["policy_id"].iloc[0]
        for _, r in df[~df["policy_id"].isin(ids)].iterrows():
            dominated = any(_dominates(f, r) for _, f in front.iterrows())
            tied = any(f["cost_per_1k_usd"] == r["cost_per_1k_usd"] and f[Q] == r[Q] for _, f in front.iterrows())
            assert dominated or tied


# ---------------------------------------------------------------------------
# single_tier_baselines


PER_ITEM_2 = per_item_table(
    [
        # tier 0: costs 0.001, 0.003 -> mean 0.002 -> 2.0 per 1k; quality (0.4 + 0.6)/2 = 0.5
        ("a", 0, 0.001, 0.4),
        ("b", 0, 0.003, 0.6),
        # tier 1: costs 0.010, 0.030 -> 20.0 per 1k; quality (0.8 + 1.0)/2 = 0.9
        ("a", 1, 0.010, 0.8),
        ("b", 1, 0.030, 1.0),
    ]
)


def test_single_tier_baselines() -> None:
    base = single_tier_baselines(PER_ITEM_2, tier_names=["small", "large"])
    assert list(base.columns) == ["tier_index", "tier", "cost_per_1k_usd", "quality", "n_items"]
    assert base["tier_index"].tolist() == [0, 1]
    assert base["tier"].tolist() == ["small", "large"]
    assert base["cost_per_1k_usd"].tolist() == pytest.approx([2.0, 20.0])
    assert base["quality"].tolist() == pytest.approx([0.5, 0.9])
    assert base["n_items"].tolist() == [2, 2]
    assert single_tier_baselines(PER_ITEM_2)["tier"].tolist() == ["tier0", "tier1"]


def test_single_tier_baselines_bad_input() -> None:
    with pytest.raises(DataError, match="more than one row"):
        single_tier_baselines(pd.concat([PER_ITEM_2, PER_ITEM_2.iloc[:1]]))
    with pytest.raises(DataError, match="cost_usd"):
        single_tier_baselines(PER_ITEM_2.drop(columns="cost_usd"))
    with pytest.raises(DataError, match="tier_names"):
        single_tier_baselines(PER_ITEM_2, tier_names=["only-one"])


# ---------------------------------------------------------------------------
# random_mix


def test_random_mix_midpoint_of_two_tiers_is_the_average() -> None:
    base = baselines_table([(0, "small", 1.0, 0.4), (1, "large", 5.0, 0.8)])
    mix = random_mix(base, points=5)
    # Costs 1, 2, 3, 4, 5; quality rises 0.1 per dollar: 0.4 ... 0.8.
    assert mix["cost_per_1k_usd"].tolist() == pytest.approx([1, 2, 3, 4, 5])
    assert mix["quality"].tolist() == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8])
    mid = mix.iloc[2]  # cost 3 = (1 + 5)/2: half each, quality (0.4 + 0.8)/2
    assert (mid["share_tier_0"], mid["share_tier_1"]) == pytest.approx((0.5, 0.5))
    assert mid["premium_call_share"] == pytest.approx(0.5)
    assert mid["mix"] == "0.5 small + 0.5 large"
    assert mix.iloc[0]["mix"] == "1 small" and mix.iloc[-1]["mix"] == "1 large"
    assert not mix["dominated"].any()


def test_random_mix_skips_a_tier_below_the_hull() -> None:
    # The chord from (1, 0.5) to (3, 0.9) is at 0.7 when cost = 2; tier 1 (2, 0.55) lies below it.
    base = baselines_table([(0, "a", 1.0, 0.5), (1, "b", 2.0, 0.55), (2, "c", 3.0, 0.9)])
    mix = random_mix(base, points=3)
    assert mix["cost_per_1k_usd"].tolist() == pytest.approx([1.0, 2.0, 3.0])
    assert mix["quality"].tolist() == pytest.approx([0.5, 0.7, 0.9])
    assert (mix["share_tier_1"] == 0.0).all()
    assert mix["share_tier_0"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert mix["premium_call_share"].tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_random_mix_uses_a_middle_tier_on_the_hull() -> None:
    # Chord 0-2 at cost 2 is 0.5 + 0.4/3 = 0.633 < 0.8, so tier 1 (2, 0.8) is a hull vertex.
    base = baselines_table([(0, "a", 1.0, 0.5), (1, "b", 2.0, 0.8), (2, "c", 4.0, 0.9)])
    mix = random_mix(base, points=4)
    # Costs 1, 2, 3, 4 -> 0.5, 0.8, (0.8 + 0.9)/2 = 0.85, 0.9.
    assert mix["quality"].tolist() == pytest.approx([0.5, 0.8, 0.85, 0.9])
    at3 = mix.iloc[2]
    assert (at3["share_tier_0"], at3["share_tier_1"], at3["share_tier_2"]) == pytest.approx((0.0, 0.5, 0.5))


def test_random_mix_marks_points_past_an_inversion_as_dominated() -> None:
    # The premium tier (3, 0.8) scores below tier 1 (2, 0.9): the curve peaks at cost 2 then falls.
    base = baselines_table([(0, "a", 1.0, 0.5), (1, "b", 2.0, 0.9), (2, "c", 3.0, 0.8)])
    mix = random_mix(base, points=3)
    assert mix["quality"].tolist() == pytest.approx([0.5, 0.9, 0.8])
    assert mix["dominated"].tolist() == [False, False, True]


def test_random_mix_arguments() -> None:
    base = baselines_table([(0, "a", 1.0, 0.5), (1, "b", 2.0, 0.9)])
    with pytest.raises(ValueError, match="points"):
        random_mix(base, points=1)
    same_cost = baselines_table([(0, "a", 1.0, 0.5), (1, "b", 1.0, 0.9)])
    one = random_mix(same_cost)
    assert len(one) == 1 and one.iloc[0]["quality"] == 0.9 and one.iloc[0]["share_tier_1"] == 1.0


# ---------------------------------------------------------------------------
# oracle

PER_ITEM_3 = per_item_table(
    [
        # tier costs 0.001 / 0.004 / 0.010 for every item
        # a: tier 0 is as good as premium -> tier 0
        ("a", 0, 0.001, 1.0),
        ("a", 1, 0.004, 1.0),
        ("a", 2, 0.010, 1.0),
        # b: only premium reaches the best (1.0) -> tier 2; with tolerance 0.1, tier 1 (0.9) is enough
        ("b", 0, 0.001, 0.2),
        ("b", 1, 0.004, 0.9),
        ("b", 2, 0.010, 1.0),
        # c: the cheap tier is the best one -> tier 0
        ("c", 0, 0.001, 0.7),
        ("c", 1, 0.004, 0.5),
        ("c", 2, 0.010, 0.6),
    ]
)


def test_oracle_picks_cheapest_adequate_tier() -> None:
    chosen = oracle(PER_ITEM_3)
    assert chosen["item_id"].tolist() == ["a", "b", "c"]
    assert chosen["tier_index"].tolist() == [0, 2, 0]
    assert chosen["quality"].tolist() == pytest.approx([1.0, 1.0, 0.7])
    point = oracle_point(PER_ITEM_3)
    # cost (0.001 + 0.010 + 0.001)/3 * 1000 = 4.0; quality (1 + 1 + 0.7)/3 = 0.9; premium for b only.
    assert point["cost_per_1k_usd"] == pytest.approx(4.0)
    assert point["quality"] == pytest.approx(0.9)
    assert point["premium_call_share"] == pytest.approx(1 / 3)


def test_oracle_tolerance() -> None:
    chosen = oracle(PER_ITEM_3, tolerance=0.1)
    # b: 0.9 >= 1.0 - 0.1 -> tier 1; c: best 0.7, tier 0 still the cheapest adequate.
    assert chosen["tier_index"].tolist() == [0, 1, 0]
    point = oracle_point(PER_ITEM_3, tolerance=0.1)
    # cost (0.001 + 0.004 + 0.001)/3 * 1000 = 2.0; quality (1 + 0.9 + 0.7)/3
    assert point["cost_per_1k_usd"] == pytest.approx(2.0)
    assert point["quality"] == pytest.approx(2.6 / 3)
    assert point["premium_call_share"] == 0.0
    with pytest.raises(ValueError, match="tolerance"):
        oracle(PER_ITEM_3, tolerance=-0.1)


def test_oracle_uses_item_cost_ties_to_lower_tier_and_skips_missing_scores() -> None:
    df = per_item_table(
        [
            ("x", 0, 0.002, 0.8),  # same cost as tier 1 on this item: tier 0 wins the tie
            ("x", 1, 0.002, 0.8),
            ("x", 2, 0.001, 0.5),  # cheapest here but not adequate
            ("y", 0, 0.001, float("nan")),  # unscored: never adequate
            ("y", 1, 0.004, 0.3),
        ]
    )
    assert oracle(df)["tier_index"].tolist() == [0, 1]
    with pytest.raises(DataError, match="no quality score"):
        oracle(per_item_table([("z", 0, 0.001, float("nan"))]))


# ---------------------------------------------------------------------------
# PGR, APGR, CPT


def test_pgr() -> None:
    assert pgr(0.7, weak=0.5, strong=0.9) == pytest.approx(0.5)
    assert pgr(0.5, weak=0.5, strong=0.9) == 0.0
    arr = pgr(np.array([0.5, 0.9, 1.0]), weak=0.5, strong=0.9)
    assert isinstance(arr, np.ndarray)
    assert arr.tolist() == pytest.approx([0.0, 1.0, 1.25])
    assert math.isnan(pgr(0.7, weak=0.6, strong=0.6))
    assert np.isnan(pgr(np.array([0.1, 0.2]), weak=0.6, strong=0.6)).all()


# weak 0.5, strong 0.9 -> PGR = (q - 0.5)/0.4
CURVE = pd.DataFrame(
    {
        "premium_call_share": [0.2, 0.5, 0.6],
        Q: [0.82, 0.74, 0.86],  # PGR 0.8, 0.6 (dominated by the first), 0.9
        "cost_per_1k_usd": [2.0, 5.0, 6.0],  # cost share 0.2, 0.5, 0.6 with premium_cost 10
    }
)


def test_apgr_linear_by_hand() -> None:
    # Corners with anchors: (0, 0), (0.2, 0.8), (0.6, 0.9), (1, 1).
    # Trapezoids: 0.2*(0 + 0.8)/2 = 0.08; 0.4*(0.8 + 0.9)/2 = 0.34; 0.4*(0.9 + 1)/2 = 0.38 -> 0.80.
    assert apgr(CURVE, quality=Q, weak=0.5, strong=0.9) == pytest.approx(0.80)
    # The dominated point (0.5, 0.6) changes nothing. (Interpolating through its running-max value
    # (0.5, 0.8) instead would give 0.3*0.8 + 0.1*0.85 = 0.325 on [0.2, 0.6], not 0.34.)
    assert apgr(CURVE.drop(index=1), quality=Q, weak=0.5, strong=0.9) == pytest.approx(0.80)


def test_apgr_step_by_hand() -> None:
    # Step: 0 on [0, 0.2), 0.8 on [0.2, 0.6), 0.9 on [0.6, 1) -> 0.8*0.4 + 0.9*0.4 = 0.68.
    assert apgr(CURVE, quality=Q, weak=0.5, strong=0.9, interpolation="step") == pytest.approx(0.68)
    with pytest.raises(ValueError, match="interpolation"):
        apgr(CURVE, quality=Q, weak=0.5, strong=0.9, interpolation="spline")  # type: ignore[arg-type]


def test_apgr_anchors_only_and_random_line() -> None:
    empty = CURVE.iloc[0:0]
    # Only the anchors (0, 0) and (1, 1): linear -> triangle 0.5; step -> 0 until x = 1.
    assert apgr(empty, quality=Q, weak=0.5, strong=0.9) == pytest.approx(0.5)
    assert apgr(empty, quality=Q, weak=0.5, strong=0.9, interpolation="step") == 0.0
    # RouteLLM's random router: PGR = x, APGR 0.5 (weak 0, strong 1 so PGR = quality).
    line = pd.DataFrame({"premium_call_share": np.linspace(0, 1, 11), Q: np.linspace(0, 1, 11)})
    assert apgr(line, quality=Q, weak=0.0, strong=1.0) == pytest.approx(0.5)
    assert math.isnan(apgr(CURVE, quality=Q, weak=0.5, strong=0.5))


def test_apgr_better_than_strong_and_out_of_range() -> None:
    # (0.5, PGR 1.2) dominates the strong anchor; the envelope stays at 1.2 to x = 1.
    # Linear: 0.5*(0 + 1.2)/2 + 0.5*1.2 = 0.3 + 0.6 = 0.9. Step: 0.5*1.2 = 0.6.
    better = pd.DataFrame({"premium_call_share": [0.5], Q: [1.2]})
    assert apgr(better, quality=Q, weak=0.0, strong=1.0) == pytest.approx(0.9)
    assert apgr(better, quality=Q, weak=0.0, strong=1.0, interpolation="step") == pytest.approx(0.6)
    # A point beyond x = 1 is ignored: only the anchors remain -> 0.5.
    beyond = pd.DataFrame({"premium_call_share": [1.5], Q: [2.0]})
    assert apgr(beyond, quality=Q, weak=0.0, strong=1.0) == pytest.approx(0.5)


def test_apgr_dollars() -> None:
    # cost_share = cost / 10 = 0.2, 0.5, 0.6: the same curve as the calls version -> 0.80.
    curve = CURVE.drop(columns="premium_call_share")
    assert apgr(curve, x="cost_share", quality=Q, weak=0.5, strong=0.9, premium_cost=10.0) == pytest.approx(0.80)
    shared = with_cost_share(curve, premium_cost=10.0)
    assert shared["cost_share"].tolist() == pytest.approx([0.2, 0.5, 0.6])
    assert apgr(shared, x="cost_share", quality=Q, weak=0.5, strong=0.9) == pytest.approx(0.80)
    with pytest.raises(ValueError, match="premium_cost"):
        apgr(curve, x="cost_share", quality=Q, weak=0.5, strong=0.9)


def test_cpt_by_hand() -> None:
    def c(curve: pd.DataFrame, target: float, **extra: Any) -> float:
        return cpt(curve, target, quality=Q, weak=0.5, strong=0.9, **extra)

    # Envelope corners (0, 0), (0.2, 0.8), (0.6, 0.9), (1, 1); interpolated linearly between the corners
    # that bracket the target, as RouteLLM's np.interp does.
    assert c(CURVE, 0.5) == pytest.approx(0.125)  # 0.2 * 0.5 / 0.8
    assert c(CURVE, 0.6) == pytest.approx(0.15)
    assert c(CURVE, 0.8) == pytest.approx(0.2)
    assert c(CURVE, 0.85) == pytest.approx(0.4)  # half way from (0.2, 0.8) to (0.6, 0.9)
    assert c(CURVE, 1.0) == pytest.approx(1.0)
    assert c(CURVE, 0.0) == 0.0  # the weak-only anchor
    assert math.isnan(c(CURVE, 1.5))
    # Without interpolation: the x of the cheapest actual point reaching the target.
    assert c(CURVE, 0.5, interpolate=False) == pytest.approx(0.2)
    assert c(CURVE, 0.6, interpolate=False) == pytest.approx(0.2)  # not 0.5: (0.5, 0.6) is dearer
    assert c(CURVE, 0.85, interpolate=False) == pytest.approx(0.6)
    dollars = CURVE.drop(columns="premium_call_share")
    assert c(dollars, 0.85, x="cost_share", premium_cost=10.0) == pytest.approx(0.4)
    # Weak-only really costs 1 of 10: its anchor sits at 0.1, so half the gap costs 0.1 + 0.5/0.8 * 0.1.
    assert c(dollars, 0.5, x="cost_share", premium_cost=10.0, weak_cost=1.0) == pytest.approx(0.1625)


# ---------------------------------------------------------------------------
# plain-language metrics


def test_quality_share_and_oracle_savings_share() -> None:
    assert quality_share(0.855, 0.9) == pytest.approx(0.95)
    assert math.isnan(quality_share(0.5, 0.0))
    # (10 - 5)/(10 - 2) = 0.625
    assert oracle_savings_share(5.0, premium_cost=10.0, oracle_cost=2.0) == pytest.approx(0.625)
    assert oracle_savings_share(2.0, premium_cost=10.0, oracle_cost=2.0) == pytest.approx(1.0)
    assert math.isnan(oracle_savings_share(5.0, premium_cost=10.0, oracle_cost=10.0))


def test_cost_reduction_at() -> None:
    df = sweep_table([(0, 2.0, 0.6), (1, 5.0, 0.86), (2, 8.0, 0.9), (3, 10.0, 0.9)])

    def red(table: pd.DataFrame, level: float) -> float:
        return cost_reduction_at(table, quality=Q, premium_cost=10.0, premium_quality=0.9, level=level)

    # 95%: target 0.855, cheapest reaching it costs 5 -> 1 - 5/10 = 0.5.
    assert red(df, 0.95) == pytest.approx(0.5)
    # 100%: target 0.9, cheapest reaching it costs 8 -> 0.2.
    assert red(df, 1.0) == pytest.approx(0.2)
    assert math.isnan(red(df, 1.1))
    # Float noise: 0.3 * 3 = 0.8999999999999999 still reaches 100% of 0.9.
    noisy = sweep_table([(0, 10.0, 0.3 * 3)])
    assert red(noisy, 1.0) == pytest.approx(0.0)


# ---------------------------------------------------------------------------
# metrics_table


def _two_tier_items() -> pd.DataFrame:
    rows = []
    for i in range(10):
        # tier 0: cost 1.0 per 1k, quality (0.9 + 0.1)/2 = 0.5 (weak); tier 1: cost 10.0 per 1k, quality 0.9
        rows += [(f"a{i}", 0, 0.001, 0.9), (f"b{i}", 0, 0.001, 0.1), (f"a{i}", 1, 0.010, 0.9), (f"b{i}", 1, 0.010, 0.9)]
    return per_item_table(rows)


def test_metrics_table_by_hand() -> None:
    per_item = _two_tier_items()
    # Oracle: a -> tier 0, b -> tier 1: cost (1 + 10)/2 = 5.5, quality 0.9, premium share 0.5.
    sweep = pd.DataFrame(
        {
            "policy_id": [0, 1, 2, 3, 4],
            "cost_per_1k_usd": [1.0, 10.0, 6.0, 3.0, 7.0],
            Q: [0.5, 0.9, 0.86, 0.82, 0.7],  # PGR 0, 1, 0.9, 0.8, 0.5
            f"{Q}_lo": [0.4, 0.85, 0.8, 0.75, 0.6],
            f"{Q}_hi": [0.6, 0.95, 0.9, 0.88, 0.8],
            "premium_call_share": [0.0, 1.0, 0.5, 0.2, 0.6],
        }
    )
    # Frontier: 0 (1, .5), 3 (3, .82), 2 (6, .86), 1 (10, .9); 4 is dominated by 2.
    t = metrics_table(sweep, per_item, quality=Q)
    assert list(t.columns) == ["metric", "value", "lo", "hi", "unit", "policy_id", "note"]
    v = dict(zip(t["metric"], t["value"], strict=True))
    assert v["premium_only_cost_per_1k_usd"] == pytest.approx(10.0)
    assert v["premium_only_quality"] == pytest.approx(0.9)
    assert v["weak_only_cost_per_1k_usd"] == pytest.approx(1.0)
    assert v["weak_only_quality"] == pytest.approx(0.5)
    assert v["premium_minus_weak"] == pytest.approx(0.4)
    assert v["oracle_cost_per_1k_usd"] == pytest.approx(5.5)
    assert v["oracle_quality"] == pytest.approx(0.9)
    assert v["oracle_premium_call_share"] == pytest.approx(0.5)
    # Best frontier quality 0.9 (policy 1) / 0.9 = 1; CI 0.85/0.9 .. 0.95/0.9.
    best = t.set_index("metric").loc["best_quality_share"]
    assert (best["value"], best["lo"], best["hi"]) == pytest.approx((1.0, 0.85 / 0.9, 0.95 / 0.9))
    assert best["policy_id"] == 1
    # 95%: target 0.855 -> policy 2 at 6 -> 0.4. 100%: policy 1 at 10 -> 0.
    assert v["cost_reduction_at_95pct"] == pytest.approx(0.4)
    assert v["cost_reduction_at_100pct"] == pytest.approx(0.0)
    # Calls: corners (0,0) (0.2,0.8) (0.5,0.9) (1,1): 0.2*0.4 + 0.3*0.85 + 0.5*0.95 = 0.08 + 0.255 + 0.475.
    assert v["apgr_calls"] == pytest.approx(0.81)
    # Dollars: x = cost/10, weak-only at its own 0.1; corners (0.1,0) (0.3,0.8) (0.6,0.9) (1,1):
    # 0.2*0.4 + 0.3*0.85 + 0.4*0.95 = 0.08 + 0.255 + 0.38.
    assert v["apgr_dollars"] == pytest.approx(0.715)
    assert (v["cpt50_calls"], v["cpt80_calls"]) == pytest.approx((0.125, 0.2))
    assert (v["cpt50_dollars"], v["cpt80_dollars"]) == pytest.approx((0.1 + 0.2 * 0.5 / 0.8, 0.3))
    # Floor oracle at 95% (mean 0.855, 17.1 quality over 20 queries): the a's at tier 0 (9 for 0.01), the b's'
    # tier-0 answers (1 for 0.01), then 7.1/0.8 = 8.875 b's up to tier 1 at 0.009 each.
    fo = (0.01 + 0.01 + 8.875 * 0.009) / 20 * 1000
    assert v["floor_oracle_cost_per_1k_usd"] == pytest.approx(fo)
    # Cheapest frontier policy reaching 0.855 is 2 (cost 6): (10 - 6)/(10 - fo).
    assert v["oracle_savings_share_at_95pct"] == pytest.approx(4 / (10 - fo))
    assert t.set_index("metric").loc["oracle_savings_share_at_95pct", "policy_id"] == 2


def test_pgr_metrics_are_na_when_the_cheap_tier_scores_above_premium() -> None:
    # The old table printed apgr_calls = 12.44 here: a PGR over a gap of almost nothing.
    rows = []
    for i in range(30):
        rows += [(f"q{i}", 0, 0.001, 0.62 + 0.01 * (i % 3)), (f"q{i}", 1, 0.010, 0.61 + 0.01 * (i % 3))]
    per_item = per_item_table(rows)
    sweep = pd.DataFrame(
        {"policy_id": [0, 1, 2], "cost_per_1k_usd": [1.0, 10.0, 4.0], Q: [0.63, 0.62, 0.64],
         "premium_call_share": [0.0, 1.0, 0.4]}
    )  # fmt: skip
    gap = gap_evidence(per_item)
    assert not gap["meaningful"] and gap["gap"] == pytest.approx(-0.01)
    assert "does not beat the cheapest" in str(gap["reason"])
    t = metrics_table(sweep, per_item, quality=Q).set_index("metric")
    for m in ("apgr_calls", "apgr_dollars", "cpt50_calls", "cpt80_calls", "cpt50_dollars", "cpt80_dollars"):
        assert math.isnan(t.loc[m, "value"]), m
        assert t.loc[m, "note"].startswith("n/a: the premium tier (0.6200) does not beat the cheapest (0.6300)")
    assert t.loc["premium_minus_weak", "hi"] < 0


def test_calls_axis_is_na_when_a_middle_tier_alone_recovers_the_gap() -> None:
    # Three tiers; the middle one (cost 3 of 10) scores as premium does, so a policy reaches PGR 1 with no
    # premium call: the old CPT(50%) = CPT(80%) = 0 "premium-call share" hid the middle tier's cost.
    rows = []
    for i in range(20):
        rows += [(f"q{i}", 0, 0.001, 0.2), (f"q{i}", 1, 0.003, 0.9), (f"q{i}", 2, 0.010, 0.9)]
    per_item = per_item_table(rows)
    sweep = pd.DataFrame(
        {"policy_id": [0, 1, 2], "cost_per_1k_usd": [1.0, 3.0, 10.0], Q: [0.2, 0.9, 0.9],
         "premium_call_share": [0.0, 0.0, 1.0]}
    )  # fmt: skip
    t = metrics_table(sweep, per_item, quality=Q).set_index("metric")
    for m in ("apgr_calls", "cpt50_calls", "cpt80_calls"):
        assert math.isnan(t.loc[m, "value"]), m
        assert "middle tier costs money" in t.loc[m, "note"]
    # Dollars: weak-only at 0.1, the middle tier at (0.3, PGR 1): half the gap at 0.1 + 0.5 * 0.2 = 0.2.
    assert t.loc["cpt50_dollars", "value"] == pytest.approx(0.2)
    assert t.loc["cpt80_dollars", "value"] == pytest.approx(0.26)
    assert "RouteLLM" in t.loc["cpt50_dollars", "note"]


def test_oracle_savings_share_is_at_most_one_with_unsolvable_items() -> None:
    # Half the queries no tier solves. The per-query best-score oracle sends them to the cheapest tier and
    # the rest to premium, costing (1 + 10)/2 = 5.5; a policy that stays cheap on the unsolvable half and
    # escalates the rest (cost 5.5 too, quality 0.45 = 100% of premium) is on par with it. A policy that gives
    # up 5% of quality can be cheaper than that oracle (share above 1 before: 1.04-1.70 on real ladders).
    rows = []
    for i in range(20):
        solvable = i % 2 == 0
        rows += [(f"q{i}", 0, 0.001, 0.0), (f"q{i}", 1, 0.010, 0.9 if solvable else 0.0)]
    per_item = per_item_table(rows)
    assert oracle_point(per_item)["cost_per_1k_usd"] == pytest.approx(5.5)
    sweep = pd.DataFrame(
        {"policy_id": [0, 1, 2], "cost_per_1k_usd": [1.0, 10.0, 5.0], Q: [0.0, 0.45, 0.4275],
         "premium_call_share": [0.0, 1.0, 0.475]}
    )  # fmt: skip
    t = metrics_table(sweep, per_item, quality=Q).set_index("metric")
    old_share = (10 - 5.0) / (10 - 5.5)
    assert old_share > 1
    # Floor oracle at 95%: 0.4275 x 20 = 8.55 quality; unsolvable queries unanswered at no cost; the
    # solvable ones at premium (slope 0.9/0.01): 8.55/0.9 = 9.5 queries x 0.01 = 0.095 over 20 -> 4.75 per 1k.
    assert t.loc["floor_oracle_cost_per_1k_usd", "value"] == pytest.approx(4.75)
    share = t.loc["oracle_savings_share_at_95pct", "value"]
    assert share == pytest.approx((10 - 5.0) / (10 - 4.75)) and share <= 1
    assert "queries no tier solves go to the cheapest tier" in t.loc["oracle_cost_per_1k_usd", "note"]


def test_floor_oracle_is_a_lower_bound_on_random_tables() -> None:
    seed = 20261202
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n, k = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        cost = rng.random((n, k)) * 0.01
        q = np.where(rng.random((n, k)) < 0.3, 0.0, rng.random((n, k)))
        opts = pd.DataFrame({"item_id": np.repeat(np.arange(n), k), "cost_usd": cost.ravel(), "quality": q.ravel()})
        target = float(rng.random()) * q.max(axis=1).mean()
        fo = floor_oracle(opts, target_mean=target)
        # brute force over every integer assignment (each item: one option or unanswered)
        best = math.inf
        for pick in np.ndindex(*([k + 1] * n)):
            c = sum(cost[i, j] for i, j in enumerate(pick) if j < k)
            qq = sum(q[i, j] for i, j in enumerate(pick) if j < k)
            if qq >= target * n - 1e-12:
                best = min(best, c)
        assert fo["quality"] == pytest.approx(target) or target == 0
        assert fo["cost_per_1k_usd"] <= best / n * 1000 + 1e-9  # never above the best integer assignment


# ---------------------------------------------------------------------------
# scorer sanity checks


def test_price_quality_inversions() -> None:
    base = baselines_table([(0, "a", 1.0, 0.5), (1, "b", 2.0, 0.7), (2, "c", 3.0, 0.6), (3, "d", 4.0, 0.8)])
    # Only b (cheaper, 0.7) beats c (pricier, 0.6).
    assert price_quality_inversions(base) == [("b", "c")]
    cheap_best = baselines_table([(0, "a", 1.0, 0.9), (1, "b", 2.0, 0.7), (2, "c", 3.0, 0.8)])
    assert price_quality_inversions(cheap_best) == [("a", "b"), ("a", "c")]
    same_price = baselines_table([(0, "a", 1.0, 0.9), (1, "b", 1.0, 0.7)])
    assert price_quality_inversions(same_price) == []


def test_rank_agreement_known_values() -> None:
    assert rank_agreement([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    # Ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4); centred sums 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
    assert rank_agreement([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    # b = (5, 6, 7, 8, 7) has ranks (1, 2, 3.5, 5, 3.5): 8 / sqrt(10 * 9.5) = 0.8207826816681233 (scipy agrees).
    assert rank_agreement([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert math.isnan(rank_agreement([1, 1, 1], [1, 2, 3]))
    assert math.isnan(rank_agreement([1.0], [2.0]))
    # A pair with a missing value is dropped: (1,2,3) vs (3,2,1) -> -1.
    assert rank_agreement([1, 2, 3, float("nan")], [3, 2, 1, 0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="equal length"):
        rank_agreement([1, 2], [1, 2, 3])
