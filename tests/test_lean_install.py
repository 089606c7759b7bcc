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


def test_bare_install_runs_the_readme_example_without_the_workbench(tmp_path: Path) -> None:
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
