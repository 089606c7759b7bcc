"""A study is a folder, whatever made it: an eval set, the ladder policy it was recorded (or imported)
for, and that policy's cassettes with their manifest.

By name, a study lives in the workspace: ``data/imported/<name>/evalset.jsonl``,
``data/imported/<name>/ladder-policy.json`` and ``cassettes/<name>/``. By path, it is one folder
holding ``evalset.jsonl``, ``ladder-policy.json`` and ``cassettes/``. ``routerlab record --study``,
``routerlab data import`` and ``routerlab data from-logs`` create studies; ``sweep``, ``frontier``,
``report``, ``export`` and the notebooks open them by name or path.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from routerlab.data.evalset import load_evalset
from routerlab.data.paths import workspace_root
from routerlab.errors import DataError
from routerlab.jsonio import atomic_write
from routerlab.policy import load_policy

EVALSET, POLICY, CASSETTES = "evalset.jsonl", "ladder-policy.json", "cassettes"


@dataclass(frozen=True)
class StudyPaths:
    """Where one study's files are."""

    name: str
    folder: Path  # holds the eval set and the ladder policy
    cassettes: Path

    @property
    def evalset(self) -> Path:
        return self.folder / EVALSET

    @property
    def policy(self) -> Path:
        return self.folder / POLICY

    def exists(self) -> bool:
        return self.evalset.is_file() and self.policy.is_file() and (self.cassettes / "manifest.json").is_file()


def study_paths(study: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> StudyPaths:
    """The study called ``study`` in the workspace (``root``, default :func:`workspace_root`), or the study
    folder at that path when ``study`` names a folder that holds an eval set."""
    p = Path(study)
    if p.is_dir() and (p / EVALSET).is_file():
        return StudyPaths(p.name, p, p / CASSETTES)
    name = str(study)
    if not name or "/" in name or os.sep in name or name in (".", ".."):
        raise DataError(f"{name!r} is neither a study folder (with {EVALSET}) nor a study name")
    base = Path(root) if root is not None else workspace_root()
    return StudyPaths(name, base / "data" / "imported" / name, base / "cassettes" / name)


def create_study(
    name: str,
    evalset: str | os.PathLike[str],
    policy: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
    write: bool = True,
) -> StudyPaths:
    """A new study from an eval set and a ladder policy (both validated, then copied in byte for byte,
    so the manifest's eval-set sha256 is the study's); its cassettes are recorded next. An existing
    study with another eval set or policy is refused unless ``force``. With ``write=False`` only the
    checks run: call :func:`write_study_inputs` once the recording has started, so a run that fails
    before sending anything leaves an existing study as it was."""
    paths = study_paths(name, root=root)
    items, pol = load_evalset(evalset), load_policy(policy)
    if paths.evalset.is_file() and not force:
        other = [w for w, same in (("eval set", load_evalset(paths.evalset) == items),
                                   ("ladder policy", load_policy(paths.policy) == pol)) if not same]  # fmt: skip
        if other:
            raise DataError(
                f"study {name!r} ({paths.folder}) already holds another {' and '.join(other)}; choose another "
                "--study name, or pass --force to replace it (its cassettes are then recorded anew)"
            )
    if write:
        write_study_inputs(paths, evalset, policy)
    return paths


def write_study_inputs(paths: StudyPaths, evalset: str | os.PathLike[str], policy: str | os.PathLike[str]) -> None:
    """Copy the eval set and the ladder policy into the study, byte for byte and atomically."""
    for src, dst in ((evalset, paths.evalset), (policy, paths.policy)):
        atomic_write(dst, functools.partial(_write_bytes, Path(src).read_bytes()))


def _write_bytes(data: bytes, tmp: Path) -> None:
    tmp.write_bytes(data)


__all__ = ["StudyPaths", "create_study", "study_paths", "write_study_inputs"]
