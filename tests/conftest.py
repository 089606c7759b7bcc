"""Shared test setup: no test reaches the network, and data folders are found.

Any socket connection to an address outside 127.0.0.0/8 and ::1 is refused
*and* recorded; a test that made one fails at teardown even if the code under
test swallowed the error (the router turns connection errors into
escalations, so a refused connect alone could go unnoticed).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

_attempts: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _loopback(host: Any) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _guard(addr: Any) -> None:
    if isinstance(addr, tuple) and addr and not _loopback(addr[0]):
        _attempts.append(str(addr))
        raise ConnectionRefusedError(f"tests must not reach the network (tried {addr!r})")


def _connect(self: socket.socket, addr: Any) -> None:
    _guard(addr)
    _real_connect(self, addr)


def _connect_ex(self: socket.socket, addr: Any) -> int:
    _guard(addr)
    return _real_connect_ex(self, addr)


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _loopback(host) and not _is_ip(host):
        _attempts.append(f"dns:{host}")
        raise socket.gaierror(f"tests must not resolve {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _is_ip(host: Any) -> bool:
    try:
        ipaddress.ip_address(str(host))
        return True
    except ValueError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _getaddrinfo
    os.environ.setdefault("ROUTERLAB_PROVIDER_WIRE", str(SHARED / "provider-wire"))
    mirror = SHARED / "datasets" / "github"
    if mirror.is_dir():
        os.environ.setdefault("ROUTERLAB_MIRROR", str(mirror))
    # downloaded/copied data and outcome caches go to a per-run folder, not the checkout
    os.environ["ROUTERLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="routerlab-test-data-")
    # keep HOME caches (matplotlib, jupyter) out of the way and proxies out of httpx
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        os.environ.pop(var, None)


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    start = len(_attempts)
    yield
    tried = _attempts[start:]
    if tried:
        pytest.fail(f"test tried to reach the network: {tried}")


@pytest.fixture
def network_attempts() -> list[str]:
    """The list the guard appends to (for the test that checks the guard itself)."""
    return _attempts


def require_mirror() -> Path:
    """The dataset mirror; skipped with a reason where there is none (CI must have it: there it fails)."""
    m = os.environ.get("ROUTERLAB_MIRROR")
    if m and Path(m).is_dir():
        return Path(m)
    msg = (
        f"no dataset mirror: set ROUTERLAB_MIRROR or provide {SHARED / 'datasets' / 'github'} "
        "(tests that need the public datasets are skipped)"
    )
    if os.environ.get("CI"):
        pytest.fail(msg + "; CI must provide it")
    pytest.skip(msg)


@dataclass
class ImportedSet:
    name: str
    root: Path
    policy: Any
    items: list[Any]
    cassettes: Path
    outcomes: Any


SCORERS = {"alpaca_eval": ["rougeL"], "arena_bench_v1": ["label", "rougeL"], "mot_date": ["exact", "rougeL"]}


@pytest.fixture(scope="session")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ImportedSet]:
    """Import a public dataset once per test session (into a temp workspace) and build its outcome table."""
    from routerlab.data.evalset import load_evalset
    from routerlab.data.importers import import_dataset
    from routerlab.policy import load_policy
    from routerlab.workbench.outcomes import build_outcomes

    root = tmp_path_factory.mktemp("workspace")
    done: dict[str, ImportedSet] = {}

    def get(name: str) -> ImportedSet:
        require_mirror()
        if name not in done:
            r = import_dataset(name, root=root, progress=False)
            policy = load_policy(r.policy)
            items = load_evalset(r.evalset)
            o = build_outcomes(
                items, policy, r.cassettes, scorers=SCORERS[name], cache_dir=root / "outcomes", progress=False
            )
            done[name] = ImportedSet(name, root, policy, items, r.cassettes, o)
        return done[name]

    return get


@pytest.fixture
def loopback_dask() -> Iterator[Any]:
    """A Dask client of a two-worker local cluster bound to 127.0.0.1 (the test is skipped without
    ``distributed``, the ``cluster`` extra)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
