"""Cassette packs: a folder's cassettes in a few shard files with an index. Every reader (replay, the
outcome-table build, recording's resume, vcrpy playback, the manifest's hashes) must find a packed
cassette exactly as the loose file it was; bad packs are refused by file name."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import stat
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from routerlab.cli import main
from routerlab.data import importers, packs
from routerlab.data.cassettes import (
    MANIFEST,
    cassette_name,
    needed_requests,
    record,
    replay_items,
    replay_keys,
    vcr_playback,
    verify_cassette,
)
from routerlab.data.evalset import load_evalset
from routerlab.data.importers import import_outputs, load_ladder, load_outputs
from routerlab.errors import DataError
from routerlab.policy import load_policy
from routerlab.workbench.outcomes import build_outcomes

LADDER = {
    "tiers": [
        {
            "source_model": "small",
            "provider": "openai",
            "model": "small-model",
            "base_url": "https://api.example.test/v1",
            "api_key_env": "EXAMPLE_KEY",
            "price": {"input_usd_per_mtok": "0.1", "output_usd_per_mtok": "0.2"},
        },
        {
            "source_model": "large",
            "provider": "openai",
            "model": "large-model",
            "base_url": "https://api.example.test/v1",
            "api_key_env": "EXAMPLE_KEY",
            "price": {"input_usd_per_mtok": "2", "output_usd_per_mtok": "6"},
        },
    ]
}


def write_study_inputs(tmp: Path, n: int, seed: int = 11) -> tuple[Path, Path]:
    """An outputs file of ``n`` arithmetic questions (3 samples from the small model, 1 from the large)."""
    tmp.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        for model, acc, k in (("small", 0.6, 3), ("large", 0.95, 1)):
            samples = [f"Answer: {a + b if rng.random() < acc else a + b - 1}" for _ in range(k)]
            rows.append({"id": f"item-{i}", "prompt": f"{a} + {b}?", "model": model, "samples": samples,
                         "answer": str(a + b), "temperature": 0.7})  # fmt: skip
    outputs = tmp / "outputs.jsonl"
    outputs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ladder = tmp / "ladder.json"
    ladder.write_text(json.dumps(LADDER), encoding="utf-8")
    return outputs, ladder


def do_import(tmp: Path, n: int, *, name: str, pack: bool | None) -> importers.ImportResult:
    outputs, ladder = write_study_inputs(tmp, n)
    return import_outputs(
        load_outputs(outputs), load_ladder(ladder), name=name, root=tmp / "ws", progress=False, pack=pack, k_max=3
    )


def loose_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.json") if p.name != MANIFEST)


def table(o: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    return o.calls.reset_index(drop=True), o.samples.reset_index(drop=True)


def test_a_packing_import_never_has_more_files_than_a_batch_and_builds_the_same_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importers, "PACK_EVERY", 7)
    seen: list[int] = []
    real = packs.pack_cassettes

    def spy(folder: Any, **kw: Any) -> Any:
        seen.append(len(loose_files(Path(folder))))
        return real(folder, **kw)

    monkeypatch.setattr("routerlab.data.cassettes.pack_cassettes", spy)
    packed = do_import(tmp_path / "a", 30, name="mine", pack=True)
    loose = do_import(tmp_path / "b", 30, name="mine", pack=False)
    assert seen == [7, 7, 7, 7, 2]  # each batch packed before the next is recorded
    assert loose_files(packed.cassettes) == []
    assert len(list((packed.cassettes / "packs").glob("*.pack"))) == 5
    assert len(loose_files(loose.cassettes)) == 30 and not (loose.cassettes / "packs").exists()
    # the same bytes, so the same manifest hashes and the same outcome-table key
    assert (
        json.loads((packed.cassettes / MANIFEST).read_text())["cassette_sha256"]
        == json.loads((loose.cassettes / MANIFEST).read_text())["cassette_sha256"]
    )
    for name in loose_files(loose.cassettes):
        assert packs.read_cassette(packed.cassettes / name) == (loose.cassettes / name).read_bytes()
        assert verify_cassette(packed.cassettes / name)
    policy, items = load_policy(packed.policy), load_evalset(packed.evalset)
    kw: dict[str, Any] = {"scorers": ["exact"], "progress": False, "workers": 1}
    a = build_outcomes(items, policy, packed.cassettes, cache_dir=tmp_path / "ca", **kw)
    b = build_outcomes(items, policy, loose.cassettes, cache_dir=tmp_path / "cb", **kw)
    assert a.key == b.key and a.cassettes_sha256 == b.cassettes_sha256
    assert len(a.calls) > 30 * 3
    for x, y in zip(table(a), table(b), strict=True):
        pd.testing.assert_frame_equal(x, y, check_exact=True)
    # and on two processes, each reading the shards itself
    c = build_outcomes(items, policy, packed.cassettes, cache_dir=tmp_path / "cc", **{**kw, "workers": 2})
    for x, y in zip(table(c), table(b), strict=True):
        pd.testing.assert_frame_equal(x, y, check_exact=True)


def test_the_router_replays_packed_cassettes_as_loose_ones(tmp_path: Path) -> None:
    r = do_import(tmp_path, 12, name="mine", pack=False)
    policy, items = load_policy(r.policy), load_evalset(r.evalset)
    before = [(it.id, res.model, res.cost_usd, res.text) for it, res in replay_items(policy, r.cassettes, items)]
    rep = packs.pack_cassettes(r.cassettes, shard_bytes=2_000)  # several shards
    assert rep.packed == 12 and rep.loose == 0 and rep.total_packed == 12 and len(rep.shards) > 2
    after = [(it.id, res.model, res.cost_usd, res.text) for it, res in replay_items(policy, r.cassettes, items)]
    assert after == before
    # vcrpy's own playback (the reference for the fast replay) reads a packed cassette too
    it = items[0]
    specs = [n.spec for n in needed_requests(policy, it, ks=(2,), keys=replay_keys(policy))]
    got = vcr_playback(r.cassettes / cassette_name(it.id), specs)
    assert [g.status for g in got] == [200] * len(specs)
    for p in (r.cassettes / "packs").iterdir():  # readable by other users
        assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044, p


def test_resuming_a_recording_into_a_packed_folder_sends_nothing(tmp_path: Path) -> None:
    import httpx

    r = do_import(tmp_path, 9, name="mine", pack=True)
    policy, items = load_policy(r.policy), load_evalset(r.evalset)
    manifest = json.loads((r.cassettes / MANIFEST).read_text())
    sent: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(500)

    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        rep = record(items, policy, r.cassettes, client=client, ks=manifest["ks"], api_keys={"EXAMPLE_KEY": "x"},
                     progress=False, k_max=manifest.get("k_max"), measure_latency=False,
                     sample_limits={int(k): v for k, v in manifest["sample_limits"].items()})  # fmt: skip
    assert sent == [] and rep.requests_recorded == 0 and rep.requests_replayed > 9
    assert json.loads((r.cassettes / MANIFEST).read_text())["cassette_sha256"] == manifest["cassette_sha256"]


def test_a_loose_file_wins_over_its_packed_copy_and_packing_again_supersedes_it(tmp_path: Path) -> None:
    r = do_import(tmp_path, 6, name="mine", pack=True)
    name = cassette_name("item-2")
    old = packs.read_cassette(r.cassettes / name)
    edited = old.replace(b'"Answer: ', b'"Answer:  ', 1)
    assert edited != old
    (r.cassettes / name).write_bytes(edited)
    assert packs.read_cassette(r.cassettes / name) == edited
    with pytest.raises(DataError, match=rf"{name}: cassette changed since it was recorded"):
        verify_cassette(r.cassettes / name)  # the manifest still holds the recorded bytes' sha256
    rep = packs.pack_cassettes(r.cassettes)
    assert rep.packed == 1 and rep.loose == 0 and rep.total_packed == 6
    assert packs.read_cassette(r.cassettes / name) == edited  # the newest shard's copy
    assert packs.unpack_cassettes(r.cassettes) == 6
    assert not (r.cassettes / "packs").exists() and (r.cassettes / name).read_bytes() == edited
    assert packs.cassette_names(r.cassettes) == sorted(cassette_name(f"item-{i}") for i in range(6))


def test_an_interrupted_pack_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = do_import(tmp_path, 5, name="mine", pack=False)
    before = {n: (r.cassettes / n).read_bytes() for n in loose_files(r.cassettes)}
    real = packs.atomic_write_text

    def die(path: Any, text: str) -> None:
        raise KeyboardInterrupt  # killed after the shard was written, before its index

    monkeypatch.setattr(packs, "atomic_write_text", die)
    with pytest.raises(KeyboardInterrupt):
        packs.pack_cassettes(r.cassettes)
    monkeypatch.setattr(packs, "atomic_write_text", real)
    assert list((r.cassettes / "packs").glob("*.pack")) and not list((r.cassettes / "packs").glob("*.index.json"))
    assert {n: packs.read_cassette(r.cassettes / n) for n in before} == before  # the shard without index is ignored
    rep = packs.pack_cassettes(r.cassettes)  # and the next pack takes the next shard number
    assert rep.packed == 5 and rep.shards[0].name == "000001.pack"
    assert {n: packs.read_cassette(r.cassettes / n) for n in before} == before


def test_name_hash_collisions_are_told_apart_by_the_shard_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = do_import(tmp_path, 8, name="mine", pack=False)
    before = {n: (r.cassettes / n).read_bytes() for n in loose_files(r.cassettes)}
    monkeypatch.setattr(packs, "_name_hash", lambda name: 42)  # every name collides
    packs.pack_cassettes(r.cassettes, shard_bytes=3_000)
    assert {n: packs.read_cassette(r.cassettes / n) for n in before} == before
    assert not packs.cassette_exists(r.cassettes / "item-99.json")
    with pytest.raises(FileNotFoundError, match="item-99.json"):
        packs.read_cassette(r.cassettes / "item-99.json")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_text("{not json", encoding="utf-8"), r"000000\.index\.json:1: "),
        (lambda p: p.write_text('{"format": "other"}', encoding="utf-8"), r"000000\.index\.json: not a routerlab pack"),
        (
            lambda p: p.write_text(json.dumps({"format": packs.FORMAT, "shard": "../x.pack", "entries": []})),
            r"000000\.index\.json: 'shard' must name a \.pack file",
        ),
        (
            lambda p: p.write_text(json.dumps({"format": packs.FORMAT, "shard": "000000.pack", "entries": [[1, 2]]})),
            r"000000\.index\.json: entry 0 is not \[name, offset, length\]",
        ),
        (lambda p: p.with_name("000000.pack").write_bytes(b"x" * 10), r"000000\.pack: the index points at byte"),
        (
            lambda p: p.with_name("000000.pack").write_bytes(p.with_name("000000.pack").read_bytes()[:-300]),
            r"000000\.pack: cassette item-\d\.json is cut short",
        ),
        (
            lambda p: p.with_name("000000.pack").write_bytes(p.with_name("000000.pack").read_bytes()[::-1]),
            r"000000\.pack: the index points at byte",
        ),
        (  # a name with a folder part would write outside the folder on unpack
            lambda p: p.write_text(
                json.dumps({"format": packs.FORMAT, "shard": "000000.pack", "entries": [["../item-0.json", 0, 9]]})
            ),
            r"000000\.index\.json: entry 0: '\.\./item-0\.json' is not an item cassette's file name",
        ),
        (  # an absurd length is refused by the header before anything that long is read
            lambda p: p.write_text(
                json.dumps(
                    {
                        "format": packs.FORMAT,
                        "shard": "000000.pack",
                        "entries": [
                            [n, o, 10**15 if n == "item-0.json" else ln]
                            for n, o, ln in json.loads(p.read_text())["entries"]
                        ],
                    }  # fmt: skip
                )
            ),
            r"000000\.pack: the index points at byte \d+, where no cassette starts",
        ),
    ],
)
def test_a_damaged_pack_is_refused_by_file_name(tmp_path: Path, damage: Any, message: str) -> None:
    r = do_import(tmp_path, 4, name="mine", pack=True)
    policy, items = load_policy(r.policy), load_evalset(r.evalset)
    damage(r.cassettes / "packs" / "000000.index.json")
    packs._CACHE.clear()  # as a new process finds it (packs are written once: a process re-reads them on a rename)
    with pytest.raises(DataError, match=message):
        build_outcomes(items, policy, r.cassettes, scorers=["exact"], progress=False, cache_dir=tmp_path / "c")


def test_a_changed_packed_cassette_fails_its_manifest_check(tmp_path: Path) -> None:
    r = do_import(tmp_path, 4, name="mine", pack=True)
    shard = r.cassettes / "packs" / "000000.pack"
    data = bytearray(shard.read_bytes())
    at = data.index(b"Answer: ") + len(b"Answer: ")
    data[at : at + 1] = b"7" if data[at : at + 1] != b"7" else b"8"
    shard.write_bytes(bytes(data))
    policy, items = load_policy(r.policy), load_evalset(r.evalset)
    with pytest.raises(DataError, match=r"item-0\.json: cassette changed since it was recorded"):
        build_outcomes(items, policy, r.cassettes, scorers=["exact"], progress=False, cache_dir=tmp_path / "c")


def test_a_packed_mot_date_study_builds_the_same_table(imported: Any, tmp_path: Path) -> None:
    """The real dataset: adaptive k's draws, two sample temperatures, greedy and sampled requests."""
    ds = imported("mot_date")
    folder = tmp_path / "mot"
    shutil.copytree(ds.cassettes, folder)
    rep = packs.pack_cassettes(folder, shard_bytes=4 * 1024 * 1024)
    assert rep.loose == 0 and rep.total_packed == len(ds.items)
    o = build_outcomes(ds.items, ds.policy, folder, scorers=list(ds.outcomes.scorers), progress=False,
                       cache_dir=tmp_path / "cache")  # fmt: skip
    assert o.key == ds.outcomes.key
    for x, y in zip(table(o), table(ds.outcomes), strict=True):
        pd.testing.assert_frame_equal(x, y, check_exact=True)
    assert sorted(o.variants) == sorted(ds.outcomes.variants)


