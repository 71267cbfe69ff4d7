"""`patch_recovery_highwaters`: a changelog's recovery must not be skipped as "empty".

What faust does: under exactly_once faust takes the changelog "highwater" from
`AIOKafkaConsumer.last_stable_offset(tp)`, which is only known after a fetch response for
that partition: for a partition just assigned it is None, faust reads that as "empty
changelog" and skips the recovery. The worker that took over a stopped worker's partitions
then started those batteries from an empty state (seen: highwater -1 on every changelog
partition, equivalent_cycles restarting at 0, records dead-lettered as late). We ask the
broker instead: `end_offsets()` of a read_committed consumer is the last stable offset
(ListOffsets with isolation_level=read_committed).

Leans on: faust's `AIOKafkaConsumerThread._highwaters` (replaced on the class) and
`_ensure_consumer()`; aiokafka's `end_offsets()` of a read_committed consumer being the last
stable offset.
"""

from __future__ import annotations

from typing import Any

from faust.types import TP

from agents.faust_compat._guard import require

require(
    "faust-streaming",
    ">=0.15.3,<0.16",
    workaround="agents.faust_compat.recovery (patch_recovery_highwaters)",
    leans_on="faust's AIOKafkaConsumerThread._highwaters and _ensure_consumer()",
)
require(
    "aiokafka",
    ">=0.12,<0.15",
    workaround="agents.faust_compat.recovery (patch_recovery_highwaters)",
    leans_on="AIOKafkaConsumer.end_offsets() giving the last stable offset under read_committed",
)


def patch_recovery_highwaters() -> None:
    """Ask the broker for the changelog highwaters (see the module doc); idempotent."""
    from faust.transport.drivers import aiokafka as driver

    thread_cls = driver.AIOKafkaConsumerThread
    if getattr(thread_cls, "_twin_patched", False):
        return

    async def _highwaters(self: Any, partitions: list[TP]) -> Any:
        # read_committed consumer under exactly_once: the last stable offsets
        return await self._ensure_consumer().end_offsets(partitions)

    thread_cls._highwaters = _highwaters  # type: ignore[method-assign]
    setattr(thread_cls, "_twin_patched", True)  # noqa: B010
