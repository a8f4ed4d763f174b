"""arq's separate environment, and the producer process that sends through it.

arq 0.28 needs redis-py < 6 and fintask's venv has redis 8, so arq runs from its own locked uv
project (``bench/peers/arq``): its workers, and a long-lived producer process
(``bench/peers/arq/producer.py``) that the harness feeds one JSON line per send over a pipe
and that answers each with one line once arq has enqueued it. A send to arq therefore costs a
pipe round trip more than a send to the others (tens of microseconds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

from app.settings import PROJECT_ROOT
from bench.systems.system import ARQ_BIN, ARQ_PROJECT, ARQ_PYTHON

UV = PROJECT_ROOT / ".tools" / "bin" / "uv"
ARQ_PRODUCER = ARQ_PROJECT / "producer.py"
#: How many sends the producer awaits at once in a batch (arq has no bulk enqueue).
BATCH = 200

_lock = threading.Lock()


def ensure_arq() -> None:
    """Create arq's venv from its lock file, once, if ``make bench`` has not."""
    with _lock:
        if (ARQ_BIN / "arq").exists():
            return
        subprocess.run(
            [
                str(UV),
                "sync",
                "--frozen",
                "--python",
                "python3",
                "--compile-bytecode",
                "--project",
                str(ARQ_PROJECT),
            ],
            check=True,
            cwd=PROJECT_ROOT,
        )


class ArqProducer:
    """Enqueues through arq's own ``ArqRedis.enqueue_job``, in arq's venv."""

    def __init__(self, redis_url: str) -> None:
        ensure_arq()
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        env.pop("VIRTUAL_ENV", None)
        #: The producer's command line and environment, for a published run's record.
        self.argv = [str(ARQ_PYTHON), str(ARQ_PRODUCER), redis_url]
        self.env = env
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )

    def _call(self, request: dict[str, Any]) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if answer.strip() != b"ok":
            raise RuntimeError(f"arq producer: {answer.decode(errors='replace').strip()}")

    def send(self, queue: str, task: str, args: tuple[Any, ...], delay_s: float | None) -> None:
        self._call({"queue": queue, "task": task, "args": [args], "delay_s": delay_s})

    def send_batched(self, queue: str, task: str, arguments: Iterable[tuple[Any, ...]]) -> None:
        batch: list[tuple[Any, ...]] = []
        for args in arguments:
            batch.append(args)
            if len(batch) == BATCH:
                self._call({"queue": queue, "task": task, "args": batch, "delay_s": None})
                batch = []
        if batch:
            self._call({"queue": queue, "task": task, "args": batch, "delay_s": None})

    def close(self) -> None:
        if self.process.stdin is not None:
            with suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
