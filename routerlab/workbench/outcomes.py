"""The outcome table: every recorded (item, tier, variant, sample), replayed once.

For each item of an eval set and each tier of the ladder, the cassettes hold
the answer to the router's *single* call and, on non-final tiers, to its
*k-sample* call(s). :func:`build_outcomes` replays each of them once through
the real adapters and prices it with the real price book, giving two tables:

``calls`` (one row per item, tier and variant)
    item_id, complexity, tier_index, tier, model, variant (``single`` or
    ``k2``, ``k3`` ...), k, n_requests, error_kind, fatal, unusable (bits:
    1 empty, 2 cut off at max_tokens, 4 filtered or refused; of the answer the
    router would return), finish_reason, cost_usd,
    cost_pico (the exact cost in 1e-12 USD, an integer), worst_pico (the
    router's worst-case estimate for the cost cap), reserve_pico (what the
    router counts against the cap beyond cost_pico: one request's share of the
    worst case for each 2xx reply whose body could not be parsed), missing,
    topup_worst_pico, short_cost_pico, short_reserve_pico, short_latency_ms
    (a server that answered ``n=k`` with fewer choices: how many were missing,
    the cap's worst case for the single requests that completed them, and the
    call as it stood before they were sent; 0 otherwise), input_tokens,
    output_tokens, cached_tokens, usage_estimated, latency_ms,
    latency_estimated, agree_<similarity> (agreement of the samples; NaN for
    single), q_<scorer> (quality of the answer the router would return: the
    first sample).
``samples`` (one row per item, tier, variant and sample)
    item_id, tier_index, variant, sample, unusable, q_<scorer>.

The answer texts live in a third file, away from the numbers: one ``text``
column, row for row with ``samples``, streamed there chunk by chunk as the
build goes (:meth:`Outcomes.sample_texts` reads it). A call's answer is the
text of its first sample row. So the tables in memory hold only numbers and
keys; texts were 45-90 % of their memory.

Latency comes from the ``x-routerlab-latency-ms`` header recorded with each
response; imported outputs have none, so it is estimated as
``400 ms + 15 ms per output token`` and marked ``latency_estimated``.

Tables are cached as Parquet under the data directory, keyed by a hash of
the cassette files, the ladder and the settings; any change rebuilds them.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routerlab.classifier import COMPLEXITY_CLASSES, classify_complexity
from routerlab.consistency import SIMILARITY_NAMES, agreement, get_similarity
from routerlab.data.cassettes import (
    ESTIMATED_HEADER,
    LATENCY_HEADER,
    RecordedResponse,
    cassette_name,
    load_cassette_index,
    read_manifest,
    recorded_temperatures,
    replay_keys,
    spec_key,
)
from routerlab.data.evalset import EvalItem
from routerlab.data.packs import read_cassette
from routerlab.data.paths import default_cache_dir
from routerlab.decision import (
    PreparedQuery,
    Reply,
    SampleVotes,
    TierCall,
    TierReply,
    account_replies,
    call_shape,
    classifier_text,
    effective_max_tokens,
    prepare_query,
    quote_worst_case,
    reply_unusable_bits,
    sample_agreement,
    sample_bits,
    votes_of,
)
from routerlab.errors import DataError, ReplayMissError, WorkbenchError
from routerlab.jsonio import atomic_write
from routerlab.learned import StartRouter
from routerlab.policy import RouterPolicy, policy_to_dict
from routerlab.pricing import PriceBook, price_source_version
from routerlab.types import Signal, Usage
from routerlab.workbench import tablefiles
from routerlab.workbench.scoring import get_scorer, scorer_fingerprint
from routerlab.workbench.tablefiles import ItemIndex

PICO = Decimal(10) ** 12
TABLE_VERSION = "6"  # 2: per-character-class input estimate, reserve_pico; 3: letter runs count >= 1; 4: decision
# 5: unusable answers (empty / cut off / filtered), completed short n=k replies, tool-call agreement
# 6: majority answers (pick_/agree_pick_ columns, per-sample unusable bits), adaptive-k draw rows d3, d4, ...
LATENCY_BASE_MS, LATENCY_PER_TOKEN_MS = 400.0, 15.0


@dataclass
class Outcomes:
    """The outcome tables of one eval set replayed from its cassettes."""

    calls: pd.DataFrame
    samples: pd.DataFrame
    items: pd.DataFrame  # item_id, complexity, class_index, position
    tiers: list[str]
    models: list[str]
    ks: list[int]
    similarities: list[str]
    scorers: list[str]
    policy: RouterPolicy
    key: str
    cassettes_sha256: str = ""  # sha256 over the items' cassette files (name and bytes, in item order)
    # the temperature knob: the same items replayed with other sample temperatures at some non-final tiers
    # (every combination the cassettes hold), by temperature vector (see :meth:`at_temperatures`)
    variants: dict[tuple[float, ...], Outcomes] = field(default_factory=dict, repr=False, compare=False)
    # the answer texts, one per ``samples`` row in its order, kept in their own Parquet file away from the
    # numbers (see :meth:`sample_texts`); None where ``samples`` holds a ``text`` column itself
    texts_path: Path | None = field(default=None, repr=False, compare=False)
    # the Parquet files of ``calls`` and ``samples`` (None for a table made in memory); with ``on_disk`` the
    # tables are not loaded (``calls`` and ``samples`` hold no rows) and the sweep reads them item range by
    # item range with DuckDB (see :meth:`shard_dense`)
    files: tuple[Path, Path] | None = field(default=None, repr=False, compare=False)
    on_disk: bool = field(default=False, compare=False)
    _index: ItemIndex | None = field(default=None, init=False, repr=False, compare=False)
    _facts: DenseTable | None = field(default=None, init=False, repr=False, compare=False)
    _dense: tuple[pd.DataFrame, DenseTable] | None = field(default=None, init=False, repr=False, compare=False)
    _start_scores: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def sample_texts(self) -> pd.Series:
        """The text of every ``samples`` row (same index), read from the texts file on each call: the
        tables in memory hold only numbers and keys, so a million-item table does not carry its texts."""
        if "text" in self.samples:
            return self.samples["text"]
        if self.texts_path is None:
            raise WorkbenchError("this outcome table has no texts (no samples.text column and no texts file)")
        try:
            got = pd.read_parquet(self.texts_path, columns=["text"])["text"]
        except (OSError, ValueError, KeyError) as e:
            raise WorkbenchError(f"{self.texts_path}: cannot read the outcome table's texts ({e})") from None
        rows = tablefiles.count_rows(self.files[1]) if self.on_disk and self.files is not None else len(self.samples)
        if len(got) != rows:
            raise WorkbenchError(f"{self.texts_path}: {len(got):,} texts for {rows:,} sample rows; rebuild the table")
        return got if self.on_disk else got.set_axis(self.samples.index)

    # ------------------------------------------------------------ tables on disk (the out-of-core sweep)

    def to_disk(self, folder: str | os.PathLike[str]) -> Outcomes:
        """This table with its tables on disk only: its frames written to ``folder`` as Parquet and not
        held in memory; temperature variants likewise."""
        if self.on_disk:
            return self
        d = Path(folder)  # written even when the table came from files: its frames may have been replaced since
        d.mkdir(parents=True, exist_ok=True)
        files = (d / f"{self.key}-calls.parquet", d / f"{self.key}-samples.parquet")
        for df, f in zip((self.calls, self.samples), files, strict=True):
            _write_frame(df, f)
        return replace(
            self,
            calls=tablefiles.schema_frame(files[0]),
            samples=tablefiles.schema_frame(files[1]),
            variants={vec: v.to_disk(folder) for vec, v in self.variants.items()},
            files=files,
            on_disk=True,
        )

    def load(self) -> Outcomes:
        """This table with its tables read into memory (itself when they are)."""
        if not self.on_disk or self.files is None:
            return self
        return replace(
            self,
            calls=pd.read_parquet(self.files[0]),
            samples=pd.read_parquet(self.files[1]),
            variants={vec: v.load() for vec, v in self.variants.items()},
            on_disk=False,
        )

    def require_loaded(self, what: str) -> None:
        """Raise a :class:`WorkbenchError` saying why, when the table is on disk: ``what`` needs it whole."""
        if self.on_disk:
            raise WorkbenchError(
                f"this outcome table ({self.n_items:,} items) is on disk, not in memory: the sweep reads it in "
                f"item ranges, but {what} needs it whole; load it with Outcomes.load() (or "
                f"build_outcomes(load=True), or set ${OUT_OF_CORE_ENV} above its calls rows to keep such tables "
                "in memory)"
            )

    def _disk_files(self) -> tuple[Path, Path]:
        if self.files is None:
            raise WorkbenchError("this outcome table has no files on disk (see Outcomes.to_disk)")
        return self.files

    def item_index(self) -> ItemIndex:
        """Where each item's rows lie in the two files (read once, then kept)."""
        if self._index is None:
            calls, samples = self._disk_files()
            idx = tablefiles.item_index(calls, samples)
            if list(idx.item_id) != list(self.items["item_id"]):
                raise WorkbenchError(f"{calls}: its items are not this table's items (in order); rebuild the table")
            self._index = idx
        return self._index

    def call_columns(self, columns: list[str], *, variant: str | None = None) -> pd.DataFrame:
        """Some columns of the calls table (the rows of one ``variant``), from memory or from disk."""
        if not self.on_disk:
            calls = self.calls if variant is None else self.calls[self.calls["variant"] == variant]
            return calls[columns]
        return tablefiles.read_columns(self._disk_files()[0], columns, variant=variant)

    def facts(self) -> DenseTable:
        """What a policy is checked against before it is simulated (:func:`~routerlab.workbench.kernel.encode`,
        :func:`~routerlab.workbench.sweep.default_grid`): the recorded k counts per tier, the draws and how
        far each item's reach, the complexity classes. In memory it is :meth:`dense`; on disk a
        :class:`DenseTable` holding only those, computed by DuckDB (its per-call arrays are empty)."""
        if not self.on_disk:
            return self.dense()
        if self._facts is None:
            self._facts = _disk_facts(self, self._disk_files()[0])
        return self._facts

    def shard(self, lo: int, hi: int) -> Shard:
        """Items ``lo:hi`` (positions) of a table on disk, as a small picklable task: its
        :meth:`Shard.dense` reads just their rows (in a worker process or on a cluster, too)."""
        idx = self.item_index()
        facts = self.facts()
        light = replace(
            self,
            calls=self.calls.iloc[:0],
            samples=self.samples.iloc[:0],
            items=self.items.iloc[lo:hi].reset_index(drop=True),
            variants={},
        )
        return Shard(
            light, (int(idx.calls_start[lo]), int(idx.calls_start[hi])),
            (int(idx.samples_start[lo]), int(idx.samples_start[hi])), facts.k_max, facts.k_count, facts.n,
        )  # fmt: skip

    def shard_dense(self, lo: int, hi: int) -> DenseTable:
        """The dense arrays of items ``lo:hi``, read from the files: equal to ``dense().take(range(lo, hi))``
        of the same table in memory (a test checks it), draws padded to the whole table's."""
        return self.shard(lo, hi).dense()

    def start_scores(self, router: StartRouter) -> np.ndarray:
        """(non-final tiers, items): the learned start router's score of every item, computed by the
        router's own pure-Python :meth:`~routerlab.learned.StartRouter.scores` (cached per model)."""
        if "request_text" not in self.items:
            raise WorkbenchError(
                "this outcome table has no request texts (items.request_text), which the learned start router "
                "reads; build it with build_outcomes"
            )
        got = self._start_scores.get(router.fingerprint)
        if got is None:
            cl = self.policy.classifier
            rows = [router.scores(str(t), classify_complexity(str(t), cl)) for t in self.items["request_text"]]
            got = np.array(rows, np.float64).reshape(self.n_items, len(router.tiers)).T.copy()
            self._start_scores[router.fingerprint] = got
        return got

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def temperatures(self) -> tuple[float, ...]:
        """The sample temperature of each non-final tier this table was replayed at."""
        return tuple(self.policy.sample_temperature(i) for i in range(len(self.tiers) - 1))

    def temperature_options(self) -> list[tuple[float, ...]]:
        """Every temperature vector this table can simulate: its own first, then its variants'."""
        return [self.temperatures, *sorted(self.variants)]

    def resolve_temperatures(self, temps: Sequence[float | None] | None) -> tuple[float, ...]:
        """A point's temperature vector with None entries (and None) read as this table's own."""
        if temps is None:
            return self.temperatures
        if len(temps) != len(self.tiers) - 1:
            raise WorkbenchError(
                f"sample temperatures {list(temps)} need one entry per non-final tier ({len(self.tiers) - 1})"
            )
        return tuple(b if t is None else float(t) for b, t in zip(self.temperatures, temps, strict=True))

    def at_temperatures(self, temps: Sequence[float | None] | None) -> Outcomes:
        """The table replayed at these sample temperatures: this one or a recorded variant."""
        want = self.resolve_temperatures(temps)
        if want == self.temperatures:
            return self
        got = self.variants.get(want)
        if got is None:
            shown = "; ".join("/".join(f"{t:g}" for t in v) for v in self.temperature_options())
            raise WorkbenchError(
                f"no samples recorded at temperatures {'/'.join(f'{t:g}' for t in want)} (per non-final tier); "
                f"recorded: {shown}. Record them (record/import with several temperatures) to sweep this knob"
            )
        return got

    def dense(self) -> DenseTable:
        """The calls table as dense arrays (built once; rebuilt if ``calls`` is replaced)."""
        self.require_loaded("building its dense arrays")
        if self._dense is None or self._dense[0] is not self.calls:
            self._dense = (self.calls, _build_dense(self))
        return self._dense[1]


