"""``python -m bench.weekly_report``: the weekly report's e-mails per second through the real
processes, with each worker thread's SMTP connection kept and with a new one per e-mail.

The weekly report is fintask's real fan-out: a chunked run (``pipelines.reports``) that writes
one notification per active user, each an ``emails`` message whose actor sends one mail. This
probe runs it as production does: a private ``redis-server``, a private PostgreSQL seeded with
``--users`` users (``app.local.seed``: one in ten inactive), the Procfile's ``worker`` line word
for word (2 processes x 8 threads, prefetch 16), and the Procfile's ``sinks`` as the mail relay
(aiosmtpd, a process of its own, writing each mail to a file). Each case starts the worker anew,
waits until its processes have registered, starts the report for a week of its own (``fintask
reports send --week``) and waits until every active user's mail has reached the sink.

The cases differ in one setting, ``SMTP_MAX_SENDS``: its default (a thread's connection kept for
100 mails) and 1, a connection per e-mail, as fintask sent before issue 17. Repetitions
interleave them. Measured per case: e-mails/s from the run's start (the start command has
returned) to the last mail's arrival;
the worker's CPU (user + system of its processes) and the sink's, per e-mail; the SMTP
connections the sink saw, as distinct client ports (a lower bound: the kernel hands a closed
connection's port out again); e-mails that arrived more than once.
``--publish`` writes ``bench/results/weekly-report-<date>/`` (the report, ``weekly-report.json``
and the files every published run keeps, :mod:`bench.publish`); without it,
``bench/results/local-weekly-report-<date>/``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select

from app.db.migrate import upgrade
from app.db.models import User
from app.local.ports import free_port, wait_for_port
from app.local.redis_server import RedisServer
from app.local.seed import seed
from app.local.supervisor import procfile_commands
from app.settings import SMTP_MAX_SENDS
from bench.harness import Bench, cpu_seconds
from bench.publish import add_publish_options, load_average, redis_info_text, start_probe
from tests.support.postgres import PostgresServer
from tests.support.processes import VENV_BIN, running, wait_until
from tests.support.procfile import booted_processes, procfile_command, procfile_env

SCENARIO = "weekly-report"
#: The cases, by name: the value of ``SMTP_MAX_SENDS`` each runs with.
CASES = {
    f"connection kept ({SMTP_MAX_SENDS} mails, the default)": SMTP_MAX_SENDS,
    "a connection per e-mail (SMTP_MAX_SENDS=1)": 1,
}
#: Longest a case may take: at 40 e-mails/s, 20,000 users take about 8 minutes.
CASE_TIMEOUT_S = 1_800


@dataclass(frozen=True)
class Measured:
    """One case's run."""

    case: str
    repetition: int
    emails: int
    seconds: float
    worker_cpu_s: float
    sink_cpu_s: float
    connections: int
    repeated: int

    @property
    def emails_per_s(self) -> float:
        return self.emails / self.seconds


class Mailbox:
    """The sink's file, read on from where the last read stopped (it only grows)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.records: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """Every record so far; a line the sink is still writing waits for the next read."""
        if self.path.exists():
            with self.path.open("rb") as file:
                file.seek(self._offset)
                complete, _, _ = file.read().rpartition(b"\n")
            if complete:
                self._offset += len(complete) + 1
                self.records += [json.loads(line) for line in complete.split(b"\n") if line]
        return self.records


def sinks_command(*, smtp_port: int, http_port: int) -> list[str]:
    """The Procfile's ``sinks`` line, its ports filled in as a platform's environment would."""
    line = string.Template(procfile_commands()["sinks"])
    return shlex.split(line.substitute(SMTP_SINK_PORT=smtp_port, HTTP_SINK_PORT=http_port))


def run_case(
    bench: Bench,
    *,
    case: str,
    repetition: int,
    week: str,
    env: Mapping[str, str],
    active: int,
    mailbox: Mailbox,
    sink_pid: int,
) -> Measured:
    """Start the Procfile's worker with the case's setting, send ``week``'s report, measure."""
    worker = procfile_command("worker")
    processes = int(worker[worker.index("--processes") + 1])
    worker_env = {**env, "SMTP_MAX_SENDS": str(CASES[case])}
    log = bench.log_path(SCENARIO, f"{case}-{repetition}")
    with running(worker, worker_env, log) as started, bench.client() as client:
        bench.note_command(SCENARIO, "fintask", worker, setting=case, env=worker_env)
        wait_until(
            lambda: booted_processes(client, started) == processes,
            timeout_s=120,
            what="the worker's processes to register",
        )
        pids = [started.pid]
        cpu_before, sink_before = cpu_seconds(pids), cpu_seconds([sink_pid])
        subprocess.run(
            [str(VENV_BIN / "fintask"), "reports", "send", "--week", week],
            env=env,
            check=True,
            capture_output=True,
        )
        started_at = time.time()

        def this_week() -> list[dict[str, Any]]:
            return [mail for mail in mailbox.read() if week in mail["subject"]]

        wait_until(
            lambda: len(this_week()) >= active,
            timeout_s=CASE_TIMEOUT_S,
            what=f"{active:,} e-mails of {week}",
        )
        mails = this_week()
        worker_cpu = cpu_seconds(pids) - cpu_before
        sink_cpu = cpu_seconds([sink_pid]) - sink_before
    received = Counter(str(mail["to"]) for mail in mails)
    last = max(mail["received_at"] for mail in mails)
    measured = Measured(
        case=case,
        repetition=repetition,
        emails=len(received),
        seconds=last - started_at,
        worker_cpu_s=worker_cpu,
        sink_cpu_s=sink_cpu,
        connections=len({mail["client_port"] for mail in mails}),
        repeated=sum(count - 1 for count in received.values()),
    )
    print(
        f"    {case}, repetition {repetition + 1}: {measured.emails_per_s:,.1f} e-mails/s, "
        f"{measured.connections:,} connections",
        file=sys.stderr,
    )
    return measured


