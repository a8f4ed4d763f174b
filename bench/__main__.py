"""``python -m bench``: every scenario against one private Redis, repeated, then the report.

``make bench`` runs the quick sizes (minutes on 2 cores); ``make bench FULL=1`` the full ones
(10^6 users, 30 s windows). ``--only`` runs some scenarios, by key. The report (Markdown and
PNG plots) goes to ``bench/results/<mode>/``; the workers' logs are kept (and their directory
printed) when a scenario fails.
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
from pathlib import Path

import redis

from app.local.redis_server import RedisServer
from bench.harness import Bench, Sample
from bench.report import RunInfo, write_report
from bench.scenarios import SCENARIOS, scenarios_named

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full sizes (10^6 users, 30 s)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    keys = ", ".join(s.key for s in SCENARIOS)
    parser.add_argument("--only", default="", help=f"comma-separated scenario keys: {keys}")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        args.scenarios = scenarios_named(args.only)
    except KeyError as error:
        parser.error(str(error.args[0]))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    started = time.monotonic()
    samples: list[Sample] = []
    failed = False
    logs = Path(tempfile.mkdtemp(prefix="fintask-bench-logs-"))
    with (
        tempfile.TemporaryDirectory(prefix="fintask-bench-") as tmp,
        RedisServer(data_dir=Path(tmp), persistent=False) as server,
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
    if failed:
        print(f"A scenario failed; the workers' logs are kept in {logs}", file=sys.stderr)
    else:
        shutil.rmtree(logs)
    mode = "full" if args.full else "quick"
    name = mode if not args.only else f"{mode}-{args.only.replace(',', '-')}"
    command = "make bench" + (" FULL=1" if args.full else "")
    if args.only or args.repeats != 3:
        command = shlex.join([".venv/bin/python", "-m", "bench", *(argv or sys.argv[1:])])
    info = RunInfo(
        command=command,
        full=args.full,
        repeats=args.repeats,
        redis_version=redis_version,
        load_before=load_before,
        seconds=time.monotonic() - started,
    )
    print(write_report(args.scenarios, samples, info, RESULTS / name))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
