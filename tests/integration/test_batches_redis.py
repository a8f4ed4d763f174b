"""A batch of 10^5 members on a real redis-server: recorded through the script, fired once,
and its memory per member measured (docs/batches.md quotes these numbers)."""

from __future__ import annotations

import uuid
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.stub import StubBroker

from chunking import Batches, Callback
from chunking import batch_scripts as scripts

MEMBERS = 100_000


def test_a_batch_of_100000_members_fires_once_in_a_quarter_byte_per_member(
    client: redis.Redis,
) -> None:
    # Given a batch of 10^5 members added in pages, sealed, with an on_success callback
    broker = StubBroker()
    fired: list[dict[str, Any]] = []

    @dramatiq.actor(broker=broker, queue_name="callbacks")
    def done(**kwargs: Any) -> None:
        fired.append(kwargs)

    batches = Batches(client=client, broker=broker, prefix=f"it-batch:{uuid.uuid4().hex}")
    batch_id = batches.create(on_success=Callback("done", "callbacks"))
    for _ in range(MEMBERS // 1_000):
        batches.reserve(batch_id, 1_000)
    batches.seal(batch_id)

    # When every member is recorded through the script, and every hundredth a second time
    assert batches.settle_many(batch_id, range(MEMBERS)) == MEMBERS
    assert batches.settle_many(batch_id, range(0, MEMBERS, 100)) == 0

    # Then the callback was enqueued once, with the counts, and the batch is small
    assert broker.queues["callbacks"].qsize() == 1
    progress = batches.progress(batch_id)
    assert progress is not None and (progress.state, progress.succeeded) == ("fired", MEMBERS)
    keys = [scripts.meta_key(batches.prefix, batch_id), scripts.done_key(batches.prefix, batch_id)]
    used = sum(int(client.memory_usage(key) or 0) for key in keys)
    print(f"\n{MEMBERS:,} members: {used:,} bytes in Redis, {used / MEMBERS:.3f} bytes per member")
    assert used < MEMBERS // 4  # one bit per member, as allocated, and the counters
