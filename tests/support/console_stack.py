"""The console's real stack for the browser tests: the Procfile's ``web``, ``worker`` and
``scheduler`` processes on the test session's redis-server and a migrated, seeded SQLite.

Started once for the browser tests (it takes a while on a loaded 2-core machine: gunicorn's
workers import the app, the worker's two Dramatiq processes boot) and stopped by pid. It has a
Redis database of its own on the session's server, so the per-test flush of database 0
(``tests/conftest.py`` ``redis_url``) never empties it under a running page, and it flushes
that database when it stops: the server is the session's, the data ours.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from dramatiq import Message
from sqlalchemy.orm import Session

from app.control import tokens
from app.control.workers import list_workers
from app.control_state import read_version
from app.db.migrate import upgrade
from app.db.session import create_db_engine
from app.local.ports import free_port
from app.local.seed import seed
from app.local.supervisor import procfile_commands
from app.middleware.guardrails import SCHEMA_VERSION
from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import running, wait_until
from tests.support.procfile import booted_processes, procfile_command, procfile_env

#: The Redis database the stack uses on the session's server (the flushed fixtures use 0).
REDIS_DB = 7
#: Users (and their accounts) seeded: enough for lists with rows, few enough to seed at once.
SEED_USERS = 20
#: How long the processes may take to answer: gunicorn listens before its workers have
#: imported the app, and a loaded 2-core machine takes tens of seconds (as in test_web_process).
BOOT_S = 120
#: The Procfile's worker line runs this many Dramatiq processes.
WORKER_PROCESSES = 2
#: What the scheduler logs once it runs its schedule.
SCHEDULER_RUNNING = "waking at each minute"


@dataclass(frozen=True)
class ConsoleStack:
    """Where the stack answers, what it runs on, and a token of each role to sign in with."""

    url: str
    redis_url: str
    operator_token: str
    viewer_token: str
    logs: Path
    #: The processes' environment, for a ``fintask`` command run against the stack.
    env: dict[str, str]

    def redis(self) -> redis.Redis:
        """A client of the stack's Redis database (close it)."""
        return redis.Redis.from_url(self.redis_url)

    def send(
        self, queue_name: str, actor_name: str, *, delay_ms: int | None = None, **kwargs: object
    ) -> str:
        """Send a message into the stack's Redis, stamped as fintask's producers stamp theirs
        (the test process's own broker is the unit tests' stub); its message id."""
        producer = WakeupRedisBroker(url=self.redis_url, middleware=[])
        message = Message(queue_name, actor_name, (), kwargs, {"schema": SCHEMA_VERSION})
        try:
            return producer.enqueue(message, delay=delay_ms).message_id
        finally:
            producer.client.close()

    def wait_obeyed(self) -> None:
        """Wait until every alive worker obeys the control state as it is now: an operator's
        pause is in force, not on its way."""
        client = self.redis()
        try:
            version = read_version(client)

            def obeyed() -> bool:
                alive = [w for w in list_workers(client, ()) if w.state == "alive"]
                return bool(alive) and all(w.record["control_version"] >= version for w in alive)

            wait_until(obeyed, timeout_s=30, what=f"the workers to obey control version {version}")
        finally:
            client.close()

    def log_tail(self, lines: int = 60) -> str:
        """The end of every process's log, for a failure message."""
        tails = []
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(tails)


@contextlib.contextmanager
def console_stack(server_url: str, directory: Path) -> Iterator[ConsoleStack]:
    """Migrate and seed a database, start web, worker and scheduler on ``server_url``'s
    database ``REDIS_DB``; yield once all three are up."""
    redis_url = server_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    database_url = f"sqlite:///{directory / 'console.db'}"
    operator_token, viewer_token = _database(database_url)
    port = free_port()
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = procfile_env(
        var_dir=directory / "var",
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        PORT=str(port),
        HOST="127.0.0.1",
    )
    stack = ConsoleStack(
        url=f"http://127.0.0.1:{port}",
        redis_url=redis_url,
        operator_token=operator_token,
        viewer_token=viewer_token,
        logs=logs,
        env=env,
    )
    client = stack.redis()
    try:
        with (
            # bash: the web line reads $PORT and ${WEB_CONCURRENCY:-2}, as the platform's shell does
            running(["bash", "-c", procfile_commands()["web"]], env, logs / "web.log") as web,
            running(procfile_command("worker"), env, logs / "worker.log") as worker,
            running(procfile_command("scheduler"), env, logs / "scheduler.log") as scheduler,
        ):
            processes = {"web": web, "worker": worker, "scheduler": scheduler}
            _wait_ready(stack, processes, lambda: booted_processes(client, worker))
            yield stack
    finally:
        client.flushdb()
        client.close()


def _database(database_url: str) -> tuple[str, str]:
    """Migrate and seed ``database_url``; an operator's and a viewer's new token."""
    upgrade(database_url)
    engine = create_db_engine(database_url)
    try:
        seed(engine, users=SEED_USERS)
        with Session(engine) as session, session.begin():
            operator, _ = tokens.create_token(session, name="console-operator", role="operator")
            viewer, _ = tokens.create_token(session, name="console-viewer", role="viewer")
    finally:
        engine.dispose()
    return operator, viewer


def _wait_ready(
    stack: ConsoleStack,
    processes: dict[str, subprocess.Popen[bytes]],
    booted: Callable[[], int],
) -> None:
    """Poll until the web answers /healthz, every worker process has registered and the
    scheduler runs; fail with the logs if a process exits first or the wait runs out."""

    def ready() -> bool:
        exited = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
        if exited:
            raise AssertionError(f"{exited} exited during start")
        try:
            healthy = httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False
        scheduling = SCHEDULER_RUNNING in (stack.logs / "scheduler.log").read_text()
        return healthy and booted() == WORKER_PROCESSES and scheduling

    try:
        wait_until(ready, timeout_s=BOOT_S, what="web, worker and scheduler to be up")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{stack.log_tail()}") from None