# the columns the dense arrays are built from (the rest, such as model names and token counts, is not read
# for an item range of a table on disk)
_DENSE_COLUMNS = (
    "item_id", "tier_index", "variant", "sample", "error_kind", "fatal", "unusable", "cost_pico", "worst_pico",
    "reserve_pico", "latency_ms", "topup_worst_pico", "short_cost_pico", "short_reserve_pico", "short_latency_ms",
)  # fmt: skip
_DENSE_PREFIXES = ("q_", "agree_", "pick_", "pbits_")


def _dense_columns(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame.columns if c in _DENSE_COLUMNS or str(c).startswith(_DENSE_PREFIXES)]


@dataclass(frozen=True)
class Shard:
    """Items of a table on disk (see :meth:`Outcomes.shard`): the table without rows, its items cut to the
    shard's, the shard's row runs in the two files, and what the whole table's draws and k counts are."""

    table: Outcomes
    calls_rows: tuple[int, int]
    samples_rows: tuple[int, int]
    k_max: int
    k_count_all: np.ndarray
    n_all: int

    @property
    def n(self) -> int:
        return self.table.n_items

    def dense(self) -> DenseTable:
        """The shard's dense arrays, its rows read from the files by DuckDB."""
        calls_p, samples_p = self.table._disk_files()
        part = replace(
            self.table,
            calls=tablefiles.read_rows(calls_p, *self.calls_rows, columns=_dense_columns(self.table.calls)),
            samples=tablefiles.read_rows(samples_p, *self.samples_rows, columns=_dense_columns(self.table.samples)),
            on_disk=False,
        )
        if len(part.items) and (
            part.calls["item_id"].iloc[0] != part.items["item_id"].iloc[0]
            or part.calls["item_id"].iloc[-1] != part.items["item_id"].iloc[-1]
        ):
            raise WorkbenchError(f"{calls_p}: rows out of step with the table's items; rebuild the table")
        return _build_dense(part, k_max=self.k_max, k_count_all=self.k_count_all, n_all=self.n_all)


