"""What keeps a run reproducible: the commit it measured, and the files beside its report.

``python -m bench --publish`` writes ``bench/results/<name>/`` and refuses to start from a work
tree with changes (outside ``bench/results/``, where published runs live) unless told
``--allow-dirty``; a run without it writes ``bench/results/local-<name>/``, which ignores
itself, so an unpublished report is never committed by accident. Either way the directory gets
the same files beside ``README.md``:

- ``samples.json``: every sample, with the run's settings; ``histograms.json``: every latency
  cell, encoded (``bench.histograms.load`` reads it back);
- ``commands.txt``: every command line the run started, with the environment it set;
- ``logs/``: the workers' output (gzipped above 1 MiB);
- ``freeze.txt`` (the installed packages), ``redis-info.txt`` (``INFO everything`` of the
  private server at the end), ``machine.txt`` (CPU, memory, kernel, Python, load before and
  after, the busiest processes at the start, whether new processes find their imports
  compiled); with ``--allow-dirty``, ``changes.diff``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import psutil
import redis

from app.blob_crypto import new_key_entry
from app.settings import PROJECT_ROOT
from bench.harness import CommandLine

#: Where published runs live: changes there do not make a tree dirty.
RESULTS_PREFIX = "bench/results/"
#: Logs above this size are gzipped.
LOG_GZIP_BYTES = 2**20


def git(root: Path, *args: str) -> str:
    """A git command's output in ``root`` (empty when git fails)."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


def tree_changes(root: Path) -> list[str]:
    """``git status --porcelain`` lines of ``root``, tracked or untracked, outside
    ``bench/results/``: what a published run's commit would not contain."""
    lines = git(root, "status", "--porcelain", "--untracked-files=all").splitlines()
    return [line for line in lines if not _path_of(line).startswith(RESULTS_PREFIX)]


def _path_of(line: str) -> str:
    """The path of a porcelain status line (``XY path``, ``XY old -> new``)."""
    return line[3:].split(" -> ")[-1].strip('"')


def commit_of(root: Path, changes: Sequence[str]) -> str:
    """The commit measured, with ``+changes`` when the work tree differs from it."""
    head = git(root, "rev-parse", "HEAD").strip() or "unknown"
    return head + ("+changes" if changes else "")


