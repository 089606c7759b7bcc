"""A study is a folder, whatever made it: an eval set, the ladder policy it was recorded (or imported)
for, and that policy's cassettes with their manifest.

By name, a study lives in the workspace: ``data/imported/<name>/evalset.jsonl``,
``data/imported/<name>/ladder-policy.json`` and ``cassettes/<name>/``. By path, it is one folder
holding ``evalset.jsonl``, ``ladder-policy.json`` and ``cassettes/``. ``routerlab record --study``,
``routerlab data import`` and ``routerlab data from-logs`` create studies; ``sweep``, ``frontier``,
``report``, ``export`` and the notebooks open them by name or path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from routerlab.data.evalset import dump_evalset, load_evalset
from routerlab.data.paths import workspace_root
from routerlab.errors import DataError
from routerlab.policy import dump_policy, load_policy

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
) -> StudyPaths:
    """A new study from an eval set and a ladder policy (both validated, then copied in); its cassettes
    are recorded next. An existing study with another eval set or policy is refused unless ``force``."""
    paths = study_paths(name, root=root)
    items, pol = load_evalset(evalset), load_policy(policy)
    if paths.evalset.is_file() and not force:
        if load_evalset(paths.evalset) != items or load_policy(paths.policy) != pol:
            raise DataError(
                f"study {name!r} ({paths.folder}) already holds another eval set or policy; choose another "
                "--study name, or pass --force to replace it (its cassettes are then recorded anew)"
            )
    dump_evalset(items, paths.evalset)
    dump_policy(pol, paths.policy)
    return paths


__all__ = ["StudyPaths", "create_study", "study_paths"]
