"""Tests of routerlab.data.datasets: registry, mirror copy, download, verification.

The data files themselves never enter the repository: tests read the shared
mirror (``$ROUTERLAB_MIRROR`` or ``<repo>/../shared/datasets/github``) and write
only to pytest's tmp_path. All HTTP traffic stays on 127.0.0.1 (a real
ThreadingHTTPServer) or in an httpx.MockTransport.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import (
    BaseHTTPRequestHandler,
    SimpleHTTPRequestHandler,
    ThreadingHTTPServer,
)
from pathlib import Path
from typing import Any

import httpx
import pytest

from routerlab.data import datasets, paths
from routerlab.data.datasets import REGISTRY, fetch
from routerlab.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
PROXY_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def _find_mirror() -> Path | None:
    env = os.environ.get("ROUTERLAB_MIRROR")
    if env:
        return Path(env) if Path(env).is_dir() else None
    fallback = REPO.parent / "shared" / "datasets" / "github"
    return fallback if fallback.is_dir() else None


@pytest.fixture(scope="module")
def mirror() -> Path:
    found = _find_mirror()
    if found is None:
        pytest.skip(
            f"no dataset mirror: set ROUTERLAB_MIRROR or provide {REPO.parent / 'shared' / 'datasets' / 'github'}"
        )
    return found


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir()
    return d


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_network_client() -> httpx.Client:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected HTTP request: {request.url}")

    return httpx.Client(transport=httpx.MockTransport(refuse))


def _loopback_client() -> httpx.Client:
    # trust_env=False: a proxy set in the environment must not see loopback traffic.
    return httpx.Client(timeout=10, follow_redirects=True, trust_env=False)


class _Quiet:
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serve(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _mirror_server(mirror: Path) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(_Quiet, SimpleHTTPRequestHandler):
        pass

    return functools.partial(Handler, directory=str(mirror))


def _body_server(mirror: Path, mangle: Callable[[bytes], tuple[bytes, int]]) -> type:
    """A server sending mangle(file bytes) -> (body, Content-Length) for mirror paths."""

    class Handler(_Quiet, BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = mirror / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body, length = mangle(path.read_bytes())
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

    return Handler


# --------------------------------------------------------------------------- registry


def test_registry_has_exactly_the_pinned_datasets() -> None:
    assert set(REGISTRY) == {"alpaca_eval", "arena_bench_v1", "mot_date"}
    counts = {name: len(ds.files) for name, ds in REGISTRY.items()}
    assert counts == {"alpaca_eval": 9, "arena_bench_v1": 9, "mot_date": 5}
    for ds in REGISTRY.values():
        assert len(ds.commit) == 40
        assert len({f.path for f in ds.files}) == len(ds.files)
        for f in ds.files:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0
            assert f.size > 0
    alpaca = REGISTRY["alpaca_eval"]
    f = next(f for f in alpaca.files if "gpt-4o-mini" in f.path)
    assert alpaca.url(f) == (
        "https://raw.githubusercontent.com/tatsu-lab/alpaca_eval/"
        "cd543a149df89434d8a54582c0151c0b945c3d20/"
        "results/gpt-4o-mini-2024-07-18/model_outputs.json"
    )


def test_registry_literals_match_the_mirror(mirror: Path) -> None:
    for ds in REGISTRY.values():
        for f in ds.files:
            path = mirror / ds.owner / ds.repo / ds.commit / f.path
            assert path.is_file(), path
            assert path.stat().st_size == f.size, path
            assert _sha256(path) == f.sha256, path
    for d in datasets.DERIVED.values():
        path = mirror.parent / "derived" / d.file.path
        assert path.stat().st_size == d.file.size, path
        assert _sha256(path) == d.file.sha256, path


def test_get_dataset_unknown_lists_valid_names() -> None:
    assert datasets.get_dataset("mot_date") is REGISTRY["mot_date"]
    with pytest.raises(DatasetError) as err:
        datasets.get_dataset("nope")
    msg = str(err.value)
    assert "'nope'" in msg
    for name in REGISTRY:
        assert name in msg


def test_describe() -> None:
    text = datasets.describe("arena_bench_v1")
    assert "lmarena/arena-hard-auto" in text
    assert "Apache-2.0" in text
    assert "question.jsonl" in text and "MB" in text
    assert "internal evaluation only" in datasets.describe("mot_date")
    derived = datasets.describe("arena_bench_v1_judge_scores")
    assert "no public URL" in derived and "Apache-2.0" in derived
    with pytest.raises(DatasetError):
        datasets.describe("nope")


# --------------------------------------------------------------------------- locations


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROUTERLAB_DATA_DIR", str(tmp_path / "data"))
    assert paths.default_cache_dir() == tmp_path / "data"
    monkeypatch.delenv("ROUTERLAB_DATA_DIR")
    got = paths.default_cache_dir()
    if (REPO / "pyproject.toml").is_file():
        assert got == REPO / ".routerlab-data"
    else:
        assert got.name == "routerlab" and got != REPO / ".routerlab-data"


def test_mirror_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ROUTERLAB_MIRROR", raising=False)
    assert paths.mirror_dir(tmp_path) == tmp_path
    monkeypatch.setenv("ROUTERLAB_MIRROR", str(tmp_path))
    assert paths.mirror_dir() == tmp_path
    with pytest.raises(DatasetError, match="does not exist"):
        paths.mirror_dir(tmp_path / "missing")
    monkeypatch.setenv("ROUTERLAB_MIRROR", str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="ROUTERLAB_MIRROR"):
        paths.mirror_dir()


# --------------------------------------------------------------------------- mirror path


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_fetch_from_mirror_then_reuse_cache(name: str, mirror: Path, cache: Path) -> None:
    ds = REGISTRY[name]
    got = fetch(name, cache_dir=cache, mirror=mirror, progress=False)
    assert set(got) == {f.path for f in ds.files}
    for f in ds.files:
        local = got[f.path]
        assert local == cache / ds.owner / ds.repo / ds.commit / f.path
        assert local.stat().st_size == f.size
        assert _sha256(local) == f.sha256
    assert _files_under(cache) == sorted(got.values())  # no temp files left

    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in got.values()}
    # Second fetch: no mirror, and any HTTP request fails the test.
    with _no_network_client() as client:
        again = fetch(name, cache_dir=cache, mirror=False, client=client, progress=False)
    assert again == got
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in again.values()} == before


def test_corrupt_cached_file_is_replaced(mirror: Path, cache: Path) -> None:
    ds = REGISTRY["mot_date"]
    f = ds.files[0]
    target = cache / ds.owner / ds.repo / ds.commit / f.path
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x" * f.size)  # right size, wrong bytes
    got = fetch("mot_date", cache_dir=cache, mirror=mirror, progress=False)
    assert _sha256(got[f.path]) == f.sha256


def test_tampered_mirror_file_names_mirror_path(mirror: Path, tmp_path: Path, cache: Path) -> None:
    ds = REGISTRY["mot_date"]
    bad = next(f for f in ds.files if f.path == "GPT4_result/date_greedy_cot1.json")
    fake = tmp_path / "mirror"
    for f in ds.files:
        src = mirror / ds.owner / ds.repo / ds.commit / f.path
        dst = fake / ds.owner / ds.repo / ds.commit / f.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        if f is bad:
            data = bytearray(src.read_bytes())
            data[len(data) // 2] ^= 0x01
            dst.write_bytes(bytes(data))
        else:
            dst.symlink_to(src)
    bad_path = fake / ds.owner / ds.repo / ds.commit / bad.path

    with _no_network_client() as client, pytest.raises(DatasetError) as err:
        fetch("mot_date", cache_dir=cache, mirror=fake, client=client, progress=False)
    msg = str(err.value)
    assert str(bad_path) in msg
    assert "mot_date" in msg and bad.path in msg and bad.sha256 in msg
    assert not (cache / ds.owner / ds.repo / ds.commit / bad.path).exists()
    assert not [p for p in _files_under(cache) if p.name.endswith(".part")]


def test_derived_path(mirror: Path, tmp_path: Path) -> None:
    path = datasets.derived_path("arena_bench_v1_judge_scores", mirror=mirror)
    assert path == mirror.parent / "derived" / "arena_bench_v1_judge_scores.csv"
    assert datasets.derived_path("arena_bench_v1_judge_scores.csv", mirror=mirror) == path

    lonely = tmp_path / "elsewhere" / "github"
    lonely.mkdir(parents=True)
    with pytest.raises(DatasetError, match="only available from the shared mirror"):
        datasets.derived_path("arena_bench_v1_judge_scores", mirror=lonely)

    (lonely.parent / "derived").mkdir()
    (lonely.parent / "derived" / "arena_bench_v1_judge_scores.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="sha256"):
        datasets.derived_path("arena_bench_v1_judge_scores", mirror=lonely)

    with pytest.raises(DatasetError, match="valid names"):
        datasets.derived_path("nope", mirror=mirror)


def test_derived_path_without_any_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTERLAB_MIRROR", raising=False)
    monkeypatch.setattr(datasets, "mirror_dir", lambda explicit=None: None)
    with pytest.raises(DatasetError, match="only available from the shared mirror"):
        datasets.derived_path("arena_bench_v1_judge_scores")


# --------------------------------------------------------------------------- download path


def test_download_from_loopback_server(mirror: Path, cache: Path) -> None:
    ds = REGISTRY["mot_date"]  # 5 files, ~6 MB; includes a '=' in a file name
    with _serve(_mirror_server(mirror)) as base_url, _loopback_client() as client:
        got = fetch(
            "mot_date",
            cache_dir=cache,
            mirror=False,
            client=client,
            progress=False,
            base_url=base_url,
        )
    for f in ds.files:
        assert got[f.path].stat().st_size == f.size
        assert _sha256(got[f.path]) == f.sha256
    assert _files_under(cache) == sorted(got.values())


def test_download_with_progress_bar(mirror: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _serve(_mirror_server(mirror)) as base_url, _loopback_client() as client:
        fetch("mot_date", cache_dir=cache, mirror=False, client=client, base_url=base_url)
    assert "date_cot1.json" in capsys.readouterr().err


def _assert_cache_empty(cache: Path) -> None:
    assert _files_under(cache) == [], "a partial or temp file was left in the cache"


def test_download_corrupted_bytes(mirror: Path, cache: Path) -> None:
    def flip(data: bytes) -> tuple[bytes, int]:
        b = bytearray(data)
        b[0] ^= 0xFF
        return bytes(b), len(b)

    with (
        _serve(_body_server(mirror, flip)) as base_url,
        _loopback_client() as client,
        pytest.raises(DatasetError) as err,
    ):
        fetch(
            "mot_date",
            cache_dir=cache,
            mirror=False,
            client=client,
            progress=False,
            base_url=base_url,
        )
    msg = str(err.value)
    f = REGISTRY["mot_date"].files[0]
    assert "sha256" in msg and f.sha256 in msg and "mot_date" in msg and f.path in msg
    assert base_url in msg
    _assert_cache_empty(cache)


def test_download_cut_short(mirror: Path, cache: Path) -> None:
    # Content-Length promises the whole file; the body stops halfway, then the
    # connection closes.
    def halve(data: bytes) -> tuple[bytes, int]:
        return data[: len(data) // 2], len(data)

    with (
        _serve(_body_server(mirror, halve)) as base_url,
        _loopback_client() as client,
        pytest.raises(DatasetError) as err,
    ):
        fetch(
            "mot_date",
            cache_dir=cache,
            mirror=False,
            client=client,
            progress=False,
            base_url=base_url,
        )
    assert base_url in str(err.value)
    _assert_cache_empty(cache)


def test_download_short_but_honest_length(mirror: Path, cache: Path) -> None:
    # A consistent response that is simply shorter than the registered size.
    def shorten(data: bytes) -> tuple[bytes, int]:
        return data[:-10], len(data) - 10

    with (
        _serve(_body_server(mirror, shorten)) as base_url,
        _loopback_client() as client,
        pytest.raises(DatasetError, match="truncated"),
    ):
        fetch(
            "mot_date",
            cache_dir=cache,
            mirror=False,
            client=client,
            progress=False,
            base_url=base_url,
        )
    _assert_cache_empty(cache)


def test_download_too_long(mirror: Path, cache: Path) -> None:
    def pad(data: bytes) -> tuple[bytes, int]:
        return data + b"\n" * 100, len(data) + 100

    with (
        _serve(_body_server(mirror, pad)) as base_url,
        _loopback_client() as client,
        pytest.raises(DatasetError, match="more bytes than expected"),
    ):
        fetch(
            "mot_date",
            cache_dir=cache,
            mirror=False,
            client=client,
            progress=False,
            base_url=base_url,
        )
    _assert_cache_empty(cache)


def test_download_404_names_url(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Also exercises the default client (client=None); no proxy may intercept.
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    ds = REGISTRY["arena_bench_v1"]
    with (
        _serve(_mirror_server(empty)) as base_url,
        pytest.raises(DatasetError) as err,
    ):
        fetch(
            "arena_bench_v1",
            cache_dir=cache,
            mirror=False,
            progress=False,
            base_url=base_url,
        )
    msg = str(err.value)
    assert "404" in msg
    assert ds.url(ds.files[0], base_url) in msg
    _assert_cache_empty(cache)


def test_mirror_missing_a_file_falls_back_to_download(mirror: Path, tmp_path: Path, cache: Path) -> None:
    ds = REGISTRY["mot_date"]
    partial = tmp_path / "partial"
    first = ds.files[0]
    dst = partial / ds.owner / ds.repo / ds.commit / first.path
    dst.parent.mkdir(parents=True)
    dst.symlink_to(mirror / ds.owner / ds.repo / ds.commit / first.path)
    requested: list[str] = []

    class Handler(_Quiet, SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

    with (
        _serve(functools.partial(Handler, directory=str(mirror))) as base_url,
        _loopback_client() as client,
    ):
        got = fetch(
            "mot_date",
            cache_dir=cache,
            mirror=partial,
            client=client,
            progress=False,
            base_url=base_url,
        )
    assert len(requested) == len(ds.files) - 1
    assert not any(first.path in r for r in requested)
    for f in ds.files:
        assert _sha256(got[f.path]) == f.sha256
