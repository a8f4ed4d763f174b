"""Replace a worker process grown past a memory limit: Celery's ``worker_max_memory_per_child``.

Dramatiq has no such limit, and its master (``dramatiq/cli.py``) treats a child that exits as
a crash: it stops every other child and exits itself, taking the whole worker down. Its one
graceful path is ``SIGHUP``: the master relays the signal to every child, each child stops
gracefully (worker threads finish the message they hold, messages fetched but not started are
requeued to Redis), and once all children have exited the master re-executes itself and forks
fresh ones. So a child over the limit, after the message that took it there:

1. pauses its own worker threads, so that none takes a new message while the signal travels
   (each finishes and acknowledges the one it holds; the rest are requeued at shutdown);
2. sends ``SIGHUP`` to its master, once per process.

Every child is replaced, not only the large one: that is the price of the master's only
graceful path, and children of one worker tend to grow alike. Nothing is lost or run twice as
long as in-flight messages finish within ``--worker-shutdown-timeout``.

Dramatiq's child treats any second signal as "kill now", which abandons the messages in flight
until the heartbeat timeout redelivers them (to run a second time). Two children can cross the
limit together, and the master then relays ``SIGHUP`` twice; a deploy's ``SIGTERM`` (often
twice: from the platform and from the master) can land during the restart. So in a child this
middleware wraps the handler: once a ``SIGHUP`` has started a graceful stop, repeated
``SIGHUP``s and the first burst of ``SIGTERM``s (within 2 s) are absorbed: the stop is already
under way, and the master, having seen the ``SIGTERM``, will not restart. A ``SIGTERM`` after
that burst still kills, as operators expect.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import psutil
from dramatiq import Broker, Middleware, Worker
from dramatiq.broker import MessageProxy
from dramatiq.logging import get_logger

_MB = 1024 * 1024
#: SIGTERMs this close to the first one absorbed are one request (platform + master copies).
_SIGTERM_BURST_S = 2.0
_SignalHandler = Callable[[int, FrameType | None], Any]


class MemoryLimit(Middleware):
    """Has the dramatiq master replace this worker process once its RSS exceeds a limit.

    Parameters:
      max_memory_mb: the resident set size, in MiB, over which the process is replaced
        (fintask passes ``WORKER_MAX_MEMORY_MB``). The check runs after every message.
      on_exceeded: called with the RSS in bytes instead of the restart, once per process
        (for other runners and for tests).

    Outside a dramatiq CLI child (an in-process ``Worker``), with no ``on_exceeded``, it only
    logs an error: no master would replace the process.
    """

    def __init__(
        self, *, max_memory_mb: int, on_exceeded: Callable[[int], None] | None = None
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.max_memory_mb = max_memory_mb
        self.on_exceeded = on_exceeded
        self.master_pid: int | None = None
        self._worker: Worker | None = None
        self._tripped = False
        self._baseline_over = False
        self._sighup_seen = False
        self._sigterm_at: float | None = None
        self._lock = threading.Lock()
        self._process: psutil.Process | None = None

    def after_process_boot(self, broker: Broker) -> None:
        # Only dramatiq's CLI emits process_boot, in the main thread of a child it forked.
        parent = multiprocessing.parent_process()
        if parent is None or parent.pid != os.getppid():
            return
        if threading.current_thread() is not threading.main_thread():
            return
        self.master_pid = parent.pid
        for signum in (signal.SIGHUP, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if callable(previous):
                signal.signal(signum, self._absorbing_repeats(previous))

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._worker = worker
        rss = self.rss_bytes()
        if rss > self.max_memory_mb * _MB:
            self._baseline_over = True
            self.logger.error(
                "This worker process holds %d MiB before any message, over max_memory_mb=%d: "
                "replacing it cannot help, so it will not be replaced. Raise the limit.",
                rss // _MB,
                self.max_memory_mb,
            )

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        self.check()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self.check()

    def rss_bytes(self) -> int:
        """This process's resident set size."""
        if self._process is None or self._process.pid != os.getpid():
            self._process = psutil.Process()
        return int(self._process.memory_info().rss)

    def check(self) -> None:
        """Start this process's replacement if it is over the limit (once)."""
        if self._tripped or self._baseline_over:
            return
        rss = self.rss_bytes()
        if rss <= self.max_memory_mb * _MB:
            return
        with self._lock:
            if self._tripped:
                return
            self._tripped = True
        self.logger.warning(
            "Worker process %d holds %d MiB, over max_memory_mb=%d: replacing it.",
            os.getpid(),
            rss // _MB,
            self.max_memory_mb,
        )
        if self.on_exceeded is not None:
            self.on_exceeded(rss)
        elif self.master_pid is not None:
            self._restart_through_master(self.master_pid)
        else:
            self.logger.error("Not a dramatiq CLI worker process: nothing will replace it.")

    def _restart_through_master(self, master_pid: int) -> None:
        if self._worker is not None:
            # pause() only sets a flag: safe from a worker thread, unlike Worker.pause(),
            # which waits for every thread, this one included, to notice it. Paused threads
            # take no new message while this process waits for its SIGHUP.
            for thread in self._worker.workers:
                thread.pause()
        if not self._sighup_seen:  # else a sibling has already asked the master
            os.kill(master_pid, signal.SIGHUP)

    def _absorbing_repeats(self, previous: _SignalHandler) -> _SignalHandler:
        def handler(signum: int, frame: FrameType | None) -> Any:
            now = time.monotonic()
            if self._sighup_seen and (
                signum == signal.SIGHUP
                or self._sigterm_at is None
                or now - self._sigterm_at < _SIGTERM_BURST_S
            ):
                self._sigterm_at = self._sigterm_at or (now if signum == signal.SIGTERM else None)
                self.logger.info("Already stopping for a restart; signal %d absorbed.", signum)
                return None
            self._sighup_seen |= signum == signal.SIGHUP
            return previous(signum, frame)

        return handler
