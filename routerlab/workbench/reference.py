"""The reference simulator: the router's own decision procedure, driven over the outcome table.

:func:`simulate_reference` routes every item under every policy by running
:func:`routerlab.decision.plan_route`, the very generator the production
routers run, and answering its commands from the outcome table instead of
the network: each :class:`~routerlab.decision.TierCall` gets the
:class:`~routerlab.decision.TierReply` recorded for that (item, tier,
variant), each cost-cap quote the recorded worst case, each breaker gate
"closed" (items are independent, as in replays). Nothing is parsed per
policy: the replies are built once per table.

It is slow (a Python generator per policy and item) and exact by
construction, which is what the vectorised :func:`routerlab.workbench.sweep.simulate`
is checked against: same answering tier, variant, exact cost, escalations,
premium calls and quality, and the same latency up to float rounding (the
reference sums seconds on a virtual clock, the sweep milliseconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import numpy as np

from routerlab.decision import (
    BreakerEffect,
    Gate,
    Pause,
    PreparedQuery,
    RouteOutcome,
    TierCall,
    TierReply,
    plan_route,
)
from routerlab.errors import DataError, WorkbenchError, provider_error
from routerlab.policy import RouterPolicy
from routerlab.pricing import PriceBook
from routerlab.types import Usage
from routerlab.workbench.outcomes import Outcomes
from routerlab.workbench.sweep import PolicyPoint, SimResult


@dataclass(frozen=True)
class _Recorded:
    reply: TierReply
    worst_usd: Decimal
    latency_ms: float
    error_kind: str | None
    quality: dict[str, float]
    short: TierReply | None = None  # a short n=k reply as it came, before the single requests completing it
    short_latency_ms: float = 0.0
    topup_worst_usd: Decimal = Decimal(0)


def _usd(pico: Any) -> Decimal:
    return Decimal(int(pico)).scaleb(-12)


def recorded_replies(o: Outcomes) -> dict[tuple[str, int, str], _Recorded]:
    """Every (item_id, tier_index, variant) of the table as the reply the router would have accounted."""
    o.require_loaded("the reference simulator")
    sims = list(o.similarities)
    out: dict[tuple[str, int, str], _Recorded] = {}
    cols = ["item_id", "tier_index", "variant", "k", "n_requests", "error_kind", "fatal", "cost_pico", "worst_pico"]
    cols += ["reserve_pico", "input_tokens", "output_tokens", "cached_tokens", "latency_ms", "unusable"]
    cols += ["missing", "topup_worst_pico", "short_cost_pico", "short_reserve_pico", "short_latency_ms"]
    texts: dict[tuple[str, int, str], list[str]] = {}
    keyed = o.samples[["item_id", "tier_index", "variant"]].assign(text=o.sample_texts())
    for iid, ti, v, text in keyed.itertuples(index=False, name=None):
        texts.setdefault((str(iid), int(ti), str(v)), []).append(str(text))
    sim_cols = [f"agree_{s}" for s in sims]
    pick_cols = [f"{c}_{s}" for s in sims for c in ("pick", "agree_pick", "pbits") if f"pick_{s}" in o.calls]
    q_cols = [f"q_{s}" for s in o.scorers]
    for row in o.calls[cols + sim_cols + pick_cols + q_cols].itertuples(index=False, name=None):
        r = dict(zip(cols + sim_cols + pick_cols + q_cols, row, strict=True))
        picks = {
            s: (int(r[f"pick_{s}"]), float(r[f"agree_pick_{s}"]), int(r[f"pbits_{s}"]))
            for s in sims
            if f"pick_{s}" in r and int(r[f"pick_{s}"]) >= 0
        }
        kind = r["error_kind"] if isinstance(r["error_kind"], str) else None
        if kind is not None and provider_error(kind, "").retryable == bool(r["fatal"]):
            raise DataError(
                f"outcome table row {r['item_id']!r} tier {r['tier_index']} {r['variant']}: error kind {kind!r} "
                f"is {'retryable' if not r['fatal'] else 'fatal'} in the router, the table says otherwise"
            )
        key = (str(r["item_id"]), int(r["tier_index"]), str(r["variant"]))
        reply = TierReply(
            texts=tuple(texts.get(key) or [""]),  # a call with no samples (an error) has no text
            usage=Usage(int(r["input_tokens"]), int(r["output_tokens"]), cache_read_tokens=int(r["cached_tokens"])),
            cost_usd=_usd(r["cost_pico"]),
            reserve_usd=_usd(r["reserve_pico"]),
            error=None,
            n_requests=int(r["n_requests"]),
            agreements={s: float(r[f"agree_{s}"]) for s in sims},
            unusable_bits=int(r["unusable"]),
            picks=picks or None,
        )
        short = None
        if int(r["missing"]) > 0:  # the table holds the completed call; the plan first sees it short
            short = replace(
                reply,
                cost_usd=_usd(r["short_cost_pico"]),
                reserve_usd=_usd(r["short_reserve_pico"]),
                agreements=None,
                picks=None,
                missing=int(r["missing"]),
            )
        quality = {s: float(r[f"q_{s}"]) for s in o.scorers}
        out[key] = _Recorded(
            reply,
            _usd(r["worst_pico"]),
            float(r["latency_ms"]),
            kind,
            quality,
            short,
            float(r["short_latency_ms"]),
            _usd(r["topup_worst_pico"]),
        )
    return out


class _VirtualClock:
    """Seconds; advanced by each call's recorded latency."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _variant(call: TierCall) -> str:
    if call.draw:
        return f"d{call.draw}"
    return "single" if call.signal == "none" else f"k{call.k}"


