"""Chemistry parameter sets: OCV-SOC tables, limits and efficiencies, loaded from JSON data.

A chemistry is data, not code (PyBaMM's parameter sets): `twin_stream/battery/chemistries/*.json`
ships NMC and LFP; a battery spec in settings may replace the OCV table or any limit. Limits
are `LimitSet`s: levels (warning, critical) per side plus a hysteresis, in the quantity's
unit; current limits are C-rates (`pack_current`: discharge over / charge under, signed;
`charge_current`: charge C-rate over, with a temperature `Derating`). The
helpers here are the only place OCV tables are interpolated, so every model reads the curve
the same way. Optional data for reading OCV at rest: `OcvHysteresis` (charge / discharge
branches as offsets from the table, JSON ``ocv_hysteresis``) and `Relaxation` (slowest time
constant, DC resistance, Arrhenius temperature factor, JSON ``relaxation``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class ChemistryError(ValueError):
    """A chemistry name or table that cannot be used."""


@dataclass(frozen=True)
class OcvTable:
    """Monotonic OCV(SOC) curve of one cell: SOC in percent, voltage in volts."""

    soc: tuple[float, ...]
    voltage: tuple[float, ...]

    def __post_init__(self) -> None:
        s = np.asarray(self.soc, dtype=float)
        v = np.asarray(self.voltage, dtype=float)
        if s.shape != v.shape or s.size < 2:
            raise ChemistryError(
                "OCV table needs equally long soc and voltage lists of >= 2 points"
            )
        if not (np.all(np.diff(s) > 0) and np.all(np.diff(v) > 0)):
            raise ChemistryError("OCV table must be strictly increasing in soc and in voltage")
        if s[0] < 0 or s[-1] > 100:
            raise ChemistryError("OCV table soc must lie within 0..100 %")

    @property
    def soc_array(self) -> FloatArray:
        return np.asarray(self.soc, dtype=float)

    @property
    def voltage_array(self) -> FloatArray:
        return np.asarray(self.voltage, dtype=float)

    def soc_from_ocv(self, v: npt.ArrayLike) -> FloatArray:
        """SOC [%] of cell voltage(s) taken as OCV; clamped to the table's ends."""
        return np.interp(np.asarray(v, dtype=float), self.voltage_array, self.soc_array)

    def ocv_from_soc(self, soc: npt.ArrayLike) -> FloatArray:
        """OCV [V] at SOC [%]; clamped to the table's ends."""
        return np.interp(np.asarray(soc, dtype=float), self.soc_array, self.voltage_array)

    def slope_at_soc(self, soc: npt.ArrayLike) -> FloatArray:
        """dOCV/dSOC [V per % SOC] of the piecewise-linear curve at SOC (segment slope)."""
        s, v = self.soc_array, self.voltage_array
        seg = np.clip(
            np.searchsorted(s, np.asarray(soc, dtype=float), side="right") - 1, 0, s.size - 2
        )
        return (v[seg + 1] - v[seg]) / (s[seg + 1] - s[seg])

    def energy_wh_per_ah(self, soc_from: npt.ArrayLike, soc_to: npt.ArrayLike) -> FloatArray:
        """Integral of OCV over charge between two SOCs, in Wh per Ah of capacity.

        E = C * integral_{soc_from}^{soc_to} OCV(s) ds / 100, exact for the piecewise-linear
        curve (trapezoids on the table's knots plus the partial end segments).
        """
        s, v = self.soc_array, self.voltage_array
        knots_cum = np.concatenate([[0.0], np.cumsum(np.diff(s) * (v[1:] + v[:-1]) / 2.0)])

        def cumulative(x: FloatArray) -> FloatArray:
            x = np.clip(x, s[0], s[-1])
            seg = np.clip(np.searchsorted(s, x, side="right") - 1, 0, s.size - 2)
            vx = np.interp(x, s, v)
            return knots_cum[seg] + (x - s[seg]) * (v[seg] + vx) / 2.0

        a = np.asarray(soc_from, dtype=float)
        b = np.asarray(soc_to, dtype=float)
        return (cumulative(b) - cumulative(a)) / 100.0


@dataclass(frozen=True)
class LimitLevel:
    severity: str
    threshold: float


