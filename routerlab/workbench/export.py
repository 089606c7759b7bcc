"""Choose a policy and export it, with provenance, for production.

Two choosers. :func:`choose` is the *point-estimate* chooser: the cheapest
policy whose dev-split quality estimate stays at or above a floor (a share of
the all-premium policy's quality); it carries no guarantee (chosen from many
policies, its dev estimate is biased upwards). :func:`certify` is the
*certified* chooser (:mod:`routerlab.workbench.certify`): the cheapest policy
whose floor holds with probability 1 - delta under Learn then Test. Both put
their test-split numbers beside them, with paired bootstrap CIs for the share
of premium quality and the cost reduction. :func:`export_policy` writes the policy JSON
with a ``provenance`` object saying what it was tuned on: eval set and
cassette hashes, tier models, price source, scorer, floor, dev and test
metrics with CIs, routerlab version and date. ``load_policy`` refuses such a
file for a ladder of other models unless forced.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from routerlab import __version__
from routerlab.classifier import COMPLEXITY_CLASSES
from routerlab.errors import WorkbenchError
from routerlab.policy import RouterPolicy, dump_policy
from routerlab.pricing import price_source_version
from routerlab.workbench.certify import Bound, best_certifiable_floor, items_to_certify, ltt_select
from routerlab.workbench.frontier import reaches
from routerlab.workbench.outcomes import PICO, Outcomes
from routerlab.workbench.sweep import (
    NO_CHECK,
    Grid,
    PolicyPoint,
    bootstrap_weights,
    evaluate,
    point_by_id,
    simulate,
)

CHOOSERS = ("certified", "point")
REFUSAL = " The exported policy would be all-premium; `routerlab export` refuses unless forced."


def premium_point(o: Outcomes) -> PolicyPoint:
    """Every query straight to the final tier."""
    last = len(o.tiers) - 1
    return PolicyPoint((last, last, last), True, NO_CHECK, 2, COMPLEXITY_CLASSES, (), None)


def single_tier_point(o: Outcomes, tier_index: int) -> PolicyPoint:
    """Every query to one tier, no cascade (failures still fall back)."""
    return PolicyPoint((tier_index,) * 3, False, NO_CHECK, 2, COMPLEXITY_CLASSES, (), None)


def per_item_arrays(
    o: Outcomes, points: list[PolicyPoint], scorer: str, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (policy, item) quality under ``scorer`` and cost in USD, and the item positions (the ``mask``
    items). A quality is NaN where the answer a policy returns is unscored (the scorer does not apply)."""
    sim = simulate(o, points)
    q = sim.quality[scorer]
    idx = np.flatnonzero(np.ones(o.n_items, bool) if mask is None else np.asarray(mask, bool))
    return q[:, idx], sim.cost_pico[:, idx].astype(np.float64) / float(PICO), idx


def scored_mean(q: np.ndarray) -> np.ndarray:
    """Row means over the scored (non-NaN) entries, 0 where none is: the sweep's own quality mean."""
    valid = ~np.isnan(q)
    out: np.ndarray = np.where(valid, q, 0.0).sum(axis=-1) / np.maximum(valid.sum(axis=-1), 1)
    return out


def paired_cis(
    q: np.ndarray, ref: np.ndarray, cost: np.ndarray, ref_cost: np.ndarray, *, bootstrap: int = 1000, seed: int = 0
) -> dict[str, list[float] | None]:
    """Paired bootstrap 95% CIs (percentile) for ``mean(q) / mean(ref)`` and ``1 - mean(cost) / mean(ref_cost)``.

    The policy and the reference are resampled together, item by item, so the CI reflects the paired
    difference, not two independent means. None where a resample's denominator is 0 (the ratio is
    undefined)."""
    n = len(q)
    if n == 0 or bootstrap <= 0:
        return {"quality_share_ci95": None, "cost_reduction_ci95": None}
    w = bootstrap_weights(n, bootstrap, seed)
    scored = ~(np.isnan(q) | np.isnan(ref))  # unscored answers are left out of quality, as in the sweep
    qz, rz = np.where(scored, q, 0.0), np.where(scored, ref, 0.0)
    out: dict[str, list[float] | None] = {}
    for name, num, den, flip in (
        ("quality_share_ci95", qz, rz, False),
        ("cost_reduction_ci95", cost, ref_cost, True),
    ):
        dw = den @ w
        if bool((dw == 0).any()):
            out[name] = None
            continue
        r = (num @ w) / dw
        if flip:
            r = 1.0 - r
        out[name] = [round(float(np.percentile(r, 2.5)), 6), round(float(np.percentile(r, 97.5)), 6)]
    return out