@dataclass
class DenseTable:
    """The calls table as dense arrays over (item, tier) and (k, item, non-final tier), for the sweep."""

    n: int
    t: int
    cls: np.ndarray  # (N,)
    s_cost: np.ndarray  # (N, T) int64 pico
    s_worst: np.ndarray
    s_res: np.ndarray  # reserve counted against the cap beyond the cost (unparsed 2xx replies)
    s_err: np.ndarray  # 0 ok, 1 retryable, 2 fatal
    s_bad: np.ndarray  # unusable bits of the answer (1 empty, 2 length, 4 filtered)
    s_lat: np.ndarray
    s_q: dict[str, np.ndarray]
    ks: list[int]
    sims: list[str]
    k_cost: np.ndarray  # (nk, N, T-1)
    k_worst: np.ndarray
    k_res: np.ndarray
    k_err: np.ndarray
    k_bad: np.ndarray
    k_lat: np.ndarray
    k_tuw: np.ndarray  # worst case of the requests that completed a short n=k reply (0: none)
    k_scost: np.ndarray  # the call's cost, reserve and latency before that completion
    k_sres: np.ndarray
    k_slat: np.ndarray
    k_q: dict[str, np.ndarray]
    agree: np.ndarray  # (nsim, nk, N, T-1)
    k_count: np.ndarray  # (nk, T-1) int: items with that k recorded at that non-final tier
    # majority answers: per similarity, the medoid sample of each k call, its agreement and its unusable bits
    k_pick: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0), np.int64))  # (nsim, nk, N, T-1)
    k_pagree: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0)))
    k_pbad: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0), np.int8))
    k_sq: dict[str, np.ndarray] = field(default_factory=dict)  # (nk, N, T-1, J): quality of each sample
    # adaptive k: the draws of samples 3 .. k_max after k=2 (index m - 3), and the state after each
    k_max: int = 2  # the most samples the draws recorded reach
    d_cost: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.int64))  # (D, N, T-1)
    d_worst: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.int64))
    d_res: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.int64))
    d_err: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.int8))
    d_lat: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    d_agree: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0)))  # (nsim, D, N, T-1): first sample
    d_pick: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0), np.int64))  # medoid of samples so far
    d_pagree: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0)))
    d_pbad: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0), np.int8))
    d_have: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # (N, T-1) samples a route can take

    @property
    def k_present(self) -> np.ndarray:
        """(nk,) bool: that k is recorded for every item at every non-final tier."""
        present: np.ndarray = self.k_count.sum(axis=1) == self.n * (self.t - 1)
        return present

    def draws_cover(self, k_max: int, tier: int) -> bool:
        """Adaptive k up to ``k_max`` samples is recorded for every item at non-final ``tier`` (or its draws
        end earlier at a recorded failure, where the route stops drawing too)."""
        return k_max <= 2 or (self.d_have.size > 0 and bool((self.d_have[:, tier] >= k_max).all()))

    def k_tiers(self, j: int) -> tuple[int, ...]:
        """The non-final tiers where k number ``j`` is recorded for every item."""
        return tuple(int(ti) for ti in np.flatnonzero(self.k_count[j, : self.t - 1] == self.n))

    def take(self, idx: np.ndarray) -> DenseTable:
        """The table of the items ``idx`` (positions, in that order; repeats allowed), every array cut along
        its item axis. ``k_count`` keeps only the tiers recorded for every item (counted as all of ``idx``):
        a sub-table is simulated with policies already checked against the whole table."""
        idx = np.asarray(idx, np.int64)
        m = len(idx)

        def cut(x: np.ndarray, axis: int) -> np.ndarray:
            return np.take(x, idx, axis=axis) if x.ndim > axis and x.shape[axis] == self.n else x

        axes = {f.name: _ITEM_AXIS[f.name] for f in dataclasses.fields(self) if f.name in _ITEM_AXIS}
        parts: dict[str, Any] = {}
        for name, axis in axes.items():
            x = getattr(self, name)
            parts[name] = {k: cut(v, axis) for k, v in x.items()} if isinstance(x, dict) else cut(x, axis)
        return dataclasses.replace(self, n=m, k_count=np.where(self.k_count == self.n, m, 0).astype(np.int64), **parts)


# the item axis of each DenseTable array (see :meth:`DenseTable.take`)
_ITEM_AXIS = {
    **dict.fromkeys(("cls", "s_cost", "s_worst", "s_res", "s_err", "s_bad", "s_lat", "s_q", "d_have"), 0),
    **dict.fromkeys(
        (
            "k_cost",
            "k_worst",
            "k_res",
            "k_err",
            "k_bad",
            "k_lat",
            "k_tuw",
            "k_scost",
            "k_sres",
            "k_slat",
            "k_q",
            "k_sq",
            "d_cost",
            "d_worst",
            "d_res",
            "d_err",
            "d_lat",
        ),
        1,
    ),  # fmt: skip
    **dict.fromkeys(("agree", "k_pick", "k_pagree", "k_pbad", "d_agree", "d_pick", "d_pagree", "d_pbad"), 2),
}


def _write_frame(df: pd.DataFrame, path: Path) -> None:
    def write(tmp: Path) -> None:
        df.to_parquet(tmp, index=False)

    atomic_write(path, write)


def _disk_facts(o: Outcomes, calls_p: Path) -> DenseTable:
    """:meth:`Outcomes.facts` of a table on disk: k counts, draws and each item's reach by DuckDB queries,
    computed as :func:`_build_dense` computes them."""
    n, t = o.n_items, len(o.tiers)
    _disk_complete(o, calls_p)
    tk, nk = max(t - 1, 1), max(len(o.ks), 1)
    k_count = np.zeros((nk, tk), np.int64)
    counts = tablefiles.query(
        f"SELECT variant, tier_index, count(*) AS n FROM {tablefiles.source(calls_p)} "
        "WHERE variant LIKE 'k%' GROUP BY variant, tier_index"
    )
    for v, ti, c in counts.itertuples(index=False):
        k = int(str(v)[1:])
        if k in o.ks and ti < tk:
            k_count[o.ks.index(k), int(ti)] = int(c)
    top = tablefiles.query(f"SELECT max(draw) AS m FROM {tablefiles.source(calls_p)} WHERE variant LIKE 'd%'")
    kmax = max(2, int(top["m"].iloc[0]) if len(top) and pd.notna(top["m"].iloc[0]) else 2)
    big = 1 << 20
    d_have = np.zeros((n, tk), np.int64)
    if 2 in o.ks:
        reach = tablefiles.query(
            f"SELECT item_id, tier_index, max(CASE WHEN error_kind IS NOT NULL THEN {big} "
            f"WHEN variant = 'k2' THEN 2 ELSE draw END) AS have FROM {tablefiles.source(calls_p)} "
            "WHERE variant = 'k2' OR variant LIKE 'd%' GROUP BY item_id, tier_index"
        )
        pos = pd.Index(o.items["item_id"]).get_indexer(reach["item_id"])
        ti = reach["tier_index"].to_numpy(np.int64)
        ok = (pos >= 0) & (ti < tk)
        d_have[pos[ok], ti[ok]] = reach["have"].to_numpy(np.int64)[ok]
    e1, e2, e3, e4 = (np.zeros((0,) * d) for d in (1, 2, 3, 4))
    return DenseTable(
        n, t, o.items["class_index"].to_numpy(), e2, e2, e2, e2, e2, e2, {}, list(o.ks), list(o.similarities),
        e3, e3, e3, e3, e3, e3, e3, e3, e3, e3, {}, e4, k_count, k_max=kmax, d_have=d_have,
    )  # fmt: skip


def _disk_complete(o: Outcomes, calls_p: Path) -> None:
    """:func:`_check_complete` over a whole table on disk, by DuckDB aggregates: a gap or a duplicate
    anywhere is refused before the first item range is swept (the same errors as in memory; about 1 s
    for a million mot_date items)."""
    n, t = o.n_items, len(o.tiers)
    src = tablefiles.source(calls_p)
    numbered = tablefiles.source(calls_p, row_numbers=True)
    got = tablefiles.query(
        "SELECT count(*) - count(DISTINCT (item_id, tier_index, variant)) AS dup, "
        "count(*) FILTER (WHERE variant = 'single') AS single, "
        f"count(*) FILTER (WHERE variant <> 'single' AND tier_index >= {t - 1}) AS final_k, "
        f"count(*) FILTER (WHERE tier_index < 0 OR tier_index >= {t}) AS bad_tier FROM {src}"
    )
    dup, single, final_k, bad = (int(got[c].iloc[0]) for c in ("dup", "single", "final_k", "bad_tier"))
    if bad:
        r = tablefiles.query(
            f"SELECT item_id, tier_index FROM {numbered} WHERE tier_index < 0 OR tier_index >= {t} "
            "ORDER BY file_row_number LIMIT 1"
        ).iloc[0]
        raise DataError(_tier_range_error(r["item_id"], r["tier_index"], t))
    if dup:
        r = tablefiles.query(
            "SELECT item_id, tier_index, variant FROM (SELECT item_id, tier_index, variant, file_row_number, "
            "row_number() OVER (PARTITION BY item_id, tier_index, variant ORDER BY file_row_number) AS r "
            f"FROM {numbered}) WHERE r = 2 ORDER BY file_row_number LIMIT 1"
        ).iloc[0]
        raise DataError(f"outcome table: item {r['item_id']!r}, tier {r['tier_index']}, {r['variant']} appears twice")
    if single != n * t:
        rows = tablefiles.query(f"SELECT item_id, tier_index FROM {src} WHERE variant = 'single'")
        have = set(zip(rows["item_id"], rows["tier_index"], strict=True))
        missing = next(((i, k) for i in o.items["item_id"] for k in range(t) if (i, k) not in have), None)
        raise DataError(
            f"outcome table: {n * t - single} (item, tier) single calls are missing"
            + (f", e.g. item {missing[0]!r} at tier {missing[1]}" if missing else "")
        )
    if final_k:
        raise DataError("outcome table: k-sample rows at the final tier (the router never checks there)")


