"""The replay report: a small simulated fleet with an over-voltage fault, replayed, written
as one self-contained HTML file with a section and charts per battery."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin_stream.cli import app
from twin_stream.config.settings import load_settings
from twin_stream.devtools.simulate import FaultSpec, SimConfig, simulate, write_records
from twin_stream.replay import replay
from twin_stream.view.report import write_report


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("report")
    sim = simulate(
        SimConfig(batteries=3, cells=12, duration_s=900, faults=FaultSpec(over_voltage=1))
    )
    src = tmp / "fleet.jsonl"
    write_records(sim.records, src)
    out = tmp / "out"
    replay(src, out, load_settings(None))
    return out, sim.truth


def test_report_sections_charts_and_fault(replayed: tuple[Path, dict]) -> None:
    out, truth = replayed
    path = write_report(out)
    assert path == out / "report.html"
    html = path.read_text(encoding="utf-8")
    assert '<section id="fleet-summary">' in html and '<table id="fleet">' in html
    sections = re.findall(
        r'<section class="battery" id="battery-([^"]+)">(.*?)</section>', html, re.S
    )
    assert sorted(b for b, _ in sections) == ["bat-0000", "bat-0001", "bat-0002"]
    for _, body in sections:
        for series in ("cells", "soc", "cycles", "temperature"):
            assert f'<svg class="chart" data-series="{series}"' in body
        assert re.search(r'<path class="(line|band)" d="M[\d.]+,[\d.]+L', body)
    faulty = next(f["battery"] for f in truth["faults"] if f["kind"] == "over_voltage")
    body = dict(sections)[faulty]
    history = re.search(
        r'<table id="alert-history-[^"]+" class="alert-history".*?</table>', body, re.S
    )
    assert history is not None and 'data-code="cell_over_voltage"' in history.group(0)
    assert 'class="alert-marker"' in body
    for bid, other in sections:
        if bid != faulty:
            assert "cell_over_voltage" not in other
    summary = json.loads((out / "summary.json").read_text())
    assert f'<td class="num">{summary["input_records"]}</td>' in html


def test_report_is_self_contained(replayed: tuple[Path, dict]) -> None:
    html = write_report(replayed[0]).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "@import" not in html and "<script src" not in html
    assert "EventSource" in html and 'data-live="0"' in html  # the script is inline, not live


def test_cli_replay_report(tmp_path: Path, replayed: tuple[Path, dict]) -> None:
    src = tmp_path / "f.jsonl"
    write_records(simulate(SimConfig(batteries=2, cells=4, duration_s=300)).records, src)
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(tmp_path / "o"), "--report"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "report.html").exists() and "report:" in res.output
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0 and not (tmp_path / "p" / "report.html").exists()
