"""Publishing a benchmark run: only from a clean commit unless told, with what it ran beside it.

Every git test runs in a repository of its own under ``tmp_path``, never the project's.
"""

from __future__ import annotations

import os
import py_compile
import subprocess
import types
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench.harness import Bench, CommandLine
from bench.publish import (
    DirtyTree,
    ProbeRun,
    bytecode_text,
    changes_diff,
    commands_text,
    commit_of,
    copy_logs,
    results_dir,
    tree_changes,
)


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repository with a tracked file and a tracked published report."""
    root = tmp_path / "repo"
    (root / "bench" / "results" / "full").mkdir(parents=True)
    (root / "bench" / "harness.py").write_text("x = 1\n")
    (root / "bench" / "results" / "full" / "README.md").write_text("old report\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    return root


def test_a_committed_tree_is_clean_and_names_its_commit(repo: Path) -> None:
    assert tree_changes(repo) == []
    assert commit_of(repo, []) == git(repo, "rev-parse", "HEAD").strip()


def test_tracked_and_untracked_changes_outside_results_make_it_dirty(repo: Path) -> None:
    (repo / "bench" / "harness.py").write_text("x = 2\n")
    (repo / "bench" / "new_module.py").write_text("")

    changes = tree_changes(repo)

    assert [line[3:] for line in changes] == ["bench/harness.py", "bench/new_module.py"]
    assert commit_of(repo, changes).endswith("+changes")


def test_a_dirty_publish_keeps_every_change_untracked_files_included(repo: Path) -> None:
    (repo / "bench" / "harness.py").write_text("x = 2\n")
    (repo / "bench" / "new_module.py").write_text("y = 3\n")

    diff = changes_diff(repo, tree_changes(repo))

    assert "-x = 1" in diff and "+x = 2" in diff
    assert "+++ b/bench/new_module.py" in diff and "+y = 3" in diff


def test_changes_under_bench_results_do_not(repo: Path) -> None:
    (repo / "bench" / "results" / "full" / "README.md").write_text("new report\n")
    (repo / "bench" / "results" / "quick").mkdir()
    (repo / "bench" / "results" / "quick" / "samples.json").write_text("[]")

    assert tree_changes(repo) == []


def test_publish_refuses_a_dirty_tree_before_starting_anything(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an untracked file in the project
    (repo / "notes.txt").write_text("uncommitted")
    monkeypatch.setattr(bench_main, "PROJECT_ROOT", repo)

    def no_redis(**kwargs: object) -> None:
        raise AssertionError("a refused publish must not start Redis")

    monkeypatch.setattr(bench_main, "RedisServer", no_redis)

    # When publishing
    status = bench_main.main(["--publish", "--only", "throughput"])

    # Then it refuses, naming the change and the way out
    assert status == 2
    err = capsys.readouterr().err
    assert "Refusing to publish" in err and "?? notes.txt" in err and "--allow-dirty" in err


def test_allow_dirty_means_nothing_without_publish(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_main.parse_args(["--allow-dirty"])
    assert "only means something with --publish" in capsys.readouterr().err


def test_quick_mode_repeats_twice_full_mode_three_times_unless_told() -> None:
    assert bench_main.parse_args([]).repeats == 2
    assert bench_main.parse_args(["--full"]).repeats == 3
    assert bench_main.parse_args(["--full", "--repeats", "1"]).repeats == 1


def test_a_scratch_results_directory_ignores_itself(repo: Path) -> None:
    directory = results_dir(repo / "bench" / "results", "quick", published=False)
    (directory / "README.md").write_text("scratch")

    assert directory.name == "local-quick"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert results_dir(repo / "bench" / "results", "full", published=True).name == "full"


def test_commands_are_kept_once_with_what_the_benchmark_changed_in_their_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    monkeypatch.setenv("SENTRY_DSN", "secret")
    bench = Bench("redis://unused", False, 0, tmp_path)
    env = {"HOME": "/home/me", "BENCH_SYSTEM": "fintask"}  # SENTRY_DSN removed
    argv = ["/venv/bin/dramatiq", "bench.apps.noop_dramatiq", "--processes", "2"]
    for _ in range(3):
        bench.note_command("throughput", "fintask", argv, setting="2 x 8", env=env)

    unset = tuple(sorted(set(os.environ) - set(env)))
    changed = (("BENCH_SYSTEM", "fintask"),)
    assert bench.commands == [
        CommandLine("throughput", "fintask", "2 x 8", tuple(argv), changed, unset)
    ]
    text = commands_text("python -m bench", bench.commands)
    assert "# throughput | fintask [2 x 8]" in text
    assert "-uSENTRY_DSN" in text and "BENCH_SYSTEM=fintask /venv/bin/dramatiq" in text
    assert "secret" not in text


def test_large_logs_are_gzipped_small_ones_copied(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "small.log").write_text("started\n")
    (logs / "big.log").write_bytes(b"x" * (2**20 + 1))

    copy_logs(logs, tmp_path / "kept")

    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["big.log.gz", "small.log"]


def test_the_machine_text_says_whether_new_processes_find_their_imports_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two source modules, one compiled, and a shell that writes no bytecode
    modules = []
    for name in ("compiled", "plain"):
        path = tmp_path / f"{name}.py"
        path.write_text("x = 1\n")
        module = types.ModuleType(name)
        module.__file__ = str(path)
        modules.append(module)
    py_compile.compile(str(tmp_path / "compiled.py"))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")

    # Then the line names the setting and counts the compiled one only
    text = bytecode_text([*modules, types.ModuleType("builtin_like")])
    assert text == (
        "Bytecode: PYTHONDONTWRITEBYTECODE 1; 1 of the 2 source modules the harness imported "
        "have a compiled .pyc"
    )


def test_a_probe_refuses_to_publish_from_a_dirty_tree_unless_told(repo: Path) -> None:
    (repo / "bench" / "harness.py").write_text("x = 2\n")

    with pytest.raises(DirtyTree, match="--allow-dirty"):
        ProbeRun.begin("bench.capacity", [], root=repo, publish=True, allow_dirty=False)
    run = ProbeRun.begin("bench.capacity", [], root=repo, publish=True, allow_dirty=True)
    assert run.commit.endswith("+changes")


def test_a_probe_names_the_commit_it_started_from_and_keeps_its_files(repo: Path) -> None:
    run = ProbeRun.begin(
        "bench.capacity", ["--publish"], root=repo, publish=True, allow_dirty=False
    )
    started_at = git(repo, "rev-parse", "HEAD").strip()
    (run.logs / "worker.log").write_text("ready\n")
    git(
        repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "meanwhile",
    )

    directory = run.finish(
        "capacity",
        report="# report\n",
        files={"capacity.json": "{}\n"},
        commands=[],
        redis_info="# Server\n",
        load_after="0.1 / 0.1 / 0.1",
    )

    assert run.commit == started_at
    assert run.exact == ".venv/bin/python -m bench.capacity --publish"
    assert directory.parent == repo / "bench" / "results"
    assert directory.name.startswith("capacity-20")
    assert (directory / "README.md").read_text() == "# report\n"
    assert (directory / "capacity.json").read_text() == "{}\n"
    assert (directory / "logs" / "worker.log").read_text() == "ready\n"
    assert {"commands.txt", "freeze.txt", "machine.txt", "redis-info.txt"} <= {
        path.name for path in directory.iterdir()
    }
    assert not run.logs.exists()
