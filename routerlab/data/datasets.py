"""Public model-output datasets, pinned to commits on GitHub, with a local cache.

routerlab's default corpus is real answers of real models that other projects
published. Nothing of it lives in this repository: :func:`fetch` downloads the
pinned files from ``raw.githubusercontent.com`` (or copies them from an offline
mirror folder laid out the same way) into a cache, checking every byte against
the size and sha256 written in :data:`REGISTRY`.

Cache and mirror layout (the raw-URL layout)::

    <root>/<owner>/<repo>/<commit>/<path>

Order of sources for each file:

1. the cached copy, if its size and sha256 match;
2. the mirror (``mirror=``, else ``$ROUTERLAB_MIRROR``, else
   ``<checkout>/../shared/datasets/github``), if it holds the file;
3. a download of ``<base_url><owner>/<repo>/<commit>/<path>``.

A file is written to a temporary file next to its final place and moved there
with :func:`os.replace` only after its size and sha256 were verified, so the
cache never holds a partial or corrupt file under a final name.

Derived tables (:data:`DERIVED`) have no public URL: they are read in place
from ``<mirror>/../derived/`` by :func:`derived_path`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from routerlab.data.paths import MIRROR_ENV, default_cache_dir, mirror_dir
from routerlab.errors import DatasetError

__all__ = [
    "DEFAULT_BASE_URL",
    "DERIVED",
    "REGISTRY",
    "Dataset",
    "DatasetFile",
    "DerivedFile",
    "derived_path",
    "describe",
    "fetch",
    "get_dataset",
]

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class DatasetFile:
    """One pinned file: its path inside the repository, sha256 and size in bytes."""

    path: str
    sha256: str
    size: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dataset:
    """A set of files of one GitHub repository at one commit."""

    name: str
    owner: str
    repo: str
    commit: str
    files: tuple[DatasetFile, ...]
    license: str
    description: str

    def url(self, f: DatasetFile, base_url: str = DEFAULT_BASE_URL) -> str:
        """The raw URL of ``f``: ``<base_url><owner>/<repo>/<commit>/<path>``."""
        return f"{_with_slash(base_url)}{self.relpath(f)}"

    def relpath(self, f: DatasetFile) -> str:
        """``<owner>/<repo>/<commit>/<path>``: where ``f`` sits in a mirror or cache."""
        return f"{self.owner}/{self.repo}/{self.commit}/{f.path}"

    @property
    def source(self) -> str:
        """The repository page at the pinned commit."""
        return f"https://github.com/{self.owner}/{self.repo}/tree/{self.commit}"

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class DerivedFile:
    """A table extracted from a public dataset; it has no public URL.

    It is found only in a mirror, at ``<mirror>/../derived/<file.path>``.
    """

    name: str
    file: DatasetFile
    derived_from: str
    license: str
    description: str


def _f(path: str, sha256: str, size: int) -> DatasetFile:
    return DatasetFile(path=path, sha256=sha256, size=size)


_ALPACA = "results/{}/model_outputs.json"
_ARENA = "data/arena-bench-v1/"

REGISTRY: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="alpaca_eval",
            owner="tatsu-lab",
            repo="alpaca_eval",
            commit="cd543a149df89434d8a54582c0151c0b945c3d20",
            files=(
                _f(
                    _ALPACA.format("gpt-4o-mini-2024-07-18"),
                    "f67bad91d5590b0a3d893ac1b63eb60934bac2b1c3f089a848919524eedd1b70",
                    1758837,
                ),
                _f(
                    _ALPACA.format("gpt-4o-2024-05-13"),
                    "653c131d58e8d5802203c85e80ca3fb4b378f22e2a0280ad5cd910ff0bee9535",
                    1763464,
                ),
                _f(
                    _ALPACA.format("claude-3-5-sonnet-20240620"),
                    "64129d31619cddb5e2f6d2a4d64c7e4e567875dbb3a960c4bf6162485572f0a0",
                    1458297,
                ),
                _f(
                    _ALPACA.format("claude-3-opus-20240229"),
                    "ba0cf4f5853e693cfd84af2fc763d4cce2f527f9d15581a9bd1a9cc2981b8387",
                    1365786,
                ),
                _f(
                    _ALPACA.format("gpt4_1106_preview"),
                    "83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4",
                    1899765,
                ),
                _f(
                    _ALPACA.format("gpt-3.5-turbo-1106"),
                    "e26f2baf2735972c75fa2f540b3685911c616e6d4646219c728e326a49b1c33e",
                    874066,
                ),
                _f(
                    _ALPACA.format("Meta-Llama-3.1-8B-Instruct-Turbo"),
                    "c6c9ef2ef48edf3395c95ed062733d09ad0c77a49eb5013ab98824d4a2fdbc7d",
                    2028413,
                ),
                _f(
                    _ALPACA.format("Meta-Llama-3.1-70B-Instruct-Turbo"),
                    "a84fa3f20881fcf8fed16bed227839f0f561553b68f1e6bc6877dd736335731a",
                    1912493,
                ),
                _f(
                    _ALPACA.format("Meta-Llama-3.1-405B-Instruct-Turbo"),
                    "4a73ecedd77008ff51afaf71fbafe72f2935e06cfbbdfdd759af2341b9f0ce7d",
                    1865115,
                ),
            ),
            license="code Apache-2.0, data CC BY-NC 4.0",
            description=(
                "AlpacaEval 2 outputs: 805 instructions, one answer per model, "
                "9 models (GPT-4o/-mini, Claude 3 Opus/3.5 Sonnet, GPT-4 Turbo, "
                "GPT-3.5 Turbo, Llama 3.1 8B/70B/405B)."
            ),
        ),
        Dataset(
            name="arena_bench_v1",
            owner="lmarena",
            repo="arena-hard-auto",
            commit="4a705dd6963f777aba2ae79259e3013934e6e012",
            files=(
                _f(
                    _ARENA + "question.jsonl",
                    "e2995f6dac278d8c20d04148c490e12e9ab2c79245f8568c673823e4df53819a",
                    155889,
                ),
                _f(
                    _ARENA + "reference_answer/gpt-4.jsonl",
                    "ca9ac0b7e67c0ddadabb71d6011cf08c7dd1df65e3b8218d24c70e1880dfabc8",
                    594582,
                ),
                _f(
                    _ARENA + "model_answer/Mistral-7B-Instruct-v0.1.jsonl",
                    "3a8810ac302fc9d36ce4100564fc115cc962e328ff8802b4d8e8a7c508d1e4e4",
                    600349,
                ),
                _f(
                    _ARENA + "model_answer/Mixtral-8x7B-Instruct-v0.1.jsonl",
                    "b4e099c5607ffe962aab9ff9907e084ca481635eb3f893953f8ebf12aedc27b6",
                    671860,
                ),
                _f(
                    _ARENA + "model_answer/claude-2.1.jsonl",
                    "ade48d7afa3c4561a69470c56ddf9941d91c842c54e52bb0b5fd89c0ede48faf",
                    461043,
                ),
                _f(
                    _ARENA + "model_answer/claude-instant-1.jsonl",
                    "8ce94cdae1d7880e1c010a4b9c1ed6ffca239edd00d547738a0716e365f3cd4f",
                    477102,
                ),
                _f(
                    _ARENA + "model_answer/gpt-3.5-turbo.jsonl",
                    "9614e4da955298fb75a2f7dd6ec7fcb0852455236097a9cd3c517332b6df22f5",
                    677380,
                ),
                _f(
                    _ARENA + "model_answer/gpt-4-0314.jsonl",
                    "c64ad053a4cd70034006324316832c6e09cd729a571c08a980c7b0a12f5d1492",
                    693308,
                ),
                _f(
                    _ARENA + "model_answer/gpt-4-1106-preview.jsonl",
                    "2a85364628959363d1d7ac54cacc81abb6eea1055e2c3db7508e9eab188f593c",
                    1048693,
                ),
            ),
            license="Apache-2.0",
            description=(
                "Arena-Hard arena-bench-v1: 300 questions, a GPT-4 reference answer "
                "each, greedy answers of 7 models (Mistral-7B, Mixtral-8x7B, "
                "gpt-3.5-turbo, claude-instant-1, claude-2.1, gpt-4-0314, "
                "gpt-4-1106-preview)."
            ),
        ),
        Dataset(
            name="mot_date",
            owner="MurongYue",
            repo="LLM_MoT_cascade",
            commit="8db97e652d196ce6380927c3b4df8af6d6c09746",
            files=(
                _f(
                    "GPT3_result/date_cot1.json",
                    "3f2d984619fe798551f6f6bea01bd8d20e5892d76461e5c6d47ade31c0e9d14a",
                    1771538,
                ),
                _f(
                    "GPT3_result/date_cot1_t=0.8.json",
                    "757977252658a121eb296ee9a030e89d750339bf1aa4a97e3a22e6260a2ac288",
                    1887924,
                ),
                _f(
                    "GPT4_result/date_cot1.json",
                    "a6d1193ffa164cf37218188800dba8fcd5ebeeeaa6649ca0e314f1c31888eb70",
                    354166,
                ),
                _f(
                    "GPT4_result/date_greedy_cot1.json",
                    "8dec848129d963381735bfcfe32835cc386c218e25c77af84cfa7c05499e507f",
                    202544,
                ),
                _f(
                    "llama2_13B_result/date_cot1.json",
                    "289067d4ca4cd10091b704498e2bf1e30c9002cbb2db00623acfd6de02dd0479",
                    1833757,
                ),
            ),
            license="none stated: internal evaluation only",
            description=(
                "MoT cascade, BIG-bench date understanding: 369 questions with gold "
                "answers; gpt-3.5-turbo 20 samples (T~0.4 and T=0.8), gpt-4 3 samples "
                "and greedy, Llama-2-13B 20 samples."
            ),
        ),
    )
}

DERIVED: dict[str, DerivedFile] = {
    d.name: d
    for d in (
        DerivedFile(
            name="arena_bench_v1_judge_scores",
            file=_f(
                "arena_bench_v1_judge_scores.csv",
                "eb75bcc25688201564b18fa18c37d5373773d8cd3a5169e8b899e1048e4a05a8",
                350481,
            ),
            derived_from="arena_bench_v1",
            license="Apache-2.0",
            description=(
                "GPT-4 judge score 1-10 (reference-guided) for every "
                "(question_id, model) of arena_bench_v1 model_judgment/*.jsonl; "
                "15 models x 300 questions, 39 empty (unparseable)."
            ),
        ),
    )
}


# --------------------------------------------------------------------------- lookup


def get_dataset(name: str) -> Dataset:
    """The registered dataset ``name``; :class:`DatasetError` lists the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise DatasetError(f"Unknown dataset {name!r}; valid names: {', '.join(sorted(REGISTRY))}.") from None


