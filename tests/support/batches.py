"""Batches made directly in fintask's store, for the tests of the faces that read them."""

from __future__ import annotations

from chunking import FailureKind
from pipelines.batches import BATCHES


def a_batch(
    members: int,
    *,
    failed: int = 0,
    succeeded: int = 0,
    seal: bool = True,
    reason: str = "RuntimeError: member {ordinal} failed",
) -> str:
    """A batch with ``members`` reserved: its first ``failed`` dead-lettered (``reason``,
    formatted with the ordinal), then ``succeeded`` done; sealed unless ``seal`` is False."""
    batch_id = BATCHES.create(name="statements")
    BATCHES.reserve(batch_id, members)
    for ordinal in range(failed):
        BATCHES.settle(
            batch_id,
            ordinal,
            failed=FailureKind.DEAD_LETTERED,
            reason=reason.format(ordinal=ordinal),
            message_id=f"m-{ordinal}",
        )
    for ordinal in range(failed, failed + succeeded):
        BATCHES.settle(batch_id, ordinal)
    if seal:
        BATCHES.seal(batch_id)
    return batch_id