def sample_quality(o: Outcomes) -> dict[tuple[str, int, str, int], dict[str, float]]:
    """(item_id, tier_index, variant, sample) -> quality of that sample; adaptive k's draw ``m`` is
    sample ``m - 1`` of the k=2 call it continues."""
    o.require_loaded("the reference simulator")
    out: dict[tuple[str, int, str, int], dict[str, float]] = {}
    cols = ["item_id", "tier_index", "variant", "sample"] + [f"q_{s}" for s in o.scorers]
    for row in o.samples[cols].itertuples(index=False, name=None):
        iid, ti, v, j = str(row[0]), int(row[1]), str(row[2]), int(row[3])
        out[(iid, ti, "k2" if v.startswith("d") else v, j)] = {
            s: float(q) for s, q in zip(o.scorers, row[4:], strict=True)
        }
    return out


def route_recorded(
    policy: RouterPolicy,
    item_id: str,
    complexity: str,
    table: dict[tuple[str, int, str], _Recorded],
    prices: PriceBook,
    start_scores: tuple[float, ...] | None = None,
) -> tuple[RouteOutcome, dict[int, str], bool]:
    """One item under one policy: the plan's outcome, the variant called at each tier, and whether the
    final tier was called."""
    clock = _VirtualClock()
    query = PreparedQuery((), complexity, 0, False, start_scores=start_scores)

    def quote(call: TierCall) -> Decimal:
        rec = table[(item_id, call.tier_index, _variant(call))]
        return rec.topup_worst_usd if call.top_up and not call.draw else rec.worst_usd

    if policy.retries.max_retries or policy.route_deadline_s is not None:
        raise WorkbenchError(
            "the reference simulator cannot replay same-tier retries or a route deadline: the outcome table "
            "holds one recorded reply per call, and no call cut off by a deadline"
        )
    keys = {tr.api_key_env: "replay" for tr in policy.tiers if tr.api_key_env}  # replays need no real key
    plan = plan_route(policy, query, prices=prices, api_keys=keys, clock=clock, quote=quote)
    called: dict[int, str] = {}
    final_called = False
    answer: Any = None
    try:
        while True:
            cmd = plan.send(answer)
            if isinstance(cmd, Gate):
                answer = True
            elif isinstance(cmd, BreakerEffect | Pause):
                answer = None
            else:
                v = _variant(cmd)
                try:
                    rec = table[(item_id, cmd.tier_index, v)]
                except KeyError:
                    raise DataError(
                        f"the outcome table has no {v!r} call for item {item_id!r} at tier {cmd.tier_index}"
                    ) from None
                if not cmd.draw:
                    called[cmd.tier_index] = v
                final_called |= cmd.tier_index == len(policy.tiers) - 1
                if rec.short is not None and not cmd.top_up:  # first the reply as it came, short
                    clock.now += rec.short_latency_ms / 1000.0
                    answer = rec.short
                    continue
                clock.now += (rec.latency_ms - (rec.short_latency_ms if cmd.top_up else 0.0)) / 1000.0
                reply = rec.reply
                if rec.error_kind is not None:  # a fresh error per route: the plan attaches its attempts to it
                    err = provider_error(rec.error_kind, "recorded failure", model=cmd.tier.model)
                    reply = replace(reply, error=err)
                answer = reply
    except StopIteration as done:
        return done.value, called, final_called


def simulate_reference(o: Outcomes, points: Sequence[PolicyPoint]) -> SimResult:
    """Route every item under every policy with the decision procedure itself; arrays of shape (P, N)."""
    tables: dict[int, tuple[dict[tuple[str, int, str], _Recorded], dict[tuple[str, int, str, int], dict[str, float]]]]
    tables = {}
    prices = PriceBook()
    items = list(zip(o.items["item_id"].astype(str), o.items["complexity"].astype(str), strict=True))
    p, n = len(points), len(items)
    tier = np.full((p, n), -1, np.int64)
    variant = np.zeros((p, n), np.int8)
    sample = np.zeros((p, n), np.int64)
    cost = np.zeros((p, n), np.int64)
    esc = np.zeros((p, n), np.int64)
    premium = np.zeros((p, n), bool)
    lat = np.zeros((p, n))
    quality = {s: np.zeros((p, n)) for s in o.scorers}
    for pi, pt in enumerate(points):
        policy = pt.to_policy(o.policy)
        # the replies recorded at the policy's own sample temperatures (the temperature knob's variant)
        ov = o.at_temperatures(tuple(policy.sample_temperature(i) for i in range(len(o.tiers) - 1)))
        if id(ov) not in tables:
            tables[id(ov)] = (recorded_replies(ov), sample_quality(ov))
        table, per_sample = tables[id(ov)]
        scores = None if policy.start_router is None else o.start_scores(policy.start_router)
        for ni, (iid, cls) in enumerate(items):
            given = None if scores is None else tuple(float(x) for x in scores[:, ni])
            out, called, final_called = route_recorded(policy, iid, cls, table, prices, given)
            cost[pi, ni] = int(out.spent_usd.scaleb(12))
            esc[pi, ni] = len(out.reasons)
            premium[pi, ni] = final_called
            lat[pi, ni] = out.latency_ms
            if out.result is not None:
                ti = out.result.tier_index
                v = called[ti]
                tier[pi, ni] = ti
                variant[pi, ni] = 0 if v == "single" else 1
                j = out.answer_sample
                sample[pi, ni] = j
                for s in o.scorers:
                    quality[s][pi, ni] = table[(iid, ti, v)].quality[s] if j == 0 else per_sample[(iid, ti, v, j)][s]
    return SimResult(tier, variant, cost, esc, premium, lat, quality, sample)


__all__ = ["recorded_replies", "route_recorded", "sample_quality", "simulate_reference"]
