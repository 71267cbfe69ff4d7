"""The two places where twin-stream leans on faust internals, kept in one file.

1. A table write needs "the current event" to pick its changelog partition; `take_events()`
   hands us a list of events instead of iterating them, so we set faust's context variable to
   the battery's own event before writing (the event came from the battery's partition).
2. With `exactly_once`, faust's TransactionManager picks the transactional producer of a send
   from the assignor's topic group of the destination topic, which only knows consumed topics
   (faust-streaming #440-like KeyError). Our output topics are keyed by battery_id with the
   input's partition count, i.e. co-partitioned with it by construction, so an unknown topic
   is mapped to the input topic's group: outputs then commit in the same transaction as the
   input offsets and the state changelog.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust import streams


@contextmanager
def current_event(event: Any) -> Iterator[None]:
    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)


def copartition_outputs(app: Any, input_topic: str) -> None:
    assignor = app.assignor
    original = assignor.group_for_topic

    def group_for_topic(topic: str) -> int:
        try:
            return int(original(topic))
        except KeyError:
            return int(original(input_topic))

    assignor.group_for_topic = group_for_topic
