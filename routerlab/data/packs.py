"""Cassette packs: many items' cassettes in a few shard files, found through an index.

A cassette folder holds one vcrpy cassette per item (``<item id>.json``). At a million items that is a
million files: slow to list, copy and back up, and hard on a filesystem. :func:`pack_cassettes` moves a
folder's loose cassettes into ``packs/``:

- ``packs/<n>.pack``: the cassettes' bytes one after another, each unchanged (so its sha256 in the
  manifest still holds) and preceded by a header line naming it (``#routerlab-pack <name> <length>``),
  so a shard can be read without its index;
- ``packs/<n>.index.json``: ``{"format", "shard", "entries": [[name, offset, length], ...]}``, the byte
  range of each cassette in its shard.

Shards and indexes are written once and never changed in place (a process re-reads the indexes when
the ``packs/`` folder changes, which every rename does); a shard counts only once its index is in place (each file is
written atomically, the index last), so an interrupted pack loses nothing: the loose files it did not
yet remove still win. Reading (:func:`read_cassette`) looks for the loose file first, then for the
cassette in the newest shard that has it; so re-recording an item (a loose file again) and packing again
both simply supersede the older copy. :func:`unpack_cassettes` turns a packed folder back into loose
files, for tools that want one file per item.

Every reader of cassettes in routerlab goes through :func:`read_cassette` and :func:`cassette_exists`:
replay, the outcome-table build, recording (resume), the manifest's hashes and vcrpy's own playback.
The index kept in memory is 28 bytes per packed cassette (a 64-bit hash of the name, shard, offset,
length; the name itself is checked against the shard's header when read).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routerlab.errors import DataError
from routerlab.jsonio import atomic_write, atomic_write_text, loads

PACKS = "packs"
FORMAT = "routerlab-pack/1"
#: Bytes per shard before a new one is started (the last cassette may overrun it).
SHARD_BYTES = 256 * 1024 * 1024
#: Loose files that are not item cassettes: never packed.
NOT_PACKED = ("manifest.json", "judge.json")
_HEAD_WINDOW = 512  # bytes read before a cassette: its header line (file names are at most 255 bytes)
_SHARD_RE = re.compile(r"^(\d{6})\.index\.json$")


def _header(name: str, length: int) -> bytes:
    return f"#routerlab-pack {name} {length}\n".encode()


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1  # fits int64


@dataclass(frozen=True)
class _Index:
    """Every packed cassette of one folder: sorted name hashes and where each lives (newest shard wins)."""

    shards: tuple[Path, ...]
    hashes: np.ndarray  # int64, sorted
    shard: np.ndarray  # int32 into shards
    offset: np.ndarray  # int64
    length: np.ndarray  # int64

    def find(self, name: str) -> list[tuple[Path, int, int]]:
        """(shard, offset, length) of every entry whose name hash is the name's, newest shard first."""
        h = _name_hash(name)
        lo = int(np.searchsorted(self.hashes, h, side="left"))
        hi = int(np.searchsorted(self.hashes, h, side="right"))
        got = [(int(self.shard[i]), int(self.offset[i]), int(self.length[i])) for i in range(lo, hi)]
        got.sort(key=lambda e: -e[0])
        return [(self.shards[s], o, n) for s, o, n in got]


_EMPTY = _Index((), *(np.zeros(0, dtype=d) for d in ("int64", "int32", "int64", "int64")))
_CACHE: dict[str, tuple[tuple[int, int], _Index]] = {}
_LOCK = threading.Lock()


