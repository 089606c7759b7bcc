"""Recording throughput: ``record(..., concurrency=1)`` vs the default concurrency, against a loopback provider.

The script starts a threaded ``http.server`` on 127.0.0.1 that answers OpenAI-compatible
``POST /v1/chat/completions`` after a fixed delay (default 50 ms, a stand-in for a provider's
latency), then records ``--items`` eval items (one tier, no consistency check: one request per item)
into a fresh temporary folder per run, through the real recorder (request building, retries logic,
cassette serialisation and scrubbing, atomic writes, manifest with sha256s, spend accounting).
Runs alternate sequential / concurrent for ``--repeat`` rounds so machine noise hits both alike.
Timed: the whole ``record()`` call (wall clock, ``time.perf_counter``). Goal: concurrent >= 5x faster.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import machine, table

from routerlab.data.cassettes import DEFAULT_CONCURRENCY, record
from routerlab.data.evalset import EvalItem
from routerlab.fakes import openai_completion
from routerlab.policy import policy_from_dict


def serve(delay_s: float) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body in separate writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            time.sleep(delay_s)
            data = json.dumps(openai_completion(body["model"], ["A fixed answer from the loopback."], 20, 8)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200, help="eval items to record per run (200)")
    ap.add_argument("--delay-ms", type=float, default=50.0, help="the loopback's answer delay (50 ms)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds of sequential + concurrent (3)")
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="the concurrent runs' setting")
    args = ap.parse_args()

    srv, url = serve(args.delay_ms / 1000.0)
    policy = policy_from_dict(
        {
            "schema_version": 1,
            "name": "bench-record",
            "tiers": [
                {
                    "name": "only",
                    "provider": "openai",
                    "model": "gpt-4o-mini-2024-07-18",
                    "base_url": url,
                    "api_key_env": "BENCH_API_KEY",
                }
            ],
        }
    )
    items = [EvalItem.from_prompt(f"q{i:04d}", f"Benchmark question number {i}?") for i in range(args.items)]
    keys = {"BENCH_API_KEY": "sk-bench-not-a-real-key"}
    tmp = Path(tempfile.mkdtemp(prefix="routerlab-bench-record-"))
    times: dict[int, list[float]] = {1: [], args.concurrency: []}
    try:
        for r in range(args.repeat):
            for conc in (1, args.concurrency):
                out = tmp / f"run{r}-c{conc}"
                t0 = time.perf_counter()
                rep = record(items, policy, out, api_keys=keys, concurrency=conc, progress=False)
                times[conc].append(time.perf_counter() - t0)
                assert rep.requests_recorded == args.items and rep.errors == 0, rep
                shutil.rmtree(out)
    finally:
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"# recording {args.items} items (1 request each) against a loopback answering after {args.delay_ms:g} ms")
    print(f"machine: {machine()}; {args.repeat} interleaved rounds; seconds = one whole record() call\n")
    rows = []
    for conc, ts in times.items():
        rows.append(
            [
                "sequential" if conc == 1 else "concurrent",
                conc,
                f"{min(ts):.2f}",
                f"{statistics.median(ts):.2f}",
                f"{max(ts):.2f}",
                f"{args.items / statistics.median(ts):.0f}",
            ]
        )
    print(table(["run", "concurrency", "min s", "median s", "max s", "requests/s (median)"], rows))
    ratio = statistics.median(times[1]) / statistics.median(times[args.concurrency])
    floor = args.items * args.delay_ms / 1000.0
    print()
    print(
        table(
            ["ratio", "value"],
            [
                ["sequential / concurrent (medians)", f"{ratio:.1f}x"],
                ["sequential floor (items x delay)", f"{floor:.2f} s"],
                ["goal: concurrent >= 5x faster", "met" if ratio >= 5 else "NOT met"],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
