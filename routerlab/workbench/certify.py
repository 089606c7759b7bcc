"""A certified policy choice: the cheapest policy whose quality floor holds with probability 1 - delta.

The point-estimate chooser (:func:`routerlab.workbench.export.choose`) takes the
cheapest policy whose *dev estimate* reaches the floor. Chosen out of hundreds
of policies, that estimate is biased upwards (the winner's curse), and the
floor is a ratio to a noisy premium mean. This module gives the choice a
finite-sample guarantee instead.

What is certified
    For a policy *p*, floor *f* and level *delta*, the null hypothesis is
    ``H_p: E[q_p] < f * E[q_premium]`` (mean quality below f times the
    all-premium policy's mean quality on the same traffic). It is tested on
    the per-item *paired* differences ``D_i = q_p(i) - f * q_premium(i)``,
    which lie in ``[-f, 1]`` because every score lies in [0, 1]. Rejecting
    ``H_p`` certifies the policy.

Learn then Test (Angelopoulos, Bates, Candes, Jordan and Lei, 2021, "Learn
then Test: Calibrating predictive algorithms to achieve risk control")
    The items are split three ways. On the *tune* split the grid is built and
    swept, and the sequence of hypotheses is fixed: the tune split's Pareto
    frontier, priciest (safest) first. On the *calibrate* split the hypotheses
    are tested in that order, each at level delta, stopping at the first one
    not rejected (fixed-sequence testing). That controls the family-wise error
    rate at delta over the whole grid: with probability at least 1 - delta no
    certified policy is below the floor, so the cheapest certified one may be
    taken. The all-premium policy meets any floor <= 1 by definition and is
    the fallback; when nothing cheaper is certified the result says so
    (:attr:`Certified.feasible`). The *test* split plays no part: it only
    reports how the choice did.

The bounds (both valid for any distribution of scores in [0, 1])
    ``"wsr"`` (default): a betting test, Waudby-Smith and Ramdas (2024),
    "Estimating means of bounded random variables by betting", JRSS-B 86(1):
    the capital process ``K_t = prod (1 + lambda_i (X_i - m))`` with their
    predictable plug-in bets is a nonnegative supermartingale under
    ``E[X] <= m``, so by Ville's inequality ``p = min(1, 1 / max_t K_t)`` is a
    valid p-value. It adapts to the variance, which matters here: paired
    differences are mostly 0 or small.
    ``"hb"``: the Hoeffding-Bentkus p-value of Bates, Angelopoulos, Lei, Malik
    and Jordan (2021), "Distribution-free, risk-controlling prediction sets"
    (JACM), the bound Learn then Test uses: the smaller of Hoeffding's
    ``exp(-n h(min(r, a), a))`` and Bentkus' ``e P(Binom(n, a) <= ceil(n r))``.

Assumption
    Future traffic is exchangeable with the calibration items (drawn from the
    same distribution, in no particular order). A guarantee about last week's
    traffic says nothing about a different mix of queries next week: that is
    what ``routerlab audit`` and ``routerlab check`` are for.

The same machinery certifies a cost budget: ``H: E[cost] >= B`` tested on
``cost / C``, where C bounds any query's cost (the ladder's per-query cap,
which the router enforces).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from routerlab.errors import WorkbenchError

Bound = Literal["wsr", "hb"]
BOUNDS: tuple[str, ...] = ("wsr", "hb")
FloatArray = npt.NDArray[np.float64]

_EPS = 1e-12


def _unit(x: npt.ArrayLike, what: str) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.size and (not np.all(np.isfinite(a)) or a.min() < -1e-9 or a.max() > 1 + 1e-9):
        raise WorkbenchError(
            f"{what} must lie in [0, 1] for the bound to hold; got values from {np.nanmin(a):g} to {np.nanmax(a):g}"
        )
    return np.clip(a, 0.0, 1.0)


def _check_bound(bound: str) -> None:
    if bound not in BOUNDS:
        raise WorkbenchError(f"bound must be one of {', '.join(BOUNDS)}; got {bound!r}")


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise WorkbenchError(f"delta (the error level) must be in (0, 1); got {delta!r}")


# ---------------------------------------------------------------------------
# p-values


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binom(n, p) <= k)."""
    from scipy.stats import binom

    return float(binom.cdf(k, n, p))


