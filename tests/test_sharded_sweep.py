"""The sweep sharded by items over an executor: a local process pool, and a Dask cluster on 127.0.0.1
(issue 15). The sharded table must be identical to the single-process one."""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_reference import SEEDS, random_points, random_table, threshold_families  # noqa: E402

from routerlab.errors import WorkbenchError  # noqa: E402
from routerlab.workbench.sweep import sweep  # noqa: E402


def _case(seed: int) -> tuple[object, list[object], np.ndarray]:
    o = random_table(seed)
    pts = random_points(o, 25, seed) + threshold_families(o, 4, seed + 1)
    mask = np.random.default_rng(seed).random(o.n_items) < 0.8
    mask[0] = True
    return o, pts, mask


def test_a_process_pool_gives_the_same_table() -> None:
    with ProcessPoolExecutor(max_workers=2) as ex:
        for seed in SEEDS[:6]:
            print(f"seed={seed}")
            o, pts, mask = _case(seed)
            one = sweep(o, pts, mask=mask, bootstrap=30, seed=seed)  # type: ignore[arg-type]
            many = sweep(o, pts, mask=mask, bootstrap=30, seed=seed, executor=ex)  # type: ignore[arg-type]
            pd.testing.assert_frame_equal(one, many, check_exact=True)


def test_a_dask_cluster_on_loopback_gives_the_same_table(loopback_dask: Any) -> None:
    import distributed

    client = loopback_dask
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2 and all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
    ran: list[str] = []
    for seed in SEEDS[:4]:
        print(f"seed={seed}")
        o, pts, mask = _case(seed)
        one = sweep(o, pts, mask=mask, bootstrap=30, seed=seed)  # type: ignore[arg-type]
        with distributed.get_task_stream(client) as stream:
            many = sweep(o, pts, mask=mask, bootstrap=30, seed=seed, executor=client)  # type: ignore[arg-type]
        pd.testing.assert_frame_equal(one, many, check_exact=True)
        ran += [t["worker"] for t in stream.data if str(t["key"]).startswith("_shard")]
    assert ran and set(ran) == set(workers), ran  # the shards ran on the cluster's two workers


def test_an_executor_needs_the_decomposed_sweep() -> None:
    o, pts, _ = _case(1)
    with ProcessPoolExecutor(max_workers=1) as ex, pytest.raises(WorkbenchError, match="decomposed"):
        sweep(o, pts, decompose=False, executor=ex)  # type: ignore[arg-type]
