"""The out-of-core sweep (issue 15): an outcome table left on disk, read by DuckDB item range by item range,
must give exactly the sweep of the same table in memory (which the reference simulator checks), on random
tables with every failure kind, in ranges of any size, with and without an executor; a real build left on
disk must sweep as the loaded one does."""

from __future__ import annotations

import dataclasses
import random
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
from routerlab.workbench.outcomes import build_outcomes  # noqa: E402
from routerlab.workbench.reference import simulate_reference  # noqa: E402
from routerlab.workbench.study import per_item_single  # noqa: E402
from routerlab.workbench.sweep import default_grid, evaluate, sweep  # noqa: E402


def _arrays_equal(x: Any, y: Any, name: str) -> None:
    if isinstance(x, dict):
        assert x.keys() == y.keys(), name
        for k in x:
            _arrays_equal(x[k], y[k], f"{name}[{k}]")
    elif isinstance(x, np.ndarray):
        assert x.dtype == y.dtype and x.shape == y.shape, (name, x.shape, y.shape)
        np.testing.assert_array_equal(x, y, err_msg=name)
    else:
        assert x == y, name


@pytest.mark.parametrize("seed", SEEDS[:12])
def test_an_item_range_read_from_disk_equals_the_same_items_in_memory(seed: int, tmp_path: Path) -> None:
    print(f"seed={seed}")
    o = random_table(seed)
    disk = o.to_disk(tmp_path)
    assert disk.on_disk and len(disk.calls) == 0
    a = o.dense()
    rng = random.Random(seed)
    lo = rng.randrange(o.n_items)
    hi = rng.randint(lo + 1, o.n_items)
    got, want = disk.shard_dense(lo, hi), a.take(np.arange(lo, hi))
    for f in dataclasses.fields(want):
        _arrays_equal(getattr(got, f.name), getattr(want, f.name), f.name)
    facts = disk.facts()  # the whole-table checks, by DuckDB queries
    for name in ("n", "t", "ks", "sims", "k_count", "k_max", "d_have", "cls"):
        _arrays_equal(getattr(facts, name), getattr(a, name), name)


@pytest.mark.parametrize("seed", SEEDS[:16])
def test_the_sweep_of_a_table_on_disk_equals_the_sweep_in_memory(seed: int, tmp_path: Path) -> None:
    print(f"seed={seed}")
    o = random_table(seed)
    pts = random_points(o, 25, seed) + threshold_families(o, 3, seed + 1)
    pts = [p for p in pts if p.router is None]  # learned start routers are swept in memory (tested below)
    rng = np.random.default_rng(seed)
    mask = rng.random(o.n_items) < 0.75
    mask[0] = True
    shard = int(rng.integers(1, o.n_items + 1))
    disk = o.to_disk(tmp_path)
    one = sweep(o, pts, mask=mask, bootstrap=25, seed=seed)
    two = sweep(disk, pts, mask=mask, bootstrap=25, seed=seed, shard_items=shard)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert sweep(o, default_grid(o), bootstrap=0).equals(
        sweep(disk, default_grid(disk), bootstrap=0, shard_items=shard)
    )


