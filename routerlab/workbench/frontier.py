"""Cost/quality frontiers, baselines and RouteLLM-style summary metrics.

Every function here takes tables and returns tables (or numbers); nothing
prints or plots. Two kinds of table come in:

*sweep table*
    one row per simulated routing policy: ``policy_id``, ``cost_per_1k_usd``
    (mean cost per query x 1000), ``quality_<scorer>`` with ``_lo``/``_hi``
    (95% CI), ``premium_call_share`` (share of queries that called the final
    tier at least once), ``escalation_rate``, ``share_tier_<i>``.
*per-item single-tier table*
    one row per (item, tier): ``item_id``, ``tier_index``, ``cost_usd`` (cost of
    that tier's single answer to that item) and ``quality`` (that answer's
    score under one scorer).

Definitions
-----------
Pareto frontier
    A row is *dominated* when another row costs no more and scores no less,
    and is strictly better in at least one of the two. The frontier is the set
    of undominated rows; rows equal in both cost and quality are kept once
    (the lowest ``policy_id``, or the first row when there is none). Rows with
    a missing cost or quality take no part. Sorted by cost, the frontier's
    quality strictly increases.
Single-tier baselines
    Sending every query to tier *i* alone: cost = mean per-item cost x 1000,
    quality = mean per-item quality (missing scores are skipped).
Random mix
    A router that sends each query to tier *i* with probability *p_i* has, in
    expectation, the convex combination of the single-tier (cost, quality)
    points. The best such mix at a given cost lies on the upper convex hull of
    those points; that piecewise-linear curve is the baseline a learned router
    has to beat.
Oracle
    An ideal non-cascading router that knows every answer's score in advance
    and pays for one call per item: it picks the cheapest tier whose quality is
    within ``tolerance`` of the best quality any tier reaches on that item
    (cost ties go to the lower tier index).

The following follow RouteLLM (Ong et al., 2024, "RouteLLM: Learning to Route
LLMs with Preference Data"), which compares a router between a weak and a
strong model; here *weak* is the cheapest tier (tier 0) and *strong* the
premium tier (the last one).

PGR (performance gap recovered)
    ``(q - weak) / (strong - weak)``: 0 at the weak model's quality, 1 at the
    strong model's. Undefined (NaN) when the two are equal.
APGR (average PGR)
    The area under PGR as a function of the cost axis *x* over ``[0, 1]``,
    where *x* is the share of queries that call the premium tier ("calls"
    version, RouteLLM's) or the cost as a share of premium-only cost
    (``cost_share``, the "dollars" version). See :func:`apgr` for exactly how
    the curve is built and integrated.
CPT(t) (call-performance threshold)
    The smallest *x* at which some policy reaches PGR >= *t*; e.g. CPT(50%)
    is the premium-call share needed to recover half of the quality gap.

Plain-language metrics
    *quality share* ``q / premium_q``; *cost reduction at level L* is one minus
    the cheapest cost reaching ``L x premium quality`` over premium-only cost;
    *oracle savings share* is a policy's saving against premium-only as a
    share of the oracle's saving.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal, overload

import numpy as np
import numpy.typing as npt
import pandas as pd

from routerlab.errors import DataError, WorkbenchError

__all__ = [
    "ORACLE_DEFINITION",
    "apgr",
    "cost_reduction_at",
    "cpt",
    "floor_oracle",
    "gap_evidence",
    "metrics_table",
    "oracle",
    "oracle_point",
    "oracle_savings_share",
    "pareto_frontier",
    "pgr",
    "price_quality_inversions",
    "quality_share",
    "random_mix",
    "rank_agreement",
    "reaches",
    "single_tier_baselines",
    "with_cost_share",
]

FloatArray = npt.NDArray[np.float64]

#: Relative slack when comparing a quality with a target (e.g. "reaches 100%
#: of premium quality"), so that the same mean computed along two paths is not
#: missed by one ulp.
_REL_TOL = 1e-9

PER_ITEM_COLUMNS = ("item_id", "tier_index", "cost_usd", "quality")


# ---------------------------------------------------------------------------
# helpers


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"The {what} lacks column(s) {', '.join(repr(c) for c in missing)}; "
            f"it has {', '.join(repr(str(c)) for c in df.columns) or 'no columns'}."
        )


def _floats(s: pd.Series | Sequence[float] | FloatArray) -> FloatArray:
    return np.asarray(pd.to_numeric(pd.Series(s), errors="coerce"), dtype=np.float64)


def reaches(q: FloatArray | float, target: float | FloatArray) -> npt.NDArray[np.bool_]:
    """``q >= target`` up to a relative slack of 1e-9 (NaN never reaches): the one comparison with a
    quality floor, used by the choosers, the audit and the reports alike."""
    return _reaches(np.asarray(q, dtype=np.float64), target)


def _reaches(q: FloatArray, target: float | FloatArray) -> npt.NDArray[np.bool_]:
    """``q >= target`` up to a relative slack of 1e-9 (NaN never reaches)."""
    t = np.asarray(target, dtype=np.float64)
    return np.asarray(q >= t - _REL_TOL * np.maximum(1.0, np.abs(t)), dtype=np.bool_)


def _check_per_item(per_item: pd.DataFrame) -> None:
    _require(per_item, PER_ITEM_COLUMNS, "per-item single-tier table")
    if per_item.empty:
        raise DataError("The per-item single-tier table is empty.")
    dup = per_item.duplicated(subset=["item_id", "tier_index"])
    if bool(dup.any()):
        first = per_item.loc[dup, ["item_id", "tier_index"]].iloc[0]
        raise DataError(
            "The per-item single-tier table has more than one row for item "
            f"{first['item_id']!r} and tier {first['tier_index']!r}; expected one row per (item_id, tier_index)."
        )


# ---------------------------------------------------------------------------
# frontier and baselines


def pareto_frontier(df: pd.DataFrame, *, cost: str = "cost_per_1k_usd", quality: str) -> pd.DataFrame:
    """The undominated rows of ``df`` (lower ``cost`` and higher ``quality`` are better).

    Rows tied in both cost and quality are kept once: the first in ``df``'s order
    (a sweep table lists its policies in grid order; ``policy_id`` is a content
    hash, not an order).
    Rows with a missing cost or quality are dropped. The result is a copy with
    ``df``'s columns, sorted by cost ascending (so quality strictly increases),
    with a fresh 0..k-1 index.
    """
    return df.iloc[frontier_positions(df, cost=cost, quality=quality)].reset_index(drop=True).copy()


def frontier_positions(df: pd.DataFrame, *, cost: str = "cost_per_1k_usd", quality: str) -> list[int]:
    """The positions in ``df`` of :func:`pareto_frontier`'s rows, in its order (cost ascending)."""
    _require(df, [cost, quality], "sweep table")
    c = _floats(df[cost])
    q = _floats(df[quality])
    valid = ~(np.isnan(c) | np.isnan(q))
    pos = np.flatnonzero(valid)
    tie = pos.astype(np.float64)
    # Sort by cost ascending, then quality descending, then the tie-breaker.
    order = pos[np.lexsort((tie, -q[pos], c[pos]))]
    keep: list[int] = []
    best = -math.inf
    for i in order:
        # Every earlier row costs no more; a row survives only if it beats
        # all of them on quality (an equal earlier row dominates it or is its tie).
        if q[i] > best:
            keep.append(int(i))
            best = float(q[i])
    return keep


