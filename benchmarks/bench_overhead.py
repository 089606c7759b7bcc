"""Router overhead per request, on httpx.MockTransport, vs a bare httpx call through the same handler.

What the router adds on top of HTTP: classification, request building, parsing,
pricing, breaker bookkeeping, the consistency check, the JSON log line (routerlab
INFO logging off, as in a service that ships logs elsewhere; one row with it on,
to a NullHandler). The handler returns a fixed OpenAI chat.completion body (two
disagreeing choices when the request asks n=2), so all rows pay the same for it.
Rows: one tier accepting with no check (policy confidence.classes = []); tier 0
accepting after a 2-sample check; a 3-tier route where tiers 0 and 1 fail the
check (n=2 requests) and tier 2 answers: 3 HTTP requests per route.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

import httpx
from _common import machine, table

from routerlab import CascadeRouter
from routerlab.fakes import openai_completion
from routerlab.policy import policy_from_dict


def body(*texts: str) -> bytes:
    return json.dumps(openai_completion("m", list(texts), 20, 16)).encode()


ONE, AGREE, DISAGREE = body("Paris."), body("Paris.", "Paris."), body("Paris.", "It is Lyon, I believe, not Paris.")


def handler(agree: bool):  # type: ignore[no-untyped-def]
    def handle(request: httpx.Request) -> httpx.Response:
        two = b'"n":2' in request.content
        content = (AGREE if agree else DISAGREE) if two else ONE
        return httpx.Response(200, content=content, headers={"content-type": "application/json"})

    return handle


def policy(classes: list[str]):  # type: ignore[no-untyped-def]
    tier = {"provider": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "K", "max_tokens": 64}
    names = (("cheap", "gpt-4o-mini"), ("mid", "gpt-4o"), ("premium", "gpt-4o-2024-05-13"))
    return policy_from_dict(
        {
            "schema_version": 1,
            "tiers": [{**tier, "name": n, "model": m} for n, m in names],
            "confidence": {"classes": classes, "k": 2},
        }
    )


def per_call(fn, n: int, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median over ``repeat`` blocks of ``n`` calls (after 50 warm-up calls) of the time per call, in us."""
    for _ in range(50):
        fn()
    blocks = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        blocks.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(blocks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="calls per timed block")
    ap.add_argument("--repeat", type=int, default=5, help="timed blocks (median reported)")
    args = ap.parse_args()
    agree, disagree = (httpx.Client(transport=httpx.MockTransport(handler(x))) for x in (True, False))
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Tell me the capital of France"}]}
    url = "https://api.openai.com/v1/chat/completions"
    bare = per_call(
        lambda: agree.post(url, json=payload, headers={"authorization": "Bearer x"}).json(), args.n, args.repeat
    )
    all_classes = ["simple", "medium", "complex"]
    cases = [
        ("router, one tier accepts, no check", policy([]), agree, 1),
        ("router, tier 0 accepts after a 2-sample check (n=2)", policy(all_classes), agree, 1),
        ("router, 3 tiers: checks fail at 0 and 1, tier 2 answers", policy(all_classes), disagree, 3),
    ]
    q = "Tell me the capital of France in one word"
    rows = [["bare httpx.Client.post + .json()", f"{bare:.0f}", "1", f"{bare:.0f}", "-", "1.0x"]]
    logging.getLogger("routerlab").setLevel(logging.WARNING)
    for label, pol, client, reqs in [*cases, ("router, one tier, no check, JSON log line on", policy([]), agree, 1)]:
        if "log line" in label:
            logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
            logging.getLogger("routerlab").setLevel(logging.INFO)
        router = CascadeRouter.from_policy(pol, client=client, api_keys={"K": "x"})
        assert len(router.route(q).attempts) == reqs
        us = per_call(lambda router=router: router.route(q), args.n, args.repeat)
        rows.append(
            [label, f"{us:.0f}", str(reqs), f"{us / reqs:.0f}", f"{us / reqs - bare:.0f}", f"{us / reqs / bare:.1f}x"]
        )
    print("# router overhead per HTTP request on httpx.MockTransport")
    print(f"machine: {machine()}; median of {args.repeat} blocks of {args.n} calls, after 50 warm-up calls\n")
    head = ["call", "us per call", "HTTP requests", "us per request", "overhead us per request", "vs bare httpx"]
    print(table(head, rows))


if __name__ == "__main__":
    main()
