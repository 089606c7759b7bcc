"""Choose a policy on the dev split and export it, with provenance, for production.

:func:`choose` picks the cheapest policy whose dev-split quality stays at or
above a floor (a share of the all-premium policy's quality) and puts its
test-split numbers beside it. :func:`export_policy` writes the policy JSON
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
from routerlab.policy import RouterPolicy, dump_policy
from routerlab.pricing import price_source_version
from routerlab.workbench.outcomes import Outcomes
from routerlab.workbench.sweep import NO_CHECK, PolicyPoint, evaluate, point_by_id


def premium_point(o: Outcomes) -> PolicyPoint:
    """Every query straight to the final tier."""
    last = len(o.tiers) - 1
    return PolicyPoint((last, last, last), True, NO_CHECK, 2, COMPLEXITY_CLASSES, (), None)


def single_tier_point(o: Outcomes, tier_index: int) -> PolicyPoint:
    """Every query to one tier, no cascade (failures still fall back)."""
    return PolicyPoint((tier_index,) * 3, False, NO_CHECK, 2, COMPLEXITY_CLASSES, (), None)


@dataclass(frozen=True)
class Choice:
    """The chosen policy and its numbers on both splits."""

    point: PolicyPoint
    dev: pd.Series
    test: pd.Series
    premium_dev: pd.Series
    premium_test: pd.Series
    scorer: str
    floor: float

    def metrics(self) -> dict[str, Any]:
        def pick(row: pd.Series, prem: pd.Series) -> dict[str, Any]:
            q = f"quality_{self.scorer}"
            return {
                "n_items": int(row["n_items"]),
                "quality": round(float(row[q]), 6),
                "quality_ci95": [round(float(row[f"{q}_lo"]), 6), round(float(row[f"{q}_hi"]), 6)],
                "quality_share_of_premium": round(float(row[q] / prem[q]), 6) if prem[q] else None,
                "cost_per_1k_usd": round(float(row["cost_per_1k_usd"]), 6),
                "premium_cost_per_1k_usd": round(float(prem["cost_per_1k_usd"]), 6),
                "cost_reduction_vs_premium": (
                    round(1 - float(row["cost_per_1k_usd"] / prem["cost_per_1k_usd"]), 6)
                    if prem["cost_per_1k_usd"]
                    else None
                ),
                "escalation_rate": round(float(row["escalation_rate"]), 6),
                "premium_call_share": round(float(row["premium_call_share"]), 6),
                "tier_mix": [round(float(row[c]), 6) for c in row.index if str(c).startswith("share_tier_")],
                "latency_p50_ms": round(float(row["latency_p50_ms"]), 1),
                "latency_p95_ms": round(float(row["latency_p95_ms"]), 1),
            }

        return {"dev": pick(self.dev, self.premium_dev), "test": pick(self.test, self.premium_test)}


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
    ok = sweep_dev[(sweep_dev[q] >= floor * prem_dev[q]) & (sweep_dev["failure_rate"] == 0)]
    if ok.empty:  # all-premium, under the ladder's own cost cap (the baseline itself runs uncapped)
        point = replace(premium_point(o), cap_usd=o.policy.max_cost_per_query_usd)
    else:
        best = ok.sort_values(["cost_per_1k_usd", q], ascending=[True, False], kind="stable").iloc[0]
        point = point_by_id(sweep_dev)[str(best["policy_id"])]
    return Choice(
        point=point,
        dev=evaluate(o, point, mask=dev, bootstrap=bootstrap, seed=seed),
        test=evaluate(o, point, mask=test, bootstrap=bootstrap, seed=seed),
        premium_dev=prem_dev,
        premium_test=evaluate(o, premium_point(o), mask=test, bootstrap=bootstrap, seed=seed),
        scorer=scorer,
        floor=floor,
    )


def provenance(
    o: Outcomes, choice: Choice, *, evalset_sha256: str, dataset: str, split_seed: int, date: str | None = None
) -> dict[str, Any]:
    return {
        "tuned_on": dataset,
        "evalset_sha256": evalset_sha256,
        "cassettes_sha256": o.cassettes_sha256,  # the cassette files of the eval set's items, in item order
        "outcome_table_key": o.key,  # cassettes + ladder + ks + scorers + price data
        "tier_models": list(o.models),
        "price_source": price_source_version(),
        "scorer": choice.scorer,
        "quality_floor": f"{choice.floor:g} x all-premium quality on the dev split",
        "split": {
            "seed": split_seed,
            "dev_items": int(choice.dev["n_items"]),
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
) -> RouterPolicy:
    """Write the chosen policy with its provenance (atomically) and return it."""
    policy = choice.point.to_policy(
        o.policy,
        name=name or f"{dataset}-tuned",
        provenance=provenance(
            o, choice, evalset_sha256=evalset_sha256, dataset=dataset, split_seed=split_seed, date=date
        ),
    )
    dump_policy(policy, path)
    return policy
