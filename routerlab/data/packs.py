"""Cassette packs: many items' cassettes in a few shard files, found through an index.

A cassette folder holds one vcrpy cassette per item (``<item id>.json``). At a million items that is a
million files: slow to list, copy and back up, and hard on a filesystem. :func:`pack_cassettes` moves a
folder's loose cassettes into ``packs/``:

- ``packs/<n>.pack``: the cassettes' bytes one after another, each unchanged (so its sha256 in the
  manifest still holds) and preceded by a header line naming it (``#routerlab-pack <name> <length>``),
  so a shard can be read without its index;
- ``packs/<n>.index.json``: ``{"format", "shard", "entries": [[name, offset, length], ...]}``, the byte
  range of each cassette in its shard.

Shards and indexes are written once and never changed in place. A process keeps the indexes it has
parsed and looks again when the ``packs/`` folder's mtime or inode changes (every rename changes them),
or, where timestamps are too coarse to tell, when a lookup misses; it then parses only the index files it
has not seen. A shard counts only once its index is in place (each file is written atomically, the index
last), so an interrupted pack loses nothing: the loose files it did not yet remove still win. A packer
claims its shard number by creating the shard file exclusively, so two packers of one folder never
write the same files. Reading (:func:`read_cassette`) looks for the loose file first, then for the
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
#: Bytes read before a cassette: its header line (a file name is at most 255 bytes on Linux, 255 UTF-16
#: units, up to 765 bytes of UTF-8, on Windows and macOS; a longer header is refused when packing).
_HEAD_WINDOW = 1024
_SHARD_RE = re.compile(r"^(\d{6,})\.index\.json$")  # six digits, more past 999,999
_NUMBERED = re.compile(r"^(\d{6,})\.")


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
_Listing = tuple[tuple[str, int, int, int], ...]  # each index file's (name, size, mtime_ns, inode)
_Parsed = tuple[Path, np.ndarray, np.ndarray, np.ndarray]  # one index: its shard, hashes, offsets, lengths


@dataclass
class _Cached:
    sig: tuple[int, int]  # the packs folder's (mtime_ns, inode) when ``listing`` was taken
    listing: _Listing
    parsed: dict[tuple[str, int, int, int], _Parsed]  # by listing entry: an index file is parsed once
    index: _Index


_CACHE: dict[str, _Cached] = {}
_LOCK = threading.Lock()


def _index_files(packs: Path) -> list[tuple[int, Path]]:
    out = []
    for p in packs.iterdir():
        m = _SHARD_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def _listing(packs: Path) -> _Listing:
    """The index files of ``packs`` in shard order, each with what changes when it is replaced."""
    out = []
    with os.scandir(packs) as it:
        for e in it:
            m = _SHARD_RE.match(e.name)
            if m:
                st = e.stat()
                out.append((int(m.group(1)), (e.name, st.st_size, st.st_mtime_ns, st.st_ino)))
    return tuple(x for _, x in sorted(out))


def check_name(name: str, where: str) -> None:
    """Refuse a cassette name that is not a bare ``*.json`` file name of an item (``where`` says whose)."""
    if (
        not isinstance(name, str)
        or not name.endswith(".json")
        or Path(name).name != name
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        or name in NOT_PACKED
        or "\n" in name
    ):
        raise DataError(f"{where}: {name!r} is not an item cassette's file name (a bare <id>.json)")


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
        check_name(entry[0], f"{path}: entry {n}")
        out.append((entry[0], entry[1], entry[2]))
    return shard, out


def _load_index(folder: Path, *, recheck: bool = False) -> _Index:
    """The folder's merged index. Cached per process: reused while the packs folder's (mtime_ns, inode)
    is unchanged (every rename in it changes them, on filesystems with fine timestamps); ``recheck``
    (after a lookup missed) compares the index files themselves, for timestamps too coarse to tell. Only
    index files not seen before are parsed (they are never changed in place)."""
    packs = folder / PACKS
    try:
        st = packs.stat()
    except OSError:
        return _EMPTY
    sig = (st.st_mtime_ns, st.st_ino)
    key = str(packs.absolute())
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit.sig == sig and not recheck:
        return hit.index
    try:
        listing = _listing(packs)
    except OSError:
        return _EMPTY
    if hit is not None and hit.listing == listing:
        hit.sig = sig
        return hit.index
    parsed = {} if hit is None else hit.parsed
    now: dict[tuple[str, int, int, int], _Parsed] = {}
    for entry in listing:
        got = parsed.get(entry)
        if got is None:
            shard_name, entries = _read_index_file(packs / entry[0])
            got = (
                packs / shard_name,
                np.fromiter((_name_hash(e[0]) for e in entries), dtype=np.int64, count=len(entries)),
                np.fromiter((e[1] for e in entries), dtype=np.int64, count=len(entries)),
                np.fromiter((e[2] for e in entries), dtype=np.int64, count=len(entries)),
            )
        now[entry] = got
    shards = tuple(now[e][0] for e in listing)
    if listing:
        h = np.concatenate([now[e][1] for e in listing])
        sh = np.concatenate([np.full(len(now[e][1]), i, dtype=np.int32) for i, e in enumerate(listing)])
        o = np.concatenate([now[e][2] for e in listing])
        n = np.concatenate([now[e][3] for e in listing])
        order = np.argsort(h, kind="stable")
        index = _Index(shards, h[order], sh[order], o[order], n[order])
    else:
        index = _EMPTY
    with _LOCK:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = _Cached(sig, listing, now, index)
    return index


def _forget(folder: Path, *, whole: bool = False) -> None:
    """This process changed the folder's packs: its cached index is checked against the index files at
    the next lookup (those parsed before are kept: they never change), or dropped (``whole``)."""
    with _LOCK:
        key = str((folder / PACKS).absolute())
        if whole:
            _CACHE.pop(key, None)
        elif key in _CACHE:
            _CACHE[key].sig = (-1, -1)


def _read_packed(path: Path) -> bytes | None:
    """The packed bytes of cassette ``path`` (its folder's newest shard holding its name), or None."""
    got = _find_packed(path, _load_index(path.parent))
    if got is None:  # perhaps packed meanwhile by another process, within the folder's timestamp tick
        got = _find_packed(path, _load_index(path.parent, recheck=True))
    return got


def _find_packed(path: Path, index: _Index) -> bytes | None:
    name = path.name
    for shard, offset, length in index.find(name):
        start = max(0, offset - _HEAD_WINDOW)  # the header line ends where the cassette starts
        try:
            with open(shard, "rb") as f:
                f.seek(start)
                before = f.read(offset - start)
                at = before.rfind(b"#routerlab-pack ")
                head = before[at:] if at >= 0 else b""
                if head == _header(name, length):  # the header checked before the length is trusted
                    if offset + length > os.fstat(f.fileno()).st_size:
                        raise DataError(
                            f"{shard}: cassette {name} is cut short (a truncated shard); pack the folder again"
                        )
                    return f.read(length)
        except OSError as e:
            raise DataError(f"{shard}: cannot read pack shard: {e.strerror or e}") from None
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
    nums = [int(m.group(1)) for p in packs.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(nums, default=-1) + 1


def _claim(packs: Path) -> int:
    """A shard number no other packer holds: its shard file created exclusively (empty until written;
    without its index no reader looks at it), so two packers of one folder never write the same files."""
    number = _next_number(packs)
    while True:
        try:
            os.close(os.open(packs / f"{number:06d}.pack", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            number += 1
            continue
        if (packs / f"{number:06d}.index.json").exists():  # an index left without its shard: not ours
            number += 1
            continue
        return number


def _remove_packs_dir(base: Path) -> None:
    packs = base / PACKS
    _forget(base, whole=True)
    try:
        if packs.is_symlink():
            packs.unlink()
        elif packs.exists():
            shutil.rmtree(packs)
    except OSError as e:
        raise DataError(f"{packs}: cannot remove the packs folder: {e.strerror or e}") from None


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
    if names is not None:
        names = list(names)
        for n in names:
            check_name(n, f"{base}: pack_cassettes(names=...)")
    todo = loose_names(base) if names is None else sorted({n for n in names if (base / n).is_file()})
    packs = base / PACKS
    packs.mkdir(exist_ok=True)
    written: list[Path] = []
    seen: dict[str, tuple[int, int, int]] = {}  # each file's (mtime, size, inode) when read into its shard
    i = 0
    while i < len(todo):
        chunk: list[str] = []
        size = 0
        while i < len(todo) and (size < shard_bytes or not chunk):
            chunk.append(todo[i])
            size += (base / todo[i]).stat().st_size
            i += 1
        number = _claim(packs)
        shard = packs / f"{number:06d}.pack"
        entries: list[list[object]] = []

        def fill(tmp: Path, chunk: list[str] = chunk, entries: list[list[object]] = entries) -> None:
            pos = 0
            with open(tmp, "wb") as f:
                for name in chunk:
                    st = (base / name).stat()
                    seen[name] = (st.st_mtime_ns, st.st_size, st.st_ino)
                    data = (base / name).read_bytes()
                    head = _header(name, len(data))
                    if len(head) > _HEAD_WINDOW:
                        raise DataError(f"{base / name}: the file name is too long to pack ({len(head)} bytes)")
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
            if (st.st_mtime_ns, st.st_size, st.st_ino) == seen[name]:
                (base / name).unlink(missing_ok=True)
        written.append(shard)
    _forget(base)
    total = int(np.unique(_load_index(base).hashes).size)  # distinct names (by their 64-bit hashes)
    return PackReport(len(todo), tuple(written), len(loose_names(base)), total)


def unpack_cassettes(folder: str | os.PathLike[str]) -> int:
    """Write every packed cassette that has no loose file back as one, then remove ``packs/``; the count
    written."""
    base = Path(folder)
    n = 0
    for name in packed_names(base):
        p = base / name
        if not p.is_file():
            data = _read_packed(p)
            if data is None:
                raise DataError(f"{base / PACKS}: the index lists {name} but no shard holds it (a damaged pack)")

            def put(tmp: Path, data: bytes = data) -> None:
                tmp.write_bytes(data)

            atomic_write(p, put)
            n += 1
    _remove_packs_dir(base)
    return n


def remove_packs(folder: str | os.PathLike[str]) -> None:
    """Remove ``folder``'s packs (a DataError naming it when that fails)."""
    _remove_packs_dir(Path(folder))


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
