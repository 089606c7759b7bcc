"""The sweep's cost follows the structure of the grid, not its size.

An item's route depends on its own complexity class's start tier and on whether that class is checked,
never on the other classes' settings. So each policy is cut into one *projection* per class: the policy
as an item of that class sees it, in a canonical form (the start tier for every class; no check where the
class is not checked; thresholds of tiers it never reaches or never checks, the cap mode of no cap, the
unusable-answer reasons of a policy that does not cascade, all set to one value). Policies that share a
projection share its simulation, which runs on that class's items only; classes without an item in the
split are skipped. Each projection's outcome is reduced to exact additive sums (:class:`Partial`), and
a policy's row is the sum of its projections' sums.

On a default grid most policies differ only where an item cannot tell: mot_date's 1,620 policies have
105 distinct projections (its items are all "simple"), so the sweep simulates 105 policies, not 1,620.
The numbers are the same as simulating every policy on every item (integer costs, counts and quality
sums; the tests check it against the reference simulator on random tables).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from routerlab.classifier import COMPLEXITY_CLASSES
from routerlab.decision import escalate_mask
from routerlab.errors import WorkbenchError
from routerlab.workbench import tablefiles
from routerlab.workbench.kernel import (
    NO_CAP_PICO,
    NO_CHECK,
    Partial,
    PolicyPoint,
    SimResult,
    batch_size,
    bootstrap_weights,
    by_temperature,
    concat_partials,
    encode,
    finalize,
    reduce_sim,
    simulate,
    simulate_cut,
    sweep_memory_mb,
)
from routerlab.workbench.outcomes import PICO, DenseTable, Outcomes, Shard, in_order

#: Exact latency percentiles for every policy of a sweep when policies x items is at most this (they
#: need each policy's whole latency vector); above it for every policy only on request (``latency=True``),
#: else for the Pareto frontier's policies (:func:`fill_frontier_latency`, this many policy-items per
#: pass) and NaN for the rest: the chosen policy's figures come from
#: :func:`~routerlab.workbench.sweep.evaluate`, which is always exact.
LATENCY_WORK = 50_000_000


def project(pt: PolicyPoint, cls: int, n_tiers: int, base_mask: int) -> PolicyPoint:
    """The policy as an item of complexity class ``cls`` sees it, in canonical form: two policies with the
    same projection route every item of that class the same way (cost, tier, sample, latency, escalations).
    ``base_mask``: the ladder policy's unusable-answer reasons (:func:`~routerlab.decision.escalate_mask`)."""
    t = n_tiers
    s = pt.start[cls]
    cap = None if pt.cap_usd is None or pt.cap_usd * PICO >= NO_CAP_PICO else pt.cap_usd
    mode = pt.cap_mode if cap is not None else "worst_case"
    whole = COMPLEXITY_CLASSES
    if s >= t - 1:  # one call at the final tier: nothing to check, nothing to escalate to
        return PolicyPoint((t - 1,) * 3, True, NO_CHECK, 2, whole, (), cap, None, mode)
    esc: tuple[str, ...] | None = None
    if pt.cascade and pt.escalate_on is not None and escalate_mask(pt.escalate_on) != base_mask:
        esc = tuple(sorted(set(pt.escalate_on)))
    checked = pt.cascade and pt.similarity != NO_CHECK and COMPLEXITY_CLASSES[cls] in pt.classes
    wanted = [ti for ti in (range(t - 1) if pt.check_tiers is None else pt.check_tiers) if s <= ti < t - 1]
    if not checked or not wanted:
        return PolicyPoint((s,) * 3, pt.cascade, NO_CHECK, 2, whole, (), cap, None, mode, esc)
    thr = tuple(float(pt.thresholds[ti]) if ti in wanted else 1.0 for ti in range(t - 1))
    k_max = pt.k_max if pt.k_max is not None and pt.k_max > pt.k else None
    return PolicyPoint(
        (s,) * 3, True, pt.similarity, pt.k, whole, thr, cap, tuple(sorted(wanted)), mode, esc, pt.answer, k_max,
        pt.stop_share if k_max is not None else 0.5,
    )  # fmt: skip


