"""Replay speed: our layout (one cassette per item, indexed transport) vs vcrpy playback.

Goal (issue 3): replaying the whole 805-item, 3-tier alpaca_eval set through the
real CascadeRouter takes under a minute with our layout. "The whole set" here is
every recorded interaction played once: the set is routed three times, with every
class starting at tier 0, 1 and 2 (no confidence check), so 3 x 805 requests.
vcrpy scans a cassette's interactions for each request (every matcher run on
every non-matching one), so one large cassette is quadratic: it is measured on
growing subsets (first k items' interactions merged into one JSON cassette in a
temp dir) and a*k^2 + b*k is fitted to extrapolate to the full set. Every
layout runs once per round, --repeat interleaved rounds (min / median / max),
so machine load hits them alike. Every playback's answers are compared with
the fast path's (collisions would show).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from _common import interleaved, machine, spread, table, workspace

from routerlab.data.cassettes import cassette_name, make_vcr, replay_items, replay_keys
from routerlab.router import CascadeRouter
from routerlab.workbench.sweep import PolicyPoint


def start_policies(policy):  # type: ignore[no-untyped-def]
    return [PolicyPoint(start=(t, t, t), similarity="none").to_policy(policy) for t in range(len(policy.tiers))]


def fast_path(policies, items, cassettes):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    texts = {(t, it.id): r.text for t, p in enumerate(policies) for it, r in replay_items(p, cassettes, items)}
    return time.perf_counter() - t0, texts


def vcrpy_routes(policies, items, cassette_for):  # type: ignore[no-untyped-def]
    """Route items through a router on a default httpx.Client while vcrpy (record_mode none) plays."""
    v, texts = make_vcr(record_mode="none"), {}
    t0 = time.perf_counter()
    for t, p in enumerate(policies):
        router = CascadeRouter.from_policy(p, client=httpx.Client(), api_keys=replay_keys(p))
        for group, path in cassette_for(items):
            with v.use_cassette(str(path)):
                for it in group:
                    router.reset_breakers()
                    texts[(t, it.id)] = router.route(list(it.messages), query_id=it.id).text
    return time.perf_counter() - t0, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="alpaca_eval")
    ap.add_argument("--subsets", default="50,100,200", help="item counts for the one-large-cassette runs")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds of every layout, at least 3 (3)")
    ap.add_argument("--root", help="workspace with the imported dataset (default: import into a temp dir)")
    args = ap.parse_args()
    policy, items, cassettes, _ = workspace(args.dataset, args.root)
    pols, n, nt = start_policies(policy), len(items), len(policy.tiers)
    ks = [int(x) for x in args.subsets.split(",")]
    want = fast_path(pols, items, cassettes)[1]
    bad: dict[str, int] = {}

    def check(key: str, got: dict[tuple[int, str], str]) -> None:
        bad[key] = max(bad.get(key, 0), sum(got[k] != want[k] for k in got))

    def fast() -> None:
        check("fast", fast_path(pols, items, cassettes)[1])

    def per_item() -> None:
        check(
            "per_item",
            vcrpy_routes(pols, items, lambda its: [([it], cassettes / cassette_name(it.id)) for it in its])[1],
        )

    with tempfile.TemporaryDirectory() as tmp:
        bigs = {}
        for k in ks:
            inter = [
                x
                for it in items[:k]
                for x in json.loads((cassettes / cassette_name(it.id)).read_text())["interactions"]
            ]
            bigs[k] = (Path(tmp) / f"big-{k}.json", len(inter))
            bigs[k][0].write_text(json.dumps({"version": 1, "interactions": inter}))

        def big(k: int) -> Callable[[], None]:
            def f() -> None:
                check(f"big{k}", vcrpy_routes(pols, items[:k], lambda its: [(its, bigs[k][0])])[1])

            return f

        times = interleaved({"fast": fast, "per_item": per_item, **{f"big{k}": big(k) for k in ks}}, args.repeat)

    def row(label: str, k: int, secs: list[float], note: str) -> list[str]:
        return [
            label,
            str(k),
            str(k * nt),
            spread(secs, "{:.2f}"),
            spread([x / (k * nt) * 1000 for x in secs], "{:.2f}"),
            note,
        ]

    rows = [
        row("indexed ReplayTransport, one cassette per item (ours)", n, times["fast"], f"{bad['fast']} answers differ"),
        row("vcrpy playback, one cassette per item", n, times["per_item"], f"{bad['per_item']} answers differ"),
    ]
    for k in ks:
        rows.append(
            row(f"vcrpy, ONE cassette of {k} items ({bigs[k][1]} interactions)", k, times[f"big{k}"],
                f"{bad[f'big{k}']} answers differ")
        )  # fmt: skip
    full = []  # per round: fit a*k^2 + b*k to that round's times and extrapolate to the whole set
    for r in range(args.repeat):
        ts = [times[f"big{k}"][r] for k in ks]
        coef = np.linalg.lstsq(np.array([[k * k, k] for k in ks], float), np.array(ts), rcond=None)[0]
        full.append(float(coef[0] * n * n + coef[1] * n))
    rows.append(row(f"vcrpy, ONE cassette of all {n} items", n, full, "extrapolated per round: fit a*k^2+b*k"))
    print(f"# replay of {args.dataset}: {n} items x {nt} tiers through the real CascadeRouter")
    print(
        f"machine: {machine()}; {args.repeat} interleaved rounds of every layout, min / median / max; warm OS file "
        "cache, fresh transport/vcrpy state per run (cassettes parsed each run);"
    )
    print("seconds = all requests (the set once per start tier), cassette loading included; ratios within each round\n")
    print(table(["layout", "items", "requests", "seconds", "ms per request", "note"], rows))
    print()

    def ratio(a: list[float], b: list[float], fmt: str) -> str:
        return spread([x / y for x, y in zip(a, b, strict=True)], fmt, "x")

    fast_med = statistics.median(times["fast"])
    ratios = [
        ["vcrpy one large cassette (extrapolated) / ours", ratio(full, times["fast"], "{:.0f}")],
        ["vcrpy per-item cassettes / ours", ratio(times["per_item"], times["fast"], "{:.1f}")],
        [
            "vcrpy one large cassette (extrapolated) / vcrpy per-item cassettes",
            ratio(full, times["per_item"], "{:.0f}"),
        ],
        [
            f"goal: whole set under 60 s with our layout (median {fast_med:.1f} s)",
            "met" if max(times["fast"]) < 60 else "MISSED",
        ],
    ]
    print(table(["ratio (min / median / max)", "value"], ratios))


if __name__ == "__main__":
    main()
