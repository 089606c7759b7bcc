"""A million-item study end to end, once: packed cassettes, the outcome-table build, the sweep out of core.

Issue 15's goals include "1M items under 30 minutes on two cores" for the build. ``bench_build.py``
measures milliseconds per item in 3 interleaved rounds at up to a few thousand items and projects;
this script runs the projection's premise at full size, ONCE (one run takes about 45 minutes, so it
makes no min / median / max and says so): it is a check of the extrapolation, not a repeated
measurement.

1. A study of N items (default 1,000,000) made from a real one (mot_date by default): item i is a copy
   of item i mod 369 under a new id, every answer text of copy c marked with a line "(copy c)", so no
   text repeats and no memo helps across copies. Its cassettes are written in batches and packed
   (``pack_cassettes``) after each, as ``routerlab data import`` does above 10,000 items, so the disk
   never holds more than one batch loose. Not part of the build's time; its own time is printed.
2. ``build_outcomes`` of all N items on ``--workers`` processes (default: every core) into a fresh cache,
   the table left on disk (``load=False``), temperature variants left out. Seconds, ms per item, and
   the peak resident memory of this process and of the largest worker.
3. The study's default grid swept on its dev split from disk (DuckDB, item ranges), with the seconds and
   this process's peak memory; then the sweep of 4 random policies on 200 items of one range checked
   against the reference simulator (the router's own decision procedure) on those items.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import _marked, machine, table, workspace

from routerlab.data.cassettes import MANIFEST, cassette_name
from routerlab.data.packs import pack_cassettes, packed_names, read_cassette

PLACE = "@@COPY@@"  # survives both levels of JSON escaping unchanged, so a copy is one bytes.replace


def make_study(src: Path, items: list[Any], n: int, out: Path, batch: int) -> list[Any]:
    """``out``: ``n`` copies of ``items`` (marked per copy) in packed cassettes, with their manifest."""
    out.mkdir(parents=True)
    manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    templates = [_marked(read_cassette(src / cassette_name(it.id)), f"(copy {PLACE})\n") for it in items]
    plain = [read_cassette(src / cassette_name(it.id)) for it in items]
    hashes: dict[str, str] = {}
    made = []
    t0 = time.perf_counter()
    for i in range(n):
        j, c = i % len(items), i // len(items)
        new = replace(items[j], id=f"{items[j].id}~{c}")
        data = plain[j] if c == 0 else templates[j].replace(PLACE.encode(), str(c).encode())
        name = cassette_name(new.id)
        (out / name).write_bytes(data)
        hashes[name] = hashlib.sha256(data).hexdigest()
        made.append(new)
        if (i + 1) % batch == 0 or i + 1 == n:
            pack_cassettes(out)
            rate = (i + 1) / (time.perf_counter() - t0)
            print(f"  study: {i + 1:,} / {n:,} items written and packed ({rate:,.0f} items/s)", file=sys.stderr)
    manifest["cassette_sha256"] = hashes
    manifest.pop("evalset_sha256", None)
    (out / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return made


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    import numpy as np
    import pandas as pd

    from routerlab.consistency import difflib_similarity
    from routerlab.rouge import tokenize
    from routerlab.workbench import tablefiles
    from routerlab.workbench.outcomes import build_outcomes
    from routerlab.workbench.reference import simulate_reference
    from routerlab.workbench.scoring import applicable_scorers
    from routerlab.workbench.study import DEFAULT_SPLIT, SPLIT_SEED
    from routerlab.workbench.sweep import default_grid, split_three, summarize, sweep

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000, help="items in the study (default 1,000,000)")
    ap.add_argument("--dataset", default="mot_date", help="the real study the items are copied from")
    ap.add_argument("--workers", type=int, help="build processes (default: every core)")
    ap.add_argument("--batch", type=int, default=20_000, help="items written loose before each pack (20,000)")
    ap.add_argument("--root", help="workspace with the dataset imported (default: import into a temp dir)")
    ap.add_argument("--work", help="folder for the study and its tables (default: a temp dir, removed after)")
    args = ap.parse_args()

    policy, items, cassettes, _base = workspace(args.dataset, args.root)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rl-million-"))
    folder = work / "cassettes"
    try:
        t0 = time.perf_counter()
        made = make_study(cassettes, items, args.items, folder, args.batch)
        t_make = time.perf_counter() - t0
        size = folder_bytes(folder)
        files = sum(1 for _ in folder.rglob("*") if _.is_file())
        n_packed = len(packed_names(folder))
        scorers = applicable_scorers(items, [t.model for t in policy.tiers])
        difflib_similarity.cache_clear()
        tokenize.cache_clear()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        o = build_outcomes(
            made, policy, folder, scorers=scorers, cache_dir=work / "tables", progress=True, variants=False,
            workers=args.workers, load=False,
        )  # fmt: skip
        t_build = time.perf_counter() - t0
        rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rss_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        assert o.files is not None
        rows = tablefiles.count_rows(o.files[0])
        tables = sum(p.stat().st_size for p in (work / "tables").iterdir())

        _tune, _cal, test = split_three(o, DEFAULT_SPLIT, seed=SPLIT_SEED)
        dev = ~test
        grid = default_grid(o)
        pts = grid.points(o, mask=dev)
        t0 = time.perf_counter()
        df = sweep(o, pts, mask=dev, bootstrap=200)
        t_sweep = time.perf_counter() - t0
        rss_sweep = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        # the reference check: 4 random policies on items lo:lo+200, read whole into memory
        rng = random.Random(3)
        lo = rng.randrange(0, o.n_items - 200)
        mask = np.zeros(o.n_items, bool)
        mask[lo : lo + 200] = True
        chosen = rng.sample(pts, 4)
        fast = sweep(o, chosen, mask=mask, bootstrap=0, latency=True)
        sh = o.shard(lo, lo + 200)
        calls_p, samples_p = o.files
        samples = tablefiles.read_rows(samples_p, *sh.samples_rows)
        assert o.texts_path is not None  # the texts file's rows are the samples file's, in order
        samples["text"] = tablefiles.read_rows(o.texts_path, *sh.samples_rows, columns=["text"])["text"].to_numpy()
        part = replace(
            sh.table, calls=tablefiles.read_rows(calls_p, *sh.calls_rows), samples=samples, on_disk=False,
            files=None, texts_path=None,
        )  # fmt: skip
        ref = summarize(part, chosen, simulate_reference(part, chosen), bootstrap=0)
        lat = ["latency_p50_ms", "latency_p95_ms"]
        diff = [
            c for c in ref.columns
            if not (np.allclose(fast[c], ref[c], rtol=1e-9, atol=1e-6) if c in lat else
                    pd.Series(fast[c].to_numpy()).equals(pd.Series(ref[c].to_numpy())))
        ]  # fmt: skip
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    n = args.items
    print(f"# a {n:,}-item study ({args.dataset}'s items copied, texts marked per copy), ONE run")
    print(f"machine: {machine()}; one run, so no min / median / max: a check of bench_build's projection\n")
    print(table(["step", "figure"], [
        ["study: cassettes", f"{size / 1e9:,.1f} GB in {files:,} files ({n_packed:,} cassettes packed); "
                             f"written and packed in {t_make / 60:,.1f} min (not part of the build)"],
        ["build: processes", str(args.workers or "every core")],
        ["build: seconds", f"{t_build:,.0f} ({t_build / 60:,.1f} min)"],
        ["build: ms per item", f"{t_build / n * 1000:.2f}"],
        ["build: peak RSS, this process / largest worker", f"{rss_build:,.0f} MB / {rss_child:,.0f} MB "
                                                            f"(before: {rss0:,.0f} MB)"],
        ["table: calls rows, files on disk", f"{rows:,} rows, {tables / 1e9:,.2f} GB (calls, samples, texts)"],
        ["sweep: policies x dev items", f"{len(pts):,} x {int(dev.sum()):,}"],
        ["sweep: seconds (on disk, DuckDB ranges)", f"{t_sweep:,.1f}"],
        ["sweep: peak RSS of this process", f"{rss_sweep:,.0f} MB"],
        ["sweep: policies with exact p50/p95", f"{int(df['latency_p50_ms'].notna().sum()):,}"],
        ["reference check (4 policies x 200 items)", "identical" if not diff else "DIFFERS: " + ", ".join(diff)],
    ]))  # fmt: skip
    goal = t_build < 30 * 60
    print(
        f"\nGoal (issue 15): 1M items built in under 30 minutes on two cores: {t_build / 60:,.1f} min, "
        + ("met" if goal else "MISSED")
        + (f" (this run had {n:,} items, not 1,000,000)" if n != 1_000_000 else "")
        + "."
    )


if __name__ == "__main__":
    main()
