"""Simulate thousands of routing policies on the outcome table, exactly as the router would route.

A :class:`PolicyPoint` is what the sweep varies: the start tier of each
complexity class, cascade on/off, the similarity function, k, the classes the
confidence check applies to, the threshold of each non-final tier and the cost
cap. Everything else (ladder, prompts, max_tokens, temperatures) is fixed by
the recording, so the outcome table holds every answer any such policy can
get.

:func:`simulate` (in :mod:`routerlab.workbench.kernel`, re-exported here) runs
the router's decision procedure (defined once, in :mod:`routerlab.decision`)
vectorised over items and over a batch of policies with numpy; this module
holds the grids, the splits and :func:`sweep`, which cuts each policy into
per-class projections (:mod:`routerlab.workbench.decompose`).

Costs are exact: integers in 1e-12 USD, so the cost-cap test
``charged + worst_case > cap`` (charged: the cost so far plus the worst case
of any 2xx reply that could not be priced) is decided exactly as the router
decides it in ``Decimal``. Tests check it against the reference simulator
(:mod:`routerlab.workbench.reference`: ``plan_route`` itself, answered from the
outcome table) on random policies over random tables with every failure kind,
and against the real :class:`CascadeRouter` replaying the cassettes.

Every failure moves a route on to the next tier, empty / cut-off / filtered
answers escalate, a short ``n=k`` reply is completed unless the cap forbids
it, and both cost-cap modes (``worst_case``, ``spent``) are simulated: the
same rules as the router, from the same table columns. Circuit breakers are
not simulated: replays treat items as independent (``reset_breakers``
between items), and so does the sweep. Same-tier retries and a route
deadline cannot be simulated from one recorded reply per call: a ladder
policy that sets them is refused.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from routerlab.classifier import COMPLEXITY_CLASSES
from routerlab.errors import WorkbenchError
from routerlab.policy import ESCALATE_REASONS, RouterPolicy
from routerlab.workbench.decompose import fill_frontier_latency, sweep_sums
from routerlab.workbench.kernel import (
    BYTES_PER_POLICY_ITEM,
    DEFAULT_SWEEP_MEMORY_MB,
    NO_CHECK,
    QUALITY_SCALE,
    Partial,
    PolicyPoint,
    SimResult,
    batch_size,
    bootstrap_weights,
    by_temperature,
    concat_partials,
    finalize,
    merge_results,
    reduce_sim,
    simulate,
    simulate_cut,
)
from routerlab.workbench.outcomes import PICO, Outcomes

__all__ = [
    # the simulation kernel (defined in routerlab.workbench.kernel, re-exported here)
    "BYTES_PER_POLICY_ITEM",
    "DEFAULT_SWEEP_MEMORY_MB",
    "NO_CHECK",
    "QUALITY_SCALE",
    "Partial",
    "PolicyPoint",
    "SimResult",
    "batch_size",
    "bootstrap_weights",
    "by_temperature",
    "concat_partials",
    "finalize",
    "merge_results",
    "reduce_sim",
    "simulate",
    "simulate_cut",
    # grids, splits and the sweep
    "Grid",
    "absent_classes",
    "default_grid",
    "evaluate",
    "monotone_starts",
    "per_item",
    "point_by_id",
    "point_from_policy",
    "points_of",
    "split_items",
    "split_three",
    "summarize",
    "sweep",
    "threshold_grid",
]

# ---------------------------------------------------------------- grids and sweeps


def monotone_starts(n_tiers: int) -> list[tuple[int, int, int]]:
    """Every start-tier mapping with simple <= medium <= complex."""
    return [(a, b, c) for a, b, c in itertools.product(range(n_tiers), repeat=3) if a <= b <= c]


def threshold_grid(
    o: Outcomes, similarity: str, k: int, *, n: int = 8, mask: np.ndarray | None = None
) -> list[list[float]]:
    """Per non-final tier: thresholds at the quantiles of the observed agreement (plus 1.0).

    With ``mask`` (e.g. the dev split) only those items' agreements are used, so the test split
    plays no part in choosing the grid.
    """
    calls = o.call_columns(["item_id", "tier_index", f"agree_{similarity}"], variant=f"k{k}")
    if mask is not None:
        calls = calls[calls["item_id"].isin(set(o.items["item_id"][mask]))]
    out = []
    for ti in range(len(o.tiers) - 1):
        sel = calls[calls["tier_index"] == ti][f"agree_{similarity}"]
        vals = sel.dropna().to_numpy()
        if len(vals) == 0:
            out.append([1.0])
            continue
        qs = np.quantile(vals, np.linspace(0, 1, n))
        grid = sorted({float(round(min(max(v, 0.0), 1.0), 6)) for v in qs} | {1.0})
        out.append(grid)
    return out


@dataclass(frozen=True)
class Grid:
    """What to sweep over. :func:`default_grid` fills it from the outcome table."""

    starts: tuple[tuple[int, int, int], ...]
    similarities: tuple[str, ...]
    ks: tuple[int, ...]
    class_sets: tuple[tuple[str, ...], ...] = (COMPLEXITY_CLASSES, ("medium",))
    cascade: tuple[bool, ...] = (True, False)
    caps: tuple[Decimal | None, ...] = (None,)
    n_thresholds: int = 8
    k_tiers: tuple[tuple[int, ...] | None, ...] = ()  # per k: the tiers that check (None or absent: all)

    def points(self, o: Outcomes, *, mask: np.ndarray | None = None) -> list[PolicyPoint]:
        """Every policy of the grid; thresholds from the agreement quantiles of the ``mask`` items."""
        pts: list[PolicyPoint] = []
        seen: set[PolicyPoint] = set()
        last = len(o.tiers) - 1
        unseen = absent_classes(o, mask)  # no data to route them cheaper: they start at the final tier
        starts = list(dict.fromkeys(
            tuple(last if c in unseen else s for c, s in zip(COMPLEXITY_CLASSES, st, strict=True)) for st in self.starts
        ))  # fmt: skip
        # The confidence checks do not depend on the start mapping or the cap: list them (and compute the
        # threshold quantiles) once, not once per start x cap.
        checked: list[tuple[str, int, tuple[str, ...], tuple[float, ...], tuple[int, ...] | None]] = []
        if any(self.cascade):
            for (ki, k), sim in itertools.product(enumerate(self.ks), self.similarities):
                tiers = self.k_tiers[ki] if ki < len(self.k_tiers) else None
                per_tier = threshold_grid(o, sim, k, n=self.n_thresholds, mask=mask)
                if tiers is not None:  # an unchecked tier's threshold plays no part: one value
                    per_tier = [g if ti in tiers else [1.0] for ti, g in enumerate(per_tier)]
                for cs in self.class_sets:
                    checked += [(sim, k, cs, thr, tiers) for thr in itertools.product(*per_tier)]
        no_check = (NO_CHECK, min(self.ks) if self.ks else 2, COMPLEXITY_CLASSES, (), None)
        for start, cap in itertools.product(starts, self.caps):
            for cascade in self.cascade:
                checks = [*checked, no_check] if cascade else [no_check]
                for sim, k, cs, thr, tiers in checks:
                    last_checked = len(o.tiers) - 2 if tiers is None else max(tiers)
                    if sim != NO_CHECK and not any(
                        s <= last_checked for c, s in zip(COMPLEXITY_CLASSES, start, strict=True) if c in cs
                    ):
                        continue  # no checked class starts at or below a checked tier: same as no check
                    pt = PolicyPoint(start, cascade, sim, k, cs, tuple(thr), cap, tiers)
                    if pt not in seen:
                        seen.add(pt)
                        pts.append(pt)
        return pts


def absent_classes(o: Outcomes, mask: np.ndarray | None = None) -> tuple[str, ...]:
    """The complexity classes with no item among the ``mask`` items (the split a policy is chosen on)."""
    ci = o.items["class_index"].to_numpy()
    present = set(ci if mask is None else ci[mask])
    return tuple(c for i, c in enumerate(COMPLEXITY_CLASSES) if i not in present)


def default_grid(o: Outcomes, *, caps: Iterable[Decimal | None] | None = None, n_thresholds: int = 8) -> Grid:
    """All monotone start mappings; every similarity; the ks recorded for every item (others warn).

    ``caps`` default to the ladder policy's own ``max_cost_per_query_usd``: the sweep simulates the cap
    production runs with, and the exported policy keeps it.
    """
    if caps is None:
        caps = (o.policy.max_cost_per_query_usd,)
    a = o.facts()
    ks: list[int] = []
    k_tiers: list[tuple[int, ...] | None] = []
    for j, k in enumerate(a.ks):
        tiers = a.k_tiers(j)
        if a.k_present[j]:
            ks.append(k)
            k_tiers.append(None)
        elif tiers:  # e.g. a greedy-only mid tier between sampled tiers: check where the samples are
            ks.append(k)
            k_tiers.append(tiers)
        else:
            warnings.warn(
                f"k={k} samples are not recorded for every item at any non-final tier; the default grid leaves "
                "this k out",
                stacklevel=2,
            )
    sims = tuple(o.similarities) if ks else ()
    return Grid(
        tuple(monotone_starts(len(o.tiers))), sims, tuple(ks), caps=tuple(caps), n_thresholds=n_thresholds,
        k_tiers=tuple(k_tiers),
    )  # fmt: skip


def split_items(o: Outcomes, *, dev_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded dev/test split stratified by complexity class; boolean masks over items."""
    rng = np.random.default_rng(seed)
    dev = np.zeros(o.n_items, bool)
    for c in range(len(COMPLEXITY_CLASSES)):
        idx = np.flatnonzero(o.items["class_index"].to_numpy() == c)
        rng.shuffle(idx)
        dev[idx[: int(round(len(idx) * dev_fraction))]] = True
    return dev, ~dev


