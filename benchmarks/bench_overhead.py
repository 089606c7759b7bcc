"""Router overhead per request, on httpx.MockTransport, vs a bare httpx call through the same transport.

What the router adds on top of HTTP: classification, request building, parsing,
pricing, breaker bookkeeping, the JSON log line (INFO logging off here, as in a
service that ships logs elsewhere; one run with it on).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import httpx
from _common import machine, table

from routerlab import CascadeRouter
from routerlab.fakes import openai_completion
from routerlab.policy import policy_from_dict

BODY = json.dumps(openai_completion("gpt-4o-mini", ["Paris is the capital of France."] * 2, 20, 16)).encode()


def handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=BODY, headers={"content-type": "application/json"})


def policy(check: bool):  # type: ignore[no-untyped-def]
    tier = {"provider": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "K", "max_tokens": 64}
    return policy_from_dict(
        {
            "schema_version": 1,
            "tiers": [
                {**tier, "name": n, "model": m}
                for n, m in (("cheap", "gpt-4o-mini"), ("mid", "gpt-4o"), ("premium", "gpt-4o-2024-05-13"))
            ],
            "confidence": {"classes": ["simple", "medium", "complex"] if check else []},
        }
    )


def per_call(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(50):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000)
    args = ap.parse_args()
    client = httpx.Client(transport=httpx.MockTransport(handler))
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Tell me the capital of France"}]}
    bare = per_call(lambda: client.post("https://api.openai.com/v1/chat/completions", json=payload).json(), args.n)
    plain = CascadeRouter.from_policy(policy(False), client=client, api_keys={"K": "x"})
    checked = CascadeRouter.from_policy(policy(True), client=client, api_keys={"K": "x"})
    q = "Tell me the capital of France in one word"
    logging.getLogger("routerlab").setLevel(logging.WARNING)
    r1 = per_call(lambda: plain.route(q), args.n)
    r2 = per_call(lambda: checked.route(q), args.n)
    logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
    logging.getLogger("routerlab").setLevel(logging.INFO)
    r3 = per_call(lambda: plain.route(q), args.n)
    print(f"# router overhead per request\nmachine: {machine()}; {args.n} calls each after 50 warm-up calls\n")
    print(
        table(
            ["call", "us per request", "vs bare httpx"],
            [
                ["bare httpx.Client.post + .json()", f"{bare:.0f}", "1.0x"],
                ["router, one tier accepts (no check)", f"{r1:.0f}", f"{r1 / bare:.1f}x"],
                ["router, tier 0 with a 2-sample consistency check (n=2)", f"{r2:.0f}", f"{r2 / bare:.1f}x"],
                ["router, one tier, JSON log line on", f"{r3:.0f}", f"{r3 / bare:.1f}x"],
            ],
        )
    )


if __name__ == "__main__":
    main()
