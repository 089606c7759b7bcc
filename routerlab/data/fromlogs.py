"""From production back to the workbench: the router's own log lines become a new eval set.

With prompt logging on (``CascadeRouter(..., log_prompts=True)``) every route writes one JSON line on
the ``routerlab.router`` logger (``"event": "route"``, with the conversation under ``"messages"``).
This module reads such a file, deduplicates the conversations, samples a set of the size you ask for,
stratified by complexity class, and writes it as a study ready to record::

    routes = read_route_logs("router.log")            # RouteLogs: a list of LoggedRoute, with .stats
    items, report = sample_evalset(routes, size=200, seed=0, classifier=policy.classifier)
    print(report.summary())
    write_study_evalset(items, "policies/ladder.json", name="this-week")

and on the command line: ``routerlab data from-logs router.log --size 200 --policy ladder.json``.

- A line is either bare JSON or JSON after a logging prefix (``INFO routerlab.router {...}``: the JSON
  is taken from the line's first ``{``). Other events (``attempt``), lines that are not JSON and route
  records without ``messages`` (prompt logging off) are skipped and counted, as are conversations the
  eval-set format cannot hold (say, structured content blocks).
- Duplicates are the same conversation up to whitespace (each message's text with runs of whitespace
  collapsed); the first occurrence is kept and the number of occurrences goes in ``meta``.
- The class of a conversation comes from the given classifier (the policy's); without one, from the
  logged ``complexity``, else the default classifier.
- The sample size of each class is proportional to its distinct conversations (largest-remainder
  rounding), and every class that has conversations gets at least one when the size allows. The draw
  is seeded and does not depend on the order of the log lines.
- Item ids are content hashes (``log-`` + 12 hex of the SHA-256 of the normalised conversation), so
  the same conversation gets the same id in every import.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routerlab.classifier import COMPLEXITY_CLASSES, ClassifierSettings
from routerlab.data.evalset import EvalItem, dump_evalset
from routerlab.data.paths import workspace_root
from routerlab.decision import complexity_of
from routerlab.errors import DataError, EvalSetError
from routerlab.jsonio import loads, read_text
from routerlab.policy import dump_policy, load_policy

__all__ = [
    "LogStats",
    "LoggedRoute",
    "RouteLogs",
    "SampleReport",
    "add_from_logs_parser",
    "allocate",
    "canonical_messages",
    "from_logs_command",
    "read_route_logs",
    "sample_evalset",
    "write_study_evalset",
]

PROMPT_LOGGING_HINT = "prompt logging must be on: CascadeRouter(..., log_prompts=True)"
_LINE_END = re.compile(r"\r\n|\r|\n")  # as in routerlab.jsonio: U+2028 inside a JSON string is not a line end
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_PROBLEMS = 5  # problem lines kept as examples for the summary


@dataclass(frozen=True)
class LoggedRoute:
    """One ``route`` record of the log that carries a conversation the eval-set format can hold."""

    line: int  # 1-based line number in its file
    messages: tuple[Mapping[str, str], ...]  # validated as an eval item's messages
    query_id: str | None = None
    complexity: str | None = None  # the class the router logged
    tier: str | None = None
    model: str | None = None
    ok: bool | None = None
    cost_usd: str | None = None
    ts: float | None = None
    source: str = ""  # the file it was read from


@dataclass(frozen=True)
class LogStats:
    """What reading log files found, line by line."""

    sources: tuple[str, ...] = ()
    lines: int = 0  # non-blank lines read
    routes: int = 0  # "event": "route" records, with or without messages
    without_messages: int = 0  # route records without "messages" (prompt logging off)
    unusable: int = 0  # route records whose messages the eval-set format cannot hold
    other_events: int = 0  # JSON objects that are not route records
    not_json: int = 0  # lines with no JSON object
    problems: tuple[str, ...] = ()  # the first few unusable records, "file:line: why"

    def __add__(self, other: LogStats) -> LogStats:
        return LogStats(
            self.sources + other.sources,
            self.lines + other.lines,
            self.routes + other.routes,
            self.without_messages + other.without_messages,
            self.unusable + other.unusable,
            self.other_events + other.other_events,
            self.not_json + other.not_json,
            (self.problems + other.problems)[:_MAX_PROBLEMS],
        )


class RouteLogs(list[LoggedRoute]):
    """The usable route records of one or more log files (a plain list) plus ``stats`` on every line.

    Concatenate with :meth:`merge`; slicing or ``+`` gives a plain list without the stats."""

    def __init__(self, routes: Iterable[LoggedRoute] = (), stats: LogStats | None = None) -> None:
        super().__init__(routes)
        self.stats = stats or LogStats()

    @staticmethod
    def merge(parts: Iterable[RouteLogs]) -> RouteLogs:
        out = RouteLogs()
        for p in parts:
            out.extend(p)
            out.stats = out.stats + p.stats
        return out


@dataclass(frozen=True)
class SampleReport:
    """What :func:`sample_evalset` did: what the logs held, what was removed, what was drawn per class."""

    size: int  # the size asked for
    seed: int
    lines: int
    routes: int
    without_messages: int
    unusable: int
    other_events: int
    not_json: int
    conversations: int  # usable route records (with duplicates)
    duplicates_removed: int
    available: Mapping[str, int] = field(default_factory=dict)  # distinct conversations per class
    sampled: Mapping[str, int] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    classified_by: str = ""  # "classifier", or "logged complexity / default classifier"

    @property
    def distinct(self) -> int:
        return sum(self.available.values())

    @property
    def total_sampled(self) -> int:
        return sum(self.sampled.values())

    def summary(self) -> str:
        """A readable account: the lines read, what was skipped and why, and the per-class table."""
        src = ", ".join(self.sources) if self.sources else "the given routes"
        out = [f"read {self.lines} lines from {src}: {self.routes} route records"]
        skipped = []
        if self.without_messages:
            skipped.append(f"{self.without_messages} route record(s) without messages ({PROMPT_LOGGING_HINT})")
        if self.unusable:
            skipped.append(f"{self.unusable} route record(s) whose messages are not a valid eval conversation")
        if self.other_events:
            skipped.append(f"{self.other_events} other event(s)")
        if self.not_json:
            skipped.append(f"{self.not_json} line(s) that are not JSON")
        out += [f"  skipped: {s}" for s in skipped]
        out += [f"    {p}" for p in self.problems]
        out.append(
            f"{self.conversations} conversations, {self.duplicates_removed} duplicates removed -> "
            f"{self.distinct} distinct (classes from the {self.classified_by})"
        )
        width = max(len("complex"), *(len(c) for c in self.available))
        out.append(f"  {'class':<{width}}  {'available':>9}  {'sampled':>7}")
        for c, n in self.available.items():
            out.append(f"  {c:<{width}}  {n:>9}  {self.sampled.get(c, 0):>7}")
        out.append(f"  {'total':<{width}}  {self.distinct:>9}  {self.total_sampled:>7}")
        if self.total_sampled < self.size:
            out.append(f"  asked for {self.size}; the logs hold only {self.distinct} distinct conversations")
        return "\n".join(out)


# ---------------------------------------------------------------- reading


def _opt_str(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def _strip_item_suffix(reason: str) -> str:
    return reason.rsplit(" (in eval item", 1)[0]


def read_route_logs(path: str | os.PathLike[str]) -> RouteLogs:
    """The route records of a log file that carry a conversation, in file order, with counts of the rest.

    An unreadable or non-UTF-8 file raises :class:`DataError` naming it."""
    where = os.fspath(path)

    def error(message: str, line: int | None, fieldname: str | None) -> DataError:
        loc = f"{where}:{line}" if line is not None else where
        return DataError(f"{loc}: {message}" if fieldname is None else f"{loc}: field '{fieldname}': {message}")

    text = read_text(path, error, what="log file")
    routes: list[LoggedRoute] = []
    counts = {"lines": 0, "routes": 0, "without_messages": 0, "unusable": 0, "other_events": 0, "not_json": 0}
    problems: list[str] = []
    for lineno, raw in enumerate(_LINE_END.split(text), start=1):
        if not raw.strip():
            continue
        counts["lines"] += 1
        start = raw.find("{")
        obj: Any = None
        if start >= 0:
            try:
                obj = loads(raw[start:].strip(), error, lineno)
            except DataError:
                obj = None
        if not isinstance(obj, dict):
            counts["not_json"] += 1
            continue
        if obj.get("event") != "route":
            counts["other_events"] += 1
            continue
        counts["routes"] += 1
        if obj.get("messages") is None:
            counts["without_messages"] += 1
            continue
        try:
            probe = EvalItem(id="logged route", messages=obj["messages"])
        except EvalSetError as exc:
            counts["unusable"] += 1
            if len(problems) < _MAX_PROBLEMS:
                at = f"field '{exc.field}': " if exc.field else ""
                problems.append(f"{where}:{lineno}: {at}{_strip_item_suffix(exc.reason)}")
            continue
        ok = obj.get("ok")
        ts = obj.get("ts")
        routes.append(
            LoggedRoute(
                line=lineno,
                messages=probe.messages,
                query_id=_opt_str(obj.get("query_id")),
                complexity=_opt_str(obj.get("complexity")),
                tier=_opt_str(obj.get("tier")),
                model=_opt_str(obj.get("model")),
                ok=ok if isinstance(ok, bool) else None,
                cost_usd=_opt_str(obj.get("cost_usd")),
                ts=float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None,
                source=where,
            )
        )
    return RouteLogs(routes, LogStats(sources=(where,), problems=tuple(problems), **counts))


# ---------------------------------------------------------------- sampling


def canonical_messages(messages: Sequence[Mapping[str, Any]]) -> str:
    """The conversation as canonical JSON, each text's whitespace collapsed (the duplicate key and id source)."""
    norm = [{"role": str(m["role"]), "content": " ".join(str(m["content"]).split())} for m in messages]
    return json.dumps(norm, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _item_id(canonical: str, taken: Mapping[str, str]) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    for n in range(12, len(digest) + 1):  # 12 hex digits; longer only on a (vanishingly rare) collision
        candidate = f"log-{digest[:n]}"
        if taken.get(candidate, canonical) == canonical:
            return candidate
    raise DataError(f"two distinct logged conversations share the SHA-256 {digest}")  # pragma: no cover


def allocate(available: Mapping[str, int], size: int) -> dict[str, int]:
    """How many of each class to draw: ``size`` split in proportion to ``available`` by largest remainder.

    Every class with conversations gets at least one when ``size`` is at least the number of such classes
    (taken from the class furthest above its exact share). ``size`` >= the total takes everything."""
    if size < 1:
        raise DataError(f"the sample size must be at least 1; got {size}")
    total = sum(available.values())
    if size >= total:
        return dict(available)
    order = {c: i for i, c in enumerate(available)}
    alloc = {c: size * n // total for c, n in available.items()}
    rem = {c: size * n % total for c, n in available.items()}
    left = size - sum(alloc.values())
    for c in sorted(available, key=lambda c: (-rem[c], -available[c], order[c]))[:left]:
        alloc[c] += 1
    nonempty = [c for c, n in available.items() if n > 0]
    if size >= len(nonempty):
        for c in nonempty:
            if alloc[c] == 0:
                # the donor: the class furthest above its exact share size*n/total (in units of 1/total)
                donor = max(
                    (d for d in available if alloc[d] >= 2),
                    key=lambda d: (alloc[d] * total - size * available[d], alloc[d], -order[d]),
                )
                alloc[donor] -= 1
                alloc[c] = 1
    return alloc


def sample_evalset(
    routes: Sequence[LoggedRoute], *, size: int, seed: int = 0, classifier: ClassifierSettings | None = None
) -> tuple[list[EvalItem], SampleReport]:
    """Deduplicate the logged conversations, classify them and draw ``size`` of them stratified by class.

    Items come back sorted by id, each with ``meta`` saying where it came from. ``routes`` from
    :func:`read_route_logs` carry the counts of skipped lines into the report. No usable route raises
    :class:`DataError` with what the logs held instead."""
    stats = routes.stats if isinstance(routes, RouteLogs) else LogStats(lines=len(routes), routes=len(routes))
    if size < 1:
        raise DataError(f"the sample size must be at least 1; got {size}")
    if not routes:
        src = ", ".join(stats.sources) or "the given routes"
        raise DataError(
            f"{src}: no logged route with a usable conversation ({stats.lines} lines, {stats.routes} route "
            f"records, {stats.without_messages} without messages, {stats.unusable} unusable, "
            f"{stats.other_events} other events, {stats.not_json} not JSON); {PROMPT_LOGGING_HINT}, and the "
            "'routerlab.router' logger must log at INFO"
        )
    first: dict[str, LoggedRoute] = {}
    seen: dict[str, int] = {}
    for r in routes:
        key = canonical_messages(r.messages)
        seen[key] = seen.get(key, 0) + 1
        first.setdefault(key, r)
    classes: dict[str, list[EvalItem]] = {c: [] for c in COMPLEXITY_CLASSES}
    taken: dict[str, str] = {}
    for key, r in first.items():
        if classifier is not None:
            cls = complexity_of(r.messages, classifier)
        elif r.complexity in COMPLEXITY_CLASSES:
            cls = r.complexity
        else:
            cls = complexity_of(r.messages, ClassifierSettings())
        item_id = _item_id(key, taken)
        taken[item_id] = key
        meta: dict[str, Any] = {"source": "logs", "complexity": cls, "occurrences": seen[key]}
        for name, value in (
            ("query_id", r.query_id),
            ("logged_complexity", r.complexity),
            ("logged_tier", r.tier),
            ("logged_model", r.model),
            ("log_line", r.line),
        ):
            if value is not None:
                meta[name] = value
        classes.setdefault(cls, []).append(EvalItem(id=item_id, messages=r.messages, meta=meta))
    available = {c: len(v) for c, v in classes.items()}
    quota = allocate(available, size)
    rng = random.Random(seed)
    chosen: list[EvalItem] = []
    for c, cands in classes.items():  # fixed class order; candidates by id: independent of line order
        chosen += rng.sample(sorted(cands, key=lambda it: it.id), quota[c])
    chosen.sort(key=lambda it: it.id)
    report = SampleReport(
        size=size,
        seed=seed,
        lines=stats.lines,
        routes=stats.routes,
        without_messages=stats.without_messages,
        unusable=stats.unusable,
        other_events=stats.other_events,
        not_json=stats.not_json,
        conversations=len(routes),
        duplicates_removed=len(routes) - len(first),
        available=available,
        sampled=quota,
        sources=stats.sources,
        problems=stats.problems,
        classified_by="policy's classifier" if classifier is not None else "logged complexity (else the defaults)",
    )
    return chosen, report


# ---------------------------------------------------------------- writing


def study_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/data/imported/<name>`` (``root`` defaults to the workspace)."""
    if not isinstance(name, str) or not _STUDY_NAME.fullmatch(name):
        raise DataError(
            "the study name (--study) must be letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit; got {name!r}"
        )
    base = Path(root) if root is not None else workspace_root()
    return base / "data" / "imported" / name


def write_study_evalset(
    items: Sequence[EvalItem],
    policy_path: str | os.PathLike[str] | None,
    *,
    name: str,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Write ``<root>/data/imported/<name>/evalset.jsonl`` (and the policy as ``ladder-policy.json`` beside it).

    The policy is validated before anything is written; both files are written atomically. An existing
    eval set is kept unless ``force``. Returns the eval set's path."""
    out = study_dir(name, root)
    evalset = out / "evalset.jsonl"
    if not items:
        raise DataError(f"{evalset}: no items to write")
    if evalset.exists() and not force:
        raise DataError(
            f"{evalset} already exists; pass force=True (--force) to replace it, or choose another study name"
        )
    policy = load_policy(policy_path) if policy_path is not None else None
    dump_evalset(items, evalset)
    if policy is not None:
        dump_policy(policy, out / "ladder-policy.json")
    return evalset


# ---------------------------------------------------------------- the command line


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number; got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value!r}")
    return n


def _whole(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number; got {value!r}") from None


def add_from_logs_parser(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``from-logs`` to the ``routerlab data`` actions; returns its parser (``func`` is set)."""
    p = dsub.add_parser(
        "from-logs",
        help="turn the router's own JSON log lines (log_prompts=True) into a new eval set to record",
        description="routerlab data from-logs router.log --size 200 --policy ladder.json --study this-week. "
        "Reads the 'routerlab.router' log lines (bare JSON, or JSON after a logging prefix), keeps the route "
        "records with messages (CascadeRouter(..., log_prompts=True)), removes duplicate conversations and "
        "samples --size of them stratified by complexity class into data/imported/<study>/evalset.jsonl.",
    )
    p.add_argument("logs", nargs="+", metavar="LOGS.jsonl", help="log file(s) of the routerlab.router logger")
    p.add_argument("--size", type=_positive_int, required=True, help="how many conversations to sample")
    p.add_argument("--seed", type=_whole, default=0, help="seed of the draw (default 0)")
    p.add_argument(
        "--policy",
        help="the ladder policy to record with: its classifier assigns the classes, and it is copied into the "
        "study as ladder-policy.json (default: the logged classes; no policy copied)",
    )
    p.add_argument("--study", help="study name (default: the first log file's name without extension)")
    p.add_argument("--root", help="where data/imported/ and cassettes/ go (default: the checkout)")
    p.add_argument("--force", action="store_true", help="replace an existing eval set of that study")
    p.set_defaults(func=from_logs_command)
    return p


def from_logs_command(args: argparse.Namespace) -> int:
    """``routerlab data from-logs``: sample, write, print the summary and the next commands; 0 on success."""
    logs = [args.logs] if isinstance(args.logs, (str, os.PathLike)) else list(args.logs)
    routes = RouteLogs.merge(read_route_logs(p) for p in logs)
    policy = load_policy(args.policy) if args.policy else None
    items, report = sample_evalset(
        routes, size=args.size, seed=args.seed, classifier=policy.classifier if policy else None
    )
    name = args.study or Path(logs[0]).stem
    evalset = write_study_evalset(items, args.policy, name=name, root=args.root, force=args.force)
    base = Path(args.root) if args.root else workspace_root()
    print(report.summary())
    print(f"{name}: {len(items)} items -> {evalset}")
    policy_arg = str(evalset.parent / "ladder-policy.json") if args.policy else "POLICY.json"
    if args.policy:
        print(f"  ladder policy -> {policy_arg}")
    else:
        print(f"  no --policy given: copy your ladder policy to {evalset.parent / 'ladder-policy.json'} for the sweep")
    print(f"  next: routerlab record --evalset {evalset} --policy {policy_arg} --out {base / 'cassettes' / name}")
    root_arg = f" --root {args.root}" if args.root else ""
    print(
        f"  then: routerlab sweep {name}{root_arg} --scorer package.module:function "
        "(logged traffic has no gold answers, references or labels: bring a scorer)"
    )
    return 0
