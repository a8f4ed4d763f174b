"""Every code sample of docs/migrating-from-celery.md runs, as written.

Blocks fenced as ``python celery-sample`` run in one namespace against a real Celery 5.7 app
(kombu's in-memory transport: the sample names it); those fenced as ``python fintask-sample``
run in another, on the StubBroker, whose worker then processes every message they sent.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any

import pytest

from app.settings import PROJECT_ROOT
from tests.support.processes import wait_until

GUIDE = PROJECT_ROOT / "docs" / "migrating-from-celery.md"
SAMPLE = re.compile(r"^( *)```python (celery|fintask)-sample\n(.*?)^\1```", re.M | re.S)


def samples(kind: str) -> list[str]:
    """The guide's ``kind`` samples in order, unindented (some sit in a list item)."""
    found = []
    for indent, sample_kind, code in SAMPLE.findall(GUIDE.read_text()):
        if sample_kind == kind:
            found.append("".join(line[len(indent) :] + "\n" for line in code.splitlines()))
    return found


def run_samples(kind: str) -> tuple[dict[str, Any], str]:
    """Execute every ``kind`` sample in one namespace; the namespace and what they printed."""
    namespace: dict[str, Any] = {"__name__": f"guide_{kind}"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for code in samples(kind):
            exec(compile(code, str(GUIDE), "exec"), namespace)
    return namespace, printed.getvalue()


def test_the_guide_has_samples_of_both_kinds():
    assert len(samples("celery")) >= 1
    assert len(samples("fintask")) >= 4


def test_the_celery_samples_publish_with_a_real_celery_app():
    namespace, _ = run_samples("celery")

    assert namespace["send_receipt"].name == "shop.tasks.send_receipt"
    assert namespace["receipts_sent"] == []  # published, not run in the producer


@pytest.fixture
def guide_actors(stub_broker):
    """The actors the samples declare, removed from the session's broker afterwards."""
    before = set(stub_broker.actors)
    yield stub_broker
    for name in set(stub_broker.actors) - before:
        del stub_broker.actors[name]


def test_the_fintask_samples_run_on_the_stub_broker(guide_actors, stub_worker):
    # When every fintask sample runs,
    namespace, printed = run_samples("fintask")

    # then the Celery-seconds limit was refused saying the unit,
    assert "time_limit=30 is 30 ms: Dramatiq limits are in milliseconds" in printed
    assert "ported_as_is" not in guide_actors.actors
    # the ported call site's message ran (the delayed one waits its minute, unawaited),
    wait_until(lambda: namespace["receipts_sent"] == [42], what="the receipt of order 42")
    # and the bridge's mapping and the schedule's line name the ported actor
    assert namespace["CELERY_TASKS"] == {"shop.tasks.send_receipt": namespace["send_receipt"]}
    assert namespace["receipts_digest"].name == "send_receipt"
