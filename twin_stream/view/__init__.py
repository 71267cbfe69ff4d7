"""The twin's results as people look at them: a bounded in-memory fleet view and its pages.

`FleetView` (fleet.py) keeps, for a fleet of up to ``max_batteries`` batteries, each battery's
latest values (its fleet row), its estimate series in compact ring buffers, its active alerts
and alert history, and the recent alert feed; it is fed alert and estimate records one by one
(the live dashboard, `twin_stream.dashboard`, from the topics) or from a replay's output files
(the report, report.py). pages.py renders it as self-contained HTML (inline CSS, SVG charts
from charts.py, a small inline script; nothing fetched from elsewhere), for the live server
(`live=True`: updates by server-sent events from ``/events``) and for the offline replay
report (`twin-stream replay FILE --out DIR --report` writes ``DIR/report.html``).
"""

from twin_stream.view.fleet import BatteryView, FleetView, format_ts, parse_ts
from twin_stream.view.pages import alerts_page, battery_page, fleet_page, report_page
from twin_stream.view.report import write_report

__all__ = [
    "BatteryView",
    "FleetView",
    "alerts_page",
    "battery_page",
    "fleet_page",
    "format_ts",
    "parse_ts",
    "report_page",
    "write_report",
]
