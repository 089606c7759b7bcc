"""The ``routerlab`` command line; ``routerlab COMMAND --help`` explains each command."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

from routerlab.errors import RouterlabError


def _data_list(args: argparse.Namespace) -> int:
    from routerlab import datasets

    for name in datasets.REGISTRY:
        print(datasets.describe(name))
        print()
    return 0


def _data_fetch(args: argparse.Namespace) -> int:
    from routerlab import datasets

    files = datasets.fetch(args.name, mirror=args.mirror, cache_dir=args.cache_dir, progress=not args.quiet)
    where = args.cache_dir or datasets.default_cache_dir()
    print(f"{args.name}: {len(files)} files verified (sha256) in {where}")
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from routerlab.importers import import_dataset

    ladder = args.ladder.split(",") if args.ladder else None
    ks = tuple(int(k) for k in args.k.split(",")) if args.k else None
    r = import_dataset(
        args.name, ladder=ladder, root=args.root, mirror=args.mirror, ks=ks, force=args.force, progress=not args.quiet
    )
    print(
        f"{r.name}: {r.items} items -> {r.evalset}\n  ladder policy -> {r.policy}\n  cassettes -> {r.cassettes} "
        f"({r.requests_recorded} requests recorded this run)"
    )
    return 0


def _record(args: argparse.Namespace) -> int:
    from routerlab.cassettes import record
    from routerlab.evalset import evalset_sha256, load_evalset
    from routerlab.policy import load_policy

    items = load_evalset(args.evalset)
    policy = load_policy(args.policy)
    ks = tuple(int(k) for k in args.k.split(",")) if args.k else None
    rep = record(
        items,
        policy,
        args.out,
        ks=ks,
        force=args.force,
        progress=not args.quiet,
        evalset_sha256=evalset_sha256(args.evalset),
    )
    print(
        f"recorded {rep.requests_recorded} requests ({rep.requests_replayed} already in the cassettes) for "
        f"{rep.items} items; {rep.errors} provider errors {dict(rep.errors_by_kind)}; spend ${rep.spend_usd:.4f}"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from routerlab.cassettes import replay_items
    from routerlab.evalset import load_evalset
    from routerlab.policy import load_policy

    items = load_evalset(args.evalset)
    policy = load_policy(args.policy)
    tiers: Counter[str] = Counter()
    total = Decimal(0)
    for _item, result in replay_items(policy, args.cassettes, items):
        tiers[result.tier] += 1
        total += result.cost_usd
    print(
        f"replayed {len(items)} items through the router: answered by tier {dict(tiers)}; "
        f"total ${total:.6f} (${total / max(len(items), 1) * 1000:.4f} per 1k queries)"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from routerlab.demo import run_demo

    return run_demo(out=sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routerlab",
        description="Cascade LLM router and workbench: record or import provider traffic, replay it offline "
        "through the real router, sweep policies, export the chosen one.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run the main job end to end on the default data (no API keys needed)")
    d.set_defaults(func=_demo)

    data = sub.add_parser("data", help="public model outputs: list, fetch, import")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    ls = dsub.add_parser("list", help="the registered datasets, with sources, sizes and licenses")
    ls.set_defaults(func=_data_list)
    mirror_help = (
        "a folder laid out like raw.githubusercontent.com (default: $ROUTERLAB_MIRROR, else "
        "../shared/datasets/github beside the repo, else download)"
    )
    f = dsub.add_parser("fetch", help="download (or copy from a mirror) a dataset and verify its sha256")
    f.add_argument("name", help="alpaca_eval, arena_bench_v1 or mot_date")
    f.add_argument("--mirror", help=mirror_help)
    f.add_argument(
        "--cache-dir", help="where verified files are kept (default: $ROUTERLAB_DATA_DIR or .routerlab-data)"
    )
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_data_fetch)
    im = dsub.add_parser("import", help="turn a dataset into an eval set + cassettes the router replays")
    im.add_argument("name", help="alpaca_eval, arena_bench_v1 or mot_date")
    im.add_argument("--ladder", help="comma-separated dataset model names, cheapest first (default per dataset)")
    im.add_argument("--k", help="sample counts to record for the consistency check, e.g. 2,3 (default 2)")
    im.add_argument("--root", help="where data/imported/ and cassettes/ go (default: the checkout)")
    im.add_argument("--mirror", help=mirror_help)
    im.add_argument("--force", action="store_true", help="re-create the cassettes from scratch")
    im.add_argument("--quiet", action="store_true", help="no progress bars")
    im.set_defaults(func=_data_import)

    rec = sub.add_parser("record", help="record every tier's answers for an eval set against real providers")
    rec.add_argument("--evalset", required=True, help="eval set JSONL (see data/README.md)")
    rec.add_argument("--policy", required=True, help="policy JSON naming the tier ladder and key variables")
    rec.add_argument("--out", required=True, help="cassette folder (one cassette per item)")
    rec.add_argument("--k", help="sample counts for non-final tiers, e.g. 2,3 (default: the policy's k)")
    rec.add_argument("--force", action="store_true", help="discard existing cassettes and record again")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=_record)

    rp = sub.add_parser("replay", help="route an eval set through the real router from cassettes (offline)")
    rp.add_argument("--evalset", required=True)
    rp.add_argument("--policy", required=True)
    rp.add_argument("--cassettes", required=True)
    rp.set_defaults(func=_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except RouterlabError as e:
        print(f"routerlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("routerlab: interrupted; finished cassettes are kept and a re-run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
