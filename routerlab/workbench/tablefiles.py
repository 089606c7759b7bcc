"""The outcome table's Parquet files read by DuckDB, item range by item range (the out-of-core sweep).

The build writes the ``calls`` and ``samples`` tables item by item, in item order, so the rows of items
``lo:hi`` are one contiguous run of rows in each file. :func:`item_index` finds where each item's run
starts (one DuckDB pass over the keys); :func:`read_rows` then reads one run by row number, and DuckDB
reads only the Parquet row groups that hold it. Nothing here holds more than the rows asked for, so a
table far larger than memory is swept a shard at a time (see :mod:`routerlab.workbench.decompose`).

DuckDB is in the ``workbench`` extra; it is imported only when a table is read from disk.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routerlab.errors import WorkbenchError

_CONS: dict[tuple[int, int], Any] = {}  # (process, thread) -> its DuckDB connection
_CONS_LOCK = threading.Lock()


def _close_all() -> None:
    """Before a fork: close every connection, so no DuckDB worker thread holds a lock the child inherits
    (a forked process pool, such as the outcome build's, would hang). They reopen on next use."""
    with _CONS_LOCK:
        for con in _CONS.values():
            try:
                con.close()
            except Exception:  # a connection already closed  # noqa: S110
                pass
        _CONS.clear()


os.register_at_fork(before=_close_all)


def _con() -> Any:
    """A DuckDB connection for this thread of this process (connections are not shared across threads)."""
    key = (os.getpid(), threading.get_ident())
    with _CONS_LOCK:
        con = _CONS.get(key)
    if con is None:
        try:
            import duckdb
        except ImportError:
            raise WorkbenchError(
                "an outcome table on disk is read with DuckDB: pip install 'routerlab[workbench]'"
            ) from None
        con = duckdb.connect()
        with _CONS_LOCK:
            _CONS[key] = con
    return con


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def count_rows(path: Path) -> int:
    """Rows in a Parquet file (from its footer: no data is read)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"{path}: cannot read the outcome table ({e})") from None


@dataclass(frozen=True)
class ItemIndex:
    """Where each item's rows are, in item order: ``calls_start[i]:calls_start[i + 1]`` in the calls file
    (one longer than the items), likewise in the samples file."""

    item_id: np.ndarray  # object: the item ids, in the order the build wrote them
    complexity: np.ndarray  # object: each item's complexity class name
    calls_start: np.ndarray  # int64 (N + 1,)
    samples_start: np.ndarray  # int64 (N + 1,)


def item_index(calls: Path, samples: Path) -> ItemIndex:
    """The item order and row runs of a table's two files; raises :class:`WorkbenchError` if an item's rows
    are not one contiguous run (a file not written by the build)."""
    q = (
        "SELECT item_id, first(complexity) AS complexity, min(file_row_number) AS lo, max(file_row_number) AS hi, "
        f"count(*) AS n FROM read_parquet({_lit(calls)}, file_row_number = true) GROUP BY item_id ORDER BY lo"
    )
    try:
        c = _frame(q)
        s = _frame(
            "SELECT item_id, min(file_row_number) AS lo, max(file_row_number) AS hi, count(*) AS n "
            f"FROM read_parquet({_lit(samples)}, file_row_number = true) GROUP BY item_id"
        )
    except Exception as e:  # DuckDB's own error classes: a missing or unreadable file
        raise WorkbenchError(f"cannot read the outcome table's files {calls.name}, {samples.name}: {e}") from None
    n = len(c)
    lo, hi, cnt = (c[k].to_numpy(np.int64) for k in ("lo", "hi", "n"))
    calls_start = np.concatenate([lo, [int(hi[-1]) + 1 if n else 0]])
    if n and (lo[0] != 0 or not np.array_equal(hi - lo + 1, cnt) or not np.array_equal(calls_start[1:], hi + 1)):
        raise WorkbenchError(f"{calls}: the rows of an item are not one run in item order; rebuild the table")
    per = dict(zip(s["item_id"], zip(s["lo"].to_numpy(np.int64), s["n"].to_numpy(np.int64), strict=True), strict=True))
    unknown = set(per) - set(c["item_id"])
    if unknown:
        raise WorkbenchError(f"{samples}: sample rows of items the calls table lacks ({sorted(unknown)[:3]})")
    counts = np.array([per.get(i, (0, 0))[1] for i in c["item_id"]], np.int64)
    samples_start = np.concatenate([[0], np.cumsum(counts)])
    firsts = np.array([per[i][0] for i in c["item_id"] if i in per], np.int64)
    if not np.array_equal(firsts, samples_start[:-1][counts > 0]) or (
        len(s) and not np.array_equal(s["hi"].to_numpy(np.int64) - s["lo"].to_numpy(np.int64) + 1, s["n"].to_numpy())
    ):
        raise WorkbenchError(f"{samples}: the rows of an item are not one run in item order; rebuild the table")
    return ItemIndex(
        c["item_id"].to_numpy(object), c["complexity"].to_numpy(object), calls_start.astype(np.int64), samples_start
    )


def _frame(query: str) -> pd.DataFrame:
    """A query's result as pandas, by way of Arrow (the same column types as ``pd.read_parquet``)."""
    got: pd.DataFrame = _con().sql(query).to_arrow_table().to_pandas()
    return got


def source(path: Path, *, row_numbers: bool = False) -> str:
    """The SQL table expression of a Parquet file (for :func:`query`); ``row_numbers``: with its
    ``file_row_number`` column."""
    return f"read_parquet({_lit(path)}{', file_row_number = true' if row_numbers else ''})"


def query(sql: str) -> pd.DataFrame:
    """A DuckDB query's result as pandas (aggregates over a table's files)."""
    try:
        return _frame(sql)
    except Exception as e:  # duckdb.Error and its kinds (a missing or unreadable file)
        raise WorkbenchError(f"cannot read the outcome table from disk: {e}") from None


def distinct(path: Path, column: str) -> list[Any]:
    """The distinct values of one column."""
    return list(query(f"SELECT DISTINCT {_ident(column)} AS v FROM {source(path)}")["v"])


def read_rows(path: Path, lo: int, hi: int, columns: list[str] | None = None) -> pd.DataFrame:
    """Rows ``lo:hi`` of a Parquet file, in file order (DuckDB skips the row groups outside them)."""
    cols = "* EXCLUDE (file_row_number)" if columns is None else ", ".join(_ident(c) for c in columns)
    return _frame(
        f"SELECT {cols} FROM read_parquet({_lit(path)}, file_row_number = true) "
        f"WHERE file_row_number >= {int(lo)} AND file_row_number < {int(hi)} ORDER BY file_row_number"
    )


def read_columns(path: Path, columns: list[str], *, variant: str | None = None) -> pd.DataFrame:
    """Some columns of every row (of one ``variant``), in file order: what a threshold grid reads."""
    where = "" if variant is None else " WHERE variant = '" + variant.replace("'", "''") + "'"
    return _frame(
        f"SELECT {', '.join(_ident(c) for c in columns)} FROM read_parquet({_lit(path)}, file_row_number = true)"
        f"{where} ORDER BY file_row_number"
    )


def schema_frame(path: Path) -> pd.DataFrame:
    """A zero-row frame with the file's columns and types (the table's shape, no data)."""
    import pyarrow.parquet as pq

    frame: pd.DataFrame = pq.read_schema(path).empty_table().to_pandas()
    return frame
