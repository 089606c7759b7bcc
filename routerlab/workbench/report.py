"""The Markdown report of a study: ladder, baselines, frontier, chosen policy, dev and test metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from routerlab.data.evalset import evalset_sha256
from routerlab.data.paths import workspace_root
from routerlab.errors import WorkbenchError
from routerlab.jsonio import atomic_write_text
from routerlab.workbench.export import Choice, choose, export_policy
from routerlab.workbench.frontier import ORACLE_DEFINITION, price_quality_inversions
from routerlab.workbench.plots import save_frontier_png
from routerlab.workbench.study import SPLIT_SEED, Study, scorer_agreement, tier_table
from routerlab.workbench.sweep import absent_classes

if TYPE_CHECKING:
    from routerlab.workbench.audit import AuditResult

SCORER_TITLES = {"rougeL": "ROUGE-L", "exact": "exact match", "label": "the judge's label"}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, float):
        return f"{v + 0.0:.{digits}f}".replace("-0.0000", "0.0000") if abs(v) < 0.5 * 10**-digits else f"{v:.{digits}f}"
    return str(v)


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c], digits) for c in cols) + " |")
    return "\n".join(lines)


def render_report(study: Study, *, policy_path: Path, png_name: str) -> str:
    o = study.outcomes
    q = f"quality_{study.scorer}"
    ch = study.choice
    m = ch.metrics()
    calls = o.calls
    est_usage = bool(calls["usage_estimated"].any())
    est_latency = bool(calls["latency_estimated"].any())
    out: list[str] = []
    out.append(f"# {study.name}: what routing costs and what it keeps\n")
    out.append(
        f"{o.n_items} queries, split (seed {SPLIT_SEED}, stratified by complexity class) into "
        f"{int(study.dev.sum())} dev and {int(study.test.sum())} test. Policies are swept and chosen on dev; "
        f"the chosen policy's test numbers are reported beside its dev numbers. Quality is "
        f"**{study.quality_label}** (`{study.scorer}`); 95% CIs are bootstrap percentiles over queries.\n"
    )
    notes = []
    if est_usage:
        notes.append(
            "token counts of these imported outputs are estimated with the cl100k_base encoding "
            "(the outputs carry none), so costs are estimates at list prices"
        )
    if est_latency:
        notes.append("latencies are estimated (400 ms + 15 ms per output token): the outputs record no timing")
    if study.scorer_coverage:
        notes.append(study.scorer_coverage)
    unseen = absent_classes(o, study.dev)
    if unseen:
        notes.append(
            f"no dev query is {' or '.join(unseen)}, so the swept and exported policies start those classes at the "
            "final tier: there is no evidence to route them cheaper"
        )
    if study.scorer_warning:
        out.append(f"**Warning: {study.scorer_warning}.** `routerlab export` refuses this study unless forced.\n")
    if notes:
        out.append("Caveats: " + "; ".join(notes) + ".\n")
    out.append("## The ladder and each tier alone (dev split)\n")
    out.append(_table(tier_table(study), 4) + "\n")
    inv = price_quality_inversions(study.baselines)
    if inv:
        pairs = ", ".join(f"{a} scores higher than the pricier {b}" for a, b in inv)
        out.append(
            f"**The scorer ranks tiers against their price order**: {pairs}. Under this scorer a cheaper "
            f"model is not a worse one, so 'share of premium quality' can exceed 100% and the premium tier "
            f"is not a ceiling.\n"
        )
    out.append("## Baselines on the same axes\n")
    prem = study.baselines.iloc[-1]
    out.append(
        f"- All-premium ({prem['tier']}): ${prem['cost_per_1k_usd']:.4f} per 1k queries, quality {prem['quality']:.4f}."
    )
    out.append(
        f"- Oracle ({ORACLE_DEFINITION}): "
        f"${study.oracle['cost_per_1k_usd']:.4f} per 1k, quality {study.oracle['quality']:.4f}, "
        f"premium calls {study.oracle['premium_call_share']:.1%}."
    )
    fo = study.metrics.set_index("metric")["value"].get("floor_oracle_cost_per_1k_usd")
    if fo is not None:
        out.append(
            f"- Floor-constrained oracle: the cheapest mix of recorded answers whose mean quality is "
            f"{ch.floor:.0%} of all-premium's, queries no answer solves left unanswered at no cost: "
            f"${_fmt(fo)} per 1k. No policy at that floor can cost less, so a share of its savings is at most 1."
        )
    out.append(
        f"- Random mix of tiers: the upper convex hull of the single tiers (dashed in the plot), "
        f"{len(study.mix)} points.\n"
    )
    out.append(f"![frontier]({png_name})\n")
    out.append("## Chosen policy: two choosers side by side\n")
    out.append(_choosers(study, policy_path) + "\n")
    out.append(_floors(study) + "\n")
    ex = study.exported
    m = ex.metrics()
    mix = m["test"]["tier_mix"]
    out.append(
        f"Test-split tier mix of the {CHOOSER_WORDS[ex.chooser]} choice: "
        + ", ".join(f"{t} {s:.1%}" for t, s in zip(o.tiers, mix, strict=False))
        + f"; estimated latency p50 {m['test']['latency_p50_ms']:.0f} ms, p95 "
        f"{m['test']['latency_p95_ms']:.0f} ms.\n"
    )
    out.append("## Metrics (dev split, whole sweep)\n")
    out.append(
        "Three-tier generalisations: 'weak' is the cheapest tier alone, 'strong' the premium tier alone; "
        "PGR = (quality - weak) / (strong - weak); APGR is the area under the best PGR as a function of "
        "the premium-call share (or of cost as a share of all-premium cost); CPT(x%) is the smallest such "
        "share that reaches PGR x%, interpolated between frontier points as RouteLLM's evaluation does "
        "(Ong et al. 2024). A metric reads n/a where it cannot mean what its name says; the note says why.\n"
    )
    mt = study.metrics.copy()
    out.append(_table(mt[[c for c in ("metric", "value", "lo", "hi", "unit", "note") if c in mt.columns]], 4) + "\n")
    # How the scorer in use (or, when the judge's label is in use, ROUGE-L) agrees with the judge.
    pair = (study.scorer, "label") if study.scorer != "label" else ("rougeL", "label")
    agree = scorer_agreement(study, pair[1], scorer=pair[0])
    if agree is not None:
        name = SCORER_TITLES.get(pair[0], pair[0])
        out.append(f"## How {name} agrees with the judge\n")
        out.append(
            f"Spearman rank correlation between {name} (`{pair[0]}`) and the judge's label (`label`): "
            f"{agree['item_level']:.3f} over every single answer (item level), {agree['policy_level']:.3f} "
            f"over the swept policies' dev means (policy level).\n"
        )
    out.append("## Pareto frontier (dev split)\n")
    cols = ["policy_id", "label", "cost_per_1k_usd", q, f"{q}_lo", f"{q}_hi", "escalation_rate", "premium_call_share"]
    fr = study.frontier[[c for c in cols if c in study.frontier.columns]]
    if len(fr) > 30:
        out.append(f"{len(fr)} policies; every third shown.\n")
        fr = fr.iloc[::3]
    out.append(_table(fr, 4) + "\n")
    return "\n".join(out)


CHOOSER_WORDS = {"certified": "certified", "point": "point-estimate"}


def _ci(v: list[float] | None) -> str:
    return "n/a" if v is None else f"[{v[0]:.1%}, {v[1]:.1%}]"


def _met_words(ch: Choice) -> str:
    t = ch.metrics()["test"]
    share = t["quality_share_of_premium"]
    if share is None:
        return "the share of premium quality is undefined on test (premium scores 0)"
    met = ch.meets_floor("test")
    return (
        f"on test it kept {share:.1%} {_ci(t['quality_share_ci95'])} of all-premium quality, "
        + (f"meeting the {ch.floor:.0%} floor" if met else f"**below the {ch.floor:.0%} floor**")
        + f", at a cost reduction of {_fmt(t['cost_reduction_vs_premium'] * 100, 1)}% "
        f"{_ci(t['cost_reduction_ci95'])}"
    )


def _choosers(study: Study, policy_path: Path) -> str:
    ch = study.choice
    cert = study.certified
    lines = [
        f"- **Point estimate** (no guarantee): the cheapest swept policy whose dev quality is at least "
        f"{ch.floor:.0%} of all-premium: `{ch.label()}`; {_met_words(ch)}.",
    ]
    if cert is not None:
        lines.append(
            f"- **Certified** (Learn then Test, bound `{cert.bound}`, delta {cert.delta:g}; order from "
            f"{cert.n_tune} tune queries, tested on {cert.n_calibrate} calibration queries): "
            f"`{cert.choice.label()}`; {_met_words(cert.choice)}."
        )
        lines.append(f"\n{cert.summary()}")
    rows = []
    for c in [ch] + ([cert.choice] if cert is not None else []):
        m = c.metrics()
        for split in ("dev", "test"):
            d = m[split]
            rows.append(
                {
                    "chooser": CHOOSER_WORDS[c.chooser],
                    "split": c.dev_split if split == "dev" else "test",
                    "queries": d["n_items"],
                    "quality": d["quality"],
                    "share of premium quality": d["quality_share_of_premium"],
                    "share 95% CI": _ci(d["quality_share_ci95"]),
                    "USD per 1k": d["cost_per_1k_usd"],
                    "cost reduction": d["cost_reduction_vs_premium"],
                    "reduction 95% CI": _ci(d["cost_reduction_ci95"]),
                    "premium-call share": d["premium_call_share"],
                }
            )
    lines.append("\n" + _table(pd.DataFrame(rows), 4))
    lines.append("\nCIs are paired bootstrap percentiles: the policy and all-premium resampled query by query.")
    if cert is not None and len(cert.sequence):
        seq = cert.sequence.head(15)
        cols = ["policy", "tune_share", "calibrate_share", "calibrate_cost_per_1k_usd", "p_value", "certified"]
        lines.append(
            "\nThe tested sequence (the tune split's frontier, priciest first; testing stops at the first "
            f"p-value above {cert.delta:g}):\n\n" + _table(seq[[c for c in cols if c in seq.columns]], 4)
        )
    refusal = study.export_refusal()
    if refusal is None:
        lines.append(
            f"\nExported: the {CHOOSER_WORDS[study.exported.chooser]} choice, to `{policy_path.name}` "
            "(load it with `routerlab.load_policy`)."
        )
    else:
        lines.append(
            f"\nNot exported: {refusal.rstrip('.')}. `routerlab export --force` writes the point-estimate "
            "choice anyway."
        )
    return "\n".join(lines)


def _floors(study: Study) -> str:
    """The cheapest dev policy at several quality floors, with its test numbers: the trade-off in one table."""
    rows = []
    for floor in (0.8, 0.85, 0.9, 0.95, 1.0):
        c = choose(
            study.outcomes,
            study.sweep_dev,
            scorer=study.scorer,
            floor=floor,
            dev=study.dev,
            test=study.test,
            bootstrap=200,
        )
        m = c.metrics()
        rows.append(
            {
                "floor (share of premium)": f"{floor:.0%}",
                "policy": c.label(),
                "dev quality share": m["dev"]["quality_share_of_premium"],
                "test quality share": m["test"]["quality_share_of_premium"],
                "test share 95% CI": _ci(m["test"]["quality_share_ci95"]),
                "met on test": "yes" if c.meets_floor("test") else "**no**",
                "test cost reduction": m["test"]["cost_reduction_vs_premium"],
            }
        )
    return "Other floors, point-estimate chooser (chosen on dev, measured on test):\n\n" + _table(pd.DataFrame(rows), 4)


def export_study(
    study: Study, path: str | os.PathLike[str], *, date: str | None = None, force: bool = False
) -> tuple[Path, Choice]:
    """Write the study's chosen policy (:attr:`Study.exported`) to ``path`` with its provenance (eval set,
    split, metrics, how it was chosen). Refuses (:class:`WorkbenchError`) when :meth:`Study.export_refusal`
    says so, unless ``force``: then a certification that failed writes the point-estimate choice."""
    refusal = study.export_refusal()
    if refusal is not None and not force:
        raise WorkbenchError(f"{study.name}: {refusal.rstrip('.')}. Not exporting; pass --force to export anyway.")
    choice = study.exported
    if refusal is not None and study.scorer_warning is None:
        choice = study.choice  # forced past a failed certification: the point estimate, labelled as such
    export_policy(
        study.outcomes,
        choice,
        path,
        evalset_sha256=evalset_sha256(study.evalset_path),
        dataset=study.name,
        split_seed=SPLIT_SEED,
        date=date,
        certified=study.certified,
    )
    return Path(path), choice


def write_outputs(
    study: Study,
    *,
    reports_dir: str | os.PathLike[str] | None = None,
    policies_dir: str | os.PathLike[str] | None = None,
    date: str | None = None,
    audit: AuditResult | None = None,
    smarter: bool = True,
) -> dict[str, Path]:
    """``reports/<name>/frontier.png``, ``reports/<name>/report.md`` and ``policies/<name>.json`` (with
    ``audit``: also ``audit.png``, ``audit.csv`` and an audit section in the report; with ``smarter``, the
    default, ``escalation.png`` and the section comparing majority answers, adaptive k and the learned start
    tier with the fixed check, see :func:`smarter_section`).

    A study that ``routerlab export`` refuses (a scorer that cannot tell the tiers apart, or a certified
    chooser that certified nothing cheaper than all-premium) gets its report, saying why, but no policy
    file: the returned ``policy`` is then the path not written."""
    base = workspace_root()
    rdir = Path(reports_dir) if reports_dir is not None else base / "reports" / study.name
    pdir = Path(policies_dir) if policies_dir is not None else base / "policies"
    rdir.mkdir(parents=True, exist_ok=True)
    pdir.mkdir(parents=True, exist_ok=True)
    policy_path = pdir / f"{study.name}.json"
    if study.export_refusal() is None:
        export_study(study, policy_path, date=date)
    png = save_frontier_png(study, rdir / "frontier.png")
    md = rdir / "report.md"
    text = render_report(study, policy_path=policy_path, png_name=png.name)
    out = {"report": md, "frontier": png, "policy": policy_path}
    if audit is not None:
        from routerlab.workbench.audit import save_audit_png

        out["audit"] = save_audit_png(audit, rdir / "audit.png", title=f"{study.name}: {audit.splits} re-splits")
        atomic_write_text(rdir / "audit.csv", audit.runs.to_csv(index=False))
        text += "\n" + audit_section(audit, png_name="audit.png")
    if smarter and len(study.outcomes.tiers) > 1:
        text += "\n" + smarter_section(study, png_path=rdir / "escalation.png")
        out["escalation"] = rdir / "escalation.png"
    atomic_write_text(md, text)
    return out


def audit_section(audit: AuditResult, *, png_name: str | None) -> str:
    from routerlab.workbench.audit import audit_table

    """The audit as a report section: how both choosers did over re-splits, in a table, words and a plot."""
    t, c, te = audit.split
    lines = [
        "## Audit: the whole choice repeated over random re-splits\n",
        f"{audit.splits} seeded re-splits ({t:.0%} tune, {c:.0%} calibrate, {te:.0%} held out; the point "
        f"chooser uses tune + calibrate), floor {audit.floor:.0%}, delta {audit.delta:g}, bound `{audit.bound}`. "
        "'Hindsight best' is the cheapest policy of the grid that met the floor on the held-out part; rates "
        "have Clopper-Pearson 95% CIs.\n",
        _table(audit_table(audit), 4) + "\n",
        audit.words().replace("\n", "\n\n") + "\n",
    ]
    if png_name:
        lines.append(f"![audit]({png_name})\n")
    return "\n".join(lines)


def _share(v: Any) -> str:
    return "n/a" if v is None or v != v else f"{v:.1%}"


def smarter_section(study: Study, *, png_path: Path | None = None, bootstrap: int = 500) -> str:
    """Majority answers, adaptive k and the learned start tier beside the fixed two-sample check (chosen on
    dev at 90% and 95% floors, measured on test), and the learned start router against the keyword
    classifier, a random router and the oracle (RouteLLM's APGR and CPT on test)."""
    from routerlab.workbench.escalation import FAMILIES, adaptive_settings, compare_escalation, save_escalation_png
    from routerlab.workbench.learn import compare_start_routers, train_start_router

    o = study.outcomes
    lines = ["## Smarter escalation: majority answers, adaptive k, sample temperature, a learned start tier\n"]
    if len(o.tiers) < 2:
        return ""
    table, frontiers = compare_escalation(
        o, scorer=study.scorer, dev=study.dev, test=study.test, tune=study.tune, bootstrap=bootstrap
    )
    ad = adaptive_settings(o)
    lines.append(
        "Nested policy grids, each a superset of the one above it: today's fixed two-sample check; plus the "
        "samples' majority (medoid) answer; plus adaptive k"
        + (
            f" (after two disagreeing samples draw more, up to {', '.join(sorted({str(k) for k, _ in ad}))} "
            f"samples, accepting once {' or '.join(sorted({f'{s:.0%}' for _, s in ad}))} of them back the answer)"
            if ad
            else " (not recorded for this study: no draws beyond two samples)"
        )
        + (
            "; plus the sample temperature (the checks above with a tier's samples at each other temperature "
            "recorded: "
            + "; ".join(
                ", ".join(f"{o.tiers[i]} T={t:g}" for i, t in enumerate(vec) if t != o.temperatures[i])
                for vec in sorted(o.variants)
            )
            + f", against {', '.join(f'{o.tiers[i]} T={t:g}' for i, t in enumerate(o.temperatures))})"
            if o.variants
            else "; plus the sample temperature (only one recorded per tier here: no such family)"
        )
        + "; plus a learned start tier (a logistic model on hashed n-grams, trained on the tuning split, "
        "picks each query's start tier). "
        f"Each family's cheapest policy at the floor on the {table.attrs['split']} split "
        f"({table.attrs['items']} queries"
        + (", which the learned router was not trained on" if table.attrs["split"] == "calibrate" else "")
        + "), measured on test; 95% paired bootstrap intervals.\n"
    )
    shown = table.assign(
        **{
            "floor": table["floor"].map(lambda f: f"{f:.0%}"),
            "test quality share": table["test quality share"].map(_share),
            "share CI": table["share CI"].map(_ci),
            "test cost reduction": table["test cost reduction"].map(_share),
            "reduction CI": table["reduction CI"].map(_ci),
            "floor met on test": table["floor met on test"].map(lambda b: "yes" if b else "**no**"),
        }
    )
    lines.append(_table(shown, 4) + "\n")
    words = []
    for floor in sorted(table["floor"].unique()):
        at = table[table["floor"] == floor].set_index("family")
        base = at.loc[FAMILIES[0]]
        if not base["floor met on test"]:
            words.append(f"at {floor:.0%}, the fixed check's choice missed the floor on test")
        for fam in at.index[1:]:
            r = at.loc[fam]
            d = r["test cost reduction"] - base["test cost reduction"]
            verdict = (
                "the same policy as the fixed check" if r["policy"] == base["policy"]
                else f"{'more' if d > 0 else 'less'} saving on test ({_share(r['test cost reduction'])} "
                f"{_ci(r['reduction CI'])} against {_share(base['test cost reduction'])} {_ci(base['reduction CI'])})"
            )  # fmt: skip
            if not r["floor met on test"]:
                verdict += ", but it missed the floor on test"
            words.append(f"at {floor:.0%}, {fam}: {verdict}")
    if len(table["family"].unique()) == 1:
        words.append(
            "only the fixed family applies: this study has no samples to vote on, draw from or re-sample at "
            "another temperature"
        )
    lines.append(
        "In words: " + "; ".join(words) + ". Overlapping intervals mean the test split cannot tell them apart.\n"
    )
    if png_path is not None:
        save_escalation_png(
            frontiers, png_path, quality=f"quality_{study.scorer}", split=table.attrs["split"],
            title=f"{study.name}: frontier of each family ({table.attrs['split']} split)",
        )  # fmt: skip
        lines.append(f"![escalation]({png_path.name})\n")
    # the learned start router alone, as RouteLLM evaluates routers
    if "request_text" in o.items and study.tune is not None:
        tune = study.tune
        lines.append("### The learned start tier against the keyword classifier (test split)\n")
        try:
            router = train_start_router(o, study.scorer, mask=tune)
            cmp = compare_start_routers(o, router, study.scorer, mask=study.test, bootstrap=bootstrap)
        except WorkbenchError as e:
            lines.append(f"Not compared: {e}.\n")
            return "\n".join(lines)
        lines.append(
            f"RouteLLM's two-model setting: weak = {o.tiers[0]}, strong = {o.tiers[-1]}, each answering with its "
            f"single call; a router sends its most strong-looking queries to the strong model. APGR is the area "
            f"under PGR against the strong-call share; CPT(50%) the strong-call share that recovers half the "
            f"quality gap. Trained on {int(tune.sum())} tuning queries, measured on {int(cmp['items'].iloc[0])} "
            f"test queries (weak quality {cmp.attrs['weak_quality']:.4f}, strong {cmp.attrs['strong_quality']:.4f}); "
            f"{cmp.attrs['bootstrap']} bootstrap resamples. The keyword classifier ranks only by its three "
            "classes (ties sent together); the random router is one seeded draw.\n"
        )
        ct = pd.DataFrame(
            {
                "router": cmp["router"],
                "APGR": cmp["APGR"].round(3),
                "APGR 95% CI": [f"[{a:.3f}, {b:.3f}]" for a, b in zip(cmp["APGR_lo"], cmp["APGR_hi"], strict=True)],
                "CPT(50%)": [_share(v) for v in cmp["CPT50"]],
                "CPT 95% CI": [
                    f"[{_share(a)}, {_share(b)}]" for a, b in zip(cmp["CPT50_lo"], cmp["CPT50_hi"], strict=True)
                ],
            }
        )
        lines.append(_table(ct, 4) + "\n")
        apgr_of = dict(zip(cmp["router"], cmp["APGR"].astype(float), strict=True))
        la, ka, ra = (apgr_of[n] for n in ("learned start router", "keyword classifier", "random router"))
        lo, hi = float(cmp["APGR_lo"].iloc[0]), float(cmp["APGR_hi"].iloc[0])
        lines.append(
            f"In words: the learned start tier's APGR is {la:.3f} [{lo:.3f}, {hi:.3f}] against the keyword "
            f"classifier's {ka:.3f} and the random router's {ra:.3f}; "
            + ("its interval lies above 0.5 (random mixing)" if lo > 0.5 else "its interval includes 0.5: on this "
               "test split it is not distinguishable from random mixing")
            + f". Its scikit-learn fit and the pure-Python evaluation production runs differ by at most "
            f"{router.trained['max_abs_diff_vs_sklearn']:.1e} in probability.\n"
        )  # fmt: skip
    return "\n".join(lines)
