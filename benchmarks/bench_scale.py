"""The sweep at scale: seconds and peak memory against items (10^3 to 10^6) and policies (10^2 to 362,880).

Issue 15's goals: the 362,880-policy grid on 100k items in under 5 minutes; the default grid on 1M items
completes in under 10 minutes with peak memory under 8 GB; every fast path identical to the reference.

The items are synthetic, made from a real outcome table (mot_date's by default): each of N items is a
copy of a random recorded item (its every call: cost, usage, latency, samples, agreements, scores) given
a random complexity class, so all three classes are present. The policies:
- "default grid": :func:`~routerlab.workbench.sweep.default_grid` of that table;
- "full grid": 27 start mappings (every one, monotone or not) x 7 checked class subsets x 2 similarities
  x 8 x 8 thresholds x 3 sample settings (k=2; adaptive k drawing to 4 or to 6) x 5 caps = 362,880
  policies; "N of the full grid": a seeded random sample of it.

Each measurement runs in a fresh process (so its peak resident memory is its own): it builds the
synthetic table (not timed), then times one ``sweep`` of the policies with 200 bootstrap resamples
(the study's setting) and reads the process's peak RSS. Every row is --rounds interleaved rounds (at
least 3: each round runs every row once, in order), printed as min / median / max. After timing, each
process checks the sweep against the reference simulator (the router's own decision procedure) on a
sample: 4 random policies x 200 random items, the sweep of the whole table restricted to those items
(``mask``) against the reference's routes of the same items, summarised alike; it prints what differs.
"policies with exact p50/p95": the sweep's own latency columns (all policies up to 5e7 policy-items,
above that the Pareto frontier's, filled by a second pass that is part of the timed seconds).
"decompose=False" rows are the sweep without the per-class decomposition (every policy on every item),
for the ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import machine, spread, table, workspace

HERE = Path(__file__).resolve()

# (policies, items, how many of the full grid, decomposed, table on disk)
QUICK = [
    ("default", 1_000, None, True, False),
    ("default", 10_000, None, True, False),
    ("default", 100_000, None, True, False),
    ("default", 100_000, None, True, True),
    ("full", 10_000, 100, True, False),
    ("full", 10_000, 1_000, True, False),
    ("full", 10_000, 10_000, True, False),
    ("full", 10_000, 1_000, False, False),
]
FULL = [
    *QUICK[:4],
    ("default", 1_000_000, None, True, False),
    ("default", 1_000_000, None, True, True),
    ("default", 3_000_000, None, True, True),
    ("full", 100_000, 100, True, False),
    ("full", 100_000, 1_000, True, False),
    ("full", 100_000, 10_000, True, False),
    ("full", 100_000, 100_000, True, False),
    ("full", 100_000, 362_880, True, False),
    ("full", 100_000, 1_000, False, False),
]


def base_table(name: str, root: str) -> Any:
    from routerlab.workbench.outcomes import build_outcomes
    from routerlab.workbench.scoring import applicable_scorers

    policy, items, cassettes, base = workspace(name, root)
    scorers = applicable_scorers(items, [t.model for t in policy.tiers])
    return build_outcomes(items, policy, cassettes, scorers=scorers, cache_dir=base / "outcomes", progress=False)


def synthetic(o: Any, n: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """(table of n items, source item of each, class of each): copies of o's items, random classes."""
    import dataclasses

    import numpy as np
    import pandas as pd

    from routerlab.classifier import COMPLEXITY_CLASSES

    rng = np.random.default_rng(seed)
    src = rng.integers(0, o.n_items, n)
    cls = rng.integers(0, len(COMPLEXITY_CLASSES), n)
    arrays = o.dense().take(src)
    arrays.cls = cls
    items = pd.DataFrame(
        {
            "item_id": [f"s{i}" for i in range(n)],
            "complexity": np.asarray(COMPLEXITY_CLASSES, object)[cls],
            "class_index": cls,
            "position": np.arange(n),
        }
    )
    big = dataclasses.replace(o, items=items, variants={}, key=f"{o.key}-x{n}")
    big._dense = (big.calls, arrays)
    return big, src, cls


