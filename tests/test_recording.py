"""Recording: concurrency, resume, retries, record modes, force swap, integrity, pre-flight checks, exit codes.

Real HTTP goes to servers these tests start on 127.0.0.1 (an OpenAI-compatible ``/chat/completions``
that answers deterministically from the request body, with fixed ``Date``/``Server`` headers so two
recordings of the same traffic are comparable byte for byte); scripted failures go through
``httpx.MockTransport``. No test sleeps for real: waits go through an injected ``sleep``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from routerlab.cli import main
from routerlab.data.cassettes import (
    LATENCY_HEADER,
    MANIFEST,
    RecordReport,
    cassette_name,
    load_cassette_index,
    make_vcr,
    needed_requests,
    read_manifest,
    record,
    replay_items,
    seal_cassettes,
    vcr_playback,
)
from routerlab.data.evalset import EvalItem, dump_evalset, evalset_sha256
from routerlab.errors import ConfigError, DataError, MissingApiKeyError, PricingError
from routerlab.fakes import openai_completion
from routerlab.policy import RouterPolicy, dump_policy, policy_from_dict

MINI, GPT4O = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-05-13"
KEYS = {"LOOP_API_KEY": "sk-loop-secret-777"}


# ---------------------------------------------------------------- a loopback provider


@dataclass
class Loopback:
    """State of one loopback server: what it answers and what it saw."""

    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    gzip: bool = False
    seen: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


def answer_texts(body: dict[str, Any]) -> list[str]:
    h = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
    return [f"answer {h} #{i}" for i in range(int(body.get("n", 1)))]


def _handler(state: Loopback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body in separate writes: no 40 ms delayed-ACK stall

        def version_string(self) -> str:
            return "loopback"

        def date_time_string(self, timestamp: float | None = None) -> str:
            return "Thu, 01 Jan 2026 00:00:00 GMT"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.loads(raw)
            with state.lock:
                state.seen.append({"path": self.path, "body": body, "auth": self.headers.get("authorization")})
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                if state.delay_s:
                    threading.Event().wait(state.delay_s)
                if state.status == 200:
                    payload = openai_completion(body["model"], answer_texts(body), 12, 5)
                else:
                    payload = {"error": {"message": "the loopback is failing on purpose", "type": "server_error"}}
                data = json.dumps(payload).encode()
                if state.gzip:
                    data = gzip.compress(data, mtime=0)
                self.send_response(state.status)
                self.send_header("content-type", "application/json")
                if state.gzip:
                    self.send_header("content-encoding", "gzip")
                if state.retry_after is not None:
                    self.send_header("retry-after", state.retry_after)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                with state.lock:
                    state.in_flight -= 1

    return Handler


@pytest.fixture
def loopback() -> Iterator[Callable[..., Loopback]]:
    servers: list[ThreadingHTTPServer] = []

    def start(**kw: Any) -> Loopback:
        state = Loopback(**kw)
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        state.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        return state

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def loop_policy(base_url: str, premium_url: str | None = None, **over: Any) -> RouterPolicy:
    d: dict[str, Any] = {
        "schema_version": 1,
        "name": "loopback",
        "tiers": [
            {"name": "cheap", "provider": "openai", "model": MINI, "base_url": base_url, "api_key_env": "LOOP_API_KEY"},
            {
                "name": "premium",
                "provider": "openai",
                "model": GPT4O,
                "base_url": premium_url or base_url,
                "api_key_env": "LOOP_API_KEY",
            },
        ],
        "confidence": {"k": 2, "temperature": 0.7},
    }
    d.update(over)
    return policy_from_dict(d)


def items_(n: int) -> list[EvalItem]:
    return [EvalItem.from_prompt(f"item-{i:03d}", f"Tell me fact number {i} about otters") for i in range(n)]


def per_item(policy: RouterPolicy) -> int:
    return sum(n.count for n in needed_requests(policy, items_(1)[0]))


def without_latency(text: str) -> str:
    return re.sub(rf'("{LATENCY_HEADER}": \[\s*)"[0-9.]+"', r'\1"X"', text)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def mock(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def ok_handler(seen: list[httpx.Request] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        body = json.loads(request.content)
        return httpx.Response(200, json=openai_completion(body["model"], answer_texts(body), 12, 5))

    return handle


# ---------------------------------------------------------------- concurrency


def test_concurrent_recording_writes_the_same_cassettes_as_sequential(
    loopback: Callable[..., Loopback], tmp_path: Path
) -> None:
    cheap, premium = loopback(delay_s=0.01), loopback(delay_s=0.01)  # two hosts (ports), one slot pool each
    policy = loop_policy(cheap.url, premium.url)
    items = items_(16)
    seq = record(items, policy, tmp_path / "seq", api_keys=KEYS, concurrency=1, progress=False, evalset_sha256="e")
    n_seq = len(cheap.seen) + len(premium.seen)
    cheap.seen.clear()
    premium.seen.clear()
    cheap.max_in_flight = premium.max_in_flight = 0
    conc = record(items, policy, tmp_path / "conc", api_keys=KEYS, concurrency=3, progress=False, evalset_sha256="e")
    assert n_seq == len(cheap.seen) + len(premium.seen) == 16 * per_item(policy) == conc.requests_recorded
    assert (seq.errors, conc.errors, conc.concurrency) == (0, 0, 3)
    assert seq.spend_usd == conc.spend_usd > 0
    # bounded per host, and really concurrent (16 items over 6 workers, 10 ms per answer)
    assert 1 < cheap.max_in_flight <= 3 and 1 <= premium.max_in_flight <= 3

    a, b = folder_bytes(tmp_path / "seq"), folder_bytes(tmp_path / "conc")
    assert a.keys() == b.keys() == {MANIFEST, *(cassette_name(i.id) for i in items)}
    for name in a:
        if name != MANIFEST:
            assert without_latency(a[name].decode()) == without_latency(b[name].decode()), name
    ma, mb = read_manifest(tmp_path / "seq"), read_manifest(tmp_path / "conc")
    assert ma.pop("cassette_sha256").keys() == mb.pop("cassette_sha256").keys()
    assert ma == mb
    for name in a:  # no secret reached a file
        assert KEYS["LOOP_API_KEY"] not in a[name].decode() and KEYS["LOOP_API_KEY"] not in b[name].decode()
    # and the concurrent recording replays through the router
    assert len(list(replay_items(policy, tmp_path / "conc", items))) == 16


def test_recorded_cassette_equals_what_vcrpy_writes(loopback: Callable[..., Loopback], tmp_path: Path) -> None:
    """Byte for byte, with a gzip-encoded answer (vcrpy stores it decoded): the same file vcrpy writes."""
    server = loopback(gzip=True)
    policy = loop_policy(server.url)
    [item] = items_(1)
    ours = tmp_path / "ours"
    record([item], policy, ours, api_keys=KEYS, progress=False, measure_latency=False)
    theirs = tmp_path / "theirs" / cassette_name(item.id)
    theirs.parent.mkdir()
    specs = [n.spec for n in needed_requests(policy, item, keys=KEYS) for _ in range(n.count)]
    with make_vcr(secrets=tuple(KEYS.values())).use_cassette(str(theirs)), httpx.Client() as client:
        for s in specs:
            client.send(client.build_request(s.method, s.url, headers=s.headers, content=s.content()))
    assert (ours / cassette_name(item.id)).read_bytes() == theirs.read_bytes()
    assert "content-encoding" not in theirs.read_text()
    assert len(vcr_playback(ours / cassette_name(item.id), specs)) == len(specs)


def test_concurrent_resume_sends_only_what_is_missing(loopback: Callable[..., Loopback], tmp_path: Path) -> None:
    server = loopback()
    policy = loop_policy(server.url)
    items = items_(6)
    record(items, policy, tmp_path, api_keys=KEYS, progress=False)
    full = folder_bytes(tmp_path)
    (tmp_path / cassette_name(items[1].id)).unlink()
    trimmed = json.loads((tmp_path / cassette_name(items[4].id)).read_text())
    trimmed["interactions"].pop()
    (tmp_path / cassette_name(items[4].id)).write_text(json.dumps(trimmed))
    seal_cassettes(tmp_path)  # an interrupted run seals what it wrote before it stops
    server.seen.clear()
    again = record(items, policy, tmp_path, api_keys=KEYS, progress=False)
    assert len(server.seen) == per_item(policy) + 1 == again.requests_recorded
    assert again.items_skipped == 4 and again.requests_replayed == 6 * per_item(policy) - len(server.seen)
    for name, data in folder_bytes(tmp_path).items():
        if name == cassette_name(items[0].id):
            assert data == full[name]  # untouched files are not rewritten
        elif name != MANIFEST:
            assert without_latency(data.decode()) == without_latency(full[name].decode()), name
    server.seen.clear()
    idle = record(items, policy, tmp_path, api_keys=KEYS, progress=False)
    assert server.seen == [] and idle.requests_recorded == 0 and idle.items_skipped == 6


# ---------------------------------------------------------------- retries


def scripted(*answers: Any) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    """A handler giving ``answers`` in order (status int, (status, headers), an exception, or 'ok'), then 'ok'."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        a = queue.pop(0) if queue else "ok"
        if isinstance(a, Exception):
            raise a
        if a == "ok":
            body = json.loads(request.content)
            return httpx.Response(200, json=openai_completion(body["model"], answer_texts(body), 12, 5))
        status, headers = a if isinstance(a, tuple) else (a, {})
        return httpx.Response(status, headers=headers, json={"error": {"message": "busy", "type": "x"}})

    return handle, seen


