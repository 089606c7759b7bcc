"""``routerlab serve``: added latency and throughput against calling the fake upstream directly.

Three processes on 127.0.0.1: a fake OpenAI-compatible upstream (an asyncio HTTP/1.1 server answering a
fixed chat.completion at once), ``routerlab serve`` on a one-tier policy pointing at it (started twice:
with the default aiohttp transport, and with a default ``httpx.AsyncClient`` via ``--transport httpx``),
and this script as the load generator (aiohttp, keep-alive, ``c`` requests in flight). For each
concurrency and target it times a fixed wall-clock window and counts completed requests; targets and
concurrencies are interleaved, and the whole sweep repeated ``--repeat`` times (min / median / max over
repeats). Printed: requests/s and mean latency per target and concurrency, the proxy's added latency
over the direct call, and the goals: at 200 concurrent clients the server's throughput is at least 5x
that of the same server on httpx's own transport, and at most 20% below its own throughput at 10
concurrent clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import machine, table

UPSTREAM = r"""
import asyncio, json, sys
BODY = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}).encode()
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
RESP = HEAD + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            await reader.readexactly(n)
            writer.write(RESP)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


async def load(url: str, body: bytes, concurrency: int, seconds: float) -> tuple[int, float]:
    """(completed requests, mean latency s) within ``seconds`` at ``concurrency`` in flight."""
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    done = 0
    total = 0.0
    stop = time.monotonic() + seconds
    headers = {"content-type": "application/json", "authorization": "Bearer bench"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done, total
            while time.monotonic() < stop:
                t0 = time.monotonic()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}: HTTP {r.status}")
                done += 1
                total += time.monotonic() - t0

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, total / max(done, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed window per (target, concurrency) (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats, at least 3 (default 3)")
    ap.add_argument("--concurrency", default="1,10,64,200", help="client concurrencies (default 1,10,64,200)")
    args = ap.parse_args()
    if args.repeat < 3:
        ap.error("--repeat must be at least 3")
    levels = [int(x) for x in args.concurrency.split(",")]
    for need in (10, 200):
        if need not in levels:
            levels.append(need)
    levels.sort()
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="rl-bench-serve-"))
    try:
        up = free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up)]))
        wait_port(up)
        policy = {
            "schema_version": 1,
            "name": "bench",
            "tiers": [
                {
                    "name": "only",
                    "provider": "openai",
                    "model": "m",
                    "base_url": f"http://127.0.0.1:{up}/v1",
                    "api_key_env": "BENCH_UPSTREAM_KEY",
                    "timeout_s": 30,
                    "price": {"input_usd_per_mtok": "1", "output_usd_per_mtok": "2"},
                }
            ],  # fmt: skip
            "confidence": {"classes": []},
        }
        pfile = tmp / "bench.json"
        pfile.write_text(json.dumps(policy))
        env = {**os.environ, "BENCH_UPSTREAM_KEY": "sk-bench-upstream-0123", "ROUTERLAB_SERVE_KEYS": ""}
        ports = {}
        for transport in ("aiohttp", "httpx"):
            port = free_port()
            cmd = [sys.executable, "-m", "routerlab", "serve", "--policy", str(pfile), "--port", str(port),
                   "--transport", transport]  # fmt: skip
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            ports[transport] = port
        body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Capital of France?"}]}).encode()
        targets = {
            "upstream direct": (f"http://127.0.0.1:{up}/v1/chat/completions", body),
            "serve (aiohttp transport)": (f"http://127.0.0.1:{ports['aiohttp']}/v1/chat/completions", body),
            "serve (default httpx.AsyncClient)": (f"http://127.0.0.1:{ports['httpx']}/v1/chat/completions", body),
        }
        for url, b in targets.values():  # warm-up
            asyncio.run(load(url, b, 10, 0.5))
        rps: dict[tuple[str, int], list[float]] = {}
        lat: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeat):
            for c in levels:
                for name, (url, b) in targets.items():
                    n, mean = asyncio.run(load(url, b, c, args.seconds))
                    rps.setdefault((name, c), []).append(n / args.seconds)
                    lat.setdefault((name, c), []).append(mean * 1000)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)

    def mmm(xs: list[float], fmt: str = "{:.0f}") -> str:
        return " / ".join(fmt.format(v) for v in (min(xs), statistics.median(xs), max(xs)))

    rows = []
    for c in levels:
        direct = statistics.median(lat[("upstream direct", c)])
        for name in targets:
            added = "-" if name == "upstream direct" else f"{statistics.median(lat[(name, c)]) - direct:.2f}"
            rows.append([str(c), name, mmm(rps[(name, c)]), mmm(lat[(name, c)], "{:.2f}"), added])
    print("# routerlab serve vs the fake upstream called directly (all on 127.0.0.1)")
    print(
        f"machine: {machine()}; {args.repeat} interleaved repeats of {args.seconds:g} s per cell (min / median / max)\n"
    )
    print(table(["clients", "target", "requests/s", "mean latency ms", "added latency ms (median)"], rows))
    a200 = statistics.median(rps[("serve (aiohttp transport)", 200)])
    h200 = statistics.median(rps[("serve (default httpx.AsyncClient)", 200)])
    a10 = statistics.median(rps[("serve (aiohttp transport)", 10)])
    goals = [
        ["at 200 clients: aiohttp transport / default httpx.AsyncClient >= 5x", f"{a200 / h200:.2f}x",
         "met" if a200 >= 5 * h200 else "MISSED"],
        ["at 200 clients: at most 20% below its own throughput at 10", f"{a200 / a10 - 1:+.0%}",
         "met" if a200 >= 0.8 * a10 else "MISSED"],
    ]  # fmt: skip
    print()
    print(table(["goal", "measured (medians)", "verdict"], goals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