def results_dir(results: Path, name: str, *, published: bool) -> Path:
    """``results/<name>`` for a published run, else ``results/local-<name>``, which ignores
    itself (a ``.gitignore`` of ``*`` inside it)."""
    if published:
        return results / name
    directory = results / f"local-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".gitignore").write_text("# A scratch run of python -m bench.\n*\n")
    return directory


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def busiest_processes(seconds: float = 1.0, count: int = 5) -> str:
    """The ``count`` processes using the most CPU over ``seconds`` (name and %, no command
    line), so a reader sees what else the machine was doing."""
    processes = list(psutil.process_iter(["name"]))
    for process in processes:
        with suppress(psutil.Error):
            process.cpu_percent(None)
    time.sleep(seconds)
    usage = []
    for process in processes:
        with suppress(psutil.Error):
            usage.append((process.cpu_percent(None), process.info["name"] or "?"))
    top = sorted(usage, reverse=True)[:count]
    return ", ".join(f"{name} {percent:.0f} %" for percent, name in top)


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the architecture where it has none)."""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_text(*, load_before: str, load_after: str, busiest: str) -> str:
    """``machine.txt``: what the numbers were measured on, and how busy it was."""
    model = cpu_model()
    memory = psutil.virtual_memory()
    return "\n".join(
        [
            f"CPU: {model}",
            f"Logical CPUs: {os.cpu_count()}; usable by the benchmark (nproc): "
            f"{len(os.sched_getaffinity(0))}",
            f"Memory: {memory.total / 2**30:.1f} GiB, {memory.available / 2**30:.1f} GiB "
            "available at the end",
            f"Kernel: {' '.join(platform.uname())}",
            f"Python: {sys.version.splitlines()[0]} ({sys.executable})",
            f"Load average (1 / 5 / 15 min) before the run: {load_before}",
            f"Load average (1 / 5 / 15 min) after the run: {load_after}",
            f"Busiest processes at the start (CPU over 1 s): {busiest}",
            bytecode_text(),
            "",
        ]
    )


def bytecode_text(modules: Iterable[ModuleType] | None = None) -> str:
    """Whether a process the run starts compiles its imports first, which its start-up time
    includes: with ``PYTHONDONTWRITEBYTECODE`` set no ``.pyc`` is ever written, so a virtualenv
    installed without compiled bytecode recompiles every import in every new process. Counted
    over ``modules`` (by default, every source module this process imported)."""
    chosen = list(sys.modules.values()) if modules is None else modules
    sources = [path for m in chosen if (path := getattr(m, "__file__", None) or "").endswith(".py")]
    cached = sum(Path(importlib.util.cache_from_source(path)).exists() for path in sources)
    flag = os.environ.get("PYTHONDONTWRITEBYTECODE") or "unset"
    return (
        f"Bytecode: PYTHONDONTWRITEBYTECODE {flag}; {cached:,} of the {len(sources):,} "
        "source modules the harness imported have a compiled .pyc"
    )


def freeze_text(root: Path) -> str:
    """``freeze.txt``: the project's installed packages, and each peer project's under
    ``bench/peers/`` (arq has its own virtualenv)."""
    sections = []
    for venv in [root / ".venv", *sorted((root / "bench" / "peers").glob("*/.venv"))]:
        python = venv / "bin" / "python"
        uv = root / ".tools" / "bin" / "uv"
        for command in (
            [str(uv), "pip", "freeze", "--python", str(python)],
            [str(python), "-m", "pip", "freeze"],
        ):
            try:
                done = subprocess.run(command, cwd=root, capture_output=True, text=True)
            except OSError:  # no such program (a checkout before `make install`)
                continue
            if done.returncode == 0 and done.stdout.strip():
                sections.append(f"# {shlex.join(command)}\n{done.stdout}")
                break
        else:
            sections.append(f"# {python}: neither uv nor pip could list its packages\n")
    return "\n".join(sections)


def redis_info_text(redis_url: str) -> str:
    """``INFO everything`` of the benchmark's Redis, as the server wrote it."""
    with redis.Redis.from_url(redis_url) as client:
        connection = client.connection_pool.get_connection()
        try:
            connection.send_command("INFO", "everything")
            raw = connection.read_response()
        finally:
            client.connection_pool.release(connection)
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def commands_text(command: str, commands: Sequence[CommandLine]) -> str:
    """``commands.txt``: the benchmark's own command line (the producers run inside it), then
    every process it started, as a shell line that starts it again (``env`` sets and unsets
    what the benchmark did; scratch paths and ports were the first start's)."""
    lines = [
        "# The benchmark; every producer runs inside it (bench.systems.Producer).",
        command,
        "",
    ]
    for line in commands:
        setting = f" [{line.setting}]" if line.setting else ""
        env = [*(f"-u{name}" for name in line.unset), *(f"{k}={v}" for k, v in line.env)]
        prefix = ["env", *env] if env else []
        lines += [f"# {line.scenario} | {line.system}{setting}", shlex.join([*prefix, *line.argv])]
    return "\n".join(lines) + "\n"


def copy_logs(logs: Path, target: Path) -> None:
    """The workers' logs into ``target``, each gzipped when above 1 MiB."""
    target.mkdir(parents=True, exist_ok=True)
    for log in sorted(logs.iterdir()):
        if log.stat().st_size > LOG_GZIP_BYTES:
            with log.open("rb") as source, gzip.open(target / f"{log.name}.gz", "wb") as out:
                shutil.copyfileobj(source, out)
        else:
            shutil.copy2(log, target / log.name)


def clear(directory: Path) -> None:
    """Remove what an earlier run wrote into ``directory``, so no stale file survives."""
    if not directory.exists():
        return
    for path in directory.iterdir():
        if path.name == ".gitignore":
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def keep_run_files(
    directory: Path,
    *,
    root: Path,
    exact: str,
    commands: Sequence[CommandLine],
    logs: Path,
    redis_info: str,
    load_before: str,
    load_after: str,
    busiest: str,
    changes: Sequence[str],
) -> None:
    """:func:`keep_beside` for a run of the command line ``exact``, started in ``root``."""
    keep_beside(
        directory,
        root=root,
        command=f"cd {shlex.quote(str(root))} && {exact}",
        commands=commands,
        logs=logs,
        redis_info=redis_info,
        machine=machine_text(load_before=load_before, load_after=load_after, busiest=busiest),
        changes=changes,
    )


def keep_beside(
    directory: Path,
    *,
    root: Path,
    command: str,
    commands: Sequence[CommandLine],
    logs: Path,
    redis_info: str,
    machine: str,
    changes: Sequence[str],
) -> None:
    """Write every file a reader needs to check or repeat the run beside its report."""
    (directory / "commands.txt").write_text(commands_text(command, commands))
    copy_logs(logs, directory / "logs")
    (directory / "freeze.txt").write_text(freeze_text(root))
    (directory / "redis-info.txt").write_text(redis_info)
    (directory / "machine.txt").write_text(machine)
    if changes:
        (directory / "changes.diff").write_text(changes_diff(root, changes))