def test_above_the_latency_work_a_table_on_disk_gives_the_frontier_its_latencies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frontier's latency pass reads a table on disk range by range, as the sweep does: the same
    figures as the table in memory with ``latency=True``, NaN off the frontier."""
    from routerlab.workbench import decompose
    from routerlab.workbench.frontier import frontier_positions

    monkeypatch.setattr(decompose, "LATENCY_WORK", 100)
    for seed in SEEDS[:6]:
        print(f"seed={seed}")
        o = random_table(seed)
        pts = [p for p in random_points(o, 25, seed) + threshold_families(o, 3, seed + 1) if p.router is None]
        disk = o.to_disk(tmp_path / str(seed))
        full = sweep(o, pts, bootstrap=0, latency=True)
        got = sweep(disk, pts, bootstrap=0, shard_items=1 + seed % 5)
        front = sorted({i for sc in o.scorers for i in frontier_positions(full, quality=f"quality_{sc}")})
        other = np.setdiff1d(np.arange(len(pts)), front)
        for col in ("latency_p50_ms", "latency_p95_ms"):
            assert np.allclose(got[col].iloc[front], full[col].iloc[front], rtol=1e-12, atol=1e-9), (seed, col)
            assert got[col].iloc[other].isna().all(), (seed, col)


def test_an_executor_sweeps_a_table_on_disk_range_by_range(tmp_path: Path) -> None:
    with ProcessPoolExecutor(max_workers=2) as ex:
        for seed in SEEDS[:4]:
            print(f"seed={seed}")
            o = random_table(seed)
            pts = [p for p in random_points(o, 20, seed) if p.router is None]
            disk = o.to_disk(tmp_path / str(seed))
            one = sweep(o, pts, bootstrap=20, seed=seed)
            two = sweep(disk, pts, bootstrap=20, seed=seed, shard_items=4, executor=ex)
            pd.testing.assert_frame_equal(one, two, check_exact=True)


def test_what_needs_the_whole_table_in_memory_says_so(tmp_path: Path) -> None:
    seed = next(s for s in SEEDS if any(p.router is not None for p in random_points(random_table(s), 25, s)))
    o = random_table(seed)
    disk = o.to_disk(tmp_path)
    with pytest.raises(WorkbenchError, match=r"on disk, not in memory.*Outcomes.load\(\)"):
        disk.dense()
    plain = [p for p in random_points(o, 25, seed) if p.router is None]
    with pytest.raises(WorkbenchError, match="reference simulator needs it whole"):
        simulate_reference(disk, plain[:2])
    with pytest.raises(WorkbenchError, match="ROUTERLAB_OUT_OF_CORE_ROWS above its calls rows"):
        evaluate(disk, plain[0], bootstrap=0)
    with pytest.raises(WorkbenchError, match="per-item table needs it whole"):
        per_item_single(disk, "s1")
    learned = [p for p in random_points(o, 25, seed) if p.router is not None]
    with pytest.raises(WorkbenchError, match="learned start router are swept on a table in memory"):
        sweep(disk, learned, bootstrap=0)
    with pytest.raises(WorkbenchError, match="decomposed sweep only"):
        sweep(disk, learned, bootstrap=0, decompose=False)
    back = disk.load()
    pd.testing.assert_frame_equal(back.calls, pd.read_parquet(disk.files[0]), check_exact=True)  # type: ignore[index]
    assert not back.on_disk and back.dense().n == o.n_items


def test_a_file_whose_items_are_not_in_runs_is_refused(tmp_path: Path) -> None:
    o = random_table(3)
    shuffled = dataclasses.replace(o, calls=o.calls.sample(frac=1.0, random_state=0).reset_index(drop=True))
    disk = shuffled.to_disk(tmp_path)
    with pytest.raises(WorkbenchError, match="not one run in item order"):
        disk.shard_dense(0, 2)


def test_a_build_left_on_disk_sweeps_as_the_loaded_one(
    imported: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = imported("mot_date")
    items = ds.items[:90]
    kw: dict[str, Any] = {"scorers": ["exact"], "progress": False, "cache_dir": tmp_path}
    mem = build_outcomes(items, ds.policy, ds.cassettes, load=True, **kw)
    monkeypatch.setenv("ROUTERLAB_OUT_OF_CORE_ROWS", "100")  # far fewer rows than the table: it stays on disk
    disk = build_outcomes(items, ds.policy, ds.cassettes, **kw)
    assert disk.on_disk and not mem.on_disk and disk.variants and all(v.on_disk for v in disk.variants.values())
    pd.testing.assert_frame_equal(mem.items, disk.items, check_exact=True)
    assert disk.ks == mem.ks and disk.n_items == 90
    pd.testing.assert_series_equal(disk.sample_texts(), mem.sample_texts().reset_index(drop=True), check_exact=True)
    grid = default_grid(mem)
    assert default_grid(disk) == grid
    pts = grid.points(mem)
    assert grid.points(disk) == pts
    one = sweep(mem, pts, bootstrap=30)
    two = sweep(disk, pts, bootstrap=30, shard_items=17)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    monkeypatch.setenv("ROUTERLAB_OUT_OF_CORE_ROWS", "lots")
    with pytest.raises(WorkbenchError, match="ROUTERLAB_OUT_OF_CORE_ROWS must be a whole number"):
        build_outcomes(items, ds.policy, ds.cassettes, **kw)


def test_a_dask_cluster_on_loopback_sweeps_a_table_on_disk(tmp_path: Path, loopback_dask: Any) -> None:
    """Each item range is one task; the cluster's workers read their rows from the files themselves."""
    import distributed

    client = loopback_dask
    workers = client.scheduler_info()["workers"]
    for seed in SEEDS[:3]:
        print(f"seed={seed}")
        o = random_table(seed)
        pts = [p for p in random_points(o, 20, seed) if p.router is None]
        disk = o.to_disk(tmp_path / str(seed))
        one = sweep(o, pts, bootstrap=20, seed=seed)
        with distributed.get_task_stream(client) as stream:
            two = sweep(disk, pts, bootstrap=20, seed=seed, shard_items=3, executor=client)
        pd.testing.assert_frame_equal(one, two, check_exact=True)
        ran = [t["worker"] for t in stream.data if str(t["key"]).startswith("_disk_shard")]
        ranges = -(-o.n_items // 3)  # per temperature group of the points (a table and its variant)
        groups = len({o.resolve_temperatures(p.temperatures) for p in pts})
        assert len(ran) == ranges * groups and set(ran) <= set(workers), ran


def test_to_disk_writes_the_frames_in_hand_and_checks_the_range_size(tmp_path: Path) -> None:
    o = random_table(5).to_disk(tmp_path / "a").load()  # a table that came from files
    changed = dataclasses.replace(o, calls=o.calls.assign(q_s1=0.25))
    disk = changed.to_disk(tmp_path / "b")
    assert disk.files is not None and disk.files[0].parent == tmp_path / "b"
    pts = [p for p in random_points(o, 8, 5) if p.router is None]
    pd.testing.assert_frame_equal(sweep(changed, pts, bootstrap=0), sweep(disk, pts, bootstrap=0), check_exact=True)
    with pytest.raises(WorkbenchError, match="shard_items must be at least 1, got 0"):
        sweep(disk, pts, bootstrap=0, shard_items=0)


def _damaged(o: Any, kind: str, rng: random.Random) -> pd.DataFrame:
    """``o``'s calls with one defect in one item's run of rows (the item's rows stay one run)."""
    calls = o.calls.reset_index(drop=True)
    t = len(o.tiers)
    if kind == "duplicate":
        at = rng.randrange(len(calls))
        return pd.concat([calls.iloc[: at + 1], calls.iloc[at : at + 1], calls.iloc[at + 1 :]], ignore_index=True)
    singles = calls.index[calls["variant"] == "single"]
    if kind in ("tier_past_the_ladder", "negative_tier"):  # one row moved off the ladder (its gap made up)
        at = rng.choice(list(singles))
        calls.loc[at, "tier_index"] = t if kind == "tier_past_the_ladder" else -1
        return calls
    if kind == "gap":
        return calls.drop(index=rng.choice(list(singles))).reset_index(drop=True)
    ks = calls.index[(calls["variant"] != "single") & (calls["tier_index"] == t - 2)]
    at = rng.choice(list(ks))
    row = calls.iloc[at : at + 1].assign(tier_index=t - 1)
    return pd.concat([calls.iloc[: at + 1], row, calls.iloc[at + 1 :]], ignore_index=True)


@pytest.mark.parametrize("kind", ["duplicate", "gap", "final_k", "tier_past_the_ladder", "negative_tier"])
@pytest.mark.parametrize("seed", SEEDS[:4])
def test_a_defect_anywhere_on_disk_is_refused_before_any_range_is_swept(
    seed: int, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole-table check runs by DuckDB aggregates up front, with the error the table in memory gives."""
    from routerlab.errors import DataError
    from routerlab.workbench import tablefiles

    o = random_table(seed)
    while len(o.tiers) < 2 or not (o.calls["variant"] != "single").any():  # a table with k rows to misplace
        seed += 1000
        o = random_table(seed)
    print(f"seed={seed}")
    rng = random.Random(seed)
    bad = dataclasses.replace(o, calls=_damaged(o, kind, rng))
    with pytest.raises(DataError) as mem:
        bad.dense()
    disk = bad.to_disk(tmp_path)

    def no_reads(*a: Any, **k: Any) -> Any:
        raise AssertionError("an item range was read before the whole-table check")

    monkeypatch.setattr(tablefiles, "read_rows", no_reads)
    with pytest.raises(DataError) as got:
        disk.facts()
    assert str(got.value) == str(mem.value)
    with pytest.raises(DataError, match=r"^outcome table: "):
        sweep(disk, random_points(o, 3, seed), shard_items=1)
