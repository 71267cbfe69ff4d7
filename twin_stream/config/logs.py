"""Rate limiting of repeated log lines, so an outage does not flood the log.

While a broker is gone, aiokafka and faust log the same reconnect errors hundreds of times a
second ("Unable connect to node with id 1", "Unable to update metadata", ...).
:class:`RateLimitFilter` lets one line of a kind through per `window_s` seconds and counts the
rest; the next line of that kind to get through ends with "(N similar lines suppressed in the
last X s)". A kind is the logger name and the message *template* (`record.msg`, before its
arguments are filled in), so "connection to node %s failed" for every node is one kind.

:func:`install_rate_limit` puts one filter on every handler of the root logger (a filter on a
logger does not see records propagated from its child loggers; a handler's filter sees them
all) and returns it; its `suppressed` attribute is the total count, for metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["MuteThread", "RateLimitFilter", "install_rate_limit"]


class RateLimitFilter(logging.Filter):
    """Lets each (logger name, message template) through at most once per `window_s`.

    Records below `min_level` always pass and are not counted. The same filter may sit on
    several handlers: a record is decided once, and every handler gets the same answer.
    `clock` (seconds, monotonic) is injectable for tests."""

    def __init__(
        self,
        window_s: float = 10.0,
        *,
        min_level: int = logging.NOTSET,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 4096,
    ) -> None:
        super().__init__()
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        self.window_s = window_s
        self.min_level = min_level
        self.max_kinds = max_kinds
        self.suppressed = 0
        """Records suppressed since the filter was made (all kinds)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._passed: dict[tuple[str, str], float] = {}  # kind -> when one last got through
        self._pending: dict[tuple[str, str], int] = {}  # kind -> suppressed since then
        self._mark = f"_twin_rate_limit_{id(self)}"

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, self._mark, None)
        if decided is not None:  # seen by another handler this filter is on
            return bool(decided)
        ok = self._decide(record)
        setattr(record, self._mark, ok)
        return ok

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        kind = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._passed.get(kind)
            if last is not None and now - last < self.window_s:
                self._pending[kind] = self._pending.get(kind, 0) + 1
                self.suppressed += 1
                return False
            n = self._pending.pop(kind, 0)
            if last is None and len(self._passed) >= self.max_kinds:
                self._prune(now)
            self._passed[kind] = now
        if n and last is not None:
            lines = "line" if n == 1 else "lines"
            note = f" ({n} similar {lines} suppressed in the last {now - last:.0f} s)"
            # the template grows, the arguments stay: other handlers and formatters may
            # still format the record themselves
            record.msg = str(record.msg) + note.replace("%", "%%")
        return True

    def _prune(self, now: float) -> None:
        """Forget kinds whose window is over (their pending counts stay in `suppressed`); all
        of them if that is not enough, so memory stays bounded with free-text messages."""
        expired = [k for k, t in self._passed.items() if now - t >= self.window_s]
        for k in expired:
            del self._passed[k]
            self._pending.pop(k, None)
        if len(self._passed) >= self.max_kinds:
            self._passed.clear()
            self._pending.clear()


def install_rate_limit(
    window_s: float = 10.0,
    *,
    min_level: int = logging.NOTSET,
    clock: Callable[[], float] = time.monotonic,
) -> RateLimitFilter:
    """Put one :class:`RateLimitFilter` on every handler of the root logger (call it after
    logging is configured) and return it; `.suppressed` is the total for metrics."""
    flt = RateLimitFilter(window_s, min_level=min_level, clock=clock)
    for handler in logging.getLogger().handlers:
        if flt not in handler.filters:
            handler.addFilter(flt)
    return flt


class MuteThread(logging.Filter):
    """Drops the records logged from the thread that made the filter (a client's expected
    connection errors while a caller probes, reported by the caller in one line instead)."""

    def __init__(self) -> None:
        super().__init__()
        self._ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self._ident
