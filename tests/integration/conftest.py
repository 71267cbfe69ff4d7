"""Integration-test setup: the real local Kafka broker, and the ``integration`` mark.

``kafka_bootstrap`` (session scope) is the broker's ``host:port``:

* ``TWIN_TEST_BOOTSTRAP`` set (``scripts/test`` does this after
  ``python -m twin_stream.devtools.broker up``) -> that broker is used as is and left running;
* otherwise a private broker is started with :func:`twin_stream.devtools.broker.up` on a fresh
  temp data dir, a free port and its own run dir (so a developer's broker from
  ``~/.cache/twin-stream/broker-run`` is never reused or stopped), and stopped with
  :func:`twin_stream.devtools.broker.down` at the end of the session.

Every test collected from this folder is marked ``integration``
(``pytest -m "not integration"`` skips them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from twin_stream.devtools.broker import down, up

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address ``127.0.0.1:PORT`` of a running local Kafka broker."""
    external = os.environ.get("TWIN_TEST_BOOTSTRAP", "").strip()
    if external:
        yield external
        return
    base = tmp_path_factory.mktemp("kafka")
    run_dir = base / "run"
    info = up(data_dir=base / "data", run_dir=run_dir)
    try:
        yield info.bootstrap
    finally:
        down(run_dir=run_dir)
