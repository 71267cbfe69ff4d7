"""The model SDK: the template model, `models new`, the compiled debounce against the Python
one, state arrays, entry points, and the block engine across batteries (random block cuts and
random interleavings give every battery what it gets alone)."""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from models._template.model import TemplateModel
from twin_stream import sdk
from twin_stream.battery.chemistry import get_chemistry
from twin_stream.cli import app
from twin_stream.codec import Decoder, Row
from twin_stream.codec.records import Records
from twin_stream.config.settings import Settings
from twin_stream.engine import Engine
from twin_stream.sdk.alerting import debounce
from twin_stream.sdk.registry import discover_models
from twin_stream.sdk.state import StateArrays, StateSpec
from twin_stream.sdk.testing import check_model

SPEC = sdk.BatterySpec("k", get_chemistry("NMC"), 100.0, 4, None)


def template(**params: object) -> TemplateModel:
    return TemplateModel(TemplateModel.manifest.validate_params(params, "t"), SPEC)


def test_template_raises_after_the_debounce_and_reports_peaks() -> None:
    ts = np.arange(0, 130_000, 1000)
    cur = np.where((ts > 50_000) & (ts < 60_000), -400.0, 10.0)
    out, state = template().process(
        sdk.build_chunk("b", ts, cur, prev_ts=None, max_gap_ms=60_000), template().initial_state()
    )
    alerts = [(o.ts, o.status) for o in out if isinstance(o, sdk.Alert)]
    # |I| > 300 A from 51 s: 1 s of violation at 51 s, 2 s (raise_s) at 52 s; clear at 60 s
    assert alerts == [(52_000, "raised"), (60_000, "cleared")]
    peaks = [(o.ts, o.value) for o in out if isinstance(o, sdk.Estimate)]
    assert peaks == [(60_000, 400.0), (120_000, 10.0)]
    assert state["peak"] == 10.0 and state["slot"] == 2


def test_template_passes_the_contract_checks_across_batteries() -> None:
    rng = np.random.default_rng(3)
    chunks = []
    for _ in range(4):
        ts = np.cumsum(rng.integers(200, 4000, 300))
        chunks.append(
            sdk.build_chunk("b", ts, rng.normal(0, 250, 300), prev_ts=None, max_gap_ms=60_000)
        )
    check_model(template(raise_s=1.0), chunks)


def test_check_model_catches_a_model_that_is_not_chunking_invariant() -> None:
    class Leaky(TemplateModel):
        def run(self, blk, params, state, out, start):  # type: ignore[no-untyped-def]
            nxt, w = super().run(blk, params, state, out, start)
            state["peak"][:] = 0.0  # forgets the peak at every block edge
            return nxt, w

    m = Leaky(TemplateModel.manifest.validate_params({}, "t"), SPEC)
    ts = np.arange(0, 200_000, 700)
    chunk = sdk.build_chunk("b", ts, np.sin(ts / 9e3) * 100, prev_ts=None, max_gap_ms=60_000)
    with pytest.raises(AssertionError, match="cut at"):
        check_model(m, [chunk])


def test_compiled_debounce_step_equals_the_python_debounce() -> None:
    rnd = random.Random(5)
    for trial in range(40):
        n = rnd.randint(1, 120)
        dt = np.array([rnd.choice([0, 100, 500, 1000, 3000]) for _ in range(n)], dtype=np.int64)
        rc = np.array([[rnd.random() < 0.5] for _ in range(n)])
        cc = np.array([[not r[0] and rnd.random() < 0.7] for r in rc])
        hold = np.array([[rnd.random() < 0.2] for _ in range(n)])
        tally = np.array([[rnd.randint(0, 9)] for _ in range(n)], dtype=np.int64)
        r_ms, c_ms = rnd.choice([0, 1000, 2500]), rnd.choice([0, 1000, 4000])
        r_n, c_n = rnd.randint(1, 4), rnd.randint(1, 3)
        channels: dict = {}
        want = debounce(dt, rc, cc, ["k"], channels, r_ms, c_ms, r_n, c_n, hold=hold, tally=tally)
        ch = np.zeros(sdk.CHANNEL, dtype=np.int64)
        got = []
        for i in range(n):
            ev = sdk.debounce_step(
                ch,
                int(dt[i]),
                bool(rc[i, 0]),
                bool(cc[i, 0]),
                bool(hold[i, 0]),
                int(tally[i, 0]),
                r_ms,
                c_ms,
                r_n,
                c_n,
            )
            if ev != sdk.NONE:
                got.append((i, ev == sdk.RAISE, int(ch[sdk.TALLY])))
        assert got == [(e.row, e.raised, e.tally) for e in want], trial


