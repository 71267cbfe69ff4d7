"""PyBaMM oracle tests (issue 4), small version for CI.

Skipped, with the reason, when PyBaMM (the ``oracle`` extra) is not installed. Fixtures are
8-cell series strings simulated with SPMe: NMC Chen2020 and LFP Prada2013 under the
``small`` duty (~3.2 h: drive, 1 h rest, charge, 1 h rest, drive), and NMC under the
``ocv_sweep`` duty (97 % -> 15 % SOC in 14 steps, 1 h rest after each: SOC from OCV and
imbalance across the range). They are simulated once and cached in ``$TWIN_ORACLE_CACHE``
or ``~/.cache/twin-stream/oracle`` (keyed by every parameter, the duty, the generator and
the PyBaMM version). Each drive fixture is replayed through the twin with the chemistry's
own limits (the clean run) and with tight cell-voltage limits that the duty crosses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from twin_stream.devtools.oracle import evaluate as ev
from twin_stream.devtools.oracle.fixture import Fixture, FixtureSpec, generate

SPECS = {
    (chem, duty): FixtureSpec(chemistry=chem, duty=duty, n_cells=8)
    for chem, duty in (("NMC", "small"), ("LFP", "small"), ("NMC", "ocv_sweep"))
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "oracle: compares the twin with PyBaMM simulations")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.oracle)


@dataclass
class OracleRun:
    fixture: Fixture
    clean_settings: dict[str, Any]
    tight_settings: dict[str, Any]
    clean: ev.Outputs
    tight: ev.Outputs
    checks: dict[str, ev.Check]
    figures: dict[str, Any]


_RUNS: dict[tuple[str, str], OracleRun] = {}


@pytest.fixture(scope="session")
def oracle_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """oracle_run("NMC"[, "small"]) -> the fixture, its replays and the checked figures."""
    pytest.importorskip(
        "pybamm", reason="PyBaMM oracle needs the extra: pip install -e '.[oracle]'"
    )
    workers = int(os.environ.get("TWIN_ORACLE_WORKERS", "2"))

    def get(chem: str, duty: str = "small") -> OracleRun:
        key = (chem, duty)
        if key not in _RUNS:
            fx = generate(SPECS[key], workers=workers)
            clean_s = ev.settings_dict(fx)
            tight_s = ev.settings_dict(fx, cell_voltage_limits=ev.tight_limits(fx))
            base = tmp_path_factory.mktemp(f"oracle-{chem.lower()}-{duty}")
            clean = ev.run_replay(fx, clean_s, base / "clean")
            tight = ev.run_replay(fx, tight_s, base / "tight")
            checks, figs = ev.checks(fx, clean, tight, clean, tight_s, clean_s)
            _RUNS[key] = OracleRun(
                fx, clean_s, tight_s, clean, tight, {c.name: c for c in checks}, figs
            )
        return _RUNS[key]

    return get
