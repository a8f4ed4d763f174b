"""Group commit: items handed in during a write leave together in the next one, none is lost."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from app.group_commit import GroupCommit


class Writes:
    """Records each write's items; the first write can be held until the test releases it."""

    def __init__(self, *, hold_first: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, items: list[str]) -> None:
        with self.lock:
            self.calls.append(list(items))
        self.started.set()
        self.release.wait()


def in_thread(commit: GroupCommit[str], item: str, errors: list[BaseException]) -> threading.Thread:
    def submit() -> None:
        try:
            commit.submit(item)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=submit)
    thread.start()
    return thread


def test_a_lone_item_is_written_at_once_on_its_own():
    writes = Writes()
    GroupCommit(writes).submit("a")
    assert writes.calls == [["a"]]


def test_items_handed_in_during_a_write_leave_together_in_the_next():
    # Given a write on its way, held
    writes = Writes(hold_first=True)
    commit = GroupCommit(writes)
    errors: list[BaseException] = []
    first = in_thread(commit, "a", errors)
    writes.started.wait()

    # When three more threads hand in items meanwhile
    others = [in_thread(commit, item, errors) for item in ("b", "c", "d")]
    while len(commit._open.items) < 3:  # each has queued its item and waits its turn
        time.sleep(0.01)
    writes.release.set()
    for thread in [first, *others]:
        thread.join()

    # Then the next write carries all three at once
    assert errors == []
    assert writes.calls[0] == ["a"]
    assert sorted(writes.calls[1]) == ["b", "c", "d"] and len(writes.calls) == 2


def test_a_failed_write_raises_in_every_thread_whose_item_it_carried():
    calls: list[list[str]] = []

    def failing(items: list[str]) -> None:
        calls.append(items)
        if "bad" in items:
            raise ConnectionError("Redis went away")

    commit = GroupCommit(failing)
    with pytest.raises(ConnectionError, match="went away"):
        commit.submit("bad")

    # and the next item is written as usual
    commit.submit("good")
    assert calls == [["bad"], ["good"]]


def test_every_item_is_written_once_before_its_submit_returns():
    written: Counter[str] = Counter()
    lock = threading.Lock()

    def write(items: list[str]) -> None:
        with lock:
            written.update(items)

    commit = GroupCommit(write)
    late: list[str] = []

    def worker(t: int) -> None:
        for n in range(300):
            item = f"{t}-{n}"
            commit.submit(item)
            with lock:
                if written[item] != 1:
                    late.append(item)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert late == []
    assert written == Counter(f"{t}-{n}" for t in range(8) for n in range(300))
