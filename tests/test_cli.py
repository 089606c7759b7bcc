"""The command line: --help everywhere, data fetch/import, replay with zero misses, sweep/export/report, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, require_mirror

from routerlab.cli import build_parser, main

COMMANDS = [
    ["demo"],
    ["data", "list"],
    ["data", "fetch"],
    ["data", "import"],
    ["record"],
    ["replay"],
    ["sweep"],
    ["frontier"],
    ["export"],
    ["report"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_has_help(cmd: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: routerlab" in out and len(out) > 150


def test_module_entry_point() -> None:
    r = subprocess.run([sys.executable, "-m", "routerlab", "--help"], capture_output=True, text=True, check=True)
    assert "sweep" in r.stdout and "record" in r.stdout


def test_errors_are_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "import", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("routerlab: error:") and "alpaca_eval" in err and "Traceback" not in err


def test_fetch_import_replay_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mirror = require_mirror()
    tracked = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert (
        main(["data", "fetch", "mot_date", "--mirror", str(mirror), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    )
    assert "5 files verified" in capsys.readouterr().out
    assert main(["data", "import", "mot_date", "--root", str(tmp_path), "--mirror", str(mirror), "--quiet"]) == 0
    data = tmp_path / "data" / "imported" / "mot_date"
    assert (
        main(
            [
                "replay",
                "--evalset",
                str(data / "evalset.jsonl"),
                "--policy",
                str(data / "ladder-policy.json"),
                "--cassettes",
                str(tmp_path / "cassettes" / "mot_date"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "replayed 369 items" in out
    assert main(["sweep", "mot_date", "--root", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "reports" / "mot_date" / "sweep.csv").stat().st_size > 1000
    # nothing cheaper than all-premium can be certified at 90% from mot_date's 110 calibration items: refused
    assert main(["export", "mot_date", "--root", str(tmp_path), "--quiet", "--floor", "0.9"]) == 1
    err = capsys.readouterr().err
    assert "No policy cheaper than all-premium can be certified at a 90% floor" in err and "--force" in err
    assert not (tmp_path / "policies" / "mot_date.json").exists()
    argv = ["export", "mot_date", "--root", str(tmp_path), "--quiet", "--floor", "0.9", "--chooser", "point"]
    assert main(argv) == 0
    assert "point estimate, NOT certified" in capsys.readouterr().out
    pol = json.loads((tmp_path / "policies" / "mot_date.json").read_text())
    assert pol["provenance"]["quality_floor"].startswith("0.9")
    assert pol["provenance"]["chooser"] == "point estimate (not certified)"
    assert main(["report", "mot_date", "--root", str(tmp_path), "--quiet", "--chooser", "point"]) == 0
    report = (tmp_path / "reports" / "mot_date" / "report.md").read_text()
    assert "## Smarter escalation" in report and "+ adaptive k" in report and "| learned start router |" in report
    assert (tmp_path / "reports" / "mot_date" / "escalation.png").stat().st_size > 1000
    policy_bytes = (tmp_path / "policies" / "mot_date.json").read_bytes()
    assert main(["frontier", "mot_date", "--root", str(tmp_path), "--quiet", "--floor", "0.5"]) == 0
    assert (tmp_path / "reports" / "mot_date" / "frontier.csv").exists()
    assert (tmp_path / "policies" / "mot_date.json").read_bytes() == policy_bytes  # frontier exports nothing
    after = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert after == tracked  # tracked files untouched


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "import", "mot_date", "--k", "1"], "at least 2 samples"),
        (["data", "import", "mot_date", "--k", "2,x"], "comma-separated whole numbers"),
        (["record", "--evalset", "e", "--policy", "p", "--out", "o", "--k", "0"], "at least 2 samples"),
        (["export", "mot_date", "--floor", "95"], "in (0, 1]"),
        (["sweep", "mot_date", "--floor", "high"], "expected a number"),
        (["sweep", "mot_date", "--thresholds", "1"], "between 2 and 64"),
        (["sweep", "mot_date", "--memory-mb", "0"], "positive number of megabytes"),
        (["sweep", "mot_date", "--workers", "0"], "at least 1"),
        (["sweep", "mot_date", "--workers", "2", "--dask", "tcp://127.0.0.1:1"], "not allowed with"),
    ],
)
def test_bad_option_values_are_refused_by_the_parser(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_file_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    code = main(["replay", "--evalset", str(missing), "--policy", "policies/example.json", "--cassettes", "x"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("routerlab: error:") and "nope.jsonl" in err and "Traceback" not in err


def test_parser_lists_all_commands() -> None:
    text = build_parser().format_help()
    for c in ("demo", "data", "record", "replay", "sweep", "frontier", "export", "report"):
        assert c in text


def test_sweep_gives_the_study_sweep_in_memory_on_disk_on_processes_and_on_a_dask_cluster(
    imported: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], loopback_dask: Any
) -> None:
    """``routerlab sweep`` writes the dev-split sweep the study computes, whether its table is in memory or
    on disk (DuckDB, in item ranges), in this process, on local processes or on a cluster on loopback."""
    from routerlab.workbench.study import run_study

    s = imported("mot_date")
    base = ["sweep", "mot_date", "--root", str(s.root), "--quiet", "--out"]
    assert main([*base, str(tmp_path / "a.csv")]) == 0
    assert "outcome table in memory" in capsys.readouterr().out
    want = run_study("mot_date", root=s.root, progress=False).sweep_dev.to_csv(index=False)
    assert (tmp_path / "a.csv").read_text() == want
    argv = [*base, str(tmp_path / "b.csv"), "--table", "disk", "--workers", "2", "--memory-mb", "1"]
    assert main(argv) == 0  # about 256 items per range: two ranges, each a task in its own process
    assert "outcome table on disk" in capsys.readouterr().out
    assert (tmp_path / "b.csv").read_text() == want
    assert main([*base, str(tmp_path / "c.csv"), "--dask", loopback_dask.scheduler.address]) == 0
    assert (tmp_path / "c.csv").read_text() == want


def test_sweep_names_an_unreachable_dask_scheduler(imported: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    s = imported("mot_date")
    code = main(["sweep", "mot_date", "--root", str(s.root), "--quiet", "--dask", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 1 and "tcp://127.0.0.1:9" in err and "cannot reach the scheduler" in err, err
