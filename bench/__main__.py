"""``python -m bench``: every scenario against one private Redis, repeated, then the report.

``make bench`` runs the quick sizes (minutes on 2 cores); ``make bench FULL=1`` the full ones
(10^6 users, windows of 30 to 60 s). ``--only`` runs some scenarios, by key. ``--rabbitmq``
starts a private RabbitMQ node too, and fintask on it joins the throughput, latency and real
work scenarios as one more system (``app.rabbitmq``, Redis for the rest). ``--publish``
(``make bench PUBLISH=1``) writes ``bench/results/<mode>/`` and refuses a work tree with
changes unless ``--allow-dirty``; without it the report goes to the self-ignoring
``bench/results/local-<mode>/``. Either way the samples, latency histograms, command lines,
workers' logs, package versions, Redis ``INFO`` and machine are kept beside the report
(:mod:`bench.publish`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from app.local.rabbitmq_server import RabbitmqServer
from app.local.redis_server import RedisServer
from app.settings import PROJECT_ROOT
from bench.harness import Bench, CommandLine, Sample
from bench.histograms import Cells
from bench.publish import (
    busiest_processes,
    clear,
    commit_of,
    keep_run_files,
    load_average,
    redis_info_text,
    results_dir,
    tree_changes,
)
from bench.report import RunInfo, write_report
from bench.scenarios import SCENARIOS, scenarios_named
from bench.systems.system import RABBITMQ_VARIABLE

RESULTS = Path(__file__).resolve().parent / "results"
#: Repetitions by default. Quick mode's budget is 10 minutes on 2 cores, and its ~55 worker
#: starts a repetition leave room for two; full mode's three give a median and a range.
QUICK_REPEATS = 2
FULL_REPEATS = 3


def default_repeats(full: bool) -> int:
    return FULL_REPEATS if full else QUICK_REPEATS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full sizes (10^6 users, 30-60 s)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"repetitions (default {QUICK_REPEATS} quick, {FULL_REPEATS} full)",
    )
    keys = ", ".join(s.key for s in SCENARIOS)
    parser.add_argument("--only", default="", help=f"comma-separated scenario keys: {keys}")
    parser.add_argument(
        "--batch-members",
        type=int,
        default=None,
        help="members of the batch scenario's batch (default 10^4 quick, 10^6 full)",
    )
    parser.add_argument(
        "--rabbitmq",
        action="store_true",
        help="start a private RabbitMQ node: fintask on it joins the scenarios",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="write bench/results/<mode>/ (refused when the work tree has changes)",
    )
    parser.add_argument(
        "--allow-dirty", action="store_true", help="publish even with uncommitted changes"
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = default_repeats(args.full)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.batch_members is not None and args.batch_members < 1:
        parser.error("--batch-members must be at least 1")
    if args.allow_dirty and not args.publish:
        parser.error("--allow-dirty only means something with --publish")
    try:
        args.scenarios = scenarios_named(args.only)
    except KeyError as error:
        parser.error(str(error.args[0]))
    return args


def refusal(changes: list[str]) -> str:
    """Why a publish does not start, with the changes that stop it."""
    shown = "\n".join(f"  {line}" for line in changes[:20])
    more = f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else ""
    return (
        "Refusing to publish: the work tree has changes outside bench/results/, so the report "
        f"would not describe any commit:\n{shown}{more}\n"
        "Commit them (or run without --publish), or pass --allow-dirty to publish anyway."
    )


@contextmanager
def rabbitmq_node(wanted: bool) -> Iterator[None]:
    """A RabbitMQ node of this run's own, named to the scenarios by ``BENCH_RABBITMQ_URL``
    while it runs (without ``--rabbitmq``, a URL already in the environment is used as is)."""
    if not wanted:
        yield
        return
    with RabbitmqServer() as node:
        os.environ[RABBITMQ_VARIABLE] = node.url()
        try:
            yield
        finally:
            del os.environ[RABBITMQ_VARIABLE]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    changes = tree_changes(PROJECT_ROOT)
    if args.publish and changes and not args.allow_dirty:
        print(refusal(changes), file=sys.stderr)
        return 2
    commit = commit_of(PROJECT_ROOT, changes)
    load_before = load_average()
    busiest = busiest_processes()
    started = time.monotonic()
    samples: list[Sample] = []
    cells = Cells()
    commands: list[CommandLine] = []
    failed = False
    logs = Path(tempfile.mkdtemp(prefix="fintask-bench-logs-"))
    with (
        tempfile.TemporaryDirectory(prefix="fintask-bench-") as tmp,
        RedisServer(data_dir=Path(tmp), persistent=False) as server,
        rabbitmq_node(args.rabbitmq),
    ):
        with redis.Redis.from_url(server.url) as client:
            redis_version = str(client.info("server")["redis_version"])
        for repeat in range(args.repeats):
            for scenario in args.scenarios:
                if scenario.run is None:
                    continue
                print(f"[{repeat + 1}/{args.repeats}] {scenario.number}. {scenario.title}",
                      file=sys.stderr, flush=True)  # fmt: skip
                bench = Bench(
                    redis_url=server.url,
                    full=args.full,
                    repeat=repeat,
                    logs=logs,
                    history=tuple(samples),
                    repeats=args.repeats,
                    cells=cells,
                    commands=commands,
                    batch_members=args.batch_members,
                )
                began = time.monotonic()
                try:
                    scenario.run(bench)
                except Exception:
                    failed = True
                    traceback.print_exc()
                took = time.monotonic() - began
                print(f"    ({scenario.key}: {took:.0f} s)", file=sys.stderr, flush=True)
                samples += bench.samples
        redis_info = redis_info_text(server.url)
    mode = "full" if args.full else "quick"
    name = mode if not args.only else f"{mode}-{args.only.replace(',', '-')}"
    name += "-rabbitmq" if args.rabbitmq else ""
    command = "make bench" + (" FULL=1" if args.full else "")
    exact = shlex.join([".venv/bin/python", "-m", "bench", *argv])
    if args.only or args.rabbitmq or args.repeats != default_repeats(args.full):
        command = exact
    info = RunInfo(
        command=command,
        full=args.full,
        repeats=args.repeats,
        redis_version=redis_version,
        load_before=load_before,
        seconds=time.monotonic() - started,
        commit=commit,
        published=args.publish,
        load_after=load_average(),
    )
    directory = results_dir(RESULTS, name, published=args.publish)
    clear(directory)
    text = write_report(args.scenarios, samples, info, directory, cells)
    keep_run_files(
        directory,
        root=PROJECT_ROOT,
        exact=exact,
        commands=commands,
        logs=logs,
        redis_info=redis_info,
        load_before=load_before,
        load_after=info.load_after,
        busiest=busiest,
        changes=changes,
    )
    shutil.rmtree(logs)
    if failed:
        print(f"A scenario failed; the workers' logs are in {directory / 'logs'}", file=sys.stderr)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