def _index_files(packs: Path) -> list[tuple[int, Path]]:
    out = []
    for p in packs.iterdir():
        m = _SHARD_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def _read_index_file(path: Path) -> tuple[str, list[tuple[str, int, int]]]:
    def error(message: str, line: int | None, fieldname: str | None) -> DataError:
        return DataError(f"{path}{f':{line}' if line else ''}: {message}")

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read pack index: {e}") from None
    data = loads(text, error, check_depth=False)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path}: not a routerlab pack index (format {FORMAT!r} expected)")
    shard, entries = data.get("shard"), data.get("entries")
    if not isinstance(shard, str) or not isinstance(entries, list):
        raise DataError(f"{path}: a pack index needs 'shard' (a file name) and 'entries' (a list)")
    out = []
    if Path(shard).name != shard or not shard.endswith(".pack"):
        raise DataError(f"{path}: 'shard' must name a .pack file beside the index, got {shard!r}")
    for n, entry in enumerate(entries):
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in entry[1:])
        ):
            raise DataError(f"{path}: entry {n} is not [name, offset, length]: {str(entry)[:80]}")
        out.append((entry[0], entry[1], entry[2]))
    return shard, out


def _load_index(folder: Path) -> _Index:
    packs = folder / PACKS
    try:
        st = packs.stat()
    except OSError:
        return _EMPTY
    sig = (st.st_mtime_ns, st.st_ino)
    key = str(packs.absolute())
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
    shards: list[Path] = []
    cols: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for _, ipath in _index_files(packs):
        shard_name, entries = _read_index_file(ipath)
        s = len(shards)
        shards.append(packs / shard_name)
        hashes = np.fromiter((_name_hash(e[0]) for e in entries), dtype=np.int64, count=len(entries))
        cols.append(
            (
                hashes,
                np.full(len(entries), s, dtype=np.int32),
                np.fromiter((e[1] for e in entries), dtype=np.int64, count=len(entries)),
                np.fromiter((e[2] for e in entries), dtype=np.int64, count=len(entries)),
            )
        )
    if cols:
        h, s_, o, n = (np.concatenate(c) for c in zip(*cols, strict=True))
        order = np.argsort(h, kind="stable")
        index = _Index(tuple(shards), h[order], s_[order], o[order], n[order])
    else:
        index = _EMPTY
    with _LOCK:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = (sig, index)
    return index


def _read_packed(path: Path) -> bytes | None:
    """The packed bytes of cassette ``path`` (its folder's newest shard holding its name), or None."""
    name = path.name
    for shard, offset, length in _load_index(path.parent).find(name):
        start = max(0, offset - _HEAD_WINDOW)  # the header line ends where the cassette starts
        try:
            with open(shard, "rb") as f:
                f.seek(start)
                got = f.read(offset - start + length)
        except OSError as e:
            raise DataError(f"{shard}: cannot read pack shard: {e.strerror or e}") from None
        before, body = got[: offset - start], got[offset - start :]
        at = before.rfind(b"#routerlab-pack ")
        head = before[at:] if at >= 0 else b""
        if head == _header(name, length):
            if len(body) != length:
                raise DataError(f"{shard}: cassette {name} is cut short (a truncated shard); pack the folder again")
            return body
        if not (head.endswith(f" {length}\n".encode()) and head.count(b"\n") == 1):
            raise DataError(f"{shard}: the index points at byte {offset}, where no cassette starts (a damaged shard)")
        # another cassette whose name has the same 64-bit hash: try the next entry
    return None


def read_cassette(path: str | os.PathLike[str]) -> bytes:
    """The bytes of cassette ``path``: the loose file, else its copy in the folder's packs.

    Raises :class:`FileNotFoundError` when neither has it."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        pass
    got = _read_packed(p)
    if got is None:
        raise FileNotFoundError(2, "no such cassette (neither a file nor in the folder's packs)", str(p))
    return got


def cassette_exists(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_file() or _read_packed(p) is not None


def packed_names(folder: str | os.PathLike[str]) -> list[str]:
    """Names of the cassettes in ``folder``'s packs (sorted, each once)."""
    packs = Path(folder) / PACKS
    if not packs.is_dir():
        return []
    names: set[str] = set()
    for _, ipath in _index_files(packs):
        names.update(e[0] for e in _read_index_file(ipath)[1])
    return sorted(names)


def loose_names(folder: str | os.PathLike[str]) -> list[str]:
    return sorted(p.name for p in Path(folder).glob("*.json") if p.name not in NOT_PACKED)


