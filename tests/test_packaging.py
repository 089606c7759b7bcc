"""Packaging: pyproject and environment.yml agree; the public surface; the light production import."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import routerlab

REPO = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_packages_as_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = project["dependencies"] + extras["rouge"] + extras["workbench"]
    declared = {_name(r): r.replace(" ", "") for r in reqs if _name(r) != "routerlab"}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    listed: dict[str, str] = {}
    for dep in env["dependencies"]:
        reqs = dep["pip"] if isinstance(dep, dict) else [dep]
        for req in reqs:
            if _name(req) in ("python", "pip", "-e"):
                continue
            listed[_name(req)] = req.replace(" ", "")
    assert listed == declared
    pip_section = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "-e .[dev]" in pip_section
    assert any(_name(r) == "genai-prices" for r in pip_section)  # conda-forge lacks the pinned versions


def test_the_bare_install_is_the_production_router_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(_name(r) for r in project["dependencies"]) == ["genai-prices", "httpx"]


def test_readme_opens_with_the_two_commands() -> None:
    lines = [ln.strip() for ln in (REPO / "README.md").read_text().splitlines() if ln.strip()]
    assert lines[0] == "# routerlab"
    assert lines[1].startswith("make demo") and lines[2].startswith("make test")


def test_public_names() -> None:
    assert routerlab.__all__ == sorted(routerlab.__all__)
    for name in (
        "CascadeRouter",
        "AsyncCascadeRouter",
        "RouterPolicy",
        "Tier",
        "RouteResult",
        "load_policy",
        "dump_policy",
        "classify_complexity",
        "RouterlabError",
    ):
        assert name in routerlab.__all__
        assert getattr(routerlab, name) is not None
    for name in routerlab.__all__:
        obj = getattr(routerlab, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, routerlab.RouterlabError)


def test_production_import_stays_light() -> None:
    code = (
        "import sys, routerlab; heavy = [m for m in ('pandas', 'matplotlib', 'ipywidgets', 'numpy', "
        "'vcr', 'rouge_score', 'nltk', 'genai_prices') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_readme_production_example_runs_against_a_mock_transport(monkeypatch: object) -> None:
    import httpx

    from routerlab.fakes import FakeProviders

    text = (REPO / "README.md").read_text()
    code = re.search(r"## Production use\n\n```python\n(.*?)```", text, re.S)
    assert code is not None
    src = code.group(1)
    assert len([ln for ln in src.splitlines() if ln.strip()]) <= 16
    fake = FakeProviders(default_text="The export button is broken; engineering is looking into it.")
    real_client = httpx.Client

    def client_factory(*a: object, **k: object) -> httpx.Client:
        return real_client(transport=fake.transport())

    import os

    env = {"OPENAI_API_KEY": "sk-readme", "ANTHROPIC_API_KEY": "sk-ant-readme"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        httpx.Client = client_factory  # type: ignore[misc,assignment]
        ns: dict[str, object] = {}
        exec(compile(src, "README.md", "exec"), ns)
    finally:
        httpx.Client = real_client  # type: ignore[misc]
        os.chdir(cwd)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    result = ns["result"]
    assert result.tier == "cheap"  # type: ignore[attr-defined]
    assert len(fake.requests) == 1 and fake.requests[0]["body"]["n"] == 2
