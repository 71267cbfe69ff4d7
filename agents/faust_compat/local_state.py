"""`reset_local_state_on_assign`: local table data must not be ahead of the changelog.

What faust does: with `exactly_once`, the RocksDB store holds writes of transactions that
were later aborted (the store is written at once; only the changelog is transactional).
After a kill -9 the local store is therefore AHEAD of the committed changelog, and a
battery's replayed records would be dropped as duplicates: lost outputs. Each newly assigned
active partition's local data is discarded, so its state comes back from the (compacted,
read_committed) changelog. The memory store starts empty in every process anyway.

Leans on: faust's `Table.on_rebalance` (wrapped on the instance), `App.in_transaction`,
`assignor.assigned_standbys()`, and the RocksDB store's `_dbs`, `partition_path()` and
`_key_index`.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from faust.types import TP

from agents.faust_compat._guard import require

require(
    "faust-streaming",
    ">=0.15.3,<0.16",
    workaround="agents.faust_compat.local_state (reset_local_state_on_assign)",
    leans_on="faust's Table.on_rebalance and the RocksDB store's _dbs/partition_path/_key_index",
)

log = logging.getLogger("twin_stream.agents")


def reset_local_state_on_assign(app: Any, table: Any) -> None:
    """Discard local RocksDB data of newly assigned active changelog partitions (see the module
    doc); the memory store starts empty in every process anyway."""
    original = table.on_rebalance

    async def on_rebalance(
        assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        store = table.data
        if app.in_transaction and hasattr(store, "partition_path"):
            standbys = app.assignor.assigned_standbys()
            changelog = set(table.changelog_topic.topics)
            for tp in sorted(newly_assigned):
                if tp.topic in changelog and tp not in standbys:
                    _wipe_partition(store, tp.partition)
        await original(assigned, revoked, newly_assigned, generation_id)

    table.on_rebalance = on_rebalance


def _wipe_partition(store: Any, partition: int) -> None:
    db = store._dbs.get(partition)
    if db is not None:
        keys = list(db.keys())
        for k in keys:
            db.delete(k)
        log.info("discarded %d local keys of table partition %d", len(keys), partition)
    else:
        path = store.partition_path(partition)
        if path.exists():
            shutil.rmtree(path)
            log.info("discarded local table data %s", path)
    key_index = getattr(store, "_key_index", None)
    if key_index is not None:
        key_index.clear()
