"""`twin-stream replay` end to end on simulated fleets, and the CLI's error contract: one line
on stderr and a non-zero exit for unusable arguments, files or settings."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from schemas.telemetry import parse_rfc3339_ms
from twin_stream.config.settings import Settings
from twin_stream.devtools.simulate import FaultSpec, SimConfig, simulate, write_records
from twin_stream.replay import replay

FAULTS = FaultSpec(
    over_voltage=1, under_voltage=1, dropout=1, duplicates=4, disorder=3, bad_records=7
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("fleet")
    sim = simulate(
        SimConfig(batteries=4, cells=16, temperatures=4, duration_s=1800, seed=7, faults=FAULTS)
    )
    path = d / "fleet.jsonl"
    write_records(sim.records, path)
    return path, sim.truth


def read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_replay_counts_every_record_and_matches_the_truth(fleet, tmp_path: Path) -> None:
    path, truth = fleet
    s = replay(path, tmp_path, Settings())
    c = s.counters
    assert s.input_records == truth["records"]
    assert c["invalid"] == truth["bad_records"] == 7
    assert c["duplicates"] == truth["duplicates"] == 4
    assert c["late"] == truth["late"] == 3
    # nothing lost: every input record is processed, dead-lettered or a counted duplicate
    assert c["processed"] + c["dead_letters"] + c["duplicates"] == s.input_records
    assert len(read(tmp_path / "deadletter.jsonl")) == c["dead_letters"]
    assert json.loads((tmp_path / "summary.json").read_text())["records"] == c["records"]
    # each injected voltage fault is raised (critical) and cleared once, on its cell
    alerts = read(tmp_path / "alerts.jsonl")
    for fault in truth["faults"]:
        if fault["kind"] not in ("over_voltage", "under_voltage"):
            continue
        code = "cell_" + fault["kind"]
        mine = [
            a
            for a in alerts
            if a["battery_id"] == fault["battery"]
            and a["code"] == code
            and a["severity"] == "critical"
        ]
        assert [a["status"] for a in mine] == ["raised", "cleared"], mine
        assert {a["cell"] for a in mine} == {fault["cell"]}
    # cycles per battery match an independent trapezoid over the good samples sent, up to
    # the last estimate (estimates follow a 60 s event-time cadence; gaps not integrated)
    est = read(tmp_path / "estimates.jsonl")
    good = {}
    for line in path.read_bytes().splitlines():
        try:
            r = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if (
            isinstance(r.get("current"), float | int)
            and r["battery_id"] in truth["batteries"]
            and r.get("soc", 0) <= 100
            and r.get("cell_voltages") != []
        ):
            good.setdefault(r["battery_id"], {})[r["ts"]] = abs(r["current"])
    for bid in truth["batteries"]:
        last = [e for e in est if e["battery_id"] == bid and e["name"] == "equivalent_cycles"][-1]
        until = parse_rfc3339_ms(last["ts"])
        pts = sorted((t, i) for t, i in good[bid].items() if t <= until)
        ah = sum(
            (i0 + i1) / 2 * (t1 - t0) / 3.6e6
            for (t0, i0), (t1, i1) in itertools.pairwise(pts)
            if t1 - t0 <= 60_000
        )
        assert last["value"] == pytest.approx(ah / 200.0, rel=1e-9)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_give_the_outputs_of_jsonl(tmp_path: Path, suffix: str) -> None:
    sim = simulate(
        SimConfig(
            batteries=2,
            cells=8,
            temperatures=2,
            duration_s=900,
            seed=2,
            faults=FaultSpec(over_voltage=1),
        )
    )
    outs = {}
    for sfx in (".jsonl", suffix):
        f = tmp_path / f"f{sfx}"
        write_records(sim.records, f)
        replay(f, tmp_path / sfx, Settings())
        outs[sfx] = (
            read(tmp_path / sfx / "alerts.jsonl"),
            read(tmp_path / sfx / "estimates.jsonl"),
        )
    assert outs[suffix] == outs[".jsonl"]
    assert outs[".jsonl"][0]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twin_stream.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "missing.jsonl", "--out", "o"], "missing.jsonl: no such file"),
        (["replay", "data.txt", "--out", "o"], "unknown format '.txt'"),
        (["replay", "ok.jsonl", "--out", "o", "--settings", "bad.json"], "unknown key engine.nope"),
        (
            ["replay", "ok.jsonl", "--out", "o", "--settings", "range.json"],
            "engine.max_gap_s: Input should be greater than 0",
        ),
        (["simulate", "--out", "x.jsonl", "--fault", "melt=1"], "--fault 'melt=1'"),
        (
            ["settings", "check", "--settings", "model.json"],
            "models.params.eq_cycles.efficiency_mode",
        ),
    ],
)
def test_unusable_input_is_one_line_and_non_zero(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "data.txt").write_text("x")
    (tmp_path / "ok.jsonl").write_text('{"battery_id": "b", "ts": 1, "current": 1}\n')
    (tmp_path / "bad.json").write_text('{"engine": {"nope": 1}}')
    (tmp_path / "range.json").write_text('{"engine": {"max_gap_s": -5}}')
    (tmp_path / "model.json").write_text(
        '{"models": {"params": {"eq_cycles": {"efficiency_mode": "magic"}}}}'
    )
    r = cli(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) <= 2


def test_replay_cli_prints_a_summary(fleet, tmp_path: Path) -> None:
    path, truth = fleet
    r = cli("replay", str(path), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "records per s" in r.stdout and f"{truth['records']:,}" in r.stdout


def test_replay_with_state_file_continues_yesterday_exactly(fleet, tmp_path: Path) -> None:
    path, _ = fleet
    lines = path.read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    (tmp_path / "day1.jsonl").write_bytes(b"".join(lines[:half]))
    (tmp_path / "day2.jsonl").write_bytes(b"".join(lines[half:]))
    state = tmp_path / "state.json"
    replay(path, tmp_path / "whole", Settings())
    replay(tmp_path / "day1.jsonl", tmp_path / "d1", Settings(), state_file=state)
    replay(tmp_path / "day2.jsonl", tmp_path / "d2", Settings(), state_file=state)
    for name in ("alerts.jsonl", "estimates.jsonl"):

        def per_battery(recs: list[dict]) -> list[dict]:
            return sorted(recs, key=lambda r: (r["battery_id"], r["ts"]))  # stable

        split = read(tmp_path / "d1" / name) + read(tmp_path / "d2" / name)
        assert per_battery(split) == per_battery(read(tmp_path / "whole" / name))
        assert split
