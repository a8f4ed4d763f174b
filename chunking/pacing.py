"""How long to wait before the next chunk: a fixed pause, stretched when the target queue is full.

A run enqueues per-item messages chunk by chunk. Without a brake, a producer that is faster
than the consumers fills the target queue with the whole table (the Celery "task flood").
Here the producer looks at the target queue's depth: under the high-water mark it only
pauses ``pause_ms``; above it, it waits longer the further above the mark the queue is, up to
a cap, and a chunk never enqueues while the queue is above the mark. With one run feeding a
queue its depth therefore stays under ``high_water + chunk_size``, whatever the table size.
"""

from __future__ import annotations

from dataclasses import dataclass

from chunking.depth import DepthSource


@dataclass(frozen=True, kw_only=True)
class Backpressure:
    """Hold chunks back while ``target_queue`` holds more than ``high_water`` messages."""

    target_queue: str
    high_water: int
    depth: DepthSource
    base_delay_ms: int = 1_000
    max_delay_ms: int = 30_000

    def __post_init__(self) -> None:
        if self.high_water < 0:
            raise ValueError(f"high_water must be >= 0, not {self.high_water!r}")
        if not 0 < self.base_delay_ms <= self.max_delay_ms:
            raise ValueError("backpressure delays need 0 < base_delay_ms <= max_delay_ms")

    def delay_ms(self, *, adding: int = 0) -> int:
        """0 when the queue (plus ``adding`` messages about to be sent) is at or under the mark.

        Above it: ``base_delay_ms`` times one plus the excess as a fraction of the mark, so a
        queue twice the mark waits twice the base, capped at ``max_delay_ms``.
        """
        return self.delay_for_depth(self.depth(self.target_queue) + adding)

    def delay_for_depth(self, depth: int) -> int:
        """The delay for a queue of ``depth`` messages (pure: the policy without the probe)."""
        excess = depth - self.high_water
        if excess <= 0:
            return 0
        delay = self.base_delay_ms * (1 + excess / max(self.high_water, 1))
        return min(self.max_delay_ms, round(delay))