def _zeros(p: int, n_tiers: int, scorers: Sequence[str], b: int | None, latency: bool) -> Partial:
    z = np.zeros(p, np.int64)
    return Partial(
        0, z.copy(), {s: z.copy() for s in scorers}, {s: z.copy() for s in scorers},
        None if b is None else {s: np.zeros((p, b)) for s in scorers},
        None if b is None else {s: np.zeros((p, b)) for s in scorers},
        z.copy(), z.copy(), np.zeros((p, n_tiers), np.int64), z.copy(), np.zeros((p, 0)) if latency else None,
    )  # fmt: skip


def _simulated(
    o: Outcomes,
    pts: list[PolicyPoint],
    arrays: DenseTable,
    cols: np.ndarray,
    weights: np.ndarray | None,
    *,
    cut_points: bool,
    latency: bool,
    batch: int,
    tick: Callable[[int], None],
) -> Partial:
    """``pts`` simulated on ``arrays`` in batches, each reduced over the item columns ``cols``."""
    run = simulate_cut if cut_points else simulate
    parts = []
    for i in range(0, len(pts), batch):
        chunk = pts[i : i + batch]
        sim: SimResult = run(o, chunk, arrays=arrays)
        parts.append(reduce_sim(sim, cols, arrays.t, weights=weights, latency=latency))
        tick(len(chunk))
    return concat_partials(parts)


def plan(o: Outcomes, points: Sequence[PolicyPoint], mask: np.ndarray | None = None) -> dict[str, Any]:
    """How the decomposed sweep would run ``points`` (for reports and benchmarks): per class, its items
    and distinct projections, and the policies simulated on the whole table (learned start routers)."""
    a = o.facts()
    sel = np.ones(o.n_items, bool) if mask is None else mask
    base = escalate_mask(o.policy.confidence.escalate_on)
    out: dict[str, Any] = {"policies": len(points), "classes": {}, "whole_table": 0}
    for c, name in enumerate(COMPLEXITY_CLASSES):
        n_c = int((sel & (a.cls == c)).sum())
        keys = {project(pt, c, a.t, base) for pt in points if pt.router is None} if n_c else set()
        out["classes"][name] = {"items": n_c, "projections": len(keys)}
    out["whole_table"] = sum(pt.router is not None for pt in points)
    return out


