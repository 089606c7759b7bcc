"""Shared setup for the benchmark scripts: a temporary workspace with an imported public dataset."""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TEMP: list[Path] = []


def workspace(name: str, root: str | None = None) -> tuple[Any, list[Any], Path, Path]:
    """(ladder policy, items, cassettes, root) for ``name``, imported into ``root`` (a temp dir by default,
    removed at exit). The import reads the public mirror ($ROUTERLAB_MIRROR); its time is not measured."""
    from routerlab.workbench.study import open_dataset

    if root:
        base = Path(root)
    else:
        if not _TEMP:
            _TEMP.append(Path(tempfile.mkdtemp(prefix="routerlab-bench-")))
            atexit.register(shutil.rmtree, _TEMP[0], True)
        base = _TEMP[0]
    policy, items, _evalset, cassettes = open_dataset(name, root=base, progress=False)
    return policy, items, cassettes, base


def interleaved(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Wall times (s) of each case over ``rounds`` rounds, the cases run one after another within a round,
    so that a change in machine load hits every case alike instead of one case's block of repeats."""
    if rounds < 3:
        raise SystemExit(f"at least 3 interleaved rounds are needed for a min/median/max, got {rounds}")
    out: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def spread(values: list[float], fmt: str = "{:,.0f}", suffix: str = "") -> str:
    """``min / median / max`` of a list of numbers, each formatted with ``fmt``."""
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return " / ".join(fmt.format(v) + suffix for v in (lo, mid, hi))


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
