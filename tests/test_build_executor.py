"""The outcome-table build on an executor, and its rows streamed to disk chunk by chunk (issue 15).

A build whose chunks run as tasks on a ``concurrent.futures`` executor (a spawned process pool, so every
argument is pickled) or on a Dask cluster bound to 127.0.0.1 must give the same tables and texts as the
build in this process; the streamed part files must join into exactly what pandas' concat of the parts
would be, whatever the column types of each chunk."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from routerlab.data.evalset import EvalItem
from routerlab.workbench import outcomes as mod
from routerlab.workbench.outcomes import build_outcomes


def _same(one: Any, two: Any) -> None:
    pd.testing.assert_frame_equal(one.calls, two.calls, check_exact=True)
    pd.testing.assert_frame_equal(one.samples, two.samples, check_exact=True)
    pd.testing.assert_series_equal(one.sample_texts(), two.sample_texts(), check_exact=True)


def test_eval_items_pickle_and_load_back_unchanged() -> None:
    items = [
        EvalItem.from_prompt("a", "What is 2+2?", answer="4", labels={"x": 1.0}, meta={"tags": ["t"], "n": {"k": 2}}),
        EvalItem(
            "b",
            ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}),
            reference="hello",
        ),
    ]
    for it in items:
        back = pickle.loads(pickle.dumps(it))
        assert back == it and back.to_json() == it.to_json()
        assert type(back.meta).__name__ == type(it.meta).__name__  # still read-only


def test_a_spawned_process_pool_builds_the_same_table(
    imported: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = imported("mot_date")
    items = ds.items[:70]
    kw: dict[str, Any] = {"scorers": ["exact"], "progress": False, "variants": False}
    one = build_outcomes(items, ds.policy, ds.cassettes, cache_dir=tmp_path / "one", workers=1, **kw)
    monkeypatch.setattr(mod, "BUILD_CHUNK", 16)  # 5 chunks, the last one short
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as ex:
        two = build_outcomes(items, ds.policy, ds.cassettes, cache_dir=tmp_path / "two", executor=ex, **kw)
    _same(one, two)
    for name in ("calls", "samples", "texts"):  # the files are whole, readable by others, and no parts are left
        f = tmp_path / "two" / f"{two.key}-{name}.parquet"
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o644, f
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        f"{two.key}-{n}.parquet" for n in ("calls", "samples", "texts")
    )
    # and the cached table read back later is the one built
    again = build_outcomes(items, ds.policy, ds.cassettes, cache_dir=tmp_path / "two", workers=1, **kw)
    _same(two, again)


def test_a_dask_cluster_on_loopback_builds_the_same_table(
    imported: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback_dask: Any
) -> None:
    import distributed

    ds = imported("mot_date")
    items = ds.items[:48]
    kw: dict[str, Any] = {"scorers": ["exact"], "progress": False, "variants": False}
    one = build_outcomes(items, ds.policy, ds.cassettes, cache_dir=tmp_path / "one", workers=1, **kw)
    monkeypatch.setattr(mod, "BUILD_CHUNK", 16)
    client = loopback_dask
    workers = client.scheduler_info()["workers"]
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
    with distributed.get_task_stream(client) as stream:
        two = build_outcomes(items, ds.policy, ds.cassettes, cache_dir=tmp_path / "two", executor=client, **kw)
    ran = [t["worker"] for t in stream.data if str(t["key"]).startswith("_build_items")]
    _same(one, two)
    assert len(ran) == 3 and set(ran) <= set(workers), ran  # the three chunks ran on the cluster


def _round_trip(df: pd.DataFrame, folder: Path) -> pd.DataFrame:
    folder.mkdir(exist_ok=True)
    f = folder / f"{len(list(folder.iterdir()))}.parquet"
    df.to_parquet(f, index=False)
    return pd.read_parquet(f)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_streamed_parts_join_as_pandas_concat_would(tmp_path: Path, seed: int) -> None:
    """Chunks whose columns are all null in one part and typed in another, or integer in one and float
    (a missing value) in another, join into what ``pd.concat`` of the parts gives."""
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(int(rng.integers(2, 6))):
        n = int(rng.integers(1, 5))
        err = [None] * n if rng.random() < 0.5 else [str(rng.choice(["timeout", "429"])) for _ in range(n)]
        toks: list[float | int] = list(rng.integers(0, 99, n))
        if rng.random() < 0.4:
            toks[0] = np.nan
        calls = pd.DataFrame(
            {
                "item_id": [f"i{i}-{j}" for j in range(n)],
                "error_kind": err,
                "tokens": toks,
                "cost_pico": rng.integers(0, 9, n),
            }
        )
        samples = pd.DataFrame({"item_id": calls["item_id"], "text": [f"t{j}" for j in range(n)], "q": rng.random(n)})
        parts.append((calls, samples))
    paths = (tmp_path / "k-calls.parquet", tmp_path / "k-samples.parquet")
    with mod._TableSink(tmp_path / "k-texts.parquet", paths) as sink:
        for c, s in parts:
            sink.add(c, s)
        calls, samples = sink.tables()
    # what the build wrote before streaming: pandas' concat of the parts, to Parquet and back
    want_c = _round_trip(pd.concat([c for c, _ in parts], ignore_index=True), tmp_path / "want")
    want_s = _round_trip(pd.concat([s.drop(columns=["text"]) for _, s in parts], ignore_index=True), tmp_path / "want")
    pd.testing.assert_frame_equal(calls, want_c, check_exact=True)
    pd.testing.assert_frame_equal(samples, want_s, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), want_c, check_exact=True)
    texts = pd.read_parquet(tmp_path / "k-texts.parquet")["text"].tolist()
    assert texts == [t for _, s in parts for t in s["text"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "k-calls.parquet",
        "k-samples.parquet",
        "k-texts.parquet",
        "want",
    ]


def test_a_failed_build_leaves_no_files(tmp_path: Path) -> None:
    paths = (tmp_path / "k-calls.parquet", tmp_path / "k-samples.parquet")
    with pytest.raises(RuntimeError, match="boom"), mod._TableSink(tmp_path / "k-texts.parquet", paths) as sink:
        sink.add(pd.DataFrame({"item_id": ["a"]}), pd.DataFrame({"item_id": ["a"], "text": ["x"]}))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("with_texts", [True, False])
def test_a_chunk_without_sample_rows_joins_like_concat(tmp_path: Path, with_texts: bool) -> None:
    """A chunk whose every call failed has no sample rows (a frame with no columns): it adds nothing."""
    paths = (tmp_path / "k-calls.parquet", tmp_path / "k-samples.parquet")
    c1, s1 = pd.DataFrame({"item_id": ["a"], "cost_pico": [1]}), pd.DataFrame({"item_id": ["a"], "text": ["x"]})
    c2, s2 = pd.DataFrame({"item_id": ["b"], "cost_pico": [0]}), pd.DataFrame([])
    with mod._TableSink(tmp_path / "k-texts.parquet" if with_texts else None, paths) as sink:
        sink.add(c1, s1)
        sink.add(c2, s2)
        calls, samples = sink.tables()
    assert calls["item_id"].tolist() == ["a", "b"] and samples["item_id"].tolist() == ["a"]
    assert ("text" in samples) is not with_texts


def test_a_failed_task_cancels_the_tasks_queued_behind_it() -> None:
    class Fut:
        def __init__(self, job: int) -> None:
            self.job, self.cancelled = job, False

        def result(self) -> int:
            if self.job == 1:
                raise RuntimeError("task 1 failed")
            return self.job

        def cancel(self) -> bool:
            self.cancelled = True
            return True

    made: list[Fut] = []

    def submit(job: int) -> Fut:
        made.append(Fut(job))
        return made[-1]

    got = []
    with pytest.raises(RuntimeError, match="task 1 failed"):
        for job, res in mod.in_order(range(10), submit, window=3):
            got.append((job, res))
    assert got == [(0, 0)]
    assert [f.job for f in made] == [0, 1, 2, 3]  # never more than the window ahead
    assert [f.job for f in made if f.cancelled] == [2, 3]
