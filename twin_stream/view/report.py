"""The replay report: one self-contained HTML file (``report.html``) built from a replay's
output folder (``alerts.jsonl``, ``estimates.jsonl``, ``summary.json``) through a FleetView
in span mode (each series thinned evenly over the whole run to at most 150 points) and
`report_page`. Inline CSS, SVG and script only: it opens offline, from a file or a mail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from twin_stream.view.fleet import FleetView
from twin_stream.view.pages import report_page

REPORT_NAME = "report.html"
MAX_BATTERIES = 10_000  # beyond this the report leaves batteries out (and says how many)


def _records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open("rb") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec


def build_view(out_dir: Path, *, points_per_series: int = 150) -> FleetView:
    """A FleetView of a replay's outputs (every battery, series over the whole run)."""
    view = FleetView(
        max_batteries=MAX_BATTERIES,
        points_per_series=points_per_series,
        alerts_kept=1_000,
        history_per_battery=50,
        keep="span",
    )
    for rec in _records(out_dir / "estimates.jsonl"):
        view.add_estimate(rec)
    for rec in _records(out_dir / "alerts.jsonl"):
        view.add_alert(rec)
    return view


def write_report(out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` from the replay outputs in `out_dir`; returns its path."""
    summary_path = out_dir / "summary.json"
    summary: dict[str, Any] = {}
    if summary_path.exists():
        loaded = json.loads(summary_path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            summary = loaded
    html = report_page(build_view(out_dir), summary)
    path = out_dir / REPORT_NAME
    path.write_text(html, encoding="utf-8")
    return path