@dataclass(frozen=True)
class Choice:
    """The chosen policy and its numbers on both splits.

    ``dev`` is the split it was chosen on (for the certified chooser: the calibration split), named by
    ``dev_split``; ``paired`` holds the paired bootstrap CIs of its share of premium quality and its cost
    reduction on each split."""

    point: PolicyPoint
    dev: pd.Series
    test: pd.Series
    premium_dev: pd.Series
    premium_test: pd.Series
    scorer: str
    floor: float
    paired: dict[str, dict[str, list[float] | None]] | None = None
    chooser: str = "point"
    dev_split: str = "dev"
    n_tiers: int | None = None

    def label(self) -> str:
        return self.point.label(self.n_tiers)

    def meets_floor(self, split: str = "test") -> bool | None:
        """Whether the policy's quality on ``split`` is at least the floor times premium quality (None: premium
        scores 0 there, so there is no share)."""
        q = f"quality_{self.scorer}"
        row, prem = (self.dev, self.premium_dev) if split == "dev" else (self.test, self.premium_test)
        if not prem[q]:
            return None
        return bool(reaches(float(row[q]), self.floor * float(prem[q])))

    def metrics(self) -> dict[str, Any]:
        def pick(row: pd.Series, prem: pd.Series, split: str) -> dict[str, Any]:
            q = f"quality_{self.scorer}"
            paired = (self.paired or {}).get(split, {})
            return {
                "n_items": int(row["n_items"]),
                "quality": round(float(row[q]), 6),
                "quality_ci95": [round(float(row[f"{q}_lo"]), 6), round(float(row[f"{q}_hi"]), 6)],
                "quality_share_of_premium": round(float(row[q] / prem[q]), 6) if prem[q] else None,
                "quality_share_ci95": paired.get("quality_share_ci95"),
                "cost_per_1k_usd": round(float(row["cost_per_1k_usd"]), 6),
                "premium_cost_per_1k_usd": round(float(prem["cost_per_1k_usd"]), 6),
                "cost_reduction_vs_premium": (
                    round(1 - float(row["cost_per_1k_usd"] / prem["cost_per_1k_usd"]), 6)
                    if prem["cost_per_1k_usd"]
                    else None
                ),
                "cost_reduction_ci95": paired.get("cost_reduction_ci95"),
                "escalation_rate": round(float(row["escalation_rate"]), 6),
                "premium_call_share": round(float(row["premium_call_share"]), 6),
                "tier_mix": [round(float(row[c]), 6) for c in row.index if str(c).startswith("share_tier_")],
                "latency_p50_ms": round(float(row["latency_p50_ms"]), 1),
                "latency_p95_ms": round(float(row["latency_p95_ms"]), 1),
            }

        return {"dev": pick(self.dev, self.premium_dev, "dev"), "test": pick(self.test, self.premium_test, "test")}