@contextmanager
def world(users: int, logs: Path) -> Iterator[tuple[Bench, dict[str, str], int, Mailbox, int]]:
    """Redis, PostgreSQL seeded with ``users``, the sink: the bench, the processes' environment,
    the active users, the mailbox and the sink's pid."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fintask-report-")))
        server = stack.enter_context(RedisServer(data_dir=tmp / "redis", persistent=False))
        postgres = PostgresServer().start()
        stack.callback(postgres.stop)
        database_url = postgres.create_database("fintask")
        upgrade(database_url)
        engine = create_engine(database_url)
        seed(engine, users=users)
        with engine.connect() as connection:
            active = connection.scalar(
                select(func.count()).select_from(User).where(User.is_active.is_(True))
            )
        engine.dispose()
        smtp_port = free_port()
        env = procfile_env(
            var_dir=tmp / "var",
            REDIS_URL=server.url,
            DATABASE_URL=database_url,
            SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        )
        bench = Bench(redis_url=server.url, full=False, repeat=0, logs=logs)
        sinks = sinks_command(smtp_port=smtp_port, http_port=free_port())
        sink = stack.enter_context(running(sinks, env, bench.log_path(SCENARIO, "sinks")))
        bench.note_command(SCENARIO, "sinks", sinks, env=env)
        wait_for_port(smtp_port, timeout_s=60)
        yield bench, env, int(active or 0), Mailbox(tmp / "var" / "sinks" / "mail.jsonl"), sink.pid


def render(runs: list[Measured], header: list[str]) -> str:
    """The report: per case, the median of its repetitions (the range beside it)."""
    lines = [
        *header,
        "",
        "| case | e-mails | e-mails/s | worker CPU per e-mail (ms) | sink CPU per e-mail (ms) "
        "| SMTP connections, at least | e-mails received twice |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        mine = [run for run in runs if run.case == case]
        rates = [run.emails_per_s for run in mine]
        spread = f" ({min(rates):,.1f}-{max(rates):,.1f})" if len(mine) > 1 else ""
        lines.append(
            f"| {case} | {mine[0].emails:,} | {statistics.median(rates):,.1f}{spread} "
            f"| {_median_ms(mine, 'worker_cpu_s'):.2f} | {_median_ms(mine, 'sink_cpu_s'):.2f} "
            f"| {statistics.median(run.connections for run in mine):,.0f} "
            f"| {max(run.repeated for run in mine)} |"
        )
    kept, fresh = (
        statistics.median(run.emails_per_s for run in runs if run.case == case) for case in CASES
    )
    lines += ["", f"Kept connections send {kept / fresh:.2f}x the e-mails per second."]
    return "\n".join(lines) + "\n"


def _median_ms(runs: list[Measured], field: str) -> float:
    return statistics.median(getattr(run, field) * 1e3 / run.emails for run in runs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.weekly_report", description=__doc__)
    parser.add_argument("--users", type=int, default=10_000, help="users seeded (default 10,000)")
    parser.add_argument("--repeats", type=int, default=2, help="repetitions of each case")
    add_publish_options(parser, "weekly-report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = start_probe("bench.weekly_report", argv, args)
    if run is None:
        return 2
    runs: list[Measured] = []
    with world(args.users, run.logs) as (bench, env, active, mailbox, sink_pid):
        for repetition in range(args.repeats):
            # Interleaved, each case first in every other repetition.
            for case in list(CASES)[:: -1 if repetition % 2 else 1]:
                runs.append(
                    run_case(
                        bench,
                        case=case,
                        repetition=repetition,
                        week=f"2025-W{len(runs) + 1:02d}",
                        env=env,
                        active=active,
                        mailbox=mailbox,
                        sink_pid=sink_pid,
                    )
                )
        redis_info = redis_info_text(bench.redis_url)
    load_after = load_average()
    header = [
        f"# The weekly report's e-mails per second, {time.strftime('%Y-%m-%d')}",
        "",
        f"`{run.exact}`, commit `{run.commit}`; {args.users:,} users, {active:,} active; "
        f"{args.repeats} repetitions per case, interleaved; load average {run.load_before} "
        f"before and {load_after} after ({run.elapsed_s():.0f} s). What each column counts: "
        "`bench/weekly_report.py`'s docstring.",
    ]
    text = render(runs, header)
    run.finish(
        SCENARIO,
        report=text,
        files={"weekly-report.json": json.dumps([asdict(r) for r in runs], indent=1) + "\n"},
        commands=bench.commands,
        redis_info=redis_info,
        load_after=load_after,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
