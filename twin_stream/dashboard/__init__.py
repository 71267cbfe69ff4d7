"""The live fleet dashboard (`twin-stream dashboard`): a separate process that reads the
alerts and estimates topics (read_committed, from the beginning, no consumer group) into a
bounded :class:`twin_stream.view.fleet.FleetView` and serves its pages with live updates
(server-sent events). :mod:`.consumer` is the feed, :mod:`.server` the web side.
"""

from __future__ import annotations

from twin_stream.dashboard.server import Dashboard, run_dashboard, serve

__all__ = ["Dashboard", "run_dashboard", "serve"]