def changes_diff(root: Path, changes: Sequence[str]) -> str:
    """What a dirty tree differs by: its status, the diff of tracked files against HEAD, and
    every untracked file (outside ``bench/results/``) as a diff from nothing."""
    status = "".join(f"# {line}\n" for line in changes)
    untracked = [_path_of(line) for line in changes if line.startswith("??")]
    new = [
        # ``git diff --no-index`` exits 1 when the files differ, which they always do here.
        subprocess.run(
            ["git", "diff", "--no-index", "--", "/dev/null", path],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout
        for path in untracked
    ]
    return status + git(root, "diff", "HEAD") + "".join(new)


class DirtyTree(Exception):
    """A run asked to publish from a work tree with changes, without ``--allow-dirty``."""


@dataclass
class ProbeRun:
    """A probe's run outside ``python -m bench`` (``bench.capacity``, ``bench.profile``,
    ``bench.weekly_report``): the tree and the machine as it started, and, at its end, its
    report in ``results/`` with the files every published run keeps beside it."""

    module: str
    argv: Sequence[str]
    published: bool
    root: Path
    changes: Sequence[str]
    #: Read at the start: a commit made while the run goes on is not what it measured.
    commit: str
    load_before: str
    busiest: str
    logs: Path
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def begin(
        cls, module: str, argv: Sequence[str], *, root: Path, publish: bool, allow_dirty: bool
    ) -> ProbeRun:
        """Check the tree (raise ``DirtyTree``) and note the machine before the probe runs."""
        changes = tree_changes(root)
        if publish and changes and not allow_dirty:
            raise DirtyTree(
                "Refusing to publish from a changed work tree (--allow-dirty to publish anyway)"
            )
        return cls(
            module=module,
            argv=list(argv),
            published=publish,
            root=root,
            changes=changes,
            commit=commit_of(root, changes),
            load_before=load_average(),
            busiest=busiest_processes(),
            logs=Path(tempfile.mkdtemp(prefix=f"fintask-{module}-logs-")),
        )

    @property
    def exact(self) -> str:
        """The command line that repeats the run, as its report quotes it."""
        return shlex.join([".venv/bin/python", "-m", self.module, *self.argv])

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def finish(
        self,
        name: str,
        *,
        suffix: str = "",
        report: str,
        files: Mapping[str, str],
        moved: Iterable[Path] = (),
        commands: Sequence[CommandLine],
        redis_info: str,
        load_after: str,
    ) -> Path:
        """Write ``results/<name>-<date><suffix>`` (``local-...`` unpublished): the report,
        ``files`` (name: text), the ``moved`` paths, and the files :func:`keep_run_files`
        keeps; drop the logs, and print the report."""
        results = self.root / RESULTS_PREFIX
        dated = f"{name}-{time.strftime('%Y-%m-%d')}{suffix}"
        directory = results_dir(results, dated, published=self.published)
        directory.mkdir(parents=True, exist_ok=True)
        clear(directory)
        for path in moved:
            shutil.move(path, directory / path.name)
        (directory / "README.md").write_text(report)
        for file_name, text in files.items():
            (directory / file_name).write_text(text)
        keep_run_files(
            directory,
            root=self.root,
            exact=self.exact,
            commands=commands,
            logs=self.logs,
            redis_info=redis_info,
            load_before=self.load_before,
            load_after=load_after,
            busiest=self.busiest,
            changes=self.changes,
        )
        shutil.rmtree(self.logs)
        print(report)
        return directory


def add_publish_options(parser: argparse.ArgumentParser, name: str) -> None:
    """A probe's ``--publish`` (to ``bench/results/<name>-<date>/``) and ``--allow-dirty``."""
    parser.add_argument(
        "--publish", action="store_true", help=f"write bench/results/{name}-<date>/"
    )
    parser.add_argument("--allow-dirty", action="store_true", help="publish from a changed tree")


def start_probe(
    module: str, argv: Sequence[str] | None, options: argparse.Namespace
) -> ProbeRun | None:
    """The probe's run from its command line, or None once it said why it may not publish.

    Its workers need a blob key and keep no blob: one set here, in the probe's own environment,
    is not a change ``commands.txt`` records, so no key-shaped string is published.
    """
    try:
        run = ProbeRun.begin(
            module,
            sys.argv[1:] if argv is None else argv,
            root=PROJECT_ROOT,
            publish=options.publish,
            allow_dirty=options.allow_dirty,
        )
    except DirtyTree as refused:
        print(refused)
        return None
    os.environ.setdefault("BLOB_KEYS", new_key_entry("bench"))
    return run