def one_tier_policy() -> RouterPolicy:
    d = loop_policy("https://api.example.test/v1").tiers[1]
    return policy_from_dict(
        {
            "schema_version": 1,
            "name": "one",
            "tiers": [
                {
                    "name": "only",
                    "provider": "openai",
                    "model": d.model,
                    "base_url": d.base_url,
                    "api_key_env": "LOOP_API_KEY",
                }
            ],
        }
    )


def test_retry_after_is_honoured_and_only_the_final_answer_recorded(tmp_path: Path) -> None:
    handler, seen = scripted((429, {"retry-after": "7"}), (503, {"retry-after-ms": "1500"}), (529, {}))
    waits: list[float] = []
    ticks = iter(range(0, 10_000, 1))
    report = record(
        items_(1),
        one_tier_policy(),
        tmp_path,
        client=mock(handler),
        api_keys=KEYS,
        progress=False,
        max_retries=3,
        sleep=waits.append,
        clock=lambda: next(ticks) * 0.25,
    )
    assert len(seen) == 4 and waits == [7.0, 1.5, 4.0]  # retry-after, retry-after-ms, then the backoff 1*2**2
    assert (report.retries, report.errors, report.requests_recorded) == (3, 0, 1)
    [it] = json.loads((tmp_path / "item-000.json").read_text())["interactions"]
    assert it["response"]["status"]["code"] == 200
    assert it["response"]["headers"][LATENCY_HEADER] == ["250.0"]  # the injected clock timed the last try


