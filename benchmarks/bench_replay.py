"""Replay speed: our layout (one cassette per item, indexed transport) vs vcrpy playback.

Goal (issue 3): replaying the whole 805-item, 3-tier alpaca_eval set through the
real CascadeRouter takes under a minute. vcrpy matches each request against
every interaction of its cassette, so one large cassette is quadratic; this
script measures it on growing subsets and extrapolates to the full set.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
from _common import machine, table, workspace

from routerlab.cassettes import cassette_name, make_vcr, replay_items, replay_keys
from routerlab.router import CascadeRouter


def fast_path(policy, items, cassettes) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    n = sum(1 for _ in replay_items(policy, cassettes, items))
    assert n == len(items)
    return time.perf_counter() - t0


def vcrpy_per_item(policy, items, cassettes) -> float:  # type: ignore[no-untyped-def]
    v = make_vcr(record_mode="none")
    router = CascadeRouter.from_policy(policy, client=httpx.Client(), api_keys=replay_keys(policy))
    t0 = time.perf_counter()
    for it in items:
        with v.use_cassette(str(cassettes / cassette_name(it.id))):
            router.reset_breakers()
            router.route(list(it.messages))
    return time.perf_counter() - t0


def vcrpy_one_cassette(policy, items, cassettes, tmp: Path) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    inter = []
    for it in items:
        inter += json.loads((cassettes / cassette_name(it.id)).read_text())["interactions"]
    big = tmp / f"big-{len(items)}.json"
    big.write_text(json.dumps({"version": 1, "interactions": inter}))
    v = make_vcr(record_mode="none")
    router = CascadeRouter.from_policy(policy, client=httpx.Client(), api_keys=replay_keys(policy))
    t0 = time.perf_counter()
    with v.use_cassette(str(big)):
        for it in items:
            router.reset_breakers()
            router.route(list(it.messages))
    return time.perf_counter() - t0, len(inter)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="alpaca_eval")
    ap.add_argument("--subsets", default="50,100,200", help="item counts for the one-large-cassette runs")
    ap.add_argument("--root", help="workspace with the imported dataset (default: import into a temp dir)")
    args = ap.parse_args()
    policy, items, cassettes, _ = workspace(args.dataset, args.root)
    n = len(items)
    fast = fast_path(policy, items, cassettes)
    per_item = vcrpy_per_item(policy, items, cassettes)
    rows = [
        ["indexed transport, one cassette per item (ours)", n, f"{fast:.2f}", f"{fast / n * 1000:.2f}", "measured"],
        ["vcrpy playback, one cassette per item", n, f"{per_item:.2f}", f"{per_item / n * 1000:.2f}", "measured"],
    ]
    big_full = None
    with tempfile.TemporaryDirectory() as tmp:
        for k in (int(x) for x in args.subsets.split(",")):
            t, n_inter = vcrpy_one_cassette(policy, items[:k], cassettes, Path(tmp))
            big_full = t * (n / k) ** 2  # matching cost grows with cassette size: quadratic in total
            rows.append(
                [
                    f"vcrpy playback, one cassette of {k} items ({n_inter} interactions)",
                    k,
                    f"{t:.2f}",
                    f"{t / k * 1000:.2f}",
                    f"extrapolated to {n} items: {big_full:.0f} s",
                ]
            )
    print(f"# replay of {args.dataset} ({n} items, {len(policy.tiers)} tiers) through the real CascadeRouter")
    print(f"machine: {machine()}; each run once, warm file cache\n")
    print(table(["layout", "items", "seconds", "ms per item", "note"], rows))
    print()
    assert big_full is not None
    print(
        table(
            ["ratio", "value"],
            [
                ["vcrpy one large cassette (extrapolated) / ours", f"{big_full / fast:.0f}x"],
                ["vcrpy one cassette per item / ours", f"{per_item / fast:.1f}x"],
                ["ours: whole set under a minute?", "yes" if fast < 60 else "NO"],
            ],
        )
    )


if __name__ == "__main__":
    main()
