"""The interactive policy explorer (ipywidgets) for JupyterLab.

Sliders for each non-final tier's consistency threshold, a similarity
selector, a start-tier selector per complexity class, a cascade toggle, a
cost cap, which answer a check returns (first sample or majority), adaptive
k (draw up to k_max samples, stopping at a share), and, given a learned start
router, a toggle and a start threshold per non-final tier. Every change
re-evaluates that one policy on the outcome table
(:func:`routerlab.workbench.sweep.evaluate`, milliseconds; not a re-sweep),
moves the highlighted point on the frontier plot and refreshes the numbers
table.

The plot is drawn once; a move restores that rendered background, draws only
the highlighted point on it and sends the PNG as the new value of an
``ipywidgets.Image`` (one comm message), instead of re-rendering the whole
figure and replacing an output area.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation, localcontext
from typing import Any

import ipywidgets as w
import pandas as pd

from routerlab.classifier import COMPLEXITY_CLASSES
from routerlab.learned import StartRouter
from routerlab.workbench.plots import plot_study
from routerlab.workbench.study import Study
from routerlab.workbench.sweep import NO_CHECK, PolicyPoint, evaluate, point_by_id

_PICO_USD = Decimal("1e-12")


def _slider(value: float, top: float, description: str, disabled: bool) -> Any:
    """A threshold slider from 0 to ``top`` in steps of 0.01, updating on release."""
    return w.FloatSlider(
        value=value, min=0.0, max=top, step=0.01, description=description, continuous_update=False,
        readout_format=".2f", style={"description_width": "initial"}, disabled=disabled,
    )  # fmt: skip


class Explorer:
    """Build with a :class:`~routerlab.workbench.Study`; display ``explorer.widget``."""

    def __init__(
        self,
        study: Study,
        *,
        start: PolicyPoint | None = None,
        plot: bool = True,
        router: StartRouter | None = None,
    ) -> None:
        self.study = study
        o = study.outcomes
        pt = start or default_start(study)
        self.router = router if router is not None else pt.router
        has_samples = bool(o.ks)
        sims = [*o.similarities, NO_CHECK] if has_samples else [NO_CHECK]
        self.similarity = w.Dropdown(
            options=sims, value=pt.similarity if pt.similarity in sims else sims[0], description="similarity"
        )
        self.thresholds = [
            _slider(pt.thresholds[i] if pt.thresholds else 0.75, 1.0, f"threshold {o.tiers[i]}", not has_samples)
            for i in range(len(o.tiers) - 1)
        ]
        tier_opts = [(name, i) for i, name in enumerate(o.tiers)]
        self.starts = [
            w.Dropdown(options=tier_opts, value=pt.start[i], description=f"{c} starts at")
            for i, c in enumerate(COMPLEXITY_CLASSES)
        ]
        for d in self.starts:
            d.style = {"description_width": "initial"}
        self.cascade = w.Checkbox(value=pt.cascade, description="cascade (escalate on doubt)")
        self.cap = w.Text(
            value="" if pt.cap_usd is None else str(pt.cap_usd),
            description="cost cap USD",
            placeholder="none",
            continuous_update=False,
        )
        self.k = pt.k if pt.k in o.ks else (o.ks[0] if o.ks else 2)
        self.classes = pt.classes
        wide = {"description_width": "initial"}
        self.answer = w.Dropdown(
            options=[("first sample", "first"), ("majority (medoid)", "majority")],
            value=pt.answer,
            description="check returns",
            style=wide,
            disabled=not has_samples,
        )
        top = o.dense().k_max if self.k == 2 else 2
        draws = [("no (fixed k)", 0)] + [(f"up to {m} samples", m) for m in range(3, top + 1)]
        self.k_max = w.Dropdown(
            options=draws,
            value=pt.k_max if pt.k_max and pt.k_max <= top else 0,
            description="adaptive k",
            style=wide,
            disabled=top <= 2,
        )
        self.stop_share = w.FloatSlider(
            value=pt.stop_share, min=0.34, max=1.0, step=0.01, description="stop at share",
            continuous_update=False, readout_format=".2f", style=wide, disabled=top <= 2,
        )  # fmt: skip
        self.use_router = w.Checkbox(
            value=pt.router is not None, description="learned start tier", disabled=self.router is None
        )
        self.router_thresholds = [
            _slider(
                pt.router_thresholds[i] if pt.router_thresholds else 0.5,
                1.01,
                f"start at {o.tiers[i]} if p >=",
                self.router is None,
            )
            for i in range(len(o.tiers) - 1)
        ]
        self.table = w.HTML()
        self.table.add_class("routerlab-explorer-table")
        self.status = w.HTML()
        self.image = w.Image(format="png")
        self.image.add_class("routerlab-explorer-plot")
        self.current: pd.Series | None = None
        self._fig: Any = None
        self._marker: Any = None
        self._background: Any = None
        controls = [self.similarity, *self.thresholds, *self.starts, self.cascade, self.cap, self.answer]
        controls += [self.k_max, self.stop_share]
        if self.router is not None:
            controls += [self.use_router, *self.router_thresholds]
        for c in controls:
            c.observe(self._changed, names="value")
        self.widget = w.HBox(
            [w.VBox([*controls, self.status, self.table], layout=w.Layout(min_width="380px")), self.image]
        )
        if plot:
            self._draw()
        self.update()

    def point(self) -> PolicyPoint:
        """The policy the controls describe."""
        cap_text = self.cap.value.strip()
        self.cap_problem = ""
        try:
            cap = Decimal(cap_text) if cap_text else None
        except InvalidOperation:
            cap = None
        if cap is not None and (not cap.is_finite() or cap < 0):
            cap = None
        if cap is None and cap_text:
            self.cap_problem = f"cost cap {cap_text!r} is not an amount of USD &ge; 0: no cap applied"
        elif cap is not None and int(cap.as_tuple().exponent) < -12:
            with localcontext(prec=60):  # the sweep counts in 1e-12 USD: round down, at any size
                cap = cap.quantize(_PICO_USD, rounding=ROUND_DOWN)
        sim = self.similarity.value
        checked = sim != NO_CHECK
        k_max = int(self.k_max.value) or None
        learned = self.router is not None and bool(self.use_router.value)
        return PolicyPoint(
            start=tuple(int(d.value) for d in self.starts),
            cascade=bool(self.cascade.value),
            similarity=sim,
            k=self.k,
            classes=self.classes,
            thresholds=tuple(round(float(s.value), 4) for s in self.thresholds) if checked else (),
            cap_usd=cap,
            answer=str(self.answer.value) if checked else "first",
            k_max=k_max if checked else None,
            stop_share=round(float(self.stop_share.value), 4) if checked and k_max else 0.5,
            router=self.router if learned else None,
            router_thresholds=tuple(round(float(s.value), 4) for s in self.router_thresholds) if learned else (),
        )

    def _changed(self, change: dict[str, Any]) -> None:
        self.update()

    def update(self) -> pd.Series:
        """Evaluate the policy the controls describe on the dev split; refresh table and plot."""
        pt = self.point()
        starts = [int(d.value) for d in self.starts]
        notes = [self.cap_problem] if self.cap_problem else []
        if starts != sorted(starts):
            notes.append("start tiers are not monotone (simple &le; medium &le; complex)")
        self.status.value = "".join(f"<i>note: {n}</i><br>" for n in notes)
        row = evaluate(self.study.outcomes, pt, mask=self.study.dev, bootstrap=200)
        self.current = row
        self._move_marker(row)  # the plot first: when the numbers change, the moved point is already sent
        self.table.value = self._table_html(row)
        return row

    def _table_html(self, row: pd.Series) -> str:
        q = f"quality_{self.study.scorer}"
        prem = self.study.choice.premium_dev
        mix = ", ".join(f"{t} {row[f'share_tier_{i}']:.0%}" for i, t in enumerate(self.study.outcomes.tiers))
        cells = [
            ("cost (USD per 1k queries)", f"{row['cost_per_1k_usd']:.4f}"),
            (f"quality ({self.study.scorer})", f"{row[q]:.4f} [{row[q + '_lo']:.4f}, {row[q + '_hi']:.4f}]"),
            ("share of premium quality", f"{row[q] / prem[q]:.1%}" if prem[q] else "n/a (premium scores 0)"),
            (
                "cost vs all-premium",
                f"{row['cost_per_1k_usd'] / prem['cost_per_1k_usd']:.1%}" if prem["cost_per_1k_usd"] else "n/a",
            ),
            ("escalation rate", f"{row['escalation_rate']:.1%}"),
            ("tier mix", mix),
            ("failed routes", f"{row['failure_rate']:.1%}"),
        ]
        body = "".join(f"<tr><td>{k}</td><td class='v' data-metric='{k}'>{v}</td></tr>" for k, v in cells)
        return f"<table class='routerlab-numbers'>{body}</table>"

    def _draw(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        st = self.study
        fig = Figure(figsize=(7.5, 5), dpi=90)  # not through pyplot: no inline display of its own
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        plot_study(ax, st, title=f"{st.name}: dev split; purple = the explorer's policy")
        (self._marker,) = ax.plot([], [], "o", ms=13, mfc="none", mec="#9467bd", mew=3, zorder=9, animated=True)
        fig.tight_layout()
        canvas.draw()  # type: ignore[no-untyped-call]  # everything but the animated marker, once
        self._background = canvas.copy_from_bbox(fig.bbox)  # type: ignore[no-untyped-call]
        self._fig = fig

    def _move_marker(self, row: pd.Series) -> None:
        if self._fig is None:
            return
        self._marker.set_data([row["cost_per_1k_usd"]], [row[f"quality_{self.study.scorer}"]])
        self.image.value = self.png()

    def png(self) -> bytes:
        """The plot as it stands (the drawn background plus the highlighted point), as PNG bytes."""
        import io

        from matplotlib.image import imsave

        canvas = self._fig.canvas
        canvas.restore_region(self._background)
        self._marker.axes.draw_artist(self._marker)
        buf = io.BytesIO()
        imsave(buf, canvas.buffer_rgba(), format="png")
        return buf.getvalue()


def default_start(study: Study) -> PolicyPoint:
    """The chosen policy, or (when it checks nothing, e.g. all-premium) the best frontier policy that does."""
    if study.choice.point.similarity != NO_CHECK:
        return study.choice.point
    by_id = point_by_id(study.sweep_dev)
    checked = [by_id[i] for i in study.frontier["policy_id"] if by_id[i].similarity != NO_CHECK]
    return checked[-1] if checked else study.choice.point


def explorer(study: Study, **kwargs: Any) -> Explorer:
    """An :class:`Explorer` for ``study``; display ``.widget`` in a notebook."""
    return Explorer(study, **kwargs)