def choose(
    o: Outcomes,
    sweep_dev: pd.DataFrame,
    *,
    scorer: str,
    floor: float = 0.95,
    dev: np.ndarray,
    test: np.ndarray,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Choice:
    """The cheapest policy whose dev quality is >= ``floor`` x the all-premium dev quality.

    Ties in cost go to the higher quality, then to the earlier row of the sweep table. The
    all-premium policy always qualifies, so there is always a choice.
    """
    q = f"quality_{scorer}"
    prem_dev = evaluate(o, premium_point(o), mask=dev, bootstrap=bootstrap, seed=seed)
    ok = sweep_dev[reaches(sweep_dev[q].to_numpy(float), floor * prem_dev[q]) & (sweep_dev["failure_rate"] == 0)]
    if ok.empty:  # all-premium, under the ladder's own cost cap (the baseline itself runs uncapped)
        point = replace(premium_point(o), cap_usd=o.policy.max_cost_per_query_usd)
    else:
        best = ok.sort_values(["cost_per_1k_usd", q], ascending=[True, False], kind="stable").iloc[0]
        point = point_by_id(sweep_dev)[str(best["policy_id"])]
    return _choice(o, point, scorer=scorer, floor=floor, dev=dev, test=test, bootstrap=bootstrap, seed=seed)


def _choice(
    o: Outcomes,
    point: PolicyPoint,
    *,
    scorer: str,
    floor: float,
    dev: np.ndarray,
    test: np.ndarray,
    bootstrap: int,
    seed: int,
    chooser: str = "point",
    dev_split: str = "dev",
    premium_dev: pd.Series | None = None,
) -> Choice:
    paired: dict[str, dict[str, list[float] | None]] = {}
    for split, mask in (("dev", dev), ("test", test)):
        q, c, _ = per_item_arrays(o, [point, premium_point(o)], scorer, mask)
        paired[split] = paired_cis(q[0], q[1], c[0], c[1], bootstrap=bootstrap, seed=seed)
    return Choice(
        point=point,
        dev=evaluate(o, point, mask=dev, bootstrap=bootstrap, seed=seed),
        test=evaluate(o, point, mask=test, bootstrap=bootstrap, seed=seed),
        premium_dev=(
            premium_dev
            if premium_dev is not None
            else evaluate(o, premium_point(o), mask=dev, bootstrap=bootstrap, seed=seed)
        ),
        premium_test=evaluate(o, premium_point(o), mask=test, bootstrap=bootstrap, seed=seed),
        scorer=scorer,
        floor=floor,
        paired=paired,
        chooser=chooser,
        dev_split=dev_split,
        n_tiers=len(o.tiers),
    )


@dataclass(frozen=True)
class Certified:
    """The certified chooser's result: the choice, whether anything cheaper than all-premium was certified,
    and the evidence (the tested sequence, with each hypothesis' p-value)."""

    choice: Choice  # dev = the calibration split; the point is all-premium when nothing was certified
    feasible: bool  # a policy cheaper than all-premium was certified
    floor: float
    delta: float
    bound: str
    n_tune: int
    n_calibrate: int
    sequence: pd.DataFrame  # one row per candidate in testing order: label, tune/cal share, p-value, certified
    best_floor: float | None  # the highest floor certifiable at this n and delta (descriptive), None: none
    items_needed: int | None  # calibration items the first candidate would need at the requested floor
    budget_usd: float | None = None
    certified_not_cheaper: bool = False  # policies were certified, but none cheaper than all-premium

    def summary(self) -> str:
        """The result in words."""
        d = f"{1 - self.delta:.0%}"
        if self.feasible:
            return (
                f"Certified: with probability at least {d} (bound {self.bound}, {self.n_calibrate} calibration "
                f"items), `{self.choice.label()}` keeps at least {self.floor:.0%} of all-premium quality on "
                "traffic exchangeable with the calibration items."
            )
        parts = [
            f"No policy cheaper than all-premium can be certified at a {self.floor:.0%} floor with "
            f"probability {d} from {self.n_calibrate} calibration items (bound {self.bound})"
        ]
        if not len(self.sequence):
            parts.append("no candidate on the tune split is cheaper than all-premium")
        if self.certified_not_cheaper:
            parts.append("the policies that were certified cost no less than all-premium on the calibration items")
        if self.budget_usd is not None:
            parts.append(f"a policy also had to be certified under ${self.budget_usd * 1000:g} per 1k queries")
        if self.best_floor is not None:
            parts.append(
                f"the highest floor that can be certified at this n and delta is about {self.best_floor:.1%} "
                "(read after seeing the calibration items, so not itself covered by the guarantee)"
            )
        elif len(self.sequence) and not self.certified_not_cheaper:
            parts.append("no floor at all can be certified at this n and delta")
        if self.items_needed is None and len(self.sequence) and not self.certified_not_cheaper:
            parts.append(
                "the first candidate scores at or below the floor on calibration, so more items would not help"
            )
        elif self.items_needed is not None:
            n = self.items_needed
            many = f"more than {n - 1:,}" if n > 200_000 else f"about {n:,}"
            parts.append(
                f"certifying the first candidate at {self.floor:.0%} would take {many} calibration items if its "
                "paired scores kept their distribution"
            )
        return "; ".join(parts) + "." + REFUSAL


def budget_setup(
    o: Outcomes, pts: list[PolicyPoint], budget_usd: float | None, cost_bound_usd: float | None
) -> tuple[list[PolicyPoint], float | None]:
    """The candidates and the per-query cost bound a budget test needs (None without a budget): the given
    bound (an assumption about the traffic), else the ladder's cap, which the router enforces (then every
    candidate runs under it)."""
    if budget_usd is None:
        return pts, None
    cap = o.policy.max_cost_per_query_usd
    if cost_bound_usd is not None:
        return pts, float(cost_bound_usd)
    if cap is not None and o.policy.cost_cap_mode == "worst_case":
        return [replace(pt, cap_usd=cap) if pt.cap_usd is None else pt for pt in pts], float(cap)
    raise WorkbenchError(
        "certifying a cost budget needs a bound on any one query's cost: set max_cost_per_query_usd "
        "(with cost_cap_mode worst_case) in the ladder policy, which the router enforces, or give "
        "cost_bound_usd (--cost-bound), an assumption about your traffic"
    )


def certify(
    o: Outcomes,
    grid: Grid,
    *,
    scorer: str,
    floor: float = 0.95,
    delta: float = 0.1,
    bound: Bound = "wsr",
    tune: np.ndarray,
    calibrate: np.ndarray,
    test: np.ndarray,
    budget_usd: float | None = None,
    cost_bound_usd: float | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Certified:
    """The certified chooser (Learn then Test, see :mod:`routerlab.workbench.certify`).

    The grid's thresholds and the testing order (the tune split's frontier, priciest first, only policies
    cheaper than all-premium there) come from the ``tune`` items; the hypotheses are tested on the
    ``calibrate`` items, read in a seeded random order; ``test`` only reports. With ``budget_usd`` (mean
    cost per query) a policy must also be certified under the budget; the per-query bound that test needs
    is ``cost_bound_usd`` when given (an assumption about the traffic), else the ladder's cost cap, which
    the router enforces."""
    prem = premium_point(o)
    pts = [pt for pt in grid.points(o, mask=tune) if pt != prem]
    pts, cost_bound = budget_setup(o, pts, budget_usd, cost_bound_usd)
    tq_all: list[np.ndarray] = []
    tc_all: list[np.ndarray] = []
    for i in range(0, len(pts), 512):
        q, c, _ = per_item_arrays(o, pts[i : i + 512], scorer, tune)
        tq_all.append(scored_mean(q))
        tc_all.append(c.mean(axis=1))
    # The floor is relative to all-premium quality (uncapped, as the point chooser's); a candidate must
    # cost less than all-premium under the ladder's cap (the fallback), else it saves nothing.
    fallback = replace(prem, cap_usd=o.policy.max_cost_per_query_usd)
    pq, pc, _ = per_item_arrays(o, [prem, fallback], scorer, tune)
    tq = np.concatenate(tq_all) if tq_all else np.zeros(0)
    tc = np.concatenate(tc_all) if tc_all else np.zeros(0)
    cheaper = np.flatnonzero(tc < float(pc[1].mean()) * (1 - 1e-12))
    cand = [pts[i] for i in cheaper]
    rng = np.random.default_rng(seed)
    cq, cc, idx = per_item_arrays(o, [*cand, prem, fallback], scorer, calibrate)
    perm = rng.permutation(len(idx))  # the betting bound reads the items in sequence: a random order
    cq, cc = cq[:, perm], cc[:, perm]
    ref = cq[-2]
    cq, cc = cq[:-1], np.delete(cc, -2, axis=0)  # candidates then the fallback (costs); premium's scores in ref
    seq = ltt_select(
        tq[cheaper][:, None],
        tc[cheaper][:, None],
        cq[:-1],
        ref,
        cc[:-1],
        floor=floor,
        delta=delta,
        bound=bound,
        budget=budget_usd,
        cost_bound=cost_bound,
    )
    chosen = seq.chosen
    not_cheaper = False
    if chosen is not None and float(cc[chosen].mean()) >= float(cc[-1].mean()) * (1 - 1e-12):
        chosen, not_cheaper = None, True  # certified, but none cheaper than all-premium on calibration
    ref_mean = float(scored_mean(ref))
    prem_tune = float(scored_mean(pq[0]))
    rows = []
    for j, i in enumerate(seq.order):
        rows.append(
            {
                "policy": cand[i].label(len(o.tiers)),
                "policy_id": cand[i].id,
                "tune_share": float(tq[cheaper][i] / prem_tune) if prem_tune else np.nan,
                "calibrate_share": float(scored_mean(cq[i]) / ref_mean) if ref_mean else np.nan,
                "calibrate_cost_per_1k_usd": float(cc[i].mean() * 1000),
                "p_value": seq.pvalues[j],
                **({} if seq.budget_pvalues is None else {"budget_p_value": seq.budget_pvalues[j]}),
                "certified": i in seq.certified,
            }
        )
    sequence = pd.DataFrame(rows)
    point = cand[chosen] if chosen is not None else fallback
    best = needed = None
    if chosen is None and seq.order and not seq.certified:  # the first hypothesis already stood
        d_q = delta if budget_usd is None else delta / 2
        best = best_certifiable_floor(seq.order, cq[:-1], ref, delta=d_q, bound=bound, upto=floor)
        needed = items_to_certify(cq[seq.order[0]], ref, floor, delta=d_q, bound=bound, seed=seed)
    return Certified(
        choice=_choice(
            o,
            point,
            scorer=scorer,
            floor=floor,
            dev=calibrate,
            test=test,
            bootstrap=bootstrap,
            seed=seed,
            chooser="certified",
            dev_split="calibrate",
        ),
        feasible=chosen is not None,
        floor=floor,
        delta=delta,
        bound=bound,
        n_tune=int(np.asarray(tune).sum()),
        n_calibrate=len(idx),
        sequence=sequence,
        best_floor=best,
        items_needed=needed,
        budget_usd=budget_usd,
        certified_not_cheaper=not_cheaper,
    )


def provenance(
    o: Outcomes,
    choice: Choice,
    *,
    evalset_sha256: str,
    dataset: str,
    split_seed: int,
    date: str | None = None,
    certified: Certified | None = None,
) -> dict[str, Any]:
    if choice.chooser == "certified" and certified is not None:
        how: dict[str, Any] = {
            "chooser": "certified",
            "certification": {
                "method": "Learn then Test, fixed-sequence testing over the tune split's frontier",
                "bound": certified.bound,
                "delta": certified.delta,
                "tune_items": certified.n_tune,
                "calibration_items": certified.n_calibrate,
                "guarantee": f"with probability >= {1 - certified.delta:g}, mean quality >= {certified.floor:g} x "
                "all-premium quality on traffic exchangeable with the calibration items",
            },
        }
    else:
        how = {"chooser": "point estimate (not certified)"}
    return {
        **how,
        "tuned_on": dataset,
        "evalset_sha256": evalset_sha256,
        "cassettes_sha256": o.cassettes_sha256,  # the cassette files of the eval set's items, in item order
        "outcome_table_key": o.key,  # cassettes + ladder + ks + scorers + price data
        "tier_models": list(o.models),
        "price_source": price_source_version(),
        "scorer": choice.scorer,
        "quality_floor": f"{choice.floor:g} x all-premium quality on the {choice.dev_split} split",
        "quality_floor_value": choice.floor,
        "split": {
            "seed": split_seed,
            f"{choice.dev_split}_items": int(choice.dev["n_items"]),
            "test_items": int(choice.test["n_items"]),
        },
        "metrics": choice.metrics(),
        "routerlab_version": __version__,
        "date": date or dt.date.today().isoformat(),
    }


def export_policy(
    o: Outcomes,
    choice: Choice,
    path: str | os.PathLike[str],
    *,
    evalset_sha256: str,
    dataset: str,
    split_seed: int,
    name: str | None = None,
    date: str | None = None,
    certified: Certified | None = None,
) -> RouterPolicy:
    """Write the chosen policy with its provenance (atomically) and return it."""
    policy = choice.point.to_policy(
        o.policy,
        name=name or f"{dataset}-tuned",
        provenance=provenance(
            o,
            choice,
            evalset_sha256=evalset_sha256,
            dataset=dataset,
            split_seed=split_seed,
            date=date,
            certified=certified,
        ),
    )
    dump_policy(policy, path)
    return policy