def test_state_arrays_round_trip_and_grow_with_cells() -> None:
    spec = StateSpec.model_validate(
        {
            "version": 3,
            "fields": {
                "x": {"dtype": "float64", "init": None},
                "n": {"dtype": "int64", "shape": ["cells", 2], "init": 7},
                "b": {"dtype": "bool", "shape": "temps", "init": False},
            },
        }
    )
    arr = StateArrays(spec, 1, 2, 1)
    arr.from_dict(0, {"version": 3, "x": 1.5, "n": [[1, 2], [3, 4], [5, 6]], "b": [True]})
    assert arr["n"].shape == (1, 3, 2)  # grew to the state's 3 cells
    assert arr.to_dict(0, 3, 1) == {
        "version": 3,
        "x": 1.5,
        "n": [[1, 2], [3, 4], [5, 6]],
        "b": [True],
    }
    arr.ensure(5, 4, 1)
    assert arr.to_dict(4, 4, 1) == {"version": 3, "x": None, "n": [[7, 7]] * 4, "b": [False]}


def test_models_new_writes_a_model_that_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = CliRunner().invoke(
        app, ["models", "new", "peak_demo", "--dir", str(tmp_path / "extmodels")]
    )
    assert res.exit_code == 0, res.output
    again = CliRunner().invoke(
        app, ["models", "new", "peak_demo", "--dir", str(tmp_path / "extmodels")]
    )
    assert again.exit_code == 2 and "exists already" in again.output
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("extmodels.peak_demo.model")
    cls = mod.PeakDemo
    assert cls.name == "peak_demo" and cls.manifest.name == "peak_demo"
    m = cls(cls.manifest.validate_params({}, "t"), SPEC)
    ts = np.arange(0, 10_000, 1000)
    out, _ = m.process(
        sdk.build_chunk("b", ts, np.full(10, 500.0), prev_ts=None, max_gap_ms=60_000),
        m.initial_state(),
    )
    assert [(o.code, o.ts) for o in out] == [("over_current", 2000)]


def test_models_from_an_installed_package_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        CliRunner()
        .invoke(app, ["models", "new", "ep_demo", "--dir", str(tmp_path / "epmodels")])
        .exit_code
        == 0
    )
    dist = tmp_path / "epmodels_dist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: epmodels-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[twin_stream.models]\nep_demo = epmodels.ep_demo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    discover_models.cache_clear()
    try:
        found = discover_models()
        assert "ep_demo" in found and found["ep_demo"].__name__ == "EpDemo"
        eng = Engine(Settings.model_validate({"models": {"enabled": ["ep_demo"]}}))
        rows = _rows(
            [
                {"battery_id": "b1", "ts": 1_700_000_000_000 + 1000 * i, "current": 500.0}
                for i in range(5)
            ]
        )
        res = eng.run(Records.from_rows(rows))
        assert [r["code"] for _, r in res.alerts] == ["over_current"]
    finally:
        discover_models.cache_clear()


def _rows(records: list[dict]) -> list[Row]:
    dec = Decoder()
    rows: list[Row] = []
    dead: list = []
    for i, r in enumerate(records):
        dec.decode(orjson.dumps(r), f"t:{i}", rows, dead)
    assert not dead
    return rows


def test_block_engine_gives_each_battery_what_it_gets_alone() -> None:
    """Random interleavings of batteries and random block cuts: per battery, the same
    outputs and final state as that battery run alone in one block (every default model)."""
    from twin_stream.devtools.simulate import FaultSpec, SimConfig, simulate

    faults = FaultSpec(over_voltage=1, under_voltage=1, weak_cell=1, dropout=1, duplicates=5)
    sim = SimConfig(batteries=4, cells=6, temperatures=2, duration_s=900, seed=11, faults=faults)
    recs = [r for r in simulate(sim).records if isinstance(r, dict) and "battery_id" in r]
    per: dict[str, list] = {}
    for r in recs:
        per.setdefault(r["battery_id"], []).append(r)
    settings = Settings.model_validate({"engine": {"max_gap_s": 60}})

    def outputs(engine: Engine, blocks: list[list[dict]]) -> dict:
        got: dict = {}
        for b in blocks:
            res = engine.run(Records.from_rows(_rows(b)))
            for bid, r in res.alerts + res.estimates:
                got.setdefault(bid, []).append(r)
        return {
            bid: (sorted(map(orjson.dumps, v)), engine.dump_state(bid)["models"])
            for bid, v in got.items()
        }

    alone: dict = {}
    for rs in per.values():
        alone.update(outputs(Engine(settings), [rs]))
    rnd = random.Random(2)
    for _ in range(3):
        queues = {bid: list(rs) for bid, rs in per.items()}
        mixed: list[dict] = []
        while any(queues.values()):
            bid = rnd.choice([b for b, q in queues.items() if q])
            mixed.append(queues[bid].pop(0))
        cuts = sorted(rnd.sample(range(1, len(mixed)), 12))
        blocks = [mixed[a:b] for a, b in zip([0, *cuts], [*cuts, len(mixed)], strict=True)]
        assert outputs(Engine(settings), blocks) == alone


def test_sdk_exports_resolve() -> None:
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    assert sys.modules["twin_stream.sdk"] is sdk


