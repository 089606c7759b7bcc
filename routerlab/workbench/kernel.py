"""The sweep's simulation kernel: policy points, their vectorised simulation and exact additive sums.

:class:`PolicyPoint` holds the knobs a sweep varies; :func:`simulate` runs the router's decision
procedure (defined once, in :mod:`routerlab.decision`) over a batch of points and the items of an
outcome table with numpy, and :func:`simulate_cut` shares the work of points that differ only in
thresholds. :func:`reduce_sim` turns a simulation into exact integer sums (:class:`Partial`) that add
up across classes and shards, and :func:`finalize` turns sums into the sweep table's rows.

:mod:`routerlab.workbench.sweep` (grids, splits, the sweep itself) and
:mod:`routerlab.workbench.decompose` (per-class projections, sharding) both build on this module, and
``sweep`` re-exports its public names.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from routerlab.classifier import COMPLEXITY_CLASSES
from routerlab.decision import escalate_mask
from routerlab.errors import WorkbenchError
from routerlab.learned import StartRouter
from routerlab.policy import RouterPolicy, policy_from_dict, policy_to_dict
from routerlab.workbench.outcomes import PICO, DenseTable, Outcomes

NO_CHECK = "none"
NO_CAP_PICO = 2**62  # caps at or above this many 1e-12 USD are treated as no cap (int64 arithmetic)


@dataclass(frozen=True)
class PolicyPoint:
    """The knobs a sweep turns; :meth:`to_policy` makes a full policy from a base."""

    start: tuple[int, ...]  # start tier for simple, medium, complex
    cascade: bool = True
    similarity: str = NO_CHECK  # answer | difflib | rougeL | none (no confidence check)
    k: int = 2
    classes: tuple[str, ...] = COMPLEXITY_CLASSES
    thresholds: tuple[float, ...] = ()
    cap_usd: Decimal | None = None
    check_tiers: tuple[int, ...] | None = None  # the non-final tiers that check (None: every one)
    cap_mode: str = "worst_case"  # worst_case | spent (see the policy's cost_cap_mode)
    escalate_on: tuple[str, ...] | None = None  # unusable answers that escalate (None: the base policy's)
    answer: str = "first"  # the sample a check returns: first | majority (the medoid)
    k_max: int | None = None  # adaptive k: draw single samples after the first k=2, up to k_max (None: no draws)
    stop_share: float = 0.5  # adaptive k: accept once the returned answer's share of the samples reaches this
    router: StartRouter | None = None  # a learned start router: it picks each item's start tier (not ``start``)
    router_thresholds: tuple[float, ...] = ()  # its threshold per non-final tier
    # the temperature knob: each non-final tier's sample temperature (None, or a None entry: the table's own);
    # simulated on the outcome table's variant recorded at those temperatures
    temperatures: tuple[float | None, ...] | None = None

    def to_policy(
        self, base: RouterPolicy, *, name: str | None = None, provenance: dict[str, Any] | None = None
    ) -> RouterPolicy:
        d = policy_to_dict(base)
        d["routing"] = {
            c: {**d["routing"][c], "start_tier": s} for c, s in zip(COMPLEXITY_CLASSES, self.start, strict=True)
        }
        d["cascade"] = self.cascade
        conf = d["confidence"]
        conf["k"] = self.k
        conf["signal"] = "consistency"
        if self.similarity == NO_CHECK:
            conf["classes"] = []
        else:
            conf["similarity"] = self.similarity
            conf["classes"] = list(self.classes)
            conf["thresholds"] = [float(x) for x in self.thresholds]
        conf.pop("tiers", None)
        if self.check_tiers is not None and self.similarity != NO_CHECK:
            conf["tiers"] = list(self.check_tiers)
        d["max_cost_per_query_usd"] = None if self.cap_usd is None else str(self.cap_usd)
        d.pop("cost_cap_mode", None)
        if self.cap_mode != "worst_case":
            d["cost_cap_mode"] = self.cap_mode
        if self.escalate_on is not None:
            conf["escalate_on"] = list(self.escalate_on)
        for key in ("answer", "k_max", "stop_share"):
            conf.pop(key, None)
        if self.similarity != NO_CHECK:
            if self.answer != "first":
                conf["answer"] = self.answer
            if self.k_max is not None and self.k_max > self.k:
                conf["k_max"] = self.k_max
                conf["stop_share"] = float(self.stop_share)
        if self.temperatures is not None:
            for ti, temp in enumerate(self.temperatures):
                if temp is not None:
                    d["tiers"][ti]["sample_temperature"] = float(temp)
        d.pop("start_router", None)
        if self.router is not None:
            d["start_router"] = self.router.with_thresholds(self.router_thresholds).to_json()
        if name is not None:
            d["name"] = name
        if provenance is not None:
            d["provenance"] = provenance
        return policy_from_dict(d)

    @property
    def id(self) -> str:
        """A content hash of the knobs (12 hex digits): the same policy has the same id in every sweep."""
        knobs = {
            "start": list(self.start),
            "cascade": self.cascade,
            "similarity": self.similarity,
            "k": self.k,
            "classes": list(self.classes),
            "thresholds": [repr(float(t)) for t in self.thresholds],
            "cap_usd": None if self.cap_usd is None else str(self.cap_usd),
            **({} if self.check_tiers is None else {"check_tiers": list(self.check_tiers)}),
            **({} if self.cap_mode == "worst_case" else {"cap_mode": self.cap_mode}),
            **({} if self.escalate_on is None else {"escalate_on": list(self.escalate_on)}),
            **({} if self.answer == "first" else {"answer": self.answer}),
            **({} if self.k_max is None else {"k_max": self.k_max, "stop_share": repr(float(self.stop_share))}),
            **(
                {}
                if self.router is None
                else {
                    "router": self.router.fingerprint,
                    "router_thresholds": [repr(float(x)) for x in self.router_thresholds],
                }
            ),
            **(
                {}
                if self.temperatures is None
                else {"temperatures": [None if t is None else repr(float(t)) for t in self.temperatures]}
            ),
        }
        return hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:12]

    def _shown_thresholds(self) -> tuple[float, ...]:
        if self.check_tiers is None:
            return self.thresholds
        return tuple(t for i, t in enumerate(self.thresholds) if i in self.check_tiers)

    def label(self, n_tiers: int | None = None) -> str:
        """A readable name; with ``n_tiers`` (the ladder's length) a policy that cannot escalate says so."""
        start = "/".join(str(s) for s in self.start)
        if self.router is not None:
            start = f"learned (p>={','.join(f'{x:.3g}' for x in self.router_thresholds)})"
        check = (
            "no check"
            if self.similarity == NO_CHECK or not self.cascade
            else (
                f"{self.similarity} k={self.k} thr={','.join(f'{t:.3g}' for t in self._shown_thresholds())} "
                f"on {'+'.join(c[0] for c in self.classes)}"
                + ("" if self.check_tiers is None else f" at tier {'+'.join(map(str, self.check_tiers))}")
                + ("; majority answer" if self.answer == "majority" else "")
                + ("" if self.k_max is None else f"; draw to k={self.k_max} until {self.stop_share:.0%} agree")
                + (
                    ""
                    if self.temperatures is None or all(t is None for t in self.temperatures)
                    else "; samples at "
                    + ", ".join(f"T={t:g} at tier {i}" for i, t in enumerate(self.temperatures) if t is not None)
                )
            )
        )
        cap = "" if self.cap_usd is None else f" cap ${self.cap_usd}" + (" spent" if self.cap_mode == "spent" else "")
        if n_tiers is not None and not self.can_escalate(n_tiers):
            # "cascade" only where a route can move up: here every class starts at the final tier
            return f"start {start}; single tier (no escalation possible){cap}"
        return f"start {start}; {'cascade' if self.cascade else 'no cascade'}; {check}{cap}"

    def can_escalate(self, n_tiers: int) -> bool:
        """On a ladder of ``n_tiers``, can a route move up? (cascade on, and some class starts below the top)"""
        if self.router is not None:
            return self.cascade and any(x <= 1.0 for x in self.router_thresholds)
        return self.cascade and any(s < n_tiers - 1 for s in self.start)


# ---------------------------------------------------------------- simulation


@dataclass
class SimResult:
    """Per (policy, item) outcome of a batch of policies; arrays of shape (P, N)."""

    tier: np.ndarray  # answering tier, -1 when the route failed
    variant: np.ndarray  # 0 single, 1 k-sample
    cost_pico: np.ndarray
    escalations: np.ndarray
    premium_call: np.ndarray
    latency_ms: np.ndarray
    quality: dict[str, np.ndarray]
    sample: np.ndarray | None = None  # which sample of a k-sample call was returned (0: the first)


def encode(points: Sequence[PolicyPoint], a: DenseTable, base: RouterPolicy) -> dict[str, np.ndarray]:
    p = len(points)
    if base.retries.max_retries or base.route_deadline_s is not None:
        raise WorkbenchError(
            "the sweep cannot simulate same-tier retries or a route deadline (the outcome table holds one "
            "recorded reply per call, and no call cut off by a deadline); set retries.max_retries to 0 and "
            "route_deadline_s to null in the ladder policy"
        )
    covered = functools.cache(a.draws_cover)  # one scan of the items per (k_max, tier), not per point
    for pt in points:
        if pt.cap_mode not in ("worst_case", "spent"):
            raise WorkbenchError(f"cap_mode must be worst_case or spent, got {pt.cap_mode!r}")
    start = np.array([pt.start for pt in points], dtype=np.int64).reshape(p, 3)
    cascade = np.array([pt.cascade for pt in points], bool)
    check_on = np.array([pt.similarity != NO_CHECK for pt in points], bool)
    inclass = np.array([[c in pt.classes for c in COMPLEXITY_CLASSES] for pt in points], bool).reshape(p, 3)
    for pt in points:
        if pt.similarity == NO_CHECK or not pt.cascade or a.t == 1:
            continue  # no k-sample call is ever made (a one-tier ladder has no tier to check)
        if pt.similarity not in a.sims:
            raise WorkbenchError(f"unknown similarity {pt.similarity!r}; the outcome table has {a.sims}")
        if pt.k not in a.ks:
            raise WorkbenchError(f"k={pt.k} was not recorded; recorded: {a.ks or 'none (single answers only)'}")
        j = a.ks.index(pt.k)
        wanted = range(a.t - 1) if pt.check_tiers is None else pt.check_tiers
        short = [ti for ti in wanted if ti >= a.t - 1 or a.k_count[j, ti] != a.n]
        if short:
            ti = short[0]
            got = int(a.k_count[j, ti]) if ti < a.t - 1 else 0
            raise WorkbenchError(
                f"k={pt.k} samples are recorded for {got} of {a.n} items at tier {ti}, which this policy checks; "
                "complete the recording (`routerlab record` resumes), or check only the tiers recorded "
                f"for every item ({list(a.k_tiers(j)) or 'none'})"
            )
        if len(pt.thresholds) != a.t - 1:
            raise WorkbenchError(f"{len(pt.thresholds)} thresholds given; the ladder has {a.t - 1} non-final tiers")
        if pt.answer not in ("first", "majority"):
            raise WorkbenchError(f"answer must be first or majority, got {pt.answer!r}")
        if pt.k_max is not None and pt.k_max > pt.k:
            if pt.k != 2:
                raise WorkbenchError(
                    f"adaptive k (k_max={pt.k_max}) is simulated after a first draw of k=2 samples, not k={pt.k}"
                )
            if not 0 < pt.stop_share <= 1:
                raise WorkbenchError(f"stop_share must be in (0, 1], got {pt.stop_share}")
            gaps = [ti for ti in wanted if ti < a.t - 1 and not covered(pt.k_max, ti)]
            if gaps:
                raise WorkbenchError(
                    f"adaptive k up to k_max={pt.k_max} needs draws recorded to {pt.k_max} samples at tier "
                    f"{gaps[0]} for every item; the table has draws to {a.k_max} (record with --k-max "
                    f"{pt.k_max})"
                )
    live = [pt.cascade and pt.similarity != NO_CHECK and a.t > 1 for pt in points]  # the check can run at all
    sim_idx = np.array([a.sims.index(pt.similarity) if on else 0 for pt, on in zip(points, live, strict=True)])
    k_idx = np.array([a.ks.index(pt.k) if on else 0 for pt, on in zip(points, live, strict=True)])
    thr = np.zeros((p, max(a.t - 1, 1)))
    tmask = np.zeros((p, max(a.t - 1, 1)), bool)  # which non-final tiers check
    for i, pt in enumerate(points):
        if live[i]:
            thr[i, : a.t - 1] = pt.thresholds
            tmask[i, : a.t - 1] = True if pt.check_tiers is None else np.isin(np.arange(a.t - 1), pt.check_tiers)
    for pt in points:
        if pt.cap_usd is not None and pt.cap_usd * PICO != int(pt.cap_usd * PICO):
            raise WorkbenchError(f"cap {pt.cap_usd} is finer than 1e-12 USD")
    # A cap beyond ~$4.6M per query cannot bind (no recorded worst case comes near): the same as no cap.
    cap = np.array(
        [-1 if pt.cap_usd is None or pt.cap_usd * PICO >= NO_CAP_PICO else int(pt.cap_usd * PICO) for pt in points],
        np.int64,
    )
    masks = np.array(
        [
            escalate_mask(base.confidence.escalate_on if pt.escalate_on is None else pt.escalate_on)
            if pt.cascade
            else 0
            for pt in points
        ],
        np.int8,
    )
    return {
        "majority": np.array([pt.answer == "majority" for pt in points], bool),
        "kmax": np.array(
            [
                pt.k_max if on and pt.k_max is not None and pt.k_max > pt.k else 0
                for pt, on in zip(points, live, strict=True)
            ],
            np.int64,
        ),
        "stop": np.array([float(pt.stop_share) for pt in points], np.float64),
        "spent_mode": np.array([pt.cap_mode == "spent" for pt in points], bool),
        "bad_mask": masks,
        "start": start,
        "cascade": cascade,
        "check_on": check_on,
        "inclass": inclass,
        "sim": sim_idx,
        "k": k_idx,
        "thr": thr,
        "tiers": tmask,
        "cap": cap,
    }


def by_temperature(o: Outcomes, points: Sequence[PolicyPoint]) -> list[tuple[Outcomes, list[int]]] | None:
    """The points grouped by the outcome-table variant their sample temperatures select (None: all on
    ``o`` itself, the common case)."""
    groups: dict[tuple[float, ...], list[int]] = {}
    for i, pt in enumerate(points):
        groups.setdefault(o.resolve_temperatures(pt.temperatures), []).append(i)
    if list(groups) == [o.temperatures]:
        return None
    return [(o.at_temperatures(vec), idx) for vec, idx in groups.items()]


def merge_results(parts: Sequence[tuple[Sequence[int], SimResult]], p: int) -> SimResult:
    """One :class:`SimResult` for ``p`` policies from results for groups of them (their row indices)."""
    first = parts[0][1]

    def empty(x: np.ndarray) -> np.ndarray:
        return np.zeros((p, *x.shape[1:]), x.dtype)

    out = SimResult(
        empty(first.tier), empty(first.variant), empty(first.cost_pico), empty(first.escalations),
        empty(first.premium_call), empty(first.latency_ms), {s: empty(q) for s, q in first.quality.items()},
        None if all(r.sample is None for _, r in parts) else np.zeros((p, first.tier.shape[1]), np.int64),
    )  # fmt: skip
    for idx, r in parts:
        rows = np.asarray(idx, np.int64)
        for name in ("tier", "variant", "cost_pico", "escalations", "premium_call", "latency_ms"):
            getattr(out, name)[rows] = getattr(r, name)
        for sc, q in r.quality.items():
            out.quality[sc][rows] = q
        if out.sample is not None:
            out.sample[rows] = 0 if r.sample is None else r.sample
    return out


def _per_temperature(
    run: Any, o: Outcomes, points: Sequence[PolicyPoint], arrays: DenseTable | None
) -> SimResult | None:
    groups = by_temperature(o, points)
    if groups is None:
        return None
    parts = [(idx, run(ov, [points[i] for i in idx], arrays=arrays if ov is o else None)) for ov, idx in groups]
    return merge_results(parts, len(points))


def simulate(o: Outcomes, points: Sequence[PolicyPoint], *, arrays: DenseTable | None = None) -> SimResult:
    """Route every item under every policy in ``points`` (the router's logic, vectorised)."""
    split = _per_temperature(simulate, o, points, arrays)
    if split is not None:
        return split
    a = arrays or o.dense()
    e = encode(points, a, o.policy)
    p, n, t = len(points), a.n, a.t
    start = e["start"][:, a.cls]  # (P, N)
    if any(pt.router is not None for pt in points):
        start = start.copy()
        for i, pt in enumerate(points):
            if pt.router is None:
                continue
            if len(pt.router.tiers) != t - 1 or len(pt.router_thresholds) != t - 1:
                raise WorkbenchError(
                    f"the learned start router has {len(pt.router.tiers)} tier models and "
                    f"{len(pt.router_thresholds)} thresholds; the ladder has {t - 1} non-final tiers"
                )
            scores = o.start_scores(pt.router)
            st = np.full(n, t - 1, np.int64)
            for ti in reversed(range(t - 1)):  # the first tier whose score reaches its threshold
                st = np.where(scores[ti] >= pt.router_thresholds[ti], ti, st)
            start[i] = st
    check_cls = (e["cascade"] & e["check_on"])[:, None] & e["inclass"][:, a.cls]
    has_cap = (e["cap"] >= 0)[:, None]
    cap = e["cap"][:, None]
    spent_mode = e["spent_mode"][:, None]
    bad_mask = e["bad_mask"][:, None]
    done = np.zeros((p, n), bool)
    tier = np.full((p, n), -1, np.int64)
    variant = np.zeros((p, n), np.int8)
    best_t = np.full((p, n), -1, np.int64)  # the latest usable unaccepted answer
    best_v = np.zeros((p, n), np.int8)
    bu_t = np.full((p, n), -1, np.int64)  # the latest unusable answer (empty, cut off, filtered)
    bu_v = np.zeros((p, n), np.int8)
    sample = np.zeros((p, n), np.int64)  # the sample returned by the answering call
    best_s = np.zeros((p, n), np.int64)
    bu_s = np.zeros((p, n), np.int64)
    majority = e["majority"][:, None]
    kmax = e["kmax"]
    stop = e["stop"][:, None]
    pick_k = np.zeros((p, n), np.int64)
    spent = np.zeros((p, n), np.int64)
    charged = np.zeros((p, n), np.int64)  # spent plus reserves: what the cap is checked against
    esc = np.zeros((p, n), np.int64)
    lat = np.zeros((p, n))
    premium = np.zeros((p, n), bool)
    for ti in range(t):
        active = ~done & (ti >= start)
        if ti < t - 1:
            check = check_cls & active & e["tiers"][:, ti][:, None]
            kc = a.k_cost[e["k"], :, ti]
            kw = a.k_worst[e["k"], :, ti]
            kr = a.k_res[e["k"], :, ti]
            ke = a.k_err[e["k"], :, ti]
            kl = a.k_lat[e["k"], :, ti]
            agree = a.agree[e["sim"], e["k"], :, ti]
            cost = np.where(check, kc, a.s_cost[None, :, ti])
            worst = np.where(check, kw, a.s_worst[None, :, ti])
            res = np.where(check, kr, a.s_res[None, :, ti])
            err = np.where(check, ke, a.s_err[None, :, ti])
            late = np.where(check, kl, a.s_lat[None, :, ti])
            bits = np.where(check, a.k_bad[e["k"], :, ti], a.s_bad[None, :, ti])
            tuw = np.where(check, a.k_tuw[e["k"], :, ti], 0)
            s_cost = a.k_scost[e["k"], :, ti]
            s_res = a.k_sres[e["k"], :, ti]
            s_lat = a.k_slat[e["k"], :, ti]
            if e["majority"].any():
                pick_k = np.where(majority, a.k_pick[e["sim"], e["k"], :, ti], 0)
                agree_m = np.where(majority, a.k_pagree[e["sim"], e["k"], :, ti], agree)
                bits_m = np.where(majority & check, a.k_pbad[e["sim"], e["k"], :, ti], bits)
        else:
            check = np.zeros((p, n), bool)
            cost = np.broadcast_to(a.s_cost[None, :, ti], (p, n))
            worst = np.broadcast_to(a.s_worst[None, :, ti], (p, n))
            res = np.broadcast_to(a.s_res[None, :, ti], (p, n))
            err = np.broadcast_to(a.s_err[None, :, ti], (p, n))
            late = np.broadcast_to(a.s_lat[None, :, ti], (p, n))
            bits = np.broadcast_to(a.s_bad[None, :, ti], (p, n))
            agree = np.zeros((p, n))
            tuw = np.zeros((p, n), np.int64)
            s_cost = s_res = tuw
            s_lat = np.zeros((p, n))
        over = np.where(spent_mode, charged >= cap, charged + worst > cap)
        blocked = active & has_cap & over
        esc += blocked
        active &= ~blocked
        # a short n=k reply is completed unless the cap forbids the completing requests
        paid = charged + s_cost + s_res
        short = active & (tuw > 0) & has_cap & np.where(spent_mode, paid >= cap, paid + tuw > cap)
        cost = np.where(short, s_cost, cost)
        res = np.where(short, s_res, res)
        late = np.where(short, s_lat, late)
        spent += np.where(active, cost, 0)
        charged += np.where(active, cost + res, 0)
        lat += np.where(active, late, 0.0)
        if ti < t - 1 and e["majority"].any():  # the medoid's bits and agreement, unless the check was cut short
            maj = majority & check & ~short
            bits = np.where(maj, bits_m, bits)
            agree = np.where(maj, agree_m, agree)
            pick = np.where(maj, pick_k, 0)
        else:
            pick = np.zeros((p, n), np.int64)
        if ti == t - 1:
            premium |= active
        failed = active & (err > 0)  # every failure moves on to the next tier
        esc += failed
        ok = active & (err == 0)
        v_here = np.where(check, 1, 0).astype(np.int8)
        bad = ok & ((bits & bad_mask) != 0)
        if ti == t - 1:
            bad &= best_t >= 0  # the final tier's unusable answer stands unless a usable one exists
        esc += bad
        if ti == t - 1:  # the ladder ends: the usable answer beats the final tier's unusable one
            tier = np.where(bad, best_t, tier)
            variant = np.where(bad, best_v, variant)
            sample = np.where(bad, best_s, sample)
            done |= bad
        else:
            bu_t = np.where(bad, ti, bu_t)
            bu_v = np.where(bad, v_here, bu_v)
            bu_s = np.where(bad, pick, bu_s)
        good = ok & ~bad
        thr = e["thr"][:, min(ti, e["thr"].shape[1] - 1)][:, None]
        acc_k = good & check & ~short & (agree >= thr)
        low = good & check & ~acc_k
        drawing = low & ~short & (kmax > 2)[:, None]
        if ti < t - 1 and drawing.any():
            # adaptive k: single draws m = 3 .. k_max, each cap-checked; a failed draw stops drawing; accept
            # once the returned answer's share of the m samples reaches stop_share and it is usable
            for m in range(3, int(kmax.max()) + 1):
                go = drawing & (m <= kmax)[:, None]
                if not go.any():
                    break
                d = m - 3
                over = np.where(spent_mode, charged >= cap, charged + a.d_worst[d, :, ti][None, :] > cap)
                go &= ~(has_cap & over)
                drawing &= go  # a blocked draw ends the drawing
                spent += np.where(go, a.d_cost[d, :, ti][None, :], 0)
                charged += np.where(go, (a.d_cost[d, :, ti] + a.d_res[d, :, ti])[None, :], 0)
                lat += np.where(go, a.d_lat[d, :, ti][None, :], 0.0)
                go &= (a.d_err[d, :, ti] == 0)[None, :]
                drawing &= go
                sim_d = np.where(majority, a.d_pagree[e["sim"], d, :, ti], a.d_agree[e["sim"], d, :, ti])
                pick = np.where(go & majority, a.d_pick[e["sim"], d, :, ti], pick)
                bits = np.where(go & majority, a.d_pbad[e["sim"], d, :, ti], bits)
                share = (1.0 + (m - 1) * sim_d) / m
                acc_d = go & (share >= stop) & ((bits & bad_mask) == 0)
                acc_k |= acc_d
                drawing &= ~acc_d
            low = good & check & ~acc_k
            ubad = low & ((bits & bad_mask) != 0)  # drawing ended on an unusable majority answer
            bu_t = np.where(ubad, ti, bu_t)
            bu_v = np.where(ubad, 1, bu_v)
            bu_s = np.where(ubad, pick, bu_s)
            esc += low
            low &= ~ubad
        else:
            esc += low
        best_t = np.where(low, ti, best_t)
        best_v = np.where(low, 1, best_v)
        best_s = np.where(low, pick, best_s)
        accepted = acc_k | (good & ~check)
        tier = np.where(accepted, ti, tier)
        variant = np.where(accepted, v_here, variant)
        sample = np.where(accepted, np.where(check, pick, 0), sample)
        done |= accepted
    fallback = ~done & (best_t >= 0)
    tier = np.where(fallback, best_t, tier)
    variant = np.where(fallback, best_v, variant)
    sample = np.where(fallback, best_s, sample)
    fallback_u = ~done & (best_t < 0) & (bu_t >= 0)
    tier = np.where(fallback_u, bu_t, tier)
    variant = np.where(fallback_u, bu_v, variant)
    sample = np.where(fallback_u, bu_s, sample)
    sample = np.where((variant == 1) & (tier >= 0), sample, 0)
    quality = {}
    rows = np.arange(n)[None, :]
    tt = np.clip(tier, 0, t - 1)
    tk = np.clip(tier, 0, max(t - 2, 0))
    for sc in a.s_q:
        qs = a.s_q[sc][rows, tt]
        if sc in a.k_sq and a.k_sq[sc].size:
            qk = a.k_sq[sc][e["k"][:, None], rows, tk, sample]
        else:
            qk = a.k_q[sc][e["k"][:, None], rows, tk]
        q = np.where(variant == 1, qk, qs)
        quality[sc] = np.where(tier >= 0, q, 0.0)
    return SimResult(tier, variant, spent, esc, premium, lat, quality, sample)


def simulate_cut(o: Outcomes, points: Sequence[PolicyPoint], *, arrays: DenseTable | None = None) -> SimResult:
    """The same result as :func:`simulate`, with each threshold axis treated as cut points.

    A route depends on a tier's threshold only through ``agreement >= threshold`` at that tier. So the
    policies that differ only in their thresholds (a group) are simulated once per combination of
    "always accept" / "never accept" at each non-final tier (thresholds -inf / +inf: 2^(T-1) branch
    simulations), and each policy takes, item by item, the branch its own comparisons select. Groups
    no larger than their branch count, and policies without a consistency check, are simulated
    directly. Exact: the same arrays as :func:`simulate` (a test checks it on random tables)."""
    split = _per_temperature(simulate_cut, o, points, arrays)
    if split is not None:
        return split
    a = arrays or o.dense()
    nb = 2 ** max(a.t - 1, 0)
    groups: dict[PolicyPoint, list[int]] = {}
    direct: list[int] = []
    for i, pt in enumerate(points):
        live = pt.cascade and pt.similarity != NO_CHECK and a.t > 1 and len(pt.thresholds) == a.t - 1
        if live:
            groups.setdefault(replace(pt, thresholds=()), []).append(i)
        else:
            direct.append(i)
    for key in [k for k, v in groups.items() if len(v) <= nb]:
        direct += groups.pop(key)
    inf = float("inf")
    branch_pts = [
        replace(key, thresholds=tuple(-inf if (b >> k) & 1 else inf for k in range(a.t - 1)))
        for key in groups
        for b in range(nb)
    ]
    run = [points[i] for i in direct] + branch_pts
    if not groups:
        return simulate(o, points, arrays=a)
    sim = simulate(o, run, arrays=a)
    p, n = len(points), a.n
    fields = ("tier", "variant", "cost_pico", "escalations", "premium_call", "latency_ms", "sample")
    out = {f: np.empty((p, n), dtype=getattr(sim, f).dtype) for f in fields}
    qual = {sc: np.empty((p, n), dtype=q.dtype) for sc, q in sim.quality.items()}
    if direct:
        d = np.asarray(direct)
        for f in fields:
            out[f][d] = getattr(sim, f)[: len(direct)]
        for sc in qual:
            qual[sc][d] = sim.quality[sc][: len(direct)]
    cols = np.arange(n)[None, :]
    for g, (key, members) in enumerate(groups.items()):
        base = len(direct) + g * nb
        j, kk = a.sims.index(key.similarity), a.ks.index(key.k)
        thr = np.array([points[i].thresholds for i in members], np.float64)  # (G, T-1)
        idx = np.zeros((len(members), n), np.int64)
        for k in range(a.t - 1):
            agree = (a.k_pagree if key.answer == "majority" else a.agree)[j, kk, :, k]
            idx |= (agree[None, :] >= thr[:, k, None]).astype(np.int64) << k
        rows = base + idx
        m = np.asarray(members)
        for f in fields:
            out[f][m] = getattr(sim, f)[rows, cols]
        for sc in qual:
            qual[sc][m] = sim.quality[sc][rows, cols]
    return SimResult(
        out["tier"], out["variant"], out["cost_pico"], out["escalations"], out["premium_call"], out["latency_ms"], qual,
        out["sample"],
    )  # fmt: skip


@functools.lru_cache(maxsize=16)
def bootstrap_weights(n: int, b: int, seed: int) -> np.ndarray:
    """(n, b) resampling counts (uint8): column j says how often each item is drawn in resample j.

    Built one resample at a time (the same draws as one (b, n) draw): n x b bytes, not 24 x n x b of
    temporaries (at a million items and 200 resamples, 200 MB instead of 4.8 GB)."""
    rng = np.random.default_rng(seed)
    w = np.empty((n, b), np.uint8)
    for j in range(b):
        counts = np.bincount(rng.integers(0, n, size=n), minlength=n)
        if counts.max(initial=0) > 255:  # not seen in practice: a count above 255 has odds below 1e-300
            raise WorkbenchError(f"a bootstrap resample drew one item {counts.max()} times (more than uint8 holds)")
        w[:, j] = counts
    w.setflags(write=False)
    return w


#: Quality scores are summed as integers in units of 2^-32 (each item's score rounded to that grid): a sum
#: is then the same exact number whatever the order or the split of the items (per class, per shard), and
#: the bootstrap's weighted sums stay exact integers in float64 up to about 2^21 / 2^-32-scaled items
#: (n x largest weight < 2^21, some 200,000 items). The rounding moves a mean by under 2.4e-10.
QUALITY_SCALE = 2**32


@dataclass
class Partial:
    """Additive per-policy sums over a set of items: what :func:`summarize` needs, summed exactly (integers)
    so that sums over parts (classes, shards) equal the sum over the whole."""

    n: int  # items summed
    cost: np.ndarray  # (P,) int64: pico USD
    q: dict[str, np.ndarray]  # per scorer (P,) int64: quality in units of 1 / QUALITY_SCALE
    qn: dict[str, np.ndarray]  # per scorer (P,) int64: items with a score
    qw: dict[str, np.ndarray] | None  # per scorer (P, B): bootstrap-weighted quality sums (same units)
    vw: dict[str, np.ndarray] | None  # per scorer (P, B): bootstrap-weighted counts of scored items
    escalated: np.ndarray  # (P,) int64: items with at least one escalation
    failed: np.ndarray  # (P,) int64: items no tier answered
    tiers: np.ndarray  # (P, T) int64: items answered at each tier
    premium: np.ndarray  # (P,) int64: items that called the final tier
    latency: np.ndarray | None  # (P, n) the items' latencies (for exact percentiles), or None: not kept

    def rows(self, idx: np.ndarray) -> Partial:
        """The sums of the policies ``idx`` (rows, repeats allowed)."""

        def d(x: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
            return None if x is None else {k: v[idx] for k, v in x.items()}

        return Partial(
            self.n, self.cost[idx], {k: v[idx] for k, v in self.q.items()}, {k: v[idx] for k, v in self.qn.items()},
            d(self.qw), d(self.vw), self.escalated[idx], self.failed[idx], self.tiers[idx], self.premium[idx],
            None if self.latency is None else self.latency[idx],
        )  # fmt: skip

    def __add__(self, other: Partial) -> Partial:
        """The sums over both item sets (the same policies, disjoint items)."""

        def d(x: dict[str, np.ndarray] | None, y: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
            return None if x is None or y is None else {k: x[k] + y[k] for k in x}

        lat = None
        if self.latency is not None and other.latency is not None:
            lat = np.concatenate([self.latency, other.latency], axis=1)
        return Partial(
            self.n + other.n, self.cost + other.cost, {k: self.q[k] + other.q[k] for k in self.q},
            {k: self.qn[k] + other.qn[k] for k in self.qn}, d(self.qw, other.qw), d(self.vw, other.vw),
            self.escalated + other.escalated, self.failed + other.failed, self.tiers + other.tiers,
            self.premium + other.premium, lat,
        )  # fmt: skip


def concat_partials(parts: Sequence[Partial]) -> Partial:
    """The rows of several :class:`Partial` (the same items, other policies) stacked in order."""

    def d(xs: list[dict[str, np.ndarray] | None]) -> dict[str, np.ndarray] | None:
        if any(x is None for x in xs):
            return None
        return {k: np.concatenate([x[k] for x in xs if x is not None]) for k in xs[0] or {}}

    first = parts[0]
    lat = None if any(p.latency is None for p in parts) else np.concatenate([p.latency for p in parts])
    return Partial(
        first.n, np.concatenate([p.cost for p in parts]), {k: np.concatenate([p.q[k] for p in parts]) for k in first.q},
        {k: np.concatenate([p.qn[k] for p in parts]) for k in first.qn}, d([p.qw for p in parts]),
        d([p.vw for p in parts]), np.concatenate([p.escalated for p in parts]),
        np.concatenate([p.failed for p in parts]), np.concatenate([p.tiers for p in parts]),
        np.concatenate([p.premium for p in parts]), lat,
    )  # fmt: skip


def reduce_sim(
    sim: SimResult, cols: np.ndarray, n_tiers: int, *, weights: np.ndarray | None = None, latency: bool = True
) -> Partial:
    """The additive sums of a simulation over its item columns ``cols``; ``weights`` (len(cols), B) are the
    bootstrap resampling counts of those items."""
    cols = np.asarray(cols, np.int64)
    q: dict[str, np.ndarray] = {}
    qn: dict[str, np.ndarray] = {}
    qw: dict[str, np.ndarray] | None = None if weights is None else {}
    vw: dict[str, np.ndarray] | None = None if weights is None else {}
    for sc, qq in sim.quality.items():
        x = np.ascontiguousarray(qq[:, cols])
        valid = ~np.isnan(x)
        qi = np.where(valid, np.rint(np.where(valid, x, 0.0) * QUALITY_SCALE), 0.0)
        q[sc] = qi.astype(np.int64).sum(axis=1)
        qn[sc] = valid.sum(axis=1).astype(np.int64)
        if weights is not None and qw is not None and vw is not None:
            qw[sc], vw[sc] = _weighted(qi, valid, weights)
    tiers = sim.tier[:, cols]
    return Partial(
        n=len(cols),
        cost=sim.cost_pico[:, cols].sum(axis=1).astype(np.int64),
        q=q,
        qn=qn,
        qw=qw,
        vw=vw,
        escalated=(sim.escalations[:, cols] > 0).sum(axis=1).astype(np.int64),
        failed=(tiers < 0).sum(axis=1).astype(np.int64),
        tiers=np.stack([(tiers == ti).sum(axis=1) for ti in range(n_tiers)], axis=1)
        .astype(np.int64)
        .reshape(len(tiers), n_tiers),
        premium=sim.premium_call[:, cols].sum(axis=1).astype(np.int64),
        latency=np.ascontiguousarray(sim.latency_ms[:, cols]) if latency else None,
    )


def _weighted(qi: np.ndarray, valid: np.ndarray, weights: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, ...]:
    """``qi @ weights`` and ``valid @ weights`` with the (uint8) weights turned to floats a block of items
    at a time (integer-valued floats: exact while the sums stay under 2^53)."""
    p, b = qi.shape[0], weights.shape[1]
    qw, vw = np.zeros((p, b)), np.zeros((p, b))
    for i in range(0, qi.shape[1], chunk):
        w = weights[i : i + chunk].astype(np.float64)
        qw += qi[:, i : i + chunk] @ w
        vw += valid[:, i : i + chunk].astype(np.float64) @ w
    return qw, vw


def finalize(
    points: Sequence[PolicyPoint], s: Partial, n_tiers: int, *, latency: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per policy from its sums (the sweep table's columns); ``latency`` (P, 2): its p50 and p95
    (else from ``s.latency``; NaN where neither is given)."""
    n, t = s.n, n_tiers
    if n == 0:
        raise WorkbenchError("no items selected")
    cost_total = s.cost.astype(float) / float(PICO)
    out: dict[str, Any] = {
        "policy_id": [pt.id for pt in points],
        "label": [pt.label(t) for pt in points],
        "start_simple": [pt.start[0] for pt in points],
        "start_medium": [pt.start[1] for pt in points],
        "start_complex": [pt.start[2] for pt in points],
        "cascade": [pt.cascade for pt in points],
        "similarity": [pt.similarity for pt in points],
        "k": [pt.k for pt in points],
        "classes": ["+".join(pt.classes) for pt in points],
        "check_tiers": ["all" if pt.check_tiers is None else "+".join(map(str, pt.check_tiers)) for pt in points],
        "cap_usd": [np.nan if pt.cap_usd is None else float(pt.cap_usd) for pt in points],
        "n_items": n,
        "cost_usd_total": cost_total,
        "cost_usd_mean": cost_total / n,
    }
    for ti in range(t - 1):
        out[f"threshold_{ti}"] = [pt.thresholds[ti] if pt.thresholds else np.nan for pt in points]
    out["cost_per_1k_usd"] = out["cost_usd_mean"] * 1000.0
    for sc in s.q:
        out[f"quality_{sc}"] = s.q[sc].astype(float) / QUALITY_SCALE / np.maximum(s.qn[sc], 1)
        if s.qw is not None and s.vw is not None:
            means = s.qw[sc] / QUALITY_SCALE / np.maximum(s.vw[sc], 1)
            out[f"quality_{sc}_lo"] = np.percentile(means, 2.5, axis=1)
            out[f"quality_{sc}_hi"] = np.percentile(means, 97.5, axis=1)
    out["escalation_rate"] = s.escalated / n
    out["failure_rate"] = s.failed / n
    for ti in range(t):
        out[f"share_tier_{ti}"] = s.tiers[:, ti] / n
    out["premium_call_share"] = s.premium / n
    if latency is None and s.latency is not None:
        latency = np.percentile(s.latency, [50, 95], axis=1).T if len(points) else np.zeros((0, 2))
    if latency is None:
        latency = np.full((len(points), 2), np.nan)
    out["latency_p50_ms"] = latency[:, 0]
    out["latency_p95_ms"] = latency[:, 1]
    return pd.DataFrame(out)


#: Peak temporaries of :func:`simulate` plus :func:`summarize` per (policy, item): tracemalloc read 223
#: bytes for 1,024 policies on mot_date (with or without the bootstrap); rounded up for headroom.
BYTES_PER_POLICY_ITEM = 256
DEFAULT_SWEEP_MEMORY_MB = 2048.0


def sweep_memory_mb(memory_mb: float | None = None) -> float:
    """The sweep's memory budget: ``memory_mb``, else ``$ROUTERLAB_SWEEP_MEMORY_MB``, else 2048."""
    import os

    if memory_mb is None:
        env = os.environ.get("ROUTERLAB_SWEEP_MEMORY_MB")
        try:
            memory_mb = float(env) if env else DEFAULT_SWEEP_MEMORY_MB
        except ValueError:
            raise WorkbenchError(f"ROUTERLAB_SWEEP_MEMORY_MB must be a number of megabytes, got {env!r}") from None
    if not memory_mb > 0:
        raise WorkbenchError(f"the sweep's memory budget must be positive, got {memory_mb} MB")
    return memory_mb


def batch_size(n_items: int, *, memory_mb: float | None = None) -> int:
    """Policies per sweep batch so that the temporaries stay within ``memory_mb`` (see :func:`sweep`)."""
    memory_mb = sweep_memory_mb(memory_mb)
    per_policy = BYTES_PER_POLICY_ITEM * max(n_items, 1)
    return int(min(4096, max(1, memory_mb * 2**20 // per_policy)))
