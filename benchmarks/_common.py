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


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time (time.perf_counter) of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
