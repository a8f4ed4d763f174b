"""The no-op and real-work jobs (``bench.work``), for RQ.

Run by ``rq worker-pool``; RQ imports this module where a job runs: in the worker
(``SimpleWorker``), or in each work horse it forks (``Worker``), where a run counts for the
worker that forked it (``BENCH_RQ_FORK``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bench.work import Blocking

RQ_FORK_VARIABLE = "BENCH_RQ_FORK"  # bench.systems.RQ_FORK_VARIABLE: not imported in a horse
work = Blocking(os.getppid if os.environ.get(RQ_FORK_VARIABLE) else os.getpid)


def noop(sent_at: float, payload: Sequence[str] = ()) -> None:
    work.noop(sent_at, payload)


def io(sent_at: float, payload: Sequence[str], n: int) -> None:
    work.io(sent_at, payload, n)


def cpu(sent_at: float, payload: Sequence[str], n: int) -> None:
    work.cpu(sent_at, payload, n)
