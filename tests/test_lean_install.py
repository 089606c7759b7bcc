"""``pip install routerlab`` is the production router only: a fresh virtual environment, the README example.

The package is installed from a copy of this checkout (so the build leaves
nothing in the repository) into a new venv; its dependencies come from the
package index. The README's production example then runs there against a
scripted provider behind ``httpx.MockTransport``, and neither the workbench
stack nor the test tools may have been installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = ("pandas", "numpy", "matplotlib", "vcrpy", "jupyterlab", "jupyter-core", "ipywidgets", "nltk", "pytest")

DRIVER = r"""
import importlib.util, json, os, re, sys
import httpx
from routerlab.fakes import FakeProviders

fake = FakeProviders(default_text="The export button is broken; engineering is looking into it.")
real = httpx.Client
httpx.Client = lambda *a, **k: real(transport=fake.transport())
os.environ.update({"OPENAI_API_KEY": "sk-lean", "ANTHROPIC_API_KEY": "sk-ant-lean"})
src = re.search(r"## Production use\n\n```python\n(.*?)```", open("README.md").read(), re.S).group(1)
ns = {}
exec(compile(src, "README.md", "exec"), ns)
from routerlab import ConfigError, CascadeRouter, load_policy
from routerlab.policy import policy_from_dict, policy_to_dict
d = policy_to_dict(load_policy("policies/example.json"))
d["confidence"]["similarity"] = "rougeL"
try:
    CascadeRouter.from_policy(policy_from_dict(d), client=real())
    rouge_error = ""
except ConfigError as e:
    rouge_error = str(e)
heavy = [m for m in ("pandas", "numpy", "matplotlib", "vcr", "ipywidgets", "routerlab.workbench") if m in sys.modules]
print(json.dumps({"tier": ns["result"].tier, "cost": str(ns["result"].cost_usd), "requests": len(fake.requests),
                  "heavy_imported": heavy, "rouge_error": rouge_error,
                  "findable": [m for m in ("pandas", "numpy", "matplotlib", "vcr") if importlib.util.find_spec(m)]}))
"""


def _copy_checkout(dest: Path) -> Path:
    skip = shutil.ignore_patterns(
        ".venv", ".git", ".routerlab-data", "reports", ".screenshots", "build", "*.egg-info", "__pycache__",
        ".pytest_cache", ".mypy_cache", ".ruff_cache", "imported", "cassettes", ".ipynb_checkpoints",
    )  # fmt: skip
    shutil.copytree(REPO, dest, ignore=skip)
    return dest


LEARNED = r"""
import json, sys
from routerlab import load_policy
from routerlab.decision import prepare_query, start_tier_of
policy = load_policy(sys.argv[1])
starts = [start_tier_of(policy, prepare_query(json.loads(line), policy.classifier)) for line in open(sys.argv[2])]
heavy = [m for m in ("numpy", "scipy", "sklearn", "pandas") if m in sys.modules]
print(json.dumps({"starts": starts, "heavy_imported": heavy}))
"""


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A fresh venv with ``pip install routerlab`` alone: (its python, the copied checkout)."""
    tmp_path = tmp_path_factory.mktemp("lean")
    src = _copy_checkout(tmp_path / "routerlab-src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    install = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return py, src


def test_bare_install_runs_the_readme_example_without_the_workbench(bare: tuple[str, Path]) -> None:
    py, src = bare
    listed = subprocess.run([py, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    installed = {re.sub(r"[-_.]+", "-", p["name"].lower()) for p in json.loads(listed.stdout)}
    assert {"routerlab", "httpx", "genai-prices"} <= installed
    assert not installed & set(FORBIDDEN), sorted(installed & set(FORBIDDEN))
    run = subprocess.run([py, "-c", DRIVER], cwd=src, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["tier"] == "cheap" and out["requests"] == 1 and out["cost"] != "0"
    assert out["heavy_imported"] == [] and out["findable"] == []
    # a policy that needs an extra says so when the router is built, not on the first query
    assert "pip install 'routerlab[rouge]'" in out["rouge_error"]


def test_the_exported_learned_router_routes_identically_without_numpy(
    bare: tuple[str, Path], imported: Any, tmp_path: Path
) -> None:
    """Trained in the workbench, exported in the policy JSON, run in the bare install: the same start
    tier as the workbench's sweep gives, on every item of mot_date."""
    from routerlab.policy import dump_policy
    from routerlab.workbench.learn import train_start_router
    from routerlab.workbench.sweep import PolicyPoint, simulate, split_three

    py, src = bare
    ds = imported("mot_date")
    o = ds.outcomes
    tune, _, _ = split_three(o)
    point = PolicyPoint(
        (0, 0, 0), False, router=train_start_router(o, "exact", mask=tune), router_thresholds=(0.6, 0.5)
    )
    dump_policy(point.to_policy(o.policy), tmp_path / "learned.json")
    (tmp_path / "items.jsonl").write_text("".join(json.dumps([dict(m) for m in it.messages]) + "\n" for it in ds.items))
    run = subprocess.run(
        [py, "-c", LEARNED, str(tmp_path / "learned.json"), str(tmp_path / "items.jsonl")],
        cwd=src, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["heavy_imported"] == []
    workbench = simulate(o, [point]).tier[0].tolist()  # no cascade, no failures: the start tier answers
    assert len(out["starts"]) == len(ds.items) == 369
    assert out["starts"] == workbench
    assert len(set(workbench)) > 1
