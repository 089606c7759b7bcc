"""Replay speed: our layout (one cassette per item, indexed transport) vs vcrpy playback.

Goal (issue 3): replaying the whole 805-item, 3-tier alpaca_eval set through the
real CascadeRouter takes under a minute with our layout. "The whole set" here is
every recorded interaction played once: the set is routed three times, with every
class starting at tier 0, 1 and 2 (no confidence check), so 3 x 805 requests.
vcrpy scans a cassette's interactions for each request (every matcher run on
every non-matching one), so one large cassette is quadratic: it is measured on
growing subsets (first k items' interactions merged into one JSON cassette in a
temp dir) and a*k^2 + b*k is fitted to extrapolate to the full set. Every
playback's answers are compared with the fast path's (collisions would show).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _common import machine, table, workspace

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
    ap.add_argument("--repeat", type=int, default=5, help="runs of the fast path (median reported)")
    ap.add_argument("--root", help="workspace with the imported dataset (default: import into a temp dir)")
    args = ap.parse_args()
    policy, items, cassettes, _ = workspace(args.dataset, args.root)
    pols, n, nt = start_policies(policy), len(items), len(policy.tiers)
    runs = [fast_path(pols, items, cassettes) for _ in range(args.repeat)]
    fast, want = statistics.median(r[0] for r in runs), runs[0][1]
    per_item, got = vcrpy_routes(pols, items, lambda its: [([it], cassettes / cassette_name(it.id)) for it in its])
    bad = sum(got[k] != want[k] for k in want)

    def row(label: str, k: int, secs: float, note: str) -> list[str]:
        return [label, str(k), str(k * nt), f"{secs:.2f}", f"{secs / (k * nt) * 1000:.2f}", note]

    rows = [
        row("indexed ReplayTransport, one cassette per item (ours)", n, fast, f"median of {args.repeat}"),
        row("vcrpy playback, one cassette per item", n, per_item, f"1 run; {bad} answers differ"),
    ]
    ks, ts = [int(x) for x in args.subsets.split(",")], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in ks:
            inter = [
                x
                for it in items[:k]
                for x in json.loads((cassettes / cassette_name(it.id)).read_text())["interactions"]
            ]
            big = Path(tmp) / f"big-{k}.json"
            big.write_text(json.dumps({"version": 1, "interactions": inter}))
            secs, got = vcrpy_routes(pols, items[:k], lambda its, big=big: [(its, big)])
            ts.append(secs)
            bad = sum(got[key] != want[key] for key in got)
            rows.append(
                row(
                    f"vcrpy, ONE cassette of {k} items ({len(inter)} interactions)",
                    k,
                    secs,
                    f"1 run; {bad} answers differ",
                )
            )
    coef = np.linalg.lstsq(np.array([[k * k, k] for k in ks], float), np.array(ts), rcond=None)[0]
    big_full = float(coef[0] * n * n + coef[1] * n)
    rows.append(row(f"vcrpy, ONE cassette of all {n} items", n, big_full, "extrapolated: fit a*k^2+b*k"))
    print(f"# replay of {args.dataset}: {n} items x {nt} tiers through the real CascadeRouter")
    print(f"machine: {machine()}; warm OS file cache, fresh transport/vcrpy state per run (cassettes parsed each run);")
    print("seconds = all requests (the set once per start tier), cassette loading included\n")
    print(table(["layout", "items", "requests", "seconds", "ms per request", "note"], rows))
    print()
    ratios = [
        ["vcrpy one large cassette (extrapolated) / ours", f"{big_full / fast:.0f}x"],
        ["vcrpy per-item cassettes / ours", f"{per_item / fast:.1f}x"],
        ["vcrpy one large cassette (extrapolated) / vcrpy per-item cassettes", f"{big_full / per_item:.0f}x"],
        [f"goal: whole set under 60 s with our layout ({fast:.1f} s)", "met" if fast < 60 else "MISSED"],
    ]
    print(table(["ratio", "value"], ratios))


if __name__ == "__main__":
    main()