def test_a_model_bug_in_a_block_with_reload_costs_only_its_battery(monkeypatch) -> None:
    """The agents' path: no copies before the block; on a model bug the engine asks for the
    block's batteries back (`reload`), runs each alone, and only the failing battery's records
    become dead letters, its state as it was."""
    from models.eq_cycles.model import EqCycles

    settings = Settings.model_validate({"engine": {"max_gap_s": 60}})
    t0 = 1_767_225_600_000
    recs = [
        {"battery_id": b, "ts": t0 + 1000 * i, "current": 10.0 + i}
        for i in range(10)
        for b in ("a1", "b2", "c3")
    ]
    eng = Engine(settings)
    eng.run(Records.from_rows(_rows(recs[:15])))
    saved = {b: eng.dump_state(b) for b in ("a1", "b2", "c3")}
    asked: list[list[str]] = []

    def reload(ids: list[str]) -> None:
        asked.append(list(ids))
        for b in ids:
            eng.load_state(b, saved[b])

    original = EqCycles.run

    def run(self, blk, params, state, out, start):  # type: ignore[no-untyped-def]
        if (blk.slot == eng.slot_of["b2"]).any():
            raise ZeroDivisionError("a bug for b2")
        return original(self, blk, params, state, out, start)

    monkeypatch.setattr(EqCycles, "run", run)
    res = eng.run(Records.from_rows(_rows(recs[15:])), reload)
    assert asked[0] == ["a1", "b2", "c3"] and ["b2"] in asked
    assert {d.error for _, d in res.dead} == {
        "internal error processing b2: ZeroDivisionError: a bug for b2"
    }
    assert len(res.dead) == 5 and eng.metrics.errors == 5
    assert eng.dump_state("b2") == saved["b2"]  # nothing half-applied
    assert eng.dump_state("a1")["last_ts"] == t0 + 9000  # the others went on
    monkeypatch.setattr(EqCycles, "run", original)
    alone = Engine(settings)
    alone.run(Records.from_rows(_rows([r for r in recs if r["battery_id"] == "a1"])))
    assert eng.dump_state("a1")["models"] == alone.dump_state("a1")["models"]


@pytest.mark.parametrize("block_ids", [("a1", "b2", "c3"), ("a1", "c3", "d4")])
def test_a_model_bug_in_a_block_is_undone_from_copies(monkeypatch, block_ids) -> None:
    """The replay path (no table to reload from): the block's states are copied first (one
    run of slots, or scattered ones) and put back; only the failing battery loses records."""
    from models.eq_cycles.model import EqCycles

    settings = Settings.model_validate({"engine": {"max_gap_s": 60}})
    t0 = 1_767_225_600_000

    def recs(ids, i0, i1):
        return [
            {"battery_id": b, "ts": t0 + 1000 * i, "current": 10.0 + i}
            for i in range(i0, i1)
            for b in ids
        ]

    eng = Engine(settings)
    eng.run(Records.from_rows(_rows(recs(("a1", "b2", "c3", "d4"), 0, 5))))
    saved = {b: eng.dump_state(b) for b in ("a1", "b2", "c3", "d4")}
    bad = block_ids[1]
    original = EqCycles.run

    def run(self, blk, params, state, out, start):  # type: ignore[no-untyped-def]
        if (blk.slot == eng.slot_of[bad]).any():
            raise ZeroDivisionError("a bug")
        return original(self, blk, params, state, out, start)

    monkeypatch.setattr(EqCycles, "run", run)
    res = eng.run(Records.from_rows(_rows(recs(block_ids, 5, 9))))
    assert {b for b, _ in res.dead} == {bad} and len(res.dead) == 4
    assert eng.dump_state(bad) == saved[bad]
    for b in block_ids:
        if b != bad:
            assert eng.dump_state(b)["last_ts"] == t0 + 8000
    untouched = ({"a1", "b2", "c3", "d4"} - set(block_ids)).pop()
    assert eng.dump_state(untouched) == saved[untouched]


def test_the_warm_up_knows_every_kernel_and_the_cache_state(monkeypatch) -> None:
    """`engine.warm` finds the compiled kernels of the platform and of every model, says the
    cache is warm once they ran here, and runs a group of them in-process."""
    from twin_stream.engine import warm

    warm.run_group(["@scan", "@blob", "@plausibility", *warm._MODELS])
    names = {f"{d.py_func.__module__}.{d.py_func.__name__}" for d in warm._dispatchers()}
    for m in warm._MODELS:
        assert f"models.{m}.model._loop" in names
    assert {"twin_stream.engine.admit.admit", "twin_stream.codec.jsonscan.scan"} <= names
    assert warm.cold() is False
    assert {m for g in warm.GROUPS for m in g if not m.startswith("@")} == set(warm._MODELS)
    monkeypatch.setenv("NUMBA_DISABLE_JIT", "1")
    assert warm.cold() is False  # nothing to compile