def test_cli_pack_and_unpack_a_study(tmp_path: Path, capsys: Any) -> None:
    r = do_import(tmp_path, 5, name="mine", pack=False)
    assert main(["data", "pack", "mine", "--root", str(tmp_path / "ws")]) == 0
    out = capsys.readouterr().out
    assert "5 cassette(s) packed into 1 new shard(s); the packs hold 5, 0 loose cassette file(s) remain" in out
    assert loose_files(r.cassettes) == []
    assert main(["data", "pack", str(r.cassettes), "--unpack"]) == 0
    assert "5 cassette(s) written back as files" in capsys.readouterr().out
    assert len(loose_files(r.cassettes)) == 5
    assert main(["data", "pack", str(tmp_path / "nowhere")]) == 1
    assert "neither a cassette folder" in capsys.readouterr().err


def test_cli_import_packs_on_request(tmp_path: Path, capsys: Any) -> None:
    outputs, ladder = write_study_inputs(tmp_path, 6)
    root = tmp_path / "ws"
    assert main(["data", "import", str(outputs), "--ladder", str(ladder), "--study", "mine", "--root", str(root),
                 "--pack", "--quiet"]) == 0  # fmt: skip
    folder = root / "cassettes" / "mine"
    assert loose_files(folder) == [] and len(packs.packed_names(folder)) == 6
    assert main(["replay", "mine", "--root", str(root)]) == 0