def _build_dense(
    o: Outcomes, *, k_max: int = 2, k_count_all: np.ndarray | None = None, n_all: int | None = None
) -> DenseTable:
    """The dense arrays of ``o``'s rows. For one item range of a larger table: ``k_max``, the draws of the
    whole table (the arrays are padded to them), and its ``k_count`` over ``n_all`` items (a tier recorded
    for every item there counts as recorded for every item here, as :meth:`DenseTable.take` counts it)."""
    calls = o.calls
    index = pd.Index(o.items["item_id"])
    n, t = len(index), len(o.tiers)
    ii = _positions(index, calls["item_id"], "calls")
    ti = calls["tier_index"].to_numpy(np.int64)
    codes, names = pd.factorize(calls["variant"])
    _check_complete(calls, n, t, key=(ii * max(t, 1) + ti) * max(len(names), 1) + codes)
    variant_is = {str(v): codes == c for c, v in enumerate(names)}
    none = np.zeros(len(calls), bool)
    err = np.where(calls["error_kind"].isna(), 0, np.where(calls["fatal"], 2, 1))
    single = variant_is.get("single", none)

    def grid(values: np.ndarray, mask: np.ndarray, shape: tuple[int, ...], fill: Any, dtype: Any) -> np.ndarray:
        out = np.full(shape, fill, dtype=dtype)
        out[ii[mask], ti[mask]] = values[mask]
        return out

    s_cost = grid(calls["cost_pico"].to_numpy(), single, (n, t), 0, np.int64)
    s_worst = grid(calls["worst_pico"].to_numpy(), single, (n, t), 0, np.int64)
    s_res = grid(calls["reserve_pico"].to_numpy(), single, (n, t), 0, np.int64)
    s_err = grid(err, single, (n, t), 0, np.int8)
    bad = calls["unusable"].to_numpy().astype(np.int8)
    s_bad = grid(bad, single, (n, t), 0, np.int8)
    s_lat = grid(calls["latency_ms"].to_numpy(), single, (n, t), 0.0, float)
    s_q = {sc: grid(calls[f"q_{sc}"].to_numpy(dtype=float), single, (n, t), np.nan, float) for sc in o.scorers}
    ks = list(o.ks)
    sims = list(o.similarities)
    tk = max(t - 1, 1)
    nk = max(len(ks), 1)
    k_cost = np.zeros((nk, n, tk), np.int64)
    k_worst = np.zeros((nk, n, tk), np.int64)
    k_res = np.zeros((nk, n, tk), np.int64)
    k_err = np.zeros((nk, n, tk), np.int8)
    k_bad = np.zeros((nk, n, tk), np.int8)
    k_lat = np.zeros((nk, n, tk))
    k_tuw = np.zeros((nk, n, tk), np.int64)
    k_scost = np.zeros((nk, n, tk), np.int64)
    k_sres = np.zeros((nk, n, tk), np.int64)
    k_slat = np.zeros((nk, n, tk))
    k_q = {sc: np.full((nk, n, tk), np.nan) for sc in o.scorers}
    agree = np.full((len(sims), nk, n, tk), np.nan)
    k_count = np.zeros((nk, tk), np.int64)
    for j, k in enumerate(ks):
        m = variant_is.get(f"k{k}", none)
        k_cost[j][ii[m], ti[m]] = calls["cost_pico"].to_numpy()[m]
        k_worst[j][ii[m], ti[m]] = calls["worst_pico"].to_numpy()[m]
        k_res[j][ii[m], ti[m]] = calls["reserve_pico"].to_numpy()[m]
        k_err[j][ii[m], ti[m]] = err[m]
        k_bad[j][ii[m], ti[m]] = bad[m]
        k_lat[j][ii[m], ti[m]] = calls["latency_ms"].to_numpy()[m]
        k_tuw[j][ii[m], ti[m]] = calls["topup_worst_pico"].to_numpy()[m]
        k_scost[j][ii[m], ti[m]] = calls["short_cost_pico"].to_numpy()[m]
        k_sres[j][ii[m], ti[m]] = calls["short_reserve_pico"].to_numpy()[m]
        k_slat[j][ii[m], ti[m]] = calls["short_latency_ms"].to_numpy()[m]
        for sc in o.scorers:
            k_q[sc][j][ii[m], ti[m]] = calls[f"q_{sc}"].to_numpy(dtype=float)[m]
        for si, sim in enumerate(sims):
            agree[si, j][ii[m], ti[m]] = calls[f"agree_{sim}"].to_numpy(dtype=float)[m]
        k_count[j] = np.bincount(ti[m], minlength=tk)[:tk]
    if k_count_all is not None:  # an item range of a larger table: count as DenseTable.take does
        k_count = np.where(k_count_all == n_all, n, 0).astype(np.int64)
    cls = o.items["class_index"].to_numpy()
    nsim = len(sims)
    k_pick = np.zeros((nsim, nk, n, tk), np.int64)
    k_pagree = np.full((nsim, nk, n, tk), np.nan)
    k_pbad = np.zeros((nsim, nk, n, tk), np.int8)
    for j, k in enumerate(ks):
        m = variant_is.get(f"k{k}", none)
        for si, sim in enumerate(sims):
            if f"pick_{sim}" in calls:
                k_pick[si, j][ii[m], ti[m]] = np.maximum(calls[f"pick_{sim}"].to_numpy()[m], 0)
                k_pagree[si, j][ii[m], ti[m]] = calls[f"agree_pick_{sim}"].to_numpy(dtype=float)[m]
                k_pbad[si, j][ii[m], ti[m]] = calls[f"pbits_{sim}"].to_numpy()[m]
    draw_of = np.array([int(v[1:]) if str(v).startswith("d") else 0 for v in names], np.int64)[codes]
    kmax = max(2, k_max, int(draw_of.max()) if len(draw_of) else 2)
    nd = kmax - 2
    d_cost = np.zeros((nd, n, tk), np.int64)
    d_worst = np.zeros((nd, n, tk), np.int64)
    d_res = np.zeros((nd, n, tk), np.int64)
    d_err = np.zeros((nd, n, tk), np.int8)
    d_lat = np.zeros((nd, n, tk))
    d_agree = np.full((nsim, nd, n, tk), np.nan)
    d_pick = np.zeros((nsim, nd, n, tk), np.int64)
    d_pagree = np.full((nsim, nd, n, tk), np.nan)
    d_pbad = np.zeros((nsim, nd, n, tk), np.int8)
    for d in range(nd):
        m = draw_of == d + 3
        at = (ii[m], ti[m])
        d_cost[d][at] = calls["cost_pico"].to_numpy()[m]
        d_worst[d][at] = calls["worst_pico"].to_numpy()[m]
        d_res[d][at] = calls["reserve_pico"].to_numpy()[m]
        d_err[d][at] = err[m]
        d_lat[d][at] = calls["latency_ms"].to_numpy()[m]
        for si, sim in enumerate(sims):
            d_agree[si, d][at] = calls[f"agree_{sim}"].to_numpy(dtype=float)[m]
            d_pick[si, d][at] = np.maximum(calls[f"pick_{sim}"].to_numpy()[m], 0)
            d_pagree[si, d][at] = calls[f"agree_pick_{sim}"].to_numpy(dtype=float)[m]
            d_pbad[si, d][at] = calls[f"pbits_{sim}"].to_numpy()[m]
    # how many samples a route can take at each (item, non-final tier): 2 plus the draws recorded, or any
    # number where the k=2 call or a draw failed (the route stops drawing there)
    big = 1 << 20
    d_have = np.zeros((n, tk), np.int64)
    if 2 in ks:
        m2 = variant_is.get("k2", none)
        d_have[ii[m2], ti[m2]] = np.where(err[m2] > 0, big, 2)
        for d in range(nd):
            m = draw_of == d + 3
            at = (ii[m], ti[m])
            d_have[at] = np.where(err[m] > 0, big, np.maximum(d_have[at], d + 3))
    jn = max(max(ks, default=1), kmax)
    samples = o.samples
    s_ii = _positions(index, samples["item_id"], "samples")  # (an item range may hold no sample rows at all)
    s_ti = samples["tier_index"].to_numpy(np.int64)
    s_j = samples["sample"].to_numpy(np.int64)
    s_var = samples["variant"].astype(str).to_numpy()
    k_sq = {sc: np.full((nk, n, tk, jn), np.nan) for sc in o.scorers}
    for j, k in enumerate(ks):
        m = s_var == f"k{k}"
        if k == 2:
            m = m | np.char.startswith(s_var.astype(str), "d")
        m &= (s_ti < tk) & (s_j < jn)
        for sc in o.scorers:
            k_sq[sc][j][s_ii[m], s_ti[m], s_j[m]] = samples[f"q_{sc}"].to_numpy(dtype=float)[m]
    return DenseTable(
        n,
        t,
        cls,
        s_cost,
        s_worst,
        s_res,
        s_err,
        s_bad,
        s_lat,
        s_q,
        ks,
        sims,
        k_cost,
        k_worst,
        k_res,
        k_err,
        k_bad,
        k_lat,
        k_tuw,
        k_scost,
        k_sres,
        k_slat,
        k_q,
        agree,
        k_count,
        k_pick,
        k_pagree,
        k_pbad,
        k_sq,
        kmax,
        d_cost,
        d_worst,
        d_res,
        d_err,
        d_lat,
        d_agree,
        d_pick,
        d_pagree,
        d_pbad,
        d_have,
    )