def single_tier_baselines(per_item: pd.DataFrame, *, tier_names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per tier for "send every query to this tier".

    Columns: ``tier_index``, ``tier`` (``tier_names[tier_index]``; else the
    table's ``tier`` column; else ``"tier<i>"``), ``cost_per_1k_usd`` (mean
    ``cost_usd`` x 1000), ``quality`` (mean, missing scores skipped) and
    ``n_items`` (rows for that tier). Sorted by ``tier_index``.
    """
    _check_per_item(per_item)
    g = per_item.groupby("tier_index", sort=True)
    out = pd.DataFrame(
        {
            "cost_per_1k_usd": g["cost_usd"].mean() * 1000.0,
            "quality": g["quality"].mean(),
            "n_items": g["item_id"].size(),
        }
    )
    idx = [int(i) for i in out.index]
    if tier_names is not None:
        bad = [i for i in idx if not 0 <= i < len(tier_names)]
        if bad:
            raise DataError(
                f"tier_names has {len(tier_names)} name(s) but the table has tier_index {bad[0]}; "
                "give one name per tier, in tier order."
            )
        names = [str(tier_names[i]) for i in idx]
    elif "tier" in per_item.columns:
        first = g["tier"].first()
        names = [str(first.loc[i]) for i in out.index]
    else:
        names = [f"tier{i}" for i in idx]
    return pd.DataFrame(
        {
            "tier_index": idx,
            "tier": names,
            "cost_per_1k_usd": out["cost_per_1k_usd"].to_numpy(dtype=np.float64),
            "quality": out["quality"].to_numpy(dtype=np.float64),
            "n_items": out["n_items"].to_numpy(dtype=np.int64),
        }
    )


def _upper_hull(x: FloatArray, y: FloatArray) -> list[int]:
    """Indices (into x, y; x strictly increasing) of the upper convex hull, left to right.

    Collinear middle points are dropped: mixing the two ends gives the same point.
    """
    hull: list[int] = []
    for k in range(len(x)):
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            cross = (x[a] - x[o]) * (y[k] - y[o]) - (y[a] - y[o]) * (x[k] - x[o])
            if cross >= 0:  # a lies on or below the chord o-k
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


def random_mix(baselines: pd.DataFrame, *, points: int = 21) -> pd.DataFrame:
    """The random-routing baseline: the best random mix of single tiers at each cost.

    ``baselines`` is :func:`single_tier_baselines`' output (``tier_index``,
    ``cost_per_1k_usd``, ``quality``; ``tier`` optional). Sending a query to
    tier *i* with probability *p_i* yields the convex combination of the tiers'
    (cost, quality) points; the best quality at a given cost is on the upper
    convex hull of those points. A tier below the hull never gets weight; a mix
    on a hull edge uses only that edge's two end tiers.

    Returns ``points`` rows evenly spaced in cost from the cheapest tier to the
    most expensive one (both included), with columns ``cost_per_1k_usd``,
    ``quality``, ``share_tier_<i>`` (the mix probabilities, one column per
    tier), ``premium_call_share`` (the last tier's probability), ``mix`` (a
    readable string such as ``"0.25 small + 0.75 large"``) and ``dominated``:
    True where a cheaper point of the curve has at least this quality. That
    only happens past the best-quality tier when a pricier tier scores lower
    (a price/quality inversion); the undominated rows are the upper-left hull.
    When every tier costs the same, a single row (the best tier) is returned.
    """
    _require(baselines, ["tier_index", "cost_per_1k_usd", "quality"], "baselines table")
    if points < 2:
        raise WorkbenchError(f"points must be at least 2 (both ends of the cost range), got {points}.")
    b = baselines.dropna(subset=["cost_per_1k_usd", "quality"])
    if b.empty:
        raise DataError("The baselines table has no tier with both a cost and a quality.")
    tiers = [int(t) for t in b["tier_index"]]
    all_tiers = sorted({int(t) for t in baselines["tier_index"]})
    premium = max(all_tiers)
    names = [str(n) for n in b["tier"]] if "tier" in b.columns else [f"tier{t}" for t in tiers]
    c = _floats(b["cost_per_1k_usd"])
    q = _floats(b["quality"])
    # One candidate per distinct cost: the best quality there (ties: lower tier index).
    order = np.lexsort((np.asarray(tiers), -q, c))
    cand: list[int] = []
    for i in order:
        if not cand or c[i] > c[cand[-1]]:
            cand.append(int(i))
    cx, cy = c[cand], q[cand]
    hull = [cand[k] for k in _upper_hull(cx, cy)]
    hx, hy = c[hull], q[hull]

    grid = np.array([hx[0]]) if len(hull) == 1 else np.linspace(hx[0], hx[-1], points)
    rows: list[dict[str, object]] = []
    running = -math.inf
    for x in grid:
        weights = dict.fromkeys(all_tiers, 0.0)
        if len(hull) == 1:
            weights[tiers[hull[0]]] = 1.0
            y = float(hy[0])
        else:
            j = int(np.clip(np.searchsorted(hx, x, side="right") - 1, 0, len(hull) - 2))
            w = float((x - hx[j]) / (hx[j + 1] - hx[j]))
            w = min(max(w, 0.0), 1.0)
            weights[tiers[hull[j]]] += 1.0 - w
            weights[tiers[hull[j + 1]]] += w
            y = float((1.0 - w) * hy[j] + w * hy[j + 1])
        parts = [f"{weights[tiers[h]]:.3g} {names[h]}" for h in hull if weights[tiers[h]] > 0.0]
        row: dict[str, object] = {"cost_per_1k_usd": float(x), "quality": y}
        row.update({f"share_tier_{t}": weights[t] for t in all_tiers})
        row["premium_call_share"] = weights[premium]
        row["mix"] = " + ".join(parts)
        row["dominated"] = bool(y <= running)
        running = max(running, y)
        rows.append(row)
    return pd.DataFrame(rows)


def oracle(per_item: pd.DataFrame, *, tolerance: float = 0.0) -> pd.DataFrame:
    """Per item, the cheapest tier whose quality is within ``tolerance`` of that item's best.

    "Cheapest" is by the item's own ``cost_usd`` (ties: lower ``tier_index``).
    Missing scores never qualify; an item with no score at any tier is a
    :class:`DataError`. Returns the chosen rows (all of ``per_item``'s columns,
    at least ``item_id``, ``tier_index``, ``cost_usd``, ``quality``), one per
    item, sorted by ``item_id``.
    """
    _check_per_item(per_item)
    if tolerance < 0 or math.isnan(tolerance):
        raise WorkbenchError(f"tolerance must be a non-negative number, got {tolerance}.")
    df = per_item.reset_index(drop=True)
    q = _floats(df["quality"])
    best = df.assign(_q=q).groupby("item_id", sort=False)["_q"].transform("max").to_numpy(dtype=np.float64)
    unscored = np.isnan(best)
    if bool(unscored.any()):
        items = pd.unique(df.loc[unscored, "item_id"])
        raise DataError(
            f"{len(items)} item(s) have no quality score at any tier (first: {items[0]!r}); "
            "the oracle cannot choose a tier for them. Drop them or score them first."
        )
    ok = _reaches(q, best - tolerance) & ~np.isnan(q)
    cand = df.loc[ok].sort_values(["item_id", "cost_usd", "tier_index"], kind="mergesort")
    chosen = cand.drop_duplicates(subset=["item_id"], keep="first")
    return chosen.reset_index(drop=True)


def oracle_point(per_item: pd.DataFrame, *, tolerance: float = 0.0) -> dict[str, float]:
    """The oracle as one point: ``cost_per_1k_usd``, ``quality`` and ``premium_call_share``.

    The premium tier is the highest ``tier_index`` in ``per_item``.
    """
    chosen = oracle(per_item, tolerance=tolerance)
    premium = int(per_item["tier_index"].max())
    return {
        "cost_per_1k_usd": float(chosen["cost_usd"].mean()) * 1000.0,
        "quality": float(chosen["quality"].mean()),
        "premium_call_share": float((chosen["tier_index"] == premium).mean()),
    }


# ---------------------------------------------------------------------------
# RouteLLM metrics


@overload
def pgr(quality: float, *, weak: float, strong: float) -> float: ...


@overload
def pgr(quality: FloatArray, *, weak: float, strong: float) -> FloatArray: ...


def pgr(quality: float | FloatArray, *, weak: float, strong: float) -> float | FloatArray:
    """Performance gap recovered: ``(quality - weak) / (strong - weak)``; NaN when ``strong == weak``."""
    if strong == weak or math.isnan(strong) or math.isnan(weak):
        if isinstance(quality, np.ndarray):
            return np.full(quality.shape, np.nan, dtype=np.float64)
        return math.nan
    if isinstance(quality, np.ndarray):
        return (np.asarray(quality, dtype=np.float64) - weak) / (strong - weak)
    return (float(quality) - weak) / (strong - weak)


def with_cost_share(df: pd.DataFrame, *, premium_cost: float, cost: str = "cost_per_1k_usd") -> pd.DataFrame:
    """A copy of ``df`` with ``cost_share = df[cost] / premium_cost`` (cost as a share of premium-only)."""
    _require(df, [cost], "table")
    if not premium_cost > 0:
        raise WorkbenchError(f"premium_cost must be positive to express costs as a share of it, got {premium_cost}.")
    return df.assign(cost_share=_floats(df[cost]) / premium_cost)


def _pgr_points(
    curve: pd.DataFrame,
    *,
    x: str,
    quality: str,
    weak: float,
    strong: float,
    premium_cost: float | None,
    cost: str,
    weak_x: float = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """(x, PGR) of the curve's rows inside [0, 1], plus the anchors (weak_x, 0) (weak only) and (1, 1)."""
    if x == "cost_share" and "cost_share" not in curve.columns:
        if premium_cost is None:
            raise WorkbenchError(
                "x='cost_share' needs a 'cost_share' column or premium_cost= (the premium-only cost, "
                f"in the units of {cost!r})."
            )
        curve = with_cost_share(curve, premium_cost=premium_cost, cost=cost)
    _require(curve, [x, quality], "curve")
    xs = _floats(curve[x])
    ps = pgr(_floats(curve[quality]), weak=weak, strong=strong)
    ok = ~(np.isnan(xs) | np.isnan(ps)) & (xs >= 0.0) & (xs <= 1.0)
    xs = np.concatenate([[weak_x, 1.0], xs[ok]])
    ps = np.concatenate([[0.0, 1.0], ps[ok]])
    return xs, ps


