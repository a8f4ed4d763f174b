"""Running the Procfile's processes locally: the environment each one gets, and honcho.

`fintask run` is the local stand-in for a platform: it starts a private Redis when ``REDIS_URL``
is unset, runs the ``release`` step, gives each named process type its own ports, and hands the
same ``REDIS_URL`` and ``DATABASE_URL`` to every child. honcho runs the named process types
(never ``release``, which would be run as a long-lived process) and stops them all together.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import honcho.manager
from honcho.environ import parse_procfile
from honcho.manager import Manager
from honcho.printer import Printer

from app.blob_crypto import new_key_entry
from app.local.ports import free_port
from app.local.redis_server import RedisServer
from app.settings import PROJECT_ROOT, WORKER_PROCESS_TYPES, Settings

PROCFILE = PROJECT_ROOT / "Procfile"

#: Seconds a process has between SIGTERM and SIGKILL, as on Heroku; workers are started with a
#: shorter ``--worker-shutdown-timeout`` so they finish their messages within it.
PLATFORM_GRACE_S = 30

#: The Procfile's one-off step before a release starts (Heroku's convention): the migration.
RELEASE_PROCESS_TYPE = "release"

#: What `fintask run` starts when no process types are named.
DEFAULT_PROCESS_TYPES = ("web", "worker_urgent", "worker", "scheduler")

#: Where local runs keep the ``BLOB_KEYS`` they made, in their var dir.
LOCAL_BLOB_KEYS_FILE = "blob-keys"


def procfile_commands(path: Path = PROCFILE) -> dict[str, str]:
    """The Procfile's process types and their commands, in file order."""
    return dict(parse_procfile(path.read_text()).processes)


def runnable_process_types(path: Path = PROCFILE) -> list[str]:
    """The Procfile's process types that `fintask run` can start, in file order.

    All but ``release``: a one-off step (the migration), which `fintask run` does itself before
    it starts the others; run as a process, its exit would stop them all.
    """
    return [name for name in procfile_commands(path) if name != RELEASE_PROCESS_TYPE]


@contextmanager
def embedded_redis(settings: Settings, environ: dict[str, str]) -> Iterator[None]:
    """Start a private Redis under var/ unless ``REDIS_URL`` is set; give ``environ`` its URL."""
    if settings.redis_url is not None:
        environ["REDIS_URL"] = settings.redis_url
        yield
        return
    with RedisServer(data_dir=settings.var_dir / "redis") as server:
        environ["REDIS_URL"] = server.url
        yield


def shared_environment(
    settings: Settings, environ: Mapping[str, str], process_types: Iterable[str] = ()
) -> dict[str, str]:
    """Variables every child process gets: the same database, var dir, blob keys (made once
    in the var dir when ``BLOB_KEYS`` is unset: ``local_blob_keys``) and its peers' ports.

    Local stand-ins (the ``sinks`` for mail, push and webhooks, the ``sandbox`` provider) get
    free ports, and the URLs that point fintask at them are set unless already given.
    """
    env = dict(environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["DATABASE_URL"] = settings.database_url
    env["FINTASK_VAR_DIR"] = str(settings.var_dir)
    env.setdefault("TZ", "UTC")
    if settings.blob_keys is None:
        env["BLOB_KEYS"] = local_blob_keys(settings.var_dir)
    for process_type in WORKER_PROCESS_TYPES:
        env.setdefault(f"METRICS_PORT_{process_type.upper()}", str(free_port()))
    env.setdefault("METRICS_HOST", "127.0.0.1")
    env.setdefault("HOST", "127.0.0.1")
    env.setdefault("WEB_PORT", str(free_port()))
    if "sinks" in process_types:
        env.setdefault("SMTP_SINK_PORT", str(free_port()))
        env.setdefault("HTTP_SINK_PORT", str(free_port()))
        env.setdefault("SMTP_URL", f"smtp://127.0.0.1:{env['SMTP_SINK_PORT']}")
        env.setdefault("PUSH_URL", f"http://127.0.0.1:{env['HTTP_SINK_PORT']}/push")
    if "sandbox" in process_types:
        env.setdefault("SANDBOX_PORT", str(free_port()))
        env.setdefault("PROVIDER_URL", f"http://127.0.0.1:{env['SANDBOX_PORT']}")
    return env


def local_blob_keys(var_dir: Path) -> str:
    """The ``BLOB_KEYS`` of local runs from ``var_dir``: a key made by the first, kept there.

    Kept rather than made per run, as the database under ``var_dir`` is: the raw blobs one
    run encrypted must decrypt in the next. Readable by its owner only.
    """
    path = var_dir / LOCAL_BLOB_KEYS_FILE
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(new_key_entry("local") + "\n")
    return path.read_text().strip()


def run_processes(process_types: list[str], env: Mapping[str, str]) -> int:
    """Run the named process types under honcho until one exits or a signal stops them all.

    Each must be one of ``runnable_process_types()``: check before starting anything else.
    """
    commands = procfile_commands()
    honcho.manager.KILL_WAIT = PLATFORM_GRACE_S  # honcho's default is 5 s
    manager = Manager(Printer(sys.stdout, colour=sys.stdout.isatty()))
    for name in process_types:
        process_env = dict(env, PORT=env["WEB_PORT"]) if name == "web" else dict(env)
        # exec: the shell honcho starts becomes the process, so signals and exit codes are its.
        manager.add_process(name, f"exec {commands[name]}", env=process_env)
    manager.loop()
    return int(manager.returncode or 0)
