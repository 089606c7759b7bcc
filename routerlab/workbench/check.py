"""A regression gate for CI pipelines: is a candidate policy worse, with confidence, on a study's traffic?

``routerlab check STUDY --policy CANDIDATE.json`` replays the study through the
candidate (the sweep's exact simulation of the router) and fails when there is
evidence at level ``delta`` that:

- its mean quality is below ``floor`` x the reference's (the all-premium
  policy, or ``--production`` when given): the one-sided test of
  :func:`routerlab.workbench.certify.below_floor_pvalue` on paired per-item
  scores, a finite-sample bound (default: betting, Waudby-Smith and Ramdas);
- its mean cost per 1k queries is above ``max_cost_per_1k``, or its p95
  latency above ``max_p95_ms``: the one-sided bootstrap lower bound (at level
  delta) of the estimate lies above the limit.

Anything not shown worse with confidence passes: the gate catches regressions
the data can prove, and prints the evidence either way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from routerlab.errors import WorkbenchError
from routerlab.policy import RouterPolicy
from routerlab.workbench.certify import Bound, below_floor_pvalue
from routerlab.workbench.export import paired_cis, premium_point
from routerlab.workbench.outcomes import PICO, Outcomes
from routerlab.workbench.sweep import point_from_policy, simulate

EXIT_REGRESSION = 3


def floor_of(policy: RouterPolicy, default: float = 0.95) -> float:
    """The quality floor an exported policy was chosen for (its provenance), else ``default``."""
    prov = policy.provenance or {}
    v = prov.get("quality_floor_value")
    if isinstance(v, (int, float)):
        return float(v)
    m = re.match(r"\s*([0-9.]+)", str(prov.get("quality_floor", "")))
    return float(m.group(1)) if m else default


@dataclass
class CheckResult:
    passed: bool
    evidence: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def text(self) -> str:
        verdict = (
            "PASS: no regression shown at this level"
            if self.passed
            else f"FAIL: {len(self.failures)} regression(s) shown with confidence"
        )
        return "\n".join([*self.evidence, *(f"  - {f}" for f in self.failures), verdict])


def _same_ladder(o: Outcomes, policy: RouterPolicy, what: str) -> None:
    models = [t.model for t in policy.tiers]
    if models != list(o.models):
        raise WorkbenchError(
            f"the {what} policy {policy.name!r} routes over {models}, but the study was recorded for {list(o.models)}; "
            "a study can only replay the ladder it was recorded with"
        )


def _boot_lower(values: np.ndarray, stat: str, *, delta: float, bootstrap: int, seed: int) -> tuple[float, float]:
    """The statistic (mean or p95) and its one-sided bootstrap lower bound at level delta."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(bootstrap, len(values)))
    res = values[idx]
    est = float(values.mean()) if stat == "mean" else float(np.percentile(values, 95))
    boots = res.mean(axis=1) if stat == "mean" else np.percentile(res, 95, axis=1)
    return est, float(np.percentile(boots, 100 * delta))


def check_policy(
    o: Outcomes,
    candidate: RouterPolicy,
    *,
    scorer: str,
    production: RouterPolicy | None = None,
    floor: float | None = None,
    max_cost_per_1k: float | None = None,
    max_p95_ms: float | None = None,
    delta: float = 0.05,
    bound: Bound = "wsr",
    mask: np.ndarray | None = None,
    bootstrap: int = 2000,
    seed: int = 0,
) -> CheckResult:
    """Replay the ``mask`` items (default all) through the candidate and the reference; see the module doc."""
    o.require_loaded("the policy check")
    _same_ladder(o, candidate, "candidate")
    cand = point_from_policy(candidate, o.policy)
    if production is not None:
        _same_ladder(o, production, "production")
        ref_pt, ref_name = point_from_policy(production, o.policy), f"production ({production.name})"
        floor = 1.0 if floor is None else floor
    else:
        ref_pt, ref_name = premium_point(o), "all-premium"
        floor = floor_of(candidate) if floor is None else floor
    sim = simulate(o, [cand, ref_pt])
    sel = np.flatnonzero(np.ones(o.n_items, bool) if mask is None else np.asarray(mask, bool))
    if len(sel) == 0:
        raise WorkbenchError("no items to check")
    q = sim.quality[scorer][:, sel]
    cost = sim.cost_pico[:, sel].astype(np.float64) / float(PICO)
    lat = sim.latency_ms[:, sel]
    perm = np.random.default_rng(seed).permutation(len(sel))  # the betting bound reads items in sequence
    p = below_floor_pvalue(q[0][perm], q[1][perm], floor, delta=delta, bound=bound)
    ci = paired_cis(q[0], q[1], cost[0], cost[1], bootstrap=bootstrap, seed=seed)
    share = float(np.nanmean(q[0]) / np.nanmean(q[1])) if np.nanmean(q[1]) else math.nan
    res = CheckResult(passed=True)
    sci = ci["quality_share_ci95"]
    res.evidence += [
        f"candidate {candidate.name!r}: {cand.label(len(o.tiers))}",
        f"reference: {ref_name}; {len(sel)} queries; level delta = {delta:g}; bound {bound}",
        f"quality ({scorer}): candidate {np.nanmean(q[0]):.4f}, reference {np.nanmean(q[1]):.4f}; share "
        f"{share:.1%}"
        + ("" if sci is None else f" (paired 95% CI {sci[0]:.1%} to {sci[1]:.1%})")
        + f"; floor {floor:.0%}; test of 'at or above the floor': p = {p:.3g} (at most {delta:g} means below it)",
    ]
    if p <= delta:
        res.failures.append(f"quality is below {floor:.0%} of the reference with confidence (p = {p:.3g} <= {delta:g})")
    c_est, c_lo = _boot_lower(cost[0] * 1000, "mean", delta=delta, bootstrap=bootstrap, seed=seed)
    res.evidence.append(
        f"cost: ${c_est:.4f} per 1k queries (one-sided {1 - delta:.0%} lower bound ${c_lo:.4f}); reference "
        f"${cost[1].mean() * 1000:.4f}" + ("" if max_cost_per_1k is None else f"; limit ${max_cost_per_1k:.4f}")
    )
    if max_cost_per_1k is not None and c_lo > max_cost_per_1k:
        res.failures.append(
            f"cost per 1k queries is above ${max_cost_per_1k:.4f} with confidence (lower bound ${c_lo:.4f})"
        )
    l_est, l_lo = _boot_lower(lat[0], "p95", delta=delta, bootstrap=bootstrap, seed=seed)
    est_note = " (estimated: the outputs record no timing)" if bool(o.calls["latency_estimated"].any()) else ""
    res.evidence.append(
        f"p95 latency: {l_est:.0f} ms{est_note} (one-sided {1 - delta:.0%} lower bound {l_lo:.0f} ms)"
        + ("" if max_p95_ms is None else f"; limit {max_p95_ms:.0f} ms")
    )
    if max_p95_ms is not None and l_lo > max_p95_ms:
        res.failures.append(f"p95 latency is above {max_p95_ms:.0f} ms with confidence (lower bound {l_lo:.0f} ms)")
    res.passed = not res.failures
    return res