def _loose(folder: Path, names: list[str]) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for n in names:
        out[n] = json.dumps({"interactions": [], "name": n}).encode()
        (folder / n).write_bytes(out[n])
    return out


def test_shard_numbers_go_past_six_digits(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    want = _loose(folder, ["a.json", "b.json"])
    (folder / "packs").mkdir()
    (folder / "packs" / "999999.pack").write_bytes(b"")  # an interrupted pack's shard, without its index
    rep = packs.pack_cassettes(folder, names=["a.json"])
    assert rep.shards[0].name == "1000000.pack" and rep.total_packed == 1
    rep = packs.pack_cassettes(folder)
    assert rep.shards[0].name == "1000001.pack" and rep.total_packed == 2 and rep.loose == 0
    assert {n: packs.read_cassette(folder / n) for n in want} == want
    assert packs.packed_names(folder) == ["a.json", "b.json"]


def test_two_packers_that_pick_the_same_number_write_different_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each packer claims its shard number by creating the shard exclusively, so a second packer that
    read the same next number (another process, at the same moment) takes the one after."""
    folder = tmp_path / "c"
    want = _loose(folder, ["a.json", "b.json", "c.json", "d.json"])
    monkeypatch.setattr(packs, "_next_number", lambda _packs: 0)  # both see an empty packs folder
    first = packs.pack_cassettes(folder, names=["a.json", "b.json"])
    second = packs.pack_cassettes(folder, names=["c.json", "d.json"])
    assert [x.name for x in first.shards + second.shards] == ["000000.pack", "000001.pack"]
    assert packs.loose_names(folder) == []
    assert {n: packs.read_cassette(folder / n) for n in want} == want


@pytest.mark.parametrize("name", ["sub/x.json", "manifest.json", "judge.json", "../x.json", "x.txt"])
def test_pack_refuses_names_that_are_not_item_cassettes(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "c"
    _loose(folder, ["a.json", "manifest.json"])
    (folder / "sub").mkdir()
    (folder / "sub" / "x.json").write_text("{}")
    with pytest.raises(DataError, match="is not an item cassette's file name"):
        packs.pack_cassettes(folder, names=["a.json", name])
    assert (folder / "a.json").is_file() and (folder / "manifest.json").is_file() and (folder / "sub/x.json").is_file()
    assert not (folder / "packs").exists()


def test_a_cassette_packed_by_another_process_within_one_timestamp_tick_is_found(tmp_path: Path) -> None:
    """The index cache is keyed by the packs folder's mtime and inode; where the timestamp is too coarse
    to change, a lookup that misses compares the index files themselves before saying "not found"."""
    folder = tmp_path / "c"
    want = _loose(folder, ["a.json", "b.json"])
    packs.pack_cassettes(folder, names=["a.json"])
    assert packs.read_cassette(folder / "a.json") == want["a.json"]  # the cache now holds the first index
    key = str((folder / "packs").absolute())
    stale = dataclasses.replace(packs._CACHE[key])  # a copy: this process's own packing updates its entry
    mtime = (folder / "packs").stat().st_mtime_ns
    packs.pack_cassettes(folder, names=["b.json"])  # as another process would: then put the old view back
    os.utime(folder / "packs", ns=(mtime, mtime))
    packs._CACHE[key] = stale
    assert packs._load_index(folder).find("b.json") == []  # the stale view, as that process would see it
    assert not (folder / "b.json").exists()
    assert packs.read_cassette(folder / "b.json") == want["b.json"]
    assert packs.cassette_exists(folder / "b.json")


def test_a_cassette_rewritten_during_the_pack_stays_even_with_the_same_size_and_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "c"
    want = _loose(folder, ["a.json", "b.json"])
    newer = want["a.json"].replace(b'"a.json"', b'"A.json"')
    assert len(newer) == len(want["a.json"])
    real = packs.atomic_write_text

    def rerecord_then_index(path: Any, text: str) -> None:
        st = (folder / "a.json").stat()
        tmp = folder / "a.json.tmp"  # an atomic re-record: a new inode, the same size, the same mtime
        tmp.write_bytes(newer)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, folder / "a.json")
        real(path, text)

    monkeypatch.setattr(packs, "atomic_write_text", rerecord_then_index)
    packs.pack_cassettes(folder)
    assert (folder / "a.json").read_bytes() == newer and not (folder / "b.json").exists()
    assert packs.read_cassette(folder / "a.json") == newer and packs.read_cassette(folder / "b.json") == want["b.json"]


def test_unpack_and_remove_take_away_a_symlinked_packs_folder(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    want = _loose(folder, ["a.json", "b.json"])
    packs.pack_cassettes(folder)
    elsewhere = tmp_path / "elsewhere"
    (folder / "packs").rename(elsewhere)
    (folder / "packs").symlink_to(elsewhere, target_is_directory=True)
    assert packs.unpack_cassettes(folder) == 2
    assert not (folder / "packs").exists() and not (folder / "packs").is_symlink()
    assert {n: (folder / n).read_bytes() for n in want} == want
    (folder / "packs").symlink_to(elsewhere, target_is_directory=True)
    packs.remove_packs(folder)
    assert not (folder / "packs").is_symlink()
