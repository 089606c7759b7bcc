"""The one way routerlab reads and writes its JSON files (policies, eval sets, outputs, manifests).

Every reader here applies the same rules, so the formats agree:

- the file must be UTF-8; a byte-order mark is accepted;
- a key given twice in one object is an error (never "the last one wins");
- ``NaN``, ``Infinity`` and ``-Infinity`` are errors (they are not JSON);
- nesting deeper than :data:`MAX_DEPTH` is an error (not a ``RecursionError``);
- in JSONL, LF, CRLF and CR all end a line and blank lines are skipped.

Problems are reported through the caller's ``error(message, line, field)``
factory, so each format raises its own error type naming the file, the line
and the field. :func:`atomic_write_text` is the one writer: readers see the
old file or the new one, never a mix, and a new file is readable by others
(mode 0644 under the usual umask; an existing file keeps its mode).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MAX_DEPTH = 200  # far beyond any real policy or eval item; far below Python's recursion limit

ErrorFactory = Callable[[str, "int | None", "str | None"], Exception]

_LINE_END = re.compile(r"\r\n|\r|\n")  # JSON strings cannot hold a raw CR or LF; U+2028 is not a line end


class _Invalid(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _reject_constant(name: str) -> Any:
    raise _Invalid(f"invalid JSON: {name} is not valid JSON")


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # rare: find the first key given twice, for the message
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Invalid(f"duplicate key {key!r} in a JSON object", key)
            seen.add(key)
    return out


# a JSON string literal (escapes included); one left open runs to the end of the text
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)  # the unrolled loop: fast in re
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _too_deep(text: str) -> bool:
    """Whether brackets outside strings nest deeper than MAX_DEPTH (checked before decoding).

    String literals are cut out and everything but brackets dropped by regular expressions, so
    the Python loop only visits the brackets themselves."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    outside = _STRING.sub("", text)
    if outside.count("[") + outside.count("{") <= MAX_DEPTH:  # most brackets were in strings (cassette bodies)
        return False
    depth = 0
    for ch in _NOT_BRACKET.sub("", outside):
        if ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


def loads(text: str, error: ErrorFactory, line: int | None = None, *, check_depth: bool = True) -> Any:
    """Decode one JSON document by the rules above; problems go through ``error``.

    ``check_depth=False`` skips the nesting pre-check (for text whose shape is known, such as a cassette
    whose bytes match the sha256 its manifest lists); nesting past the interpreter's limit is still refused."""
    if check_depth and _too_deep(text):
        raise error(f"JSON nested more than {MAX_DEPTH} levels deep", line, None)
    try:
        return json.loads(text, object_pairs_hook=_pairs_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        if line is None:
            raise error(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", exc.lineno, None) from None
        raise error(f"invalid JSON: {exc.msg} (column {exc.colno})", line, None) from None
    except _Invalid as exc:
        raise error(exc.message, line, exc.field) from None
    except RecursionError:
        raise error(f"JSON nested too deeply (more than {MAX_DEPTH} levels)", line, None) from None


def read_text(path: str | os.PathLike[str], error: ErrorFactory, *, what: str) -> str:
    """The file as text: UTF-8 (a byte-order mark is dropped); ``what`` names it in "cannot read <what>"."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}", None, None) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(f"is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line}", line, None) from None


def read_json(path: str | os.PathLike[str], error: ErrorFactory, *, what: str) -> Any:
    """One JSON document from a file (a policy, a manifest)."""
    return loads(read_text(path, error, what=what), error)


def iter_jsonl(path: str | os.PathLike[str], error: ErrorFactory, *, what: str) -> Iterator[tuple[int, Any]]:
    """Each non-blank line of a JSONL file, decoded, with its 1-based line number."""
    text = read_text(path, error, what=what)
    for lineno, line_text in enumerate(_LINE_END.split(text), start=1):
        if line_text.strip():
            yield lineno, loads(line_text, error, lineno)


def _umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-and-restore (briefly process-wide)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Let ``write(tmp)`` fill a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never a mix; on any failure the old file is untouched
    and the temporary file removed. An existing file keeps its mode; a new one gets the umask's
    default (0644 under the usual 022), never mkstemp's private 0600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8, LF line ends) to ``path`` atomically; see :func:`atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


def _fsync_dir(directory: Path) -> None:
    """Best effort: make the rename durable (not possible on every platform)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


__all__ = ["MAX_DEPTH", "atomic_write", "atomic_write_text", "iter_jsonl", "loads", "read_json", "read_text"]