def _envelope(xs: FloatArray, ps: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Corners of the running-max envelope: points whose PGR beats every point at lower or equal x."""
    order = np.lexsort((-ps, xs))
    ex: list[float] = []
    ey: list[float] = []
    best = -math.inf
    for i in order:
        if ps[i] > best:
            ex.append(float(xs[i]))
            ey.append(float(ps[i]))
            best = float(ps[i])
    return np.asarray(ex, dtype=np.float64), np.asarray(ey, dtype=np.float64)


def apgr(
    curve: pd.DataFrame,
    *,
    x: str = "premium_call_share",
    quality: str,
    weak: float,
    strong: float,
    premium_cost: float | None = None,
    cost: str = "cost_per_1k_usd",
    interpolation: Literal["linear", "step"] = "linear",
    weak_cost: float | None = None,
) -> float:
    """Average performance gap recovered: the area under PGR(x) for x in [0, 1].

    Construction, exactly:

    1. Each row of ``curve`` gives a point (x, PGR(quality)); rows with a
       missing value or x outside [0, 1] are ignored (a policy costing more
       than premium-only is never needed on this axis).
    2. The anchors (0, 0) (weak only) and (1, 1) (strong only) are added.
    3. The upper envelope is the running maximum of PGR over x sorted
       ascending: the best PGR achievable at or below each x. Its corners are
       the points whose PGR is strictly above every point at lower or equal x
       (the Pareto frontier in (x, PGR)); there is always one at x = 0.
    4. ``interpolation="linear"`` (default, RouteLLM's ``np.trapz``): the
       trapezoid rule over the corners, i.e. PGR is interpolated linearly
       between consecutive corners (what randomly mixing the two neighbouring
       policies achieves in expectation), held flat after the last corner up
       to x = 1. Only corners are joined, so a dominated policy can never pull
       the line down. ``interpolation="step"``: the running maximum itself, a
       right-continuous step function (the best single policy within budget
       x); its integral is ``sum(p_i * (x_{i+1} - x_i))`` with the last
       interval ending at 1. Step <= linear.

    ``x`` is ``"premium_call_share"`` (calls, RouteLLM's axis) or
    ``"cost_share"`` (dollars): taken from a ``cost_share`` column, or computed
    as ``curve[cost] / premium_cost``. With no rows the linear value is 0.5 (the
    weak-strong random mix) and the step value 0. NaN when ``strong == weak``.

    Note on the dollars axis: weak-only really costs ``weak_cost/premium_cost``
    > 0. With ``weak_cost`` given (in the units of ``cost``), the weak anchor
    sits there, and nothing is recovered below it; without it the anchor sits
    at x = 0 and the sliver [0, weak share] contributes a small triangle
    (linear).
    """
    if strong == weak or math.isnan(strong) or math.isnan(weak):
        return math.nan
    wx = _weak_x(x, weak_cost, premium_cost)
    xs, ps = _pgr_points(
        curve, x=x, quality=quality, weak=weak, strong=strong, premium_cost=premium_cost, cost=cost, weak_x=wx
    )
    ex, ey = _envelope(xs, ps)
    ex = np.append(ex, 1.0)
    ey = np.append(ey, ey[-1])  # flat to x = 1 (a no-op when the last corner is at 1)
    widths = np.diff(ex)
    if interpolation == "linear":
        return float(np.sum(widths * (ey[:-1] + ey[1:]) / 2.0))
    if interpolation == "step":
        return float(np.sum(widths * ey[:-1]))
    raise WorkbenchError(f"interpolation must be 'linear' or 'step', got {interpolation!r}.")


def _weak_x(x: str, weak_cost: float | None, premium_cost: float | None) -> float:
    if x != "cost_share" or weak_cost is None or not premium_cost:
        return 0.0
    return min(max(float(weak_cost) / float(premium_cost), 0.0), 1.0)


def cpt(
    curve: pd.DataFrame,
    target_pgr: float,
    *,
    x: str = "premium_call_share",
    quality: str,
    weak: float,
    strong: float,
    premium_cost: float | None = None,
    cost: str = "cost_per_1k_usd",
    interpolate: bool = True,
    weak_cost: float | None = None,
) -> float:
    """Call-performance threshold: the smallest x at which PGR ``target_pgr`` is reached.

    ``target_pgr`` is a fraction (0.5 for CPT(50%)). Candidates are the rows
    of ``curve`` with x in [0, 1] plus the anchors for weak-only (x = 0, or
    ``weak_cost / premium_cost`` on the dollars axis when ``weak_cost`` is
    given) and strong-only (1, PGR 1), as in :func:`apgr`; so CPT(t) <= 1
    whenever t <= 1.

    ``interpolate=True`` (default) follows RouteLLM's evaluation
    (``np.interp`` of the target quality along the curve): on the upper
    envelope of (x, PGR), x is interpolated linearly between the two corners
    that bracket the target, which is what randomly mixing those two policies
    achieves in expectation. ``interpolate=False`` gives the x of the cheapest
    actual point that reaches the target (never smaller). NaN when no point
    reaches the target or ``strong == weak``.
    """
    if strong == weak or math.isnan(strong) or math.isnan(weak):
        return math.nan
    wx = _weak_x(x, weak_cost, premium_cost)
    xs, ps = _pgr_points(
        curve, x=x, quality=quality, weak=weak, strong=strong, premium_cost=premium_cost, cost=cost, weak_x=wx
    )
    if not interpolate:
        reached = _reaches(ps, target_pgr)
        return float(xs[reached].min()) if bool(reached.any()) else math.nan
    ex, ey = _envelope(xs, ps)
    corners = np.flatnonzero(_reaches(ey, target_pgr))
    if len(corners) == 0:
        return math.nan
    j = int(corners[0])
    if j == 0:
        return float(ex[0])
    x0, y0, x1, y1 = float(ex[j - 1]), float(ey[j - 1]), float(ex[j]), float(ey[j])
    return x0 + (target_pgr - y0) / (y1 - y0) * (x1 - x0)


# ---------------------------------------------------------------------------
# plain-language metrics


def quality_share(q: float, premium_q: float) -> float:
    """``q / premium_q``: quality as a share of premium-only quality (NaN if premium_q is 0)."""
    return math.nan if premium_q == 0 else float(q) / float(premium_q)


def cost_reduction_at(
    frontier_or_sweep: pd.DataFrame,
    *,
    quality: str,
    premium_cost: float,
    premium_quality: float,
    level: float,
    cost: str = "cost_per_1k_usd",
) -> float:
    """``1 - min(cost of rows with quality >= level x premium_quality) / premium_cost``.

    ``premium_cost`` is in the units of ``cost``. A relative slack of 1e-9
    absorbs float noise, so a premium-only row meets ``level=1``. NaN when no
    row reaches the level (or premium_cost is 0). Negative when the cheapest
    qualifying row costs more than premium-only.
    """
    _require(frontier_or_sweep, [cost, quality], "table")
    c = _floats(frontier_or_sweep[cost])
    q = _floats(frontier_or_sweep[quality])
    ok = _reaches(q, level * premium_quality) & ~np.isnan(c) & ~np.isnan(q)
    if not bool(ok.any()) or premium_cost == 0:
        return math.nan
    return 1.0 - float(c[ok].min()) / premium_cost


def oracle_savings_share(cost: float, *, premium_cost: float, oracle_cost: float) -> float:
    """``(premium_cost - cost) / (premium_cost - oracle_cost)``: the share of the oracle's saving captured.

    NaN when the oracle saves nothing (``oracle_cost == premium_cost``).
    """
    gap = premium_cost - oracle_cost
    return math.nan if gap == 0 else (premium_cost - cost) / gap


def _cheapest_reaching(df: pd.DataFrame, *, quality: str, target: float, cost: str) -> int | None:
    """Positional index of the cheapest row with quality >= target (ties: first), or None."""
    c = _floats(df[cost])
    q = _floats(df[quality])
    ok = np.flatnonzero(_reaches(q, target) & ~np.isnan(c) & ~np.isnan(q))
    if len(ok) == 0:
        return None
    return int(ok[np.argmin(c[ok])])


def floor_oracle(options: pd.DataFrame, *, target_mean: float, n_items: int | None = None) -> dict[str, float]:
    """The floor-constrained oracle: the cheapest assignment of recorded answers to items whose mean quality
    reaches ``target_mean``.

    ``options`` has one row per answer a policy could return for an item (``item_id``, ``cost_usd``: the
    least a route pays to get it, ``quality``). Every item may also go unanswered (cost 0, quality 0): a
    route can fail, and it is what makes this a lower bound. The assignment may be fractional (the linear
    relaxation, solved exactly by the greedy on each item's convex hull, Sinha and Zoltners 1979): at most
    one item is split between two answers, achievable in expectation by a coin flip. So its cost is at
    most that of any policy whose mean quality on the same items reaches the target, and a policy's share
    of its savings is at most 1. Items that no answer solves stay unanswered at no cost.

    Returns ``cost_per_1k_usd`` and ``quality`` (NaN when no assignment reaches the target).
    """
    _require(options, ["item_id", "cost_usd", "quality"], "answer options table")
    df = options.dropna(subset=["cost_usd", "quality"])
    items = pd.unique(options["item_id"])
    n = len(items) if n_items is None else n_items
    if n == 0:
        return {"cost_per_1k_usd": math.nan, "quality": math.nan}
    need = float(target_mean) * n
    steps: list[tuple[float, float, float]] = []  # (slope, delta cost, delta quality)
    for _, g in df.groupby("item_id", sort=False):
        pts = sorted(
            zip(g["cost_usd"].astype(float), g["quality"].astype(float), strict=True), key=lambda p: (p[0], -p[1])
        )
        hull: list[tuple[float, float]] = [(0.0, 0.0)]
        for c, q in pts:
            if q <= hull[-1][1]:
                continue  # no better than something as cheap
            while len(hull) >= 2:
                (c0, q0), (c1, q1) = hull[-2], hull[-1]
                if (q1 - q0) * (c - c1) <= (q - q1) * (c1 - c0):  # hull[-1] lies on or below the chord
                    hull.pop()
                else:
                    break
            hull.append((c, q))
        for (c0, q0), (c1, q1) in itertools.pairwise(hull):
            dc, dq = c1 - c0, q1 - q0
            steps.append((math.inf if dc <= 0 else dq / dc, dc, dq))
    steps.sort(key=lambda st: -st[0])  # concave per item, so each item's steps stay in order
    cost = got = 0.0
    for _, dc, dq in steps:
        if got >= need - _REL_TOL * max(1.0, abs(need)):
            break
        take = min(1.0, (need - got) / dq)
        cost += take * dc
        got += take * dq
    if got < need - _REL_TOL * max(1.0, abs(need)):
        return {"cost_per_1k_usd": math.nan, "quality": math.nan}
    return {"cost_per_1k_usd": cost / n * 1000.0, "quality": got / n}


def gap_evidence(
    per_item: pd.DataFrame, *, min_gap_share: float = 0.02, bootstrap: int = 1000, seed: int = 0
) -> dict[str, object]:
    """Does the premium tier beat the cheapest by a meaningful margin? The paired per-item gap with a CI.

    ``gap`` is mean(strong - weak) over items scored at both; ``lo``/``hi`` its paired bootstrap 95% CI;
    ``meaningful`` holds when the CI lies above 0 and the gap is at least ``min_gap_share`` of the strong
    tier's quality; ``reason`` says why not, in words (None when meaningful)."""
    _check_per_item(per_item)
    tiers = sorted(int(t) for t in per_item["tier_index"].unique())
    if len(tiers) < 2:
        q1 = float(_floats(per_item["quality"]).mean()) if len(per_item) else math.nan
        return {
            "gap": math.nan, "lo": math.nan, "hi": math.nan, "weak": q1, "strong": q1, "meaningful": False,
            "reason": "a one-tier ladder has no gap between a cheapest and a premium tier",
        }  # fmt: skip
    wide = per_item.pivot(index="item_id", columns="tier_index", values="quality")
    pair = wide[[tiers[0], tiers[-1]]].dropna()
    d = (pair[tiers[-1]] - pair[tiers[0]]).to_numpy(dtype=np.float64)
    strong = float(pair[tiers[-1]].mean()) if len(pair) else math.nan
    weak = float(pair[tiers[0]].mean()) if len(pair) else math.nan
    gap = float(d.mean()) if len(d) else math.nan
    lo = hi = math.nan
    if len(d) >= 2 and bootstrap > 0:
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, len(d), size=(bootstrap, len(d)))].mean(axis=1)
        lo, hi = float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
    meaningful = bool(len(tiers) >= 2 and lo > 0 and gap >= min_gap_share * abs(strong))
    reason = None
    if not meaningful:
        reason = (
            f"the premium tier ({strong:.4f}) does not beat the cheapest ({weak:.4f}) by a meaningful margin: "
            f"paired gap {gap:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] (needed: a CI above 0 and a gap of at least "
            f"{min_gap_share:.0%} of premium quality), so a share of that gap means nothing"
        )
    return {"gap": gap, "lo": lo, "hi": hi, "weak": weak, "strong": strong, "meaningful": meaningful, "reason": reason}


ORACLE_DEFINITION = (
    "per query, the cheapest tier whose single answer scores as well as the best tier's (queries no tier solves "
    "go to the cheapest tier, at a score of 0); it chases each query's best score, so it is no cost floor"
)


def metrics_table(
    sweep: pd.DataFrame,
    per_item: pd.DataFrame,
    *,
    quality: str,
    tier_names: Sequence[str] | None = None,
    oracle_tolerance: float = 0.0,
    options: pd.DataFrame | None = None,
    floor: float = 0.95,
    min_gap_share: float = 0.02,
    bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One tidy summary table: ``metric``, ``value``, ``lo``, ``hi``, ``unit``, ``policy_id``, ``note``.

    ``quality`` names the sweep's quality column (e.g. ``"quality_rougeL"``);
    ``per_item`` must be scored with the same scorer. Weak = tier 0 alone,
    premium = the last tier alone, both from :func:`single_tier_baselines`.
    ``lo``/``hi`` are filled where a CI exists; ``note`` says what a number
    means where that is not obvious, and why it is "n/a" (NaN) when it is.

    Metrics (in order): ``premium_only_cost_per_1k_usd``,
    ``premium_only_quality``, ``weak_only_cost_per_1k_usd``,
    ``weak_only_quality``, ``premium_minus_weak`` (the paired gap, with CI),
    ``oracle_cost_per_1k_usd``, ``oracle_quality``,
    ``oracle_premium_call_share`` (the per-query best-score oracle, defined in
    ``note``), ``floor_oracle_cost_per_1k_usd`` (:func:`floor_oracle` at
    ``floor`` x premium quality, over ``options``: every answer any policy
    could return; default the single-tier answers), ``best_quality_share``,
    ``cost_reduction_at_<floor>`` and ``cost_reduction_at_100pct``,
    ``apgr_calls``, ``apgr_dollars``, ``cpt50_calls``, ``cpt80_calls``,
    ``cpt50_dollars``, ``cpt80_dollars`` (interpolated as RouteLLM does) and
    ``oracle_savings_share_at_<floor>`` (of the floor-constrained oracle, so
    at most 1).

    PGR-based metrics (APGR, CPT) are "n/a" unless premium beats the cheapest
    tier by a meaningful margin (:func:`gap_evidence`). The calls axis (share
    of queries calling premium) is RouteLLM's for two models; on a ladder of
    more than two tiers a middle tier costs money without counting on it, so
    there the calls-axis metrics are "n/a" and the dollars axis stands.
    """
    cost = "cost_per_1k_usd"
    _require(sweep, [cost, quality, "premium_call_share"], "sweep table")
    base = single_tier_baselines(per_item, tier_names=tier_names)
    weak_row, premium_row = base.iloc[0], base.iloc[-1]
    p_cost, p_q = float(premium_row["cost_per_1k_usd"]), float(premium_row["quality"])
    w_cost, w_q = float(weak_row["cost_per_1k_usd"]), float(weak_row["quality"])
    orc = oracle_point(per_item, tolerance=oracle_tolerance)
    front = pareto_frontier(sweep, cost=cost, quality=quality)
    lo_col, hi_col = f"{quality}_lo", f"{quality}_hi"
    gap = gap_evidence(per_item, min_gap_share=min_gap_share, bootstrap=bootstrap, seed=seed)
    pct = f"{floor * 100:g}pct"

    rows: list[dict[str, object]] = []

    def add(
        metric: str,
        value: float,
        unit: str,
        *,
        lo: float = math.nan,
        hi: float = math.nan,
        pid: object = None,
        note: str = "",
    ) -> None:
        rows.append(
            {"metric": metric, "value": value, "lo": lo, "hi": hi, "unit": unit, "policy_id": pid, "note": note}
        )

    def ci(row: pd.Series, scale: float) -> tuple[float, float]:
        lo = float(row[lo_col]) / scale if lo_col in row.index else math.nan
        hi = float(row[hi_col]) / scale if hi_col in row.index else math.nan
        return lo, hi

    def pid_of(row: pd.Series) -> object:
        return row["policy_id"] if "policy_id" in row.index and pd.notna(row["policy_id"]) else None

    add("premium_only_cost_per_1k_usd", p_cost, "USD per 1k queries")
    add("premium_only_quality", p_q, "quality")
    add("weak_only_cost_per_1k_usd", w_cost, "USD per 1k queries")
    add("weak_only_quality", w_q, "quality")
    add(
        "premium_minus_weak",
        float(gap["gap"]),  # type: ignore[arg-type]
        "quality",
        lo=float(gap["lo"]),  # type: ignore[arg-type]
        hi=float(gap["hi"]),  # type: ignore[arg-type]
        note="paired per-query gap, bootstrap 95% CI"
        + ("" if gap["meaningful"] else "; not meaningful, so PGR, APGR and CPT are n/a"),
    )
    add("oracle_cost_per_1k_usd", orc["cost_per_1k_usd"], "USD per 1k queries", note=ORACLE_DEFINITION)
    add("oracle_quality", orc["quality"], "quality", note="the per-query best-score oracle")
    add(
        "oracle_premium_call_share",
        orc["premium_call_share"],
        "share of queries",
        note="the per-query best-score oracle",
    )
    # The floor is on premium's mean over the queries its answer is scored on: the oracle works over those.
    prem_rows = per_item[per_item["tier_index"] == int(base.iloc[-1]["tier_index"])]
    scored = set(prem_rows.loc[prem_rows["quality"].notna(), "item_id"])
    opts = options if options is not None else per_item[["item_id", "cost_usd", "quality"]]
    opts = opts[opts["item_id"].isin(scored)]
    fo = floor_oracle(opts, target_mean=floor * p_q, n_items=len(scored))
    by_item = per_item.groupby("item_id")["quality"]
    mixed = bool(((by_item.count() > 0) & (by_item.count() < by_item.size())).any())
    fo_note = (
        f"the cheapest mix of recorded answers whose mean quality is {floor:.0%} of premium's (a lower bound "
        "on any policy's cost at that floor; queries no answer solves are left unanswered at no cost)"
    )
    if mixed:
        fo_note += (
            "; approximate: some answers are unscored while others to the same query are scored, and a policy's "
            "mean leaves its unscored answers out"
        )
    if not fo["cost_per_1k_usd"] == fo["cost_per_1k_usd"]:
        fo_note = f"n/a: no mix of recorded answers reaches {floor:.0%} of premium quality"
    add("floor_oracle_cost_per_1k_usd", fo["cost_per_1k_usd"], "USD per 1k queries", note=fo_note)

    if front.empty:
        add("best_quality_share", math.nan, "share of premium quality", note="no policy in the sweep")
    else:
        top = front.iloc[-1]
        lo, hi = ci(top, p_q) if p_q != 0 else (math.nan, math.nan)
        add(
            "best_quality_share",
            quality_share(float(top[quality]), p_q),
            "share of premium quality",
            lo=lo,
            hi=hi,
            pid=pid_of(top),
            note="CI: the policy's quality CI over premium's point quality",
        )

    for level, name in ((floor, pct), (1.0, "100pct")):
        k = _cheapest_reaching(front, quality=quality, target=level * p_q, cost=cost)
        value = cost_reduction_at(front, quality=quality, premium_cost=p_cost, premium_quality=p_q, level=level)
        add(
            f"cost_reduction_at_{name}",
            value,
            "share of premium-only cost",
            pid=None if k is None else pid_of(front.iloc[k]),
            note="" if k is not None else f"no swept policy reaches {level:.0%} of premium quality",
        )

    multi = len(base) > 2
    calls_na = "n/a: " + (
        str(gap["reason"])
        if not gap["meaningful"]
        else f"with {len(base)} tiers a middle tier costs money without counting as a premium call; see the "
        "dollars axis"
    )
    dollars_na = "n/a: " + str(gap["reason"]) if not gap["meaningful"] else ""
    dollars = with_cost_share(sweep, premium_cost=p_cost, cost=cost) if p_cost > 0 else None
    if dollars is None and not dollars_na:
        dollars_na = "n/a: premium-only costs nothing, so there is no dollars axis"
    calls_ok = bool(gap["meaningful"]) and not multi
    interp = "linearly between frontier points, as RouteLLM's evaluation does"
    add(
        "apgr_calls",
        apgr(sweep, x="premium_call_share", quality=quality, weak=w_q, strong=p_q) if calls_ok else math.nan,
        "PGR",
        note="" if calls_ok else calls_na,
    )
    add(
        "apgr_dollars",
        apgr(dollars, x="cost_share", quality=quality, weak=w_q, strong=p_q, premium_cost=p_cost, weak_cost=w_cost)
        if dollars is not None and not dollars_na
        else math.nan,
        "PGR",
        note=dollars_na or "x: cost as a share of premium-only; weak-only sits at its own cost share",
    )
    for target, name in ((0.5, "cpt50"), (0.8, "cpt80")):
        add(
            f"{name}_calls",
            cpt(sweep, target, x="premium_call_share", quality=quality, weak=w_q, strong=p_q) if calls_ok else math.nan,
            "share of queries calling premium",
            note=f"interpolated {interp}" if calls_ok else calls_na,
        )
    for target, name in ((0.5, "cpt50"), (0.8, "cpt80")):
        value = (
            cpt(
                dollars,
                target,
                x="cost_share",
                quality=quality,
                weak=w_q,
                strong=p_q,
                premium_cost=p_cost,
                weak_cost=w_cost,
            )
            if dollars is not None and not dollars_na
            else math.nan
        )
        add(f"{name}_dollars", value, "share of premium-only cost", note=dollars_na or f"interpolated {interp}")

    k = _cheapest_reaching(front, quality=quality, target=floor * p_q, cost=cost)
    name = f"oracle_savings_share_at_{pct}"
    unit = "share of floor-oracle savings"
    if k is None:
        add(name, math.nan, unit, note=f"n/a: no swept policy reaches {floor:.0%} of premium quality")
    elif fo["cost_per_1k_usd"] != fo["cost_per_1k_usd"]:
        add(name, math.nan, unit, note=f"n/a: the floor-constrained oracle cannot reach {floor:.0%} (see above)")
    elif not fo["cost_per_1k_usd"] < p_cost:
        add(name, math.nan, unit, note="n/a: even the floor-constrained oracle saves nothing against premium-only")
    else:
        row = front.iloc[k]
        add(
            name,
            oracle_savings_share(float(row[cost]), premium_cost=p_cost, oracle_cost=fo["cost_per_1k_usd"]),
            unit,
            pid=pid_of(row),
            note=f"the cheapest policy at {floor:.0%}: its saving over the floor-constrained oracle's"
            + (" (approximate, see the floor oracle's note)" if mixed else " (at most 1)"),
        )

    out = pd.DataFrame(rows, columns=["metric", "value", "lo", "hi", "unit", "policy_id", "note"])
    out["value"] = out["value"].astype(np.float64)
    out["lo"] = out["lo"].astype(np.float64)
    out["hi"] = out["hi"].astype(np.float64)
    out["policy_id"] = out["policy_id"].astype(object)
    return out


# ---------------------------------------------------------------------------
# scorer sanity checks


def price_quality_inversions(baselines: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs ``(cheaper tier, pricier tier)`` where the cheaper tier has strictly higher mean quality.

    Price order is by ``cost_per_1k_usd`` (equal costs are not ordered). A
    non-empty result means the scorer ranks tiers against their price order:
    either the cheap model really is better on this data, or the scorer
    rewards something other than answer quality. Tier names come from the
    ``tier`` column (else ``"tier<i>"``); pairs are sorted by the cheaper
    tier's cost, then the pricier tier's.
    """
    _require(baselines, ["tier_index", "cost_per_1k_usd", "quality"], "baselines table")
    b = baselines.dropna(subset=["cost_per_1k_usd", "quality"]).sort_values(
        ["cost_per_1k_usd", "tier_index"], kind="mergesort"
    )
    names = [str(n) for n in b["tier"]] if "tier" in b.columns else [f"tier{int(t)}" for t in b["tier_index"]]
    c = _floats(b["cost_per_1k_usd"])
    q = _floats(b["quality"])
    out: list[tuple[str, str]] = []
    for i in range(len(b)):
        for j in range(i + 1, len(b)):
            if c[i] < c[j] and q[i] > q[j]:
                out.append((names[i], names[j]))
    return out


def _average_ranks(v: FloatArray) -> FloatArray:
    return np.asarray(pd.Series(v).rank(method="average").to_numpy(), dtype=np.float64)


def rank_agreement(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of ``a`` and ``b``: Pearson correlation of their average ranks.

    Pairs with a missing value on either side are dropped. NaN when fewer than
    two pairs remain or either side is constant.
    """
    x = _floats(list(a))
    y = _floats(list(b))
    if len(x) != len(y):
        raise WorkbenchError(f"rank_agreement needs sequences of equal length, got {len(x)} and {len(y)}.")
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return math.nan
    rx = _average_ranks(x) - (len(x) + 1) / 2.0
    ry = _average_ranks(y) - (len(y) + 1) / 2.0
    den = math.sqrt(float(np.sum(rx * rx)) * float(np.sum(ry * ry)))
    return math.nan if den == 0 else float(np.sum(rx * ry)) / den