def sweep_sums(
    o: Outcomes,
    points: Sequence[PolicyPoint],
    *,
    mask: np.ndarray | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    batch: int | None = None,
    memory_mb: float | None = None,
    cut_points: bool = True,
    latency: bool | None = None,
    progress: Callable[[int], None] | None = None,
    executor: Any = None,
    shards: int = 4,
    shard_items: int | None = None,
) -> pd.DataFrame:
    """The sweep table of ``points`` (see :func:`~routerlab.workbench.sweep.sweep`), each class's distinct
    projections simulated once on that class's items.

    ``executor``: anything with a ``concurrent.futures``-style ``submit(fn, *args)`` whose futures have
    ``result()`` (a ``ProcessPoolExecutor``, a Dask ``distributed.Client``): each class's items are cut
    into ``shards`` parts, each simulated as one task, and the parts' exact sums added up (the same table
    as without it). Policies with a learned start router run in this process.

    A table on disk (:attr:`~routerlab.workbench.outcomes.Outcomes.on_disk`) is swept out of core: its
    items in ranges of ``shard_items`` (default: what ``memory_mb`` holds, :func:`shard_size`), each range's
    rows read by DuckDB and simulated class by class, the exact sums added up; with ``executor`` each range
    is one task, which reads its own rows (the workers must see the table's files)."""
    p = len(points)
    sel = np.ones(o.n_items, bool) if mask is None else np.asarray(mask, bool)
    cols_all = np.flatnonzero(sel)
    if len(cols_all) == 0:
        raise WorkbenchError("no items selected")
    if latency is None:
        latency = p * len(cols_all) <= LATENCY_WORK
    w = bootstrap_weights(len(cols_all), bootstrap, seed) if bootstrap else None
    rank = np.cumsum(sel) - 1  # an item's row in the bootstrap weights (its place among the selected items)
    tick = progress or (lambda _n: None)
    groups = by_temperature(o, points) or [(o, list(range(p)))]
    parts: list[tuple[list[int], Partial, np.ndarray | None]] = []
    facts: list[DenseTable] = []
    for ov, idx in groups:  # every table and point checked before anything is simulated
        a = ov.facts()  # in memory: the dense table; on disk: what the checks need, by DuckDB
        encode([points[i] for i in idx], a, ov.policy)  # against the whole table (the sub-tables trust it)
        facts.append(a)
    for (ov, idx), a in zip(groups, facts, strict=True):
        pts = [points[i] for i in idx]
        base = escalate_mask(ov.policy.confidence.escalate_on)
        whole = [i for i, pt in enumerate(pts) if pt.router is not None]
        split = [i for i, pt in enumerate(pts) if pt.router is None]
        total = _zeros(len(pts), a.t, list(ov.scorers), bootstrap or None, latency)
        lat_parts: list[tuple[np.ndarray, np.ndarray]] = []  # (projection row of each split policy, latencies)

        if whole and ov.on_disk:
            raise WorkbenchError(
                "policies with a learned start router are swept on a table in memory; this one is on disk "
                "(load it with Outcomes.load(), or sweep the learned policies on a sample of the items)"
            )
        if split and ov.on_disk:
            per_class = _on_disk(
                ov, pts, split, sel, w, rank, base, cut_points=cut_points, latency=latency, batch=batch,
                memory_mb=memory_mb, executor=executor, shard_items=shard_items,
            )  # fmt: skip
            for row, got in per_class:
                tick(len(set(row.tolist())))
                total = _fold(total, np.asarray(split), row, got, lat_parts if latency else None)
        elif split:
            for c in range(len(COMPLEXITY_CLASSES)):
                items = np.flatnonzero(sel & (a.cls == c))
                if len(items) == 0:
                    continue  # a class with no item in the split: its settings change nothing
                keys: dict[PolicyPoint, int] = {}
                row = np.array([keys.setdefault(project(pts[i], c, a.t, base), len(keys)) for i in split])
                size = batch or batch_size(len(items), memory_mb=memory_mb)
                if executor is None:
                    sub = a.take(items)
                    wc = None if w is None else w[rank[items]]
                    got = _simulated(
                        ov, list(keys), sub, np.arange(len(items)), wc, cut_points=cut_points, latency=latency,
                        batch=size, tick=tick,
                    )  # fmt: skip
                else:  # the class's items in shards, one task each: their sums add up (latencies side by side)
                    light = _light(ov)
                    futures = [
                        executor.submit(
                            _shard,
                            light,
                            list(keys),
                            a.take(part),
                            None if w is None else w[rank[part]],
                            cut_points,
                            latency,
                            size,
                        )  # fmt: skip
                        for part in np.array_split(items, min(shards, len(items)))
                    ]
                    results = [f.result() for f in futures]
                    got = results[0]
                    for r in results[1:]:
                        got = got + r
                    tick(len(keys))
                total = _fold(total, np.asarray(split), row, got, lat_parts if latency else None)
        if whole:
            size = batch or batch_size(len(cols_all), memory_mb=memory_mb)
            wpts = [pts[i] for i in whole]
            got = _simulated(ov, wpts, a, cols_all, w, cut_points=cut_points, latency=latency, batch=size, tick=tick)
            lat_whole = got.latency
            got.latency = None
            total = _add_rows(total, np.asarray(whole), got)
        else:
            lat_whole = None
        total.n = len(cols_all)
        total.latency = None
        pct = _percentiles(len(pts), split, lat_parts, whole, lat_whole) if latency else None
        parts.append((idx, total, pct))
    frames = []
    for idx, s, pct in parts:
        frames.append((idx, finalize([points[i] for i in idx], s, len(o.tiers), latency=pct)))
    if len(frames) == 1:
        return frames[0][1]
    df = pd.concat([f for _, f in frames], ignore_index=True)
    order = np.empty(p, np.int64)
    order[np.concatenate([np.asarray(i, np.int64) for i, _ in frames])] = np.arange(p)
    return df.iloc[order].reset_index(drop=True)


