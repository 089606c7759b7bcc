"""The workbench: tune a routing policy on recorded traffic (pandas, matplotlib, ipywidgets).

This is the one surface the notebooks import from. The pipeline, one module
per arrow: :mod:`~routerlab.workbench.outcomes` (the outcome table, built
with the router's own accounting), :mod:`~routerlab.workbench.sweep` (many
policies at once, vectorised), :mod:`~routerlab.workbench.reference` (the
decision procedure itself over the outcome table: what the sweep is checked
against), :mod:`~routerlab.workbench.frontier` (frontier, baselines,
metrics), :mod:`~routerlab.workbench.export` (choose and export),
:mod:`~routerlab.workbench.certify` (the certified choice's bounds and
Learn-then-Test), :mod:`~routerlab.workbench.audit` (both choices repeated
over re-splits), :mod:`~routerlab.workbench.check` (the regression gate),
:mod:`~routerlab.workbench.study` (the whole pipeline for one eval set),
:mod:`~routerlab.workbench.plots`, :mod:`~routerlab.workbench.report` and
:mod:`~routerlab.workbench.widgets`. Needs ``pip install routerlab[workbench]``. (``sweep`` here is the module: call
``routerlab.workbench.sweep.sweep``.)
"""

from routerlab.data.cassettes import record, replay_items
from routerlab.data.evalset import EvalItem, dump_evalset, evalset_sha256, load_evalset
from routerlab.data.importers import DEFAULT_LADDERS, import_dataset, import_outputs, load_ladder, load_outputs
from routerlab.data.packs import pack_cassettes, unpack_cassettes
from routerlab.data.paths import workspace_root
from routerlab.data.studies import StudyPaths, create_study, study_paths
from routerlab.policy import dump_policy, load_policy
from routerlab.workbench.audit import AuditResult, audit, audit_table, plot_audit, save_audit_png
from routerlab.workbench.check import CheckResult, check_policy
from routerlab.workbench.export import Certified, Choice, certify, choose, export_policy
from routerlab.workbench.frontier import metrics_table, oracle_point, pareto_frontier, random_mix, single_tier_baselines
from routerlab.workbench.judge import JudgeConfig, JudgeScorer, load_judge_config, make_judge_scorer, register_judge
from routerlab.workbench.outcomes import Outcomes, build_outcomes
from routerlab.workbench.plots import frontier_figure, plot_frontier, plot_study, save_frontier_png
from routerlab.workbench.reference import simulate_reference
from routerlab.workbench.report import export_study, render_report, write_outputs
from routerlab.workbench.scoring import (
    applicable_scorers,
    degenerate_scorer,
    get_scorer,
    register_scorer,
    resolve_scorer,
    scorer_coverage,
)
from routerlab.workbench.study import (
    SPLIT_SEED,
    Study,
    StudySweep,
    capture_summary,
    choice_table,
    choosers_table,
    for_people,
    frontier_table,
    missing_keys,
    open_dataset,
    route_examples,
    run_study,
    split_masks,
    sweep_study,
    tier_table,
)
from routerlab.workbench.sweep import (
    Grid,
    PolicyPoint,
    SimResult,
    default_grid,
    evaluate,
    per_item,
    point_by_id,
    point_from_policy,
    points_of,
    simulate,
    split_items,
    summarize,
)
from routerlab.workbench.widgets import Explorer, explorer

__all__ = [
    "AuditResult",
    "Certified",
    "CheckResult",
    "Choice",
    "DEFAULT_LADDERS",
    "EvalItem",
    "Explorer",
    "Grid",
    "JudgeConfig",
    "JudgeScorer",
    "Outcomes",
    "PolicyPoint",
    "SPLIT_SEED",
    "SimResult",
    "Study",
    "StudySweep",
    "StudyPaths",
    "applicable_scorers",
    "audit",
    "audit_table",
    "build_outcomes",
    "capture_summary",
    "certify",
    "check_policy",
    "choice_table",
    "choosers_table",
    "choose",
    "create_study",
    "default_grid",
    "degenerate_scorer",
    "dump_evalset",
    "dump_policy",
    "evalset_sha256",
    "evaluate",
    "explorer",
    "export_policy",
    "export_study",
    "for_people",
    "frontier_figure",
    "frontier_table",
    "get_scorer",
    "import_dataset",
    "import_outputs",
    "load_evalset",
    "load_judge_config",
    "load_ladder",
    "load_outputs",
    "load_policy",
    "make_judge_scorer",
    "metrics_table",
    "missing_keys",
    "open_dataset",
    "oracle_point",
    "pack_cassettes",
    "pareto_frontier",
    "per_item",
    "plot_audit",
    "plot_frontier",
    "plot_study",
    "point_by_id",
    "point_from_policy",
    "points_of",
    "random_mix",
    "record",
    "register_judge",
    "register_scorer",
    "render_report",
    "replay_items",
    "resolve_scorer",
    "route_examples",
    "run_study",
    "save_audit_png",
    "save_frontier_png",
    "scorer_coverage",
    "simulate",
    "simulate_reference",
    "single_tier_baselines",
    "split_items",
    "split_masks",
    "sweep_study",
    "study_paths",
    "summarize",
    "tier_table",
    "unpack_cassettes",
    "workspace_root",
    "write_outputs",
]
