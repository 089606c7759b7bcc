"""The ``routerlab`` command line; ``routerlab COMMAND --help`` explains each command."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from routerlab.errors import RouterlabError


def _ks(value: str) -> tuple[int, ...]:
    """``--k 2,3``: sample counts for the consistency check, each at least 2."""
    try:
        ks = tuple(int(k) for k in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 2,3; got {value!r}") from None
    if not ks or any(k < 2 for k in ks):
        raise argparse.ArgumentTypeError(f"a consistency check needs at least 2 samples; got {value!r}")
    return tuple(sorted(set(ks)))


def _floor(value: str) -> float:
    """``--floor 0.95``: a share of the all-premium quality, in (0, 1]."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.95; got {value!r}") from None
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"must be a share of premium quality in (0, 1], e.g. 0.95; got {value!r}")
    return x


def _delta(value: str) -> float:
    """``--delta 0.1``: the error level of a certification or a check, in (0, 1)."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.1; got {value!r}") from None
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), e.g. 0.1 for 90% confidence; got {value!r}")
    return x


def _split(value: str) -> tuple[float, float, float]:
    """``--split 0.2,0.3,0.5``: tune, calibrate and test shares."""
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers such as 0.2,0.3,0.5; got {value!r}") from None
    if len(parts) != 3 or any(not 0 < v < 1 for v in parts) or abs(sum(parts) - 1) > 1e-9:
        raise argparse.ArgumentTypeError(
            f"expected three shares in (0, 1) that sum to 1 (tune, calibrate, test), e.g. 0.2,0.3,0.5; got {value!r}"
        )
    return (parts[0], parts[1], parts[2])


def _usd(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount in USD such as 0.5; got {value!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a positive amount; got {value!r}")
    return x


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number; got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {value!r}")
    return n


def _positive(value: str) -> int:
    n = _count(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value!r}")
    return n


def _megabytes(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of megabytes such as 2048; got {value!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of megabytes; got {value!r}")
    return x


def _grid_points(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number; got {value!r}") from None
    if not 2 <= n <= 64:
        raise argparse.ArgumentTypeError(f"must be between 2 and 64; got {value!r}")
    return n


def _data_list(args: argparse.Namespace) -> int:
    from routerlab.data import datasets

    for name in datasets.REGISTRY:
        print(datasets.describe(name))
        print()
    return 0


def _data_fetch(args: argparse.Namespace) -> int:
    from routerlab.data import datasets
    from routerlab.data.paths import default_cache_dir

    files = datasets.fetch(args.name, mirror=args.mirror, cache_dir=args.cache_dir, progress=not args.quiet)
    where = args.cache_dir or default_cache_dir()
    print(f"{args.name}: {len(files)} files verified (sha256) in {where}")
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from routerlab.data.importers import DEFAULT_LADDERS, import_dataset, import_outputs, load_ladder, load_outputs

    if args.name not in DEFAULT_LADDERS:  # your own outputs file
        src = Path(args.name)
        if not src.is_file():
            raise RouterlabError(
                f"{args.name!r} is neither a public dataset ({', '.join(DEFAULT_LADDERS)}) nor an existing outputs "
                "file" + (f": {src} does not exist" if src.suffix else "")
            )
        if not args.ladder:
            raise RouterlabError(
                f"importing {src} needs --ladder LADDER.json: which of its model names are the tiers, cheapest "
                "first, with provider, base_url and price (see README, 'Importing your own logged outputs')"
            )
        if not Path(args.ladder).is_file():
            raise RouterlabError(f"--ladder {args.ladder}: no such file")
        name = args.study or src.stem
        res = import_outputs(
            load_outputs(src), load_ladder(args.ladder), name=name, root=args.root, ks=args.k or (2,),
            force=args.force, progress=not args.quiet, strict=args.strict, answer_pattern=args.answer_pattern,
            k_max=args.k_max, pack=args.pack,
        )  # fmt: skip
        for note in res.notes:
            print(f"note: {note}", file=sys.stderr)
        if res.dropped:
            shown = "; ".join(res.dropped_items[:5]) + (" ..." if res.dropped > 5 else "")
            print(f"note: {res.dropped} item(s) left out, a ladder model has no row for them: {shown}", file=sys.stderr)
        print(
            f"{res.name}: {res.items} items -> {res.evalset}"
            + f"\n  ladder policy -> {res.policy}\n  cassettes -> {res.cassettes}\n"
            f"  next: routerlab sweep {name}" + (f" --root {args.root}" if args.root else "")
        )
        return 0
    ladder = args.ladder.split(",") if args.ladder else None
    r = import_dataset(
        args.name,
        ladder=ladder,
        root=args.root,
        mirror=args.mirror,
        ks=args.k,
        force=args.force,
        progress=not args.quiet,
        k_max=args.k_max,
        pack=args.pack,
    )
    print(
        f"{r.name}: {r.items} items -> {r.evalset}\n  ladder policy -> {r.policy}\n  cassettes -> {r.cassettes} "
        f"({r.requests_recorded} requests recorded this run)"
    )
    return 0


def _data_pack(args: argparse.Namespace) -> int:
    from routerlab.data.cassettes import MANIFEST
    from routerlab.data.packs import pack_cassettes, unpack_cassettes
    from routerlab.data.studies import study_paths

    folder = Path(args.folder)
    if not (folder / MANIFEST).is_file():
        try:
            study = study_paths(args.folder, root=args.root).cassettes
        except RouterlabError:
            study = folder
        if not (study / MANIFEST).is_file():
            raise RouterlabError(f"{args.folder}: neither a cassette folder (no {folder / MANIFEST}) nor a study "
                                 f"with cassettes (no {study / MANIFEST})")  # fmt: skip
        folder = study
    if args.unpack:
        n = unpack_cassettes(folder)
        print(f"{folder}: {n} cassette(s) written back as files; packs/ removed")
        return 0
    rep = pack_cassettes(folder, shard_bytes=args.shard_mb * 1024 * 1024)
    print(
        f"{folder}: {rep.packed} cassette(s) packed into {len(rep.shards)} new shard(s); the packs hold "
        f"{rep.total_packed}, {rep.loose} loose cassette file(s) remain"
    )
    return 0


def _tier_temperatures(text: str) -> tuple[str, list[float]]:
    name, sep, values = text.partition("=")
    try:
        temps = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        temps = []
    if not sep or not name or not temps or not all(0.0 <= t <= 2.0 for t in temps):
        raise argparse.ArgumentTypeError(f"expected TIER=T1,T2 with temperatures in [0, 2], got {text!r}")
    return name, temps


def _record(args: argparse.Namespace) -> int:
    """``routerlab record``: 0 when every request got an answer, 2 when some failed after retries (or, in
    mode none, when requests are missing)."""
    from routerlab.data.cassettes import record
    from routerlab.data.evalset import evalset_sha256, load_evalset
    from routerlab.policy import load_policy

    if (args.out is None) == (args.study is None):
        raise RouterlabError("give --study NAME (a study in the workspace) or --out FOLDER (cassettes only)")
    out, study = args.out, None
    if args.study is not None:  # the study holds the eval set and policy beside their cassettes
        from routerlab.data.studies import create_study

        study = create_study(args.study, args.evalset, args.policy, root=args.root, force=args.force, write=False)
        out = study.cassettes
    items = load_evalset(args.evalset)
    policy = load_policy(args.policy)
    temps: dict[int, list[float]] = {}
    for name, values in args.sample_temperatures or []:
        try:
            ti = policy.tier_index(name)
        except KeyError:
            raise RouterlabError(
                f"--sample-temperatures: no tier {name!r} in {args.policy} (tiers: "
                f"{', '.join(t.name for t in policy.tiers)})"
            ) from None
        if ti == len(policy.tiers) - 1:
            raise RouterlabError(f"--sample-temperatures: {name!r} is the final tier, which takes no samples")
        temps[ti] = values
    rep = record(
        items,
        policy,
        out,
        ks=args.k,
        k_max=args.k_max,
        sample_temperatures=temps or None,
        force=args.force,
        mode=args.mode,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        progress=not args.quiet,
        evalset_sha256=evalset_sha256(args.evalset),
        pack_every=args.pack_every,
    )
    if rep.items_rerecorded:
        shown = ", ".join(rep.items_rerecorded[:10]) + (" ..." if len(rep.items_rerecorded) > 10 else "")
        print(f"routerlab: {len(rep.items_rerecorded)} cassette(s) no longer matched the manifest and were "
              f"recorded again: {shown}", file=sys.stderr)  # fmt: skip
    if study is not None and rep.mode != "none":  # the recording ran: the study now holds what it was made for
        from routerlab.data.studies import write_study_inputs

        write_study_inputs(study, args.evalset, args.policy)
    if rep.mode == "none":
        print(
            f"mode none: nothing sent; {rep.requests_missing} requests missing for {len(rep.items_missing)} of "
            f"{rep.items} items ({rep.requests_replayed} already in the cassettes)"
        )
        if rep.items_missing:
            shown = ", ".join(rep.items_missing[:10]) + (" ..." if len(rep.items_missing) > 10 else "")
            print(f"  items with missing requests: {shown}", file=sys.stderr)
            return 2
        return 0
    print(
        f"recorded {rep.requests_recorded} requests ({rep.requests_replayed} already in the cassettes) for "
        f"{rep.items} items; {rep.errors} provider errors {dict(rep.errors_by_kind)}; {rep.retries} retries; "
        f"spend ${rep.spend_usd:.4f}"
    )
    if rep.errors:
        shown = ", ".join(rep.failed_items[:10]) + (" ..." if len(rep.failed_items) > 10 else "")
        print(
            f"routerlab: {rep.errors} request(s) failed after retries ({dict(rep.errors_by_kind)}) in "
            f"{len(rep.failed_items)} item(s): {shown}; the failures are recorded (timeouts and connection "
            f"failures leave nothing), re-record them with --force or into a new folder",
            file=sys.stderr,
        )
        return 2
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from routerlab.serve import serve
    except ImportError as e:
        raise RouterlabError(
            f"routerlab serve needs the serve extra ({e.name} is missing): pip install 'routerlab[serve]'"
        ) from None
    serve(args.policy, host=args.host, port=args.port, transport=args.transport)
    return 0


def _route(args: argparse.Namespace) -> int:
    import httpx

    from routerlab.policy import load_policy
    from routerlab.router import CascadeRouter

    policy = load_policy(args.policy)
    with httpx.Client() as client:
        router = CascadeRouter(policy, client=client)
        try:
            result = router.route(args.question)
        except RouterlabError as e:
            print(f"routerlab: no answer: {e}", file=sys.stderr)
            for a in e.attempts:
                print(f"  {a.tier:<12} {a.outcome:<16} ${a.cost_usd}  {a.error_kind or ''}", file=sys.stderr)
            return 1
    print(
        result.text if result.text or not result.tool_calls else json.dumps([c.to_openai() for c in result.tool_calls])
    )
    print(file=sys.stderr)
    for a in result.attempts:
        sim = "" if a.similarity is None else f" similarity {a.similarity:.3f}"
        print(f"  {a.tier:<12} {a.outcome:<16} ${a.cost_usd}  {a.error_kind or ''}{sim}", file=sys.stderr)
    print(
        f"answered by {result.tier} ({result.model}), {result.complexity}, ${result.cost_usd}, "
        f"{result.escalations} escalation(s), {result.latency_ms:.0f} ms"
        + (" (fallback: no tier's answer was accepted)" if result.fallback else ""),
        file=sys.stderr,
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from routerlab.data.cassettes import replay_items
    from routerlab.data.evalset import load_evalset
    from routerlab.policy import load_policy

    evalset, policy_path, cassettes = args.evalset, args.policy, args.cassettes
    if args.study is not None:  # the study's files, unless named explicitly (e.g. an exported --policy)
        from routerlab.data.studies import study_paths

        paths = study_paths(args.study, root=args.root)
        evalset, policy_path = evalset or paths.evalset, policy_path or paths.policy
        cassettes = cassettes or paths.cassettes
    if evalset is None or policy_path is None or cassettes is None:
        raise RouterlabError("give a STUDY, or all of --evalset, --policy and --cassettes")
    items = load_evalset(evalset)
    policy = load_policy(policy_path)
    tiers: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    total = Decimal(0)
    for _item, result in replay_items(policy, cassettes, items, keep_errors=True):
        if isinstance(result, Exception):
            failed[type(result).__name__] += 1
            total += sum((a.cost_usd for a in getattr(result, "attempts", ())), Decimal(0))
            continue
        tiers[result.tier] += 1
        total += result.cost_usd
    print(
        f"replayed {len(items)} items through the router: answered by tier {dict(tiers)}"
        + (f"; no answer for {sum(failed.values())} {dict(failed)}" if failed else "")
        + f"; total ${total:.6f} (${total / max(len(items), 1) * 1000:.4f} per 1k queries)"
    )
    return 0


@contextlib.contextmanager
def _judged(args: argparse.Namespace) -> Iterator[str | None]:
    """With ``--judge``: an LLM judge registered as the scorer ``judge`` (its calls recorded into the
    study's cassettes once, replayed after), closed and summarised on the way out; yields the scorer."""
    if not args.judge:
        yield args.scorer
        return
    from routerlab.data.studies import study_paths
    from routerlab.workbench.judge import register_judge

    cassette = study_paths(args.name, root=args.root).cassettes / "judge.json"
    judge = register_judge("judge", args.judge, cassette, record=not args.judge_offline)
    try:
        yield args.scorer or "judge"
    finally:
        judge.close()
    js = judge.stats()
    print(
        f"judge: {js.sent} calls sent, {js.replayed} replayed from {cassette}, {js.unparseable} replies "
        f"unparseable; spend this run ${js.spend_usd:.4f}"
    )


def _study(args: argparse.Namespace) -> Any:
    from routerlab.workbench.study import run_study

    with _judged(args) as scorer:
        return run_study(
            args.name,
            root=args.root,
            mirror=args.mirror,
            scorer=scorer,
            floor=args.floor,
            n_thresholds=args.thresholds,
            progress=not args.quiet,
            delta=args.delta,
            bound=args.bound,
            split=args.split,
            chooser=getattr(args, "chooser", "certified"),
            budget_usd=None if getattr(args, "budget", None) is None else args.budget / 1000,
            cost_bound_usd=getattr(args, "cost_bound", None),
        )


def _reports_dir(args: argparse.Namespace) -> Path:
    from routerlab.data.paths import workspace_root

    base = Path(args.root) if args.root else workspace_root()
    return Path(base / "reports" / str(args.name))


def _reachable(address: str) -> None:
    """A TCP scheduler address that refuses connections is said so at once (Dask's client would retry
    until its timeout)."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(address if "://" in address else "tcp://" + address)
    try:
        host, port = u.hostname, u.port
    except ValueError:
        raise RouterlabError(f"--dask {address}: not a scheduler address such as tcp://10.0.0.5:8786") from None
    if u.scheme not in ("tcp", "tls") or not host or not port:
        return  # another transport (inproc, ucx, ws): the client reports on its own
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as e:
        raise RouterlabError(f"--dask {address}: cannot reach the scheduler ({e.strerror or e})") from None


@contextlib.contextmanager
def _executor(args: argparse.Namespace) -> Iterator[Any]:
    """The executor ``--workers`` or ``--dask`` asks for (None: neither), shut down on the way out."""
    if args.dask:
        try:
            from distributed import Client
        except ImportError:
            msg = "--dask needs Dask's distributed scheduler: pip install 'routerlab[cluster]'"
            raise RouterlabError(msg) from None
        _reachable(args.dask)
        try:
            client = Client(args.dask, timeout="10s")  # type: ignore[no-untyped-call]
        except OSError as e:
            raise RouterlabError(f"--dask {args.dask}: cannot reach the scheduler ({e})") from None
        with client:
            yield client
    elif args.workers:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            yield pool
    else:
        yield None


def _sweep(args: argparse.Namespace) -> int:
    from routerlab.jsonio import atomic_write_text
    from routerlab.workbench.study import sweep_study

    load = {"auto": None, "memory": True, "disk": False}[args.table]
    with _judged(args) as scorer, _executor(args) as executor:
        got = sweep_study(
            args.name, root=args.root, mirror=args.mirror, scorer=scorer, n_thresholds=args.thresholds,
            split=args.split, progress=not args.quiet, workers=args.workers, executor=executor, load=load,
            memory_mb=args.memory_mb,
        )  # fmt: skip
    out = Path(args.out) if args.out else _reports_dir(args) / "sweep.csv"
    df = got.table
    atomic_write_text(out, df.to_csv(index=False))
    q = f"quality_{got.scorer}"
    where = "on disk, read by DuckDB item range by item range" if got.outcomes.on_disk else "in memory"
    print(
        f"{args.name}: swept {len(df)} policies on the dev split ({int(got.dev.sum())} queries; outcome "
        f"table {where}) -> {out}"
    )
    print(
        f"  {got.scorer}: {df[q].min():.4f} .. {df[q].max():.4f}; cost per 1k queries "
        f"${df['cost_per_1k_usd'].min():.4f} .. ${df['cost_per_1k_usd'].max():.4f}"
    )
    n_lat = int(df["latency_p50_ms"].notna().sum())
    if n_lat < len(df):
        print(
            f"  latency p50/p95: exact for the {n_lat} policies on a frontier, not computed for the other "
            f"{len(df) - n_lat} (too many policy-items; `routerlab sweep` keeps memory bounded)"
        )
    return 0


def _frontier(args: argparse.Namespace) -> int:
    from routerlab.jsonio import atomic_write_text
    from routerlab.workbench.plots import save_frontier_png

    st = _study(args)
    rdir = _reports_dir(args)
    rdir.mkdir(parents=True, exist_ok=True)
    png = save_frontier_png(st, rdir / "frontier.png")
    atomic_write_text(rdir / "frontier.csv", st.frontier.to_csv(index=False))
    print(f"{args.name}: {len(st.frontier)} frontier policies -> {rdir / 'frontier.csv'}; plot -> {png}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from routerlab.data.paths import workspace_root
    from routerlab.workbench.report import export_study

    st = _study(args)
    base = Path(args.root) if args.root else workspace_root()
    out = Path(args.out) if args.out else base / "policies" / f"{args.name}.json"
    if st.certified is not None and args.chooser == "certified" and st.certified.feasible:
        print(f"{args.name}: {st.certified.summary()}")  # (a failed certification is the refusal's message)
    path, choice = export_study(st, out, force=args.force)
    m = choice.metrics()
    how = "certified" if choice.chooser == "certified" else "point estimate, NOT certified"
    print(f"{args.name}: chose '{choice.label()}' ({how}) -> {path}")
    for split in ("dev", "test"):
        d = m[split]
        name = choice.dev_split if split == "dev" else "test"
        print(
            f"  {name}: quality {d['quality']:.4f} {d['quality_ci95']} = {_pct(d['quality_share_of_premium'])} of "
            f"premium {_ci(d['quality_share_ci95'])}, ${d['cost_per_1k_usd']:.4f}/1k "
            f"({_pct(d['cost_reduction_vs_premium'])} cheaper {_ci(d['cost_reduction_ci95'])})"
        )
    met = choice.meets_floor("test")
    print(f"  on test the {choice.floor:.0%} floor was {'met' if met else 'MISSED'}")
    return 0


def _ci(v: list[float] | None) -> str:
    return "" if v is None else f"[{v[0]:.1%}, {v[1]:.1%}]"


def _audit(args: argparse.Namespace) -> int:
    from routerlab.jsonio import atomic_write_text
    from routerlab.workbench.audit import audit, audit_table, save_audit_png
    from routerlab.workbench.report import audit_section
    from routerlab.workbench.sweep import default_grid

    st = _study(args)
    res = audit(
        st.outcomes,
        default_grid(st.outcomes, n_thresholds=args.thresholds),
        scorer=st.scorer,
        floor=args.floor,
        delta=args.delta,
        bound=args.bound,
        split=args.split,
        splits=args.splits,
        progress=not args.quiet,
        budget_usd=st.certified.budget_usd if st.certified is not None else None,
        cost_bound_usd=getattr(args, "cost_bound", None),
    )
    rdir = _reports_dir(args)
    rdir.mkdir(parents=True, exist_ok=True)
    png = save_audit_png(res, rdir / "audit.png", title=f"{args.name}: {res.splits} re-splits")
    atomic_write_text(rdir / "audit.csv", res.runs.to_csv(index=False))
    atomic_write_text(rdir / "audit.md", f"# {args.name}\n\n" + audit_section(res, png_name=png.name))
    print(audit_table(res).to_string(index=False))
    print(res.words())
    print(f"-> {rdir / 'audit.md'}, {png}, {rdir / 'audit.csv'}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from routerlab.policy import load_policy
    from routerlab.workbench.check import EXIT_REGRESSION, check_policy

    candidate = load_policy(args.policy, force=True)
    production = load_policy(args.production, force=True) if args.production else None
    st = _study(args)
    mask = None if args.items == "all" else st.test
    res = check_policy(
        st.outcomes,
        candidate,
        scorer=st.scorer,
        production=production,
        floor=args.check_floor,
        max_cost_per_1k=args.max_cost_per_1k,
        max_p95_ms=args.max_p95_ms,
        delta=args.check_delta,
        bound=args.bound,
        mask=mask,
    )
    print(res.text())
    return 0 if res.passed else EXIT_REGRESSION


def _pct(v: float | None) -> str:
    """A share as a percentage, or "n/a" where it is undefined (e.g. premium quality 0)."""
    return "n/a" if v is None or v != v else f"{v:.1%}"


def _report(args: argparse.Namespace) -> int:
    from routerlab.workbench.report import write_outputs

    st = _study(args)
    base = Path(args.root) if args.root else None
    res = None
    if args.audit_splits:
        from routerlab.workbench.audit import audit
        from routerlab.workbench.sweep import default_grid

        res = audit(
            st.outcomes,
            default_grid(st.outcomes, n_thresholds=args.thresholds),
            scorer=st.scorer,
            floor=args.floor,
            delta=args.delta,
            bound=args.bound,
            split=args.split,
            splits=args.audit_splits,
            progress=not args.quiet,
            budget_usd=st.certified.budget_usd if st.certified is not None else None,
            cost_bound_usd=getattr(args, "cost_bound", None),
        )
    paths = write_outputs(
        st, reports_dir=_reports_dir(args), policies_dir=(base / "policies") if base else None, audit=res
    )
    refusal = st.export_refusal()
    written = f"policy -> {paths['policy']}" if refusal is None else f"no policy written: {refusal}"
    print(f"{args.name}: report -> {paths['report']}; plot -> {paths['frontier']}; {written}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from routerlab.workbench.demo import run_demo

    return run_demo(out=sys.stdout, datasets=args.datasets.split(","), root=args.root, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routerlab",
        description="Cascade LLM router and workbench: record or import provider traffic, replay it offline "
        "through the real router, sweep policies, export the chosen one.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser(
        "demo",
        help="run the main job end to end on the default data (no API keys needed)",
        description="For each dataset: fetch (or read the mirror) and import it, build the outcome "
        "table, sweep policies on the dev split, and write reports/<name>/frontier.png, "
        "reports/<name>/report.md and policies/<name>.json.",
    )
    d.add_argument(
        "--datasets",
        default="alpaca_eval,arena_bench_v1,mot_date",
        help="comma-separated studies: the public datasets (imported if missing) or your own study names",
    )
    d.add_argument("--root", help="where data/imported, cassettes, reports and policies go (default: the checkout)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)

    def study_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "name",
            help="a study: its name in the workspace (a public dataset's name imports it if missing) or its folder",
        )
        sp.add_argument(
            "--scorer",
            help="quality scorer: exact, rougeL, label, mixed, or your own as package.module:function "
            "(default: what the eval set carries: gold answers -> exact, references -> rougeL, labels -> label)",
        )
        sp.add_argument(
            "--floor", type=_floor, default=0.95, help="quality floor as a share of all-premium, in (0, 1] (0.95)"
        )
        sp.add_argument(
            "--thresholds", type=_grid_points, default=8, help="threshold grid points per non-final tier (8)"
        )
        sp.add_argument(
            "--delta",
            type=_delta,
            default=0.1,
            help="error level of the certified choice: the floor holds with probability >= 1 - delta (0.1)",
        )
        sp.add_argument(
            "--bound",
            choices=("wsr", "hb"),
            default="wsr",
            help="the finite-sample bound: wsr (betting, Waudby-Smith and Ramdas; default) or hb "
            "(Hoeffding-Bentkus, as Learn then Test)",
        )
        sp.add_argument(
            "--split",
            type=_split,
            default=(0.2, 0.3, 0.5),
            help="tune,calibrate,test shares, seeded and stratified by complexity class (0.2,0.3,0.5); the "
            "point-estimate chooser's dev split is tune + calibrate",
        )
        sp.add_argument("--root", help="workspace with data/imported and cassettes (default: the checkout)")
        sp.add_argument(
            "--judge",
            help="score with an LLM judge: a JSON config (provider, model, base_url, prompt with {question} and "
            "{answer}, scale); its calls are recorded into the study's cassettes once, then replayed",
        )
        sp.add_argument("--judge-offline", action="store_true", help="with --judge: replay only, never call the judge")
        sp.add_argument("--mirror", help="dataset mirror folder, if an import is needed")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    sw = sub.add_parser("sweep", help="simulate every policy of the grid on the dev split; write the sweep table CSV")
    study_args(sw)
    sw.add_argument("--out", help="CSV path (default reports/<name>/sweep.csv)")
    par = sw.add_mutually_exclusive_group()
    par.add_argument(
        "--workers",
        type=_positive,
        help="processes for the table build and the sweep (default: the build on every core, the sweep in "
        "this process)",
    )
    par.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="a Dask scheduler (e.g. tcp://10.0.0.5:8786; the cluster extra): the build's chunks and the sweep's "
        "shards run on its workers, which must read the study's folder and cache at the same paths",
    )
    sw.add_argument(
        "--table",
        choices=("auto", "memory", "disk"),
        default="auto",
        help="keep the outcome table in memory, or on disk as Parquet swept by DuckDB in item ranges; auto "
        "(default): on disk above $ROUTERLAB_OUT_OF_CORE_ROWS calls rows",
    )
    sw.add_argument(
        "--memory-mb",
        type=_megabytes,
        help="the sweep's memory budget for its temporaries (default $ROUTERLAB_SWEEP_MEMORY_MB, else 2048)",
    )
    sw.set_defaults(func=_sweep)
    fr = sub.add_parser("frontier", help="the cost/quality Pareto frontier with baselines: CSV and PNG")
    study_args(fr)
    fr.set_defaults(func=_frontier)

    def chooser_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--chooser",
            choices=("certified", "point"),
            default="certified",
            help="certified (default): the cheapest policy whose floor holds with probability 1 - delta (Learn "
            "then Test on the tune and calibrate splits); point: the cheapest whose dev estimate reaches the "
            "floor, with no guarantee",
        )
        budget_args(sp)

    def budget_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--budget",
            type=_usd,
            help="also certify mean cost per 1k queries <= this many USD (needs the ladder's per-query cap, "
            "or --cost-bound)",
        )
        sp.add_argument(
            "--cost-bound",
            type=_usd,
            help="for --budget: the most one query can cost, in USD (default: the ladder's max_cost_per_query_usd)",
        )

    ex = sub.add_parser(
        "export",
        help="choose a policy (certified by default) and write it with provenance",
        description="Choose the cheapest policy whose quality floor is certified (or, with --chooser point, the "
        "cheapest whose dev estimate reaches it) and write it as a policy JSON with its provenance. When "
        "nothing cheaper than all-premium can be certified, it says what floor could be and how many items "
        "the requested one would need, and refuses unless --force (which writes the point-estimate choice).",
    )
    study_args(ex)
    chooser_args(ex)
    ex.add_argument("--out", help="policy JSON path (default policies/<name>.json)")
    ex.add_argument(
        "--force",
        action="store_true",
        help="export even when the scorer cannot tell the tiers apart or nothing could be certified",
    )
    ex.set_defaults(func=_export)
    rpt = sub.add_parser("report", help="the Markdown report (baselines, frontier, both choosers, audit, metrics)")
    study_args(rpt)
    chooser_args(rpt)
    rpt.add_argument(
        "--audit-splits",
        type=_count,
        default=50,
        help="re-splits for the report's audit section (50; 0 leaves the audit out)",
    )
    rpt.set_defaults(func=_report)
    au = sub.add_parser(
        "audit",
        help="repeat the whole choice over random re-splits: how often the floor held, cost vs hindsight",
        description="For each of --splits seeded re-splits, run the point-estimate and the certified chooser "
        "from scratch and report, on the held-out part: how often the floor held, the median and worst ratio "
        "of the chosen cost to the cheapest policy that met the floor there (best in hindsight), and how "
        "often each chooser's own CI covered the held-out share. Writes reports/<name>/audit.{md,png,csv}.",
    )
    study_args(au)
    budget_args(au)
    au.add_argument("--splits", type=_positive, default=50, help="number of re-splits, at least 1 (50)")
    au.set_defaults(func=_audit)
    ck = sub.add_parser(
        "check",
        help="regression gate: exit 3 when a policy is worse with confidence on the study's traffic",
        description="Replay the study through a candidate policy (and the reference: all-premium, or "
        "--production) and exit 3 when there is evidence at level --check-delta that its quality is below "
        "--check-floor x the reference's (a finite-sample bound on paired scores), or that its cost per 1k "
        "queries or p95 latency is above the given limit (one-sided bootstrap). Exit 0 otherwise, 1 on an "
        "error. The evidence is printed either way.",
    )
    study_args(ck)
    ck.add_argument("--policy", required=True, help="the candidate policy JSON")
    ck.add_argument("--production", help="the policy in production: the quality reference instead of all-premium")
    ck.add_argument(
        "--check-floor",
        type=_floor,
        help="quality floor vs the reference (default: the candidate's own provenance floor, or 1.0 against "
        "--production)",
    )
    ck.add_argument("--max-cost-per-1k", type=_usd, help="fail when mean cost per 1k queries is above this (USD)")
    ck.add_argument("--max-p95-ms", type=_usd, help="fail when the p95 latency is above this many ms")
    ck.add_argument("--check-delta", type=_delta, default=0.05, help="level of the gate's tests (0.05)")
    ck.add_argument(
        "--items", choices=("all", "test"), default="all", help="replay every item (default) or the test split"
    )
    ck.set_defaults(func=_check)

    data = sub.add_parser(
        "data", help="public model outputs (list, fetch, import), your own outputs (import), your logs (from-logs)"
    )
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    ls = dsub.add_parser(
        "list",
        help="the registered datasets, with sources, sizes and licenses",
        description="Print each registered public dataset: its pinned source (repository and "
        "commit), files with sizes and sha256, and license notes.",
    )
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
    im = dsub.add_parser(
        "import",
        help="turn a public dataset, or your own logged outputs, into a study: eval set + ladder policy + cassettes",
        description="routerlab data import mot_date  |  routerlab data import outputs.jsonl --ladder ladder.json "
        "--study mine. An outputs file has one JSON object per (item, model) line (README: 'Importing your own "
        "logged outputs'); the ladder file says which of its model names are the tiers, cheapest first.",
    )
    im.add_argument("name", help="alpaca_eval, arena_bench_v1, mot_date, or the path of your outputs JSONL")
    im.add_argument(
        "--ladder",
        help="for a public dataset: comma-separated model names, cheapest first (default per dataset); "
        "for your own outputs: the ladder JSON file (required)",
    )
    im.add_argument("--study", help="study name for your own outputs (default: the file name without extension)")
    im.add_argument("--strict", action="store_true", help="an item lacking a ladder model is an error, not dropped")
    im.add_argument(
        "--answer-pattern",
        help="how final answers are read (your own outputs): boxed, last_number, letter, final_line, or a regex "
        "with an 'answer' group (default: 'Answer: ...' lines)",
    )
    im.add_argument("--k", type=_ks, help="sample counts to record for the consistency check, e.g. 2,3 (default 2)")
    im.add_argument(
        "--k-max",
        type=int,
        metavar="K",
        help="adaptive k: also record single draws of samples 3..K at each checked tier, so the sweep can try "
        "drawing more samples when the first two disagree (default: 6 for mot_date, none otherwise; limited "
        "by the samples each tier has)",
    )
    im.add_argument("--root", help="where data/imported/ and cassettes/ go (default: the checkout)")
    im.add_argument("--mirror", help=mirror_help)
    im.add_argument("--force", action="store_true", help="re-create the cassettes from scratch")
    im.add_argument(
        "--pack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the cassettes in a few shard files (cassettes/NAME/packs/), packed as the "
        "import goes, instead of one file per item (default: packed above 10,000 items)",
    )
    im.add_argument("--quiet", action="store_true", help="no progress bars")
    im.set_defaults(func=_data_import)

    pk = dsub.add_parser(
        "pack",
        help="move a cassette folder's files into a few shard files with an index (or back, with --unpack)",
        description="A million items are a million cassette files, slow to list, copy and back up. This moves "
        "a folder's item cassettes into FOLDER/packs/: shard files of the unchanged bytes (each cassette's "
        "sha256 in the manifest still holds, outcome tables built before stay valid) and one index per shard. "
        "Replay, the outcome-table build and recording read packed and loose cassettes alike; a cassette "
        "recorded again is a loose file, which wins over its packed copy until the folder is packed again.",
    )
    pk.add_argument("folder", help="a cassette folder, or a study name (its cassettes)")
    pk.add_argument("--root", help="workspace for a study name (default: the checkout, or $ROUTERLAB_WORKSPACE)")
    pk.add_argument("--shard-mb", type=_positive, default=256, help="bytes per shard file, in MB (default 256)")
    pk.add_argument("--unpack", action="store_true", help="write every packed cassette back as its own file")
    pk.set_defaults(func=_data_pack)

    from routerlab.data.fromlogs import add_from_logs_parser

    add_from_logs_parser(dsub)

    rec = sub.add_parser(
        "record",
        help="record every tier's answers for an eval set against real providers",
        description="Record every request the router could send for each item (one vcrpy cassette per item), "
        "up to --concurrency requests in flight per provider host, retrying 429/5xx/529/timeouts. Every tier's "
        "API key and price are checked before anything is sent. Exit status: 0 when every request got an "
        "answer; 2 when some failed after retries (the failures are recorded) or, with --mode none, when "
        "requests are missing; 1 on an error before anything was sent (a missing key or price, a folder "
        "recorded for another eval set).",
    )
    rec.add_argument("--evalset", required=True, help="eval set JSONL (see data/README.md)")
    rec.add_argument("--policy", required=True, help="policy JSON naming the tier ladder and key variables")
    rec.add_argument(
        "--study",
        help="record into a study of that name: data/imported/NAME/ gets the eval set and policy, cassettes/NAME/ "
        "the cassettes; then routerlab sweep NAME",
    )
    rec.add_argument("--out", help="or: just a cassette folder (one cassette per item)")
    rec.add_argument("--root", help="workspace for --study (default: the checkout, or $ROUTERLAB_WORKSPACE)")
    rec.add_argument("--k", type=_ks, help="sample counts for non-final tiers, e.g. 2,3 (default: the policy's k)")
    rec.add_argument(
        "--k-max",
        type=int,
        metavar="K",
        help="adaptive k: also record single draws of samples 3..K at each non-final tier (after k=2)",
    )
    rec.add_argument(
        "--sample-temperatures",
        type=_tier_temperatures,
        action="append",
        metavar="TIER=T1,T2",
        help="the temperature knob: also record that non-final tier's samples at these temperatures, e.g. "
        "cheap=0.4,1.0 (repeat for other tiers); the sweep then compares them",
    )
    rec.add_argument(
        "--force",
        action="store_true",
        help="re-record everything (mode all): the new recording replaces the folder only once complete",
    )
    rec.add_argument(
        "--mode",
        choices=("none", "once", "new_episodes", "all"),
        help="vcrpy record mode: new_episodes (default) records what is missing; all re-records everything; "
        "once refuses a folder that has cassettes; none sends nothing and reports what is missing (exit 2 if any)",
    )
    rec.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight per provider host (default 8; 1 = in order)"
    )
    rec.add_argument(
        "--max-retries",
        type=int,
        default=3,
        help="retries of a 429/5xx/529/timeout/connection failure, after retry-after or a backoff (default 3)",
    )
    rec.add_argument(
        "--pack-every",
        type=_positive,
        metavar="N",
        help="record N items at a time and move their cassettes into the folder's packs before the next N, "
        "so a large study is a few shard files, not one file per item (see routerlab data pack)",
    )
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=_record)

    rp = sub.add_parser("replay", help="route an eval set through the real router from cassettes (offline)")
    rp.add_argument("study", nargs="?", help="a study (name or folder): its eval set, ladder policy and cassettes")
    rp.add_argument("--evalset", help="eval set JSONL (default: the study's)")
    rp.add_argument("--policy", help="policy JSON to route with, e.g. an exported one (default: the study's)")
    rp.add_argument("--cassettes", help="cassette folder recorded for the eval set (default: the study's)")
    rp.add_argument("--root", help="workspace of the study (default: the checkout, or $ROUTERLAB_WORKSPACE)")
    rp.set_defaults(func=_replay)

    sv = sub.add_parser(
        "serve",
        help="serve policies behind an OpenAI-compatible endpoint (needs the serve extra)",
        description=(
            "Serve one or more policy files behind an OpenAI-compatible HTTP API: POST /v1/chat/completions "
            "(the request's model names the policy), GET /v1/models, /healthz, /readyz, /metrics. Policy files "
            "reload when they change. Clients must send one of the bearer tokens in $ROUTERLAB_SERVE_KEYS "
            "(comma-separated) when it is set; provider keys come from the environment variables the "
            "policies name."
        ),
    )
    sv.add_argument("--policy", action="append", required=True, help="policy JSON to serve (repeat for several)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument(
        "--transport",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="upstream transport under httpx: aiohttp (default; holds up under load) or a default httpx.AsyncClient",
    )
    sv.set_defaults(func=_serve)

    ro = sub.add_parser(
        "route",
        help="route one question through a policy and print the answer, its attempts and cost",
        description="Route QUESTION through the real router (live provider calls; keys from the environment).",
    )
    ro.add_argument("question", help="the prompt to route")
    ro.add_argument("--policy", required=True, help="policy JSON")
    ro.set_defaults(func=_route)
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
    except OSError as e:  # a missing or unreadable file named on the command line
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"routerlab: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except ValueError as e:  # a bad value that got past argparse (a ladder name, a scorer, ...)
        print(f"routerlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("routerlab: interrupted; finished cassettes are kept and a re-run resumes", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours: say so in one line (ROUTERLAB_DEBUG=1 shows the traceback)
        if os.environ.get("ROUTERLAB_DEBUG"):
            raise
        print(
            f"routerlab: internal error: {type(e).__name__}: {e} (a bug; rerun with ROUTERLAB_DEBUG=1 for the "
            "traceback and please report it)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
