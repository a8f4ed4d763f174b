"""What a running ``fintask run`` started and where, for the person and the shells beside it.

``fintask run`` picks free ports for its private Redis, gunicorn and the workers' metrics, so
nobody can guess them: it prints them when it starts and keeps them in ``<var dir>/run.json``
while it runs, with its pid. With ``REDIS_URL`` unset, ``app.settings`` reads that file, so
``fintask queues`` or ``fintask ping`` in a second shell reach the same Redis with no setup.
The file is removed when the run stops; one left by a killed run names a dead pid, and
``app.settings.running_stack`` ignores it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.settings import RUN_FILE_NAME, WORKER_PROCESS_TYPES, hide_credentials


@dataclass(frozen=True)
class RunFile:
    """One ``fintask run``: its pid and the URL of each server it started."""

    pid: int
    redis_url: str
    web_url: str | None = None
    #: The Prometheus endpoint of each worker process type it runs.
    metrics_urls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, process_types: Iterable[str], env: Mapping[str, str]) -> RunFile:
        """This process's run of ``process_types``, with the ports ``env`` gives them.

        ``env`` is the children's environment (``shared_environment``, with ``REDIS_URL``).
        """
        names = set(process_types)
        web_url = f"http://{env['HOST']}:{env['WEB_PORT']}" if "web" in names else None
        metrics_urls = {
            name: f"http://{env['METRICS_HOST']}:{env[f'METRICS_PORT_{name.upper()}']}/metrics"
            for name in WORKER_PROCESS_TYPES
            if name in names
        }
        return cls(os.getpid(), env["REDIS_URL"], web_url, metrics_urls)

    def lines(self) -> list[str]:
        """The URLs as ``fintask run`` prints them when it starts (Redis's credentials hidden)."""
        rows = [("redis", hide_credentials(self.redis_url))]
        if self.web_url is not None:
            rows.append(("web", self.web_url))
        rows += [(f"{name} metrics", url) for name, url in self.metrics_urls.items()]
        width = max(len(label) for label, _ in rows)
        return [f"{label:<{width}}  {url}" for label, url in rows]


@contextmanager
def published(run: RunFile, var_dir: Path) -> Iterator[Path]:
    """Keep ``run`` in ``var_dir``'s run file while the block runs; remove it afterwards.

    Written whole and then renamed, so a reader never meets half a file; readable by its owner
    only, as it carries ``REDIS_URL``, password included when one was given.
    """
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / RUN_FILE_NAME
    partial = path.with_name(f".{RUN_FILE_NAME}.{run.pid}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(asdict(run), file, indent=2)
    partial.replace(path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