@dataclass(frozen=True)
class Derating:
    """A temperature derating of a limit set: its thresholds are multiplied by `factor[i]`
    while the coldest valid temperature sensor reads at or above `from_degc[i]` (and below
    the next breakpoint). Below the first breakpoint the limit does not apply at all (there
    the chemistry's charge-temperature window forbids the operation; another alert's
    business). Piecewise constant, as datasheets state it (e.g. LFP: 0.2C from 0 degC, 1C
    from 10 degC)."""

    from_degc: tuple[float, ...]
    factor: tuple[float, ...]

    def __post_init__(self) -> None:
        t = np.asarray(self.from_degc, dtype=float)
        f = np.asarray(self.factor, dtype=float)
        if t.size < 1 or t.shape != f.shape:
            raise ChemistryError("derating needs equally long from_degc and factor lists (>= 1)")
        if not np.all(np.diff(t) > 0):
            raise ChemistryError("derating from_degc must be strictly increasing")
        if not np.all(f >= 0):
            raise ChemistryError("derating factors must be >= 0")

    def factor_at(self, temp_c: npt.ArrayLike) -> FloatArray:
        """Factor at temperature(s): NaN below the first breakpoint or for a NaN temperature."""
        t = np.asarray(temp_c, dtype=float)
        seg = np.searchsorted(np.asarray(self.from_degc, dtype=float), t, side="right") - 1
        f = np.asarray(self.factor, dtype=float)[np.clip(seg, 0, None)]
        out: FloatArray = np.where((seg >= 0) & np.isfinite(t), f, np.nan)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"from_degc": list(self.from_degc), "factor": list(self.factor)}


