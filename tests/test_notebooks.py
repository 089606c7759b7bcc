"""The three workbench notebooks run top to bottom, headless, on the mirror data; they are committed clean."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import REPO, require_mirror

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_three_notebooks_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_record_or_import.ipynb",
        "02_sweep_and_frontier.ipynb",
        "03_choose_and_export.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_thin_driver(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "one cell tagged 'parameters' (papermill convention)"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        src = cell.source
        assert "class " not in src and "def " not in src, f"{path.name}: logic belongs in routerlab"
        for line in src.splitlines():
            if line.startswith(("import ", "from ")):
                mod = line.split()[1].split(".")[0]
                assert mod in ("routerlab", "pathlib", "matplotlib"), f"{path.name}: imports {mod}"


def _run(path: Path, params: dict[str, Any], extra: str | None = None) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# injected by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    if extra:
        nb.cells.append(nbformat.v4.new_code_cell(extra))
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel draws inline
    client.execute(env=env)
    return nb


def _last_json(nb: nbformat.NotebookNode) -> Any:
    out = nb.cells[-1].outputs
    text = "".join(o.get("text", "") for o in out if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


def test_01_record_or_import(imported: Any) -> None:
    require_mirror()
    ws = imported("mot_date").root
    nb = _run(
        NOTEBOOKS[0],
        {"study": "mot_date", "workspace": str(ws)},
        extra="import json; print(json.dumps({'rows': len(summary), 'items': int(summary['items'].max()), "
        "'tiers': sorted(summary['tier'].unique().tolist()), 'samples': int(summary['samples'].sum())}))",
    )
    got = _last_json(nb)
    assert got["items"] == 369 and got["tiers"] == ["cheap", "mid", "premium"]
    assert got["rows"] == 13  # 3 single + k2 and adaptive k's draws d3..d6 on the two non-final tiers
    assert got["samples"] == 369 * (3 + 2 * 2 + 2 * 4)
    texts = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if "text" in o)
    assert "recording skipped" in texts


def test_01_imports_your_own_outputs_where_its_parameters_say(tmp_path: Path) -> None:
    from test_own_outputs import write_ladder, write_outputs

    ws = tmp_path / "ws"
    params = {
        "study": "mine",
        "source": "outputs",
        "outputs_file": str(write_outputs(tmp_path / "logs.jsonl")),
        "ladder_file": str(write_ladder(tmp_path / "ladder.json")),
        "workspace": str(ws),
    }
    nb = _run(NOTEBOOKS[0], params, extra="import json; print(json.dumps({'items': int(summary['items'].max()), "
              "'scorer': scorer}))")  # fmt: skip
    got = _last_json(nb)
    assert got == {"items": 12, "scorer": "exact"}
    assert (ws / "data" / "imported" / "mine" / "evalset.jsonl").is_file() and (ws / "cassettes" / "mine").is_dir()


def test_02_sweep_and_frontier_explorer_reacts(imported: Any) -> None:
    require_mirror()
    ws = imported("mot_date").root
    probe = (
        "import json\n"
        "before = dict(ex.current[['cost_per_1k_usd', 'quality_exact', 'escalation_rate']])\n"
        "table_before = ex.table.value\n"
        "ex.starts[0].value = 0; ex.starts[1].value = 0; ex.starts[2].value = 0\n"
        "ex.similarity.value = 'answer'; ex.cascade.value = True\n"
        "mid = dict(ex.current[['cost_per_1k_usd', 'quality_exact', 'escalation_rate']])\n"
        "ex.thresholds[0].value = 0.0\n"
        "after = dict(ex.current[['cost_per_1k_usd', 'quality_exact', 'escalation_rate']])\n"
        "print(json.dumps({'before': before, 'mid': mid, 'after': after, 'frontier': len(study.frontier),\n"
        "                  'changed_html': table_before != ex.table.value}))"
    )
    nb = _run(NOTEBOOKS[1], {"dataset": "mot_date", "workspace": str(ws)}, extra=probe)
    got = _last_json(nb)
    assert got["frontier"] > 3
    assert got["changed_html"]
    # threshold 1.0 -> 0.0 on the cheap tier: nothing escalates from it any more, so it costs less
    assert got["after"]["escalation_rate"] < got["mid"]["escalation_rate"]
    assert got["after"]["cost_per_1k_usd"] < got["mid"]["cost_per_1k_usd"]
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the frontier plot was drawn"


def test_03_choose_and_export(imported: Any, tmp_path: Path) -> None:
    require_mirror()
    ws = imported("mot_date").root
    out = tmp_path / "chosen.json"
    # mot_date at 95%: nothing cheaper than all-premium is certified, so the export needs force (and then
    # writes the point-estimate choice, labelled as not certified)
    nb = _run(
        NOTEBOOKS[2],
        {"dataset": "mot_date", "workspace": str(ws), "out_policy": str(out), "n_routes": 4, "force": True,
         "audit_splits": 3},
        extra="import json; t = route_examples(policy, study.cassettes, study.items, 4); "
        "print(json.dumps({'items': t['item_id'].nunique(), 'cost': float(t['cost_usd'].sum())}))",
    )  # fmt: skip
    from routerlab import load_policy

    policy = load_policy(out)
    assert policy.provenance["tuned_on"] == "mot_date"
    assert policy.provenance["tier_models"] == [t.model for t in policy.tiers]
    assert policy.provenance["chooser"] == "point estimate (not certified)"
    got = _last_json(nb)
    assert got["items"] == 4 and got["cost"] > 0
    texts = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert "No policy cheaper than all-premium can be certified" in texts
    assert "certified: on the held-out part, the chosen policy's quality reached the 95% floor" in texts
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the audit plot was drawn"