def _get_derived(name: str) -> DerivedFile:
    key = name.removesuffix(".csv").removeprefix("derived/")
    try:
        return DERIVED[key]
    except KeyError:
        raise DatasetError(f"Unknown derived file {name!r}; valid names: {', '.join(sorted(DERIVED))}.") from None


# --------------------------------------------------------------------------- locations


def derived_path(name: str, *, mirror: str | Path | None = None) -> Path:
    """The verified path of derived table ``name`` at ``<mirror>/../derived/``.

    Derived tables have no public URL, so they are read in place from the shared
    mirror, never downloaded or cached. Raises :class:`DatasetError` when no mirror
    holds the file or its size/sha256 differ from the registry.
    """
    d = _get_derived(name)
    root = mirror_dir(mirror)
    path = root.parent / "derived" / d.file.path if root is not None else None
    if path is None or not path.is_file():
        where = f"looked in {str(path)!r}" if path is not None else "no mirror folder found"
        raise DatasetError(
            f"Derived file {d.file.path!r} ({d.name}) has no public URL: it is only "
            f"available from the shared mirror (<mirror>/../derived/); {where}. Set "
            f"{MIRROR_ENV} to a mirror's github/ folder or pass mirror=."
        )
    size = path.stat().st_size
    digest = _sha256_file(path)
    if size != d.file.size or digest != d.file.sha256:
        raise DatasetError(
            f"Derived file {d.name}: {str(path)!r} does not match the registry: "
            f"expected size {d.file.size} sha256 {d.file.sha256}, "
            f"got size {size} sha256 {digest}."
        )
    return path


