"""A throwaway PostgreSQL cluster for tests: initdb, pg_ctl, a free loopback port, then gone.

PostgreSQL refuses to run as root, so under root (CI) the cluster belongs to the ``postgres``
system user that Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from app.local.ports import free_port


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise PostgresUnavailable(
            "initdb not found: run `make install` (apt-get install postgresql)"
        )
    return Path(candidates[-1]).parent


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        """``settings`` are extra server settings (``-c name=value``), such as preloaded
        libraries."""
        self.settings = settings or {}
        self.bin_dir = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="fintask-pg-"))
        self.data_dir = self.root / "data"
        self.port = 0
        self._run_as = "postgres" if os.geteuid() == 0 else None

    def _command(self, *args: str) -> list[str]:
        return ["runuser", "-u", self._run_as, "--", *args] if self._run_as else list(args)

    def start(self) -> PostgresServer:
        if self._run_as:
            user = pwd.getpwnam(self._run_as)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        subprocess.run(
            self._command(
                str(self.bin_dir / "initdb"), "-D", str(self.data_dir),
                "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
            ),
            check=True, capture_output=True,
        )  # fmt: skip
        for _ in range(5):
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            ) + "".join(f" -c {name}={value}" for name, value in self.settings.items())
            started = subprocess.run(
                self._command(
                    str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                    "-l", str(self.root / "server.log"), "-w", "-t", "30", "start",
                ),
                capture_output=True,
            )  # fmt: skip
            if started.returncode == 0 and self._owns_port():
                return self
        log = (self.root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not start on a free port:\n{log}")

    def _owns_port(self) -> bool:
        """The server on our port reports our data directory: it is ours, not a stranger's."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as connection:
            row = connection.execute("SHOW data_directory").fetchone()
        return row is not None and Path(row[0]).resolve() == self.data_dir.resolve()

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop at once: the cluster is deleted next, so its shutdown checkpoint (hundreds of
        test databases' pages, a minute on a loaded machine) would be written for nothing."""
        subprocess.run(
            self._command(
                str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w",
                "stop",
            ),
            capture_output=True,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