def _positions(index: pd.Index, ids: pd.Series, what: str) -> np.ndarray:
    """Each row's item position (a row of an item the items table lacks is a DataError)."""
    pos = index.get_indexer(pd.Index(ids)) if len(ids) else np.zeros(0, np.int64)
    if (pos < 0).any():
        raise DataError(f"outcome table: {what} rows of item {ids[pos < 0].iloc[0]!r}, which is not among its items")
    return np.asarray(pos, np.int64)


def _check_complete(calls: pd.DataFrame, n_items: int, n_tiers: int, *, key: np.ndarray | None = None) -> None:
    """Every (item, tier) has one single-call row and at most one row per k variant, k rows only at
    non-final tiers: a gap or a duplicate would otherwise read as a free, successful call. ``key``: one
    integer per row for (item, tier, variant), which finds duplicates faster than the three columns."""
    ti = calls["tier_index"].to_numpy()
    bad = (ti < 0) | (ti >= n_tiers)
    if bad.any():
        r = calls[bad].iloc[0]
        raise DataError(_tier_range_error(r["item_id"], r["tier_index"], n_tiers))
    if key is not None:
        dup = pd.Series(pd.Index(key).duplicated(), index=calls.index)
    else:
        dup = calls.duplicated(["item_id", "tier_index", "variant"])
    if dup.any():
        r = calls[dup].iloc[0]
        raise DataError(f"outcome table: item {r['item_id']!r}, tier {r['tier_index']}, {r['variant']} appears twice")
    single = calls[calls["variant"] == "single"]
    if len(single) != n_items * n_tiers:
        have = set(zip(single["item_id"], single["tier_index"], strict=True))
        missing = next(((i, t) for i in calls["item_id"].unique() for t in range(n_tiers) if (i, t) not in have), None)
        raise DataError(
            f"outcome table: {n_items * n_tiers - len(single)} (item, tier) single calls are missing"
            + (f", e.g. item {missing[0]!r} at tier {missing[1]}" if missing else "")
        )
    if ((calls["variant"] != "single") & (calls["tier_index"] >= n_tiers - 1)).any():
        raise DataError("outcome table: k-sample rows at the final tier (the router never checks there)")


def _tier_range_error(item_id: object, tier: object, n_tiers: int) -> str:
    return f"outcome table: item {item_id!r} has a row at tier {tier}, outside the ladder's tiers 0..{n_tiers - 1}"


def to_pico(cost: Decimal) -> int:
    """``cost`` in whole 1e-12 USD (the sweep's exact integer unit); finer amounts are a DataError."""
    scaled = cost * PICO
    if scaled != scaled.to_integral_value():
        raise DataError(f"cost {cost} USD is not a whole number of 1e-12 USD; the exact sweep cannot represent it")
    return int(scaled)


def _header(r: Reply, name: str) -> str | None:
    return next((v for k, v in (r.headers or {}).items() if k.lower() == name), None)


def _latency(replies: Sequence[Reply], usage: Sequence[Usage | None]) -> tuple[float, bool]:
    """A call's latency: the sum of each reply's recorded ``x-routerlab-latency-ms``; a reply without
    one (imported outputs) counts ``400 ms + 15 ms per output token`` of its own and flags the sum
    as estimated."""
    total, estimated = 0.0, False
    for r, u in zip(replies, usage, strict=True):
        v = _header(r, LATENCY_HEADER)
        if v is None:
            total += LATENCY_BASE_MS + LATENCY_PER_TOKEN_MS * (u.output_tokens if u is not None else 0)
            estimated = True
        else:
            total += float(v)
    return total, estimated


def _variant_row(
    item: EvalItem,
    query: PreparedQuery,
    policy: RouterPolicy,
    index: dict[tuple[str, str, str], list[RecordedResponse]],
    tier_index: int,
    signal: Signal,
    k: int,
    prices: PriceBook,
    keys: dict[str, str],
    *,
    draw: int = 0,
    played: Counter[tuple[str, str, str]] | None = None,
) -> tuple[dict[str, Any], TierReply] | None:
    """One (item, tier, variant) row and the accounted call, by the router's own functions
    (:func:`~routerlab.decision.account_replies`, :func:`~routerlab.decision.quote_worst_case`);
    None when a k-sample variant (or the single requests completing a short n=k reply) was not
    recorded."""
    tier = policy.tiers[tier_index]
    n_requests, samples = call_shape(tier, signal, k)
    api_key = keys.get(tier.api_key_env) if tier.api_key_env else None
    max_tokens = effective_max_tokens(policy, tier_index, query.complexity)
    call = TierCall(tier_index, tier, signal, k, max_tokens, n_requests, samples, policy, query.messages, api_key)
    if draw:  # adaptive k: the single request drawing sample number ``draw`` (the plan's draw call)
        n_requests = samples = 1
        call = replace(call, top_up=1, n_requests=1, samples=1, draw=draw)
    if played is None:
        played = Counter()

    def play(specs: Sequence[Any]) -> list[Reply] | None:
        out: list[Reply] = []
        for s in specs:
            key = spec_key(s)
            recorded = index.get(key, [])
            n = played[key]
            if n >= len(recorded):
                return None
            played[key] = n + 1
            r = recorded[n]
            out.append(Reply(r.status, dict(r.headers), r.body))
        return out

    got = play(call.requests())
    if got is None:
        if signal == "none":
            raise ReplayMissError(
                f"item {item.id!r}, tier {tier.name!r}, model {tier.model!r}: the single call is not recorded",
                item_id=item.id,
                tier=tier.name,
                model=tier.model,
            )
        return None  # this k-sample variant was not recorded (e.g. a single-answer dataset)
    replies = got
    worst = quote_worst_case(prices, call, query)
    tr = account_replies(prices, tier, replies, samples, worst, allow_short=True)
    short = {"missing": 0, "topup_worst_pico": 0, "short_cost_pico": 0, "short_reserve_pico": 0}
    short_latency = 0.0
    if tr.error is None and tr.missing > 0:  # completed by single requests, as the router does
        top_call = replace(call, top_up=tr.missing, n_requests=tr.missing, samples=tr.missing)
        more = play(top_call.requests())
        if more is None:
            return None
        top_worst = quote_worst_case(prices, top_call, query)
        short_latency = _latency(replies, tr.reply_usage)[0]
        short = {
            "missing": tr.missing,
            "topup_worst_pico": to_pico(top_worst),
            "short_cost_pico": to_pico(tr.cost_usd),
            "short_reserve_pico": to_pico(tr.reserve_usd),
        }
        replies = replies + more
        tr = account_replies(prices, tier, replies, samples, worst + top_worst)
    latency, lat_est = _latency(replies, tr.reply_usage)
    row = {
        "variant": "single" if signal == "none" else (f"d{draw}" if draw else f"k{k}"),
        "k": samples,
        "draw": draw,
        "n_requests": tr.n_requests,  # every request made, completions included
        "error_kind": None if tr.error is None else tr.error.kind,
        "fatal": bool(tr.error is not None and not tr.error.retryable),
        "unusable": reply_unusable_bits(tr) if tr.error is None else 0,
        "finish_reason": tr.first_finish_reason(),
        "cost_usd": float(tr.cost_usd),
        "cost_pico": to_pico(tr.cost_usd),
        "worst_pico": to_pico(worst),
        "reserve_pico": to_pico(tr.reserve_usd),
        "input_tokens": tr.usage.input_tokens,
        "output_tokens": tr.usage.output_tokens,
        "cached_tokens": tr.usage.cache_read_tokens,
        "usage_estimated": any(
            u is not None and _header(r, ESTIMATED_HEADER) is not None
            for r, u in zip(replies, tr.reply_usage, strict=True)
        ),
        "latency_ms": latency,
        "latency_estimated": lat_est,
        **short,
        "short_latency_ms": short_latency,
    }
    return row, tr


