"""Plots of the cost/quality trade-off. Each function takes an ``ax`` and returns it; nothing is shown."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes

from routerlab.jsonio import atomic_write
from routerlab.workbench.study import Study

COST = "cost_per_1k_usd"
TIER_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e")


def plot_frontier(
    ax: Axes,
    sweep: pd.DataFrame,
    frontier: pd.DataFrame,
    *,
    quality: str,
    baselines: pd.DataFrame | None = None,
    mix: pd.DataFrame | None = None,
    oracle: dict[str, float] | None = None,
    chosen: pd.Series | None = None,
    highlight: pd.Series | None = None,
    certified: pd.Series | None = None,
    floor_quality: float | None = None,
    floor_label: str = "quality floor",
    title: str = "",
    quality_label: str | None = None,
    log_x: bool = True,
) -> Axes:
    """Every swept policy, the Pareto frontier with its CIs, and the honest baselines on the same axes."""
    q = f"quality_{quality}"
    ax.scatter(
        sweep[COST],
        sweep[q],
        s=6,
        color="#bbbbbb",
        alpha=0.5,
        label=f"swept policies ({len(sweep)})",
        zorder=1,
        linewidths=0,
    )
    if f"{q}_lo" in frontier:
        ax.fill_between(
            frontier[COST],
            frontier[f"{q}_lo"],
            frontier[f"{q}_hi"],
            step="post",
            color="#1f77b4",
            alpha=0.15,
            zorder=2,
            label="frontier 95% CI",
        )
    ax.step(frontier[COST], frontier[q], where="post", color="#1f77b4", lw=2, zorder=3, label="Pareto frontier")
    ax.scatter(frontier[COST], frontier[q], s=14, color="#1f77b4", zorder=4)
    if mix is not None and len(mix):
        ax.plot(mix[COST], mix["quality"], ls="--", color="#555555", lw=1.2, zorder=2, label="random mix of tiers")
    if baselines is not None:
        for i, (_, b) in enumerate(baselines.iterrows()):
            ax.scatter(
                [b[COST]],
                [b["quality"]],
                marker="s",
                s=60,
                color=TIER_COLORS[i % len(TIER_COLORS)],
                edgecolor="black",
                zorder=5,
                label=f"only {b['tier']}",
            )
    if oracle is not None:
        ax.scatter(
            [oracle[COST]],
            [oracle["quality"]],
            marker="*",
            s=180,
            color="gold",
            edgecolor="black",
            zorder=6,
            label="oracle",
        )
    if floor_quality is not None:
        ax.axhline(floor_quality, color="#d62728", ls=":", lw=1.2, zorder=2, label=floor_label)
    if chosen is not None:
        _mark(ax, chosen, q, "point-estimate choice", "#d62728")
    if certified is not None:
        _mark(ax, certified, q, "certified", "#2ca02c", below=False)
    if highlight is not None:
        _mark(ax, highlight, q, "current", "#9467bd")
    if log_x:
        positive = pd.concat([sweep[COST], frontier[COST]])
        if (positive > 0).all():
            ax.set_xscale("log")
    ax.set_xlabel("cost (USD per 1,000 queries)")
    ax.set_ylabel(quality_label or f"mean quality ({quality})")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return ax


def _mark(ax: Axes, row: pd.Series, q: str, name: str, color: str, *, below: bool = True) -> None:
    x, y = float(row[COST]), float(row[q])
    kw: dict[str, Any] = {}
    if f"{q}_lo" in row and f"{q}_hi" in row:
        kw["yerr"] = [[y - float(row[f"{q}_lo"])], [float(row[f"{q}_hi"]) - y]]
    ax.errorbar([x], [y], fmt="o", ms=9, color=color, mec="black", capsize=4, zorder=7, **kw)
    ax.annotate(
        f"{name}: ${x:.3g}/1k, {y:.3f}",
        (x, y),
        xytext=(-14, -26) if below else (-14, 22),
        textcoords="offset points",
        ha="right",
        fontsize=9,
        color=color,
        fontweight="bold",
        arrowprops={"arrowstyle": "-", "color": color},
    )


def plot_study(ax: Any, study: Study, *, title: str | None = None) -> Any:
    """The study's frontier, baselines, quality floor, point-estimate choice and certified choice on ``ax``
    (see :func:`plot_frontier`), all on the dev split."""
    from routerlab.workbench.sweep import evaluate

    q = f"quality_{study.scorer}"
    cert = None
    if study.certified is not None:
        cert = evaluate(study.outcomes, study.certified.choice.point, mask=study.dev, bootstrap=200)
    floor = study.choice.floor
    return plot_frontier(
        ax,
        study.sweep_dev,
        study.frontier,
        quality=study.scorer,
        baselines=study.baselines,
        mix=study.mix,
        oracle=study.oracle,
        chosen=study.choice.dev,
        certified=cert,
        floor_quality=floor * float(study.choice.premium_dev[q]),
        floor_label=f"floor: {floor:.0%} of all-premium",
        quality_label=study.quality_label,
        title=title or f"{study.name}: cost vs quality, dev split ({int(study.dev.sum())} queries)",
    )


def frontier_figure(study: Study, *, width: float = 9.0, height: float = 6.0) -> Any:
    """The frontier plot of a study as a matplotlib Figure (for notebooks)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    plot_study(ax, study)
    fig.tight_layout()
    return fig


def save_frontier_png(study: Study, path: str | os.PathLike[str]) -> Path:
    """Draw :func:`frontier_figure` and write it as a PNG atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = Path(path)
    fig = frontier_figure(study)
    try:
        atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return png
