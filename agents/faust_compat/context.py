"""Table access outside a faust agent: `current_event` and `partition_event`.

What faust does: a table read/write needs "the current event" to pick its partition (the
RocksDB store reads and writes the event's partition db, the changelog is sent to the event's
partition); faust takes it from a context variable (`faust.streams._current_event`) that its
stream sets per event. The chunk task has no faust event at all (its records come from
`agents.faust_compat.feed.ChunkFeed`), so it sets faust's context variable to a stand-in event
of the battery's input partition around each table access.

Leans on: the private context variable `faust.streams._current_event` (holding a weakref to
the event), and the table reading only the event's message topic and partition.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust import streams
from faust.types import TP

from agents.faust_compat._guard import require

require(
    "faust-streaming",
    ">=0.15.3,<0.16",
    workaround="agents.faust_compat.context (current_event, partition_event)",
    leans_on="faust.streams._current_event and the table's use of event.message.tp",
)


@contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make `event` faust's current event for the table accesses inside the block."""
    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)


def partition_event(app: Any, topic: str, partition: int, key: bytes) -> Any:
    """A stand-in event for table access outside the agent (`current_event`): the table reads
    only its message's topic and partition; offset -1 is no input record."""
    import faust
    from faust.types import Message

    msg = Message(topic, partition, -1, 0.0, 0, {}, key, b"", None, tp=TP(topic, partition))
    return faust.Event(app, key, b"", {}, msg)