def hb_pvalue(loss: npt.ArrayLike, alpha: float) -> float:
    """Hoeffding-Bentkus p-value for ``H0: E[loss] >= alpha``, losses in [0, 1] (Bates et al. 2021)."""
    x = _unit(loss, "losses")
    n = len(x)
    if n == 0 or alpha >= 1.0:
        return 1.0
    if alpha <= 0.0:
        return 1.0  # E[loss] >= 0 always holds
    r = float(x.mean())
    a = min(r, alpha)

    def kl(u: float, v: float) -> float:
        t1 = 0.0 if u <= 0 else u * math.log(u / v)
        t2 = 0.0 if u >= 1 else (1 - u) * math.log((1 - u) / (1 - v))
        return t1 + t2

    p_hoeffding = math.exp(-n * kl(a, alpha))
    p_bentkus = math.e * _binom_cdf(math.ceil(n * r - 1e-9), n, alpha)
    return float(min(1.0, p_hoeffding, p_bentkus))


def wsr_pvalue(x: npt.ArrayLike, m: float, delta: float, *, c: float = 0.75) -> float:
    """Betting p-value for ``H0: E[x] <= m``, x in [0, 1] (Waudby-Smith and Ramdas 2024).

    Bets are their predictable plug-in, ``lambda_t = min(sqrt(2 log(1/delta) / (s2_{t-1} t log(1+t))), c/m)``
    with ``s2`` their regularised running variance; ``p = min(1, 1/max_t K_t)``, valid for the order given
    (pass the items in a random order)."""
    v = _unit(x, "scores")
    n = len(v)
    if n == 0 or m >= 1.0:
        return 1.0
    if m <= 0.0:
        return 0.0 if bool((v > 0).any()) else 1.0
    t = np.arange(1, n + 1, dtype=np.float64)
    mu = (0.5 + np.cumsum(v)) / (t + 1)
    s2 = (0.25 + np.cumsum((v - mu) ** 2)) / (t + 1)
    s2_prev = np.concatenate([[0.25], s2[:-1]])
    lam = np.sqrt(2.0 * math.log(1.0 / delta) / (s2_prev * t * np.log1p(t)))
    lam = np.minimum(lam, c / m)
    log_k = np.cumsum(np.log1p(lam * (v - m)))
    best = float(log_k.max())
    return float(min(1.0, math.exp(-best))) if best > -700 else 1.0


def _pairs(q: npt.ArrayLike, ref: npt.ArrayLike, *, unscored: str = "zero") -> tuple[FloatArray, FloatArray]:
    """Paired scores, items whose reference answer is unscored (NaN) left out. An unscored answer of the
    policy under test counts as 0 (``unscored="zero"``: pessimistic for a certificate) or drops the pair
    (``"drop"``: for the regression gate, which must not fail on what it cannot score)."""
    qa = np.asarray(q, dtype=np.float64)
    ra = np.asarray(ref, dtype=np.float64)
    if qa.shape != ra.shape:
        raise WorkbenchError(f"paired scores need equal lengths, got {qa.shape} and {ra.shape}")
    keep = ~np.isnan(ra)
    if unscored == "drop":
        keep &= ~np.isnan(qa)
    else:
        qa = np.where(np.isnan(qa), 0.0, qa)
    return _unit(qa[keep], "quality scores"), _unit(ra[keep], "premium quality scores")


def floor_pvalue(q: npt.ArrayLike, ref: npt.ArrayLike, floor: float, *, delta: float, bound: Bound = "wsr") -> float:
    """p-value for ``H0: E[q] < floor * E[ref]`` from paired per-item scores in [0, 1].

    ``D = q - floor * ref`` lies in [-floor, 1]; ``X = (D + floor) / (1 + floor)`` in [0, 1] and
    ``H0`` is ``E[X] < floor / (1 + floor)``. Items must be in a random order for ``"wsr"``. An item whose
    reference answer is unscored (NaN) is left out; an unscored answer of the policy counts as 0, so the
    certificate never rests on answers the scorer could not read."""
    _check_bound(bound)
    qa, ra = _pairs(q, ref)
    x = (qa - floor * ra + floor) / (1.0 + floor)
    m = floor / (1.0 + floor)
    if bound == "wsr":
        return wsr_pvalue(x, m, delta)
    return hb_pvalue(1.0 - x, 1.0 - m)


