"""Per-battery model parameters (`fleet.batteries.<id>.models`), checked like the rest of
the settings (issue 10, item 8)."""

from __future__ import annotations

import orjson
import pytest

from twin_stream.codec import Decoder
from twin_stream.config.settings import Settings, SettingsError, load_settings
from twin_stream.engine import Engine

T0 = 1_767_225_600_000


def rows(bid: str, n: int = 121):
    out: list = []
    dead: list = []
    items = [
        (orjson.dumps({"battery_id": bid, "ts": T0 + 1000 * i, "current": 50.0}), f"s:{i}")
        for i in range(n)
    ]
    Decoder().decode_many(items, out, dead)
    assert dead == []
    return out


def cycles(settings: Settings, bid: str) -> list[float]:
    res = Engine(settings).process(bid, rows(bid), None)
    return [e["value"] for e in res.estimates if e["name"] == "equivalent_cycles"]


def test_initial_cycles_per_battery_over_the_fleet_default() -> None:
    s = Settings.model_validate(
        {
            "models": {"params": {"eq_cycles": {"initial_cycles": 10.0}}},
            "fleet": {
                "batteries": {"old-pack": {"models": {"eq_cycles": {"initial_cycles": 812}}}}
            },
        }
    )
    new, old = cycles(s, "new-pack"), cycles(s, "old-pack")
    # 50 A for 60 s on 100 Ah: 50/60 Ah / 200 Ah per cycle = 1/240 cycles per minute
    assert new[0] == 10.0 and old[0] == 812.0
    assert new[1] == pytest.approx(10.0 + 1 / 240, abs=1e-12)
    assert old[1] - 812.0 == pytest.approx(new[1] - 10.0, abs=1e-12)


@pytest.mark.parametrize(
    ("battery", "message"),
    [
        ({"models": {"eq_cycles": {"initial_cycles": -5}}}, "fleet.batteries.p1.models.eq_cycles"),
        ({"models": {"eq_cycles": {"nope": 1}}}, "fleet.batteries.p1.models.eq_cycles.nope"),
        ({"models": {"no_such_model": {}}}, "fleet.batteries.p1.models.no_such_model"),
    ],
)
def test_bad_per_battery_parameters_fail_at_start_naming_the_key(
    battery: dict, message: str
) -> None:
    s = Settings.model_validate({"fleet": {"batteries": {"p1": battery}}})
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        Engine(s)


def test_fleet_wide_model_parameters_belong_in_models_params() -> None:
    with pytest.raises(SettingsError, match=r"unknown key fleet\.defaults\.models"):
        load_settings(environ={"TWIN_FLEET__DEFAULTS__MODELS": '{"eq_cycles": {}}'})