def disk_files(o: Any, n: int, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """The synthetic table of :func:`synthetic` (same seed: the same copies and classes) as real calls and
    samples Parquet files, written 20,000 items at a time (for the out-of-core rows; run in its own
    process, so the timed process's peak memory is its own)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from routerlab.classifier import COMPLEXITY_CLASSES

    files = (folder / f"x{n}-calls.parquet", folder / f"x{n}-samples.parquet")
    if all(f.exists() for f in files):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    src = rng.integers(0, o.n_items, n)
    cls = rng.integers(0, len(COMPLEXITY_CLASSES), n)
    names = np.asarray(COMPLEXITY_CLASSES, object)
    for src_table, f in zip((o.calls, o.samples), files, strict=True):
        pos = pd.Index(o.items["item_id"]).get_indexer(src_table["item_id"])
        order = np.argsort(pos, kind="stable")
        counts = np.bincount(pos, minlength=o.n_items)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        tmp = f.with_suffix(".tmp")
        writer = None
        for lo in range(0, n, 20_000):
            s = src[lo : lo + 20_000]
            c = counts[s]
            rows = order[np.repeat(starts[s], c) + (np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c))]
            part = src_table.iloc[rows].reset_index(drop=True)
            who = np.repeat(np.arange(lo, lo + len(s)), c)
            part["item_id"] = [f"s{i}" for i in who]
            if "complexity" in part:
                part["complexity"] = names[cls[who]]
            t = pa.Table.from_pandas(part, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema)
            writer.write_table(t.cast(writer.schema))
        assert writer is not None
        writer.close()
        tmp.replace(f)
    return files


def on_disk(o: Any, n: int, files: tuple[Path, Path], seed: int = 0) -> Any:
    """The table of :func:`disk_files` opened on disk (nothing of its rows read)."""
    import dataclasses

    import numpy as np
    import pandas as pd

    from routerlab.classifier import COMPLEXITY_CLASSES
    from routerlab.workbench import tablefiles

    rng = np.random.default_rng(seed)
    rng.integers(0, o.n_items, n)  # the source items (as in synthetic): only the classes are needed here
    cls = rng.integers(0, len(COMPLEXITY_CLASSES), n)
    items = pd.DataFrame(
        {
            "item_id": [f"s{i}" for i in range(n)],
            "complexity": np.asarray(COMPLEXITY_CLASSES, object)[cls],
            "class_index": cls,
            "position": np.arange(n),
        }
    )
    return dataclasses.replace(
        o, items=items, variants={}, key=f"{o.key}-x{n}-disk", calls=tablefiles.schema_frame(files[0]),
        samples=tablefiles.schema_frame(files[1]), files=files, on_disk=True,
    )  # fmt: skip


def sample_table(o: Any, src: Any, cls: Any, rows: Any) -> Any:
    """The items ``rows`` of the synthetic table as a real outcome table (their calls and samples copied
    from the source items, renamed and reclassed), for the reference simulator."""
    import dataclasses

    import numpy as np
    import pandas as pd

    from routerlab.classifier import COMPLEXITY_CLASSES

    ids = o.items["item_id"].to_numpy()
    with_text = o.samples.assign(text=o.sample_texts())  # the reference reads the answers themselves
    calls, samples = [], []
    by_call = o.calls.groupby("item_id", sort=False).indices
    by_sample = o.samples.groupby("item_id", sort=False).indices
    for r in rows:
        iid, cname = ids[src[r]], COMPLEXITY_CLASSES[cls[r]]
        c = o.calls.iloc[by_call[iid]].copy()
        c["item_id"], c["complexity"] = f"s{r}", cname
        calls.append(c)
        s = with_text.iloc[by_sample.get(iid, [])].copy()
        s["item_id"] = f"s{r}"
        samples.append(s)
    items = pd.DataFrame(
        {
            "item_id": [f"s{r}" for r in rows],
            "complexity": [COMPLEXITY_CLASSES[cls[r]] for r in rows],
            "class_index": [int(cls[r]) for r in rows],
            "position": np.arange(len(rows)),
        }
    )
    return dataclasses.replace(
        o, calls=pd.concat(calls, ignore_index=True), samples=pd.concat(samples, ignore_index=True), items=items,
        variants={}, key=f"{o.key}-sample", texts_path=None,
    )  # fmt: skip


def full_grid(o: Any) -> list[Any]:
    """The 362,880-policy grid (see the module docstring)."""
    import numpy as np

    from routerlab.classifier import COMPLEXITY_CLASSES
    from routerlab.workbench.outcomes import PICO
    from routerlab.workbench.sweep import PolicyPoint

    t = len(o.tiers)
    starts = list(itertools.product(range(t), repeat=3))
    subsets = [
        tuple(c for c, on in zip(COMPLEXITY_CLASSES, bits, strict=True) if on)
        for bits in itertools.product([0, 1], repeat=3)
        if any(bits)
    ]
    sims = [s for s in ("answer", "rougeL") if s in o.similarities][:2]
    levels = [round(float(x), 3) for x in np.linspace(0.3, 1.0, 8)]
    thresholds = list(itertools.product(levels, repeat=t - 1))
    ksets: list[tuple[int | None, float]] = [(None, 0.5), (4, 0.75), (6, 0.75)]
    worst = o.dense().s_worst.sum(axis=1)
    caps: list[Decimal | None] = [None] + [Decimal(int(np.quantile(worst, q))) / PICO for q in (0.25, 0.5, 0.75, 0.95)]
    return [
        PolicyPoint(start, True, sim, 2, cs, thr, cap, None, "worst_case", None, "first", km, share)
        for start, cs, sim, thr, (km, share), cap in itertools.product(starts, subsets, sims, thresholds, ksets, caps)
    ]


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from routerlab.workbench.decompose import plan
    from routerlab.workbench.reference import simulate_reference
    from routerlab.workbench.sweep import default_grid, summarize, sweep

    o = base_table(spec["dataset"], spec["root"])
    if spec.get("disk"):
        files = disk_files(o, spec["items"], Path(spec["root"]) / "scale-tables")
        big = on_disk(o, spec["items"], files)
        rng0 = np.random.default_rng(0)
        src = rng0.integers(0, o.n_items, spec["items"])
        cls = rng0.integers(0, 3, spec["items"])
    else:
        big, src, cls = synthetic(o, spec["items"])
    if spec["grid"] == "default":
        points = default_grid(big).points(big)
    else:
        points = full_grid(o)
        if spec["policies"] < len(points):
            points = random.Random(0).sample(points, spec["policies"])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    df = sweep(big, points, bootstrap=spec["bootstrap"], decompose=spec["decompose"])
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert len(df) == len(points)
    sims = sum(c["projections"] for c in plan(big, points)["classes"].values())
    # the reference check on a sample (not timed)
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(big.n_items, size=min(200, big.n_items), replace=False))
    chosen = random.Random(2).sample(points, min(4, len(points)))
    mask = np.zeros(big.n_items, bool)
    mask[rows] = True
    fast = sweep(big, chosen, mask=mask, bootstrap=0, decompose=spec["decompose"], latency=True)
    small = sample_table(o, src, cls, rows)
    ref = summarize(small, chosen, simulate_reference(small, chosen), bootstrap=0)
    lat = ["latency_p50_ms", "latency_p95_ms"]
    diff = []
    for col in ref.columns:
        a, b = fast[col].to_numpy(), ref[col].to_numpy()
        same = np.allclose(a, b, rtol=1e-9, atol=1e-6) if col in lat else pd.Series(a).equals(pd.Series(b))
        if not same:
            diff.append(col)
    return {
        "seconds": seconds,
        "peak_mb": peak,
        "before_mb": rss0,
        "policies": len(points),
        "sims": sims,
        "latency_rows": int(df["latency_p50_ms"].notna().sum()),
        "ref_diff": diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mot_date", help="the real outcome table the items are copied from")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (at least 3)")
    ap.add_argument("--full", action="store_true", help="the goal sizes: 1M items, 362,880 policies at 100k (long)")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples per sweep (default 200)")
    ap.add_argument("--root", help="workspace with the dataset imported (default: import into a temp dir)")
    ap.add_argument("--only", help="run only the rows whose items are in this comma-separated list")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--make-disk", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.make_disk:
        spec = json.loads(args.make_disk)
        disk_files(base_table(spec["dataset"], spec["root"]), spec["items"], Path(spec["root"]) / "scale-tables")
        return
    if args.rounds < 3:
        raise SystemExit(f"at least 3 interleaved rounds are needed for a min/median/max, got {args.rounds}")
    _policy, _items, _cassettes, root = workspace(args.dataset, args.root)
    base_table(args.dataset, str(root))  # build the outcome table once: the workers read its cache
    cases = FULL if args.full else QUICK
    if args.only:
        keep = {int(x) for x in args.only.split(",")}
        cases = [c for c in cases if c[1] in keep]
    for _grid, n, _p, _dec, disk in cases:
        if disk:  # write the table's files first, in a process of their own (not timed)
            spec0 = {"dataset": args.dataset, "root": str(root), "items": n}
            subprocess.run([sys.executable, str(HERE), "--make-disk", json.dumps(spec0)], check=True)
    got: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(cases))}
    for r in range(args.rounds):
        for i, (grid, n, p, dec, disk) in enumerate(cases):
            spec = {"dataset": args.dataset, "root": str(root), "grid": grid, "items": n, "policies": p or 0,
                    "decompose": dec, "bootstrap": args.bootstrap, "disk": disk}  # fmt: skip
            out = subprocess.run(
                [sys.executable, str(HERE), "--worker", json.dumps(spec)], capture_output=True, text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )  # fmt: skip
            if out.returncode != 0:
                raise SystemExit(f"round {r + 1}, {grid} grid, {n} items: the worker failed\n{out.stderr[-3000:]}")
            got[i].append(json.loads(out.stdout.strip().splitlines()[-1]))
            last = got[i][-1]
            print(
                f"round {r + 1}: {grid} grid, {n:,} items, {last['policies']:,} policies, decompose={dec}, "
                f"on disk={disk}: "
                f"{last['seconds']:.1f} s, peak {last['peak_mb']:,.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    rows = []
    for i, (grid, n, _p, dec, disk) in enumerate(cases):
        runs = got[i]
        pol = runs[0]["policies"]
        secs = [x["seconds"] for x in runs]
        diffs = sorted({c for x in runs for c in x["ref_diff"]})
        rows.append([
            f"{grid} grid" + ("" if grid == "default" or pol == 362_880 else " (sample)"), f"{n:,}", f"{pol:,}",
            "yes" if dec else "no", "disk (DuckDB)" if disk else "memory", f"{runs[0]['sims']:,}",
            spread(secs, "{:,.1f}"),
            spread([s / (pol * n) * 1e9 for s in secs], "{:,.1f}"), spread([x["peak_mb"] for x in runs], "{:,.0f}"),
            f"{runs[0]['latency_rows']:,}",
            "identical" if not diffs else "DIFFERS: " + ", ".join(diffs),
        ])  # fmt: skip
    print(f"# the sweep at scale ({args.dataset}'s items copied, random classes; {args.bootstrap} bootstrap resamples)")
    print(f"machine: {machine()}; {args.rounds} interleaved rounds, min / median / max; one fresh process per run\n")
    head = ["policies", "items", "n policies", "decomposed", "table in", "projections (sum over classes)", "seconds",
            "ns per policy-item", "peak RSS MB", "policies with exact p50/p95",
            "reference check (4 policies x 200 items)"]  # fmt: skip
    print(table(head, rows))
    ratios = []
    for i, (grid, n, p, dec, disk) in enumerate(cases):
        if not dec and (grid, n, p, True, disk) in cases:
            j = cases.index((grid, n, p, True, disk))
            rs = [a["seconds"] / b["seconds"] for a, b in zip(got[i], got[j], strict=True)]
            ratios.append([f"{p:,} of the full grid, {n:,} items", spread(rs, "{:,.1f}", "x")])
    if ratios:
        print()
        print(table(["undecomposed / decomposed sweep (same round)", "ratio"], ratios))
    goals = []
    for i, (grid, n, p, _dec, disk) in enumerate(cases):
        if disk:
            continue
        med = sorted(x["seconds"] for x in got[i])[len(got[i]) // 2]
        peak = max(x["peak_mb"] for x in got[i])
        if (grid, n, p) == ("full", 100_000, 362_880):
            goals.append(["362,880 policies on 100k items under 5 min", f"{med:,.0f} s",
                          "met" if med < 300 else "MISSED"])  # fmt: skip
        if (grid, n) == ("default", 1_000_000):
            ok = med < 600 and peak < 8192
            goals.append(["default grid on 1M items under 10 min, peak under 8 GB",
                          f"{med:,.0f} s, {peak:,.0f} MB", "met" if ok else "MISSED"])  # fmt: skip
    if goals:
        print()
        print(table(["goal (issue 15)", "median seconds, worst peak", "verdict"], goals))


if __name__ == "__main__":
    main()