def budget_pvalue(
    cost: npt.ArrayLike, budget: float, cost_bound: float, *, delta: float, bound: Bound = "wsr"
) -> float:
    """p-value for ``H0: E[cost] >= budget``, when no query can cost more than ``cost_bound``."""
    _check_bound(bound)
    if cost_bound <= 0:
        raise WorkbenchError(f"the per-query cost bound must be positive, got {cost_bound!r}")
    c = np.asarray(cost, dtype=np.float64)
    if c.size and c.max() > cost_bound * (1 + 1e-9):
        raise WorkbenchError(
            f"a query cost {c.max():g}, above the per-query bound {cost_bound:g} the budget test assumes"
        )
    x = np.clip(c / cost_bound, 0.0, 1.0)
    if bound == "wsr":
        return wsr_pvalue(1.0 - x, 1.0 - budget / cost_bound, delta)
    return hb_pvalue(x, budget / cost_bound)


# ---------------------------------------------------------------------------
# fixed-sequence testing (Learn then Test)


def fixed_sequence(pvalues: Sequence[float], delta: float) -> int:
    """How many hypotheses, taken in order, are rejected at level delta before the first that is not."""
    for i, p in enumerate(pvalues):
        if not p <= delta:
            return i
    return len(pvalues)


def frontier_order(cost: npt.ArrayLike, quality: npt.ArrayLike) -> list[int]:
    """Indices of the Pareto frontier of (mean cost, mean quality), priciest first: the testing order.

    A candidate is on the frontier when no other costs no more and scores at least as well (one of the
    two strictly); among exact ties the lower index is kept."""
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    ok = np.flatnonzero(~(np.isnan(c) | np.isnan(q)))
    order = ok[np.lexsort((ok, -q[ok], c[ok]))]
    keep: list[int] = []
    best = -math.inf
    for i in order:
        if q[i] > best:
            keep.append(int(i))
            best = float(q[i])
    return keep[::-1]


@dataclass(frozen=True)
class TestedSequence:
    """What fixed-sequence testing did: the order, the p-values of the hypotheses tested, the certified."""

    order: tuple[int, ...]  # candidate indices in testing order
    pvalues: tuple[float, ...]  # quality p-value of each candidate in ``order``
    budget_pvalues: tuple[float, ...] | None  # cost p-value of each candidate in ``order`` (a budget was given)
    certified: tuple[int, ...]  # candidates certified (for the floor, and the budget when given)
    chosen: int | None  # the cheapest certified on calibration (None: nothing certified)
    delta: float