def split_three(
    o: Outcomes, fractions: Sequence[float] = (0.25, 0.25, 0.5), *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded tune / calibrate / test masks, stratified by complexity class.

    ``fractions`` are the three shares (they must sum to 1). The test items are exactly those of
    ``split_items(o, dev_fraction=tune + calibrate, seed=seed)``, so tune + calibrate is the point
    chooser's dev split; the dev items are then split again (seed + 1), stratified, into tune and
    calibrate."""
    if len(fractions) != 3 or any(not 0 < f < 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise WorkbenchError(
            f"split fractions must be three numbers in (0, 1) summing to 1 (tune, calibrate, test); got {fractions}"
        )
    ft, fc, _ = (float(f) for f in fractions)
    dev, test = split_items(o, dev_fraction=ft + fc, seed=seed)
    rng = np.random.default_rng(seed + 1)
    tune = np.zeros(o.n_items, bool)
    ci = o.items["class_index"].to_numpy()
    for c in range(len(COMPLEXITY_CLASSES)):
        idx = np.flatnonzero(dev & (ci == c))
        rng.shuffle(idx)
        tune[idx[: int(round(len(idx) * ft / (ft + fc)))]] = True
    return tune, dev & ~tune, test


def summarize(
    o: Outcomes,
    points: Sequence[PolicyPoint],
    sim: SimResult,
    *,
    mask: np.ndarray | None = None,
    bootstrap: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per policy: cost, quality with bootstrap 95% CIs, escalation, tier mix, latency."""
    sel = np.ones(o.n_items, bool) if mask is None else mask
    cols = np.flatnonzero(sel)
    if len(cols) == 0:
        raise WorkbenchError("no items selected")
    w = bootstrap_weights(len(cols), bootstrap, seed) if bootstrap else None
    return finalize(points, reduce_sim(sim, cols, len(o.tiers), weights=w), len(o.tiers))


def sweep(
    o: Outcomes,
    points: Sequence[PolicyPoint] | Grid | None = None,
    *,
    mask: np.ndarray | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    batch: int | None = None,
    progress: bool = False,
    memory_mb: float | None = None,
    cut_points: bool = True,
    decompose: bool = True,
    latency: bool | None = None,
    executor: Any = None,
    shard_items: int | None = None,
) -> pd.DataFrame:
    """Simulate and summarise every policy (in batches, to bound memory); returns the sweep table.

    With ``cut_points`` (default) policies that differ only in thresholds share their simulations
    (:func:`simulate_cut`: the same numbers, less work); ``cut_points=False`` simulates each one.

    With ``decompose`` (default) each policy is cut into one projection per complexity class, and each
    class's distinct projections are simulated once, on that class's items only
    (:mod:`routerlab.workbench.decompose`); ``decompose=False`` simulates every policy on every item.

    ``batch`` policies are simulated at a time; by default as many as fit in ``memory_mb`` of temporaries
    (default ``$ROUTERLAB_SWEEP_MEMORY_MB``, else 2048), at about :data:`BYTES_PER_POLICY_ITEM` bytes per
    policy and item, between 1 and 4,096. The batch, the decomposition and the cut points change memory and
    speed, not the numbers: costs, counts and quality sums are exact integers (quality in units of
    2^-32, :data:`QUALITY_SCALE`), and so are the bootstrap's weighted sums up to about 200,000 items.

    ``latency``: the p50/p95 latency columns for every policy (exact; they need each policy's latencies
    item by item). None (default): for every policy when policies x items is at most
    :data:`~routerlab.workbench.decompose.LATENCY_WORK`; above it for the policies on the cost/quality
    Pareto frontier of any scorer's quality (simulated again with their latencies kept, a few at a time;
    the figures are the same as with ``latency=True``), NaN for the rest (:func:`evaluate` gives any one
    policy's). False: NaN for all.

    ``executor``: run the decomposed sweep's simulations as tasks on it, sharded by items (a
    ``concurrent.futures.ProcessPoolExecutor``, or a Dask ``distributed.Client`` for a cluster); the
    numbers are the same as in one process.

    A table on disk (``build_outcomes(load=False)``, or above ``$ROUTERLAB_OUT_OF_CORE_ROWS``; see
    :attr:`~routerlab.workbench.outcomes.Outcomes.on_disk`) is swept out of core: DuckDB reads its items
    ``shard_items`` at a time (default: what ``memory_mb`` holds), the same numbers as in memory."""
    if points is None:
        points = default_grid(o)
    pts = points.points(o, mask=mask) if isinstance(points, Grid) else list(points)
    if batch is not None and batch < 1:
        raise WorkbenchError(f"batch must be at least 1 policy, got {batch}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="sweep", unit="sim")
    if decompose:
        df = sweep_sums(
            o, pts, mask=mask, bootstrap=bootstrap, seed=seed, batch=batch, memory_mb=memory_mb,
            cut_points=cut_points, latency=latency, progress=None if bar is None else bar.update, executor=executor,
            shard_items=shard_items,
        )  # fmt: skip
        if latency is None and len(df) and df["latency_p50_ms"].isna().all():
            fill_frontier_latency(
                o, pts, df, mask=mask, cut_points=cut_points, executor=executor, shard_items=shard_items,
                memory_mb=memory_mb,
            )  # fmt: skip
    else:
        if executor is not None:
            raise WorkbenchError("an executor runs the decomposed sweep only (decompose=True)")
        if o.on_disk:
            raise WorkbenchError("a table on disk is swept by the decomposed sweep only (decompose=True)")
        a = o.dense()
        size = batch or batch_size(a.n, memory_mb=memory_mb)
        frames = []
        for i in range(0, len(pts), size):
            chunk = pts[i : i + size]
            run = simulate_cut if cut_points else simulate
            frames.append(summarize(o, chunk, run(o, chunk, arrays=a), mask=mask, bootstrap=bootstrap, seed=seed))
            if bar is not None:
                bar.update(len(chunk))
        df = pd.concat(frames, ignore_index=True)
    if bar is not None:
        bar.close()
    df.attrs["points"] = _Points(pts)
    return df


class _Points(list[PolicyPoint]):
    """The sweep table's points, shared (not deep-copied) by the frames pandas derives from it: pandas
    deep-copies ``attrs`` on every column access and slice, and the points are immutable (a learned
    router's coefficients inside made that copy cost most of a report's time)."""

    def __copy__(self) -> _Points:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _Points:
        return self


def evaluate(
    o: Outcomes, point: PolicyPoint, *, mask: np.ndarray | None = None, bootstrap: int = 200, seed: int = 0
) -> pd.Series:
    """The summary row of one policy (fast: for interactive explorers)."""
    row: pd.Series = summarize(o, [point], simulate(o, [point]), mask=mask, bootstrap=bootstrap, seed=seed).iloc[0]
    return row


def per_item(o: Outcomes, point: PolicyPoint) -> pd.DataFrame:
    """Where each item is answered under ``point``: tier, model, exact cost (Decimal), quality, escalations."""
    sim = simulate(o, [point])
    t = sim.tier[0]
    df = pd.DataFrame(
        {
            "item_id": o.items["item_id"].to_numpy(),
            "complexity": o.items["complexity"].to_numpy(),
            "tier_index": t,
            "tier": [o.tiers[x] if x >= 0 else None for x in t],
            "model": [o.models[x] if x >= 0 else None for x in t],
            "variant": np.where(sim.variant[0] == 1, "k", "single"),
            "sample": sim.sample[0] if sim.sample is not None else 0,
            "cost_usd": [Decimal(int(c)) / PICO for c in sim.cost_pico[0]],
            "escalations": sim.escalations[0],
            "latency_ms": sim.latency_ms[0],
        }
    )
    for sc, q in sim.quality.items():
        df[f"q_{sc}"] = q[0]
    return df


def points_of(df: pd.DataFrame) -> list[PolicyPoint]:
    """The :class:`PolicyPoint` behind each row of a sweep table."""
    pts: list[PolicyPoint] = df.attrs["points"]
    return pts


def point_by_id(df: pd.DataFrame) -> dict[str, PolicyPoint]:
    """``policy_id`` -> :class:`PolicyPoint` for the rows of a sweep table (or of a frontier cut from it)."""
    return {pt.id: pt for pt in points_of(df)}


def point_from_policy(policy: RouterPolicy, base: RouterPolicy | None = None) -> PolicyPoint:
    """The sweep knobs of a full policy (the inverse of :meth:`PolicyPoint.to_policy`). With ``base`` (the
    outcome table's policy) the tiers' sample temperatures that differ from it become the point's
    ``temperatures``; without it they are read as the table's own."""
    c = policy.confidence
    temps: tuple[float | None, ...] | None = None
    if base is not None and len(base.tiers) == len(policy.tiers):
        mine = [policy.sample_temperature(i) for i in range(len(policy.tiers) - 1)]
        theirs = [base.sample_temperature(i) for i in range(len(base.tiers) - 1)]
        if mine != theirs:
            temps = tuple(None if a == b else a for a, b in zip(mine, theirs, strict=True))
    if c.classes and policy.cascade and c.signal != "consistency":
        raise WorkbenchError(
            f"policy {policy.name!r} uses the {c.signal!r} confidence signal; the sweep simulates only the "
            "two-sample consistency check (or none)"
        )
    check = bool(c.classes)
    return PolicyPoint(
        start=tuple(policy.routing[cl].start_tier for cl in COMPLEXITY_CLASSES),
        cascade=policy.cascade,
        similarity=c.similarity if check else NO_CHECK,
        k=c.k,
        classes=tuple(c.classes) if check else COMPLEXITY_CLASSES,
        thresholds=tuple(c.thresholds) if check else (),
        cap_usd=policy.max_cost_per_query_usd,
        check_tiers=c.tiers if check else None,
        cap_mode=policy.cost_cap_mode,
        escalate_on=None if c.escalate_on == ESCALATE_REASONS else c.escalate_on,
        answer=c.answer if check else "first",
        k_max=c.k_max if check and c.k_max is not None and c.k_max > c.k else None,
        stop_share=c.stop_share if check and c.k_max is not None and c.k_max > c.k else 0.5,
        router=policy.start_router,
        router_thresholds=() if policy.start_router is None else policy.start_router.thresholds,
        temperatures=temps,
    )