def _hashes(
    policy: RouterPolicy,
    cassette_dir: Path,
    items: Sequence[EvalItem],
    ks: Sequence[int],
    scorers: Sequence[str],
    k_max: int | None = None,
) -> tuple[str, str]:
    """(outcome table key, sha256 of the cassette files alone)."""
    h = hashlib.sha256()
    cas = hashlib.sha256()
    h.update(TABLE_VERSION.encode())
    h.update(price_source_version().encode())
    pd_ = policy_to_dict(policy)
    pd_.pop("provenance", None)
    pd_.pop("name", None)
    for k in ("routing", "confidence", "cascade", "max_cost_per_query_usd", "breaker"):
        pd_.pop(k, None)  # the sweep varies these; the tables do not depend on them...
    pd_["max_tokens_by_class"] = {c: r.max_tokens for c, r in policy.routing.items()}  # ...except max_tokens
    pd_["confidence_temperature"] = policy.confidence.temperature
    pd_["confidence_answer_pattern"] = policy.confidence.answer_pattern  # the "answer" similarity uses it
    pd_["draws_k_max"] = k_max  # how far adaptive k's draws are replayed
    h.update(json.dumps(pd_, sort_keys=True).encode())
    h.update(json.dumps([list(ks), [scorer_fingerprint(s) for s in scorers]]).encode())
    for it in items:
        h.update(json.dumps(it.to_json(), sort_keys=True, ensure_ascii=False).encode())
        p = cassette_dir / cassette_name(it.id)
        try:
            data = read_cassette(p)
        except FileNotFoundError:
            raise ReplayMissError(f"no cassette for item {it.id!r} (expected {p})", item_id=it.id) from None
        h.update(data)
        cas.update(f"{p.name}\0{len(data)}\0".encode())
        cas.update(data)
    return h.hexdigest()[:24], cas.hexdigest()


def build_outcomes(
    items: Sequence[EvalItem],
    policy: RouterPolicy,
    cassette_dir: str | os.PathLike[str],
    *,
    scorers: Sequence[str],
    ks: Sequence[int] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    k_max: int | None = None,
    variants: bool = True,
    workers: int | None = None,
    executor: Any = None,
    load: bool | None = None,
) -> Outcomes:
    """Replay every recorded call once and score it; cached as Parquet (see the module docstring).
    ``k_max`` (default: the cassette manifest's) replays adaptive k's draws up to that many samples.
    Where the manifest lists several sample temperatures for a tier (``sample_temperatures``) each
    other combination is replayed too, as :attr:`Outcomes.variants` (``variants=False``: not).

    ``workers``: processes that replay and score the items, in chunks (default ``$ROUTERLAB_BUILD_WORKERS``,
    else every core from two chunks of :data:`BUILD_CHUNK` items, one below that); the table is the same for
    any number.

    ``executor``: build the chunks as tasks on it instead: anything with a ``concurrent.futures``-style
    ``submit`` (a ``ProcessPoolExecutor``, a Dask ``distributed.Client``). Each task gets its items, the
    policy and the cassette folder's path, which its worker must be able to read (a local cluster, or a
    shared filesystem), and the scorers by name (a cluster's workers need custom scorers installed as
    entry points). At most a few tasks run ahead of the one being written, so memory stays flat.

    The rows are streamed to disk chunk by chunk as the build goes, so the build's memory does not grow
    with the number of items until the finished tables are read back.

    ``load``: read the tables into memory (True), or leave them on disk (False: :attr:`Outcomes.on_disk`;
    the sweep reads them item range by item range with DuckDB, the rest of the workbench needs
    :meth:`Outcomes.load`). None (default): on disk when the calls table has more rows than
    ``$ROUTERLAB_OUT_OF_CORE_ROWS`` (default :data:`DEFAULT_OUT_OF_CORE_ROWS`; a million mot_date items, with
    their draws, are 13M rows)."""
    cdir = Path(cassette_dir)

    try:
        manifest = read_manifest(cdir)  # read once: ks, adaptive k's draws and the sample temperatures
    except DataError:
        manifest = {}
    if ks is None:
        ks = list(manifest.get("ks", [policy.confidence.k]))
    ks = sorted(set(ks))
    if k_max is None:
        got = manifest.get("k_max")
        k_max = int(got) if isinstance(got, int) and got > 2 and 2 in ks else None
    recorded = recorded_temperatures(policy, manifest) if variants else {}
    key, cassettes_sha256 = _hashes(policy, cdir, items, ks, scorers, k_max)
    cache = Path(cache_dir) if cache_dir is not None else _default_cache()
    calls_p, samples_p = cache / f"{key}-calls.parquet", cache / f"{key}-samples.parquet"
    texts_p = cache / f"{key}-texts.parquet"
    if not (calls_p.exists() and samples_p.exists() and texts_p.exists()):
        cache.mkdir(parents=True, exist_ok=True)
        _build(
            items, policy, cdir, scorers, ks, progress, k_max, _workers(workers, len(items)), texts_p,
            (calls_p, samples_p), executor, load=False,
        )  # fmt: skip
    on_disk = not load if load is not None else tablefiles.count_rows(calls_p) > out_of_core_rows()
    index: ItemIndex | None = None
    if on_disk:
        calls, samples = tablefiles.schema_frame(calls_p), tablefiles.schema_frame(samples_p)
        index = tablefiles.item_index(calls_p, samples_p)
        item_df = pd.DataFrame({"item_id": index.item_id, "complexity": index.complexity})
        variant_names = tablefiles.distinct(calls_p, "variant")
    else:
        calls, samples = pd.read_parquet(calls_p), pd.read_parquet(samples_p)
        item_df = calls[["item_id", "complexity"]].drop_duplicates("item_id").reset_index(drop=True)
        variant_names = list(calls["variant"].unique())
    item_df = item_df.assign(
        class_index=lambda d: d["complexity"].map({c: i for i, c in enumerate(COMPLEXITY_CLASSES)}),
        position=lambda d: np.arange(len(d)),
    )
    texts = {it.id: classifier_text(it.messages, policy.classifier.read) for it in items}
    item_df["request_text"] = item_df["item_id"].map(texts)  # what the learned start router reads
    present_ks = sorted({int(v[1:]) for v in variant_names if str(v).startswith("k")})
    others: dict[tuple[float, ...], Outcomes] = {}
    if recorded:
        base = tuple(policy.sample_temperature(i) for i in range(len(policy.tiers) - 1))
        axes = [recorded.get(i, (t,)) for i, t in enumerate(base)]
        for vec in itertools.product(*axes):
            if vec != base:  # each a whole table, as if the ladder had been recorded at those temperatures
                others[vec] = build_outcomes(
                    items, policy.with_sample_temperatures(vec), cdir, scorers=scorers, ks=ks,
                    cache_dir=cache_dir, progress=progress, k_max=k_max, variants=False, workers=workers,
                    executor=executor, load=not on_disk,
                )  # fmt: skip
    out = Outcomes(
        calls,
        samples,
        item_df,
        [t.name for t in policy.tiers],
        [t.model for t in policy.tiers],
        present_ks,
        list(SIMILARITY_NAMES),
        list(scorers),
        policy,
        key,
        cassettes_sha256,
        others,
        texts_p,
        (calls_p, samples_p),
        on_disk,
    )
    out._index = index
    return out