def ltt_select(
    tune_q: npt.ArrayLike,
    tune_cost: npt.ArrayLike,
    cal_q: npt.ArrayLike,
    cal_ref: npt.ArrayLike,
    cal_cost: npt.ArrayLike,
    *,
    floor: float,
    delta: float,
    bound: Bound = "wsr",
    budget: float | None = None,
    cost_bound: float | None = None,
) -> TestedSequence:
    """Learn then Test over candidate policies given their per-item scores and costs.

    ``*_q`` and ``*_cost`` are (candidates, items) arrays on the tune and calibrate splits (the tune arrays
    may be (candidates, 1) arrays of means), ``cal_ref`` the all-premium policy's per-item scores on the
    calibration items, in a random order shared with ``cal_q`` (the betting bound reads them in sequence).
    The order is the tune split's frontier, priciest first; the quality hypotheses are tested in that
    order on calibration. With ``budget`` (mean cost per query, with ``cost_bound`` the most
    any query can cost) the budget hypotheses are tested in the opposite order (cheapest first), each
    family at delta / 2 (Bonferroni), and a candidate is certified when it passes both."""
    _check_delta(delta)
    _check_bound(bound)
    if not 0.0 < floor <= 1.0:
        raise WorkbenchError(f"floor must be in (0, 1]; got {floor!r}")
    tq = np.atleast_2d(np.asarray(tune_q, dtype=np.float64))
    tc = np.atleast_2d(np.asarray(tune_cost, dtype=np.float64))
    cq = np.atleast_2d(np.asarray(cal_q, dtype=np.float64))
    cc = np.atleast_2d(np.asarray(cal_cost, dtype=np.float64))
    valid = ~np.isnan(tq)
    tune_mean = np.where(valid, tq, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    order = frontier_order(tc.mean(axis=1), tune_mean)
    d_q = delta if budget is None else delta / 2
    pv = [floor_pvalue(cq[i], cal_ref, floor, delta=d_q, bound=bound) for i in order]
    passed = set(order[: fixed_sequence(pv, d_q)])
    bpv: list[float] | None = None
    if budget is not None:
        if cost_bound is None:
            raise WorkbenchError("a budget needs cost_bound: the most any one query can cost")
        cheap_first = order[::-1]
        b = [budget_pvalue(cc[i], budget, cost_bound, delta=delta / 2, bound=bound) for i in cheap_first]
        under = set(cheap_first[: fixed_sequence(b, delta / 2)])
        passed &= under
        by_i = dict(zip(cheap_first, b, strict=True))
        bpv = [by_i[i] for i in order]
    certified = tuple(i for i in order if i in passed)
    chosen = None
    if certified:
        chosen = min(certified, key=lambda i: (float(cc[i].mean()), -float(np.nansum(cq[i])), order.index(i)))
    return TestedSequence(tuple(order), tuple(pv), None if bpv is None else tuple(bpv), certified, chosen, delta)


def best_certifiable_floor(
    order: Sequence[int],
    cal_q: npt.ArrayLike,
    cal_ref: npt.ArrayLike,
    *,
    delta: float,
    bound: Bound = "wsr",
    step: float = 0.005,
    upto: float = 1.0,
) -> float | None:
    """The highest floor (on a ``step`` grid, at most ``upto``) at which fixed-sequence testing in ``order``
    certifies at least one candidate; None when none is certified even at ``step``.

    Descriptive only: a floor picked after seeing the calibration items is not covered by the guarantee
    (certify at it on new items, or on a fresh split)."""
    cq = np.atleast_2d(np.asarray(cal_q, dtype=np.float64))
    grid = np.round(np.arange(step, upto + step / 2, step), 6)[::-1]
    if not order:
        return None
    first = cq[order[0]]  # fixed sequence: something is certified exactly when the first hypothesis falls
    for f in grid:
        if floor_pvalue(first, cal_ref, float(f), delta=delta, bound=bound) <= delta:
            return float(f)
    return None


def items_to_certify(
    q: npt.ArrayLike,
    ref: npt.ArrayLike,
    floor: float,
    *,
    delta: float,
    bound: Bound = "wsr",
    runs: int = 20,
    seed: int = 0,
    n_max: int = 200_000,
) -> int | None:
    """About how many calibration items would certify ``floor`` for this candidate, if its paired scores kept
    their observed distribution: the smallest n (on a doubling grid refined by bisection) at which at least
    half of ``runs`` resamples of size n are certified. None when its mean is at or below the floor (no
    number of items will do); ``n_max + 1`` when even ``n_max`` items are not enough."""
    qa, ra = _pairs(q, ref)
    if len(qa) == 0 or float(qa.mean() - floor * ra.mean()) <= 0:
        return None
    rng = np.random.default_rng(seed)

    def works(n: int) -> bool:
        hits = 0
        for _ in range(runs):
            idx = rng.integers(0, len(qa), size=n)
            hits += floor_pvalue(qa[idx], ra[idx], floor, delta=delta, bound=bound) <= delta
        return hits * 2 >= runs

    lo, hi = 0, max(len(qa), 16)
    while not works(hi):
        lo = hi
        hi *= 2
        if hi > n_max:
            return n_max + 1
    while hi - lo > max(1, hi // 50):  # bisect to about 2%
        mid = (lo + hi) // 2
        if works(mid):
            hi = mid
        else:
            lo = mid
    return hi


def below_floor_pvalue(
    q: npt.ArrayLike, ref: npt.ArrayLike, floor: float, *, delta: float, bound: Bound = "wsr"
) -> float:
    """p-value for ``H0: E[q] >= floor * E[ref]``: small when ``q`` is *below* the floor with confidence
    (the regression gate's test, the mirror of :func:`floor_pvalue`).

    ``D = floor * ref - q`` lies in [-1, floor]; ``X = (D + 1) / (1 + floor)`` in [0, 1] and ``H0`` is
    ``E[X] <= 1 / (1 + floor)``."""
    _check_bound(bound)
    qa, ra = _pairs(q, ref, unscored="drop")
    x = (floor * ra - qa + 1.0) / (1.0 + floor)
    m = 1.0 / (1.0 + floor)
    if bound == "wsr":
        return wsr_pvalue(x, m, delta)
    return hb_pvalue(1.0 - x, 1.0 - m)
