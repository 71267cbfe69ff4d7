"""twin_stream.config.logs: repeated log lines are rate limited per (logger, template), with a count
of what was suppressed, on the root handlers so child loggers' records are covered."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from twin_stream.config.logs import RateLimitFilter, install_rate_limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """The root logger with one fresh stream handler (restored afterwards)."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_template_passes_once_per_window_then_says_how_many_were_suppressed(
    clock: Clock, root_stream: io.StringIO
) -> None:
    flt = install_rate_limit(10.0, clock=clock)
    log = logging.getLogger("aiokafka.conn")  # a child logger: propagates to the root handler
    for i in range(230):
        log.error("Unable connect to node with id %s: %s", i % 3, "refused")
        clock.now += 0.01
    assert lines(root_stream) == ["aiokafka.conn ERROR Unable connect to node with id 0: refused"]
    assert flt.suppressed == 229
    clock.now = 1000.0 + 10.0  # the window is over
    log.error("Unable connect to node with id %s: %s", 2, "refused")
    assert lines(root_stream)[1] == (
        "aiokafka.conn ERROR Unable connect to node with id 2: refused"
        " (229 similar lines suppressed in the last 10 s)"
    )
    clock.now += 10.0
    log.error("Unable connect to node with id %s: %s", 1, "refused")
    assert lines(root_stream)[2] == "aiokafka.conn ERROR Unable connect to node with id 1: refused"
    assert flt.suppressed == 229


def test_kinds_are_logger_and_template(clock: Clock, root_stream: io.StringIO) -> None:
    install_rate_limit(10.0, clock=clock)
    logging.getLogger("a").warning("x %s", 1)
    logging.getLogger("b").warning("x %s", 1)  # other logger
    logging.getLogger("a").warning("y %s", 1)  # other template
    logging.getLogger("a").warning("x %s", 2)  # same kind: suppressed
    assert lines(root_stream) == ["a WARNING x 1", "b WARNING x 1", "a WARNING y 1"]


def test_one_suppressed_line_is_singular(clock: Clock) -> None:
    flt = RateLimitFilter(5.0, clock=clock)
    rec = [
        logging.LogRecord("n", logging.ERROR, __file__, 1, "gone %d", (i,), None) for i in range(3)
    ]
    assert flt.filter(rec[0])
    assert not flt.filter(rec[1])
    clock.now += 7.5
    assert flt.filter(rec[2])
    assert rec[2].getMessage() == "gone 2 (1 similar line suppressed in the last 8 s)"


def test_one_filter_on_several_handlers_decides_each_record_once(
    clock: Clock, root_stream: io.StringIO
) -> None:
    second = io.StringIO()
    other = logging.StreamHandler(second)
    other.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(other)
    flt = install_rate_limit(10.0, clock=clock)
    assert all(flt in h.filters for h in logging.getLogger().handlers)
    log = logging.getLogger("faust")
    log.error("reconnect")
    log.error("reconnect")
    clock.now += 11
    log.error("reconnect")
    assert lines(second) == ["reconnect", "reconnect (1 similar line suppressed in the last 11 s)"]
    assert len(lines(root_stream)) == 2
    assert flt.suppressed == 1


def test_records_below_min_level_always_pass(clock: Clock) -> None:
    flt = RateLimitFilter(10.0, min_level=logging.WARNING, clock=clock)
    info = [logging.LogRecord("n", logging.INFO, __file__, 1, "m", None, None) for _ in range(3)]
    assert all(flt.filter(r) for r in info)
    err = [logging.LogRecord("n", logging.ERROR, __file__, 1, "m", None, None) for _ in range(3)]
    assert [flt.filter(r) for r in err] == [True, False, False]
    assert flt.suppressed == 2


def test_memory_stays_bounded_with_free_text_messages(clock: Clock) -> None:
    flt = RateLimitFilter(10.0, clock=clock, max_kinds=50)
    for i in range(1000):
        rec = logging.LogRecord("n", logging.ERROR, __file__, 1, f"unique {i}", None, None)
        assert flt.filter(rec)
        clock.now += 0.001
    assert len(flt._passed) <= 50


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimitFilter(0)