def test_final_failure_after_retries_is_recorded(tmp_path: Path) -> None:
    handler, seen = scripted(500, 500, 500, 500, 500)
    waits: list[float] = []
    report = record(
        items_(1),
        one_tier_policy(),
        tmp_path,
        client=mock(handler),
        api_keys=KEYS,
        progress=False,
        max_retries=3,
        sleep=waits.append,
    )
    assert len(seen) == 4 and waits == [1.0, 2.0, 4.0]
    assert report.errors == 1 and report.errors_by_kind == {"server": 1} and report.failed_items == ["item-000"]
    [it] = json.loads((tmp_path / "item-000.json").read_text())["interactions"]
    assert it["response"]["status"]["code"] == 500
    # a fatal error is not retried
    handler, seen = scripted(400)
    report = record(
        items_(1), one_tier_policy(), tmp_path / "b", client=mock(handler), api_keys=KEYS, progress=False,
        max_retries=3, sleep=waits.append,
    )  # fmt: skip
    assert len(seen) == 1 and report.errors_by_kind == {"invalid_request": 1}


def test_timeouts_are_retried_and_a_final_one_records_nothing(tmp_path: Path) -> None:
    timeout = httpx.ReadTimeout("slow")
    handler, seen = scripted(timeout, httpx.ConnectError("down"))
    waits: list[float] = []
    kw: dict[str, Any] = {"api_keys": KEYS, "progress": False, "max_retries": 2, "sleep": waits.append}
    report = record(items_(1), one_tier_policy(), tmp_path, client=mock(handler), **kw)
    assert len(seen) == 3 and waits == [1.0, 2.0] and report.errors == 0 and report.retries == 2
    handler, seen = scripted(timeout, timeout, timeout)
    report = record(items_(1), one_tier_policy(), tmp_path / "b", client=mock(handler), **kw)
    assert len(seen) == 3 and report.errors_by_kind == {"ReadTimeout": 1} and report.requests_recorded == 0
    assert not (tmp_path / "b" / "item-000.json").exists()


