"""The fan-out scenario's peers: which strategies run where, and how their producers start."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.harness import Bench
from bench.scenarios import fanout
from bench.systems.system import ARQ_BIN


def bench(*, full: bool, tmp_path: Path) -> Bench:
    return Bench(redis_url="redis://127.0.0.1:1/0", full=full, repeat=0, logs=tmp_path)


def by_name(name: str) -> fanout.Strategy:
    return next(s for s in fanout.STRATEGIES if s.name == name)


def test_every_peer_has_a_walker_per_user_and_per_page() -> None:
    # Given the peers of the fan-out scenario
    # When their strategies are listed
    walkers = {(s.system.kind, s.per_page) for s in fanout.STRATEGIES if s.system in fanout.PEERS}
    # Then each peer walks per user and per page
    kinds = {system.kind for system in fanout.PEERS}
    assert kinds == {"taskiq", "huey", "arq", "rq"}
    assert walkers == {(kind, per_page) for kind in kinds for per_page in (False, True)}


def test_peers_run_in_full_mode_at_the_smaller_size_only(tmp_path: Path) -> None:
    # Given a quick and a full benchmark
    quick, full = bench(full=False, tmp_path=tmp_path), bench(full=True, tmp_path=tmp_path)
    # When the peers' strategies are chosen
    peers = [s for s in fanout.STRATEGIES if s.system in fanout.PEERS]
    # Then quick mode has none, and full mode runs each at the smaller size
    assert not [s for s in fanout.strategies(quick) if s.system in fanout.PEERS]
    assert all(s in fanout.strategies(full) for s in peers)
    assert {fanout.sizes_of(full, s) for s in peers} == {(fanout.FULL_SIZES[0],)}


def test_arq_producer_runs_in_arqs_own_venv() -> None:
    # Given the arq and taskiq walkers
    arq, taskiq = by_name("arq walker, per page"), by_name("taskiq walker, per user")
    # When their producers' command lines are built
    # Then arq's runs arq's venv's Python, taskiq's this one
    assert arq.command(10) == [
        str(ARQ_BIN / "python"), "-m", "bench.apps.fanout_arq", "walk-pages", "10"
    ]  # fmt: skip
    assert taskiq.command(10)[:3] == [sys.executable, "-m", "bench.apps.fanout_taskiq"]


def test_queue_depth_target_needs_a_smaller_size_of_a_page() -> None:
    # Given the per-user run, whose queue depth is bounded by mark + one page
    # When the smaller size is under a page, or a page or more
    # Then the queue-depth target is judged only from a page on; producer memory always
    assert not fanout.has_target(fanout.FINTASK_RUN, "peak queue depth", smaller=500)
    assert fanout.has_target(fanout.FINTASK_RUN, "peak queue depth", smaller=1_000)
    assert fanout.has_target(fanout.FINTASK_PAGES, "producer peak RSS", smaller=500)
    assert not fanout.has_target(fanout.FINTASK_PAGES, "peak queue depth", smaller=1_000)
    assert not fanout.has_target("arq walker, per user", "producer peak RSS", smaller=1_000)
