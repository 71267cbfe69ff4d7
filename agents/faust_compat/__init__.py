"""Where twin-stream leans on faust internals: one module per workaround.

Each module says what faust-streaming (0.15.3) does wrong for our agent shape, how it was
seen on the real broker, and what it leans on; and it checks at import that the installed
faust-streaming / aiokafka is in the range it was verified with (`require`, in `_guard`):
outside it, importing the workaround fails with `UnverifiedVersion` naming the workaround and
the range, rather than the worker running on patched internals nobody checked.

- `context`: `current_event`, `partition_event` -- table access from the chunk task, which
  has no faust event.
- `transactions`: `ChunkTransactions`, `ChunkPoisoned` -- one chunk is one atomic unit
  under exactly_once (outputs through the input partition's transactional producer, commits
  and rebalances wait for the chunk, a failed chunk poisons the guard, the committed offset
  is the agent's position).
- `recovery`: `patch_recovery_highwaters` -- changelog highwaters asked from the broker, so
  a newly assigned partition's recovery is not skipped.
- `changelog_offsets`: `persist_changelog_offsets_on_commit` -- the store's persisted
  changelog offset moves on commit.
- `local_state`: `reset_local_state_on_assign` -- local RocksDB data of a newly assigned
  partition is discarded (it may hold aborted writes).
- `gaps`: `InputGapFiller` -- input records faust counted as acked without delivering them
  are read from the broker.
- `feed`: `ChunkFeed` -- input records taken from faust's fetch loop in bulk.
"""

from agents.faust_compat._guard import UnverifiedVersion, require
from agents.faust_compat.changelog_offsets import persist_changelog_offsets_on_commit
from agents.faust_compat.context import current_event, partition_event
from agents.faust_compat.feed import ChunkFeed
from agents.faust_compat.gaps import InputGapFiller
from agents.faust_compat.local_state import reset_local_state_on_assign
from agents.faust_compat.recovery import patch_recovery_highwaters
from agents.faust_compat.transactions import ChunkPoisoned, ChunkTransactions

__all__ = [
    "ChunkFeed",
    "ChunkPoisoned",
    "ChunkTransactions",
    "InputGapFiller",
    "UnverifiedVersion",
    "current_event",
    "partition_event",
    "patch_recovery_highwaters",
    "persist_changelog_offsets_on_commit",
    "require",
    "reset_local_state_on_assign",
]
