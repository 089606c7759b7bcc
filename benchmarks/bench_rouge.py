"""ROUGE-L: our fast path (routerlab.rouge.rouge_l_f) vs rouge-score's RougeScorer(["rougeL"], use_stemmer=True).

Goal (issue 4): at least 30x faster with identical scores, on real answer pairs
(AlpacaEval: gpt4_1106_preview's answer as reference vs another model's answer,
read from the public mirror, $ROUTERLAB_MIRROR). Cold = routerlab.rouge's
token and stem caches cleared before each run (modules already imported);
warm stems = stem cache kept from a previous run, token cache cleared (new texts
whose vocabulary was seen before, as in one outcome-table build). Every score
of every run is compared with RougeScorer's: mismatches must be 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import machine, table

from routerlab import rouge
from routerlab.data.datasets import fetch, get_dataset
from routerlab.data.paths import mirror_dir


def load(model: str) -> list[dict[str, str]]:
    ds, rel = get_dataset("alpaca_eval"), f"results/{model}/model_outputs.json"
    mirror = mirror_dir()
    f = next(f for f in ds.files if f.path == rel)
    path = mirror / ds.relpath(f) if mirror is not None else Path(fetch("alpaca_eval", progress=False)[rel])
    return list(json.loads(path.read_text(encoding="utf-8")))


def timed(fn, pairs, repeat, before=lambda: None):  # type: ignore[no-untyped-def]
    times, scores = [], []
    for _ in range(repeat):
        before()
        t0 = time.perf_counter()
        scores = [fn(a, b) for a, b in pairs]
        times.append(time.perf_counter() - t0)
    return statistics.median(times), scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200, help="answer pairs (at most 805)")
    ap.add_argument("--model", default="gpt-4o-mini-2024-07-18", help="the model compared with gpt4_1106_preview")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each implementation (median reported)")
    args = ap.parse_args()
    from rouge_score.rouge_scorer import RougeScorer

    ref, out = load("gpt4_1106_preview"), load(args.model)
    pairs = [(r["output"], o["output"]) for r, o in zip(ref, out, strict=True)][: args.pairs]
    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    scorer.score("warm up imports", "warming up imports")
    rouge.rouge_l_f("warm up imports", "warming up imports")
    t_ref, want = timed(lambda a, b: scorer.score(a, b)["rougeL"].fmeasure, pairs, args.repeat)

    def cold() -> None:
        rouge.clear_caches()

    t_cold, got_cold = timed(rouge.rouge_l_f, pairs, args.repeat, cold)
    t_warm, got_warm = timed(rouge.rouge_l_f, pairs, args.repeat, rouge.tokenize.cache_clear)
    n = len(pairs)

    def row(label: str, t: float, got: list[float] | None) -> list[str]:
        bad = "-" if got is None else str(sum(x != y for x, y in zip(want, got, strict=True)))
        return [label, f"{t:.3f}", f"{t / n * 1000:.3f}", f"{t_ref / t:.0f}x", bad]

    rows = [
        row("rouge_score RougeScorer(['rougeL'], use_stemmer=True)", t_ref, None),
        row("routerlab.rouge.rouge_l_f, cold caches", t_cold, got_cold),
        row("routerlab.rouge.rouge_l_f, warm stem cache", t_warm, got_warm),
    ]
    print(f"# ROUGE-L F on {n} real AlpacaEval pairs (gpt4_1106_preview vs {args.model})")
    print(f"machine: {machine()}; each: median of {args.repeat} runs over all pairs, imports done beforehand\n")
    print(table(["implementation", "total s", "ms per pair", "speed-up vs RougeScorer", "mismatching scores"], rows))
    cold()
    words = {w for a, b in pairs for w in rouge._NON_ALNUM.sub(" ", f"{a} {b}".lower()).split() if len(w) > 3}
    t0 = time.perf_counter()
    for w in words:
        rouge._stem(w)
    t_stem = time.perf_counter() - t0
    print(f"\nof the cold time, {t_stem:.3f} s is nltk's PorterStemmer on the {len(words)} distinct words (1 run)")
    verdict = {True: "met", False: "MISSED"}
    print(f"goal >= 30x: cold {verdict[t_ref / t_cold >= 30]}, warm stem cache {verdict[t_ref / t_warm >= 30]}")
    bad = sum(x != y for got in (got_cold, got_warm) for x, y in zip(want, got, strict=True))
    if bad:
        raise SystemExit(f"{bad} scores differ from rouge-score")


if __name__ == "__main__":
    main()