#: Calls rows above which :func:`build_outcomes` leaves a table on disk (``$ROUTERLAB_OUT_OF_CORE_ROWS``).
DEFAULT_OUT_OF_CORE_ROWS = 20_000_000
OUT_OF_CORE_ENV = "ROUTERLAB_OUT_OF_CORE_ROWS"


def out_of_core_rows() -> int:
    """The size (calls rows) above which an outcome table stays on disk and is swept from there."""
    env = os.environ.get(OUT_OF_CORE_ENV)
    if not env:
        return DEFAULT_OUT_OF_CORE_ROWS
    try:
        value = int(env)
    except ValueError:
        raise WorkbenchError(f"{OUT_OF_CORE_ENV} must be a whole number of calls rows, got {env!r}") from None
    if value < 0:
        raise WorkbenchError(f"{OUT_OF_CORE_ENV} must be at least 0, got {value}")
    return value


def _workers(workers: int | None, n_items: int) -> int:
    if workers is None:
        env = os.environ.get("ROUTERLAB_BUILD_WORKERS")
        if env:
            try:
                workers = int(env)
            except ValueError:
                msg = f"ROUTERLAB_BUILD_WORKERS must be a whole number of processes, got {env!r}"
                raise WorkbenchError(msg) from None
        else:
            workers = (os.cpu_count() or 1) if n_items >= 2 * BUILD_CHUNK else 1
    if workers < 1:
        raise WorkbenchError(f"the outcome build needs at least 1 worker process, got {workers}")
    return workers


def _default_cache() -> Path:
    return default_cache_dir() / "outcomes"


#: Items per task of a parallel outcome-table build (see :func:`build_outcomes`'s ``workers``).
BUILD_CHUNK = 64