def test_scripted_transports_are_sent_in_order_without_retries(tmp_path: Path) -> None:
    # an in-process MockTransport is a script (tests, the importers): defaults are 1 in flight, no retries
    handler, seen = scripted(429)
    report = record(items_(3), one_tier_policy(), tmp_path, client=mock(handler), api_keys=KEYS, progress=False)
    assert (report.concurrency, report.retries, report.errors, len(seen)) == (1, 0, 1, 3)
    assert [json.loads(r.content)["messages"][0]["content"] for r in seen] == [i.prompt for i in items_(3)]


# ---------------------------------------------------------------- modes and force


def test_force_swap_interrupted_leaves_the_old_recording(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    policy = loop_policy("https://api.example.test/v1")
    items = items_(4)
    record(items, policy, out, client=mock(ok_handler()), api_keys=KEYS, progress=False)
    (out / "NOTES.md").write_text("kept across a forced re-recording\n")
    before = folder_bytes(out)
    calls: list[httpx.Request] = []

    def interrupted(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == per_item(policy) + 2:
            raise KeyboardInterrupt
        return ok_handler()(request)

    with pytest.raises(KeyboardInterrupt):
        record(items, policy, out, client=mock(interrupted), api_keys=KEYS, progress=False, force=True)
    assert folder_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]  # no temporary folder left behind

    seen: list[httpx.Request] = []

    def reworded(request: httpx.Request) -> httpx.Response:
        # a different answer, so the check below does not hinge on the recorded latency differing
        seen.append(request)
        body = json.loads(request.content)
        return httpx.Response(200, json=openai_completion(body["model"], ["re-recorded"] * body.get("n", 1), 12, 5))

    forced = record(items, policy, out, client=mock(reworded), api_keys=KEYS, progress=False, mode="all")
    assert len(seen) == 4 * per_item(policy) == forced.requests_recorded and forced.requests_replayed == 0
    after = folder_bytes(out)
    assert after.keys() == before.keys() and after["NOTES.md"] == before["NOTES.md"]
    assert all(after[k] != before[k] and b"re-recorded" in after[k] for k in after if k.startswith("item-"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]


def test_mode_once_and_none(tmp_path: Path) -> None:
    policy = loop_policy("https://api.example.test/v1")
    items = items_(3)
    seen: list[httpx.Request] = []
    first = record(
        items[:2], policy, tmp_path, client=mock(ok_handler(seen)), api_keys=KEYS, progress=False, mode="once"
    )
    assert first.requests_recorded == 2 * per_item(policy)
    before = folder_bytes(tmp_path)
    with pytest.raises(DataError, match="'once'"):
        record(items, policy, tmp_path, client=mock(ok_handler(seen)), api_keys=KEYS, progress=False, mode="once")
    seen.clear()
    (tmp_path / cassette_name(items[0].id)).write_text(
        json.dumps({"version": 1, "interactions": json.loads(before[cassette_name(items[0].id)])["interactions"][:-1]})
    )
    report = record(items, policy, tmp_path, client=mock(ok_handler(seen)), progress=False, mode="none")  # no keys
    assert seen == [] and report.requests_recorded == 0
    assert report.requests_missing == 1 + per_item(policy) and report.items_missing == [items[0].id, items[2].id]
    assert not (tmp_path / cassette_name(items[2].id)).exists()
    with pytest.raises(ConfigError, match="unknown record mode"):
        record(items, policy, tmp_path, api_keys=KEYS, progress=False, mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="force"):
        record(items, policy, tmp_path, api_keys=KEYS, progress=False, mode="once", force=True)
    with pytest.raises(ConfigError, match="concurrency"):
        record(items, policy, tmp_path, api_keys=KEYS, progress=False, concurrency=0)
    assert seen == []


def test_a_folder_recorded_for_another_eval_set_is_refused(tmp_path: Path) -> None:
    policy = loop_policy("https://api.example.test/v1")
    items = items_(2)
    record(items, policy, tmp_path, client=mock(ok_handler()), api_keys=KEYS, progress=False, evalset_sha256="a" * 64)
    seen: list[httpx.Request] = []
    before = folder_bytes(tmp_path)
    with pytest.raises(DataError, match="another eval set") as exc:
        record(items, policy, tmp_path, client=mock(ok_handler(seen)), api_keys=KEYS, progress=False,
               evalset_sha256="b" * 64)  # fmt: skip
    assert str(tmp_path) in str(exc.value) and seen == [] and folder_bytes(tmp_path) == before
    record(items, policy, tmp_path, client=mock(ok_handler(seen)), api_keys=KEYS, progress=False,
           evalset_sha256="a" * 64)  # fmt: skip  # the same eval set resumes (nothing missing)
    assert seen == []
    record(items, policy, tmp_path, client=mock(ok_handler(seen)), api_keys=KEYS, progress=False,
           evalset_sha256="b" * 64, force=True)  # fmt: skip
    assert len(seen) == 2 * per_item(policy) and read_manifest(tmp_path)["evalset_sha256"] == "b" * 64


# ---------------------------------------------------------------- pre-flight checks


def test_preflight_missing_key_or_price_sends_nothing(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    policy = loop_policy("https://api.example.test/v1")
    with pytest.raises(MissingApiKeyError, match="LOOP_API_KEY"):
        record(items_(2), policy, tmp_path / "a", client=mock(ok_handler(seen)), environ={}, progress=False)
    d = json.loads(json.dumps({"schema_version": 1, "name": "p", "confidence": {"k": 2}}))
    d["tiers"] = [
        {
            "name": "cheap",
            "provider": "openai",
            "model": MINI,
            "base_url": "https://x.test/v1",
            "api_key_env": "LOOP_API_KEY",
        },
        {"name": "mystery", "provider": "openai", "model": "no-such-model-2031", "base_url": "https://x.test/v1"},
    ]
    with pytest.raises(PricingError, match="mystery"):
        record(items_(2), policy_from_dict(d), tmp_path / "b", client=mock(ok_handler(seen)), api_keys=KEYS,
               progress=False)  # fmt: skip
    assert seen == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------- integrity


def test_a_changed_cassette_byte_fails_replay_naming_the_file(tmp_path: Path) -> None:
    policy = loop_policy("https://api.example.test/v1")
    items = items_(3)
    record(items, policy, tmp_path, client=mock(ok_handler()), api_keys=KEYS, progress=False)
    hashes = read_manifest(tmp_path)["cassette_sha256"]
    assert hashes.keys() == {cassette_name(i.id) for i in items}
    victim = tmp_path / cassette_name(items[1].id)
    text = victim.read_text()
    i = text.index("answer ") + len("answer ")
    victim.write_text(text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1 :])  # one byte, still valid JSON

    with pytest.raises(DataError, match=re.escape(str(victim))):
        list(replay_items(policy, tmp_path, items))
    with pytest.raises(DataError, match="changed since it was recorded"):
        load_cassette_index(victim)
    with pytest.raises(DataError, match=re.escape(victim.name)):
        vcr_playback(victim, [])
    load_cassette_index(tmp_path / cassette_name(items[0].id))  # the others still load
    seal_cassettes(tmp_path)  # a deliberate edit, re-sealed
    assert len(list(replay_items(policy, tmp_path, items))) == 3
    # a cassette the manifest does not list is not checked
    manifest = read_manifest(tmp_path)
    del manifest["cassette_sha256"]
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    victim.write_text(victim.read_text().replace("answer", "ANSWER", 1))
    assert len(list(replay_items(policy, tmp_path, items))) == 3


# ---------------------------------------------------------------- the command line


def cli_files(tmp_path: Path, base_url: str, n: int = 2) -> list[str]:
    evalset, pol = tmp_path / "evalset.jsonl", tmp_path / "policy.json"
    dump_evalset(items_(n), evalset)
    dump_policy(loop_policy(base_url), pol)
    return ["record", "--evalset", str(evalset), "--policy", str(pol), "--quiet"]


def test_cli_record_exits_non_zero_when_every_request_fails(
    loopback: Callable[..., Loopback],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LOOP_API_KEY", KEYS["LOOP_API_KEY"])
    server = loopback(status=503, retry_after="0")  # retry-after 0: the three retries do not wait
    args = cli_files(tmp_path, server.url)
    policy = loop_policy(server.url)
    assert main([*args, "--out", str(tmp_path / "bad"), "--max-retries", "3"]) == 2
    err = capsys.readouterr().err
    assert "failed after retries" in err and "item-000" in err
    assert len(server.seen) == 2 * per_item(policy) * 4
    assert all(s["auth"] == f"Bearer {KEYS['LOOP_API_KEY']}" for s in server.seen)
    for it in json.loads((tmp_path / "bad" / "item-000.json").read_text())["interactions"]:
        assert it["response"]["status"]["code"] == 503  # the final failure is recorded

    server.status = 200
    assert main([*args, "--out", str(tmp_path / "good")]) == 0
    assert main([*args, "--out", str(tmp_path / "good"), "--mode", "none"]) == 0
    (tmp_path / "good" / "item-001.json").unlink()
    assert main([*args, "--out", str(tmp_path / "good"), "--mode", "none"]) == 2
    assert "item-001" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "good"), "--mode", "once"]) == 1
    assert main([*args, "--out", str(tmp_path / "good"), "--mode", "once", "--force"]) == 1
    assert "'once'" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "good"), "--concurrency", "0"]) == 1
    assert "concurrency" in capsys.readouterr().err
    # a folder recorded for another eval set: refused (exit 1, nothing sent)
    sent = len(server.seen)
    other = cli_files(tmp_path / "other", server.url, n=3)
    assert main([*other, "--out", str(tmp_path / "good")]) == 1
    assert "another eval set" in capsys.readouterr().err and len(server.seen) == sent
    assert read_manifest(tmp_path / "good")["evalset_sha256"] == evalset_sha256(tmp_path / "evalset.jsonl")