def fill_frontier_latency(
    o: Outcomes,
    points: Sequence[PolicyPoint],
    df: pd.DataFrame,
    *,
    mask: np.ndarray | None = None,
    cut_points: bool = True,
    executor: Any = None,
    shard_items: int | None = None,
    memory_mb: float | None = None,
) -> list[int]:
    """Exact p50/p95 latencies written into ``df`` (the sweep table of ``points``, in their order) for its
    rows on the cost/quality Pareto frontier of any scorer's quality column; returns those rows.

    They are simulated again with their latencies kept, as many at a time as
    :data:`LATENCY_WORK` allows (at least one), so memory stays bounded; the figures are those a sweep
    with ``latency=True`` gives."""
    from routerlab.workbench.frontier import frontier_positions

    rows: set[int] = set()
    for sc in o.scorers:
        col = f"quality_{sc}"
        if col in df.columns:
            rows.update(frontier_positions(df, quality=col))
    order = sorted(rows)
    n = int(o.n_items if mask is None else np.count_nonzero(mask))
    step = max(1, LATENCY_WORK // max(n, 1))
    cols = ["latency_p50_ms", "latency_p95_ms"]
    lat = df[cols].to_numpy(dtype=float, copy=True)
    for i in range(0, len(order), step):
        part = order[i : i + step]
        got = sweep_sums(
            o, [points[j] for j in part], mask=mask, bootstrap=0, latency=True, cut_points=cut_points,
            executor=executor, shard_items=shard_items, memory_mb=memory_mb,
        )  # fmt: skip
        lat[part] = got[cols].to_numpy(dtype=float)
    df[cols[0]], df[cols[1]] = lat[:, 0], lat[:, 1]
    return order


#: Bytes of memory per calls row of an item range read from disk: its rows as pandas and Arrow, and its
#: dense arrays (measured on mot_date and arena_bench_v1 shards: 900-1,300).
BYTES_PER_CALL_ROW = 1_500


def shard_size(o: Outcomes, memory_mb: float | None = None) -> int:
    """Items per range of an out-of-core sweep: as many as ``memory_mb`` (default: the sweep's memory
    setting) holds at :data:`BYTES_PER_CALL_ROW` per calls row, at least 256."""
    budget = (memory_mb if memory_mb is not None else sweep_memory_mb()) * 1e6
    calls = o.files[0] if o.files is not None else None
    rows = tablefiles.count_rows(calls) if o.on_disk and calls is not None else len(o.calls)
    per_item = max(rows / max(o.n_items, 1), 1.0)
    return max(256, int(budget / (BYTES_PER_CALL_ROW * per_item)))


def _on_disk(
    o: Outcomes,
    pts: list[PolicyPoint],
    split: list[int],
    sel: np.ndarray,
    w: np.ndarray | None,
    rank: np.ndarray,
    base: int,
    *,
    cut_points: bool,
    latency: bool,
    batch: int | None,
    memory_mb: float | None,
    executor: Any,
    shard_items: int | None,
) -> list[tuple[np.ndarray, Partial]]:
    """Per class with items: (projection row of each split policy, the projections' sums over the class's
    selected items), the table read from disk one item range at a time."""
    facts = o.facts()
    cls = facts.cls
    jobs: list[tuple[int, list[PolicyPoint]]] = []
    rows: dict[int, np.ndarray] = {}
    for c in range(len(COMPLEXITY_CLASSES)):
        if not (sel & (cls == c)).any():
            continue  # a class with no item in the split: its settings change nothing
        keys: dict[PolicyPoint, int] = {}
        rows[c] = np.array([keys.setdefault(project(pts[i], c, facts.t, base), len(keys)) for i in split])
        jobs.append((c, list(keys)))
    size = shard_size(o, memory_mb) if shard_items is None else shard_items
    if size < 1:
        raise WorkbenchError(f"shard_items must be at least 1, got {size}")
    ranges = [(lo, min(lo + size, o.n_items)) for lo in range(0, o.n_items, size) if sel[lo : lo + size].any()]

    def task(r: tuple[int, int]) -> tuple[Any, ...]:
        lo, hi = r
        local = {c: np.flatnonzero(sel[lo:hi] & (cls[lo:hi] == c)) for c, _ in jobs}
        weights = None if w is None else {c: w[rank[lo + ix]] for c, ix in local.items()}
        return (o.shard(lo, hi), jobs, local, weights, cut_points, latency, batch, memory_mb)

    acc: dict[int, Partial] = {}
    if executor is None:
        results: Any = ((r, _disk_shard(*task(r))) for r in ranges)
    else:
        results = in_order(ranges, lambda r: executor.submit(_disk_shard, *task(r)), window=4)
    for _r, got in results:
        for c, part in got:
            acc[c] = part if c not in acc else acc[c] + part
    return [(rows[c], acc[c]) for c, _ in jobs if c in acc]


def _disk_shard(
    shard: Shard,
    jobs: list[tuple[int, list[PolicyPoint]]],
    local: dict[int, np.ndarray],
    weights: dict[int, np.ndarray] | None,
    cut_points: bool,
    latency: bool,
    batch: int | None,
    memory_mb: float | None,
) -> list[tuple[int, Partial]]:
    """One item range of an out-of-core sweep (here or in a worker): its rows read, each class's
    projections simulated on its selected items there."""
    sub = shard.dense()
    out = []
    for c, keys in jobs:
        ix = local[c]
        if len(ix) == 0:
            continue
        size = batch or batch_size(len(ix), memory_mb=memory_mb)
        got = _simulated(
            shard.table, keys, sub.take(ix), np.arange(len(ix)), None if weights is None else weights[c],
            cut_points=cut_points, latency=latency, batch=size, tick=lambda _n: None,
        )  # fmt: skip
        out.append((c, got))
    return out


def _light(o: Outcomes) -> Outcomes:
    """``o`` without its rows (what a shard's simulation reads of it: the policy, tiers and scorers)."""
    return dataclasses.replace(
        o, calls=o.calls.iloc[:0], samples=o.samples.iloc[:0], items=o.items.iloc[:0], variants={}
    )


def _shard(
    o: Outcomes,
    pts: list[PolicyPoint],
    arrays: DenseTable,
    weights: np.ndarray | None,
    cut_points: bool,
    latency: bool,
    batch: int,
) -> Partial:
    """One task of a sharded sweep: ``pts`` on the items of ``arrays`` (run in a worker process)."""
    return _simulated(
        o, pts, arrays, np.arange(arrays.n), weights, cut_points=cut_points, latency=latency, batch=batch,
        tick=lambda _n: None,
    )  # fmt: skip


def _fold(
    total: Partial,
    split: np.ndarray,
    row: np.ndarray,
    got: Partial,
    lat_parts: list[tuple[np.ndarray, np.ndarray]] | None,
) -> Partial:
    """``total`` plus one class's projection sums ``got`` at the split policies ``split`` (``row``: each one's
    projection); the projections' latencies go to ``lat_parts`` when it is given."""
    here = got.rows(row)
    if lat_parts is not None and got.latency is not None:
        lat_parts.append((row, got.latency))
    here.latency = None
    return _add_rows(total, split, here)


def _add_rows(total: Partial, rows: np.ndarray, part: Partial) -> Partial:
    """``total`` with ``part``'s sums (one row per entry of ``rows``) added at those rows."""
    total.cost[rows] += part.cost
    for sc in total.q:
        total.q[sc][rows] += part.q[sc]
        total.qn[sc][rows] += part.qn[sc]
        if total.qw is not None and part.qw is not None and total.vw is not None and part.vw is not None:
            total.qw[sc][rows] += part.qw[sc]
            total.vw[sc][rows] += part.vw[sc]
    total.escalated[rows] += part.escalated
    total.failed[rows] += part.failed
    total.tiers[rows] += part.tiers
    total.premium[rows] += part.premium
    return total


def _percentiles(
    p: int,
    split: list[int],
    lat_parts: list[tuple[np.ndarray, np.ndarray]],
    whole: list[int],
    lat_whole: np.ndarray | None,
    chunk: int = 256,
) -> np.ndarray:
    """(P, 2): each policy's exact p50 and p95 latency over all its items (its projections' latencies
    side by side; a percentile does not depend on the items' order)."""
    out = np.full((p, 2), np.nan)
    for i in range(0, len(split), chunk):
        sl = slice(i, i + chunk)
        rows = np.concatenate([lat[row[sl]] for row, lat in lat_parts], axis=1)
        out[np.asarray(split[sl])] = np.percentile(rows, [50, 95], axis=1).T
    if whole and lat_whole is not None:
        out[np.asarray(whole)] = np.percentile(lat_whole, [50, 95], axis=1).T
    return out
