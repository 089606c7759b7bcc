"""Router overhead per request, on httpx.MockTransport, vs a bare httpx call through the same handler.

What the router adds on top of HTTP: classification, request building and
translation, parsing, pricing, breaker bookkeeping, the consistency check, and
(one pair of rows) the JSON log line, written through a ``logging.StreamHandler``
into an in-memory stream. The handler returns a fixed OpenAI chat.completion
body (two agreeing choices when the request asks ``n=2``), so every row pays
the same for it. Each round times one block of ``-n`` calls of every case, in
turn (interleaved), ``--repeat`` rounds; the table gives the min / median / max
over rounds of the wall time per call (``time.perf_counter_ns``, single thread,
GC on). The overhead of a round is router minus the bare call of the same
round; the log line cost is (log on) minus (log off) of the same round.

Goals (issue 11): router overhead at most 50 us per request beyond the HTTP
client; JSON log line at most 20 us.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
from _common import machine, table

from routerlab import AsyncCascadeRouter, CascadeRouter
from routerlab.fakes import openai_completion
from routerlab.policy import policy_from_dict

Q = "Tell me the capital of France in one word"
URL = "https://api.openai.com/v1/chat/completions"


def body(*texts: str) -> bytes:
    return json.dumps(openai_completion("m", list(texts), 20, 16)).encode()


ONE, TWO = body("Paris."), body("Paris.", "Paris.")


def handle(request: httpx.Request) -> httpx.Response:
    content = TWO if b'"n":2' in request.content else ONE
    return httpx.Response(200, content=content, headers={"content-type": "application/json"})


async def ahandle(request: httpx.Request) -> httpx.Response:
    return handle(request)


def policy(tiers: int, classes: list[str]) -> Any:
    tier = {"provider": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "K", "max_tokens": 64}
    names = (("cheap", "gpt-4o-mini"), ("mid", "gpt-4o"), ("premium", "gpt-4o-2024-05-13"))[3 - tiers :]
    return policy_from_dict(
        {
            "schema_version": 1,
            "tiers": [{**tier, "name": n, "model": m} for n, m in names],
            "confidence": {"classes": classes, "k": 2},
        }
    )


def block_us(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="calls per timed block (default 2000)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds, at least 3 (default 5)")
    args = ap.parse_args()
    if args.repeat < 3:
        ap.error("--repeat must be at least 3")

    client = httpx.Client(transport=httpx.MockTransport(handle))
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": Q}], "max_tokens": 64}
    log = logging.getLogger("routerlab.router")
    sink = logging.StreamHandler(io.StringIO())
    log.addHandler(sink)
    log.propagate = False

    def logging_on(on: bool) -> None:
        log.setLevel(logging.INFO if on else logging.WARNING)

    one = CascadeRouter(policy(1, []), client=client, api_keys={"K": "sk-bench-0123456789"})
    checked = CascadeRouter(policy(2, ["medium"]), client=client, api_keys={"K": "sk-bench-0123456789"})
    assert one.route(Q).tier == "premium" and checked.route(Q).attempts[0].similarity == 1.0

    def bare() -> Any:
        return client.post(URL, json=payload, headers={"authorization": "Bearer x"}).json()

    def routed(router: CascadeRouter, on: bool) -> Callable[[], Any]:
        def f() -> Any:
            return router.route(Q)

        return f

    loop = asyncio.new_event_loop()
    aclient = httpx.AsyncClient(transport=httpx.MockTransport(ahandle))
    aone = AsyncCascadeRouter(policy(1, []), client=aclient, api_keys={"K": "sk-bench-0123456789"})

    async def abare_n(n: int) -> None:
        for _ in range(n):
            (await aclient.post(URL, json=payload, headers={"authorization": "Bearer x"})).json()

    async def arouted_n(n: int) -> None:
        for _ in range(n):
            await aone.route(Q)

    def ablock(coro: Callable[[int], Any], n: int) -> float:
        t0 = time.perf_counter_ns()
        loop.run_until_complete(coro(n))
        return (time.perf_counter_ns() - t0) / n / 1000

    cases: dict[str, Callable[[int], float]] = {
        "bare": lambda n: block_us(bare, n),
        "one": lambda n: (logging_on(False), block_us(routed(one, False), n))[1],
        "one_log": lambda n: (logging_on(True), block_us(routed(one, True), n))[1],
        "checked": lambda n: (logging_on(False), block_us(routed(checked, False), n))[1],
        "abare": lambda n: ablock(abare_n, n),
        "aone": lambda n: (logging_on(False), ablock(arouted_n, n))[1],
    }
    for fn in cases.values():  # warm-up
        fn(100)
    rounds: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeat):
        for k, fn in cases.items():
            rounds[k].append(fn(args.n))
    logging_on(False)

    def mmm(xs: list[float]) -> str:
        return f"{min(xs):.0f} / {statistics.median(xs):.0f} / {max(xs):.0f}"

    over = [r - b for r, b in zip(rounds["one"], rounds["bare"], strict=True)]
    over_a = [r - b for r, b in zip(rounds["aone"], rounds["abare"], strict=True)]
    line = [a - b for a, b in zip(rounds["one_log"], rounds["one"], strict=True)]

    def row(label: str, case: str, base: str | None) -> list[str]:
        if base is None:
            return [label, mmm(rounds[case]), "-", "1.0x"]
        diff = [r - b for r, b in zip(rounds[case], rounds[base], strict=True)]
        ratio = statistics.median(rounds[case]) / statistics.median(rounds[base])
        return [label, mmm(rounds[case]), mmm(diff), f"{ratio:.2f}x"]

    rows = [
        row("bare httpx.Client.post + .json()", "bare", None),
        row("CascadeRouter.route, one tier, no check, log off", "one", "bare"),
        row("CascadeRouter.route, one tier, JSON log line on", "one_log", "bare"),
        row("CascadeRouter.route, tier 0 accepts after a k=2 check (one n=2 request)", "checked", "bare"),
        row("bare httpx.AsyncClient.post + .json()", "abare", None),
        row("AsyncCascadeRouter.route, one tier, no check, log off", "aone", "abare"),
    ]
    print("# router overhead per HTTP request on httpx.MockTransport")
    print(f"machine: {machine()}; {args.repeat} interleaved rounds of {args.n} calls per case (min / median / max)\n")
    print(table(["call", "us per call", "overhead over bare, us", "median vs bare"], rows))

    def goal(label: str, xs: list[float], limit: float) -> list[str]:
        med = statistics.median(xs)
        return [label, f"{med:.0f} us (rounds: {mmm(xs)})", "met" if med <= limit else "MISSED"]

    goals = [
        goal("router overhead <= 50 us per request (sync, one tier)", over, 50),
        goal("router overhead <= 50 us per request (async, one tier)", over_a, 50),
        goal("JSON log line <= 20 us", line, 20),
    ]
    print()
    print(table(["goal", "measured (median)", "verdict"], goals))
    loop.run_until_complete(aclient.aclose())
    loop.close()


if __name__ == "__main__":
    main()