def _build(
    items: Sequence[EvalItem],
    policy: RouterPolicy,
    cdir: Path,
    scorers: Sequence[str],
    ks: Sequence[int],
    progress: bool,
    k_max: int | None = None,
    workers: int = 1,
    texts_path: Path | None = None,
    tables_path: tuple[Path, Path] | None = None,
    executor: Any = None,
    load: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The calls and samples tables of ``items``, built in chunks of :data:`BUILD_CHUNK` items: in this
    process, by ``workers`` forked processes, or as tasks on ``executor``; rows in item order either way.

    Each chunk's rows are streamed to disk as it completes (no finished chunk stays in memory): the texts
    to ``texts_path`` (one ``text`` column, row for row with the samples table), the numbers to part
    files that become the two Parquet files of ``tables_path`` (calls, samples) at the end, each written
    atomically. The tables returned are read back from those files and hold no texts."""
    chunks = [(i, min(i + BUILD_CHUNK, len(items))) for i in range(0, len(items), BUILD_CHUNK)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        how = "" if executor is None and workers <= 1 else f" ({_how(executor, workers)})"
        bar = tqdm(total=len(items), desc=f"outcome table{how}", unit="item")
    with _TableSink(texts_path, tables_path) as sink:
        try:
            if executor is not None:
                payload = (policy, str(cdir), list(scorers), list(ks), k_max)

                def submit(ab: tuple[int, int]) -> Any:
                    return executor.submit(_build_items, list(items[ab[0] : ab[1]]), *payload)

                for (a, b), got in in_order(chunks, submit, window=2 * max(workers, 2)):
                    sink.add(*got)
                    if bar is not None:
                        bar.update(b - a)
            elif workers <= 1 or len(items) <= BUILD_CHUNK:
                tick = None if bar is None else bar.update
                for a, b in chunks:
                    sink.add(*_build_part(items[a:b], policy, cdir, scorers, ks, tick, k_max))
            else:
                _build_forked(items, policy, cdir, scorers, ks, k_max, workers, chunks, sink, bar)
        finally:
            if bar is not None:
                bar.close()
        return sink.tables(load=load)


def _how(executor: Any, workers: int) -> str:
    return f"{workers} processes" if executor is None else type(executor).__name__


def in_order(jobs: Sequence[Any], submit: Callable[[Any], Any], *, window: int) -> Iterator[tuple[Any, Any]]:
    """(job, result) for each of ``jobs`` in order, at most ``window`` of them submitted ahead, so a slow
    task does not leave every later result waiting in memory. When a task fails, the ones submitted after
    it are cancelled (those already running finish) and its error is raised."""
    pending: collections.deque[tuple[Any, Any]] = collections.deque()
    it = iter(jobs)
    for job in itertools.islice(it, window):
        pending.append((job, submit(job)))
    try:
        while pending:
            job, fut = pending.popleft()
            res = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, submit(nxt)))
            yield job, res
    finally:  # a failed task (or a caller that stops early): the tasks still queued are not run for nothing
        for _job, fut in pending:
            fut.cancel()


def _build_items(
    items: list[EvalItem], policy: RouterPolicy, cdir: str, scorers: list[str], ks: list[int], k_max: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One task of a build on an executor (a process pool, a Dask cluster's worker): the tables of
    ``items``, read from the cassettes in ``cdir`` (a path the worker can read)."""
    return _build_part(items, policy, Path(cdir), scorers, ks, None, k_max)


class _TableSink:
    """Streams successive (calls, samples) parts to disk: the samples' texts into one Parquet file, the
    numbers into part files under a temporary folder, joined into the two tables' files at the end."""

    def __init__(self, texts_path: Path | None, tables_path: tuple[Path, Path] | None) -> None:
        self.path = texts_path
        self.tables_path = tables_path
        self.tmp: Path | None = None
        self.writer: Any = None
        self.parts_dir: Path | None = None
        self.parts: list[tuple[Any, Any]] = []  # the part files (or, without tables_path, the Arrow tables)

    def __enter__(self) -> _TableSink:
        if self.tables_path is not None:
            parent = self.tables_path[0].parent
            self.parts_dir = Path(tempfile.mkdtemp(dir=parent, prefix=f".{self.tables_path[0].name}.parts."))
        return self

    def add(self, calls: pd.DataFrame, samples: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        samples = self._take_texts(samples)
        # a part with no columns (a chunk whose every call failed has no sample rows) adds nothing, as in concat
        tables = [
            pa.Table.from_pandas(df, preserve_index=False) if len(df.columns) else None for df in (calls, samples)
        ]
        if self.parts_dir is None:
            self.parts.append((tables[0], tables[1]))
            return
        n = len(self.parts)
        names = (self.parts_dir / f"calls-{n:07d}.parquet", self.parts_dir / f"samples-{n:07d}.parquet")
        files: list[Path | None] = []
        for table, f in zip(tables, names, strict=True):
            if table is not None:
                pq.write_table(table, f)
            files.append(None if table is None else f)
        self.parts.append((files[0], files[1]))

    def tables(self, *, load: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The whole calls and samples tables. With ``tables_path`` the parts are joined into its two files
        one part at a time (memory: one part) and, with ``load``, read back; ``load=False`` returns them
        as zero-row frames with the tables' columns (the table stays on disk)."""
        out = []
        written: list[Path] = []
        try:
            for j in range(2):
                out.append(self._table(j, load, written))
        except BaseException:
            for f in written:  # both files or neither
                f.unlink(missing_ok=True)
            raise
        return out[0], out[1]

    def _table(self, j: int, load: bool, written: list[Path]) -> pd.DataFrame:
        """Table ``j`` (0 calls, 1 samples) joined from its parts."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        got = [p[j] for p in self.parts if p[j] is not None]
        if self.parts_dir is None or self.tables_path is None:
            if not got:
                return pd.DataFrame()
            # a column all null in one chunk (no errors there, say) takes the type it has in the others; an
            # integer column null somewhere becomes float, as pandas' concat makes it
            frame: pd.DataFrame = pa.concat_tables(got, promote_options="permissive").to_pandas()
            return frame
        files: list[Path] = got
        schemas = [pq.read_schema(f) for f in files]
        schema = pa.unify_schemas(schemas, promote_options="permissive").remove_metadata() if schemas else None
        target = self.tables_path[j]

        def write(tmp: Path) -> None:
            if schema is None:
                pd.DataFrame().to_parquet(tmp, index=False)
                return
            with pq.ParquetWriter(tmp, schema) as w:
                for f in files:
                    w.write_table(pq.read_table(f).select(schema.names).cast(schema))

        atomic_write(target, write)
        written.append(target)
        if load:
            return pd.read_parquet(target)
        empty: pd.DataFrame = pq.read_schema(target).empty_table().to_pandas()
        return empty

    def _take_texts(self, samples: pd.DataFrame) -> pd.DataFrame:
        if self.path is None or "text" not in samples:  # (a part with no sample rows has no columns)
            return samples
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"text": pa.array(samples["text"].astype(str).tolist(), pa.large_string())})
        if self.writer is None:
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            os.close(fd)
            self.tmp = Path(name)
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)
        return samples.drop(columns=["text"])

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.parts_dir is not None:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        if self.path is None:
            return
        if self.writer is None and exc_type is None:  # no samples at all: an empty texts file
            self._take_texts(pd.DataFrame({"text": pd.Series([], dtype=str)}))
        if self.writer is not None:
            self.writer.close()
        if self.tmp is None:
            return
        if exc_type is not None:  # a failed build leaves no texts file behind
            self.tmp.unlink(missing_ok=True)
            return
        os.chmod(self.tmp, 0o644)  # readable by other users, like every file routerlab writes
        os.replace(self.tmp, self.path)


def _build_forked(
    items: Sequence[EvalItem],
    policy: RouterPolicy,
    cdir: Path,
    scorers: Sequence[str],
    ks: Sequence[int],
    k_max: int | None,
    workers: int,
    chunks: list[tuple[int, int]],
    sink: _TableSink,
    bar: Any,
) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # forked workers read the items and settings from this module (nothing is pickled on the way in) and
    # see the scorers registered in this process (register_scorer, entry points)
    _BUILD_STATE[:] = [(items, policy, cdir, scorers, ks, k_max)]
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            jobs = in_order(chunks, lambda ab: ex.submit(_build_chunk, *ab), window=4 * workers)
            for (a, b), (c, smp) in jobs:
                sink.add(c, smp)
                if bar is not None:
                    bar.update(b - a)
    finally:
        _BUILD_STATE.clear()


_BUILD_STATE: list[tuple[Any, ...]] = []


def _build_chunk(start: int, stop: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One task of a parallel build (in a forked worker): the items ``start:stop`` of the build in hand."""
    items, policy, cdir, scorers, ks, k_max = _BUILD_STATE[0]
    return _build_part(items[start:stop], policy, cdir, scorers, ks, None, k_max)


def _build_part(
    items: Sequence[EvalItem],
    policy: RouterPolicy,
    cdir: Path,
    scorers: Sequence[str],
    ks: Sequence[int],
    tick: Callable[[int], Any] | None,
    k_max: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    prices = PriceBook()
    keys = replay_keys(policy)
    answer_pattern = policy.confidence.answer_pattern
    sims = {name: get_similarity(name, answer_pattern=answer_pattern) for name in SIMILARITY_NAMES}
    scorer_fns = {name: get_scorer(name, answer_pattern=policy.confidence.answer_pattern) for name in scorers}
    call_rows: list[dict[str, Any]] = []
    sample_rows: list[dict[str, Any]] = []
    n_tiers = len(policy.tiers)

    def add_rows(it: EvalItem, t: int, row: dict[str, Any], texts: Sequence[str], first_sample: int,
                 bits: Sequence[int], base: dict[str, Any]) -> None:  # fmt: skip
        model = policy.tiers[t].model
        for name, fn in scorer_fns.items():
            v = fn(it, texts[0], model) if texts else None
            row[f"q_{name}"] = np.nan if v is None else float(v)
        call_rows.append({**base, **row})
        for j, text in enumerate(texts):
            srow: dict[str, Any] = {
                "item_id": it.id,
                "tier_index": t,
                "variant": row["variant"],
                "sample": first_sample + j,
                "text": text,
                "unusable": bits[j] if j < len(bits) else 0,
            }
            for name, sfn in scorer_fns.items():
                v = sfn(it, text, model)
                srow[f"q_{name}"] = np.nan if v is None else float(v)
            sample_rows.append(srow)

    def no_votes(row: dict[str, Any]) -> None:
        for name in SIMILARITY_NAMES:
            row[f"pick_{name}"], row[f"agree_pick_{name}"], row[f"pbits_{name}"] = -1, np.nan, 0

    def put_votes(row: dict[str, Any], votes: dict[str, SampleVotes]) -> None:
        for name, v in votes.items():
            j, a = v.pick("majority")
            row[f"pick_{name}"], row[f"agree_pick_{name}"], row[f"pbits_{name}"] = j, a, v.bits[j]

    for it in items:
        index = load_cassette_index(cdir / cassette_name(it.id))
        query = prepare_query(it.messages, policy.classifier)
        for t in range(n_tiers):
            tier = policy.tiers[t]
            base = {
                "item_id": it.id,
                "complexity": query.complexity,
                "tier_index": t,
                "tier": tier.name,
                "model": tier.model,
            }
            variants: list[tuple[Signal, int]] = [("none", 1)]
            if t < n_tiers - 1:
                variants += [("consistency", k) for k in ks]
            for signal, k in variants:
                played: Counter[tuple[str, str, str]] = Counter()  # k=2's stream continues into the draws
                got = _variant_row(it, query, policy, index, t, signal, k, prices, keys, played=played)
                if got is None:
                    continue
                row, tr = got
                texts = tr.texts
                for name, sim in sims.items():
                    if signal == "none" or len(texts) < 2:
                        row[f"agree_{name}"] = np.nan
                    elif tr.tool_calls:  # the router compares tool calls, not texts
                        row[f"agree_{name}"] = sample_agreement(texts, tr.tool_calls, name, answer_pattern)
                    else:
                        row[f"agree_{name}"] = agreement(texts, sim)
                bits = [sample_bits(tr, j) for j in range(len(texts))] if tr.error is None else []
                votes: dict[str, SampleVotes] = {}
                if signal == "consistency" and tr.error is None and len(texts) >= 2:
                    votes = {name: votes_of(tr, k, name, answer_pattern) for name in SIMILARITY_NAMES}
                    put_votes(row, votes)
                else:
                    no_votes(row)
                add_rows(it, t, row, texts, 0, bits, base)
                if k != 2 or k_max is None or not votes:
                    continue
                for m in range(3, k_max + 1):  # the draws, in the order the router makes them
                    got = _variant_row(it, query, policy, index, t, signal, k, prices, keys, draw=m, played=played)
                    if got is None:
                        break  # recorded this far
                    drow, dr = got
                    if dr.error is not None or not dr.texts:
                        for name in SIMILARITY_NAMES:
                            drow[f"agree_{name}"] = np.nan
                        no_votes(drow)
                        add_rows(it, t, drow, dr.texts, m - 1, [], base)
                        break  # the route stops drawing at a failed draw
                    b = sample_bits(dr, 0)
                    for v in votes.values():
                        v.add(dr.texts[0], dr.first_tool_calls(), b)
                    for name, v in votes.items():
                        drow[f"agree_{name}"] = v.first()
                    put_votes(drow, votes)
                    add_rows(it, t, drow, dr.texts[:1], m - 1, [b], base)
        if tick is not None:
            tick(1)
    calls = pd.DataFrame(call_rows)
    calls["cost_pico"] = calls["cost_pico"].astype("int64")
    calls["worst_pico"] = calls["worst_pico"].astype("int64")
    for col in ("reserve_pico", "topup_worst_pico", "short_cost_pico", "short_reserve_pico", "missing", "unusable"):
        calls[col] = calls[col].astype("int64")
    for name in SIMILARITY_NAMES:
        calls[f"pick_{name}"] = calls[f"pick_{name}"].astype("int64")
        calls[f"pbits_{name}"] = calls[f"pbits_{name}"].astype("int64")
    return calls, pd.DataFrame(sample_rows)