def test_cli_preflight_missing_key_exits_1_and_sends_nothing(
    loopback: Callable[..., Loopback],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("LOOP_API_KEY", raising=False)
    server = loopback()
    assert main([*cli_files(tmp_path, server.url), "--out", str(tmp_path / "c")]) == 1
    assert "LOOP_API_KEY" in capsys.readouterr().err and server.seen == []


def test_report_ok_property() -> None:
    assert RecordReport().ok and not RecordReport(errors=1).ok


class CountingTransport(httpx.BaseTransport):
    """A network-like transport (not a MockTransport, so recording is concurrent) that can stop the run."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.n = 0
        self.lock = threading.Lock()
        self.interrupt_at = interrupt_at

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.n += 1
            n = self.n
        if n == self.interrupt_at:
            raise KeyboardInterrupt
        threading.Event().wait(0.002)
        body = json.loads(request.read())
        return httpx.Response(200, json=openai_completion(body["model"], answer_texts(body), 12, 5))


def test_an_interrupted_concurrent_run_keeps_valid_cassettes_and_a_rerun_completes(tmp_path: Path) -> None:
    policy = loop_policy("https://api.example.test/v1")
    items = items_(24)
    stop = CountingTransport(interrupt_at=20)
    with pytest.raises(KeyboardInterrupt), httpx.Client(transport=stop) as client:
        record(items, policy, tmp_path, client=client, api_keys=KEYS, progress=False, concurrency=4)
    assert not list(tmp_path.glob(".*")) and (tmp_path / MANIFEST).is_file()
    kept = 0
    for p in tmp_path.glob("item-*.json"):
        kept += len(json.loads(p.read_text())["interactions"])  # every file is a whole cassette
    assert 0 < kept < stop.n  # the interrupted request left nothing; the stopped workers sent no more
    assert stop.n < 24 * per_item(policy)
    again = CountingTransport()
    with httpx.Client(transport=again) as client:
        report = record(items, policy, tmp_path, client=client, api_keys=KEYS, progress=False)
    assert report.concurrency == 8 and report.requests_recorded == again.n == 24 * per_item(policy) - kept
    assert len(list(replay_items(policy, tmp_path, items))) == 24


def test_a_cassette_edited_after_recording_is_recorded_again_not_resealed(tmp_path: Path) -> None:
    """Resuming must not bless a tampered answer: the edited cassette is recorded again from scratch."""
    from routerlab.data.cassettes import record as record_cassettes
    from routerlab.data.cassettes import replay_items as replay
    from routerlab.fakes import FakeProviders
    from routerlab.policy import policy_from_dict

    policy = policy_from_dict({"schema_version": 1, "tiers": [
        {"name": "a", "provider": "openai", "model": "gpt-4o-mini", "base_url": "https://api.openai.com/v1"},
        {"name": "b", "provider": "openai", "model": "gpt-4o", "base_url": "https://api.openai.com/v1"}]})  # fmt: skip
    items = [EvalItem.from_prompt("q0", "What is 2 + 2?")]
    fake = FakeProviders(default_text="Answer: 4")
    client = httpx.Client(transport=fake.transport())
    record_cassettes(items, policy, tmp_path, client=client, progress=False)
    sent = len(fake.requests)
    path = tmp_path / cassette_name("q0")
    path.write_text(path.read_text().replace("Answer: 4", "Answer: 5"))
    again = record_cassettes(items, policy, tmp_path, client=client, progress=False)
    assert again.items_rerecorded == ["q0"] and len(fake.requests) == 2 * sent
    assert "Answer: 5" not in path.read_text()
    (result,) = [r for _, r in replay(policy, tmp_path, items)]
    assert "4" in result.text


def test_a_short_n2_reply_is_completed_by_a_recorded_single_request_and_the_table_replays_it(tmp_path: Path) -> None:
    from routerlab.workbench.outcomes import build_outcomes

    seen: list[dict[str, Any]] = []

    def one_choice(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        text = "Otters hold hands" if body.get("temperature") == 0.7 else "greedy"
        return httpx.Response(200, json=openai_completion(body["model"], [text], 20, 4))  # always ONE choice

    base = loop_policy("https://api.example.test/v1")
    policy = policy_from_dict({"schema_version": 1, "tiers": [
        {"name": "cheap", "provider": "openai", "model": base.tiers[0].model, "base_url": "https://api.example.test/v1",
         "api_key_env": "LOOP_API_KEY"},
        {"name": "top", "provider": "openai", "model": base.tiers[1].model, "base_url": "https://api.example.test/v1",
         "api_key_env": "LOOP_API_KEY"}]})  # fmt: skip
    assert policy.tiers[0].supports_n
    record(items_(1), policy, tmp_path, client=mock(one_choice), api_keys=KEYS, progress=False, ks=[2])
    n2 = [b for b in seen if b.get("n") == 2]
    top_ups = [b for b in seen if b.get("temperature") == 0.7 and "n" not in b]
    assert len(n2) == 1 and len(top_ups) == 1  # the missing sample, recorded once
    o = build_outcomes(items_(1), policy, tmp_path, scorers=[], ks=[2], cache_dir=tmp_path / "cache", progress=False)
    row = o.calls[(o.calls["variant"] == "k2") & (o.calls["tier_index"] == 0)].iloc[0]
    assert row["error_kind"] is None and row["missing"] == 1 and row["n_requests"] == 2
    assert row["agree_difflib"] == 1.0 and row["topup_worst_pico"] > 0 and row["short_cost_pico"] < row["cost_pico"]


def test_a_429_no_retry_can_fix_is_recorded_at_once(tmp_path: Path) -> None:
    quota = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                       "code": "insufficient_quota"}}  # fmt: skip
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, json=quota)

    waits: list[float] = []
    report = record(
        items_(1), one_tier_policy(), tmp_path, client=mock(handler), api_keys=KEYS, progress=False,
        max_retries=3, sleep=waits.append,
    )  # fmt: skip
    assert len(seen) == 1 and waits == [] and report.retries == 0
    [it] = json.loads((tmp_path / "item-000.json").read_text())["interactions"]
    assert it["response"]["status"]["code"] == 429
