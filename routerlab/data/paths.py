"""Where the workbench keeps things: the workspace, the download cache, the dataset mirror.

Each is a setting with a default: ``$ROUTERLAB_WORKSPACE`` (eval sets, cassettes,
reports, policies), ``$ROUTERLAB_DATA_DIR`` (fetched files, outcome tables) and
``$ROUTERLAB_MIRROR`` (an offline copy of the public datasets).
"""

from __future__ import annotations

import os
from pathlib import Path

from routerlab.errors import DatasetError

WORKSPACE_ENV = "ROUTERLAB_WORKSPACE"
DATA_DIR_ENV = "ROUTERLAB_DATA_DIR"
MIRROR_ENV = "ROUTERLAB_MIRROR"


def checkout_root() -> Path | None:
    """The source checkout this module runs from, or None when installed.

    A checkout is the directory right above the ``routerlab`` package that holds
    ``pyproject.toml`` (only that directory is looked at, so a virtualenv inside
    some other project never passes for a checkout).
    """
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def default_cache_dir() -> Path:
    """Where fetched files are kept.

    ``$ROUTERLAB_DATA_DIR``, else ``<checkout>/.routerlab-data`` when running from a
    source checkout (the directory is gitignored), else
    ``$XDG_CACHE_HOME/routerlab`` (``~/.cache/routerlab``).
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    root = checkout_root()
    if root is not None:
        return root / ".routerlab-data"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "routerlab"


def mirror_dir(explicit: str | Path | None = None) -> Path | None:
    """The offline mirror folder (raw-URL layout), or None if there is none.

    ``explicit``, else ``$ROUTERLAB_MIRROR``, else
    ``<checkout>/../shared/datasets/github`` if that folder exists. A folder named
    explicitly or by the environment variable must exist.
    """
    for value, origin in (
        (explicit, "mirror argument"),
        (os.environ.get(MIRROR_ENV), MIRROR_ENV),
    ):
        if value is None or value == "":
            continue
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DatasetError(
                f"The dataset mirror folder {str(path)!r} (from {origin}) does not exist "
                "or is not a directory; it should hold "
                "<owner>/<repo>/<commit>/<path> like raw.githubusercontent.com."
            )
        return path
    root = checkout_root()
    if root is not None:
        shared = root.parent / "shared" / "datasets" / "github"
        if shared.is_dir():
            return shared
    return None


def workspace_root() -> Path:
    """Where data/imported, cassettes, reports and policies live.

    ``$ROUTERLAB_WORKSPACE`` when set; else the checkout's root when running
    from one; else the current directory.
    """
    env = os.environ.get(WORKSPACE_ENV)
    if env:
        return Path(env)
    return checkout_root() or Path.cwd()
