"""`persist_changelog_offsets_on_commit`: the store's persisted changelog offset must move.

What faust does: faust-streaming 0.15.3 never advances the store's persisted changelog
offset under exactly_once: `persist_offset_on_commit` queues it keyed by CHANGELOG partition,
`TableManager.on_commit` looks it up by the committed INPUT partitions, so every rebalance
re-applied old changelog records over the local state of the partitions the worker keeps
(state of writes not yet committed went back in time while their input was not read again).
We map the input partitions to the changelog partitions of the same number (the tables are
co-partitioned with the input) and call `TableManager.on_commit_tp` for them.

Leans on: faust's `TableManager.on_commit` (wrapped on the instance), `on_commit_tp`, and
`table.changelog_topic.topics`.
"""

from __future__ import annotations

from typing import Any

from faust.types import TP

from agents.faust_compat._guard import require

require(
    "faust-streaming",
    ">=0.15.3,<0.16",
    workaround="agents.faust_compat.changelog_offsets (persist_changelog_offsets_on_commit)",
    leans_on="faust's TableManager.on_commit and on_commit_tp (keyed by changelog partition)",
)


def persist_changelog_offsets_on_commit(app: Any, input_topic: str) -> None:
    """faust-streaming 0.15.3 under exactly_once queues the changelog offset to persist under
    the CHANGELOG partition (`persist_offset_on_commit`) but, on commit, looks it up by the
    committed INPUT partitions (`TableManager.on_commit`): the store's persisted offset never
    moves, and every rebalance re-applies the changelog from an old offset over the local
    state of the partitions the worker keeps -- state of writes not yet committed goes back
    in time while their input is not read again. Map the input partitions to the changelog
    partitions of the same number (tables are co-partitioned with the input)."""
    tables = app.tables
    original = tables.on_commit

    def on_commit(offsets: Any) -> None:
        original(offsets)
        parts = {tp.partition for tp in offsets if tp.topic == input_topic}
        for table in tables.values():
            for topic in table.changelog_topic.topics:
                for p in parts:
                    tables.on_commit_tp(TP(topic, p))

    tables.on_commit = on_commit