# --------------------------------------------------------------------------- fetching


def _with_slash(base_url: str) -> str:
    return base_url if base_url.endswith("/") else base_url + "/"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_valid(path: Path, f: DatasetFile) -> bool:
    try:
        if not path.is_file() or path.stat().st_size != f.size:
            return False
    except OSError:
        return False
    return _sha256_file(path) == f.sha256


def _mismatch(
    ds: Dataset,
    f: DatasetFile,
    source: str,
    *,
    size: int | None,
    sha256: str | None,
    note: str = "",
) -> DatasetError:
    got = []
    if size is not None:
        got.append(f"size {size}")
    if sha256 is not None:
        got.append(f"sha256 {sha256}")
    return DatasetError(
        f"Dataset {ds.name}: file {f.path!r} from {source} failed verification"
        f"{': ' + note if note else ''}: expected size {f.size} sha256 {f.sha256}, "
        f"got {' '.join(got) or 'nothing'}. Nothing was written to the cache."
    )


def _install(
    ds: Dataset,
    f: DatasetFile,
    chunks: Iterable[bytes],
    target: Path,
    source: str,
    bar: _Progress,
) -> None:
    """Write ``chunks`` to a temp file beside ``target``, verify, then os.replace.

    The temp file is removed on any failure (including KeyboardInterrupt).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{f.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                if not chunk:
                    continue
                written += len(chunk)
                if written > f.size:
                    raise _mismatch(
                        ds,
                        f,
                        source,
                        size=written,
                        sha256=None,
                        note="more bytes than expected (stopped reading)",
                    )
                h.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if written != f.size or digest != f.sha256:
            note = "truncated (fewer bytes than expected)" if written < f.size else "sha256 mismatch"
            raise _mismatch(ds, f, source, size=written, sha256=digest, note=note)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_file(fh: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: fh.read(_CHUNK), b"")


def _download_chunks(ds: Dataset, f: DatasetFile, response: httpx.Response, url: str) -> Iterator[bytes]:
    """The decoded body; raises DatasetError on transport errors or a short body."""
    try:
        yield from response.iter_bytes(_CHUNK)
    except httpx.HTTPError as exc:
        raise DatasetError(
            f"Dataset {ds.name}: download of {f.path!r} from {url} failed mid-transfer "
            f"({type(exc).__name__}: {exc}); expected size {f.size} sha256 {f.sha256}. "
            "Nothing was written to the cache."
        ) from exc
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit():
        got = response.num_bytes_downloaded
        if got < int(declared):
            raise DatasetError(
                f"Dataset {ds.name}: download of {f.path!r} from {url} was truncated: "
                f"Content-Length {declared}, received {got} bytes; expected size "
                f"{f.size} sha256 {f.sha256}. Nothing was written to the cache."
            )


class _Progress:
    """A tqdm bar, or nothing."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

            self._bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                leave=False,
            )

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def fetch(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    mirror: str | Path | bool | None = None,
    client: httpx.Client | None = None,
    progress: bool = True,
    base_url: str = DEFAULT_BASE_URL,
) -> dict[str, Path]:
    """Make every file of dataset ``name`` present and verified in the cache.

    Returns ``{path inside the repo: local file}``. ``mirror``: a mirror folder;
    None finds one (see :func:`mirror_dir`); False never uses a mirror. Files the
    mirror lacks are downloaded from ``base_url`` with ``client`` (default: a new
    ``httpx.Client(timeout=60, follow_redirects=True)``). Any size or sha256
    mismatch, HTTP error or cut-off transfer raises :class:`DatasetError`, and no
    partial file is left in the cache.
    """
    ds = get_dataset(name)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if mirror is False:
        mirror_root: Path | None = None
    else:
        mirror_root = mirror_dir(None if mirror is True or mirror is None else mirror)
    own_client: httpx.Client | None = None
    out: dict[str, Path] = {}
    try:
        for f in ds.files:
            rel = ds.relpath(f)
            target = cache.joinpath(*rel.split("/"))
            out[f.path] = target
            if _is_valid(target, f):
                continue
            target.unlink(missing_ok=True)  # stale or corrupt: never leave it in place
            source = mirror_root.joinpath(*rel.split("/")) if mirror_root is not None else None
            bar = _Progress(progress, f.size, f"{ds.name}: {f.path}")
            try:
                if source is not None and source.is_file():
                    where = f"mirror file {str(source)!r}"
                    with source.open("rb") as fh:
                        _install(ds, f, _read_file(fh), target, where, bar)
                    continue
                if client is None and own_client is None:
                    own_client = httpx.Client(timeout=60, follow_redirects=True)
                http = client if client is not None else own_client
                assert http is not None
                url = ds.url(f, base_url)
                try:
                    with http.stream("GET", url) as response:
                        if response.status_code != 200:
                            raise DatasetError(
                                f"Dataset {ds.name}: download of {f.path!r} from {url} "
                                f"failed with HTTP {response.status_code}; expected size "
                                f"{f.size} sha256 {f.sha256}."
                            )
                        chunks = _download_chunks(ds, f, response, url)
                        _install(ds, f, chunks, target, f"URL {url}", bar)
                except httpx.HTTPError as exc:
                    raise DatasetError(
                        f"Dataset {ds.name}: download of {f.path!r} from {url} failed "
                        f"({type(exc).__name__}: {exc}); expected size {f.size} "
                        f"sha256 {f.sha256}."
                    ) from exc
            finally:
                bar.close()
    finally:
        if own_client is not None:
            own_client.close()
    return out


# --------------------------------------------------------------------------- describe


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def describe(name: str) -> str:
    """A few lines about a dataset (or derived table): source, files, sizes, license."""
    if name not in REGISTRY and name.removesuffix(".csv").removeprefix("derived/") in DERIVED:
        d = _get_derived(name)
        return "\n".join(
            [
                f"{d.name}: {d.description}",
                (
                    f"  source:  derived from {d.derived_from}; no public URL, "
                    "only in the shared mirror (<mirror>/../derived/)"
                ),
                f"  license: {d.license}",
                f"  file:    derived/{d.file.path}  {_human(d.file.size)}",
            ]
        )
    ds = get_dataset(name)
    width = max(len(f.path) for f in ds.files)
    lines = [
        f"{ds.name}: {ds.description}",
        f"  source:  {ds.source}",
        f"  license: {ds.license}",
        f"  files:   {len(ds.files)}, {_human(ds.size)}",
    ]
    lines += [f"    {f.path:<{width}}  {_human(f.size):>8}" for f in ds.files]
    return "\n".join(lines)