@dataclass(frozen=True)
class LimitSet:
    """Levelled limits of one quantity, e.g. cell voltage: over/under levels and a hysteresis,
    optionally derated by temperature (`Derating`, e.g. the charge-current limit)."""

    unit: str
    over: tuple[LimitLevel, ...] = ()
    under: tuple[LimitLevel, ...] = ()
    hysteresis: float = 0.0
    derating: Derating | None = None

    @staticmethod
    def from_dict(d: dict[str, Any]) -> LimitSet:
        def levels(key: str) -> tuple[LimitLevel, ...]:
            return tuple(
                LimitLevel(str(x["severity"]), float(x["threshold"])) for x in d.get(key, [])
            )

        der = d.get("derating")
        return LimitSet(
            unit=str(d.get("unit", "")),
            over=levels("over"),
            under=levels("under"),
            hysteresis=float(d.get("hysteresis", 0.0)),
            derating=None
            if der is None
            else Derating(
                tuple(float(x) for x in der["from_degc"]), tuple(float(x) for x in der["factor"])
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "unit": self.unit,
            "over": [{"severity": lv.severity, "threshold": lv.threshold} for lv in self.over],
            "under": [{"severity": lv.severity, "threshold": lv.threshold} for lv in self.under],
            "hysteresis": self.hysteresis,
        }
        if self.derating is not None:
            out["derating"] = self.derating.to_dict()
        return out


@dataclass(frozen=True)
class OcvHysteresis:
    """Charge and discharge OCV branches as voltage offsets from the (mean) OCV table, as
    functions of SOC (piecewise linear on `soc`): after a long charge the rest voltage is
    OCV(soc) + charge_v(soc), after a long discharge OCV(soc) + discharge_v(soc) (<= 0).
    `approach_soc_pct`: after a current reversal the voltage moves towards the new branch as
    1 - exp(-throughput / approach_soc_pct), throughput in % SOC (Plett's one-state model)."""

    soc: tuple[float, ...]
    charge_v: tuple[float, ...]
    discharge_v: tuple[float, ...]
    approach_soc_pct: float = 2.5

    def __post_init__(self) -> None:
        s = np.asarray(self.soc, dtype=float)
        if s.size < 1 or len(self.charge_v) != s.size or len(self.discharge_v) != s.size:
            raise ChemistryError("ocv_hysteresis needs equally long soc, charge_v, discharge_v")
        if s.size > 1 and not np.all(np.diff(s) > 0):
            raise ChemistryError("ocv_hysteresis soc must be strictly increasing")
        if self.approach_soc_pct <= 0:
            raise ChemistryError("ocv_hysteresis approach_soc_pct must be > 0")

    def offset(self, soc: npt.ArrayLike, direction: int) -> FloatArray:
        """Branch offset [V] at SOC for direction +1 (charge) or -1 (discharge); 0 for 0."""
        x = np.asarray(soc, dtype=float)
        if direction == 0:
            return np.zeros_like(x)
        ys = self.charge_v if direction > 0 else self.discharge_v
        return np.interp(x, np.asarray(self.soc, dtype=float), np.asarray(ys, dtype=float))

    def half_width_v(self) -> float:
        """The largest half-width of the hysteresis band [V]."""
        return float(np.max((np.asarray(self.charge_v) - np.asarray(self.discharge_v)) / 2.0))

    def branch(self, ocv: OcvTable, weight: float, direction: int) -> tuple[FloatArray, FloatArray]:
        """(soc knots, voltage knots) of OCV + weight x branch offset (weight in [0, 1]),
        strictly increasing in both (for np.interp inversion)."""
        s = np.union1d(ocv.soc_array, np.asarray(self.soc, dtype=float))
        s = s[(s >= ocv.soc_array[0]) & (s <= ocv.soc_array[-1])]
        v = ocv.ocv_from_soc(s) + weight * self.offset(s, direction)
        if not np.all(np.diff(v) > 0):
            raise ChemistryError("ocv_hysteresis makes a branch non-monotonic")
        return s, v

    @staticmethod
    def from_dict(d: dict[str, Any]) -> OcvHysteresis:
        return OcvHysteresis(
            tuple(float(x) for x in d["soc"]),
            tuple(float(x) for x in d["charge_v"]),
            tuple(float(x) for x in d["discharge_v"]),
            float(d.get("approach_soc_pct", 2.5)),
        )


@dataclass(frozen=True)
class Relaxation:
    """Relaxation and resistance data for reading OCV at rest: the slowest relaxation time
    constant `tau_s` and the quasi-steady DC resistance x capacity `resistance_ohm_ah` at
    `t_ref_c`, both scaled by exp(activation_k (1/T - 1/T_ref)) at temperature T."""

    tau_s: float = 1200.0
    activation_k: float = 3000.0
    t_ref_c: float = 25.0
    resistance_ohm_ah: float = 0.15

    def factor(self, temp_c: npt.ArrayLike) -> FloatArray:
        """Arrhenius factor at temperature(s) [degC]; 1 where NaN."""
        t = np.asarray(temp_c, dtype=float)
        t = np.where(np.isfinite(t), t, self.t_ref_c)
        k = 273.15
        out: FloatArray = np.exp(self.activation_k * (1.0 / (t + k) - 1.0 / (self.t_ref_c + k)))
        return out

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Relaxation:
        return Relaxation(
            float(d.get("tau_s", 1200.0)),
            float(d.get("activation_k", 3000.0)),
            float(d.get("t_ref_c", 25.0)),
            float(d.get("resistance_ohm_ah", 0.15)),
        )


@dataclass(frozen=True)
class Chemistry:
    name: str
    ocv: OcvTable
    nominal_cell_voltage: float
    charge_efficiency: float
    discharge_efficiency: float
    limits: dict[str, LimitSet] = field(default_factory=dict)
    description: str = ""
    hysteresis: OcvHysteresis | None = None
    relaxation: Relaxation | None = None

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Chemistry:
        eff = d.get("coulombic_efficiency", {})
        return Chemistry(
            name=str(d["name"]),
            ocv=OcvTable(tuple(d["ocv"]["soc"]), tuple(d["ocv"]["voltage"])),
            nominal_cell_voltage=float(d["nominal_cell_voltage"]),
            charge_efficiency=float(eff.get("charge", 1.0)),
            discharge_efficiency=float(eff.get("discharge", 1.0)),
            limits={k: LimitSet.from_dict(v) for k, v in d.get("limits", {}).items()},
            description=str(d.get("description", "")),
            hysteresis=OcvHysteresis.from_dict(d["ocv_hysteresis"])
            if "ocv_hysteresis" in d
            else None,
            relaxation=Relaxation.from_dict(d["relaxation"]) if "relaxation" in d else None,
        )


@cache
def builtin_chemistries() -> dict[str, Chemistry]:
    """All chemistries shipped in `twin_stream/battery/chemistries`, keyed by upper-case name."""
    out: dict[str, Chemistry] = {}
    folder = resources.files("twin_stream.battery") / "chemistries"
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            chem = Chemistry.from_dict(json.loads(entry.read_text(encoding="utf-8")))
            out[chem.name.upper()] = chem
    return out


def get_chemistry(name: str) -> Chemistry:
    table = builtin_chemistries()
    try:
        return table[name.upper()]
    except KeyError:
        raise ChemistryError(
            f"unknown chemistry {name!r}; known: {', '.join(sorted(table))}"
        ) from None
