"""Every chunked run fintask declares, by name: what resume and the CLI look runs up in."""

from __future__ import annotations

from actors.reports import weekly_report
from actors.sync import account_sync
from chunking import ChunkedRun

CHUNKED_RUNS: dict[str, ChunkedRun] = {run.name: run for run in (weekly_report, account_sync)}
