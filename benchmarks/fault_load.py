"""Fault-injection load run of the async router (the same run as tests/test_fault_load.py, sized by flags).

Starts the fault-injecting provider of ``tests/fault_provider.py`` on 127.0.0.1 (real recorded bodies
from ``$ROUTERLAB_PROVIDER_WIRE``, else ``../shared/provider-wire``), routes ``--routes`` queries at
``--concurrency`` through ``AsyncCascadeRouter`` over a three-tier ladder, and prints a Markdown table:
what the server served, how routes ended, and each check (no exception outside the error tree, every
request the server saw in some route's attempts, one log line per route, no key in any log line or
error, no fault kind missing, no growth in open file descriptors). Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fault_provider import run_load, summary  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, default=2000, help="routes to run (default 2000)")
    ap.add_argument("--concurrency", type=int, default=50, help="routes in flight at once (default 50)")
    ap.add_argument("--seed", type=int, default=20261202, help="fault mix seed (default 20261202)")
    args = ap.parse_args()
    report = run_load(routes=args.routes, concurrency=args.concurrency, seed=args.seed)
    print("# fault-injection load run of AsyncCascadeRouter\n")
    print(summary(report))
    failed = [k for k, v in report["failures"].items() if v]
    if failed:
        print(f"\nFAILED checks: {', '.join(failed)}")
        return 1
    print("\nAll checks passed.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
