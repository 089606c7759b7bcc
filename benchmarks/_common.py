"""Shared setup for the benchmark scripts: a temporary workspace with an imported public dataset."""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def workspace(name: str, root: str | None = None) -> tuple[Any, list[Any], Path, Path]:
    """(ladder policy, items, cassettes, root) for ``name``, imported into ``root`` (a temp dir by default)."""
    from routerlab.workbench import open_dataset

    base = Path(root) if root else Path(tempfile.mkdtemp(prefix="routerlab-bench-"))
    policy, items, _evalset, cassettes = open_dataset(name, root=base, progress=False)
    return policy, items, cassettes, base


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    import os

    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