def cassette_names(folder: str | os.PathLike[str]) -> list[str]:
    """Every item cassette of ``folder``, loose or packed (sorted)."""
    return sorted(set(loose_names(folder)) | set(packed_names(folder)))


@dataclass(frozen=True)
class PackReport:
    packed: int  # cassettes moved into new shards
    shards: tuple[Path, ...]  # the shards written
    loose: int  # loose item cassettes left (0 after a full pack)
    total_packed: int  # cassettes the folder's packs hold now


def _next_number(packs: Path) -> int:
    nums = [int(p.name[:6]) for p in packs.iterdir() if re.match(r"^\d{6}\.", p.name)]
    return max(nums, default=-1) + 1


def pack_cassettes(
    folder: str | os.PathLike[str],
    *,
    names: Iterable[str] | None = None,
    shard_bytes: int = SHARD_BYTES,
) -> PackReport:
    """Move ``folder``'s loose item cassettes (or those of ``names``) into new shards of ``packs/``.

    Each shard and its index are written atomically (0644), then the loose files they hold are removed;
    the bytes are unchanged, so the manifest's sha256 and every outcome table built from the folder stay
    valid."""
    base = Path(folder)
    if not base.is_dir():
        raise DataError(f"{base}: no such cassette folder")
    if shard_bytes < 1:
        raise DataError(f"shard_bytes must be positive, got {shard_bytes}")
    todo = loose_names(base) if names is None else sorted({n for n in names if (base / n).is_file()})
    packs = base / PACKS
    packs.mkdir(exist_ok=True)
    written: list[Path] = []
    seen: dict[str, tuple[int, int]] = {}  # each file's (mtime, size) when it was read into its shard
    i = 0
    while i < len(todo):
        chunk: list[str] = []
        size = 0
        while i < len(todo) and (size < shard_bytes or not chunk):
            chunk.append(todo[i])
            size += (base / todo[i]).stat().st_size
            i += 1
        number = _next_number(packs)
        shard = packs / f"{number:06d}.pack"
        entries: list[list[object]] = []

        def fill(tmp: Path, chunk: list[str] = chunk, entries: list[list[object]] = entries) -> None:
            pos = 0
            with open(tmp, "wb") as f:
                for name in chunk:
                    st = (base / name).stat()
                    seen[name] = (st.st_mtime_ns, st.st_size)
                    data = (base / name).read_bytes()
                    head = _header(name, len(data))
                    entries.append([name, pos + len(head), len(data)])
                    f.write(head + data + b"\n")
                    pos += len(head) + len(data) + 1

        atomic_write(shard, fill)
        index = {"format": FORMAT, "shard": shard.name, "entries": entries}
        atomic_write_text(packs / f"{number:06d}.index.json", json.dumps(index, ensure_ascii=False) + "\n")
        for name in chunk:  # a loose file rewritten meanwhile is newer than its packed copy: it stays
            try:
                st = (base / name).stat()
            except FileNotFoundError:
                continue
            if (st.st_mtime_ns, st.st_size) == seen[name]:
                (base / name).unlink(missing_ok=True)
        written.append(shard)
    return PackReport(len(todo), tuple(written), len(loose_names(base)), len(packed_names(base)))


def unpack_cassettes(folder: str | os.PathLike[str]) -> int:
    """Write every packed cassette that has no loose file back as one, then remove ``packs/``; the count
    written."""
    base = Path(folder)
    n = 0
    for name in packed_names(base):
        p = base / name
        if not p.is_file():
            data = _read_packed(p)
            assert data is not None

            def put(tmp: Path, data: bytes = data) -> None:
                tmp.write_bytes(data)

            atomic_write(p, put)
            n += 1
    shutil.rmtree(base / PACKS, ignore_errors=True)
    return n


def remove_packs(folder: str | os.PathLike[str]) -> None:
    shutil.rmtree(Path(folder) / PACKS, ignore_errors=True)


__all__ = [
    "PACKS",
    "PackReport",
    "cassette_exists",
    "cassette_names",
    "pack_cassettes",
    "packed_names",
    "read_cassette",
    "unpack_cassettes",
]
